"""Helpers of the baseline's tests: tiny prepared caches written directly in the documented on-disk
layout (manifest.json + <city>.h5), small and learnable (the class of a pixel is legible in its
MSI values, and the target city's values are shifted: a domain gap), the tiny training options,
and running the real command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

CHANNELS = {"hsi": 10, "msi": 4, "sar": 2}


def _city_arrays(shape, rng, shift: float):
    h, w = shape
    # Blocky classes 1..5 (8 x 8 cells), one spectral signature per class plus noise.
    cells = rng.integers(1, 6, size=(h // 8 + 1, w // 8 + 1))
    label = np.kron(cells, np.ones((8, 8), dtype=np.int64))[:h, :w].astype(np.uint8)
    arrays = {}
    for m, c in CHANNELS.items():
        signature = np.random.default_rng(len(m) * 7 + c).random((14, c)).astype(np.float32)
        x = signature[label].transpose(2, 0, 1) + 0.1 * rng.standard_normal((c, h, w)).astype(np.float32)
        arrays[m] = np.clip(x + shift, 0, 1).astype(np.float32)
    return arrays, label


def make_prepared(root: Path, *, track: str = "AB", source_shape=(64, 96), target_shape=(80, 72),
                  target_label: bool = True, seed: int = 0) -> Path:
    """A prepared cache in the layout c2seg_kit.prepare.cache documents."""
    from c2seg_kit.registry import get_track

    t = get_track(track)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for city, shape, shift, labelled in ((t.source, source_shape, 0.0, True),
                                         (t.target, target_shape, 0.1, target_label)):
        arrays, label = _city_arrays(shape, rng, shift)
        with h5py.File(root / f"{city.name}.h5", "w") as f:
            for m, a in arrays.items():
                f.create_dataset(m, data=a, chunks=(a.shape[0], min(32, shape[0]), min(32, shape[1])))
            if labelled:
                f.create_dataset("label", data=label)
    manifest = {"format": "c2seg-prepared/1", "track": t.name, "source": t.source.name,
                "target": t.target.name, "cities": {}, "options": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


# The tiny network on 32 x 32 windows: a step takes a fraction of a second on a CPU.
TEST_CONFIG = {"base": "tiny", "name": "tiny-test", "train": {"window": 32, "stride": 16}}


def config_file(root: Path) -> str:
    path = root / "tiny-test.json"
    if not path.exists():
        path.write_text(json.dumps(TEST_CONFIG))
    return str(path)


def tiny_options(data: Path, out: Path, **kw):
    from c2seg_baseline.train import TrainOptions

    base = dict(data=data, track="AB", out=out, config=config_file(data.parent), steps=6, device="cpu",
                seed=3, eval_every=3, batch_size=2, progress=False, eval_window=64, eval_overlap=16)
    base.update(kw)
    return TrainOptions(**base)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict:
    from c2seg_baseline import checkpoint as ckpt

    state = ckpt.read_checkpoint(path)
    return {f"{p}.{k}": v for p in ckpt.PARTS for k, v in state[p].items()}


def run_cli(args: list[str]):
    """``c2seg ARGS`` in this interpreter: exit code, stdout and stderr as a user sees them
    (cli_support.cli_in_process); :func:`run_cli_process` where the fresh interpreter matters."""
    from cli_support import cli_in_process

    return cli_in_process(args)


def run_cli_process(args: list[str]):
    """The real entry point in a fresh interpreter: exit code and stderr as a user sees them."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", "from c2seg_kit.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def cli_args(defaults: dict[str, str], overrides: list[str], **fill) -> list[str]:
    """`defaults` as command-line options, with the option/value pairs in `overrides` replacing theirs;
    ``{name}`` in an override's value is filled from `fill`."""
    opts = dict(defaults)
    for k, v in zip(overrides[::2], overrides[1::2], strict=True):
        opts[k] = v.format(**fill)
    return [x for kv in opts.items() for x in kv]


def assert_one_line_error(r, message: str) -> None:
    """A user mistake: exit 1 and one line on stderr, `error: ...` naming the problem."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
