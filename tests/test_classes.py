"""The one class-id check (c2seg_kit.classes): counts and lists bad values exactly, over one array
or streamed blocks, and every reader, writer and metric refuses with its message."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from c2seg_kit.classes import OutOfRange, as_class_ids, as_class_map, check_class_values, holds_class_ids


def naive(values) -> tuple[int, list]:
    """How many values are not whole numbers 0..13, and which, by a plain loop."""
    bad = [v for v in np.asarray(values).ravel().tolist() if not (v == v and v in range(14))]
    distinct = sorted(set(bad), key=lambda v: (v != v, v if v == v else 0))
    return len(bad), distinct


@settings(max_examples=80, deadline=None)
@given(a=hnp.arrays(np.int16, hnp.array_shapes(min_dims=1, max_dims=2, max_side=30), elements=st.integers(-20, 40)),
       cuts=st.lists(st.integers(0, 900), max_size=4))
def test_streamed_tally_equals_a_plain_count(a, cuts):
    count, distinct = naive(a)
    flat = a.ravel()
    tally = OutOfRange()
    for block in np.split(flat, sorted(c % (flat.size + 1) for c in cuts)):
        tally.add(block)
    shown = ", ".join(str(v) for v in distinct[:8]) + (", ..." if len(distinct) > 8 else "")
    assert tally.count == count
    assert tally.message("x") == f"x has {count} values outside 0..13 (seen: {shown})"
    assert holds_class_ids(a) == (count == 0)


def test_floats_whole_numbers_pass_and_the_rest_are_named():
    check_class_values(np.array([0.0, 13.0, 7.0]), "label")
    with pytest.raises(ValueError, match=r"^label has 5 values outside 0..13 \(seen: 1.5, 14, inf, nan\)$"):
        check_class_values(np.array([1.5, 14.0, np.inf, np.nan, np.nan, 3.0]), "label")


def test_integers_are_never_wrapped_by_the_cast():
    with pytest.raises(ValueError, match=r"has 1 values outside 0..13 \(seen: 256\)"):
        as_class_ids(np.array([1, 256], np.int16), "prediction")
    out = as_class_ids(np.array([[13, 0]], np.int64), "prediction")
    assert out.dtype == np.uint8 and out.tolist() == [[13, 0]]
    with pytest.raises(ValueError, match="must hold integers"):
        as_class_map(np.zeros((2, 2), np.float32), "class map")


def test_every_caller_refuses_with_the_one_message(tmp_path):
    """The writers, the metric, the renderer, the scene label check and the file reader all say
    'NAME has N values outside 0..13 (seen: ...)' for the same values."""
    import h5py

    from c2seg_kit.errors import InvalidDataError, InvalidSubmissionError
    from c2seg_kit.io.scene import check_label_values
    from c2seg_kit.metrics import ConfusionMatrix
    from c2seg_kit.render import render_png
    from c2seg_kit.submission.readers import open_submission
    from c2seg_kit.submission.writers import write_submission

    bad = np.arange(4 * 5, dtype=np.int16).reshape(4, 5)  # 14..19: six values outside
    tail = "has 6 values outside 0..13 (seen: 14, 15, 16, 17, 18, 19)"
    with pytest.raises(ValueError) as w:
        write_submission(tmp_path / "w.h5", bad, "AB")
    with pytest.raises(ValueError) as m:
        ConfusionMatrix().update(np.ones_like(bad), bad)
    with pytest.raises(ValueError) as r:
        render_png(bad, tmp_path / "r.png")
    with pytest.raises(InvalidDataError) as s:
        check_label_values(bad, "berlin label")
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"c2seg_format": "submission/1", "track": "AB"})
        f["prediction"] = bad
    with pytest.raises(InvalidSubmissionError) as f, open_submission(path) as sub:
        sub.check_values()
    assert [str(e.value) for e in (w, m, r, s, f)] == [
        f"prediction {tail}", f"prediction {tail}", f"class map {tail}", f"berlin label {tail}", f"'prediction' {tail}",
    ]
