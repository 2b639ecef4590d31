"""`c2seg admin verify SUBMISSION_ID --prepared DIR`: re-run the model a team attached to a
submission on the hidden test inputs and report how far the re-run agrees with the submitted
labels, so that organizers can check finalists before the reveal.

The organizer holds the test city's inputs as a prepared cache (`c2seg prepare` of the track,
the kit's preprocessing). The verb checks everything it can before any model runs: the
attached file is there and is the one uploaded (its sha256), the extra that runs it is
installed, the cache is for the submission's track and holds exactly what the submission
holds (its test tiles and their shapes, or the scene's shape). Then a child process
(``python -m c2seg_baseline.rerun``: never this process, never the web server) predicts the
cache with the model into a temporary submission file, and the two files are compared pixel by
pixel: overall, per tile (tile tracks) or per block of the split's block size (scene tracks).

Exit status, for scripts: 0 when the agreement reaches --min-agreement (default 1: every pixel),
3 when it does not, 1 for any error (one line). The last line on stdout always says which.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from c2seg_kit.errors import C2SegError
from c2seg_kit.text import for_terminal as safe

from .admin_db import ID, open_db, user_error

#: Exit status of a re-run that does not reach --min-agreement.
DISAGREES = 3
#: The modules a re-run needs, by kind of model (find_spec only: nothing is imported here).
NEEDS = {"checkpoint": ("torch", "c2seg_baseline"), "onnx": ("torch", "c2seg_baseline", "onnx", "onnxruntime")}


@dataclass
class Agreement:
    """Pixels that agree, of how many, overall and per part (a tile id, or a block 'row,col')."""

    layout: str
    agree: int = 0
    total: int = 0
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, part: str, agree: int, total: int) -> None:
        a, t = self.parts.get(part, (0, 0))
        self.parts[part] = (a + agree, t + total)
        self.agree += agree
        self.total += total

    @property
    def fraction(self) -> float:
        return self.agree / self.total if self.total else 1.0

    def below(self, threshold: float = 1.0) -> list[str]:
        return [p for p, (a, t) in self.parts.items() if t and a / t < threshold]


def missing_modules(kind: str) -> list[str]:
    return [m for m in NEEDS[kind] if importlib.util.find_spec(m) is None]


def check_layout(submitted: Path, prepared: Path, track: str) -> None:
    """The prepared cache must be the submission's track and hold what the submission holds
    (the same test tiles at the same shapes, or the scene's shape): one line otherwise."""
    from c2seg_kit.prepare.cache import PreparedData
    from c2seg_kit.submission.readers import open_submission

    try:
        data = PreparedData(prepared)
    except (C2SegError, OSError, ValueError) as e:
        raise C2SegError(f"{prepared} is not a prepared cache ({' '.join(str(e).split())[:200]})") from None
    with data, open_submission(submitted, track=track) as sub:
        if data.track.name != track:
            raise C2SegError(f"{prepared} is prepared for track {data.track.name}; the submission is for track {track}")
        city = data.target
        if sub.layout != data.layout:
            raise C2SegError(f"{prepared} holds the test city as {data.layout}; the submission holds "
                             f"{sub.layout}: prepare the track's test inputs in the layout the track is scored in")
        if data.layout == "tiles":
            if set(sub.ids) != set(city.ids):
                missing = sorted(set(sub.ids) - set(city.ids))
                raise C2SegError(f"{prepared} does not hold the submission's test tiles: {len(missing)} of them "
                                 f"missing{' (e.g. ' + safe(missing[0]) + ')' if missing else ''}, "
                                 f"{len(set(city.ids) - set(sub.ids))} others")
            wrong = next((t for t in sub.ids if tuple(sub.shapes[t]) != tuple(city.shapes[t])), None)
            if wrong is not None:
                raise C2SegError(f"tile {safe(wrong)} is {city.shapes[wrong]} in {prepared} and "
                                 f"{sub.shapes[wrong]} in the submission")
        elif tuple(sub.shape) != tuple(city.shape):
            raise C2SegError(f"the test city in {prepared} is {tuple(city.shape)}; the submission is {tuple(sub.shape)}")


def compare(submitted: Path, rerun: Path, track: str, block: int) -> Agreement:
    """Pixel agreement of two submission files of the same layout: per tile, or per block of
    `block` x `block` pixels of the scene (named 'row,col' by block index)."""
    from c2seg_kit.submission.readers import open_submission

    with open_submission(submitted, track=track) as a, open_submission(rerun, track=track) as b:
        out = Agreement(a.layout)
        if a.layout == "tiles":
            for tile_id, mine in a.iter_tiles():
                theirs = b.read_tile(tile_id)
                out.add(tile_id, int(np.count_nonzero(mine == theirs)), int(mine.size))
            return out
        width = a.shape[1]
        starts = np.arange(0, width, block)
        for (r0, mine), (_, theirs) in zip(a.iter_rows(block), b.iter_rows(block), strict=True):
            same = np.add.reduceat((mine == theirs).sum(axis=0), starts)
            sizes = np.minimum(starts + block, width) - starts
            for j, (agree, cols) in enumerate(zip(same.tolist(), sizes.tolist(), strict=True)):
                out.add(f"{r0 // block},{j}", int(agree), int(cols) * mine.shape[0])
        return out


def rerun(model: Path, kind: str, prepared: Path, track: str, out: Path, options: list[str], timeout_s: float) -> None:
    """The child process that re-runs the model into `out`; its one-line error passed on."""
    cmd = [sys.executable, "-m", "c2seg_baseline.rerun", "--model", str(model), "--kind", kind, "--prepared",
           str(prepared), "--track", track, "--out", str(out), *options]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise C2SegError(f"the re-run did not finish within {timeout_s:g} s (--timeout-s)") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        why = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
        if why is None:
            why = f"the child process failed (exit {done.returncode}): {lines[-1][:300] if lines else 'no message'}"
        raise C2SegError(f"the re-run of the attached model failed: {why}")


@click.command()
@click.argument("submission_id", type=ID)
@click.option("--prepared", required=True, type=click.Path(file_okay=False),
              help="the hidden test city's inputs as `c2seg prepare` writes them for the submission's track")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="the share of pixels that must agree for exit status 0 (else 3)")
@click.option("--stitch", type=click.Choice(["blend", "authors"]),
              show_default="a checkpoint's own, else blend", help="how prediction windows are stitched")
@click.option("--window", type=click.IntRange(32), show_default="a checkpoint's own, else 512 (or an ONNX "
              "model's static size)", help="prediction window edge in pixels (a multiple of 32)")
@click.option("--overlap", type=click.IntRange(0), show_default="a quarter of the window (blend)",
              help="overlap of blended windows in pixels")
@click.option("--device", default="cpu", show_default=True, help="where a checkpoint runs (cpu, cuda, auto); "
              "ONNX models run on the CPU")
@click.option("--threads", type=click.IntRange(1), help="CPU threads of the re-run")
@click.option("--timeout-s", type=click.FloatRange(1), default=3600.0, show_default=True,
              help="the most seconds the re-run may take")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@click.pass_context
def verify(ctx, submission_id, prepared, min_agreement, stitch, window, overlap, device, threads, timeout_s,
           as_json):
    """Re-run the model attached to SUBMISSION_ID on the hidden test inputs (--prepared) and
    report how far its labels agree with the submitted ones: overall, per tile (tile tracks),
    per block of the split (scene tracks). The model runs in a child process (a kit checkpoint
    read with weights_only, an ONNX model through onnxruntime: `pip install 'c2seg-kit[verify]'`).
    Exit status 0 when the agreement reaches --min-agreement, 3 when not, 1 on an error."""
    from c2seg_kit import model_files

    from . import organizer, stored

    settings, sessions = open_db(ctx)
    with sessions() as s:
        sub = user_error(lambda: organizer.get_any_submission(s, submission_id))
        model = sub.model
        if model is None:
            raise C2SegError(f"submission {submission_id} has no attached model (its team attaches one with "
                             f"`c2seg attach-model {submission_id} FILE`)")
        team, track = sub.team.name, sub.track
        submitted, sub_sha = settings.storage_dir / sub.stored_as, sub.sha256
        model_path, model_sha, kind, model_name = settings.storage_dir / model.stored_as, model.sha256, model.kind, \
            model.filename
        split = stored.read_split(s)
    block = split.block if split is not None else stored.DEFAULT_BLOCK
    for what, path, digest in (("submission", submitted, sub_sha), ("attached model", model_path, model_sha)):
        if not path.is_file():
            raise C2SegError(f"the stored {what} file of submission {submission_id} is missing ({path}); "
                             "check --data-dir")
        if stored.file_sha256(path) != digest:
            raise C2SegError(f"the stored {what} file of submission {submission_id} does not match its upload hash")
    missing = missing_modules(kind)
    if missing:
        raise C2SegError(f"re-running {'an ONNX model' if kind == 'onnx' else 'a kit checkpoint'} needs "
                         f"{', '.join(missing)}: {model_files.VERIFY_EXTRA}")
    prepared = Path(prepared)
    check_layout(submitted, prepared, track)
    options = [*(["--stitch", stitch] if stitch else []), *(["--window", str(window)] if window else []),
               *(["--overlap", str(overlap)] if overlap is not None else []), "--device", device,
               *(["--threads", str(threads)] if threads else []), "--max-bytes", str(settings.max_model_bytes)]
    with tempfile.TemporaryDirectory(prefix="c2seg-verify-") as tmp:
        out = Path(tmp) / "rerun.h5"
        rerun(model_path, kind, prepared, track, out, options, timeout_s)
        result = compare(submitted, out, track, block)
    ok = result.fraction >= min_agreement
    unit = "tiles" if result.layout == "tiles" else f"blocks of {block} px"
    below = result.below()
    summary = (f"verify submission {submission_id}: agreement {result.fraction:.6f} ({result.agree} of {result.total} "
               f"pixels); {len(below)} of {len(result.parts)} {unit} below 1; "
               f"{'PASS' if ok else 'FAIL'} (--min-agreement {min_agreement:g})")
    if as_json:
        click.echo(json.dumps({"submission": submission_id, "team": team, "track": track, "model": {
            "kind": kind, "filename": model_name, "sha256": model_sha}, "agreement": result.fraction,
            "agree": result.agree, "pixels": result.total, "layout": result.layout,
            "block": block if result.layout == "scene" else None,
            "parts": {p: {"agree": a, "pixels": t, "agreement": a / t if t else 1.0}
                      for p, (a, t) in result.parts.items()},
            "min_agreement": min_agreement, "pass": ok}))
    else:
        click.echo(f"submission {submission_id} of team {safe(team)} (track {track}): attached {kind} "
                   f"{safe(model_name)} (sha256 {model_sha[:16]}...) re-run on {prepared}")
        shown = result.parts if result.layout == "tiles" else {p: result.parts[p] for p in below}
        for part, (a, t) in shown.items():
            name = f"tile {safe(part)}" if result.layout == "tiles" else f"block {part}"
            click.echo(f"  {name:<28} {a / t if t else 1.0:.6f} ({a} of {t} pixels)")
        click.echo(summary)
    if not ok:
        sys.exit(DISAGREES)


#: The verbs of this module, added to `c2seg admin` by cli.py.
VERBS = (verify,)
