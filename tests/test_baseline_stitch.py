"""The authors' stitch against a naive first-window-wins loop, and the edges of predicted maps.

Edge windows: partial windows used to be zero-padded, and the last columns of every map were wrong.
Here a model that is perfect on real pixels but misreads zeros it never saw in training predicts
cities narrower than its window: the edge columns must be as right as the interior.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import make_prepared
from stitch_support import PositionModel, axis_windows, padded_window

from c2seg_baseline.predict import predict_city
from c2seg_kit.prepare.cache import PreparedData


def sliding_windows(height, width, window):
    """The authors' window list (their slidingwindow call with no overlap): x offsets outer, y inner,
    the last offset of each axis snapped to the edge; sizes by the kit's edge rule."""
    wh, _, rows = axis_windows(height, window, 0)
    ww, _, cols = axis_windows(width, window, 0)
    return [(r, c, wh, ww) for c in cols for r in rows]


def naive_authors(model, city, window):
    """Every window in the authors' order; a pixel keeps the label of the first window covering it."""
    h, w = city.shape
    out = np.zeros((h, w), np.uint8)
    for r0, c0, wh, ww in sliding_windows(h, w, window):
        with torch.no_grad():
            classes = model(*padded_window(city, r0, c0, wh, ww), target=True)[0, 1:].argmax(0).numpy() + 1
        for i in range(min(wh, h - r0)):
            for j in range(min(ww, w - c0)):
                if out[r0 + i, c0 + j] == 0:
                    out[r0 + i, c0 + j] = classes[i, j]
    return out


@pytest.mark.parametrize("shape, window", [((100, 150), 32), ((45, 100), 64), ((20, 70), 64), ((64, 96), 32)])
def test_authors_stitch_matches_a_first_window_wins_loop(tmp_path, shape, window):
    prep = make_prepared(tmp_path / "p", target_shape=shape)
    model = PositionModel()
    with PreparedData(prep) as data:
        pieces = []
        predict_city(model, data.target, sink=lambda r0, rows: pieces.append((r0, rows)), window=window, overlap=0,
                     stitch="authors", batch_size=3, progress=False)
        calls = list(model.calls)
        expected = naive_authors(model, data.target, window)
    assert [r0 for r0, _ in pieces] == list(np.cumsum([0] + [p.shape[0] for _, p in pieces[:-1]]))
    got = np.concatenate([rows for _, rows in pieces])
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 1
    # Each window of the authors' list ran once, at its size.
    assert sum(s[0] for s, _ in calls) == len(sliding_windows(*shape, window))
    assert {s[2:] for s, _ in calls} == {(wh, ww) for _, _, wh, ww in sliding_windows(*shape, window)}


class ZeroBlindModel(torch.nn.Module):
    """Perfect on real pixels -- the class is legible in MSI band 0 (class / 16) -- but it has never seen
    an all-zero pixel: wherever one lies within 4 pixels (as the window presents its input), it
    answers class 13. The cities below have no all-zero pixel, so only padding can produce one."""

    def forward(self, hsi, msi, sar, *, target):
        x = torch.cat([hsi, msi, sar], 1)
        cls = torch.round(msi[:, 0] * 16).long().clamp(1, 13)
        logits = torch.nn.functional.one_hot(cls, 14).permute(0, 3, 1, 2).float()
        zero = (x.abs().sum(1, keepdim=True) == 0).float()
        near_zero = torch.nn.functional.max_pool2d(zero, 9, stride=1, padding=4)  # pads with -inf
        logits[:, 13:14] += 2 * near_zero
        return logits


def perfect_city(root, shape, seed=0):
    """A prepared AB cache whose Berlin has class blocks legible to ZeroBlindModel, no zero pixel."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for name, (h, w) in (("augsburg", (40, 40)), ("berlin", shape)):
        label = np.kron(rng.integers(1, 13, (h // 7 + 1, w // 7 + 1)), np.ones((7, 7), np.int64))[:h, :w]
        with h5py.File(root / f"{name}.h5", "w") as f:
            for m, c in (("hsi", 10), ("msi", 4), ("sar", 2)):
                x = rng.uniform(0.05, 1.0, (c, h, w)).astype(np.float32)
                if m == "msi":
                    x[0] = label / 16
                f.create_dataset(m, data=x)
            f.create_dataset("label", data=label.astype(np.uint8))
    (root / "manifest.json").write_text(json.dumps({"format": "c2seg-prepared/1", "track": "AB", "source": "augsburg",
                                                    "target": "berlin", "cities": {}, "options": {}}))
    return root


@pytest.mark.parametrize("stitch, window, overlap", [("blend", 128, 32), ("blend", 512, 128), ("authors", 128, 0)])
@pytest.mark.parametrize("shape", [(150, 90), (70, 203), (20, 25)])
def test_edges_are_as_accurate_as_the_interior(tmp_path, stitch, window, overlap, shape):
    prep = perfect_city(tmp_path / "p", shape)
    with PreparedData(prep) as data:
        city = data.target
        rows = []
        predict_city(ZeroBlindModel(), city, sink=lambda r0, r: rows.append(r), window=window, overlap=overlap,
                     stitch=stitch, batch_size=2, progress=False)
        label = city.read_label(0, shape[0], 0, shape[1])
    pred = np.concatenate(rows)
    correct = pred == label
    interior = correct[4:-4, 4:-4].mean()
    assert interior == 1.0
    # the last 4 columns and rows, and the first ones, as right as the interior
    for edge in (correct[:, -4:], correct[-4:, :], correct[:, :4], correct[:4, :]):
        assert edge.mean() == interior
