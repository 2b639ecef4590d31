"""`c2seg pack`, `unpack`, `validate`, `score` and `render` on tiles, through the real entry point,
on a tiny `synth --layout tiles` set. Oracles: the images written (pack reads them back exactly),
rasterio (unpack's GeoTIFFs as GDAL sees them), score_files / scikit-learn, and a naive paint of
the label tiles at synth's own tile grid (the mosaic)."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import rasterio
from cli_support import run_cli
from PIL import Image
from tile_support import write_gdal

from c2seg_kit.classes import palette
from c2seg_kit.registry import TRACKS
from c2seg_kit.render import GAP_RGB, sheet_grid
from c2seg_kit.submission.readers import open_labels, open_submission
from c2seg_kit.submission.score_files import score_files
from c2seg_kit.submission.writers import write_submission
from c2seg_kit.synth.scenes import build_cities
from c2seg_kit.synth.tile_sets import synthesize_tiles, tile_grid, tile_plan

SCALE = 0.1
# GeoTIFFs written without georeferencing, on purpose (a team's prediction images)
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles")
    synthesize_tiles(out, TRACKS["AB"], scale=SCALE, seed=0, progress=False)
    with open_labels(out / "labels.h5") as lab:
        labels = dict(lab.iter_tiles())
    return {"root": out, "test": out / "C2Seg_AB" / "test", "labels_path": out / "labels.h5", "labels": labels}


def predictions(labels: dict, seed: int = 0, zero_based: bool = False) -> dict[str, np.ndarray]:
    """An imperfect prediction per tile: classes 1..13 (0..12 when zero_based)."""
    rng = np.random.default_rng(seed)
    out = {}
    for tid, lab in labels.items():
        pred = np.where((lab > 0) & (rng.random(lab.shape) < 0.8), lab, rng.integers(1, 14, lab.shape)).astype(np.uint8)
        out[tid] = pred - 1 if zero_based else pred
    return out


def save_mixed(folder, tiles: dict) -> None:
    """The ways teams wrote them: greyscale and palette PNGs, 16-bit PNGs, GDAL GeoTIFFs, _prediction.tif."""
    folder.mkdir()
    for i, (tid, a) in enumerate(tiles.items()):
        kind = i % 5
        if kind == 0:
            Image.fromarray(a, mode="L").save(folder / f"{tid}.png")
        elif kind == 1:
            img = Image.fromarray(a, mode="P")
            img.putpalette([v for rgb in palette() for v in rgb])
            img.save(folder / f"{tid}.png")
        elif kind == 2:
            Image.fromarray(a.astype(np.uint16)).save(folder / f"{tid}.png")  # mode I;16
        elif kind == 3:
            write_gdal(folder / f"{tid}_prediction.tif", a, epsg=None)
        else:
            write_gdal(folder / f"{tid}.TIFF", a.astype(np.int32), epsg=None)


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- pack ---------------------------------------------------------------------------------------

def test_pack_reads_every_kind_of_image_exactly_and_checks_against_the_test_tiles(synth, tmp_path, capsys):
    pred = predictions(synth["labels"])
    save_mixed(tmp_path / "preds", pred)
    out = tmp_path / "predictions.h5"
    code, stdout, err = run_cli(capsys, "pack", tmp_path / "preds", "--track", "ab", "--like", synth["root"], "--out", out,
                                "--method", "m", "--quiet")
    n = sum(a.size for a in pred.values())
    assert (code, err) == (0, "")
    assert stdout == f"wrote {out}: AB tile submission, 21 tiles, {n:,} pixels; ids and shapes match the 21 test tiles\n"
    with open_submission(out, track="AB", expected_tiles={t: a.shape for t, a in pred.items()}) as sub:
        assert sub.attrs["method"] == "m" and sub.ids == [str(i) for i in range(21)]
        for tid, tile in sub.iter_tiles():
            np.testing.assert_array_equal(tile, pred[tid])
    assert score_files(out, synth["labels_path"])["n_tiles"] == 21
    assert files_in(tmp_path) == ["predictions.h5", "preds"]  # no temporary file left


def test_any_zero_is_refused_naming_add_one_and_the_count(synth, tmp_path, capsys):
    """0 is no class: 0-based predictions are refused however few their zeros (here well under 1 %
    of the pixels, a model that rarely predicts surface water), naming the count and --add-one."""
    pred = predictions(synth["labels"], zero_based=True)
    pred = {t: np.where(a == 0, 1, a).astype(np.uint8) for t, a in pred.items()}  # no zeros ...
    pred["3"][0, :3] = 0  # ... but three, in one tile
    pred["5"][2, 2] = 0  # ... and one more
    total = sum(a.size for a in pred.values())
    assert 0.01 * total > 4
    (tmp_path / "p").mkdir()
    for tid, a in pred.items():
        Image.fromarray(a).save(tmp_path / "p" / f"{tid}.png")
    before = files_in(tmp_path)
    code, out, err = run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--out", tmp_path / "a.h5", "--quiet")
    assert code == 1 and not out and err.count("\n") == 1, err
    assert "holds 4 pixels of value 0" in err and "(2 of 21 images, e.g. 3.png)" in err and "--add-one" in err
    assert files_in(tmp_path) == before  # nothing written
    code, _, err = run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--out", tmp_path / "b.h5", "--add-one", "--quiet")
    assert (code, err) == (0, "")
    with open_submission(tmp_path / "b.h5") as sub:
        for tid, tile in sub.iter_tiles():
            np.testing.assert_array_equal(tile, pred[tid] + 1)
    # 1-based predictions (no zero at all) pack silently
    for tid, a in predictions(synth["labels"]).items():
        Image.fromarray(a).save(tmp_path / "p" / f"{tid}.png")
    code, _, err = run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--out", tmp_path / "d.h5", "--quiet")
    assert (code, err) == (0, "")


def test_validate_and_submit_refuse_a_tile_file_holding_zeros(synth, tmp_path, capsys, monkeypatch):
    """The format can carry 0 (a predicted 0 is scored wrong), so a file written by other means
    than pack is refused by validate and submit too, in one line naming the count and --add-one."""
    from c2seg_kit.submission.tile_writers import tile_submission_writer

    pred = predictions(synth["labels"])
    pred["7"][:2, :] = 0
    zeros = pred["7"][:2, :].size
    out = tmp_path / "zeros.h5"
    with tile_submission_writer(out, "AB", expected_ids=list(pred)) as writer:
        for tid, a in pred.items():
            writer.write_tile(tid, a)
    code, stdout, err = run_cli(capsys, "validate", out, "--labels", synth["labels_path"])
    assert code == 1 and not stdout and err.count("\n") == 1, err
    assert f"zeros.h5 holds {zeros:,} pixels of value 0" in err and "--add-one" in err
    # submit refuses it locally: no upload, no quota spent
    from c2seg_kit import client

    uploads = []
    monkeypatch.setattr(client, "health", lambda site: {"tracks": [{"track": "AB", "layout": "tiles"}]})
    monkeypatch.setattr(client, "track_tiles", lambda track, server: {t: a.shape for t, a in pred.items()})
    monkeypatch.setattr(client, "submit", lambda *a, **k: uploads.append(a))
    code, stdout, err = run_cli(capsys, "submit", out, "--server", "http://127.0.0.1:9", "--token",
                                "c2s_" + "t0ken" * 8, "--quiet")
    assert code == 1 and err.count("\n") == 1 and f"holds {zeros:,} pixels of value 0" in err, err
    assert uploads == []


def bad_case(tmp_path, synth, name):
    """(PRED_DIR, extra arguments) for one kind of bad input."""
    pred = predictions(synth["labels"], zero_based=name == "add-one 13")
    folder = tmp_path / "p"
    folder.mkdir()
    for tid, a in pred.items():
        Image.fromarray(a).save(folder / f"{tid}.png")
    if name == "rgb":
        Image.fromarray(np.stack([pred["4"]] * 3, axis=-1)).save(folder / "4.png")
    elif name == "duplicate":
        write_gdal(folder / "3.tif", pred["3"], epsg=None)
    elif name == "value 14":
        a = pred["6"].copy()
        a[0, :2] = 14
        Image.fromarray(a).save(folder / "6.png")
    elif name == "add-one 13":
        a = pred["2"].copy()
        a[1, 1] = 13
        Image.fromarray(a).save(folder / "2.png")
        return folder, ["--add-one"]
    elif name == "float tif":
        (folder / "5.png").unlink()
        write_gdal(folder / "5.tif", pred["5"].astype(np.float32), epsg=None)
    elif name == "3-band tif":
        (folder / "5.png").unlink()
        write_gdal(folder / "5.tif", np.stack([pred["5"]] * 3), epsg=None)
    elif name == "missing id":
        (folder / "7.png").unlink()
        (folder / "13.png").unlink()
        Image.fromarray(pred["0"]).save(folder / "x.png")
        return folder, ["--like", synth["root"]]
    elif name == "shape":
        Image.fromarray(pred["9"][:-1]).save(folder / "9.png")
        return folder, ["--like", synth["test"]]
    elif name == "huge png":
        Image.new("L", (16385, 1)).save(folder / "8.png")
    elif name == "existing out":
        (tmp_path / "out.h5").write_bytes(b"the user's own file")
    elif name == "no images":
        for p in folder.iterdir():
            p.rename(p.with_suffix(".jpg"))
    return folder, []


BAD = {
    "rgb": r"^error: 4\.png has 3 colour channels \(mode RGB\); a class image holds one band of class ids",
    "duplicate": r"^error: tile 3 appears twice in .*/p \(3\.png, 3\.tif\); keep one$",
    "value 14": r"^error: 6\.png has 2 values outside 0\.\.13 \(seen: 14\)$",
    "add-one 13": r"^error: 2\.png has 1 values outside 0\.\.12, which --add-one would take beyond 13 \(seen: 13\)$",
    "float tif": r"^error: 5\.tif holds float32 values; a class image holds integer class ids$",
    "3-band tif": r"^error: 5\.tif has 3 bands \(colour channels\?\); a class image holds one band of class ids$",
    "missing id": r"^error: .*/p must hold one image per test tile of .* \(21\): 2 missing \(7, 13\); 1 not among them \(x\)$",
    "shape": r"^error: 9\.png is 39 x 40, but test tile 9 is 40 x 40$",
    "huge png": r"^error: 8\.png is 1 x 16385 pixels, over the tile size cap \(16384 px per side\)$",
    "existing out": r"^error: .*/out\.h5 already exists; it was left as it is \(choose another --out, or --force\)$",
    "no images": r"^error: no class images \(<id>\.png, <id>\.tif, <id>\.tiff or <id>_prediction\.tif\) in .*/p$",
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_exit_1_and_nothing_written(synth, tmp_path, capsys, name):
    import re

    folder, extra = bad_case(tmp_path, synth, name)
    before = files_in(tmp_path)
    code, out, err = run_cli(capsys, "pack", folder, "--track", "AB", "--out", tmp_path / "out.h5", "--quiet", *extra)
    assert code == 1 and not out and err.count("\n") == 1 and re.search(BAD[name], err.strip()), err
    assert files_in(tmp_path) == before  # nothing written, nothing left behind
    if name == "existing out":
        assert (tmp_path / "out.h5").read_bytes() == b"the user's own file"


def test_force_replaces_and_labels_pack_organizer_files(synth, tmp_path, capsys):
    folder = tmp_path / "label"
    folder.mkdir()
    for tid, a in synth["labels"].items():
        write_gdal(folder / f"{tid}.tiff", a)
    out = tmp_path / "labels-tiles.h5"
    out.write_bytes(b"old")
    code, stdout, _ = run_cli(capsys, "pack", folder, "--track", "AB", "--labels", "--out", out, "--force", "--quiet")
    assert code == 0 and stdout.startswith(f"wrote {out}: AB tile labels file, 21 tiles")
    with open_labels(out) as lab:
        assert lab.shapes == {t: a.shape for t, a in synth["labels"].items()}
        for tid, tile in lab.iter_tiles():
            np.testing.assert_array_equal(tile, synth["labels"][tid])
    code, _, err = run_cli(capsys, "pack", folder, "--track", "AB", "--labels", "--add-one", "--out", tmp_path / "x.h5")
    assert code == 2 and "--add-one is for 0-based predictions" in err


def test_like_refuses_bad_test_tiles_in_one_line(synth, tmp_path, capsys):
    import shutil

    pred = predictions(synth["labels"])
    (tmp_path / "p").mkdir()
    for tid, a in pred.items():
        Image.fromarray(a).save(tmp_path / "p" / f"{tid}.png")
    # a test tile whose modalities disagree in size
    test = tmp_path / "test"
    shutil.copytree(synth["test"], test)
    write_gdal(test / "sar" / "3.tiff", np.zeros((2, 40, 12), np.float32))
    code, _, err = run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--like", test, "--out", tmp_path / "o.h5", "--quiet")
    assert code == 1 and err == "error: tile 3 (tiles): modalities disagree in size (HSI 40x40, MSI 40x40, SAR 40x12)\n"
    # a missing modality for an id
    (test / "sar" / "3.tiff").unlink()
    code, _, err = run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--like", test, "--out", tmp_path / "o.h5", "--quiet")
    assert code == 1 and err == f"error: {test}: tile 3 has hsi and msi but no sar tile\n"
    # a zip with a member escaping the archive
    evil = tmp_path / "C2Seg_AB.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("C2Seg_AB/test/msi/0.tiff", b"x")
        zf.writestr("C2Seg_AB/test/msi/../../../../evil.tiff", b"x")
    code, _, err = run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--like", evil, "--out", tmp_path / "o.h5", "--quiet")
    assert code == 1 and err.count("\n") == 1 and "escapes the archive" in err
    assert not (tmp_path / "o.h5").exists()


# ---- unpack -------------------------------------------------------------------------------------

def test_unpack_writes_gdal_readable_georeferenced_tiles(synth, tmp_path, capsys):
    pred = predictions(synth["labels"], seed=1)
    (tmp_path / "p").mkdir()
    for tid, a in pred.items():
        Image.fromarray(a).save(tmp_path / "p" / f"{tid}.png")
    run_cli(capsys, "pack", tmp_path / "p", "--track", "AB", "--out", tmp_path / "p.h5", "--quiet")
    (tmp_path / "gis").mkdir()  # an empty folder is fine
    code, out, _ = run_cli(capsys, "unpack", tmp_path / "p.h5", "--like", synth["root"], "--out", tmp_path / "gis", "--quiet")
    assert code == 0 and out == f"wrote 21 GeoTIFFs to {tmp_path / 'gis'}\n"
    assert files_in(tmp_path / "gis") == sorted(f"{t}.tif" for t in pred)
    for tid, a in pred.items():
        with rasterio.open(tmp_path / "gis" / f"{tid}.tif") as got, rasterio.open(synth["test"] / "msi" / f"{tid}.tiff") as ref:
            assert (got.count, got.dtypes[0], got.nodata) == (1, "uint8", 0)
            assert got.transform == ref.transform and got.crs == ref.crs
            np.testing.assert_array_equal(got.read(1), a)
    # a folder with something in it, or a scene file: one line, nothing written
    code, _, err = run_cli(capsys, "unpack", tmp_path / "p.h5", "--like", synth["root"], "--out", tmp_path / "gis")
    assert code == 1 and err == f"error: {tmp_path / 'gis'} is not empty; unpack writes into a new or empty folder (nothing was changed)\n"
    scene = write_submission(tmp_path / "scene.h5", np.ones((5, 5), np.uint8), "AB")
    code, _, err = run_cli(capsys, "unpack", scene, "--like", synth["root"], "--out", tmp_path / "new")
    assert code == 1 and err == ("error: scene.h5 holds one raster of the scene; unpack takes a file of tiles "
                                 "(layout 'tiles', as c2seg pack writes it)\n")
    assert not (tmp_path / "new").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- validate, score, render -------------------------------------------------------------------

@pytest.fixture(scope="module")
def packed(synth, tmp_path_factory):
    from c2seg_kit.submission.tile_writers import write_tile_submission

    folder = tmp_path_factory.mktemp("packed")
    pred = predictions(synth["labels"], seed=2)
    return {"pred": pred, "path": write_tile_submission(folder / "predictions.h5", pred.items(), "AB")}


def test_validate_and_score_tiles(synth, packed, capsys):
    n = sum(a.size for a in packed["pred"].values())
    code, out, _ = run_cli(capsys, "validate", packed["path"], "--labels", synth["labels_path"])
    assert code == 0 and out == f"OK: predictions.h5 is a valid AB tile submission (21 tiles, {n:,} pixels)\n"
    code, out, _ = run_cli(capsys, "score", packed["path"], "--labels", synth["labels_path"], "--json")
    result = json.loads(out)
    assert code == 0 and result == json.loads(json.dumps(score_files(packed["path"], synth["labels_path"])))
    assert set(result) == {"track", "oa", "miou", "f1", "kappa", "per_class_iou", "confusion_matrix", "n_pixels",
                           "layout", "n_tiles"} and (result["layout"], result["n_tiles"]) == ("tiles", 21)
    code, out, _ = run_cli(capsys, "score", packed["path"], "--labels", synth["labels_path"])
    assert out.startswith(f"track AB   tiles 21   evaluated pixels {result['n_pixels']:,}\n")


def test_validate_refuses_other_ids_in_one_line(synth, tmp_path, capsys):
    from c2seg_kit.submission.tile_writers import write_tile_submission

    pred = predictions(synth["labels"])
    del pred["20"]
    pred["20a"] = pred["19"]
    path = write_tile_submission(tmp_path / "p.h5", pred.items(), "AB")
    code, out, err = run_cli(capsys, "validate", path, "--labels", synth["labels_path"])
    assert code == 1 and not out
    assert err == "error: submission must hold exactly the 21 test tiles: 1 missing (20); 1 not among them ('20a')\n"


def _map_pixels(png, shape) -> np.ndarray:
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB"))
    return rgb[10 : 10 + shape[0], 10 : 10 + shape[1]]  # no title: the map sits at (pad, pad)


def _colours(classes: np.ndarray) -> np.ndarray:
    return np.array([*palette(), GAP_RGB], np.uint8)[classes]


@pytest.mark.parametrize("max_side", [2048, 40])
def test_render_contact_sheet(synth, tmp_path, capsys, max_side):
    labels = synth["labels"]
    code, out, _ = run_cli(capsys, "render", synth["labels_path"], "--out", tmp_path / "s.png", "--title", "", "--no-legend",
                           "--max-side", max_side)
    assert code == 0 and out == f"wrote {tmp_path / 's.png'} (contact sheet of 21 tiles in id order)\n"
    size = (max(a.shape[0] for a in labels.values()), max(a.shape[1] for a in labels.values()))
    rows, cols, k = sheet_grid(21, size, max_side)
    ch, cw = math.ceil(size[0] / k) + 1, math.ceil(size[1] / k) + 1
    expected = np.full((rows * ch - 1, cols * cw - 1), 14, np.uint8)
    for i in range(21):  # naive: tile i at row i // cols, column i % cols
        t = labels[str(i)][::k, ::k]
        expected[(i // cols) * ch : (i // cols) * ch + t.shape[0], (i % cols) * cw : (i % cols) * cw + t.shape[1]] = t
    assert max(expected.shape) <= max_side
    np.testing.assert_array_equal(_map_pixels(tmp_path / "s.png", expected.shape), _colours(expected))


@pytest.mark.parametrize("max_side", [2048, 37])
def test_render_mosaic_places_tiles_by_their_georeferencing(synth, packed, tmp_path, capsys, max_side):
    target = build_cities(TRACKS["AB"], SCALE, 0)[1]
    plan = tile_plan(target.shape, *tile_grid(target.city, target.shape))  # synth's own grid: the oracle
    scene = np.full(target.shape, 14, np.uint8)
    for tid, r, c in plan:  # in id order: later tiles over earlier ones
        t = packed["pred"][tid]
        scene[r : r + t.shape[0], c : c + t.shape[1]] = t
    k = math.ceil(max(target.shape) / max_side)
    code, out, _ = run_cli(capsys, "render", packed["path"], "--like", synth["root"], "--out", tmp_path / "m.png", "--title", "",
                           "--no-legend", "--max-side", max_side)
    assert code == 0 and out == (f"wrote {tmp_path / 'm.png'} (mosaic of 21 tiles, {target.shape[0]} x {target.shape[1]} px; "
                                 "where tiles overlap, later ids are drawn over earlier ones)\n")
    np.testing.assert_array_equal(_map_pixels(tmp_path / "m.png", scene[::k, ::k].shape), _colours(scene[::k, ::k]))


def test_render_mosaic_needs_georeferenced_test_tiles(synth, packed, tmp_path, capsys):
    import shutil

    test = tmp_path / "test"
    shutil.copytree(synth["test"], test)
    write_gdal(test / "msi" / "5.tiff", np.zeros((4, *packed["pred"]["5"].shape), np.uint16), epsg=None)
    code, _, err = run_cli(capsys, "render", packed["path"], "--like", test, "--out", tmp_path / "m.png")
    assert code == 1 and err == ("error: tile 5 carries no georeferencing (tie point and pixel size), so the tiles "
                                 "cannot be placed in a mosaic\n")
    code, _, err = run_cli(capsys, "render", synth["labels_path"].parent / "x.h5", "--out", tmp_path / "m.png")
    assert code == 1


@pytest.mark.parametrize("pixel", [5e-324, 1e-300])
def test_render_mosaic_refuses_georeferencing_it_cannot_place(synth, packed, tmp_path, capsys, pixel):
    """Pixels so small that the tiles lie beyond any scene (5e-324 m overflowed to an infinite offset)."""
    import dataclasses
    import shutil

    from c2seg_kit.io.geotiff import read_geotiff, write_geotiff

    test = tmp_path / "test"
    shutil.copytree(synth["test"], test)
    for path in (test / "msi").iterdir():
        raster = read_geotiff(path)
        write_geotiff(path, raster.data, dataclasses.replace(raster.georef, pixel_scale=(pixel, pixel, 0.0)))
    code, out, err = run_cli(capsys, "render", packed["path"], "--like", test, "--out", tmp_path / "m.png")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "more than the 1048576 a mosaic may span: its georeferencing (pixel size, tie point) cannot be placed" in err
    assert not (tmp_path / "m.png").exists()
