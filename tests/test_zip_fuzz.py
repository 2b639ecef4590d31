"""Damaged tile archives: every defect is one line (InvalidDataError / the CLI's `error:` and exit 1),
never a traceback. Named defects (a corrupted byte, an unreadable compression method, an empty
member name) through the verbs, and a seeded fuzz of a few hundred mutated archives (outer and
inner zips) through the reader."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from cli_support import run_cli
from tile_support import make_tiles, zip_folder

from c2seg_kit.errors import C2SegError
from c2seg_kit.io.tiles import open_tiles
from c2seg_kit.registry import TRACKS

AB, BW = TRACKS["AB"], TRACKS["BW"]
SIZES = {"train": [(8, 8), (8, 8)], "test": [(8, 8)]}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """C2Seg_AB.zip (deflate) and C2Seg_BW.zip whose train/hsi ships as an inner zip (deflated)
    and train/sar as an inner zip stored without compression."""
    root = tmp_path_factory.mktemp("fuzz")
    make_tiles(root / "src" / "C2Seg_AB", sizes=SIZES)
    ab = zip_folder(root / "src" / "C2Seg_AB", root / "C2Seg_AB.zip")
    src = root / "src" / "C2Seg_BW"
    make_tiles(src, sizes=SIZES, seed=1)
    hsi = zip_folder(src / "train" / "hsi", root / "hsi.zip")
    sar = zip_folder(src / "train" / "sar", root / "sar.zip", method=zipfile.ZIP_STORED)
    bw = root / "C2Seg_BW.zip"
    with zipfile.ZipFile(bw, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*.tiff")):
            rel = p.relative_to(src.parent).as_posix()
            if not rel.startswith(("C2Seg_BW/train/hsi/", "C2Seg_BW/train/sar/")):
                zf.write(p, rel)
        zf.write(hsi, "C2Seg_BW/train/hsi.zip")
        zf.write(sar, "C2Seg_BW/train/sar.zip", compress_type=zipfile.ZIP_STORED)
    return {"AB": ab.read_bytes(), "BW": bw.read_bytes()}


def read_everything(path, track) -> None:
    with open_tiles(path, track) as tiles:
        for split in tiles.splits.values():
            for tile_id in split.ids:
                split.read_tile(tile_id)


def header_spans(data: bytes) -> list[tuple[int, int]]:
    """Where the headers are (local headers and the central directory, outer and stored inner):
    the mutations aim there half the time, where a random byte does the most harm."""
    spans = []
    start = 0
    while (i := data.find(b"PK", start)) >= 0:
        spans.append((i, min(len(data), i + 46)))
        start = i + 2
    return spans


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 3:  # truncate
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    spans = header_spans(data)
    for _ in range(int(rng.integers(1, 4))):
        if spans and rng.random() < 0.5:
            a, b = spans[int(rng.integers(0, len(spans)))]
            pos = int(rng.integers(a, b))
        else:
            pos = int(rng.integers(0, len(buf)))
        if kind == 0:
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            buf[pos] = int(rng.integers(0, 256))
        else:
            buf[pos] = 0
    return bytes(buf)


@pytest.mark.parametrize("track", ["AB", "BW"])
def test_fuzzed_archives_raise_only_the_kits_error(archives, tmp_path, track):
    rng = np.random.default_rng(20 if track == "AB" else 21)
    path = tmp_path / f"C2Seg_{track}.zip"
    outcomes = {"read": 0, "refused": 0}
    unexpected = []
    for i in range(200):
        path.write_bytes(mutate(archives[track], rng))
        try:
            read_everything(path, TRACKS[track])
            outcomes["read"] += 1
        except C2SegError as e:
            assert "\n" not in str(e), str(e)
            outcomes["refused"] += 1
        except Exception as e:  # anything else would be a traceback at the command line
            unexpected.append(f"mutation {i}: {type(e).__name__}: {e}")
    assert not unexpected, "\n".join(unexpected[:10])
    assert outcomes["refused"] > 50  # the mutations do damage (a fuzz that breaks nothing tests nothing)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no copy of an inner zip left behind


def rewrite_central(data: bytes, field: str, value) -> bytes:
    """The archive with one central-directory field of its first member changed."""
    buf = bytearray(data)
    i = buf.find(b"PK\x01\x02")
    if field == "method":
        struct.pack_into("<H", buf, i + 10, value)
        j = 0  # and in the local header, so the member reads as that method
        struct.pack_into("<H", buf, j + 8, value)
    elif field == "name":  # a name of as many NUL-free bytes, but empty: length 0, the rest shifted
        n = struct.unpack_from("<H", buf, i + 28)[0]
        struct.pack_into("<H", buf, i + 28, 0)
        del buf[i + 46: i + 46 + n]
        end = buf.find(b"PK\x05\x06")
        size = struct.unpack_from("<I", buf, end + 12)[0]
        struct.pack_into("<I", buf, end + 12, size - n)
    return bytes(buf)


def corrupt_first_member(data: bytes) -> bytes:
    buf = bytearray(data)
    n, m = struct.unpack_from("<HH", buf, 26)
    buf[30 + n + m + 5] ^= 0xFF
    return bytes(buf)


DEFECTS = {
    "a corrupted byte": (corrupt_first_member, ("cannot read", "Error -3", "CRC")),
    "an unsupported method": (lambda d: rewrite_central(d, "method", 9), ("Deflate64",)),
    "an empty member name": (lambda d: rewrite_central(d, "name", None), ("empty name", "not a readable zip")),
}


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("verb", ["info", "prepare", "pack"])
def test_named_defects_are_one_line_through_every_verb(archives, tmp_path, capsys, defect, verb):
    make, words = DEFECTS[defect]
    path = tmp_path / "C2Seg_AB.zip"
    path.write_bytes(make(archives["AB"]))
    if verb == "info":
        args = ["info", path, "--track", "AB", "--quiet"]
    elif verb == "prepare":
        args = ["prepare", path, "--track", "AB", "--out", tmp_path / "prep", "--pca-components", "3", "--quiet"]
    else:
        from PIL import Image

        (tmp_path / "p").mkdir()
        Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "p" / "1.png")
        args = ["pack", tmp_path / "p", "--track", "AB", "--like", path, "--out", tmp_path / "o.h5", "--quiet"]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert any(w in err for w in words), err


def test_the_dataset_raises_the_kits_error_on_a_damaged_member(archives, tmp_path):
    pytest.importorskip("torch")
    from c2seg_baseline.datasets import C2SegTiles

    path = tmp_path / "C2Seg_AB.zip"
    data = bytearray(archives["AB"])
    names = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()
    last_train = [i for i in names if i.filename.startswith("C2Seg_AB/train/msi/")][-1]
    n, m = struct.unpack_from("<HH", data, last_train.header_offset + 26)
    data[last_train.header_offset + 30 + n + m + 7] ^= 0xFF  # a byte of one training tile's MSI
    path.write_bytes(bytes(data))
    ds = C2SegTiles(path, track="AB", split="train")  # opening reads headers only: fine
    with pytest.raises(C2SegError, match="C2Seg_AB/train/msi/"):
        for i in range(len(ds)):
            ds[i]
    ds.close()
