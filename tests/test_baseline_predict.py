"""Whole-city prediction: blending against a naive per-pixel loop, lazy band reads, valid submissions."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import (
    assert_one_line_error,
    cli_args,
    config_file,
    make_prepared,
    run_cli,
    tiny_options,
)
from stitch_support import PositionModel, naive_blend

from c2seg_baseline.predict import blend_weights, blended_rows, predict_city  # noqa: E402


class RecordingCity:
    """A PreparedCity stand-in that records the row span of every read."""

    def __init__(self, city):
        self.city, self.shape, self.reads = city, city.shape, []

    def read(self, modality, r0, r1, c0, c1):
        self.reads.append(r1 - r0)
        return self.city.read(modality, r0, r1, c0, c1)


@pytest.mark.parametrize("shape, window, overlap", [((80, 72), 32, 8), ((45, 100), 64, 16), ((40, 50), 64, 0),
                                                   ((20, 70), 64, 16)])
def test_blending_matches_a_naive_per_pixel_loop(tmp_path, shape, window, overlap):
    from c2seg_kit.prepare.cache import PreparedData

    prep = make_prepared(tmp_path / "p", target_shape=shape)
    model = PositionModel()
    with PreparedData(prep) as data:
        city = RecordingCity(data.target)
        blocks = list(blended_rows(model, city, window=window, overlap=overlap, batch_size=3, progress=False))
        expected = naive_blend(model, data.target, window, overlap)
    starts = [r0 for r0, _ in blocks]
    assert starts[0] == 0 and all(b[1].shape[1] > 0 for b in blocks)
    got = np.concatenate([b for _, b in blocks], axis=1)
    assert got.shape == (13, *shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Reads never exceed one window of rows; every call had the target-side attention on.
    assert max(city.reads) <= window
    assert all(target for _, target in model.calls)
    # predict_city decides classes 1..13 by argmax of the same blend.
    with PreparedData(prep) as data:
        pieces = []
        predict_city(model, data.target, window=window, overlap=overlap, progress=False,
                     sink=lambda r0, rows: pieces.append(rows))
    pred = np.concatenate(pieces)
    np.testing.assert_array_equal(pred, expected.argmax(0) + 1)


def test_blend_weights_are_positive_and_flat_inside():
    w = blend_weights(64, 16)
    assert w.min() > 0 and w.max() == 1.0 and w[20:44, 20:44].min() == 1.0
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from c2seg_baseline.train import train

    root = tmp_path_factory.mktemp("pred")
    prep = make_prepared(root / "AB", target_shape=(90, 70))
    out = root / "run"
    train(tiny_options(prep, out, steps=2, eval_every=100))
    return prep, out / "last.pt"


def test_predict_cli_writes_a_submission_that_scores(trained, tmp_path):
    from c2seg_kit.prepare.cache import PreparedData
    from c2seg_kit.submission.readers import open_submission
    from c2seg_kit.submission.score_files import score_files
    from c2seg_kit.submission.writers import write_labels

    prep, checkpoint = trained
    out = tmp_path / "predictions.h5"
    r = run_cli(["predict", "--checkpoint", str(checkpoint), "--data", str(prep), "--track", "AB", "--out", str(out),
                 "--window", "64", "--overlap", "16", "--device", "cpu", "--quiet"])
    assert r.returncode == 0, r.stderr
    with PreparedData(prep) as data:
        shape = data.target.shape
        label = data.target.read_label(0, shape[0], 0, shape[1])
    with open_submission(out, track="AB", expected_shape=shape) as sub:
        pred = sub.read()
        assert sub.attrs.get("method", "").startswith("HighDAN")
    assert pred.shape == (90, 70) and pred.min() >= 1 and pred.max() <= 13
    labels = tmp_path / "labels.h5"
    write_labels(labels, label, "AB")
    scores = score_files(out, labels)
    assert scores["track"] == "AB" and scores["n_pixels"] == int((label > 0).sum())
    expected_oa = float((pred[label > 0] == label[label > 0]).mean())
    assert scores["oa"] == pytest.approx(expected_oa)
    r = run_cli(["score", str(out), "--labels", str(labels), "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["miou"] == pytest.approx(scores["miou"])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_predict_matches_evaluation_during_training(trained, tmp_path):
    """The file written by predict and the in-memory evaluation agree (one code path)."""
    from c2seg_baseline.checkpoint import load_checkpoint
    from c2seg_baseline.predict import evaluate_city, predict_to_file
    from c2seg_kit.prepare.cache import PreparedData
    from c2seg_kit.submission.readers import open_submission

    prep, checkpoint = trained
    out = tmp_path / "p.h5"
    predict_to_file(checkpoint, prep, "AB", out, window=32, overlap=8, device="cpu", progress=False)
    model, _ = load_checkpoint(checkpoint)
    with PreparedData(prep) as data, open_submission(out) as sub:
        t = data.target
        label = t.read_label(0, t.shape[0], 0, t.shape[1])
        pred = sub.read()
        scores = evaluate_city(model, t, lambda a, b: t.read_label(a, b, 0, t.shape[1]), window=32, overlap=8,
                               progress=False)
    assert scores["oa"] == pytest.approx(float((pred[label > 0] == label[label > 0]).mean()))


@pytest.mark.parametrize("args, message", [
    (["--window", "50"], "multiple of 32"),
    (["--window", "64", "--overlap", "64"], "--overlap must be in"),
    (["--checkpoint", "{junk}"], "not a readable HighDAN checkpoint"),
    (["--checkpoint", "{missing}"], "checkpoint not found"),
    (["--track", "BW"], "prepared for track AB"),
    (["--data", "{missing}"], "does not exist"),
    (["--out", "{nodir}"], "does not exist"),
])
def test_predict_cli_errors_are_one_line(trained, tmp_path, args, message):
    prep, checkpoint = trained
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    defaults = {"--checkpoint": str(checkpoint), "--data": str(prep), "--track": "AB",
                "--out": str(tmp_path / "p.h5"), "--device": "cpu", "--window": "64"}
    opts = cli_args(defaults, args, junk=junk, missing=tmp_path / "missing", nodir=tmp_path / "no" / "p.h5")
    assert_one_line_error(run_cli(["predict", *opts, "--quiet"]), message)
    assert not (tmp_path / "p.h5").exists()


def test_end_to_end_on_the_kits_synth_and_prepare(synth_ab, prepared_ab, tmp_path):
    """The real path: synth -> prepare -> train (eval against labels.h5) -> predict -> score."""
    from c2seg_baseline.predict import predict_to_file
    from c2seg_baseline.train import train
    from c2seg_kit.submission.readers import open_labels
    from c2seg_kit.submission.score_files import score_files

    out = tmp_path / "run"
    summary = train(tiny_options(prepared_ab, out, steps=2, eval_every=2, labels=synth_ab / "labels.h5",
                                 config=config_file(tmp_path)))
    assert summary["best"]["step"] == 2 and (out / "best.pt").is_file()
    pred = tmp_path / "predictions.h5"
    predict_to_file(out / "best.pt", prepared_ab, "AB", pred, window=64, overlap=16, device="cpu", progress=False)
    scores = score_files(pred, synth_ab / "labels.h5")
    # The evaluation during training used the same prediction path (window 64, overlap 16).
    assert scores["miou"] == pytest.approx(summary["metrics"]["miou"])
    with open_labels(synth_ab / "labels.h5") as lab:
        assert scores["n_pixels"] == int((lab.read() > 0).sum()) > 0
