"""The C2Seg scene registry (docs/data.md) as data: tracks, cities, modalities, files.

Readers and the synthetic generator look things up here instead of branching on the track.
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("hsi", "msi", "sar")


@dataclass(frozen=True)
class City:
    name: str  # lower-case machine name, also the prepared cache's file stem
    display: str
    nominal_shape: tuple[int, int]  # H x W on the 10 m grid, as the reference loader uses
    scene_file: str  # the file holding HSI, MSI, SAR
    label_file: str  # the file holding `label` (same as scene_file for AB)


@dataclass(frozen=True)
class Track:
    name: str  # "AB" or "BW"
    source: City  # labels given
    target: City  # labels hidden
    bands: dict  # modality -> band count in the distributed files
    mat_format: str  # "v5" (scipy.io) or "v7.3" (HDF5, axes reversed)
    hsi_factor: int  # the HSI grid is this many times coarser than MSI/SAR
    tile_dir: str  # challenge GeoTIFF tiles folder
    tile_side: int  # the largest side (px) of the distributed tiles
    test_tiles: int  # how many test tiles the distribution has (the target city's)

    @property
    def cities(self) -> tuple[City, City]:
        return (self.source, self.target)

    def city(self, name: str) -> City:
        for c in self.cities:
            if c.name == name.lower():
                return c
        raise ValueError(f"track {self.name} has no city {name!r}; expected one of {[c.name for c in self.cities]}")


TRACKS: dict[str, Track] = {
    "AB": Track(
        name="AB",
        source=City("augsburg", "Augsburg", (886, 1360), "augsburg_multimodal.mat", "augsburg_multimodal.mat"),
        target=City("berlin", "Berlin", (2465, 811), "berlin_multimodal.mat", "berlin_multimodal.mat"),
        bands={"hsi": 242, "msi": 4, "sar": 2},
        mat_format="v5",
        hsi_factor=1,
        tile_dir="C2Seg_AB",
        tile_side=128,
        test_tiles=140,
    ),
    "BW": Track(
        name="BW",
        source=City("beijing", "Beijing", (13474, 8706), "beijing.mat", "beijing_label.mat"),
        target=City("wuhan", "Wuhan", (6225, 8670), "wuhan.mat", "wuhan_label.mat"),
        bands={"hsi": 116, "msi": 4, "sar": 2},
        mat_format="v7.3",
        hsi_factor=3,
        tile_dir="C2Seg_BW",
        tile_side=256,
        test_tiles=850,
    ),
}


def track_names() -> str:
    """"AB, BW": the known tracks, as messages list them."""
    return ", ".join(sorted(TRACKS))


def get_track(name: str) -> Track:
    """The track called ``name`` in any case ("ab" is AB); ValueError naming the known ones else.
    The one check of a track a caller names (writers, readers, training, prediction); the CLI's
    ``--track`` offers exactly these names as its choices."""
    if isinstance(name, str) and name.upper() in TRACKS:
        return TRACKS[name.upper()]
    raise ValueError(f"unknown track {name!r}; expected one of {track_names()}")
