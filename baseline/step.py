"""One HighDAN training iteration (ADVENT-style adversarial adaptation), plus optimiser helpers.

Per step, as in the authors' loop:

1. generator update: segmentation loss on the source batch, plus ``adv_weight`` x least-squares
   losses that push D0(target features) and D1(softmax(target logits)) towards the *source* label;
   the target logits come from the D0-attended target features;
2. discriminator update: D0 and D1 learn source -> 0 on source features/softmax and target -> 1
   on target ones.

:func:`train_step` runs every network once per input: D0's output on the target features serves
the attention, the generator's adversarial term and the discriminator's target term; D1's output
on the target softmax serves both of its terms. Each loss is routed to the weights it trains with
``backward(inputs=...)``, which reproduces the authors' ``requires_grad`` toggling and ``detach()``
calls. Since the generator step never changes the discriminators and the discriminator step only
sees detached generator outputs, the order of the updates is immaterial to the gradients.
(The authors' order of operations, the oracle it is tested and benchmarked against, lives in
tests/authors_order.py: it is not shipped.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from c2seg_kit.registry import MODALITIES

from .config import HighDANConfig
from .devices import autocast, to_device
from .losses import least_squares, segmentation_loss
from .model import HighDAN


def make_optimizers(model: HighDAN, cfg: HighDANConfig) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator, Adam with the discriminator betas for D0 + D1 (one optimiser)."""
    t = cfg.train
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    d_params = [*model.d0.parameters(), *model.d1.parameters()]
    opt_d = torch.optim.Adam(d_params, lr=t.lr_d, betas=t.betas_d)
    return opt_g, opt_d


def poly_lr(base_lr: float, step: int, total_steps: int, power: float) -> float:
    """``base * (1 - step / total) ** power``, with ``step`` counted from 0 (the authors' schedule)."""
    return base_lr * max(0.0, 1.0 - step / total_steps) ** power


def set_poly_lr(opt_g, opt_d, step: int, total_steps: int, cfg: HighDANConfig) -> tuple[float, float]:
    """Set both optimisers' learning rates for ``step``; returns (generator's, discriminators')."""
    t = cfg.train
    rates = poly_lr(t.lr, step, total_steps, t.poly_power), poly_lr(t.lr_d, step, total_steps, t.poly_power)
    for opt, lr in zip((opt_g, opt_d), rates, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
    return rates


def inputs(batch: Mapping[str, Tensor], channels: Mapping[str, int], device: torch.device,
           channels_last: bool) -> list[Tensor]:
    """The batch's ``image`` (B, C, H, W), the modalities stacked in MODALITIES order with
    ``channels[m]`` channels each (the datasets' sample format), cut into the model's arguments
    (hsi, msi, sar), on `device`."""
    image = batch["image"]
    counts = [int(channels[m]) for m in MODALITIES]
    if image.shape[1] != sum(counts):
        raise ValueError(f"the batch's image has {image.shape[1]} channels; the model takes {sum(counts)} ({dict(channels)})")
    return [to_device(x, device, channels_last) for x in torch.split(image, counts, dim=1)]


def as_floats(losses: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in losses.items()}


def train_step(
    model: HighDAN,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    src_batch: Mapping[str, Tensor],
    tgt_batch: Mapping[str, Tensor],
    cfg: HighDANConfig,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """One generator + discriminator update; returns the losses as floats.

    Batches are the datasets' samples batched (c2seg_baseline.datasets): ``image`` (B, C, H, W), the
    modalities stacked as the model's ``in_channels`` count them, and ``mask`` (B, H, W) (the
    target batch's mask is not used). ``amp`` runs the forward passes under bf16 autocast on CUDA
    (`devices.amp_active`: the CPU stays float32); ``channels_last`` converts the inputs (convert the
    model yourself). With ``cfg.loss.adversarial`` off (source-only
    ablation) the target batch and the discriminators are not used.
    """
    loss_cfg = cfg.loss
    device = next(model.parameters()).device
    model.train()
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)

    src = inputs(src_batch, cfg.model.in_channels, device, channels_last)
    size = src[0].shape[-2:]
    with autocast(device, amp):
        feat_s = model.features(*src)
        logits_s = model.segment(feat_s, size)
    loss_g, losses = segmentation_loss(logits_s, src_batch["mask"].to(device), loss_cfg)
    losses["seg"] = loss_g

    if loss_cfg.adversarial:
        tgt = inputs(tgt_batch, cfg.model.in_channels, device, channels_last)
        with autocast(device, amp):
            feat_t = model.features(*tgt)
            attended, d0_t = model.attend(feat_t)
            logits_t = model.segment(attended, tgt[0].shape[-2:])
            d1_t = model.d1(torch.softmax(logits_t, dim=1))
        adv = {}
        # (name, discriminator, its output on the target input): each output serves two losses.
        for name, disc, out in (("d0", model.d0, d0_t), ("d1", model.d1, d1_t)):
            adv[name] = least_squares(out, loss_cfg.source_label)  # generator: look like source
            d_target = least_squares(out, loss_cfg.target_label)  # discriminator: spot the target
            d_target.backward(inputs=list(disc.parameters()), retain_graph=True)
            losses[f"d_target_{name}"] = d_target
        losses.update({f"adv_{k}": v for k, v in adv.items()})
        losses["adv"] = loss_cfg.adv_weight * sum(adv.values())
        loss_g = loss_g + losses["adv"]

    loss_g.backward(inputs=list(model.generator.parameters()))
    opt_g.step()

    if loss_cfg.adversarial:
        # The discriminators' source terms: their only evaluation on the (detached) source outputs.
        with autocast(device, amp):
            d_source = {
                "d0": model.d0(feat_s.detach()),
                "d1": model.d1(torch.softmax(logits_s.detach(), dim=1)),
            }
        for name, out in d_source.items():
            losses[f"d_source_{name}"] = least_squares(out, loss_cfg.source_label)
        sum(losses[f"d_source_{n}"] for n in d_source).backward()
        opt_d.step()
        losses["d_source"] = losses["d_source_d0"] + losses["d_source_d1"]
        losses["d_target"] = losses["d_target_d0"] + losses["d_target_d1"]
    return as_floats(losses)

