"""Files and folders the kit writes honour the umask, as other tools' do.

Each output is written under a temporary name first; ``tempfile`` would make that 0600/0700, so a
submission or a labels file would be unreadable to a server running as another user.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from c2seg_kit.outputs import current_umask


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_the_process_umask(umask):
    assert current_umask() == umask


def test_scene_files(tmp_path, umask):
    from c2seg_kit.submission.writers import submission_writer, write_labels, write_submission

    a = np.ones((40, 30), np.uint8)
    write_submission(tmp_path / "s.h5", a, "AB")
    write_labels(tmp_path / "l.h5", a, "AB")
    with submission_writer(tmp_path / "w.h5", a.shape, "AB") as w:
        w.write_rows(0, a)
    for name in ("s.h5", "l.h5", "w.h5"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name


def test_tile_files_geotiffs_and_folders(tmp_path, umask):
    from c2seg_kit.cli import main
    from c2seg_kit.io.geotiff import write_geotiff
    from c2seg_kit.submission.tile_writers import write_tile_labels

    write_tile_labels(tmp_path / "t.h5", [("0", np.ones((8, 8), np.uint8))], "AB")
    write_geotiff(tmp_path / "g.tiff", np.zeros((2, 8, 8), np.float32))
    assert mode(tmp_path / "t.h5") == 0o666 & ~umask
    assert mode(tmp_path / "g.tiff") == 0o666 & ~umask
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "synth"), "--track", "AB", "--layout", "tiles", "--scale", "0.03", "--quiet"])
    assert exc.value.code == 0
    root = tmp_path / "synth" / "C2Seg_AB"
    assert mode(root) == 0o777 & ~umask
    assert mode(tmp_path / "synth" / "labels.h5") == 0o666 & ~umask
    assert {mode(p) for p in root.rglob("*.tiff")} == {0o666 & ~umask}
    from c2seg_kit.io.tiles import open_tiles
    from c2seg_kit.registry import get_track
    from c2seg_kit.submission.tile_writers import write_tile_submission

    with open_tiles(root, get_track("AB")) as tiles:
        test = tiles.splits["test"]
        pred = [(i, np.ones(test.tile_shape(i), np.uint8)) for i in test.ids]
    write_tile_submission(tmp_path / "p.h5", pred, "AB")
    with pytest.raises(SystemExit) as exc:
        main(["unpack", str(tmp_path / "p.h5"), "--like", str(root / "test"), "--out", str(tmp_path / "unpacked")])
    assert exc.value.code == 0
    assert mode(tmp_path / "unpacked") == 0o777 & ~umask
    assert {mode(p) for p in (tmp_path / "unpacked").iterdir()} == {0o666 & ~umask}
