"""`c2seg export --format mmseg`: the prepared cache as an mmsegmentation dataset, and the way back.

The round trip: export a tile cache, fake mmseg's predictions of the test split with the values a
model trained with reduce_zero_label=True writes (0-based, 0..12, one PNG per test image, named
by the image), pack them with --add-one, validate and score them against the hidden labels:
every labelled pixel is right.
"""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import tifffile
from cli_support import run_cli
from PIL import Image

from c2seg_kit.classes import EVAL_CLASSES
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.registry import MODALITIES
from c2seg_kit.submission.readers import open_labels


@pytest.fixture(scope="module")
def tiles_ab(tmp_path_factory):
    """A small AB tile distribution, its hidden labels and its prepared tile cache."""
    from c2seg_kit.prepare.pipeline import prepare
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth.tile_sets import synthesize_tiles

    root = tmp_path_factory.mktemp("tiles_ab")
    synthesize_tiles(root / "data", TRACKS["AB"], scale=0.1, seed=1, progress=False)
    prepare(root / "data", TRACKS["AB"], root / "prepared", progress=False)
    return root


def exported(capsys, root, name, *more):
    out = root / name
    code, stdout, err = run_cli(capsys, "export", "--format", "mmseg", root / "prepared", "--out", out,
                                "--no-progress", *more)
    assert code == 0, err
    return out, stdout


def test_export_writes_an_mmseg_dataset_with_the_kit_preprocessing(tiles_ab, capsys):
    out, stdout = exported(capsys, tiles_ab, "mmseg")
    # The printed snippet is Python an mmseg config can paste: it parses, and names the classes and colours.
    namespace: dict = {}
    exec(compile(ast.parse(stdout), "snippet", "exec"), namespace)  # noqa: S102 (the kit's own text)
    assert namespace["metainfo"]["classes"] == tuple(c.name for c in EVAL_CLASSES)
    assert namespace["metainfo"]["palette"][0] == [0, 255, 255] and len(namespace["metainfo"]["palette"]) == 13
    train = namespace["train_dataset"]
    assert train["reduce_zero_label"] is True and train["img_suffix"] == ".tif" and train["seg_map_suffix"] == ".png"
    assert namespace["data_root"] == str(out.resolve()) and (out / "mmseg_dataset.py").read_text() in stdout
    splits = {s: (out / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    with PreparedData(tiles_ab / "prepared") as data:
        assert sorted(splits["train"] + splits["val"]) == sorted(data.source.ids) and splits["val"]
        assert not set(splits["train"]) & set(splits["val"])
        assert splits["test"] == data.target.ids and not (out / "ann_dir" / "test").exists()
        bands = (out / "bands.txt").read_text().split()
        assert len(bands) == sum(data.source.channels.values()) and bands[0] == "hsi_pc1" and bands[-1] == "sar_2"
        tile_id = splits["val"][0]
        tile = data.source.tile(tile_id)
        h, w = tile.shape
        image = tifffile.imread(out / "img_dir" / "val" / f"{tile_id}.tif")  # what mmcv's tifffile backend reads
        assert image.dtype == np.float32 and image.shape == (h, w, len(bands))  # H x W x C, as mmseg expects
        expected = np.concatenate([tile.read(m, 0, h, 0, w) for m in MODALITIES], axis=0).transpose(1, 2, 0)
        np.testing.assert_array_equal(image, expected)
        assert image.min() >= 0.0 and image.max() <= 1.0
        ann = np.asarray(Image.open(out / "ann_dir" / "val" / f"{tile_id}.png"))
        assert ann.dtype == np.uint8 and ann.ndim == 2
        np.testing.assert_array_equal(ann, tile.read_label(0, h, 0, w))  # 0 = unlabelled, as reduce_zero_label wants
    # The same seed holds out the same images; another seed others.
    again, _ = exported(capsys, tiles_ab, "mmseg_again")
    assert (again / "splits" / "val.txt").read_text() == (out / "splits" / "val.txt").read_text()


def test_mmseg_predictions_go_back_through_pack_into_a_perfect_submission(tiles_ab, capsys, tmp_path):
    out, _ = exported(capsys, tiles_ab, "mmseg_round_trip")
    preds = tmp_path / "mmseg_preds"
    preds.mkdir()
    labels = tiles_ab / "data" / "labels.h5"
    with open_labels(labels) as hidden:
        truth = dict(hidden.iter_tiles())
    test_ids = (out / "splits" / "test.txt").read_text().split()
    assert sorted(test_ids) == sorted(truth)
    for tile_id in test_ids:
        image = tifffile.imread(out / "img_dir" / "test" / f"{tile_id}.tif")
        label = truth[tile_id]
        assert image.shape[:2] == label.shape
        # mmseg with reduce_zero_label: classes 1..13 come out 0..12; unlabelled pixels get some class too.
        mmseg_pred = np.where(label > 0, label.astype(np.int16) - 1, 4).astype(np.uint8)
        Image.fromarray(mmseg_pred, mode="L").save(preds / f"{tile_id}.png")
    sub = tmp_path / "predictions.h5"
    code, _, err = run_cli(capsys, "pack", preds, "--track", "AB", "--out", sub, "--like", tiles_ab / "data",
                           "--no-progress")
    assert code == 1 and "--add-one" in err and not sub.exists()  # 0-based ids are refused, pointing at the fix
    code, _, err = run_cli(capsys, "pack", preds, "--track", "AB", "--out", sub, "--like", tiles_ab / "data",
                           "--add-one", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "validate", sub, "--track", "AB", "--labels", labels)
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "score", sub, "--labels", labels, "--json")
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["miou"] == pytest.approx(1.0) and scores["oa"] == pytest.approx(1.0)


def test_export_refuses_a_folder_that_is_not_empty_and_leaves_it_alone(tiles_ab, capsys, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, stdout, err = run_cli(capsys, "export", "--format", "mmseg", tiles_ab / "prepared", "--out", out)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code, _, err = run_cli(capsys, "export", "--format", "mmseg", tmp_path / "nothing", "--out", tmp_path / "new")
    assert code == 1 and "c2seg prepare" in err and not (tmp_path / "new").exists()


def test_export_of_a_scene_cache_cuts_fixed_windows(prepared_ab, capsys, tmp_path):
    out = tmp_path / "scene"
    code, stdout, err = run_cli(capsys, "export", "--format", "mmseg", prepared_ab, "--out", out, "--no-progress")
    assert code == 0, err
    with PreparedData(prepared_ab) as data:
        side = min(data.track.tile_side, *data.source.shape)
        names = sorted((out / "splits" / "train.txt").read_text().split() + (out / "splits" / "val.txt").read_text().split())
        assert all(n.startswith(f"{data.source.name}_r") for n in names)
        name = names[-1]
        r, c = (int(part[1:]) for part in name.split("_")[-2:])
        image = tifffile.imread(next((out / "img_dir").glob(f"*/{name}.tif")))
        assert image.shape[:2] == (side, side)
        np.testing.assert_array_equal(image[..., -2:].transpose(2, 0, 1), data.source.read("sar", r, r + side, c, c + side))
        test = (out / "splits" / "test.txt").read_text().split()
        assert test and all(n.startswith(f"{data.target.name}_r") for n in test)


def test_a_tile_id_that_is_no_plain_file_name_is_refused(tiles_ab, capsys, tmp_path):
    import shutil

    import h5py

    hostile = tmp_path / "prepared"
    shutil.copytree(tiles_ab / "prepared", hostile)
    with PreparedData(hostile) as data:
        city = data.source.path
    with h5py.File(city, "r+") as f:
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f["tile_ids"][()]]
        f["tiles"].create_group("up")
        f["tiles"].move(ids[0], "up/x")  # reads as a tile, but "up/x" would be a path, not a file name
        ids[0] = "up/x"
        del f["tile_ids"]
        f["tile_ids"] = np.array(ids, dtype=h5py.string_dtype())
    code, _, err = run_cli(capsys, "export", "--format", "mmseg", hostile, "--out", tmp_path / "out", "--no-progress")
    assert code == 1 and "not a usable name" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
