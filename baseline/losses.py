"""HighDAN losses: cross-entropy + Dice on the source city, least-squares adversarial terms.

Label 0 (unlabelled) is ignored as the authors ignore it: cross-entropy skips label-0 pixels;
Dice skips the class-0 channel (so its one-hot target never counts) but, like theirs, keeps the
softmax mass that label-0 pixels put on classes 1..13 in the denominators.
All losses are computed in float32, also under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LossConfig

IGNORE = 0


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over labelled pixels; 0 (with a graph) when no pixel is labelled."""
    logits = logits.float()
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def dice_loss(logits: Tensor, labels: Tensor, *, smooth: float = 1e-5, power: int = 1) -> Tensor:
    """Sum over classes 1.. of the batch-mean soft Dice loss ``1 - 2(sum pt + s) / (sum p^k + t^k + s)``."""
    probs = torch.softmax(logits.float(), dim=1).flatten(2)  # (B, C, N)
    onehot = F.one_hot(labels.long().flatten(1), probs.shape[1]).transpose(1, 2).to(probs.dtype)
    num = (probs * onehot).sum(dim=2) + smooth
    den = (probs.pow(power) + onehot.pow(power)).sum(dim=2) + smooth
    per_class = (1 - 2 * num / den).mean(dim=0)  # (C,)
    keep = torch.arange(probs.shape[1], device=probs.device) != IGNORE
    return per_class[keep].sum()


def segmentation_loss(logits: Tensor, labels: Tensor, cfg: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy (+ Dice unless ``cfg.dice`` is off); returns the total and its parts."""
    parts = {"ce": cross_entropy(logits, labels)}
    if cfg.dice:
        parts["dice"] = dice_loss(logits, labels, smooth=cfg.dice_smooth, power=cfg.dice_power)
    return sum(parts.values()), parts


def least_squares(d_out: Tensor, label: float) -> Tensor:
    """LSGAN loss: mean squared distance of the discriminator output to ``label`` (0 source, 1 target)."""
    d_out = d_out.float()
    return F.mse_loss(d_out, torch.full_like(d_out, label))
