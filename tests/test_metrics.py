"""c2seg_kit.metrics against scikit-learn, over a grid of random and edge cases (docs/formats.md, "The metric")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from metrics_support import ALL, oracle
from sklearn.metrics import cohen_kappa_score

from c2seg_kit.classes import CLASS_NAMES
from c2seg_kit.metrics import ConfusionMatrix, compute_scores, miou_of_counts


def assert_matches(scores: dict, expected: dict) -> None:
    assert scores["n_pixels"] == expected["n_pixels"]
    np.testing.assert_array_equal(np.array(scores["confusion_matrix"]).reshape(13, 14), expected["matrix"])
    for key in ("oa", "miou", "f1", "kappa"):
        if expected[key] is None:
            assert scores[key] is None, key
        else:
            assert scores[key] == pytest.approx(expected[key], abs=1e-12), key
    for name in CLASS_NAMES:
        if expected["per_class_iou"][name] is None:
            assert scores["per_class_iou"][name] is None, name
        else:
            assert scores["per_class_iou"][name] == pytest.approx(expected["per_class_iou"][name], abs=1e-12), name


def score(target, pred) -> dict:
    return ConfusionMatrix().update(target, pred).scores()


# ---- a grid of random cases ------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(1,), (7, 5), (33, 64), (3, 17, 19)])
@pytest.mark.parametrize("classes", [range(14), range(1, 14), [0, 3, 7], [0, 5], [2, 9, 13]])
@pytest.mark.parametrize("accuracy", [0.0, 0.6, 1.0])
def test_random_grid_matches_sklearn(seed, shape, classes, accuracy):
    rng = np.random.default_rng(seed)
    target = rng.choice(list(classes), size=shape).astype(np.uint8)
    noise = rng.integers(0, 14, size=shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < accuracy, target, noise).astype(np.uint8)
    assert_matches(score(target, pred), oracle(target, pred))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16])
def test_any_integer_dtype_gives_the_same_scores(dtype):
    rng = np.random.default_rng(1)
    target = rng.integers(0, 14, (40, 30))
    pred = rng.integers(0, 14, (40, 30))
    expected = oracle(target, pred)
    assert_matches(score(target.astype(dtype), pred.astype(dtype)), expected)


# ---- edge cases named in the issue -----------------------------------------------------------

def test_class_absent_from_labels_and_predictions_is_null_and_left_out():
    target = np.array([1, 1, 2, 2, 3, 3])
    pred = np.array([1, 2, 2, 2, 3, 1])
    s = score(target, pred)
    assert s["per_class_iou"]["inland_wetlands"] is None
    assert {k for k, v in s["per_class_iou"].items() if v is not None} == {"surface_water", "street", "urban_fabric"}
    # By hand: IoU1 = 1/3, IoU2 = 2/3, IoU3 = 1/2.
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert_matches(s, oracle(target, pred))


def test_class_only_in_predictions_counts_as_zero():
    target = np.array([1, 1, 1, 1])
    pred = np.array([1, 1, 1, 5])
    s = score(target, pred)
    assert s["per_class_iou"]["mine_dump_construction"] == 0.0
    assert s["miou"] == pytest.approx((3 / 4 + 0) / 2)
    assert_matches(s, oracle(target, pred))


def test_class_only_in_labels_counts_as_zero():
    target = np.array([1, 1, 4, 4])
    pred = np.array([1, 1, 1, 1])
    s = score(target, pred)
    assert s["per_class_iou"]["industrial_commercial_transport"] == 0.0
    assert_matches(s, oracle(target, pred))


def test_all_predictions_zero_are_wrong_but_add_no_class():
    target = np.array([[1, 2], [3, 0]])
    pred = np.zeros_like(target)
    s = score(target, pred)
    assert s["oa"] == 0.0 and s["miou"] == 0.0 and s["f1"] == 0.0
    # The reference would have a 14th class "0" in its mean; ours has exactly the 3 labelled ones.
    assert {k for k, v in s["per_class_iou"].items() if v is not None} == {"surface_water", "street", "urban_fabric"}
    assert s["n_pixels"] == 3
    assert_matches(s, oracle(target, pred))


def test_predicted_zero_is_its_own_kappa_category():
    target = np.array([1, 1, 2, 2, 3])
    pred = np.array([1, 0, 2, 4, 3])
    s = score(target, pred)
    assert s["kappa"] == pytest.approx(cohen_kappa_score(target, pred, labels=ALL))
    assert s["kappa"] == pytest.approx(0.5)


def test_one_class_only_perfect():
    target = np.full((5, 5), 7)
    s = score(target, target)
    assert s["oa"] == 1.0 and s["miou"] == 1.0 and s["f1"] == 1.0
    assert s["kappa"] is None  # chance agreement is 1: Cohen's kappa is undefined (sklearn: nan)
    assert_matches(s, oracle(target, target))


def test_one_class_only_with_errors():
    target = np.full(10, 7)
    pred = np.array([7] * 8 + [0, 3])
    assert_matches(score(target, pred), oracle(target, pred))


def test_all_unlabelled_raster():
    target = np.zeros((4, 6), dtype=np.uint8)
    pred = np.full((4, 6), 3, dtype=np.uint8)
    s = score(target, pred)
    assert s["n_pixels"] == 0
    assert s["oa"] is None and s["miou"] is None and s["f1"] is None and s["kappa"] is None
    assert all(v is None for v in s["per_class_iou"].values())


def test_unlabelled_pixels_are_ignored_whatever_is_predicted():
    rng = np.random.default_rng(3)
    target = rng.integers(1, 14, (20, 20))
    pred = rng.integers(0, 14, (20, 20))
    base = score(target, pred)
    target2 = np.concatenate([target, np.zeros((5, 20), dtype=target.dtype)])
    pred2 = np.concatenate([pred, rng.integers(0, 14, (5, 20))])
    assert score(target2, pred2) == base


def test_empty_input_changes_nothing():
    cm = ConfusionMatrix().update(np.array([1, 2, 2]), np.array([1, 2, 0]))
    before = cm.matrix.copy()
    cm.update(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.uint8))
    np.testing.assert_array_equal(cm.matrix, before)
    assert cm.n_pixels == 3


# ---- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize("target, pred, match", [
    (np.zeros(3, np.uint8), np.zeros(4, np.uint8), "differ in shape"),
    (np.zeros(3, np.uint8), np.zeros(3, np.float32), "prediction must hold integers, got dtype float32"),
    (np.zeros(3, np.float64), np.zeros(3, np.uint8), "label must hold integers, got dtype float64"),
    (np.array([1, 2, 3], np.uint8), np.array([1, 14, 200], np.uint8), r"^prediction has 2 values outside 0..13 \(seen: 14, 200\)$"),
    (np.array([1, 2, 3], np.int64), np.array([1, -1, 2], np.int64), r"^prediction has 1 values outside 0..13 \(seen: -1\)$"),
    (np.array([1, 20, 3], np.uint8), np.array([1, 2, 3], np.uint8), r"^label has 1 values outside 0..13 \(seen: 20\)$"),
])
def test_bad_inputs_are_refused(target, pred, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix().update(target, pred)


def test_compute_scores_refuses_a_wrong_matrix():
    with pytest.raises(ValueError, match="13 x 14"):
        compute_scores(np.zeros((14, 14), dtype=np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        compute_scores(-np.ones((13, 14), dtype=np.int64))


# ---- chunked accumulation ----------------------------------------------------------------------

@pytest.mark.parametrize("rows_per_chunk", [1, 7, 64, 1000])
def test_chunked_accumulation_equals_one_shot(rows_per_chunk):
    rng = np.random.default_rng(5)
    target = rng.integers(0, 14, (150, 90), dtype=np.uint8)
    pred = rng.integers(0, 14, (150, 90), dtype=np.uint8)
    one_shot = ConfusionMatrix().update(target, pred)
    chunked = ConfusionMatrix()
    for r0 in range(0, 150, rows_per_chunk):
        chunked.update(target[r0 : r0 + rows_per_chunk], pred[r0 : r0 + rows_per_chunk])
    np.testing.assert_array_equal(chunked.matrix, one_shot.matrix)
    assert chunked.scores() == one_shot.scores()


@pytest.mark.parametrize("small_pixels", [0, 1 << 18])
def test_internal_slabs_and_non_contiguous_views(monkeypatch, small_pixels):
    """Arrays larger than one internal slab, and strided views, count every pixel exactly once,
    through the pair counts (small_pixels 0) and the plain bincount of small blocks alike."""
    from c2seg_kit import metrics

    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 97)
    monkeypatch.setattr(metrics, "_SMALL_PIXELS", small_pixels)
    rng = np.random.default_rng(6)
    target = rng.integers(0, 14, (60, 80), dtype=np.uint8)
    pred = rng.integers(0, 14, (60, 80), dtype=np.uint8)
    expected = oracle(target, pred)
    assert_matches(ConfusionMatrix().update(target, pred).scores(), expected)
    assert_matches(ConfusionMatrix().update(target.T, pred.T).scores(), expected)  # Fortran order
    sub = oracle(target[::2, 1::3], pred[::2, 1::3])
    assert_matches(ConfusionMatrix().update(target[::2, 1::3], pred[::2, 1::3]).scores(), sub)


def test_merge_and_reset():
    rng = np.random.default_rng(7)
    a_t, a_p, b_t, b_p = (rng.integers(0, 14, 500) for _ in range(4))
    merged = ConfusionMatrix().update(a_t, a_p).merge(ConfusionMatrix().update(b_t, b_p))
    both = ConfusionMatrix().update(np.concatenate([a_t, b_t]), np.concatenate([a_p, b_p]))
    np.testing.assert_array_equal(merged.matrix, both.matrix)
    assert ConfusionMatrix(both.matrix).scores() == both.scores()
    both.reset()
    assert both.n_pixels == 0


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    t = torch.randint(0, 14, (4, 16, 16))
    p = torch.randint(0, 14, (4, 16, 16))
    assert_matches(score(t, p), oracle(t.numpy(), p.numpy()))


# ---- properties (hypothesis) -------------------------------------------------------------------

label_arrays = hnp.arrays(np.uint8, st.integers(1, 300), elements=st.integers(0, 13))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_matches_sklearn(data):
    target = data.draw(label_arrays)
    pred = data.draw(hnp.arrays(np.uint8, target.shape, elements=st.integers(0, 13)))
    assert_matches(score(target, pred), oracle(target, pred))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_property_invariants(data):
    target = data.draw(label_arrays)
    pred = data.draw(hnp.arrays(np.uint8, target.shape, elements=st.integers(0, 13)))
    s = score(target, pred)
    m = np.array(s["confusion_matrix"])
    assert m.sum() == s["n_pixels"] == int(np.count_nonzero(target))
    # OA is the share of labelled pixels predicted right; a class has an IoU exactly when it occurs
    # on a labelled pixel, as label or prediction; mIoU is the mean of those IoUs.
    labelled = target > 0
    if labelled.any():
        assert s["oa"] == pytest.approx(float(np.mean(pred[labelled] == target[labelled])), abs=1e-12)
    else:
        assert s["oa"] is None and s["miou"] is None
    occurring = set(target[labelled].tolist()) | set(pred[labelled].tolist())
    defined = {name for name, v in s["per_class_iou"].items() if v is not None}
    assert defined == {CLASS_NAMES[c - 1] for c in occurring - {0}}
    if defined:
        assert s["miou"] == pytest.approx(float(np.mean([s["per_class_iou"][n] for n in defined])), abs=1e-12)
    # A perfect prediction scores 1 on OA, mIoU and F1.
    perfect = score(target, target)
    if perfect["n_pixels"]:
        assert perfect["oa"] == perfect["miou"] == perfect["f1"] == 1.0
    # Pixel order does not matter.
    perm = np.random.default_rng(0).permutation(target.size)
    assert score(target[perm], pred[perm]) == s
    # Splitting at any point and merging gives the same matrix.
    cut = data.draw(st.integers(0, target.size))
    split = ConfusionMatrix().update(target[:cut], pred[:cut]).update(target[cut:], pred[cut:])
    np.testing.assert_array_equal(split.matrix, m)


def test_miou_of_counts_side_by_side_is_each_matrix_miou():
    """The vectorised reduction (count sets side by side, as the parameter-free Ladder uses it)
    gives each confusion matrix's own mIoU, None/NaN alike where no class is defined."""
    rng = np.random.default_rng(11)
    matrices = [rng.integers(0, 50, (13, 14)) * (rng.random((13, 14)) < 0.3) for _ in range(20)]
    matrices.append(np.zeros((13, 14), dtype=np.int64))
    m = np.stack(matrices)
    classes = np.arange(13)
    tp = m[:, classes, classes + 1]
    got = miou_of_counts(tp, m.sum(axis=1)[:, 1:], m.sum(axis=2))
    for g, matrix in zip(got, matrices, strict=True):
        want = compute_scores(matrix)["miou"]
        assert (np.isnan(g) and want is None) or g == pytest.approx(want, rel=1e-12, abs=1e-15)
