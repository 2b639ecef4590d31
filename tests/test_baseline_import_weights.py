"""`c2seg import-weights`: the authors' three state_dict files become a kit checkpoint
that records its track and input layout, predicts exactly as their files do, and is checked by
`predict` like any checkpoint the kit trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import assert_one_line_error, make_prepared, run_cli

from c2seg_baseline.config import paper
from c2seg_baseline.import_weights import AUTHORS_PREPARE
from c2seg_baseline.importer import AUTHORS_FILES, to_authors_state_dicts
from c2seg_baseline.model import HighDAN
from c2seg_baseline.predict import predict_to_file
from c2seg_kit.submission.readers import open_submission


def with_options(root, options: dict):
    """A prepared cache whose manifest records these prepare options."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["options"] = options
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    """A random HighDAN at paper settings saved as the authors' three files."""
    folder = tmp_path_factory.mktemp("authors")
    torch.manual_seed(0)
    for part, state in to_authors_state_dicts(HighDAN(paper())).items():
        torch.save(state, folder / AUTHORS_FILES[part])
    return folder


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return with_options(make_prepared(tmp_path_factory.mktemp("prep") / "AB"), dict(AUTHORS_PREPARE))


def test_imported_checkpoint_predicts_as_the_authors_files_and_records_its_input(authors, prep, tmp_path):
    ckpt = tmp_path / "authors-ab.pt"
    r = run_cli(["import-weights", str(authors), "--prepared", str(prep), "--track", "AB", "--out", str(ckpt)])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # prepared as the authors did: no warning
    assert f"wrote {ckpt}" in r.stdout and "track AB" in r.stdout

    state = torch.load(ckpt, weights_only=True)
    assert state["run"]["track"] == "AB"
    assert state["run"]["input"]["prepare"] == AUTHORS_PREPARE
    assert state["config"]["predict"]["stitch"] == "authors"

    maps = {}
    for name, checkpoint in (("imported", ckpt), ("files", authors / "best_model.pth")):
        out = tmp_path / f"{name}.h5"
        result = predict_to_file(checkpoint, prep, "AB", out, stitch="authors" if name == "files" else None,
                                 device="cpu", progress=False)
        assert result["tiling"]["stitch"] == "authors"
        with open_submission(out, track="AB") as sub:
            maps[name] = sub.read()
    assert len(np.unique(maps["files"])) >= 2
    np.testing.assert_array_equal(maps["imported"], maps["files"])


def test_predict_refuses_the_imported_checkpoint_on_other_input(authors, prep, tmp_path):
    ckpt = tmp_path / "authors-ab.pt"
    assert run_cli(["import-weights", str(authors), "--data", str(prep), "--track", "AB",
                    "--out", str(ckpt)]).returncode == 0
    other = with_options(make_prepared(tmp_path / "other"), {**AUTHORS_PREPARE, "pca_fit": "source"})
    out = tmp_path / "p.h5"
    r = run_cli(["predict", "--checkpoint", str(ckpt), "--prepared", str(other), "--track", "AB", "--out", str(out),
                 "--device", "cpu", "--no-progress"])
    assert_one_line_error(r, f"checkpoint {ckpt} was trained on input prepared with pca_fit city; "
                             f"{other} was prepared with pca_fit source")
    assert not out.exists()


def test_a_cache_prepared_otherwise_is_imported_with_a_warning(authors, tmp_path):
    prep = with_options(make_prepared(tmp_path / "AB"), {**AUTHORS_PREPARE, "normalisation": "percentile"})
    r = run_cli(["import-weights", str(authors), "--prepared", str(prep), "--track", "AB",
                 "--out", str(tmp_path / "c.pt")])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (f"warning: {prep} was prepared with normalisation percentile (the authors': minmax): "
                                "the authors' weights expect their preprocessing")


def test_a_cache_fitted_by_the_exact_solver_is_imported_with_a_warning(authors, tmp_path):
    """The authors' channels come from their randomized PCA: the warning says how to get them."""
    prep = with_options(make_prepared(tmp_path / "AB"), {**AUTHORS_PREPARE, "pca_solver": "exact"})
    r = run_cli(["import-weights", str(authors), "--prepared", str(prep), "--track", "AB",
                 "--out", str(tmp_path / "c.pt")])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (f"warning: {prep} was prepared with pca_solver exact (the authors': authors; "
                                "`c2seg prepare --pca-solver authors` computes their components): the authors' "
                                "weights expect their preprocessing")
    legacy = with_options(make_prepared(tmp_path / "old"), {"pca_components": 10, "pca_fit": "city",
                                                           "normalisation": "minmax"})
    r = run_cli(["import-weights", str(authors), "--prepared", str(legacy), "--track", "AB",
                 "--out", str(tmp_path / "d.pt")])
    assert r.returncode == 0 and "was prepared with pca_solver exact" in r.stderr  # no solver recorded: exact


def test_import_errors_are_one_line_and_touch_nothing(authors, prep, tmp_path):
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"a user's file")
    r = run_cli(["import-weights", str(authors), "--prepared", str(prep), "--track", "AB", "--out", str(mine)])
    assert_one_line_error(r, f"{mine} already exists")
    assert mine.read_bytes() == b"a user's file"

    partial = tmp_path / "partial"
    partial.mkdir()
    for part in ("generator", "d0"):
        (partial / AUTHORS_FILES[part]).write_bytes((authors / AUTHORS_FILES[part]).read_bytes())
    out = tmp_path / "never.pt"
    r = run_cli(["import-weights", str(partial), "--prepared", str(prep), "--track", "AB", "--out", str(out)])
    assert_one_line_error(r, "missing best_DA_2.pth")
    assert not out.exists()

    bw = make_prepared(tmp_path / "BW", track="BW")
    r = run_cli(["import-weights", str(authors), "--prepared", str(bw), "--track", "AB", "--out", str(out)])
    assert_one_line_error(r, "is prepared for track BW, not AB")
    assert not out.exists()


@pytest.mark.parametrize("given", ["absent/", "absent_model.pth", "weights.pth"])
def test_authors_files_that_cannot_be_found_say_so_in_one_line(tmp_path, given):
    """A missing folder or file is named once, with what AUTHORS_FILES should be; a generator file
    whose name does not lead to its discriminators is not read three times over."""
    if given == "weights.pth":
        (tmp_path / given).write_bytes(b"x")
    source = tmp_path / given
    r = run_cli(["import-weights", str(source), "--prepared", str(tmp_path), "--track", "AB",
                 "--out", str(tmp_path / "out.pt")])
    assert_one_line_error(r, "AUTHORS_FILES is the folder holding best_model.pth")
    assert r.stderr.count(str(source)) == 1 and "missing" not in r.stderr
    assert not (tmp_path / "out.pt").exists()
