"""The streaming submission writer: row bands in, the canonical file out, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest

from c2seg_kit.submission.readers import open_submission
from c2seg_kit.submission.writers import submission_writer, write_submission


@pytest.mark.parametrize("bands", [[300], [1, 255, 44], [100, 100, 100], [256, 44]])
def test_streamed_equals_whole(tmp_path, bands):
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 14, (300, 70)).astype(np.uint8)
    with submission_writer(tmp_path / "s.h5", pred.shape, "AB", method="m") as w:
        r0 = 0
        for n in bands:
            w.write_rows(r0, pred[r0 : r0 + n])
            r0 += n
    write_submission(tmp_path / "w.h5", pred, "AB")
    for name in ("s.h5", "w.h5"):
        with open_submission(tmp_path / name, track="AB", expected_shape=pred.shape) as sub:
            np.testing.assert_array_equal(sub.read(), pred)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "w.h5"]  # no temp files left


def test_out_of_order_and_bad_values_refused_and_nothing_left(tmp_path):
    pred = np.ones((40, 10), np.uint8)
    with pytest.raises(ValueError, match="in order"), submission_writer(tmp_path / "a.h5", pred.shape, "AB") as w:
        w.write_rows(0, pred[:10])
        w.write_rows(20, pred[20:])
    with pytest.raises(ValueError, match=r"^prediction has 400 values outside 0..13 \(seen: 14\)$"):
        with submission_writer(tmp_path / "b.h5", pred.shape, "AB") as w:
            w.write_rows(0, pred * 14)
    with pytest.raises(RuntimeError, match="only 10 of 40 rows"):
        with submission_writer(tmp_path / "c.h5", pred.shape, "AB") as w:
            w.write_rows(0, pred[:10])
    assert list(tmp_path.iterdir()) == []
