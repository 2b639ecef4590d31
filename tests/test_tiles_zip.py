"""The tile zips as distributed, and hostile ones: every member is checked before anything is read."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
from cli_support import run_cli
from tile_support import HOSTILE, TIFF, evil_zip, make_tiles, zip_folder

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.io import checksums
from c2seg_kit.io.safezip import ZipLimits, ZipStore
from c2seg_kit.io.tiles import open_tiles
from c2seg_kit.registry import TRACKS

AB, BW = TRACKS["AB"], TRACKS["BW"]


@pytest.fixture()
def ab_zip(tmp_path):
    """C2Seg_AB.zip made like `zip -r C2Seg_AB.zip C2Seg_AB`, and what its tiles hold."""
    written = make_tiles(tmp_path / "src" / "C2Seg_AB")
    (tmp_path / "dist").mkdir()
    return zip_folder(tmp_path / "src" / "C2Seg_AB", tmp_path / "dist" / "C2Seg_AB.zip"), written


def test_zip_as_distributed_reads_like_the_folder(ab_zip):
    path, written = ab_zip
    with open_tiles(path, AB) as tiles:
        train = tiles.splits["train"]
        assert train.ids == ["1", "2", "3"] and train.has_label
        for (split, tid), ref in written.items():
            arrays, label = tiles.splits[split].read_tile(tid)
            for m in ("hsi", "msi", "sar"):
                np.testing.assert_array_equal(arrays[m], ref[m])
            if split == "train":
                np.testing.assert_array_equal(label, ref["label"])
        assert train.georef("1").epsg == 32632
        assert train.describe("msi", "1") == f"{path}:C2Seg_AB/train/msi/1.tiff"


def test_info_on_zip_reports_md5_mismatch_as_warning(capsys, ab_zip):
    path, written = ab_zip
    code, out, err = run_cli(capsys, "info", str(path), "--track", "AB", "--json", "--quiet")
    assert code == 0, err
    info = json.loads(out)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert info["archive"] == {"path": str(path), "name": "C2Seg_AB.zip", "md5": md5,
                               "expected_md5": "1a7eddf6b90b875ba1ab4cc173818296", "match": False}
    assert err.startswith("warning: C2Seg_AB.zip has MD5") and len(err.strip().splitlines()) == 1
    assert info["train"]["tiles"] == 3 and info["test"]["tiles"] == 2
    assert info["train"]["tile_sizes"] == {"16x16": 2, "8x12": 1}
    labels = np.concatenate([written[("train", t)]["label"].ravel() for t in ("1", "2", "3")])
    assert info["train"]["label_histogram"] == np.bincount(labels, minlength=14).tolist()


def test_info_table_says_an_md5_mismatch_once(capsys, ab_zip):
    """The table and the warning together name the mismatch once: the warning on stderr says it."""
    path, _ = ab_zip
    code, out, err = run_cli(capsys, "info", str(path), "--track", "AB", "--quiet")
    assert code == 0, err
    expected = "1a7eddf6b90b875ba1ab4cc173818296"
    assert (out + err).count(expected) == 1 and expected in err
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert out.splitlines()[0] == f"archive {path}: MD5 {md5}"


def test_info_on_zip_with_matching_md5(capsys, ab_zip, monkeypatch):
    path, _ = ab_zip
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(checksums.DISTRIBUTED_MD5, "C2Seg_AB.zip", md5)
    code, out, err = run_cli(capsys, "info", str(path), "--track", "AB", "--quiet")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"archive {path}: MD5 {md5} matches"


def test_renamed_zip_is_not_checked(tmp_path, ab_zip, capsys):
    path, _ = ab_zip
    other = path.rename(tmp_path / "my_copy.zip")
    code, out, err = run_cli(capsys, "info", str(other), "--track", "AB", "--json", "--quiet")
    assert code == 0 and json.loads(out)["archive"] == {"path": str(other)} and err == ""


def set_encrypted_flag(path):
    """Mark every member encrypted (zipfile will not write the flag itself): general-purpose bit 0
    in the local headers (offset 6) and the central directory (offset 8)."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset] |= 0x1
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_zip_is_refused_before_anything_is_read(tmp_path, capsys, kind):
    entries, message = HOSTILE[kind]
    path = evil_zip(tmp_path / "C2Seg_AB.zip", entries)
    if kind == "encrypted":
        set_encrypted_flag(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidDataError, match=message):
        ZipStore(path, workdir=tmp_path)
    code, out, err = run_cli(capsys, "info", str(path), "--track", "AB", "--quiet")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing extracted
    assert not (tmp_path.parent / "evil.tiff").exists()


def test_member_size_cap(tmp_path):
    path = evil_zip(tmp_path / "a.zip", [("C2Seg_AB/train/msi/1.tiff", bytes(5000))])
    with pytest.raises(InvalidDataError, match=r"declares 5000 bytes \(cap 4096\)"):
        ZipStore(path, ZipLimits(max_member_bytes=4096))
    with pytest.raises(InvalidDataError, match=r"2 members \(cap 1\)"):
        ZipStore(evil_zip(tmp_path / "b.zip", [("x", b""), ("y", b"")]), ZipLimits(max_members=1))


def test_not_a_zip(tmp_path, capsys):
    path = tmp_path / "C2Seg_AB.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    code, _, err = run_cli(capsys, "info", str(path), "--track", "AB")
    assert code == 1 and "neither a data folder nor a zip archive" in err


def make_bw_with_inner_zip(tmp_path, arcroot):
    """C2Seg_BW.zip whose train/hsi folder ships as an inner zip `train/hsi.zip` holding
    `<arcroot>/<id>.tiff` (an archive tool that extracts it into a folder named after it gives the
    nested train/hsi/hsi/ layout seen in the winners' file lists)."""
    src = tmp_path / "src" / "C2Seg_BW"
    written = make_tiles(src)
    inner = zip_folder(src / "train" / "hsi", tmp_path / "hsi.zip", arcroot=arcroot)
    outer = tmp_path / "C2Seg_BW.zip"
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*.tiff")):
            rel = p.relative_to(src.parent).as_posix()
            if not rel.startswith("C2Seg_BW/train/hsi/"):
                zf.write(p, rel)
        zf.write(inner, "C2Seg_BW/train/hsi.zip")
    return outer, written


@pytest.mark.parametrize("arcroot,folder", [("hsi", "C2Seg_BW/train/hsi"), ("", "C2Seg_BW/train/hsi"),
                                            ("hsi/hsi", "C2Seg_BW/train/hsi/hsi")])
def test_inner_zip_is_read_and_its_copy_removed(tmp_path, arcroot, folder):
    """The inner zip `train/hsi.zip` appears as the folder train/hsi/ (its own leading hsi/ dropped)."""
    outer, written = make_bw_with_inner_zip(tmp_path, arcroot)
    work = tmp_path / "work"
    work.mkdir()
    with open_tiles(outer, BW, workdir=work) as tiles:
        train = tiles.splits["train"]
        assert train.folders["hsi"] == folder
        copies = list(work.iterdir())
        assert len(copies) == 1 and copies[0].name.startswith("c2seg-inner-zips-")
        assert [p.suffix for p in copies[0].iterdir()] == [".zip"]  # only the inner zip, nothing unpacked
        for tid in train.ids:
            arrays, label = train.read_tile(tid)
            np.testing.assert_array_equal(arrays["hsi"], written[("train", tid)]["hsi"])
            np.testing.assert_array_equal(label, written[("train", tid)]["label"])
    assert list(work.iterdir()) == []


def test_hostile_inner_zip_is_refused_and_cleaned(tmp_path):
    inner = evil_zip(tmp_path / "inner.zip", [("../../evil.tiff", TIFF)])
    outer = evil_zip(tmp_path / "C2Seg_BW.zip", [("C2Seg_BW/train/hsi.zip", inner.read_bytes())])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InvalidDataError, match=r"C2Seg_BW.zip:C2Seg_BW/train/hsi.zip: member '../../evil.tiff' escapes"):
        open_tiles(outer, BW, workdir=work)
    assert list(work.iterdir()) == []


def test_zip_nested_too_deep(tmp_path):
    deepest = evil_zip(tmp_path / "c.zip", [("x.tiff", TIFF)])
    middle = evil_zip(tmp_path / "b.zip", [("c.zip", deepest.read_bytes())])
    outer = evil_zip(tmp_path / "a.zip", [("C2Seg_BW/train/b.zip", middle.read_bytes())])
    with pytest.raises(InvalidDataError, match="nested 2 levels deep"):
        ZipStore(outer, workdir=tmp_path)


def make_unzipped_bw(tmp_path, method=zipfile.ZIP_DEFLATED):
    """C2Seg_BW/ as a plain `unzip C2Seg_BW.zip` leaves it: the train split's modalities still
    as inner zips train/<m>.zip (each holding <m>/<id>.tiff), the test split as folders."""
    src = tmp_path / "src" / "C2Seg_BW"
    written = make_tiles(src)
    out = tmp_path / "data" / "C2Seg_BW"
    (out / "train").mkdir(parents=True)
    for m in ("hsi", "msi", "sar", "label"):
        zip_folder(src / "train" / m, out / "train" / f"{m}.zip", method=method)
    import shutil

    shutil.copytree(src / "test", out / "test")
    return out, written


def test_an_unzipped_archive_reads_its_inner_zips_in_place(tmp_path, capsys, monkeypatch):
    root, written = make_unzipped_bw(tmp_path)

    def no_copies(*a, **k):
        raise AssertionError("an inner zip on disk is read in place, never copied")

    monkeypatch.setattr("tempfile.mkdtemp", no_copies)
    for given in (root, root.parent):
        with open_tiles(given, BW) as tiles:
            train = tiles.splits["train"]
            assert train.ids == ["1", "2", "3"] and train.has_label
            assert train.describe("msi", "2") == f"{root}/train/msi.zip:2.tiff"
            for tid in train.ids:
                arrays, label = train.read_tile(tid)
                np.testing.assert_array_equal(arrays["hsi"], written[("train", tid)]["hsi"])
                np.testing.assert_array_equal(label, written[("train", tid)]["label"])
    code, out, err = run_cli(capsys, "info", root.parent, "--track", "BW", "--quiet")
    assert code == 0 and "train: Beijing (source, tiles): 3 tiles" in out, err


def test_a_hostile_inner_zip_in_a_folder_is_refused(tmp_path, capsys):
    root, _ = make_unzipped_bw(tmp_path)
    evil_zip(root / "train" / "msi.zip", [("../../evil.tiff", TIFF)])
    code, _, err = run_cli(capsys, "info", root, "--track", "BW", "--quiet")
    assert code == 1 and "msi.zip: member '../../evil.tiff' escapes" in err and err.count("\n") == 1


def test_a_stored_inner_zip_is_read_without_a_copy(tmp_path):
    src = tmp_path / "src" / "C2Seg_BW"
    written = make_tiles(src)
    inner = zip_folder(src / "train" / "hsi", tmp_path / "hsi.zip")
    outer = tmp_path / "C2Seg_BW.zip"
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*.tiff")):
            rel = p.relative_to(src.parent).as_posix()
            if not rel.startswith("C2Seg_BW/train/hsi/"):
                zf.write(p, rel)
        zf.write(inner, "C2Seg_BW/train/hsi.zip", compress_type=zipfile.ZIP_STORED)
    work = tmp_path / "work"
    work.mkdir()
    with open_tiles(outer, BW, workdir=work) as tiles:
        train = tiles.splits["train"]
        assert list(work.iterdir()) == []
        for tid in train.ids:
            np.testing.assert_array_equal(train.read_tile(tid)[0]["hsi"], written[("train", tid)]["hsi"])


def test_stores_of_one_process_share_one_copy_of_a_compressed_inner_zip(tmp_path):
    outer, _ = make_bw_with_inner_zip(tmp_path, "hsi")
    work = tmp_path / "work"
    work.mkdir()
    first = open_tiles(outer, BW, workdir=work)
    second = open_tiles(outer, BW, workdir=work)
    assert len(list(work.iterdir())) == 1  # decompressed once
    first.close()
    assert second.splits["train"].read_tile("1")[0]["hsi"].shape[0] == 6  # still there for the other
    second.close()
    assert list(work.iterdir()) == []


def test_free_space_is_checked_for_all_compressed_inner_zips_together(tmp_path, monkeypatch):
    """Two inner zips that each fit the free space but not together: refused before either is copied."""
    src = tmp_path / "src" / "C2Seg_BW"
    make_tiles(src)
    hsi = zip_folder(src / "train" / "hsi", tmp_path / "hsi.zip")
    sar = zip_folder(src / "train" / "sar", tmp_path / "sar.zip")
    outer = tmp_path / "C2Seg_BW.zip"
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*.tiff")):
            rel = p.relative_to(src.parent).as_posix()
            if not rel.startswith(("C2Seg_BW/train/hsi/", "C2Seg_BW/train/sar/")):
                zf.write(p, rel)
        zf.write(hsi, "C2Seg_BW/train/hsi.zip")
        zf.write(sar, "C2Seg_BW/train/sar.zip")
    total = hsi.stat().st_size + sar.stat().st_size
    free = max(hsi.stat().st_size, sar.stat().st_size) + 1
    import shutil

    from c2seg_kit.io import safezip

    monkeypatch.setattr(safezip.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(free, 0, free))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InvalidDataError, match=f"2 compressed inner zip\\(s\\) needs {total} bytes"):
        open_tiles(outer, BW, workdir=work)
    assert list(work.iterdir()) == []
