"""Training loop: loss goes down, checkpoints round-trip, resume continues exactly, CLI errors.

The prepared caches here are written directly in the documented on-disk layout (manifest.json +
<city>.h5), small and learnable: the class of a pixel is legible in its MSI values, and the
target city's values are shifted (a domain gap).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import (
    CHANNELS,
    assert_one_line_error,
    cli_args,
    config_file,
    make_prepared,
    read_log,
    run_cli,
    tiny_options,
    weights,
)
from metrics_support import oracle

from c2seg_baseline import checkpoint as ckpt
from c2seg_baseline.batches import StepBatches
from c2seg_baseline.config import get_config
from c2seg_baseline.predict import predict_city
from c2seg_baseline.step import poly_lr
from c2seg_baseline.train import train
from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prep") / "AB")


def test_sampler_is_a_function_of_step_and_shards_ranks():
    full = StepBatches(10, 2, seed=5)
    it = iter(full)
    first = [next(it) for _ in range(12)]
    resumed = iter(StepBatches(10, 2, seed=5, start_step=7))
    assert [next(resumed) for _ in range(5)] == first[7:]
    # Two ranks split each global batch; together they see what one rank with twice the batch sees.
    r0, r1 = iter(StepBatches(10, 2, 5, rank=0, world_size=2)), iter(StepBatches(10, 2, 5, rank=1, world_size=2))
    both = iter(StepBatches(10, 4, 5))
    for _ in range(6):
        assert next(r0) + next(r1) == next(both)
    # Every window is visited once per epoch (the last batch wraps round).
    epoch0 = [i for b in first[:5] for (e, i) in b if e == 0]
    assert sorted(epoch0) == list(range(10))


def test_training_lowers_the_loss_and_writes_run(prepared, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_options(prepared, out, steps=30, eval_every=15, batch_size=4, source_only=True))
    log = [r for r in read_log(out) if "eval" not in r]
    assert [r["step"] for r in log] == list(range(1, 31))
    first = np.mean([r["ce"] for r in log[:5]])
    last = np.mean([r["ce"] for r in log[-5:]])
    assert last < 0.9 * first, (first, last)
    evals = [r for r in read_log(out) if "eval" in r]
    assert [r["step"] for r in evals] == [15, 30]
    assert evals[-1]["eval"] == summary["metrics"]
    # The reported scores are the final model's on the target city: predict it again from last.pt
    # (the evaluation's window, overlap and batch) and score that with scikit-learn.
    model, _ = ckpt.load_checkpoint(out / "last.pt")
    with PreparedData(prepared) as data:
        t = data.target
        rows = []
        predict_city(model, t, sink=lambda r0, r: rows.append(r), window=64, overlap=16, batch_size=4,
                     progress=False)
        label = t.read_label(0, t.shape[0], 0, t.shape[1])
    expected = oracle(label, np.concatenate(rows))
    assert summary["metrics"]["miou"] == pytest.approx(expected["miou"], abs=1e-12)
    assert summary["metrics"]["oa"] == pytest.approx(expected["oa"], abs=1e-12)
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert ckpt.read_checkpoint(out / "best.pt")["step"] == summary["best"]["step"]


SEGMENTATION_KEYS = {"ce", "dice", "seg"}
ADVERSARIAL_KEYS = {"adv", "adv_d0", "adv_d1", "d_source", "d_source_d0", "d_source_d1",
                    "d_target", "d_target_d0", "d_target_d1"}


def test_full_highdan_step_logs_adversarial_terms(prepared, tmp_path):
    out = tmp_path / "run"
    train(tiny_options(prepared, out, steps=2, eval_every=100))
    rec = read_log(out)[0]
    # Exactly the segmentation, generator-adversarial and discriminator terms, beside step, lr, time.
    assert set(rec) == {"step", "lr", "lr_d", "sec"} | SEGMENTATION_KEYS | ADVERSARIAL_KEYS
    assert all(np.isfinite(rec[k]) for k in SEGMENTATION_KEYS | ADVERSARIAL_KEYS)
    cfg = get_config(config_file(prepared.parent))
    assert rec["seg"] == pytest.approx(rec["ce"] + rec["dice"], rel=1e-6)
    assert rec["adv"] == pytest.approx(cfg.loss.adv_weight * (rec["adv_d0"] + rec["adv_d1"]), rel=1e-6)
    for side in ("source", "target"):
        assert rec[f"d_{side}"] == pytest.approx(rec[f"d_{side}_d0"] + rec[f"d_{side}_d1"], rel=1e-6)
    # Step 1 ran at the schedule's start; step 2 at its midpoint (steps=2).
    assert (rec["lr"], rec["lr_d"]) == (cfg.train.lr, cfg.train.lr_d)
    assert read_log(out)[1]["lr"] == pytest.approx(poly_lr(cfg.train.lr, 1, 2, cfg.train.poly_power))
    # The source-only ablation logs none of the adversarial terms.
    train(tiny_options(prepared, tmp_path / "source-only", steps=1, eval_every=100, source_only=True))
    assert set(read_log(tmp_path / "source-only")[0]) == {"step", "lr", "lr_d", "sec"} | SEGMENTATION_KEYS


def test_checkpoint_round_trip(prepared, tmp_path):
    out = tmp_path / "run"
    train(tiny_options(prepared, out, steps=3))
    state = ckpt.read_checkpoint(out / "last.pt")
    assert state["step"] == 3 and state["config"]["name"] == "tiny-test" and state["kit_version"]
    assert {"opt_g", "opt_d", "rng", "metrics"} <= set(state)
    model, cfg = ckpt.load_checkpoint(out / "last.pt")
    assert not model.training and cfg.name == "tiny-test"
    for part in ckpt.PARTS:
        for k, v in getattr(model, part).state_dict().items():
            assert torch.equal(v, state[part][k]), k
    # The model gives the same logits as one rebuilt by hand from the stored parts.
    from c2seg_baseline.model import HighDAN

    again = HighDAN(cfg)
    for part in ckpt.PARTS:
        getattr(again, part).load_state_dict(state[part])
    again.eval()
    x = [torch.rand(1, c, 64, 64) for c in CHANNELS.values()]
    with torch.no_grad():
        assert torch.equal(model(*x, target=True), again(*x, target=True))


def test_resume_continues_exactly(prepared, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_options(prepared, straight, steps=4, eval_every=2))
    train(tiny_options(prepared, split, steps=4, eval_every=2, stop_after=2))
    assert ckpt.read_checkpoint(split / "last.pt")["step"] == 2
    # A crash after logging step 3 but before its checkpoint: resume drops what it cannot hold.
    with (split / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "ce": 99.0}) + "\n")
    summary = train(tiny_options(prepared, split, steps=None, eval_every=2, resume=True, config=None))
    assert summary["step"] == 4
    a, b = weights(straight / "last.pt"), weights(split / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = ckpt.read_checkpoint(straight / "last.pt"), ckpt.read_checkpoint(split / "last.pt")
    assert torch.equal(sa["opt_g"]["state"][0]["exp_avg"], sb["opt_g"]["state"][0]["exp_avg"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sec"} for r in rows]  # noqa: E731
    assert strip(read_log(straight)) == strip(read_log(split))


def test_same_seed_same_weights_other_seed_differs(prepared, tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(tiny_options(prepared, tmp_path / name, steps=2, seed=seed, eval_every=100))
        runs[name] = weights(tmp_path / name / "last.pt")
    key = next(k for k in runs["a"] if k.endswith("weight"))
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not torch.equal(runs["a"][key], runs["c"][key])


def test_dataloader_workers_do_not_change_the_run(prepared, tmp_path):
    """Augmentation is keyed on (seed, epoch, index), so worker processes see what the main one would."""
    train(tiny_options(prepared, tmp_path / "w0", steps=5, eval_every=100, batch_size=4, workers=0))
    train(tiny_options(prepared, tmp_path / "w2", steps=5, eval_every=100, batch_size=4, workers=2))
    a, b = weights(tmp_path / "w0" / "last.pt"), weights(tmp_path / "w2" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fresh_run_refuses_to_overwrite_and_resume_needs_a_run(prepared, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(C2SegError, match="nothing to resume"):
        train(tiny_options(prepared, out, resume=True))
    train(tiny_options(prepared, out, steps=1))
    with pytest.raises(C2SegError, match="already holds a run"):
        train(tiny_options(prepared, out, steps=1))


def test_fresh_run_refuses_a_folder_of_the_users_files(prepared, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"model": "my own notes"}')
    with pytest.raises(C2SegError, match="is not empty and was not written by `c2seg train`"):
        train(tiny_options(prepared, out, steps=1))
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert (out / "config.json").read_text() == '{"model": "my own notes"}'


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(C2SegError, match="not found"):
        ckpt.load_checkpoint(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(C2SegError) as e:
        ckpt.load_checkpoint(junk)
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(C2SegError, match="not a c2seg HighDAN checkpoint"):
        ckpt.load_checkpoint(other)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Boom()}, path)
    with pytest.raises(C2SegError, match="not a readable HighDAN checkpoint"):
        ckpt.read_checkpoint(path)


def test_mismatched_weights_are_one_line_errors(prepared, tmp_path):
    out = tmp_path / "run"
    train(tiny_options(prepared, out, steps=1))
    state = ckpt.read_checkpoint(out / "last.pt")
    state["config"]["model"]["head_widths"] = [8, 8, 8]
    ckpt.save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(C2SegError, match="do not fit its config"):
        ckpt.load_checkpoint(tmp_path / "bad.pt")


# --- command line ------------------------------------------------------------------------------

def test_cli_trains_and_reports(prepared, tmp_path):
    out = tmp_path / "run"
    r = run_cli(["train-baseline", "--prepared", str(prepared), "--track", "AB", "--out", str(out), "--config", "tiny",
                 "--steps", "2", "--device", "cpu", "--batch-size", "2", "--eval-every", "2", "--quiet"])
    assert r.returncode == 0, r.stderr
    assert "step 2/2" in r.stdout and "target mIoU" in r.stdout
    assert (out / "best.pt").is_file()


@pytest.mark.parametrize("spelling", ["--prepared", "--data"])  # --data: the older spelling, kept
def test_cli_prepared_folder_has_two_spellings(prepared, tmp_path, spelling):
    # Both spellings fill the same parameter, so they train alike (one training run above proves
    # the rest); a missing folder named either way is the same one-line error.
    from c2seg_baseline.cli import train_baseline

    args = ["--track", "AB", "--out", str(tmp_path / "run")]
    ctx = train_baseline.make_context("train-baseline", [spelling, str(prepared), *args])
    assert ctx.params["data"] == prepared
    missing = tmp_path / "missing"
    assert_one_line_error(run_cli(["train-baseline", spelling, str(missing), *args, "--quiet"]), str(missing))


@pytest.mark.parametrize("extra, message", [
    (["--data", "{missing}"], "does not exist"),
    (["--config", "{badcfg}"], "unknown field"),
    (["--config", "nonsense"], "neither a preset"),
    (["--track", "BW"], "prepared for track AB"),
    (["--device", "tpu"], "unknown device"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_cli_errors_are_one_line(prepared, tmp_path, extra, message):
    badcfg = tmp_path / "bad.json"
    badcfg.write_text(json.dumps({"base": "tiny", "model": {"wings": 3}}))
    defaults = {"--data": str(prepared), "--track": "AB", "--out": str(tmp_path / "run"), "--config": "tiny",
                "--steps": "1", "--device": "cpu"}
    args = cli_args(defaults, extra, missing=tmp_path / "missing", badcfg=badcfg)
    assert_one_line_error(run_cli(["train-baseline", *args, "--quiet"]), message)
