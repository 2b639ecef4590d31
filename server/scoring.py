"""Scoring an upload against the hidden labels, split into a public and a private part.

Scene tracks: the split is a fixed, seeded mask of square blocks over the label grid (blocks,
not pixels, so a public pixel's neighbours do not give away private ones). Both confusion
matrices come from one read of the prediction: per chunk, the public and the private label rows
(each with the other part's pixels set to 0, i.e. ignored) are compared with the same rows.

Tile tracks (labels in the tile layout): whole tiles are public or private, chosen by a seeded
hash of the tile id (:func:`public_tiles`): stable whatever the order or number of uploads,
roughly ``fraction`` of the tiles. Each tile of the prediction is read once and counted in the
part its id belongs to. A submission in the other layout is refused (422) with the layout the
track expects and how to convert (c2seg_kit.submission.readers.layout_mismatch).

Everything here runs inside a scoring child process (see workers.py); only rounded aggregate
scores leave it for any answer, with a hash of the prediction itself (for the duplicate check).
The confusion matrix is never answered: with exact counts one changed pixel would reveal its
label. The public part's per-unit counts (public_units.py: per group of public blocks or tiles,
per class, the true-positive, predicted and true pixels) leave the child for the server's
database only, where the parameter-free Ladder reads its threshold from them.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2seg_kit.errors import InvalidSubmissionError
from c2seg_kit.metrics import ConfusionMatrix

from . import public_units

#: Scores leave the server rounded to this many decimals.
DECIMALS = 4
#: The score keys that leave the server (`score --json` without the confusion matrix).
PUBLIC_KEYS = ("oa", "miou", "f1", "kappa", "per_class_iou", "n_pixels")


def block_grid(shape: tuple[int, int], block: int) -> tuple[int, int]:
    """(rows, columns) of the split's blocks over a label raster of `shape` (edge blocks may be partial)."""
    return -(-shape[0] // block), -(-shape[1] // block)


def public_blocks(shape: tuple[int, int], track: str, *, seed: int, block: int, fraction: float) -> np.ndarray:
    """Boolean (block rows, block columns) grid of the public blocks: exactly round(fraction * blocks)
    of them, seeded per track."""
    nb_r, nb_c = block_grid(shape, block)
    n_blocks = nb_r * nb_c
    rng = np.random.default_rng([seed, zlib.crc32(track.encode())])
    chosen = np.zeros(n_blocks, dtype=bool)
    chosen[rng.permutation(n_blocks)[: max(1, round(fraction * n_blocks))]] = True
    return chosen.reshape(nb_r, nb_c)


def public_mask(shape: tuple[int, int], track: str, *, seed: int, block: int, fraction: float) -> np.ndarray:
    """Boolean (H, W) mask of the public pixels: exactly round(fraction * blocks) blocks, seeded per track."""
    h, w = shape
    grid = public_blocks(shape, track, seed=seed, block=block, fraction=fraction)
    return np.repeat(np.repeat(grid, block, axis=0), block, axis=1)[:h, :w]


def unit_groups(public: np.ndarray) -> np.ndarray:
    """The public blocks' unit groups (public_units.groups over the blocks in raster order) as a
    grid like `public`, -1 on the private blocks."""
    out = np.full(public.shape, -1, dtype=np.int16)  # at most public_units.MAX_UNITS groups
    out[public] = public_units.groups(int(public.sum()))
    return out


def split_labels(label: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(public, private) label rasters: each keeps its own pixels and sets the others to 0 (ignored)."""
    zero = np.zeros((), dtype=label.dtype)
    return np.where(mask, label, zero), np.where(mask, zero, label)


def rounded(scores: dict) -> dict:
    """The scores that may leave the server: aggregate values, rounded to DECIMALS."""

    def r(x):
        return None if x is None else round(float(x), DECIMALS)

    out = {k: r(scores[k]) for k in ("oa", "miou", "f1", "kappa")}
    out["per_class_iou"] = {name: r(v) for name, v in scores["per_class_iou"].items()}
    out["n_pixels"] = int(scores["n_pixels"])
    return out


def public_tiles(ids: list[str], track: str, *, seed: int, fraction: float) -> frozenset[str]:
    """The public tiles of a tile track: tile t is public when the first 8 bytes of
    sha256("<seed>:<track>:<t>"), read as a number in [0, 1), fall below ``fraction``.

    The same tile is in the same part whatever the order, count or timing of uploads, on any
    machine; about ``fraction`` of the tiles are public. With two or more tiles neither part is
    left empty: the tile with the lowest hash is made public, or the highest private.
    """
    def draw(tile_id: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{track}:{tile_id}".encode()).digest()[:8], "big") / 2**64

    u = {t: draw(t) for t in ids}
    public = {t for t, x in u.items() if x < fraction}
    if len(ids) >= 2 and not public:
        public = {min(u, key=u.__getitem__)}
    elif len(ids) >= 2 and len(public) == len(ids):
        public.discard(max(u, key=u.__getitem__))
    return frozenset(public)


@dataclass
class SceneLabels:
    """A scene track's labels, split: each part keeps its own pixels, the other's set to 0."""

    public: np.ndarray
    private: np.ndarray
    units: np.ndarray | None = None  # unit_groups of the public blocks
    block: int = 1

    def expectation(self) -> dict:
        return {"expected_shape": self.public.shape}


@dataclass
class TileLabels:
    """A tile track's label tiles (id -> H x W uint8) and the ids of its public tiles."""

    tiles: dict[str, np.ndarray]
    public: frozenset[str]

    def expectation(self) -> dict:
        return {"expected_tiles": {t: a.shape for t, a in self.tiles.items()}}


@dataclass(frozen=True)
class Header:
    """What the admission step learnt from an upload in its one open of the file: the track it is
    scored on (decided there, once: the declared one, which the file must name, or the file's
    own), its layout, its `method` attribute, and the ticket of the opened file that the scoring
    child keeps for :meth:`Scorer.score` (so the file is not parsed again)."""

    track: str
    layout: str
    method: str | None = None
    ticket: str | None = None


class Scorer:
    """Holds the split labels of each served track and scores submission files against them.

    :meth:`peek` is the admission's look at an upload: it opens the file once and keeps it open
    (one at a time) until :meth:`score` reads its pixels, any other job arrives, or
    :meth:`release` is called.
    """

    def __init__(self, labels: dict[str, str], *, seed: int, block: int, fraction: float, chunk_rows: int = 512):
        self.label_paths = {t: Path(p) for t, p in labels.items()}
        self.split = dict(seed=seed, block=block, fraction=fraction)
        self.chunk_rows = chunk_rows
        self._labels: dict[str, SceneLabels | TileLabels] = {}
        self._held: tuple[str, str, object] | None = None  # (ticket, path, the open submission)

    def labels(self, track: str) -> SceneLabels | TileLabels:
        if track not in self._labels:
            from c2seg_kit.submission.formats import LAYOUT_TILES
            from c2seg_kit.submission.readers import open_labels

            with open_labels(self.label_paths[track]) as lab:
                if lab.layout == LAYOUT_TILES:
                    tiles = dict(lab.iter_tiles())
                    public = public_tiles(list(tiles), track, seed=self.split["seed"], fraction=self.split["fraction"])
                    self._labels[track] = TileLabels(tiles, public)
                else:
                    label = lab.read()
                    blocks = public_blocks(label.shape, track, **self.split)
                    self._labels[track] = SceneLabels(*split_labels(label, public_mask(label.shape, track, **self.split)),
                                                      units=unit_groups(blocks), block=self.split["block"])
        return self._labels[track]

    def warm(self) -> list[str]:
        return [t for t in self.label_paths if self.labels(t) is not None]

    def expectation(self, track: str) -> dict:
        """What a submission for ``track`` must hold (its labels' shape or tiles); refuses a track
        this server does not score."""
        if track not in self.label_paths:
            served = ", ".join(sorted(self.label_paths)) or "none"
            raise InvalidSubmissionError(f"this server does not score track {track!r} (served: {served})")
        return self.labels(track).expectation()

    def peek(self, path: str, track: str | None = None) -> Header:
        """Admit a submission from its header, without reading its pixels: its format, its track
        (``track``, when the upload declared one, must be the file's), its layout, shape or tiles
        and dtype, checked against the track's labels in one open of the file, which is kept
        for :meth:`score`."""
        from c2seg_kit.submission.readers import open_submission

        self.release()
        sub = open_submission(path, expect=self.expectation)
        try:
            if track is not None and sub.track != track:
                raise InvalidSubmissionError(f"the file is for track {sub.track}, but it was sent for track {track}")
            method = sub.attrs.get("method")
            header = Header(track=sub.track, layout=sub.layout, method=None if method is None else str(method)[:255],
                            ticket=uuid.uuid4().hex)
        except BaseException:
            sub.close()
            raise
        self._held = (header.ticket, path, sub)
        return header

    def release(self) -> None:
        """Close the file :meth:`peek` kept open, if any."""
        held, self._held = self._held, None
        if held is not None:
            held[2].close()

    def holding(self) -> bool:
        return self._held is not None

    def _admitted(self, path: str, header: Header | None):
        """The file :meth:`peek` kept open for this header, or None (then it is opened again, for
        the header's track: nothing is detected twice)."""
        held, self._held = self._held, None
        if held is not None and header is not None and held[:2] == (header.ticket, path):
            return held[2]
        if held is not None:
            held[2].close()
        return None

    def score(self, path: str, track: str, header: Header | None = None) -> dict:
        """{"public": scores, "private": scores, "content_sha256": hex, "public_units": bytes}, the
        scores rounded, for one submission file ("public_units": public_units.encode of the
        public part's per-unit counts, for the server's database only).

        With the ``header`` :meth:`peek` returned, the file it opened is scored without a
        second open (a child that died meanwhile opens it again, for the header's track).
        content_sha256 hashes the decoded prediction (as uint8 rows; tiles: each tile's id and
        shape, then its rows, in the labels' order), so two files holding the same prediction
        (whatever their compression, chunking or integer type) hash the same; `c2seg admin
        duplicates` compares it across teams. It says nothing about the labels.
        """
        from c2seg_kit.submission.readers import open_submission

        if header is not None and header.track != track:
            raise ValueError(f"scoring for track {track} a file admitted for track {header.track}")
        opened = self._admitted(path, header)
        labels = self.labels(track)
        cm = {"public": ConfusionMatrix(), "private": ConfusionMatrix()}
        content = hashlib.sha256()
        if isinstance(labels, TileLabels):
            order = sorted(labels.public)
            tile_group = dict(zip(order, public_units.groups(len(order)).tolist(), strict=True))
            units = public_units.Counter(min(len(order), public_units.MAX_UNITS))
        else:
            units = public_units.Counter(int(labels.units.max()) + 1)
            block_groups = np.maximum(labels.units, 0)  # a private block's pixels are label 0 in the public rows
            column_blocks = None
        with opened or open_submission(path, track=track, **labels.expectation()) as sub:
            if isinstance(labels, TileLabels):
                for tile_id, tile in sub.iter_tiles():
                    part = "public" if tile_id in labels.public else "private"
                    self._update(cm[part], labels.tiles[tile_id], tile, f"tile {tile_id}")
                    if part == "public":
                        units.add(tile_group[tile_id], labels.tiles[tile_id], tile)
                    content.update(f"{tile_id}:{tile.shape[0]}x{tile.shape[1]};".encode())
                    content.update(np.ascontiguousarray(tile, dtype=np.uint8).tobytes())
            else:
                for r0, rows in sub.iter_rows(self.chunk_rows):
                    r1 = r0 + rows.shape[0]
                    where = f"rows {r0}..{r1 - 1}"
                    self._update(cm["public"], labels.public[r0:r1], rows, where)
                    self._update(cm["private"], labels.private[r0:r1], rows, where)
                    if column_blocks is None:
                        column_blocks = np.arange(rows.shape[1]) // labels.block
                    self._count_units(units, block_groups, column_blocks, labels, r0, rows)
                    content.update(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())  # values are 0..13 here
        return {"public": rounded(cm["public"].scores()), "private": rounded(cm["private"].scores()),
                "content_sha256": content.hexdigest(), "public_units": public_units.encode(units.counts())}

    @staticmethod
    def _count_units(units, block_groups: np.ndarray, column_blocks: np.ndarray, labels: SceneLabels, r0: int,
                     rows: np.ndarray) -> None:
        """Count rows r0.. of a scene prediction into the per-unit counts, one run of rows within
        one row of blocks at a time (each column's group is then the same down the run)."""
        block, r = labels.block, r0
        while r < r0 + rows.shape[0]:
            end = min(r0 + rows.shape[0], (r // block + 1) * block)
            units.add(block_groups[r // block][column_blocks], labels.public[r:end], rows[r - r0:end - r0])
            r = end

    @staticmethod
    def _update(cm: ConfusionMatrix, label: np.ndarray, pred: np.ndarray, where: str) -> None:
        try:
            cm.update(label, pred)
        except ValueError as e:  # the prediction's values or dtype; never label content
            raise InvalidSubmissionError(f"{e} ({where})") from None
