"""The authors' order of operations for one HighDAN step: the oracle for `train_step`.

Same losses as `c2seg_baseline.step.train_step`, more work: D0 runs three times on the same
target features (attention, generator loss, discriminator loss) and D1 twice on the same target
softmax, and ``requires_grad`` is toggled on the discriminators instead of routing gradients.

It lives in tests/, not in the shipped package: it exists only to be compared with, by
tests/test_baseline_step.py (same losses, gradients and weights after a step) and by
bench/train_step.py (the speed-up), and the tests are the one consumer that must always run.
pytest puts tests/ on the import path; the benchmark adds it itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from c2seg_baseline.config import HighDANConfig
from c2seg_baseline.devices import autocast
from c2seg_baseline.losses import least_squares, segmentation_loss
from c2seg_baseline.model import HighDAN
from c2seg_baseline.step import as_floats, inputs


def naive_step(model: HighDAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               src_batch: Mapping[str, Tensor], tgt_batch: Mapping[str, Tensor], cfg: HighDANConfig, *,
               amp: bool = False, channels_last: bool = False) -> dict[str, float]:
    """One generator + discriminator update in the authors' order; returns the losses as floats."""
    loss_cfg = cfg.loss
    device = next(model.parameters()).device
    discs = (model.d0, model.d1)
    model.train()
    opt_g.zero_grad()
    opt_d.zero_grad()
    for p in [*model.d0.parameters(), *model.d1.parameters()]:
        p.requires_grad_(False)

    src = inputs(src_batch, cfg.model.in_channels, device, channels_last)
    with autocast(device, amp):
        feat_s = model.features(*src)
        logits_s = model.segment(feat_s, src[0].shape[-2:])
    seg, losses = segmentation_loss(logits_s, src_batch["mask"].to(device), loss_cfg)
    losses["seg"] = seg
    seg.backward()

    if loss_cfg.adversarial:
        tgt = inputs(tgt_batch, cfg.model.in_channels, device, channels_last)
        with autocast(device, amp):
            feat_t = model.features(*tgt)
            attended, _ = model.attend(feat_t)  # D0, first time
            logits_t = model.segment(attended, tgt[0].shape[-2:])
            adv_d0 = least_squares(model.d0(feat_t), loss_cfg.source_label)  # D0, second time
            adv_d1 = least_squares(model.d1(F.softmax(logits_t, dim=1)), loss_cfg.source_label)
        losses.update(adv_d0=adv_d0, adv_d1=adv_d1, adv=loss_cfg.adv_weight * (adv_d0 + adv_d1))
        losses["adv"].backward()
    opt_g.step()

    for p in [*model.d0.parameters(), *model.d1.parameters()]:
        p.requires_grad_(True)
    if loss_cfg.adversarial:
        for side, feat, logits, label in (
            ("source", feat_s, logits_s, loss_cfg.source_label),
            ("target", feat_t, logits_t, loss_cfg.target_label),  # D0 third time, D1 second time
        ):
            with autocast(device, amp):
                outs = (discs[0](feat.detach()), discs[1](F.softmax(logits.detach(), dim=1)))
            terms = [least_squares(o, label) for o in outs]
            losses[f"d_{side}_d0"], losses[f"d_{side}_d1"] = terms
            losses[f"d_{side}"] = terms[0] + terms[1]
            losses[f"d_{side}"].backward()
        opt_d.step()
    return as_floats(losses)
