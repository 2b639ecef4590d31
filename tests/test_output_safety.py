"""Every verb that writes a file refuses an existing output unless --force, and never writes over
one of its own inputs, even with --force (one shared rule: c2seg_kit.outputs.claim_file)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cli_support import run_cli

from c2seg_kit.submission.writers import write_labels, write_submission

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    sub = write_submission(tmp_path / "copy.h5", rng.integers(1, 14, (24, 20)).astype(np.uint8), "AB")
    lab = write_labels(tmp_path / "labels.h5", rng.integers(0, 14, (24, 20)).astype(np.uint8), "AB")
    return sub, lab


def one_line(code: int, err: str, pattern: str) -> None:
    assert code == 1 and err.count("\n") == 1 and re.search(pattern, err), err


def test_render_onto_its_own_input_is_refused_even_with_force(files, capsys):
    sub, _ = files
    before = sub.read_bytes()
    for extra in ((), ("--force",)):
        code, out, err = run_cli(capsys, "render", sub, "--out", sub, *extra)
        one_line(code, err, r"copy\.h5 is an input of this command .* never written over, even with --force")
        assert sub.read_bytes() == before


def test_render_refuses_an_existing_png_unless_force(files, tmp_path, capsys):
    sub, _ = files
    png = tmp_path / "map.png"
    png.write_bytes(b"the user's picture")
    code, _, err = run_cli(capsys, "render", sub, "--out", png)
    one_line(code, err, r"map\.png already exists; it was left as it is \(choose another --out, or --force\)")
    assert png.read_bytes() == b"the user's picture"
    code, _, err = run_cli(capsys, "render", sub, "--out", png, "--force")
    assert code == 0, err
    assert png.read_bytes().startswith(b"\x89PNG")


def test_render_through_a_link_to_its_input_is_refused(files, tmp_path, capsys):
    sub, _ = files
    link = tmp_path / "link.png"
    link.symlink_to(sub)
    code, _, err = run_cli(capsys, "render", sub, "--out", link, "--force")
    one_line(code, err, r"link\.png is an input of this command")
    assert sub.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_score_report_keeps_existing_files_unless_force(files, tmp_path, capsys):
    sub, lab = files
    report = tmp_path / "report"
    report.mkdir()
    (report / "scores.json").write_text("mine")
    code, _, err = run_cli(capsys, "score", sub, "--labels", lab, "--report", report)
    one_line(code, err, r"scores\.json already exists")
    assert (report / "scores.json").read_text() == "mine"
    code, _, err = run_cli(capsys, "score", sub, "--labels", lab, "--report", report, "--force")
    assert code == 0, err
    assert (report / "scores.json").read_text().startswith("{")


def test_score_report_never_replaces_its_input(files, tmp_path, capsys):
    sub, lab = files
    # a labels file named like a report file, in the report folder: refused even with --force
    named = lab.rename(tmp_path / "per_class.csv")
    code, _, err = run_cli(capsys, "score", sub, "--labels", named, "--report", tmp_path, "--force")
    one_line(code, err, r"per_class\.csv is an input of this command")


def test_predict_refuses_an_existing_out_and_its_inputs_before_loading_anything(tmp_path, capsys):
    pytest.importorskip("c2seg_baseline")
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"not read: the output is checked first")
    prepared = tmp_path / "prep"
    prepared.mkdir()
    (prepared / "manifest.json").write_text("{}")
    mine = tmp_path / "predictions.h5"
    mine.write_bytes(b"an earlier submission")
    args = ("predict", "--checkpoint", checkpoint, "--prepared", prepared, "--track", "AB", "--out")
    code, _, err = run_cli(capsys, *args, mine)
    one_line(code, err, r"predictions\.h5 already exists; it was left as it is \(choose another --out, or --force\)")
    assert mine.read_bytes() == b"an earlier submission"
    code, _, err = run_cli(capsys, *args, checkpoint, "--force")
    one_line(code, err, r"last\.pt is an input of this command")
    code, _, err = run_cli(capsys, *args, prepared / "manifest.json", "--force")
    one_line(code, err, r"manifest\.json is an input of this command \(.*prep\)")
    assert checkpoint.read_bytes() == b"not read: the output is checked first"
    assert (prepared / "manifest.json").read_text() == "{}"


def test_pack_never_writes_into_its_own_images(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "preds"
    folder.mkdir()
    Image.fromarray(np.ones((8, 8), np.uint8)).save(folder / "1.png")
    before = (folder / "1.png").read_bytes()
    code, _, err = run_cli(capsys, "pack", folder, "--track", "AB", "--out", folder / "1.png", "--force", "--quiet")
    one_line(code, err, r"1\.png is an input of this command")
    assert (folder / "1.png").read_bytes() == before
