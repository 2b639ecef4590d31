"""The hostile-file catalogue: submissions built to attack a scoring server, as data.

One `Hostile` row per kind: how to build the file (aimed at a `live_server.Target`, the
server's own hidden labels), the status and the one-line reason the server must answer with.

- `LINKS` (SECURITY.md, section 2.1): files that reach outside themselves, at the labels file's path and
  data offset; `leaks=True` where a naive reader (`naive_read`, `leaks_labels`) really gets
  the hidden labels through them.
- `BAD_FILES` (SECURITY.md, section 3.1): files that are broken, lie about their size, hide dimensions or
  carry the wrong type, values, attributes or layout.
- `TILE_FILES`: tile-layout submissions (one dataset per test tile in group `prediction`) aimed
  at a `TileTarget` (tile-layout hidden labels): too many members, links among the members,
  names that are not plain tile ids, tiles of another shape, missing or extra ids, a scene file
  where tiles are scored.

Used by tests/test_security_labels.py, tests/test_security_files.py and bench/hostile.py.
Builders with logic are named functions; the one-line ones sit in the tables as lambdas.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from live_server import Target, noisy_prediction

from c2seg_kit.submission.tile_writers import write_tile_labels, write_tile_submission
from c2seg_kit.submission.writers import write_submission


def _base(path: Path, track: str = "AB", fmt: str = "submission/1") -> h5py.File:
    f = h5py.File(path, "w")
    if fmt is not None:
        f.attrs["c2seg_format"] = fmt
    if track is not None:
        f.attrs["track"] = track
    return f


def _honest(path: Path, t: Target, **kw) -> Path:
    return write_submission(path, noisy_prediction(t.label, 1), t.track, **kw)


def _dataset(path: Path, t: Target, data=None, *, attrs: dict | None = None, **kw) -> Path:
    attrs = {"c2seg_format": "submission/1", "track": t.track} if attrs is None else attrs
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        if data is not None:
            kw["data"] = data
        f.create_dataset("prediction", **kw)
    return path


def _pred(t: Target, dtype="u1") -> np.ndarray:
    return noisy_prediction(t.label, 2).astype(dtype)


def _with_attrs(p: Path, t: Target, **attrs) -> Path:
    """An honest prediction under exactly these root attributes."""
    return _dataset(p, t, _pred(t), attrs=attrs)


# -- links and storage that reach outside the file (SECURITY.md 2.1) -------------------------


def external_link_dataset(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f["prediction"] = h5py.ExternalLink(str(t.path), "/label")
    return p


def external_link_parent_group(p: Path, t: Target) -> Path:
    # /prediction is a soft link into /secret, an external link to the labels file's root.
    with _base(p) as f:
        f["secret"] = h5py.ExternalLink(str(t.path), "/")
        f["prediction"] = h5py.SoftLink("/secret/label")
    return p


def external_link_beside(p: Path, t: Target) -> Path:
    # An honest prediction, plus a group link to the labels file that a careless reader may follow.
    _honest(p, t)
    with h5py.File(p, "a") as f:
        f["extra"] = h5py.ExternalLink(str(t.path), "/")
    return p


def external_link_in_group(p: Path, t: Target) -> Path:
    # The external link sits one level down, in a hard group, where visititems would skip it.
    _honest(p, t)
    with h5py.File(p, "a") as f:
        f.create_group("g")["labels"] = h5py.ExternalLink(str(t.path), "/label")
    return p


def soft_link_dataset(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f.create_dataset("hidden", data=_pred(t))
        f["prediction"] = h5py.SoftLink("/hidden")
    return p


def virtual_dataset(p: Path, t: Target) -> Path:
    with _base(p) as f:
        layout = h5py.VirtualLayout(t.shape, "u1")
        layout[...] = h5py.VirtualSource(str(t.path), "label", t.shape)
        f.create_virtual_dataset("prediction", layout)
    return p


def external_raw_storage(p: Path, t: Target) -> Path:
    with _base(p) as f:
        n = t.label.size
        f.create_dataset("prediction", shape=t.shape, dtype="u1", external=[(str(t.path), t.data_offset, n)])
    return p


def unknown_filter(p: Path, t: Target, code: int = 32004) -> Path:
    # 32004 is LZ4's registered id: no plugin of that id is built in, HDF5 would search for one.
    pred = _pred(t)
    with _base(p) as f:
        d = f.create_dataset("prediction", shape=t.shape, dtype="u1", chunks=(512, t.shape[1]),
                             compression=code, allow_unknown_filter=True)
        for r0 in range(0, t.shape[0], 512):
            block = np.zeros((512, t.shape[1]), np.uint8)
            rows = pred[r0:r0 + 512]
            block[: rows.shape[0]] = rows
            d.id.write_direct_chunk((r0, 0), block.tobytes())
    return p


# -- bad files (SECURITY.md 3.1) ---------------------------------------------------------------


def raw_bytes(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def cut_honest(p: Path, t: Target, keep: Callable[[int], int]) -> Path:
    """An honest file cut to its first keep(size) bytes."""
    data = _honest(p, t).read_bytes()
    p.write_bytes(data[: keep(len(data))])
    return p


def _zeros_stream(mib: int) -> bytes:
    comp = zlib.compressobj(6)
    zeros = bytes(1 << 20)
    return b"".join(comp.compress(zeros) for _ in range(mib)) + comp.flush()


def bomb_chunk(p: Path, t: Target, mib: int = 256) -> Path:
    """Correct shape, one chunk for the whole raster (2 MB); its gzip stream (~mib KiB, smaller
    than the chunk) inflates to `mib` MiB of zeros."""
    _dataset(p, t, shape=t.shape, dtype="u1", chunks=t.shape, compression="gzip")
    with h5py.File(p, "a") as f:
        f["prediction"].id.write_direct_chunk((0, 0), _zeros_stream(mib))
    return p


def bomb_chunk_oversized(p: Path, t: Target, mib: int = 512) -> Path:
    """Correct shape, 256-row chunks; the first one is stored as ~0.5 MiB (more than its own
    raw size) and inflates to `mib` MiB."""
    _dataset(p, t, shape=t.shape, dtype="u1", chunks=(256, t.shape[1]), compression="gzip")
    with h5py.File(p, "a") as f:
        f["prediction"].id.write_direct_chunk((0, 0), _zeros_stream(mib))
    return p


def gigantic_chunk(p: Path, t: Target) -> Path:
    # Right shape, but a finite maxshape 8x larger lets one int64 chunk declare 2x the dataset.
    h, w = t.shape
    return _dataset(p, t, shape=t.shape, dtype="i8", maxshape=(8 * h, 8 * w), chunks=(2 * h, 2 * w))


def odd_precision(p: Path, t: Target) -> Path:
    # A 16-bit container declaring 12 significant bits: values would be read through a conversion.
    with _base(p) as f:
        tid = h5py.h5t.STD_U16LE.copy()
        tid.set_precision(12)
        space = h5py.h5s.create_simple(t.shape)
        h5py.h5d.create(f.id, b"prediction", tid, space)
    return p


def honest_plus(p: Path, t: Target, add: Callable[[h5py.File], None]) -> Path:
    """An honest file, then `add(file)` piles something on it."""
    _honest(p, t)
    with h5py.File(p, "a") as f:
        add(f)
    return p


def many_objects(f: h5py.File) -> None:
    for i in range(5000):
        f.create_group(f"g{i}")


def many_attributes(f: h5py.File) -> None:
    for i in range(2000):
        f["prediction"].attrs[f"a{i}"] = i


def float_nan_inf(p: Path, t: Target) -> Path:
    data = _pred(t, "f4")
    data[0, 0], data[0, 1], data[0, 2] = np.nan, np.inf, -np.inf
    return _dataset(p, t, data)


def one_value(p: Path, t: Target, dtype: str, at: tuple[int, int], value: int) -> Path:
    """An honest prediction stored as `dtype`, with `value` at one pixel."""
    data = _pred(t, dtype)
    data[at] = value
    return _dataset(p, t, data)


def no_prediction(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f.create_dataset("predictions", data=_pred(t))
    return p


def prediction_is_group(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f.create_group("prediction").create_dataset("data", data=_pred(t))
    return p


def corrupt_checksum(p: Path, t: Target) -> Path:
    _dataset(p, t, _pred(t), chunks=(256, t.shape[1]), fletcher32=True)
    with h5py.File(p, "r") as f:
        offset = f["prediction"].id.get_chunk_info(0).byte_offset
    with open(p, "r+b") as fh:
        fh.seek(offset + 100)
        b = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([b[0] ^ 0xFF]))
    return p


def truncated_chunk(p: Path, t: Target) -> Path:
    _dataset(p, t, shape=t.shape, dtype="u1", chunks=(256, t.shape[1]), compression="gzip")
    stream = zlib.compress(_pred(t)[:256].tobytes())
    with h5py.File(p, "a") as f:
        f["prediction"].id.write_direct_chunk((0, 0), stream[: len(stream) // 2])
    return p


def global_heap_loop(p: Path, t: Target) -> Path:
    """Text attributes live in the file's global heap; an object of size 0 followed by a zeroed
    object header makes HDF5 (2.0.0) loop for ever when the attribute is read. Found by
    tests/test_security_fuzz.py; only the scoring child's time limit stops it."""
    _dataset(p, t, _pred(t))
    data = bytearray(p.read_bytes())
    at = data.index(b"GCOL")
    data[at + 24:at + 48] = bytes(24)
    p.write_bytes(bytes(data))
    return p


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[Path, Target], Path]
    reason: str  # a regular expression the one-line detail must match
    leaks: bool = False  # read naively (h5py following links), the file yields the hidden labels
    status: int = 422


#: Promise 1: files that reach outside themselves, aimed at the server's own labels file.
LINKS = [
    Hostile("external link on the dataset", external_link_dataset, r"'/prediction' is an external link", leaks=True),
    Hostile("external link on a parent group", external_link_parent_group, r"'/prediction' is a soft link", leaks=True),
    Hostile("external link beside an honest dataset", external_link_beside, r"'/extra' is an external link"),
    Hostile("external link inside a group", external_link_in_group, r"'/g/labels' is an external link"),
    Hostile("soft link", soft_link_dataset, r"'/prediction' is a soft link"),
    Hostile("virtual dataset mapped to the labels", virtual_dataset, r"virtual dataset", leaks=True),
    Hostile("external raw storage in the labels file", external_raw_storage, r"external raw storage", leaks=True),
    Hostile("unknown filter (plugin id 32004)", unknown_filter, r"filter id 32004, which is not built in"),
]

ENUM_U1 = h5py.enum_dtype({f"c{i}": i for i in range(14)}, basetype="u1")

#: Promise 2: files that are broken, lie about their size or hide dimensions.
BAD_FILES = [
    Hostile("non-HDF5 bytes", lambda p, t: raw_bytes(p, b"PK\x03\x04" + os.urandom(4096)), r"not an HDF5 file"),
    Hostile("zero-byte file", lambda p, t: raw_bytes(p, b""), r"is empty \(0 bytes\)"),
    Hostile("truncated file", lambda p, t: cut_honest(p, t, lambda n: n // 2), r"truncated"),
    Hostile("header only", lambda p, t: cut_honest(p, t, lambda n: 96), r"truncated|not a readable HDF5"),
    # A few KiB declaring 10^10 pixels (10 GB once read).
    Hostile("gzip bomb: declares 10^10 pixels",
            lambda p, t: _dataset(p, t, shape=(100_000, 100_000), dtype="u1", chunks=(256, 256), compression="gzip"),
            r"100000 x 100000(?: pixels, far more than the target|, expected 2465 x 811)"),
    Hostile("gzip bomb: 2 MB chunk inflates to 256 MiB", bomb_chunk, r"inflates beyond its declared .* \(a compression bomb\)"),
    Hostile("gzip bomb: chunk stored larger than itself", bomb_chunk_oversized, r"chunk stored larger than its own size"),
    Hostile("gigantic chunk (finite maxshape)", gigantic_chunk, r"chunks .* larger than the dataset"),
    # 1 x 16 chunks: a chunk index of ~125,000 entries for a Berlin raster, each a step to read.
    Hostile("125,000 tiny chunks",
            lambda p, t: _dataset(p, t, shape=t.shape, dtype="u1", chunks=(1, 16), compression="gzip"),
            r"is split into \d+ chunks of 1 x 16"),
    Hostile("unlimited maxshape", lambda p, t: _dataset(p, t, _pred(t), maxshape=(None, None), chunks=(256, 256)),
            r"unlimited maxshape"),
    Hostile("sub-array dtype",
            lambda p, t: _dataset(p, t, shape=t.shape, dtype=np.dtype(("u1", (16,))), chunks=(64, 64)),
            r"array \(a sub-array dtype hides extra dimensions\)"),
    Hostile("long fixed strings", lambda p, t: _dataset(p, t, shape=t.shape, dtype="S100000", chunks=(1, 1)),
            r"got string data"),
    Hostile("variable-length strings", lambda p, t: _dataset(p, t, shape=(4, 4), dtype=h5py.string_dtype()),
            r"got string data"),
    Hostile("enum dtype", lambda p, t: _dataset(p, t, _pred(t), dtype=ENUM_U1), r"got enum"),
    Hostile("bool dtype", lambda p, t: _dataset(p, t, _pred(t) > 5), r"got enum \(booleans"),
    Hostile("compound dtype", lambda p, t: _dataset(p, t, shape=t.shape, dtype=np.dtype([("cls", "u1"), ("p", "f4")])),
            r"got compound data"),
    Hostile("opaque dtype", lambda p, t: _dataset(p, t, shape=t.shape, dtype=np.dtype("V2")), r"got opaque data"),
    Hostile("12-bit integer in 16 bits", odd_precision, r"unusual integer type"),
    Hostile("empty dataspace", lambda p, t: _dataset(p, t, h5py.Empty("u1")), r"is empty \(no dataspace\)"),
    Hostile("zero rows", lambda p, t: _dataset(p, t, shape=(0, t.shape[1]), dtype="u1"), r"is empty \(shape 0 x"),
    Hostile("scalar", lambda p, t: _dataset(p, t, np.uint8(3)), r"got a scalar"),
    Hostile("5000 groups", lambda p, t: honest_plus(p, t, many_objects), r"too many objects"),
    Hostile("2000 attributes", lambda p, t: honest_plus(p, t, many_attributes), r"too many attributes"),
    Hostile("60 nested groups",
            lambda p, t: honest_plus(p, t, lambda f: f.create_group("/".join(f"d{i}" for i in range(60)))),
            r"nested too deeply"),
    Hostile("float with NaN/inf", float_nan_inf, r"got floating point data"),
    # 0.0..13.0 exactly: still refused, a reader must not cast floats to class ids.
    Hostile("float holding whole numbers", lambda p, t: _dataset(p, t, _pred(t, "f4")), r"got floating point data"),
    Hostile("3-D", lambda p, t: _dataset(p, t, _pred(t)[None]), r"must be 2-D \(H x W\), got 3-D"),
    Hostile("one column short", lambda p, t: _dataset(p, t, _pred(t)[:, :-1]),
            r"has shape 2465 x 810, expected 2465 x 811"),
    Hostile("transposed", lambda p, t: _dataset(p, t, np.ascontiguousarray(_pred(t).T)),
            r"has shape 811 x 2465, expected 2465 x 811"),
    Hostile("value 14", lambda p, t: one_value(p, t, "u1", (7, 7), 14), r"1 values outside 0\.\.13 \(seen: 14\)"),
    # 256 would wrap to class 0 in a uint8 cast: it must be refused, not silently cast.
    Hostile("256 in int16 (would wrap to 0)", lambda p, t: one_value(p, t, "i2", (-1, -1), 256),
            r"1 values outside 0\.\.13 \(seen: 256\)"),
    Hostile("-1 in int8", lambda p, t: one_value(p, t, "i1", (3, 3), -1), r"1 values outside 0\.\.13 \(seen: -1\)"),
    Hostile("track not served", lambda p, t: _with_attrs(p, t, c2seg_format="submission/1", track="BW"),
            r"does not score track 'BW'"),
    Hostile("track missing", lambda p, t: _with_attrs(p, t, c2seg_format="submission/1"),
            r"missing root attribute 'track'"),
    Hostile("track unknown", lambda p, t: _with_attrs(p, t, c2seg_format="submission/1", track="XY"),
            r"unknown track"),
    Hostile("track not text", lambda p, t: _with_attrs(p, t, c2seg_format="submission/1", track=np.arange(3)),
            r"attribute 'track' must be a text string"),
    Hostile("format missing", lambda p, t: _with_attrs(p, t, track=t.track), r"missing root attribute 'c2seg_format'"),
    # The hidden labels' own format: a labels file is not a submission.
    Hostile("labels format", lambda p, t: _with_attrs(p, t, c2seg_format="labels/1", track=t.track),
            r"'c2seg_format' is labels/1, expected 'submission/1'"),
    Hostile("20000-character attribute",
            lambda p, t: _with_attrs(p, t, c2seg_format="submission/1", track=t.track, method="x" * 20000),
            r"attribute 'method' is too long"),
    Hostile("no prediction dataset", no_prediction, r"missing dataset 'prediction'"),
    Hostile("prediction is a group", prediction_is_group, r"must be a dataset, got a group"),
    Hostile("corrupt checksum", corrupt_checksum, r"could not be read: the file is truncated or corrupt"),
    Hostile("truncated compressed chunk", truncated_chunk, r"truncated compressed chunk"),
    # refused by the reader before HDF5 parses the heap; the peek timeout is the second line of defence
    Hostile("global heap that loops HDF5", global_heap_loop,
            r"damaged global heap|reading the file took longer than \d+ s"),
]


# -- tile-layout files ------------------------------------------------------------------------


@dataclass
class TileTarget:
    """Tile-layout hidden labels: `tiles` (id -> label tile) written to `path`."""

    path: Path
    tiles: dict[str, np.ndarray]
    track: str = "AB"

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        return {t: a.shape for t, a in self.tiles.items()}


def make_tile_target(folder: Path, n: int = 12, shape=(32, 32), seed: int = 0,
                     name: str = "SECRET-labels-tiles.h5") -> TileTarget:
    """n label tiles (ids "0".."n-1", the last one narrower, as an edge tile might be)."""
    rng = np.random.default_rng(seed)
    tiles = {}
    for i in range(n):
        h, w = shape if i < n - 1 else (shape[0], shape[1] // 2)
        tile = rng.integers(1, 14, (h, w), dtype=np.uint8)
        tile[rng.random((h, w)) < 0.15] = 0
        tiles[str(i)] = tile
    path = write_tile_labels(Path(folder) / name, tiles.items(), "AB")
    return TileTarget(path=path.resolve(), tiles=tiles)


def honest_tiles(t: TileTarget, seed: int = 1, wrong: float = 0.3) -> dict[str, np.ndarray]:
    return {tid: noisy_prediction(a, seed + i, wrong) for i, (tid, a) in enumerate(t.tiles.items())}


def honest_tile_file(p: Path, t: TileTarget, seed: int = 1) -> Path:
    return write_tile_submission(p, honest_tiles(t, seed).items(), t.track)


def tiles_plus(p: Path, t: TileTarget, edit: Callable[[h5py.Group], None]) -> Path:
    """An honest tile submission, then `edit(its prediction group)`."""
    honest_tile_file(p, t)
    with h5py.File(p, "a") as f:
        edit(f["prediction"])
    return p


def many_members(g: h5py.Group) -> None:
    # 100,001 hard links to one tile: 10 MB, written in about a second.
    first = next(iter(g)).encode()
    for i in range(len(g), 100_001):
        g.id.links.create_hard(f"extra{i}".encode(), g.id, first)


def member_soft_link(g: h5py.Group) -> None:
    del g["3"]
    g["3"] = h5py.SoftLink("/prediction/2")


def member_dot_dot(g: h5py.Group) -> None:
    # HDF5 takes ".." as a plain link name: a group "..", holding "x", beside the honest tiles.
    g.create_group("..").create_dataset("x", data=np.zeros((4, 4), np.uint8))


def member_other_shape(g: h5py.Group) -> None:
    data = g["5"][1:]
    del g["5"]
    g.create_dataset("5", data=data)


def member_external_link(p: Path, t: TileTarget) -> Path:
    return tiles_plus(p, t, lambda g: (g.__delitem__("0"), g.__setitem__("0", h5py.ExternalLink(str(t.path), "/label/0"))))


def tile_value(g: h5py.Group) -> None:
    data = g["7"][()]
    data[3, 4] = 14
    g["7"][...] = data


def tile_bomb(g: h5py.Group) -> None:
    # A 1 KiB chunk stored as ~1 KiB of gzip that inflates to 1 MiB (1000 such tiles: 1 GiB).
    shape = g["1"].shape
    del g["1"]
    d = g.create_dataset("1", shape=shape, dtype="u1", chunks=shape, compression="gzip")
    d.id.write_direct_chunk((0, 0), zlib.compress(bytes(1 << 20), 9))


def scene_for_tiles(p: Path, t: TileTarget) -> Path:
    return write_submission(p, np.ones((64, 64), np.uint8), t.track)


def unknown_layout(g: h5py.Group) -> None:
    g.file.attrs["layout"] = "mosaic"


TILE_FILES = [
    # Checked against the labels' 12 tiles, a file may hold 12 + 64 members (the scene files' object
    # bound as slack, so a few extra tiles are named); without labels the cap is 100,000.
    Hostile("100,001 tile members", lambda p, t: tiles_plus(p, t, many_members),
            r"^'/prediction' holds 100001 members, more than the 76 allowed$"),
    Hostile("tile member is a soft link", lambda p, t: tiles_plus(p, t, member_soft_link),
            r"^'/prediction/3' is a soft link; links are refused, not followed$"),
    Hostile("tile member is an external link to the labels", member_external_link,
            r"^'/prediction/0' is an external link \(to another file\); links are refused", leaks=True),
    Hostile("tile member named ../x", lambda p, t: tiles_plus(p, t, member_dot_dot),
            r"^'prediction' holds a member named '\.\.', which is not a plain tile id"),
    Hostile("tile of another shape", lambda p, t: tiles_plus(p, t, member_other_shape),
            r"^'prediction/5' has shape 31 x 32, expected 32 x 32$"),
    Hostile("tile missing", lambda p, t: tiles_plus(p, t, lambda g: g.__delitem__("10")),
            r"^submission must hold exactly the 12 test tiles: 1 missing \(10\)$"),
    Hostile("extra tile", lambda p, t: tiles_plus(p, t, lambda g: g.create_dataset("12", data=g["0"][()])),
            r"^submission must hold exactly the 12 test tiles: 1 not among them \('12'\)$"),
    Hostile("tile value 14", lambda p, t: tiles_plus(p, t, tile_value),
            r"^'prediction/7' has 1 values outside 0\.\.13 \(seen: 14\)$"),
    Hostile("tile gzip bomb", lambda p, t: tiles_plus(p, t, tile_bomb),
            r"^'prediction/1' has a chunk that inflates beyond its declared 1024 bytes \(a compression bomb\)$"),
    Hostile("scene file for a tile track", scene_for_tiles,
            r"^submission holds one 'prediction' raster \(the scene layout\), but track AB is scored on the "
            r"challenge's test tiles: pack one image per test tile with `c2seg pack PRED_DIR --track AB"),
    Hostile("unknown layout", lambda p, t: tiles_plus(p, t, unknown_layout),
            r"^unknown layout in root attribute 'layout'; expected one of scene, tiles$"),
]


def naive_read(path: Path) -> np.ndarray | None:
    """What a careless reader gets: h5py following every link; None when it cannot read."""
    try:
        with h5py.File(path, "r") as f:
            return f["prediction"][...]
    except Exception:  # noqa: BLE001 - any failure means "nothing read"
        return None


def leaks_labels(path: Path, t: Target) -> bool:
    """Whether a naive reader of `path` would get exactly the hidden labels."""
    got = naive_read(path)
    return got is not None and got.dtype == t.label.dtype and got.shape == t.shape and bool((got == t.label).all())
