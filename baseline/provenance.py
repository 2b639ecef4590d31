"""What a run was trained on -- its track and its input layout -- and the check that `predict`
feeds a checkpoint only what it was trained on.

The layout is read off the prepared cache (c2seg_kit.prepare.cache): bands per modality, and what
changes the values a network sees (PCA components, where the PCA was fitted, its solver -- exact
or the authors' randomized one, which differ where eigenvalues nearly tie --, its sign rule --
the manifest's ``pca.sign_rule`` -- and the normalisation). Training records it in every checkpoint (``run.input``)
and in the run's config.json; `predict` compares it with the cache it is given and refuses a
mismatch, naming both sides. Options that only change how the statistics were estimated (the
pixel sample, the band height of the passes) are not part of the layout.
"""

from __future__ import annotations

import os

from c2seg_kit.errors import C2SegError

#: `prepare` options that define the input values.
INPUT_OPTIONS = ("pca_components", "pca_fit", "pca_solver", "normalisation", "percentiles")
#: What a cache or a checkpoint from before an option existed was prepared with.
UNRECORDED_MEANS = {"pca_solver": "exact"}
SIGN_RULE = "pca_sign_rule"  # from the manifest's "pca" entry: which way each component points


def input_layout(prepared) -> dict:
    """The input layout of a prepared cache (a c2seg_kit.prepare.cache.PreparedData)."""
    options = dict(prepared.manifest.get("options") or {})
    chosen = {k: options.get(k, UNRECORDED_MEANS.get(k)) for k in INPUT_OPTIONS if k in options or k in UNRECORDED_MEANS}
    if chosen.get("normalisation") != "percentile":
        chosen.pop("percentiles", None)  # unused by min-max
    sign_rule = (prepared.manifest.get("pca") or {}).get("sign_rule")
    if sign_rule is not None:
        chosen[SIGN_RULE] = sign_rule
    return {
        "track": prepared.track.name,
        "layout": getattr(prepared, "layout", "scene"),
        "channels": {m: int(c) for m, c in prepared.target.channels.items()},
        "prepare": chosen,
    }


def _describe(value) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def check_matches(recorded: dict | None, expected_channels: dict[str, int], prepared, track: str,
                  checkpoint: str | os.PathLike, data: str | os.PathLike) -> None:
    """Refuse (one line, both sides named) a checkpoint whose track or input layout is not the
    cache's. `recorded` is the checkpoint's ``run`` entry (None or partial for older checkpoints
    and the authors' files: then only what is known is compared); `expected_channels` the model's."""
    recorded = recorded or {}
    trained_on = recorded.get("track")
    if trained_on is not None and trained_on != track:
        raise C2SegError(f"checkpoint {checkpoint} was trained on track {trained_on}; --track is {track}")
    have = input_layout(prepared)
    if dict(expected_channels) != have["channels"]:
        raise C2SegError(f"checkpoint {checkpoint} expects bands {_describe(dict(expected_channels))}; "
                         f"{data} has {_describe(have['channels'])}")
    theirs = (recorded.get("input") or {}).get("prepare")
    if not theirs:
        return  # an older checkpoint, or the authors' files: nothing more is known
    ours = have["prepare"]
    for key in (*INPUT_OPTIONS, SIGN_RULE):
        was = theirs.get(key, UNRECORDED_MEANS.get(key, "unrecorded"))
        now = ours.get(key, UNRECORDED_MEANS.get(key, "unrecorded"))
        if was != now:
            raise C2SegError(f"checkpoint {checkpoint} was trained on input prepared with {key} {was}; "
                             f"{data} was prepared with {key} {now}")
