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

:func:`naive_step` is the authors' order of operations (D0 three times and D1 twice on the same
target input); it exists for the equivalence test and the benchmark only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import HighDANConfig
from .losses import least_squares, segmentation_loss
from .model import HighDAN

MODALITIES = ("hsi", "msi", "sar")


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


def set_poly_lr(opt_g, opt_d, step: int, total_steps: int, cfg: HighDANConfig) -> float:
    """Set both optimisers' learning rates for ``step``; returns the generator's."""
    lr = poly_lr(cfg.train.lr, step, total_steps, cfg.train.poly_power)
    for group in opt_g.param_groups:
        group["lr"] = lr
    for group in opt_d.param_groups:
        group["lr"] = poly_lr(cfg.train.lr_d, step, total_steps, cfg.train.poly_power)
    return lr


def _inputs(batch: Mapping[str, Tensor], device, channels_last: bool) -> list[Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [batch[m].to(device, non_blocking=True).contiguous(memory_format=fmt) for m in MODALITIES]


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _floats(losses: dict[str, Tensor]) -> dict[str, float]:
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

    Batches are dicts with ``hsi``, ``msi``, ``sar`` (B, C, H, W) and ``label`` (B, H, W) (the target
    batch's label is not used). ``amp`` runs the forward passes under bf16 autocast; ``channels_last``
    converts the inputs (convert the model yourself). With ``cfg.loss.adversarial`` off (source-only
    ablation) the target batch and the discriminators are not used.
    """
    loss_cfg = cfg.loss
    device = next(model.parameters()).device
    model.train()
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)

    src = _inputs(src_batch, device, channels_last)
    size = src[0].shape[-2:]
    with _autocast(device, amp):
        feat_s = model.features(*src)
        logits_s = model.segment(feat_s, size)
    loss_g, losses = segmentation_loss(logits_s, src_batch["label"].to(device), loss_cfg)
    losses["seg"] = loss_g

    if loss_cfg.adversarial:
        tgt = _inputs(tgt_batch, device, channels_last)
        with _autocast(device, amp):
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
        with _autocast(device, amp):
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
    return _floats(losses)


def naive_step(
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
    """The authors' order of operations, for tests and benchmarks: same losses, more work.

    D0 runs three times on the same target features (attention, generator loss, discriminator
    loss) and D1 twice on the same target softmax; ``requires_grad`` is toggled on the
    discriminators instead of routing gradients.
    """
    loss_cfg = cfg.loss
    device = next(model.parameters()).device
    discs = (model.d0, model.d1)
    model.train()
    opt_g.zero_grad()
    opt_d.zero_grad()
    for p in [*model.d0.parameters(), *model.d1.parameters()]:
        p.requires_grad_(False)

    src = _inputs(src_batch, device, channels_last)
    with _autocast(device, amp):
        feat_s = model.features(*src)
        logits_s = model.segment(feat_s, src[0].shape[-2:])
    seg, losses = segmentation_loss(logits_s, src_batch["label"].to(device), loss_cfg)
    losses["seg"] = seg
    seg.backward()

    if loss_cfg.adversarial:
        tgt = _inputs(tgt_batch, device, channels_last)
        with _autocast(device, amp):
            feat_t = model.features(*tgt)
            attended, _ = model.attend(feat_t)  # D0, first time
            logits_t = model.segment(attended, tgt[0].shape[-2:])
            adv_d0 = least_squares(model.d0(feat_t), loss_cfg.source_label)  # D0, second time
            adv_d1 = least_squares(model.d1(F.softmax(logits_t, dim=1)), loss_cfg.source_label)
        losses.update(adv_d0=adv_d0, adv_d1=adv_d1, adv=loss_cfg.adv_weight * (adv_d0 + adv_d1))
        losses["adv"].backward()
    opt_g.step()

    if loss_cfg.adversarial:
        for p in [*model.d0.parameters(), *model.d1.parameters()]:
            p.requires_grad_(True)
        for side, feat, logits, label in (
            ("source", feat_s, logits_s, loss_cfg.source_label),
            ("target", feat_t, logits_t, loss_cfg.target_label),  # D0 third time, D1 second time
        ):
            with _autocast(device, amp):
                outs = (discs[0](feat.detach()), discs[1](F.softmax(logits.detach(), dim=1)))
            terms = [least_squares(o, label) for o in outs]
            losses[f"d_{side}_d0"], losses[f"d_{side}_d1"] = terms
            losses[f"d_{side}"] = terms[0] + terms[1]
            losses[f"d_{side}"].backward()
        opt_d.step()
    else:
        for p in [*model.d0.parameters(), *model.d1.parameters()]:
            p.requires_grad_(True)
    return _floats(losses)
