"""A synthetic C2Seg-like city pair, written in exactly the real scene-file layout.

Real C2Seg data cannot be downloaded here, so the kit brings a stand-in that poses the same
problem: segment 13 land-cover classes in a target city from a labelled source city.

What the generator models (and why):
- Land cover: every pixel has a true class 1..13 from smooth random class fields (coarse
  grid, bilinear, argmax), so regions are spatially coherent blobs tens to hundreds of
  pixels across, not pixel noise. Streets (class 2) are axis-aligned lines 2-3 px wide
  through urban blocks. Class frequencies differ per city (per-city class biases).
- Labels: the label raster is the true class map with unlabelled (0) patches cut out by a
  separate smooth field, as in the real reference data; images still show the true cover there.
- Spectra: one reflectance spectrum per class (smooth, with physically flavoured traits:
  water dark and falling, vegetation with a red edge), shared by both cities. MSI is the
  same spectrum sampled at 4 band centres (blue, green, red, NIR), so HSI and MSI agree.
  Pixels vary within a class by a smooth multiplicative field and noise. Where the HSI grid
  is coarser (BW, 30 m), a 30 m pixel mixes the spectra of the 3 x 3 pixels it covers.
- SAR: 2 polarisations, class-specific backscatter in dB, multiplicative gamma speckle
  (L looks) applied in linear power, then back to dB; a few NaN pixels, as in real Beijing.
- The cross-city shift (target city only; documented so results can be read):
  * spectral gain and offset: a smooth per-wavelength gain in [0.8, 1.2] and offset
    (+-0.02 reflectance), applied to HSI and, at its wavelengths, MSI;
  * illumination: a global factor (0.85) times a smooth field (+-10 %) over the city;
  * SAR calibration: +3 dB on both polarisations, and fewer looks (stronger speckle);
  * class frequencies: a different draw of class biases.
  A model trained on the source city alone loses accuracy on the target.

Writing streams row band by row band for the HDF5 (v7.3) layout, so a full-size BW pair
(several GB) never sits in memory. The MATLAB v5 layout (AB) has no random access, so each
variable is built whole (at most about 2 GB at full size, the v5 format's own limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from c2seg_kit.classes import NUM_CLASSES
from c2seg_kit.registry import City, Track

CELL = 24  # px per coarse-field cell: sets the typical region size
UNLABELLED_FRACTION = 0.2
MSI_WAVELENGTHS = ((450, 520), (520, 600), (630, 690), (770, 900))  # nm: B, G, R, NIR
# SAR class means in dB (VV, VH) for classes 1..13: water dark, built-up bright
SAR_DB = np.array(
    [(-22, -29), (-9, -16), (-4, -11), (-5, -12), (-9, -17), (-8, -15), (-11, -18),
     (-10, -17), (-11, -18), (-7, -13), (-8, -14), (-13, -21), (-15, -22)],
    dtype=np.float32,
)
VEGETATED = (6, 7, 8, 9, 10, 11, 13)
URBAN = (3, 4)


@dataclass(frozen=True)
class CityStyle:
    """How one city's sensors and land cover differ: the documented cross-city shift."""

    class_bias: np.ndarray  # (13,) log-frequency bias per class
    gain: np.ndarray  # (n_wavelengths,) multiplicative per wavelength
    offset: np.ndarray  # (n_wavelengths,) additive reflectance
    illumination: float
    sar_offset_db: float
    looks: int


def class_spectra(wavelengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(13, B) reflectance spectra, smooth in wavelength, one per class."""
    wl = (wavelengths - 400.0) / 2100.0  # 0..1 over 400-2500 nm
    spectra = np.empty((NUM_CLASSES, wl.size), dtype=np.float64)
    for k in range(NUM_CLASSES):
        cls = k + 1
        base = rng.uniform(0.08, 0.35)
        curve = np.full_like(wl, base)
        for _ in range(3):  # a few absorption/reflection features
            centre, width, amp = rng.uniform(0, 1), rng.uniform(0.03, 0.2), rng.uniform(-0.08, 0.08)
            curve += amp * np.exp(-0.5 * ((wl - centre) / width) ** 2)
        if cls in VEGETATED:  # red edge near 700 nm
            edge = 1.0 / (1.0 + np.exp(-(wavelengths - 715.0) / 12.0))
            curve = 0.04 + 0.5 * curve * (0.3 + rng.uniform(0.9, 1.6) * edge)
        if cls == 1:  # water: dark, falling with wavelength
            curve = 0.09 * np.exp(-3.0 * wl) + 0.01
        spectra[k] = curve
    return np.clip(spectra, 0.005, 0.9).astype(np.float32)


def make_style(rng: np.random.Generator, n_wavelengths: int, shifted: bool) -> CityStyle:
    bias = rng.normal(0.0, 0.6, NUM_CLASSES)
    bias[1] -= 0.5  # streets are drawn as lines; keep their blobs rare
    if not shifted:
        return CityStyle(bias, np.ones(n_wavelengths, np.float32), np.zeros(n_wavelengths, np.float32), 1.0, 0.0, 6)
    t = np.linspace(0, 1, n_wavelengths)
    gain = 1.0 + 0.2 * np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.5) + rng.uniform(0, 1)))
    offset = 0.02 * np.cos(2 * np.pi * (t * rng.uniform(0.5, 1.5) + rng.uniform(0, 1)))
    return CityStyle(bias, gain.astype(np.float32), offset.astype(np.float32), 0.85, 3.0, 2)


def _interp_rows_cols(field: np.ndarray, r0: int, r1: int, width: int, cell: int) -> np.ndarray:
    """Bilinear interpolation of a coarse (K, Hc, Wc) field onto rows r0..r1 and all columns."""
    def weights(start: int, stop: int, n: int):
        pos = np.clip((np.arange(start, stop) + 0.5) / cell - 0.5, 0, n - 1)
        i0 = np.minimum(pos.astype(np.int64), max(n - 2, 0))
        t = (pos - i0).astype(np.float32)
        return i0, np.minimum(i0 + 1, n - 1), t

    _, hc, wc = field.shape
    i0, i1, ti = weights(r0, r1, hc)
    rows = field[:, i0] * (1 - ti)[None, :, None] + field[:, i1] * ti[None, :, None]
    j0, j1, tj = weights(0, width, wc)
    return rows[:, :, j0] * (1 - tj) + rows[:, :, j1] * tj


class CitySynth:
    """Generates one city band by band; every band is a pure function of (seed, rows)."""

    def __init__(self, track: Track, city: City, shape: tuple[int, int], style: CityStyle,
                 spectra: np.ndarray, wavelengths: np.ndarray, seed: int):
        self.track, self.city, self.shape, self.style = track, city, shape, style
        self.spectra, self.wavelengths = spectra, wavelengths
        # each MSI band samples the HSI spectrum at the wavelength nearest its band centre
        self.msi_index = np.array([np.argmin(np.abs(wavelengths - (lo + hi) / 2)) for lo, hi in MSI_WAVELENGTHS])
        self.msi_spectra = spectra[:, self.msi_index]
        self.seed = seed
        rng = np.random.default_rng(seed)
        h, w = shape
        hc, wc = math.ceil(h / CELL) + 1, math.ceil(w / CELL) + 1
        # fields: 13 class fields, 1 unlabelled field, 1 brightness-variation field, 1 illumination field
        raw = rng.normal(size=(NUM_CLASSES + 3, hc, wc)).astype(np.float32)
        sigma = (0, 1.2, 1.2)
        fields = gaussian_filter(raw, sigma=sigma, mode="reflect")
        fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-6
        fields[:NUM_CLASSES] += style.class_bias[:, None, None].astype(np.float32)
        self.fields = fields
        self.unlabelled_threshold = float(np.quantile(fields[NUM_CLASSES], 1 - UNLABELLED_FRACTION))
        spacing = rng.integers(40, 90)
        self.street_rows = self._street_lines(h, spacing, rng)
        self.street_cols = self._street_lines(w, spacing, rng)
        self.nan_count = max(1, h * w // 200_000)
        rows, cols = rng.integers(0, h, self.nan_count), rng.integers(0, w, self.nan_count)
        self.nan_pixels = set(zip(rows.tolist(), cols.tolist(), strict=True))

    @staticmethod
    def _street_lines(n: int, spacing: int, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        pos = int(rng.integers(0, spacing))
        while pos < n:
            mask[pos : pos + int(rng.integers(2, 4))] = True
            pos += int(spacing + rng.integers(-spacing // 3, spacing // 3 + 1))
        return mask

    def band_rng(self, r0: int, what: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, r0, what])

    def cover(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(true class 1..13, label with 0s, brightness factor, illumination) for rows r0..r1."""
        w = self.shape[1]
        f = _interp_rows_cols(self.fields, r0, r1, w, CELL)
        true = (np.argmax(f[:NUM_CLASSES], axis=0) + 1).astype(np.uint8)
        urban = np.isin(true, URBAN)
        streets = (self.street_rows[r0:r1, None] | self.street_cols[None, :]) & urban
        true[streets] = 2
        label = np.where(f[NUM_CLASSES] > self.unlabelled_threshold, 0, true).astype(np.uint8)
        brightness = 1.0 + 0.08 * f[NUM_CLASSES + 1]
        illumination = self.style.illumination * (1.0 + 0.1 * np.tanh(f[NUM_CLASSES + 2]))
        return true, label, brightness.astype(np.float32), illumination.astype(np.float32)

    def optical(self, true: np.ndarray, brightness: np.ndarray, illumination: np.ndarray,
                spectra: np.ndarray, index: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
        """Reflectance (h/f, w/f, B): class spectra mixed over f x f blocks, varied, shifted."""
        h, w = true.shape
        hf, wf = -(-h // factor), -(-w // factor)
        if factor > 1:  # pad to whole blocks by repeating the edge, then mix class fractions
            pad = ((0, hf * factor - h), (0, wf * factor - w))
            true, brightness, illumination = (np.pad(a, pad, mode="edge") for a in (true, brightness, illumination))
            blocks = true.reshape(hf, factor, wf, factor).transpose(0, 2, 1, 3).reshape(hf, wf, -1)
            fractions = np.stack([(blocks == k + 1).mean(axis=-1) for k in range(NUM_CLASSES)], axis=-1)
            refl = fractions.astype(np.float32) @ spectra
            scale = (brightness * illumination).reshape(hf, factor, wf, factor).mean(axis=(1, 3))
        else:
            refl = spectra[true.astype(np.int64) - 1]
            scale = brightness * illumination
        refl = refl * scale[..., None] * self.style.gain[index] + self.style.offset[index]
        refl += rng.normal(0.0, 0.004, refl.shape).astype(np.float32)
        return refl.astype(np.float32)

    def hsi(self, true, brightness, illumination, r0) -> np.ndarray:
        idx = np.arange(self.wavelengths.size)
        return self.optical(true, brightness, illumination, self.spectra, idx, self.track.hsi_factor,
                            self.band_rng(r0, 1))

    def msi(self, true, brightness, illumination, r0) -> np.ndarray:
        return self.optical(true, brightness, illumination, self.msi_spectra, self.msi_index, 1, self.band_rng(r0, 2))

    def sar(self, true: np.ndarray, r0: int) -> np.ndarray:
        rng = self.band_rng(r0, 3)
        mean_db = SAR_DB[true.astype(np.int64) - 1] + self.style.sar_offset_db
        looks = self.style.looks
        speckle = rng.gamma(looks, 1.0 / looks, size=mean_db.shape).astype(np.float32)
        db = 10.0 * np.log10(np.maximum(10.0 ** (mean_db / 10.0) * speckle, 1e-6))
        for r, c in self.nan_pixels:
            if r0 <= r < r0 + true.shape[0]:
                db[r - r0, c, 1] = np.nan
        return db.astype(np.float32)


def city_shape(city: City, scale: float) -> tuple[int, int]:
    return tuple(max(16, int(round(n * scale))) for n in city.nominal_shape)  # type: ignore[return-value]


def build_cities(track: Track, scale: float, seed: int) -> list[CitySynth]:
    """Source and target generators sharing class spectra, the target with the shift."""
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(400.0, 2500.0, track.bands["hsi"])
    spectra = class_spectra(wavelengths, rng)
    cities = []
    for i, city in enumerate(track.cities):
        style = make_style(np.random.default_rng([seed, i, 7]), wavelengths.size, shifted=(i == 1))
        cities.append(CitySynth(track, city, city_shape(city, scale), style, spectra, wavelengths, seed * 1000 + i))
    return cities


def band_rows(track: Track) -> int:
    """Rows generated at once: whole HSI rows on the track's grid. The noise of a band is seeded by
    its first row, so every writer of a city (scene files, tiles) must use these same bands."""
    return 64 * track.hsi_factor


def band_starts(height: int, band: int):
    """(r0, r1) of consecutive row bands covering [0, height)."""
    for r0 in range(0, height, band):
        yield r0, min(r0 + band, height)


def write_city_v5(gen: CitySynth, data_dir: Path, progress, label_sink: np.ndarray | None) -> None:
    """MATLAB v5: the format has no random access, so each variable is assembled whole."""
    from c2seg_kit.io.matfile import write_mat_v5

    h, w = gen.shape
    out = {
        "HSI": np.empty((h, w, gen.wavelengths.size), np.float32),
        "MSI": np.empty((h, w, 4), np.float32),
        "SAR": np.empty((h, w, 2), np.float32),
        "label": np.empty((h, w), np.uint8),
    }
    for r0, r1 in band_starts(h, band_rows(gen.track)):
        true, label, bright, illum = gen.cover(r0, r1)
        out["HSI"][r0:r1] = gen.hsi(true, bright, illum, r0)
        out["MSI"][r0:r1] = gen.msi(true, bright, illum, r0)
        out["SAR"][r0:r1] = gen.sar(true, r0)
        out["label"][r0:r1] = label
        if label_sink is not None:
            label_sink[r0:r1] = label
        progress.update(r1 - r0)
    write_mat_v5(data_dir / gen.city.scene_file, out)


def write_city_v73(gen: CitySynth, data_dir: Path, progress, label_sink: np.ndarray | None) -> None:
    """MATLAB v7.3: streamed band by band; HSI on the 1/f grid, labels in their own file."""
    from c2seg_kit.io.matfile import MatV73Writer

    h, w = gen.shape
    f = gen.track.hsi_factor
    band = band_rows(gen.track)
    scene_path = data_dir / gen.city.scene_file
    label_path = data_dir / gen.city.label_file
    with MatV73Writer(scene_path) as scene, MatV73Writer(label_path) as labels:
        scene.create("HSI", (-(-h // f), -(-w // f), gen.wavelengths.size), np.float32, rows_per_chunk=64)
        scene.create("MSI", (h, w, 4), np.float32, rows_per_chunk=band)
        scene.create("SAR", (h, w, 2), np.float32, rows_per_chunk=band)
        labels.create("label", (h, w), np.uint8, rows_per_chunk=band)
        for r0, r1 in band_starts(h, band):
            true, label, bright, illum = gen.cover(r0, r1)
            scene.write_rows("HSI", r0 // f, gen.hsi(true, bright, illum, r0))
            scene.write_rows("MSI", r0, gen.msi(true, bright, illum, r0))
            scene.write_rows("SAR", r0, gen.sar(true, r0))
            labels.write_rows("label", r0, label)
            if label_sink is not None:
                label_sink[r0:r1] = label
            progress.update(r1 - r0)


def synthesize(out_dir: str | Path, track: Track, scale: float = 0.1, seed: int = 0,
               progress: bool = True) -> dict[str, Path]:
    """Write a synthetic source/target pair in the track's scene-file layout plus labels.h5.

    Returns the written paths by role ("source", "target", "labels", and the label files).
    """
    from tqdm.auto import tqdm

    from c2seg_kit.submission.writers import write_labels

    if not (0 < scale <= 4):
        raise ValueError(f"--scale must be in (0, 4], got {scale}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = write_city_v5 if track.mat_format == "v5" else write_city_v73
    gens = build_cities(track, scale, seed)
    written: dict[str, Path] = {}
    target_label = np.empty(gens[1].shape, np.uint8)  # uint8: 54 MB at full Wuhan size
    for role, gen in zip(("source", "target"), gens, strict=True):
        with tqdm(total=gen.shape[0], desc=f"{gen.city.display} {gen.shape[0]}x{gen.shape[1]}",
                  unit="row", disable=not progress, leave=False) as bar:
            writer(gen, out, bar, target_label if role == "target" else None)
        written[role] = out / gen.city.scene_file
        if gen.city.label_file != gen.city.scene_file:
            written[f"{role}_label"] = out / gen.city.label_file
    labels_path = out / "labels.h5"
    write_labels(labels_path, target_label, track.name)
    written["labels"] = labels_path
    return written
