"""Training step: equals the authors' two-evaluation step, evaluates each network once, learns."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from authors_order import naive_step

from c2seg_baseline.config import HighDANConfig, tiny
from c2seg_baseline.losses import cross_entropy, dice_loss, least_squares
from c2seg_baseline.model import HighDAN
from c2seg_baseline.step import make_optimizers, poly_lr, set_poly_lr, train_step


def _batch(seed, size=32, batch=2, labelled=True):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 10 + 4 + 2, size, size, generator=g)  # hsi, msi, sar stacked (the sample format)
    return {"image": image, "mask": torch.randint(0, 14 if labelled else 1, (batch, size, size), generator=g)}


def _pair(cfg):
    torch.manual_seed(0)
    a = HighDAN(cfg)
    b = copy.deepcopy(a)
    return (a, *make_optimizers(a, cfg)), (b, *make_optimizers(b, cfg))


@pytest.mark.parametrize("overrides", [{}, {"loss": {"dice": False}}, {"loss": {"adversarial": False}}])
def test_one_evaluation_step_matches_naive_step(overrides):
    cfg = HighDANConfig.from_dict({"base": "tiny", **overrides})
    (a, ga, da), (b, gb, db) = _pair(cfg)
    src, tgt = _batch(1), _batch(2, labelled=False)
    # One step from identical states: losses, every gradient, the updated weights and BN statistics.
    # (Not more steps: the head convs' biases feed a BatchNorm, so their true gradient is 0 and Adam
    # turns the rounding noise in it into lr-sized moves that differ between any two summation orders.)
    fast = train_step(a, ga, da, src, tgt, cfg)
    slow = naive_step(b, gb, db, src, tgt, cfg)
    assert fast.keys() == slow.keys()
    for k in fast:
        assert fast[k] == pytest.approx(slow[k], rel=1e-6, abs=1e-8), k
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert (pa.grad is None) == (pb.grad is None), name
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-7), name
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-5), name
    for (name, ba), (_, bb) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        assert torch.allclose(ba.float(), bb.float(), rtol=1e-5, atol=1e-7), name
    if cfg.loss.adversarial:
        assert {"adv", "d_source", "d_target"} <= fast.keys()
        # the discriminators received gradients and the attention path did not touch D0's grads wrongly
        assert all(p.grad is not None for p in a.d0.parameters())
    else:
        assert "adv" not in fast and all(p.grad is None for p in a.d0.parameters())


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, inp, out: calls.append(inp[0].data_ptr()))
    return calls


def test_each_network_runs_once_per_input():
    cfg = tiny()
    (a, ga, da), (b, gb, db) = _pair(cfg)
    src, tgt = _batch(1), _batch(2)
    fast = {n: _count_calls(getattr(a, n)) for n in ("d0", "d1")}
    slow = {n: _count_calls(getattr(b, n)) for n in ("d0", "d1")}
    train_step(a, ga, da, src, tgt, cfg)
    naive_step(b, gb, db, src, tgt, cfg)
    # one source + one target evaluation each; the authors' order runs D0 4 and D1 3 times
    assert [len(fast["d0"]), len(fast["d1"])] == [2, 2]
    assert [len(slow["d0"]), len(slow["d1"])] == [4, 3]


def test_steps_lower_the_source_loss():
    cfg = tiny()
    torch.manual_seed(0)
    model = HighDAN(cfg)
    opt_g, opt_d = make_optimizers(model, cfg)
    src, tgt = _batch(3), _batch(4, labelled=False)
    src["mask"] = 1 + (src["image"][:, 0] * 3).long()  # learnable: classes 1..3 from one band
    first = train_step(model, opt_g, opt_d, src, tgt, cfg)
    for _ in range(11):
        last = train_step(model, opt_g, opt_d, src, tgt, cfg)
    assert last["ce"] < 0.92 * first["ce"]
    assert last["seg"] < first["seg"]
    assert all(math.isfinite(v) for v in last.values())


def test_amp_keeps_the_cpu_in_float32_and_channels_last_runs():
    """bf16 autocast is CUDA-only (c2seg_baseline.devices): on the CPU, amp=True is the float32 step;
    channels_last gives the contiguous layout's losses up to summation order."""
    cfg = tiny()
    (plain, gp, dp), (fast, gf, df) = _pair(cfg)
    (cl, gc, dc), _ = _pair(cfg)
    cl.to(memory_format=torch.channels_last)
    src, tgt = _batch(5), _batch(6)
    reference = train_step(plain, gp, dp, src, tgt, cfg)
    assert train_step(fast, gf, df, src, tgt, cfg, amp=True) == reference
    out = train_step(cl, gc, dc, src, tgt, cfg, amp=True, channels_last=True)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert out.keys() == reference.keys()
    for k in out:
        assert out[k] == pytest.approx(reference[k], rel=1e-4, abs=1e-6), k


def test_poly_schedule():
    cfg = tiny()
    assert poly_lr(1e-4, 0, 100, 0.9) == 1e-4
    assert poly_lr(1e-4, 50, 100, 0.9) == pytest.approx(1e-4 * 0.5**0.9)
    model = HighDAN(cfg)
    opt_g, opt_d = make_optimizers(model, cfg)
    set_poly_lr(opt_g, opt_d, 10, 20, cfg)
    assert opt_g.param_groups[0]["lr"] == pytest.approx(cfg.train.lr * 0.5**0.9)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(cfg.train.lr_d * 0.5**0.9)
    assert opt_d.param_groups[0]["betas"] == (0.9, 0.99)


# --- losses against naive loop oracles ----------------------------------------------------------


def _dice_oracle(logits, labels, smooth=1e-5):
    probs = torch.softmax(logits.double(), 1)
    total = 0.0
    for c in range(1, logits.shape[1]):
        per_sample = []
        for b in range(logits.shape[0]):
            p, t = probs[b, c], (labels[b] == c).double()
            per_sample.append(1 - 2 * ((p * t).sum() + smooth) / ((p + t).sum() + smooth))
        total += sum(per_sample) / len(per_sample)
    return total


def test_losses_match_loop_oracles():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 14, 5, 6, generator=g)
    labels = torch.randint(0, 14, (3, 5, 6), generator=g)
    assert float(dice_loss(logits, labels)) == pytest.approx(float(_dice_oracle(logits, labels)), rel=1e-5)
    logp = torch.log_softmax(logits.double(), 1)
    picked = [-logp[b, labels[b, i, j], i, j] for b in range(3) for i in range(5) for j in range(6) if labels[b, i, j]]
    assert float(cross_entropy(logits, labels)) == pytest.approx(float(sum(picked) / len(picked)), rel=1e-5)
    # label-0 pixels do not change the cross-entropy
    labels0 = labels.clone()
    labels0[0] = 0
    logits2 = logits.clone()
    logits2[0] += torch.randn(14, 5, 6, generator=g)
    assert float(cross_entropy(logits2, labels0)) == pytest.approx(float(cross_entropy(logits, labels0)))
    # nothing labelled: zero, not NaN
    assert float(cross_entropy(logits, torch.zeros_like(labels))) == 0.0
    d = torch.randn(2, 1, 4, 4, generator=g)
    assert float(least_squares(d, 1.0)) == pytest.approx(float(((d - 1) ** 2).mean()))
