"""A run's record and what predict does with it (which checkpoint, which recipe).

- predict refuses a checkpoint trained on another track, on other bands, or on input prepared
  otherwise, naming both sides (a BW checkpoint used to write an AB submission the server ranked);
- the best mIoU train-baseline prints is exactly what `predict` + `score` give for best.pt (the
  evaluation used other windows than predict: 0.2646 vs 0.2481 in the demo).
"""

from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import assert_one_line_error, config_file, make_prepared, run_cli

from c2seg_baseline import checkpoint as ckpt

OPTIONS = {"pca_components": 10, "pca_fit": "city", "normalisation": "minmax", "percentiles": [1.0, 99.0],
           "sample_pixels": 200000, "seed": 0}


def with_options(prep, **options):
    manifest = json.loads((prep / "manifest.json").read_text())
    manifest["options"] = {**OPTIONS, **options}
    (prep / "manifest.json").write_text(json.dumps(manifest))
    return prep


def train_cli(prep, track, out, *extra):
    r = run_cli(["train-baseline", "--data", str(prep), "--track", track, "--out", str(out), "--config",
                 config_file(prep.parent), "--device", "cpu", "--batch-size", "2", "--quiet", *extra])
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    ab = with_options(make_prepared(root / "AB", target_shape=(150, 120)))
    bw = with_options(make_prepared(root / "BW", track="BW"))
    train_cli(ab, "AB", root / "ab", "--steps", "4", "--eval-every", "2")
    train_cli(bw, "BW", root / "bw", "--steps", "1")
    return root, ab, bw


def test_checkpoints_and_config_json_record_track_and_input_layout(runs):
    root, ab, _ = runs
    record = ckpt.read_checkpoint(root / "ab" / "last.pt")["run"]
    assert record["track"] == "AB"
    assert record["input"] == {"track": "AB", "layout": "scene", "channels": {"hsi": 10, "msi": 4, "sar": 2},
                               "prepare": {"pca_components": 10, "pca_fit": "city", "pca_solver": "exact",
                                           "normalisation": "minmax"}}
    saved = json.loads((root / "ab" / "config.json").read_text())
    assert saved["run"]["input"] == record["input"]
    assert saved["predict"] == {"stitch": "blend", "window": None, "overlap": None}


def test_predict_refuses_a_checkpoint_of_another_track(runs, tmp_path):
    root, ab, _ = runs
    out = tmp_path / "p.h5"
    r = run_cli(["predict", "--checkpoint", str(root / "bw" / "last.pt"), "--data", str(ab), "--track", "AB",
                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert_one_line_error(r, f"checkpoint {root / 'bw' / 'last.pt'} was trained on track BW; --track is AB")
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"pca_fit": "source"}, "was trained on input prepared with pca_fit city; {data} was prepared with pca_fit source"),
    ({"normalisation": "percentile"}, "prepared with normalisation minmax; {data} was prepared with normalisation "
                                      "percentile"),
    ({"pca_components": 8}, "expects bands hsi 10, msi 4, sar 2; {data} has hsi 8, msi 4, sar 2"),
    ({"pca_solver": "authors"}, "prepared with pca_solver exact; {data} was prepared with pca_solver authors"),
])
def test_predict_refuses_input_prepared_otherwise(runs, tmp_path, change, message):
    root, ab, _ = runs
    data = tmp_path / "other"
    shutil.copytree(ab, data)
    with_options(data, **change)
    if "pca_components" in change:  # fewer PCA components: fewer HSI bands in the cache
        with h5py.File(data / "berlin.h5", "r+") as f:
            hsi = f["hsi"][:8]
            del f["hsi"]
            f.create_dataset("hsi", data=hsi)
    out = tmp_path / "p.h5"
    r = run_cli(["predict", "--checkpoint", str(root / "ab" / "last.pt"), "--data", str(data), "--track", "AB",
                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert_one_line_error(r, message.format(data=data))
    assert not out.exists()


def test_printed_best_miou_is_what_predict_and_score_give_for_best_pt(runs, tmp_path):
    root, ab, _ = runs
    run = root / "ab"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4]
    best = max(evals, key=lambda r: r["eval"]["miou"])  # the first of equals is kept: max returns it too
    state = ckpt.read_checkpoint(run / "best.pt")
    assert state["step"] == best["step"] and state["best"]["miou"] == best["eval"]["miou"]
    # predict best.pt with its defaults, then score it against the target's labels
    labels = tmp_path / "labels.h5"
    with h5py.File(ab / "berlin.h5") as f:
        label = f["label"][:]
    from c2seg_kit.submission.writers import write_labels

    write_labels(labels, label, "AB")
    pred = tmp_path / "p.h5"
    r = run_cli(["predict", "--checkpoint", str(run / "best.pt"), "--data", str(ab), "--track", "AB",
                 "--out", str(pred), "--device", "cpu", "--quiet"])
    assert r.returncode == 0, r.stderr
    assert "blend 512 px, overlap 128" in r.stdout
    r = run_cli(["score", str(pred), "--labels", str(labels), "--json"])
    assert r.returncode == 0, r.stderr
    scored = json.loads(r.stdout)
    assert scored["miou"] == best["eval"]["miou"]
    assert scored["oa"] == best["eval"]["oa"]


def test_the_printed_line_names_that_best(runs, tmp_path):
    """The line train-baseline prints at the end carries the same best, rounded to 4 places."""
    _, ab, _ = runs
    out = tmp_path / "run"
    r = train_cli(ab, "AB", out, "--steps", "2", "--eval-every", "1", "--stitch", "authors")
    m = re.search(r"best (\d\.\d{4}) at step (\d+)", r.stdout)
    assert m, r.stdout
    state = ckpt.read_checkpoint(out / "best.pt")
    assert m.group(1) == f"{state['best']['miou']:.4f}" and int(m.group(2)) == state["step"]
    # --stitch authors is recorded and is predict's default for this run
    assert state["config"]["predict"]["stitch"] == "authors"
    pred = tmp_path / "p.h5"
    r = run_cli(["predict", "--checkpoint", str(out / "best.pt"), "--data", str(ab), "--track", "AB",
                 "--out", str(pred), "--device", "cpu", "--quiet"])
    assert r.returncode == 0 and "authors 32 px" in r.stdout, (r.stdout, r.stderr)
    assert np.isfinite(state["best"]["miou"])


def test_a_record_from_before_the_solver_option_means_the_exact_solver():
    """Caches and checkpoints written before `prepare --pca-solver` existed were fitted exactly."""
    from types import SimpleNamespace

    from c2seg_baseline.provenance import check_matches, input_layout
    from c2seg_kit.errors import C2SegError

    def cache(options):
        return SimpleNamespace(manifest={"options": options}, track=SimpleNamespace(name="AB"),
                               target=SimpleNamespace(channels={"hsi": 10, "msi": 4, "sar": 2}))

    channels = {"hsi": 10, "msi": 4, "sar": 2}
    old = cache(OPTIONS)  # no pca_solver recorded
    assert input_layout(old)["prepare"]["pca_solver"] == "exact"
    before = {"track": "AB", "input": {"prepare": {"pca_components": 10, "pca_fit": "city", "normalisation": "minmax"}}}
    check_matches(before, channels, cache({**OPTIONS, "pca_solver": "exact"}), "AB", "old.pt", "data")
    with pytest.raises(C2SegError, match="pca_solver exact; data was prepared with pca_solver authors"):
        check_matches(before, channels, cache({**OPTIONS, "pca_solver": "authors"}), "AB", "old.pt", "data")
