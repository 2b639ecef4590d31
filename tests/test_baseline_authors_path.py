"""The authors'-checkpoint path end to end.

A randomly initialised HighDAN is exported in the authors' three-file layout. Their preprocessing
and prediction are re-implemented here from their code's description (data/dataset.py,
utils/pyt_utils.py: PCA per city, min-max per band, windows without overlap, the last one
snapped, the earlier window's labels kept in the overlap) and run on a synthetic Berlin; the
kit's `c2seg prepare` + `c2seg predict --stitch authors` on the same city must give the same
inputs and the same label map, up to what float32 arithmetic can decide either way: the bounds
below are derived from float32's epsilon and the computation, so they hold on any CPU, any BLAS
or convolution kernel (AVX2, AVX-512, ...) and any thread count.

The windows are 32 px (their Augsburg script used 128): the tiling does not depend on the size,
and a 123 x 41 Berlin still has several window rows and a snapped last window on both axes.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import scipy.io

torch = pytest.importorskip("torch")

from baseline_support import assert_one_line_error, make_prepared, run_cli
from cli_support import run_cli as run_cli_in_process

from c2seg_baseline.config import paper
from c2seg_baseline.importer import AUTHORS_FILES, load_authors_model, to_authors_state_dicts
from c2seg_baseline.model import HighDAN
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.registry import MODALITIES, TRACKS
from c2seg_kit.submission import open_submission

PATCH = 32  # the window edge, the kit's smallest (a multiple of 32)
SCALE = 0.05  # synthetic Berlin 123 x 41: window rows at 0, 32, 64, 91 (snapped), columns at 0, 9 (snapped)
EPS = float(np.finfo(np.float32).eps)  # 2**-23: float32's relative rounding error is at most EPS / 2


def normalised_input_bound(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per band: how far the kit's and the authors' min-max normalised float32 values may lie apart.

    The kit stores float32 values x, lo and hi (each rounded once, EPS/2 relative) and reads
    (x - lo) * (1 / (hi - lo)) in float32 (four more roundings); the authors' side works in float64
    and rounds its result once. With m = max(|lo|, |hi|) >= |x|, an error e in x, lo or hi moves the
    result by e / (hi - lo); the four-neighbour mean that repairs a NaN pixel sums four float32
    values on both sides (1.5 EPS m each). First order, the two differ by at most
    EPS * (5 m / (hi - lo) + 2.5); the float64 PCAs (eigenvectors of the covariance here, an SVD
    there) agree to ~1e-12, far below. Rounded up to 6 EPS (1 + m / (hi - lo))."""
    m = np.maximum(np.abs(lo), np.abs(hi))
    return 6 * EPS * (1 + m / (hi - lo))


def accumulation_depth(model) -> float:
    """The sum, over the model's convolutions and linear layers, of sqrt(fan-in) (~3,300 for HighDAN).

    A float32 dot product of n terms is off by about sqrt(n) * EPS/2 times its terms' magnitude,
    whatever the summation order or blocking a kernel picks (probabilistic rounding error analysis,
    Higham & Mary 2019: a bound that holds with overwhelming probability; the worst case n * EPS/2
    assumes every rounding errs the same way, and would call a fifth of the pixels ties here); two
    kernels that sum in different orders differ by about twice that. Through a normalised network
    the layers' relative errors add up, so two evaluations of its logits, on any CPU, kernel or
    thread count, differ by less than EPS * depth * the logits' magnitude (the window's largest).
    Measured across AVX-512 and AVX2 convolutions, SSE, 1 and 2 threads: at most 0.3 of that."""
    fan_ins = [m.weight[0].numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return sum(math.sqrt(n) for n in fan_ins)


def authors_pca(hsi: np.ndarray, k: int = 10) -> np.ndarray:
    """Their PCA step: fitted on every pixel of the city, then the raw (uncentred) pixels projected
    on ``components_``. scikit-learn 1.3 fits by the SVD of the centred pixels and fixes each
    component's sign so that the pixel with the largest absolute score scores positive (its
    u-based svd_flip); computed here exactly, in float64."""
    x = hsi.reshape(-1, hsi.shape[-1]).astype(np.float64)
    u, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    u, vt = u[:, :k], vt[:k]
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])
    components = vt * signs[:, None]
    return (x @ components.T).reshape(*hsi.shape[:2], k)


def band_normalisation(x: np.ndarray) -> np.ndarray:
    """Their band_normalization: (x - min) / (max - min) per band, over the whole city."""
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    return (x - lo) / (hi - lo)


def patch_nan_like_their_beijing_script(x: np.ndarray) -> np.ndarray:
    """Their Beijing script replaces its NaN SAR pixel by the mean of its 4 neighbours; the synthetic
    cities carry such pixels too (their Augsburg/Berlin data had none)."""
    x = x.copy()
    for r, c, b in zip(*np.nonzero(np.isnan(x)), strict=True):
        x[r, c, b] = np.mean([x[r - 1, c, b], x[r + 1, c, b], x[r, c - 1, b], x[r, c + 1, b]])
    return x


def sliding_window_offsets(length: int, patch: int) -> list[int]:
    """The slidingwindow package at overlap 0: steps of `patch`, plus one window snapped to the end
    when the length is not a multiple of it."""
    offsets = list(range(0, length - patch + 1, patch))
    if offsets[-1] != length - patch:
        offsets.append(length - patch)
    return offsets


def recover(windows: dict, h: int, w: int) -> np.ndarray:
    """Their recover()/patch_concat: each axis concatenated window by window, the last window cut to
    the rows (columns) the earlier windows did not cover -- so the earlier window keeps the overlap."""
    rows, cols = sliding_window_offsets(h, PATCH), sliding_window_offsets(w, PATCH)
    columns = []
    for j, c in enumerate(cols):
        strips = [windows[r, c] for r in rows[:-1]] + [windows[rows[-1], c][PATCH * (len(rows) - 1) - h:]]
        column = np.concatenate(strips, axis=0) if len(rows) > 1 else windows[rows[0], c]
        if j == len(cols) - 1 and len(cols) > 1:
            column = column[:, PATCH * (len(cols) - 1) - w:]
        columns.append(column)
    return np.concatenate(columns, axis=1)


def authors_logits(model, hsi, msi, sar) -> dict[tuple[int, int], np.ndarray]:
    """Their test loop: windows in slidingwindow's order (x offsets outer, y inner), the model's
    outputs 1..13 per window as (PATCH, PATCH, 13) (their argmax over these, plus one, is the label)."""
    h, w = hsi.shape[:2]
    logits = {}
    with torch.no_grad():
        for c in sliding_window_offsets(w, PATCH):
            for r in sliding_window_offsets(h, PATCH):
                x = [torch.from_numpy(np.ascontiguousarray(a[r:r + PATCH, c:c + PATCH].transpose(2, 0, 1)))[None].float()
                     for a in (hsi, msi, sar)]
                logits[r, c] = model(*x, target=True)[0, 1:].numpy().transpose(1, 2, 0)
    return logits


def test_kit_prepare_and_predict_authors_stitch_equal_the_authors_path(tmp_path, capsys):
    from c2seg_kit.synth.scenes import synthesize

    data = tmp_path / "data"
    synthesize(data, TRACKS["AB"], scale=SCALE, seed=3, progress=False)

    # A random HighDAN in the authors' three files (what their torch.save calls write).
    torch.manual_seed(0)
    model = HighDAN(paper())
    files = tmp_path / "authors"
    files.mkdir()
    for part, state in to_authors_state_dicts(model).items():
        torch.save(state, files / AUTHORS_FILES[part])

    # The kit's side: prepare (the paper's PCA per city, on all pixels) and predict --stitch authors.
    prep = tmp_path / "prepared"
    code, _, err = run_cli_in_process(capsys, "prepare", data, "--track", "AB", "--out", prep, "--pca-sample", "all")
    assert code == 0, err
    out = tmp_path / "predictions.h5"
    code, stdout, err = run_cli_in_process(
        capsys, "predict", "--checkpoint", files / "best_model.pth", "--data", prep, "--track", "AB", "--out", out,
        "--stitch", "authors", "--window", PATCH, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert f"authors {PATCH} px" in stdout
    with open_submission(out, track="AB") as sub:
        got = sub.read()

    # 1. Inputs: their preprocessing of Berlin equals the prepared cache's, up to float32 rounding.
    berlin = scipy.io.loadmat(str(data / "berlin_multimodal.mat"))
    theirs = {"hsi": band_normalisation(authors_pca(berlin["HSI"].astype(np.float32))).astype(np.float32),
              "msi": band_normalisation(patch_nan_like_their_beijing_script(berlin["MSI"].astype(np.float32))),
              "sar": band_normalisation(patch_nan_like_their_beijing_script(berlin["SAR"].astype(np.float32)))}
    assert np.isnan(berlin["SAR"]).any()  # the repair is exercised
    with PreparedData(prep) as prepared:
        city = prepared.city("berlin")
        h, w = city.shape
        kit = {m: city.read(m, 0, h, 0, w).transpose(1, 2, 0) for m in MODALITIES}
    assert (h, w) == (123, 41)
    with h5py.File(prep / "berlin.h5", "r") as f:
        for m in MODALITIES:
            bound = normalised_input_bound(f[m].attrs["norm_lo"], f[m].attrs["norm_hi"])
            off = np.abs(kit[m] - theirs[m]).max(axis=(0, 1))
            assert np.all(off <= bound), (m, off / EPS, bound / EPS)

    # 2. Model and stitch: their loop, with their model loaded from their files, on those inputs.
    # (On the inputs of step 1, a rounding-sized difference would pass through a network whose gain
    # is not known in advance: the comparison is split at the inputs, where it is exact up to EPS.)
    theirs_model = load_authors_model(files / "best_model.pth", files / "best_DA_1.pth", files / "best_DA_2.pth").eval()
    windows = authors_logits(theirs_model, kit["hsi"], kit["msi"], kit["sar"])
    logits = recover(windows, h, w)  # (h, w, 13)
    depth = accumulation_depth(theirs_model)
    bound = recover({k: np.full((PATCH, PATCH), EPS * depth * np.abs(v).max()) for k, v in windows.items()}, h, w)
    expected = logits.argmax(axis=-1) + 1
    assert len(np.unique(expected)) >= 4  # a map worth comparing, not one class everywhere
    # The kit's evaluation of a logit may differ from this one by `bound`: its label must be a class
    # whose logit here is within 2 x bound of the best; where the best two are further apart than
    # that (a decided pixel), it must be the best. A tiling, import or preprocessing difference
    # would change many decided pixels.
    top = logits.max(axis=-1)
    runner_up = np.sort(logits, axis=-1)[..., -2]
    decided = top - runner_up > 2 * bound
    assert decided.mean() > 0.98, decided.mean()  # the band is narrow: ~0.6 % of the pixels here
    np.testing.assert_array_equal(got[decided], expected[decided])
    got_logit = np.take_along_axis(logits, got[..., None].astype(np.intp) - 1, axis=-1)[..., 0]
    assert np.all(got_logit >= top - 2 * bound)


def test_predict_needs_the_authors_d0_beside_their_generator(tmp_path):
    files = tmp_path / "authors"
    files.mkdir()
    torch.save(to_authors_state_dicts(HighDAN(paper()))["generator"], files / "best_model.pth")
    prep = make_prepared(tmp_path / "AB")
    out = tmp_path / "p.h5"
    r = run_cli(["predict", "--checkpoint", str(files / "best_model.pth"), "--data", str(prep), "--track", "AB",
                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert_one_line_error(r, f"the authors' generator {files / 'best_model.pth'} needs its D0 file beside it "
                             "(best_DA_1.pth)")
    assert not out.exists()
