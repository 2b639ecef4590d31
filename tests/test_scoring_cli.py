"""`c2seg validate`, `c2seg score`, `c2seg render` through the real entry point (c2seg_kit.cli.main)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from cli_support import run_cli
from PIL import Image
from sklearn.metrics import cohen_kappa_score, f1_score, jaccard_score

from c2seg_kit.classes import CLASS_NAMES, CLASSES, EVAL_CLASSES
from c2seg_kit.render import render_confusion_png
from c2seg_kit.submission.writers import write_labels, write_submission

SHAPE = (50, 36)


def run(argv, capsys) -> tuple[int, str, str]:
    return run_cli(capsys, *argv)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 14, SHAPE, dtype=np.uint8)
    label[:, :3] = 0  # an unlabelled strip
    label[label == 13] = 12  # class 13 absent from the labels...
    pred = np.where(rng.random(SHAPE) < 0.7, label, rng.integers(0, 13, SHAPE)).astype(np.uint8)
    pred[0, :5] = 0  # ...and predicted 0 here and there
    return {
        "label": label,
        "pred": pred,
        "labels": write_labels(tmp_path / "labels.h5", label, "AB"),
        "preds": write_submission(tmp_path / "predictions.h5", pred, "AB", team="t"),
    }


# ---- validate ----------------------------------------------------------------------------------

def test_validate_ok(files, capsys):
    code, out, err = run(["validate", str(files["preds"])], capsys)
    assert code == 0 and out.startswith("OK: predictions.h5 is a valid AB submission (50 x 36") and not err


def test_validate_against_labels_and_track(files, capsys):
    code, out, _ = run(["validate", str(files["preds"]), "--labels", str(files["labels"]), "--track", "ab"], capsys)
    assert code == 0 and out == "OK: predictions.h5 is a valid AB submission (50 x 36, uint8)\n"


def test_validate_wrong_track_is_one_line_exit_1(files, capsys):
    code, out, err = run(["validate", str(files["preds"]), "--track", "BW"], capsys)
    assert code == 1 and not out
    assert err == "error: submission is for track AB, expected track BW\n"


def test_validate_wrong_shape_against_labels(tmp_path, files, capsys):
    other = write_submission(tmp_path / "p2.h5", np.zeros((50, 35), np.uint8), "AB")
    code, _, err = run(["validate", str(other), "--labels", str(files["labels"])], capsys)
    assert code == 1 and "has shape 50 x 35, expected 50 x 36" in err and err.count("\n") == 1


def test_validate_out_of_range_values(tmp_path, capsys):
    import h5py

    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"c2seg_format": "submission/1", "track": "AB"})
        f["prediction"] = np.full((4, 4), 20, np.uint8)
    code, _, err = run(["validate", str(path)], capsys)
    assert code == 1 and err == "error: 'prediction' has 16 values outside 0..13 (seen: 20)\n"


@pytest.mark.parametrize("content, match", [(b"", "empty (0 bytes)"), (b"hello world" * 9, "not an HDF5 file")])
def test_validate_bad_bytes(tmp_path, capsys, content, match):
    path = tmp_path / "p.h5"
    path.write_bytes(content)
    code, _, err = run(["validate", str(path)], capsys)
    assert code == 1 and match in err and "Traceback" not in err


def test_validate_missing_file_is_exit_1(tmp_path, capsys):
    code, _, err = run(["validate", str(tmp_path / "missing.h5")], capsys)
    assert code == 1 and "not found" in err


def test_validate_contradicting_track_is_a_usage_error(files, capsys):
    code, _, err = run(["validate", str(files["preds"]), "--labels", str(files["labels"]), "--track", "BW"], capsys)
    assert code == 2 and "contradicts" in err


def test_validate_unknown_track_is_a_usage_error(files, capsys):
    code, _, _ = run(["validate", str(files["preds"]), "--track", "XY"], capsys)
    assert code == 2


# ---- score -------------------------------------------------------------------------------------

def test_score_json_is_one_object_matching_sklearn(files, capsys):
    code, out, err = run(["score", str(files["preds"]), "--labels", str(files["labels"]), "--json"], capsys)
    assert code == 0 and not err
    result = json.loads(out)  # exactly one JSON document
    assert out.count("\n") == 1
    assert set(result) == {"track", "oa", "miou", "f1", "kappa", "per_class_iou", "confusion_matrix", "n_pixels"}
    assert result["track"] == "AB"
    m = files["label"].ravel() > 0
    y, q = files["label"].ravel()[m], files["pred"].ravel()[m]
    present = sorted((set(y.tolist()) | set(q.tolist())) - {0})
    assert result["n_pixels"] == int(m.sum())
    assert result["miou"] == pytest.approx(jaccard_score(y, q, labels=present, average="macro"))
    assert result["f1"] == pytest.approx(f1_score(y, q, labels=present, average="macro"))
    assert result["kappa"] == pytest.approx(cohen_kappa_score(y, q, labels=list(range(14))))
    assert result["oa"] == pytest.approx(float((y == q).mean()))
    assert result["per_class_iou"]["inland_wetlands"] is None  # absent on both sides: null
    assert list(result["per_class_iou"]) == list(CLASS_NAMES)
    assert np.array(result["confusion_matrix"]).shape == (13, 14)


def test_score_table_for_humans(files, capsys):
    from c2seg_kit.submission.score_files import score_files

    code, out, _ = run(["score", str(files["preds"]), "--labels", str(files["labels"])], capsys)
    assert code == 0
    want = score_files(files["preds"], files["labels"])
    lines = out.splitlines()
    assert lines[0] == f"track AB   evaluated pixels {want['n_pixels']:,}"
    for key, label in (("oa", "OA"), ("miou", "mIoU"), ("f1", "F1"), ("kappa", "kappa")):
        assert any(line.split()[:2] == [label, f"{want[key]:.4f}"] for line in lines), key
    for c in EVAL_CLASSES:  # one row per class: id, name, IoU to 4 decimals or n/a
        iou = want["per_class_iou"][c.name]
        row = next(line for line in lines if line.split()[:1] == [str(c.id)])
        assert c.display in row and row.split()[-1] == ("n/a" if iou is None else f"{iou:.4f}")


def test_score_report_files(tmp_path, files, capsys):
    report = tmp_path / "report"
    code, out, _ = run(["score", str(files["preds"]), "--labels", str(files["labels"]), "--json", "--report", str(report)], capsys)
    assert code == 0
    result = json.loads(out)
    assert json.loads((report / "scores.json").read_text()) == result
    rows = list(csv.DictReader((report / "per_class.csv").open()))
    assert [r["name"] for r in rows] == list(CLASS_NAMES)
    for r in rows:
        expected = result["per_class_iou"][r["name"]]
        assert (r["iou"] == "") if expected is None else float(r["iou"]) == pytest.approx(expected, abs=1e-6)
    labelled = files["label"] > 0
    for c, r in zip(EVAL_CLASSES, rows, strict=True):  # pixel counts against a plain count
        true, pred = files["label"][labelled], files["pred"][labelled]
        assert (int(r["id"]), r["display"]) == (c.id, c.display)
        assert int(r["true_pixels"]) == int(np.sum(true == c.id))
        assert int(r["predicted_pixels"]) == int(np.sum(pred == c.id))
        assert int(r["correct_pixels"]) == int(np.sum((true == c.id) & (pred == c.id)))
    cm_rows = list(csv.reader((report / "confusion_matrix.csv").open()))
    assert cm_rows[0] == ["true \\ pred"] + [c.name for c in CLASSES]
    assert [r[0] for r in cm_rows[1:]] == list(CLASS_NAMES)
    assert [[int(v) for v in r[1:]] for r in cm_rows[1:]] == result["confusion_matrix"]
    # The picture is the confusion matrix drawn by render_confusion_png, pixel for pixel.
    expected = render_confusion_png(result["confusion_matrix"], tmp_path / "cm.png", title="C2Seg AB confusion matrix")
    with Image.open(report / "confusion_matrix.png") as got, Image.open(expected) as want:
        assert got.format == "PNG"
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_score_refuses_a_bad_submission_in_one_line(tmp_path, files, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    code, out, err = run(["score", str(bad), "--labels", str(files["labels"]), "--json"], capsys)
    assert code == 1 and not out and err.startswith("error: ") and err.count("\n") == 1


def test_score_needs_labels(files, capsys):
    code, _, _ = run(["score", str(files["preds"])], capsys)
    assert code == 2


# ---- render ------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["preds", "labels"])
def test_render_predictions_and_labels_in_class_colours(tmp_path, files, capsys, which):
    from c2seg_kit.classes import palette

    bare, full = tmp_path / "bare.png", tmp_path / "full.png"
    code, out, _ = run(["render", str(files[which]), "--out", str(bare), "--no-legend", "--title", ""], capsys)
    assert code == 0 and str(bare) in out
    code, _, _ = run(["render", str(files[which]), "--out", str(full)], capsys)
    assert code == 0
    raster = files["pred" if which == "preds" else "label"]
    with Image.open(bare) as img:
        rgb = np.asarray(img.convert("RGB"))
    pad = 10  # the map sits at (pad, pad) with no title and no legend
    expected = np.array(palette(), dtype=np.uint8)[raster]
    np.testing.assert_array_equal(rgb[pad : pad + SHAPE[0], pad : pad + SHAPE[1]], expected)
    with Image.open(full) as img:
        legend = np.asarray(img.convert("RGB"))[:, pad + SHAPE[1] + pad :]  # right of the map
    for colour in palette():  # a swatch of every class colour
        assert (legend == colour).all(axis=-1).any(), colour


def test_render_downsamples_large_rasters(tmp_path, capsys):
    big = np.zeros((3000, 1000), np.uint8)
    big[:, 500:] = 10
    path = write_submission(tmp_path / "big.h5", big, "BW")
    out_png = tmp_path / "big.png"
    code, _, _ = run(["render", str(path), "--out", str(out_png), "--max-side", "300", "--no-legend", "--title", ""], capsys)
    assert code == 0
    with Image.open(out_png) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape[:2] == (300 + 20, 100 + 20)
    assert (rgb[10:310, 10:60] == (0, 0, 0)).all() and (rgb[10:310, 60:110] == (0, 255, 0)).all()


def test_render_refuses_hostile_file(tmp_path, capsys):
    path = tmp_path / "x.h5"
    path.write_bytes(b"not hdf5 at all" * 20)
    code, _, err = run(["render", str(path), "--out", str(tmp_path / "x.png")], capsys)
    assert code == 1 and "not an HDF5 file" in err
    assert not (tmp_path / "x.png").exists()
