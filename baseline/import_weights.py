"""`c2seg import-weights`: the authors' three state_dict files as one kit checkpoint.

`predict --checkpoint best_model.pth` already reads the authors' generator (with D0 beside it),
but their files say nothing about what they were trained on, so `predict` can check only the band
counts. Importing them against a prepared cache writes a checkpoint that records its track and the
cache's input layout (provenance.py), so every later `predict` refuses the wrong track or input;
it predicts with the authors' tiling unless told otherwise, holds all three networks as a checkpoint
the kit trained does, and `train-baseline --init-from` starts from it as from any run.
"""

from __future__ import annotations

import os
from pathlib import Path

from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import claim_file

from .checkpoint import make_state, save_checkpoint
from .config import HighDANConfig
from .importer import AUTHORS_FILES, load_authors_model, named_after
from .provenance import check_matches, input_layout
from .windows import open_prepared

#: The authors' preprocessing in `prepare`'s options: 10 PCA components fitted per city by their
#: randomized solver (`prepare --pca-solver authors`), min-max.
AUTHORS_PREPARE = {"pca_components": 10, "pca_fit": "city", "pca_solver": "authors", "normalisation": "minmax"}
#: Said after a difference, where a hint helps.
AUTHORS_HINTS = {"pca_solver": "; `c2seg prepare --pca-solver authors` computes their components"}


def authors_files(source: Path) -> dict[str, Path]:
    """The three files: in a folder under the authors' names, or named by their generator file
    (X_model.pth -> X_DA_1.pth, X_DA_2.pth beside it)."""
    expected = (f"the folder holding {', '.join(AUTHORS_FILES.values())}, or the generator file "
                "(X_model.pth, with X_DA_1.pth and X_DA_2.pth beside it)")
    if source.is_dir():
        files = {part: source / name for part, name in AUTHORS_FILES.items()}
    elif not source.exists():
        raise C2SegError(f"{source} does not exist; AUTHORS_FILES is {expected}")
    else:
        files = {"generator": source, **{part: named_after(source, part) for part in ("d0", "d1")}}
        if source in (files["d0"], files["d1"]):
            raise C2SegError(f"{source}: the generator file's name must contain 'model' to find its two "
                             f"discriminators beside it; AUTHORS_FILES is {expected}")
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise C2SegError(f"{source}: the authors' files are {', '.join(AUTHORS_FILES.values())}; "
                         f"missing {', '.join(missing)}")
    return files


def differences_from_authors(layout: dict) -> list[str]:
    """The ways a prepared cache's input differs from the authors' preprocessing (empty: none)."""
    chosen = layout["prepare"]
    return [f"{key} {chosen.get(key, 'unrecorded')} (the authors': {value}{AUTHORS_HINTS.get(key, '')})"
            for key, value in AUTHORS_PREPARE.items() if chosen.get(key) != value]


def import_authors_weights(source: str | os.PathLike, track: str, prepared: str | os.PathLike,
                           out: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write the authors' files at `source` as a kit checkpoint at `out` (which must not exist unless
    `overwrite`, and is never one of the files read); returns what was recorded (track, input
    layout) and the differences from their preprocessing."""
    source, out = Path(source), Path(out)
    files = authors_files(source)
    claim_file(out, force=overwrite, inputs=(*files.values(), prepared))
    model = load_authors_model(files["generator"], files["d0"], files["d1"])
    data = model.cfg.to_dict()
    data["predict"]["stitch"] = "authors"  # their tiling, unless predict is told otherwise
    cfg = HighDANConfig.from_dict(data)
    model.cfg = cfg
    with open_prepared(prepared, track) as cache:
        check_matches(None, cfg.model.in_channels, cache, cache.track.name, files["generator"], prepared)
        layout = input_layout(cache)
    record = {"track": layout["track"], "data": str(prepared), "input": layout,
              "init": {"authors_files": {part: str(path) for part, path in files.items()}}}
    save_checkpoint(out, make_state(model, cfg, step=0, run=record, with_rng=False))
    return {"out": str(out), "track": layout["track"], "channels": layout["channels"],
            "differences": differences_from_authors(layout)}
