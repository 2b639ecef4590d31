"""Writing a challenge scene the way MATLAB v7.3 stores it (raw h5py, axes reversed), for the
scene readers' and the prepare pipeline's tests."""

from __future__ import annotations

import h5py
import numpy as np


def write_bw_city(folder, city, h, w, seed=0, hsi_bands=116, nan_at=None, extra_cells=(0, 0)):
    """MATLAB v7.3 layout written with raw h5py: axes reversed, HSI on the ceil(n/3) grid (+ extra cells)."""
    rng = np.random.default_rng(seed)
    hc, wc = -(-h // 3) + extra_cells[0], -(-w // 3) + extra_cells[1]
    hsi = rng.random((hc, wc, hsi_bands)).astype(np.float32)  # MATLAB order H x W x C
    msi = rng.random((h, w, 4)).astype(np.float32)
    sar = rng.normal(size=(h, w, 2)).astype(np.float32)
    if nan_at is not None:
        sar[nan_at] = np.nan
    label = rng.integers(0, 14, (h, w)).astype(np.uint8)
    with h5py.File(folder / city.scene_file, "w") as f:
        f["HSI"] = hsi.transpose(2, 1, 0)
        f["MSI"] = msi.transpose(2, 1, 0)
        f["SAR"] = sar.transpose(2, 1, 0)
    with h5py.File(folder / city.label_file, "w") as f:
        f["label"] = label.T
    return {"hsi": hsi, "msi": msi, "sar": sar, "label": label}
