"""Side by side: the authors' own preprocessing and prediction against the kit's `prepare` +
`import-weights` + `predict --stitch authors`, on the same synthetic AB pair and the same
checkpoint, with each PCA solver. Prints how many of Berlin's labels agree.

The authors' side runs their repository's code unmodified, in a side environment with their
library versions (scikit-learn 1.3.2, numpy 1.26; torch for their network, CPU):

- ``data/dataset.py``'s ``getdata('augsburg', patch, 0.5, 4, pca_flag=True, band_norm_flag=True,
  aug_flag=False)`` after their ``main()``'s seeding (``np.random.seed(0)``, ``random.seed(0)``,
  ``torch.manual_seed(0)``): PCA of Augsburg, then of Berlin, on numpy's global stream, then their
  min-max per band and their test windows. It reads ``data/data1/*.mat`` from the working folder,
  so the scene files are linked there. For the run forced to the exact solver, the module's
  ``PCA`` name is bound to scikit-learn's PCA with ``svd_solver='full'`` (their file is not
  touched). The modules their files import only to augment and to plot (imgaug, skimage,
  matplotlib, PIL) are stand-ins when the side environment lacks them: nothing here calls them.
- their ``networks/HighDAN.py`` ``HighResolutionNet`` and ``networks/discriminator.py``, loaded
  from the three files with ``load_state_dict(strict=True)``, in eval mode; their test loop's lines
  (``model(x, y, z, model_DA, 'target')``, argmax over outputs 1..13 plus one) and their
  ``utils/pyt_utils.py`` ``patch_concat`` to put the windows back together. (Their ``recover``
  hard-codes Berlin's full size and zeroes unlabelled pixels; every pixel is compared here.)

The checkpoint: a randomly initialised kit HighDAN at paper settings (``torch.manual_seed(0)``)
saved in the authors' three-file layout, as the kit's import tests make it.

Two scenes, both made from a `c2seg synth` AB pair at ``--scale`` (default 0.2: Augsburg
177 x 272, Berlin 493 x 162, 242 HSI bands): each city's HSI is rebuilt from its 8 strongest
principal components (the land cover), noise is added under them and the whole is
integer-scaled (x 10,000: values around 2,000, as the challenge's HSI is); MSI and SAR stay,
their NaN pixels repaired by the mean of their neighbours (their AB code repairs none; the real
AB files have none, a synthetic city a few):

- ``flat``: white noise, a quarter of the 8th eigenvalue, in every band: a flat tail, so
  components 9-12 nearly tie (their eigenvalues a few tenths of a percent apart);
- ``spread``: noise along random orthonormal axes, the first a quarter of the 8th eigenvalue,
  each next one 0.8 x the one before: components 9-12 some 20 % apart.

For each scene, the kit prepares the pair twice (``--pca-solver exact`` and ``authors``), imports
the checkpoint into each cache and predicts Berlin with the authors' tiling (``--window`` px, no
overlap); the authors' side runs twice (their call as it is, and forced to the exact solver). Every
step is timed. Then the label agreement of the pairs that matter, over all of Berlin's pixels,
and how far apart the PCA components are (largest difference per component, |cos|).

    .venv/bin/python bench/authors_side_by_side.py --authors /tmp/RSE_Cross-city --side-python /tmp/side/bin/python

The side environment, made once (``slidingwindow`` and ``h5py`` are what ``data/dataset.py``
imports besides):

    python3 -m venv /tmp/side
    /tmp/side/bin/pip install scikit-learn==1.3.2 numpy==1.26.4 scipy==1.11.4 torch h5py slidingwindow==0.0.14

Nothing of the authors' repository is copied into this one: it is read from ``--authors``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCENES = ("flat", "spread")
STRONG = 8  # principal components kept from the synthetic HSI
NOISE = 0.25  # the noise's (largest) variance, as a fraction of the 8th eigenvalue
RATIO = 0.8  # spread scene: each noise axis's variance over the previous one's
SCALE_TO_INTEGERS = 10000.0  # reflectance to integer-scaled values


# ---------------------------------------------------------------------------------------------
# The authors' side: runs under the side interpreter, imports nothing of the kit.

def authors_side(repo: str, scene: str, weights: str, out: str, solver: str, patch: int) -> None:
    import functools
    import random
    import types

    import scipy.io
    import torch

    times = {}
    t0 = time.perf_counter()
    for name, attrs in (("imgaug", ("augmenters",)), ("skimage", ("color",)), ("matplotlib", ("pyplot", "use")),
                        ("PIL", ("Image",))):
        try:
            __import__(name)
        except ImportError:  # imported by their files for augmentation and plots only: never called here
            module = types.ModuleType(name)
            for attr in attrs:
                stand_in = types.ModuleType(f"{name}.{attr}")
                stand_in.__getattr__ = lambda _name: (lambda *a, **k: None)
                setattr(module, attr, stand_in)
                sys.modules[f"{name}.{attr}"] = stand_in
            sys.modules[name] = module
    sys.path.insert(0, repo)
    from data import dataset
    from networks.discriminator import FCDiscriminator, OutspaceDiscriminator
    from networks.HighDAN import HighResolutionNet
    from sklearn import __version__ as sklearn_version
    from sklearn.decomposition import PCA
    from utils.pyt_utils import patch_concat

    fitted = []

    class Recorded(PCA):
        """scikit-learn's PCA as their module calls it, keeping what each fit found."""

        def fit_transform(self, x, y=None):
            result = super().fit_transform(x, y)
            fitted.append({"components": self.components_.copy(), "mean": self.mean_.copy(),
                           "solver": self._fit_svd_solver})
            return result

    dataset.PCA = Recorded if solver == "auto" else functools.partial(Recorded, svd_solver=solver)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="authors-side-"))
    (work / "data" / "data1").mkdir(parents=True)
    for name in ("augsburg_multimodal.mat", "berlin_multimodal.mat"):
        os.symlink(Path(scene, name).resolve(), work / "data" / "data1" / name)
    os.chdir(work)
    times["imports"] = time.perf_counter() - t0

    # their main(): seeding, then the data
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    _, _, test_loader, num_classes, band = dataset.getdata("augsburg", patch, 0.5, 4, True, True, False)
    times["read_data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = HighResolutionNet(band, num_classes)
    model.load_state_dict(torch.load(Path(weights, "best_model.pth"), weights_only=True), strict=True)
    model_da = torch.nn.ModuleList([FCDiscriminator(num_classes=720 * 3), OutspaceDiscriminator(num_classes=num_classes)])
    model_da[0].load_state_dict(torch.load(Path(weights, "best_DA_1.pth"), weights_only=True), strict=True)
    model_da[1].load_state_dict(torch.load(Path(weights, "best_DA_2.pth"), weights_only=True), strict=True)
    model.eval()
    model_da.eval()
    times["model"] = time.perf_counter() - t0

    # their test loop
    t0 = time.perf_counter()
    labels, margins = [], []
    with torch.no_grad():
        for x, y, z, _ in test_loader:
            _, output_label = model(x, y, z, model_da, "target")
            pred = output_label.cpu().detach().numpy().transpose(0, 2, 3, 1)
            labels.append(np.asarray(np.argmax(pred[:, :, :, 1:], axis=3), dtype=np.uint8) + 1)
            top2 = np.sort(pred[:, :, :, 1:], axis=3)[..., -2:]
            margins.append(top2[..., 1] - top2[..., 0])
    h, w = scipy.io.loadmat(str(Path(scene, "berlin_multimodal.mat")), variable_names=["label"])["label"].shape
    rows, cols = -(-h // patch), -(-w // patch)  # as their recover() lays the windows out

    def whole(windows):
        return patch_concat(np.array(windows).reshape(cols, rows, patch, patch), h, w, patch).numpy()

    prediction, margin = whole(labels), whole(margins)
    times["predict"] = time.perf_counter() - t0
    np.savez(out, prediction=prediction, margin=margin,
             **{f"{city}_{key}": np.asarray(fit[key]) for city, fit in zip(("augsburg", "berlin"), fitted, strict=True)
                for key in ("components", "mean", "solver")})
    print(json.dumps({"times": times, "windows": len(labels), "shape": [int(h), int(w)],
                      "versions": f"scikit-learn {sklearn_version}, numpy {np.__version__}, torch {torch.__version__}",
                      "solvers": [fit["solver"] for fit in fitted]}))


# ---------------------------------------------------------------------------------------------
# The kit's side and the comparison: run under the kit's interpreter.

def retail(hsi: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The city's HSI reduced to its STRONG strongest principal components (the land cover), noise
    added under them, integer-scaled (rounded). ``flat``: white noise, NOISE x the STRONG-th
    eigenvalue in every band. ``spread``: noise along random orthonormal axes whose variances start
    there and fall by RATIO from one axis to the next."""
    x = hsi.reshape(-1, hsi.shape[-1]).astype(np.float64)
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    top = vectors[:, ::-1][:, :STRONG]
    floor = NOISE * values[::-1][STRONG - 1]
    kept = mean + ((x - mean) @ top) @ top.T
    if kind == "flat":
        noise = rng.normal(0.0, np.sqrt(floor), kept.shape)
    else:
        axes, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
        noise = (rng.normal(size=kept.shape) * np.sqrt(floor * RATIO ** np.arange(x.shape[1]))) @ axes.T
    return np.rint((kept + noise) * SCALE_TO_INTEGERS).reshape(hsi.shape).astype(np.float32)


def repair_nan(x: np.ndarray) -> np.ndarray:
    """Each NaN pixel of a band replaced by the mean of its four neighbours (as their Beijing script
    does; their Augsburg and Berlin files have none, and their AB code repairs none)."""
    for r, c, b in zip(*np.nonzero(np.isnan(x)), strict=True):
        x[r, c, b] = np.nanmean([x[max(r - 1, 0), c, b], x[min(r + 1, x.shape[0] - 1), c, b],
                                 x[r, max(c - 1, 0), b], x[r, min(c + 1, x.shape[1] - 1), b]])
    return x


def make_scene(folder: Path, kind: str, scale: float, seed: int) -> dict:
    import scipy.io

    from c2seg_kit.io.matfile import write_mat_v5
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth.scenes import synthesize

    t0 = time.perf_counter()
    synthesize(folder, TRACKS["AB"], scale=scale, seed=seed, progress=False)
    seconds = {"synth": time.perf_counter() - t0}
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, SCENES.index(kind)])
    for city in TRACKS["AB"].cities:
        path = folder / city.scene_file
        scene = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
        scene["HSI"] = retail(scene["HSI"], kind, rng)
        scene["MSI"], scene["SAR"] = repair_nan(scene["MSI"]), repair_nan(scene["SAR"])
        path.unlink()  # this run's own file, rewritten
        write_mat_v5(path, scene)
    seconds[f"{kind} tail"] = time.perf_counter() - t0
    return seconds


def spectrum(folder: Path, city_file: str, k: int = 12) -> list[float]:
    """The first k eigenvalues of the city's HSI covariance, relative to the first (float64)."""
    import scipy.io

    x = scipy.io.loadmat(str(folder / city_file), variable_names=["HSI"])["HSI"]
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    values = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1][:k]
    return values.tolist()


def hsi_mean(folder: Path, city: str) -> np.ndarray:
    import scipy.io

    x = scipy.io.loadmat(str(folder / f"{city}_multimodal.mat"), variable_names=["HSI"])["HSI"]
    return x.reshape(-1, x.shape[-1]).astype(np.float64).mean(axis=0)


def c2seg(*args) -> float:
    """Run `c2seg ARGS` in a fresh interpreter; its wall time."""
    from common import C2SEG  # bench/common.py (this script's folder leads sys.path)

    t0 = time.perf_counter()
    r = subprocess.run([*C2SEG, *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"c2seg {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    for line in r.stderr.splitlines():
        if line.startswith("warning"):
            print(f"    ({line})")
    return time.perf_counter() - t0


def kit_side(scene: Path, weights: Path, work: Path, solver: str, patch: int) -> tuple[np.ndarray, dict, Path]:
    from c2seg_kit.submission import open_submission

    prep, ckpt, out = work / f"prep-{solver}", work / f"authors-{solver}.pt", work / f"pred-{solver}.h5"
    times = {"prepare": c2seg("prepare", scene, "--track", "AB", "--out", prep, "--pca-solver", solver,
                              "--no-progress"),
             "import-weights": c2seg("import-weights", weights, "--prepared", prep, "--track", "AB", "--out", ckpt),
             "predict": c2seg("predict", "--checkpoint", ckpt, "--prepared", prep, "--track", "AB", "--out", out,
                              "--stitch", "authors", "--window", patch, "--device", "cpu", "--threads", 1,
                              "--no-progress")}
    with open_submission(out, track="AB") as sub:
        return sub.read(), times, prep


def components(prep: Path, city: str) -> np.ndarray:
    import h5py

    with h5py.File(prep / f"{city}.h5", "r") as f:
        return f["pca_components"][()].T  # (k, C), as scikit-learn's components_


def compare_components(ours: np.ndarray, theirs: np.ndarray) -> str:
    diff = np.abs(ours - theirs).max(axis=1)
    cos = np.abs(np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1))
    return (f"largest difference per component {' '.join(f'{d:.1e}' for d in diff)}; "
            f"|cos| {' '.join(f'{c:.3f}' for c in cos)}")


def agreement(a: np.ndarray, b: np.ndarray, margin: np.ndarray | None = None) -> str:
    same = a == b
    text = f"{same.sum():,} of {same.size:,} labels ({100 * same.mean():.1f} %)"
    if margin is not None and not same.all():
        m = margin[~same]
        text += (f"; the authors' top-two logit margin where they differ: median {np.median(m):.2e}, "
                 f"max {m.max():.2e} (over all pixels: median {np.median(margin):.2e})")
    return text


def run_scene(kind: str, args, weights: Path, root: Path) -> None:
    scene = root / kind / "data"
    seconds = make_scene(scene, kind, args.scale, args.seed)
    print(f"\n== {kind} scene ({', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())})")
    for city_file in ("augsburg_multimodal.mat", "berlin_multimodal.mat"):
        values = np.array(spectrum(scene, city_file))
        gaps = 100 * (values[:-1] - values[1:]) / values[:-1]
        print(f"  {city_file.split('_')[0]}: eigenvalue gaps (j, j+1) in %, j = 1..11: "
              f"{' '.join(f'{g:.2f}' for g in gaps)}")
    theirs = {}
    for solver in ("auto", "full"):
        out = root / kind / f"authors-{solver}.npz"
        t0 = time.perf_counter()
        r = subprocess.run([args.side_python, __file__, "--authors-side", args.authors, scene, weights, out, solver,
                            str(args.window)], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"the authors' side failed:\n{r.stdout}\n{r.stderr}")
        report = json.loads(r.stdout.strip().splitlines()[-1])
        theirs[solver] = dict(np.load(out))
        print(f"  authors, svd_solver={solver!r} ({report['versions']}; fitted {'/'.join(report['solvers'])}): "
              f"{time.perf_counter() - t0:.1f} s in all: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in report["times"].items())
              + f" ({report['windows']} windows of {args.window} px over {report['shape'][0]} x {report['shape'][1]})")
    ours, prepared = {}, {}
    for solver in ("exact", "authors"):
        prediction, times, prep = kit_side(scene, weights, root / kind, solver, args.window)
        ours[solver], prepared[solver] = prediction, prep
        print(f"  kit, --pca-solver {solver}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
        for city in ("augsburg", "berlin"):
            target = theirs["auto" if solver == "authors" else "full"]
            print(f"    {city} PCA vs the authors' ({'randomized' if solver == 'authors' else 'forced exact'}): "
                  f"{compare_components(components(prep, city), target[f'{city}_components'])}")
    for city in ("augsburg", "berlin"):
        print(f"    {city}: the authors' randomized PCA vs the exact one (the kit's): "
              f"{compare_components(theirs['auto'][f'{city}_components'], components(prepared['exact'], city))}")
        print(f"    {city}: numpy's float32 mean (theirs) is off the float64 one by up to "
              f"{np.abs(theirs['auto'][f'{city}_mean'] - hsi_mean(scene, city)).max():.3g}")
    print(f"  kit exact vs the authors' pipeline:          "
          f"{agreement(ours['exact'], theirs['auto']['prediction'], theirs['auto']['margin'])}")
    print(f"  kit --pca-solver authors vs the authors':    "
          f"{agreement(ours['authors'], theirs['auto']['prediction'], theirs['auto']['margin'])}")
    print(f"  the authors' forced exact vs kit exact:      "
          f"{agreement(theirs['full']['prediction'], ours['exact'], theirs['full']['margin'])}")
    print(f"  the authors' pipeline vs their forced exact: "
          f"{agreement(theirs['auto']['prediction'], theirs['full']['prediction'])}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--authors-side":
        authors_side(*sys.argv[2:7], int(sys.argv[7]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors", required=True, help="a checkout of the authors' repository (RSE_Cross-city)")
    p.add_argument("--side-python", required=True, help="the side environment's interpreter (see above)")
    p.add_argument("--scale", type=float, default=0.2, help="`c2seg synth --scale` of the AB pair")
    p.add_argument("--seed", type=int, default=0, help="`c2seg synth --seed`")
    p.add_argument("--window", type=int, default=128, help="prediction window (their AB training patch: 128)")
    p.add_argument("--scene", choices=SCENES, action="append", help="(repeatable; default: both)")
    p.add_argument("--work", type=Path, default=None, help="folder for the scenes, caches and predictions "
                   "(default: a new temporary folder, kept)")
    args = p.parse_args()
    if not Path(args.authors, "data", "dataset.py").is_file():
        sys.exit(f"{args.authors} holds no data/dataset.py: not a checkout of the authors' repository")
    import torch

    from c2seg_baseline.config import paper
    from c2seg_baseline.importer import AUTHORS_FILES, to_authors_state_dicts
    from c2seg_baseline.model import HighDAN

    root = args.work or Path(tempfile.mkdtemp(prefix="authors-side-by-side-"))
    root.mkdir(parents=True, exist_ok=True)
    weights = root / "weights"
    weights.mkdir(exist_ok=True)
    torch.manual_seed(0)
    for part, state in to_authors_state_dicts(HighDAN(paper())).items():
        torch.save(state, weights / AUTHORS_FILES[part])
    print(f"work folder {root}; scale {args.scale}, window {args.window} px; load {os.getloadavg()[0]:.1f}")
    for kind in args.scene or SCENES:
        run_scene(kind, args, weights, root)


if __name__ == "__main__":
    main()
