"""An adaptive attacker against the public board, in exact, ladder (fixed step) and ladder-auto
(parameter-free) mode (a simulation).

The track is synthetic (random labels, 13 classes) and split into public and private pixels by
the server's own split (c2seg_server.scoring.public_mask / split_labels); every answer is the
server's own score (the kit's ConfusionMatrix, rounded as the server rounds), and in the ladder
modes it goes through the server's Ladder (c2seg_server.ladder), ladder-auto with the per-unit
counts the server stores (c2seg_server.public_units, over the split's public blocks). The
attacker knows nothing about the labels: it starts from a random guess, redraws a few pixels at random, submits, and keeps the
change when the answer went up (a hill climb on the public answers). Its private score is its
score on data it never got an answer about: the true measure of its method.

    .venv/bin/python bench/ladder_attack.py [--out docs/ladder-attack.png] [--submissions 300]

prints the final figures of each mode and draws public and private mIoU against the number of
submissions (Pillow only). tests/test_server_ladder.py runs `simulate` with fewer submissions.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from c2seg_kit.metrics import ConfusionMatrix
from c2seg_server import ladder, public_units
from c2seg_server.scoring import block_grid, public_blocks, public_mask, rounded, split_labels, unit_groups

SHAPE = (128, 128)
BLOCK = 2


@dataclass
class Run:
    mode: str
    shown: list[float] = field(default_factory=list)  # the answer the attacker keeps (its best shown public)
    public: list[float] = field(default_factory=list)  # exact public mIoU of the kept prediction
    private: list[float] = field(default_factory=list)  # private mIoU of the kept prediction
    baseline_public: float = 0.0
    baseline_private: float = 0.0
    public_units: int = 0  # independent public units (blocks of the split)
    bits: float = 0.0  # the leak budget of the attacker's answers
    step: float = ladder.DEFAULT_STEP
    grid: float = ladder.DEFAULT_STEP  # the grid the answers are released on
    moves: int = 0


def _miou(label: np.ndarray, pred: np.ndarray) -> float:
    return rounded(ConfusionMatrix().update(label, pred).scores())["miou"]


def simulate(mode: str, submissions: int = 300, *, seed: int = 0, flip: float = 0.02,
             step: float = ladder.DEFAULT_STEP) -> Run:
    rng = np.random.default_rng(seed)
    label = rng.integers(1, 14, size=SHAPE, dtype=np.uint8)
    split = dict(seed=seed + 1, block=BLOCK, fraction=0.5)
    mask = public_mask(SHAPE, "AB", **split)
    pub, priv = split_labels(label, mask)
    groups = unit_groups(public_blocks(SHAPE, "AB", **split))
    # each pixel's group (a private pixel's does not matter: its public label is 0)
    pixel_groups = np.repeat(np.repeat(np.maximum(groups, 0), BLOCK, axis=0), BLOCK, axis=1)[: SHAPE[0], : SHAPE[1]]
    policy = ladder.Policy(mode=mode, step=step)
    run = Run(mode=mode, step=step, grid=policy.grid)
    rows, cols = block_grid(SHAPE, BLOCK)
    run.public_units = round(0.5 * rows * cols)
    baseline = rng.integers(1, 14, size=SHAPE, dtype=np.uint8)  # the random-guess baseline
    run.baseline_public, run.baseline_private = _miou(pub, baseline), _miou(priv, baseline)

    kept = rng.integers(1, 14, size=SHAPE, dtype=np.uint8)
    history: list[tuple[int, int, float, bool]] = []  # what the server stores: (id, created, public mIoU, hidden)
    counts: dict[int, np.ndarray] = {}  # and, for ladder-auto, the public part's per-unit counts
    best_answer = -1.0
    for t in range(submissions):
        candidate = kept.copy()
        where = rng.random(SHAPE) < flip
        candidate[where] = rng.integers(1, 14, size=int(where.sum()), dtype=np.uint8)
        history.append((t, t, _miou(pub, candidate), False))
        if policy.auto:
            counter = public_units.Counter(int(groups.max()) + 1)
            counter.add(pixel_groups, pub, candidate)
            counts[t] = counter.counts()
        answers = ladder.answers_of(history, policy, counts=counts)
        answer = answers.shown[t][0] if policy.ladder else history[-1][2]
        if answer > best_answer:
            best_answer, kept = answer, candidate
        run.shown.append(best_answer)
        run.public.append(_miou(pub, kept))
        run.private.append(_miou(priv, kept))
        run.bits, run.moves = answers.bits, answers.moves
    return run


def draw(runs: list[Run], out: str) -> None:
    """Public and private mIoU against submissions, one panel per mode (Pillow)."""
    from PIL import Image, ImageDraw

    w, h, pad = 440, 300, 46
    img = Image.new("RGB", (w * len(runs), h), "white")
    d = ImageDraw.Draw(img)
    lo = min(min(r.private + r.public + [r.baseline_private]) for r in runs) - 0.01
    hi = max(max(r.shown + r.public) for r in runs) + 0.01
    colours = {"shown public (answer)": (200, 40, 40), "private": (30, 90, 200), "baseline private": (120, 120, 120)}
    for i, r in enumerate(runs):
        x0 = i * w

        def xy(t, v, n=len(r.shown), x0=x0):
            return (x0 + pad + (w - 2 * pad) * t / max(1, n - 1), h - pad - (h - 2 * pad) * (v - lo) / (hi - lo))

        d.rectangle([x0 + pad, pad, x0 + w - pad, h - pad], outline="black")
        for frac in (0.0, 0.5, 1.0):
            v = lo + frac * (hi - lo)
            d.text((x0 + 4, xy(0, v)[1] - 6), f"{v:.3f}", fill="black")
        d.text((x0 + pad, h - pad + 6), "0", fill="black")
        d.text((x0 + w - pad - 20, h - pad + 6), str(len(r.shown)), fill="black")
        d.text((x0 + w // 2 - 40, h - pad + 18), "submissions", fill="black")
        title = f"{r.mode} mode" + (f" (step {r.step:g})" if r.mode == "ladder" else
                                    " (parameter-free)" if r.mode == "ladder-auto" else "")
        d.text((x0 + pad, 8), f"{title}: mIoU of the attacker's kept prediction", fill="black")
        series = {"shown public (answer)": r.shown, "private": r.private,
                  "baseline private": [r.baseline_private] * len(r.shown)}
        for k, (name, values) in enumerate(series.items()):
            d.line([xy(t, v) for t, v in enumerate(values)], fill=colours[name], width=2)
            d.text((x0 + pad + 8, pad + 6 + 14 * k), name, fill=colours[name])
    img.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/ladder-attack.png")
    ap.add_argument("--submissions", type=int, default=300)
    args = ap.parse_args()
    runs = [simulate(m, args.submissions) for m in ladder.MODES]
    for r in runs:
        bound = ladder.overfit_bound(r.bits, r.public_units, r.grid)
        print(f"{r.mode:>11}: shown public {r.shown[-1]:.4f} (exact public {r.public[-1]:.4f}), private "
              f"{r.private[-1]:.4f}; baseline public {r.baseline_public:.4f} private {r.baseline_private:.4f}; "
              + (f"{r.moves} moves, " if r.mode != "exact" else "")
              + f"leak budget {r.bits:.0f} bits; bound on shown - fresh {bound:.3f}")
    draw(runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
