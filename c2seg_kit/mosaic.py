"""Where each tile lies in its scene, from the tiles' own georeferencing.

The challenge's test tiles are GeoTIFFs cut from one scene; when every tile carries a north-up
georeferencing (an origin and a pixel size, :class:`c2seg_kit.io.geotiff.GeoRef`) in one CRS and
on one pixel grid, each tile's offset in the scene is (origin - the westmost / northmost origin)
/ pixel size, a whole number of pixels. Anything else (a tile without georeferencing, another
pixel size or CRS, an offset between pixels, a pixel so small or tiles so far apart that the
scene would be more than :data:`MAX_SCENE_SIDE` pixels a side) is refused in one line: the tiles
cannot be placed.

>>> shape, at = tile_placements({"0": georef0, "1": georef1}, {"0": (256, 256), "1": (256, 256)})
>>> at["1"]   # (row, column) of tile 1's pixel (0, 0) in the scene
"""

from __future__ import annotations

from collections.abc import Mapping

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.io.geotiff import GeoRef

#: How far from a whole pixel an offset may be (rounding in the tie points) and still count as one.
PIXEL_TOLERANCE = 1e-3
#: The widest scene a mosaic may span, in pixels a side (the largest city is 13,474 px high).
MAX_SCENE_SIDE = 1 << 20


def _whole(value: float, what: str) -> int:
    if not abs(value) <= MAX_SCENE_SIDE:  # also NaN and infinity (a pixel of 5e-324 m, say)
        raise InvalidDataError(f"{what} lies {value:.3g} pixels from the scene's corner, more than the "
                               f"{MAX_SCENE_SIDE} a mosaic may span: its georeferencing (pixel size, tie point) "
                               "cannot be placed")
    n = round(value)
    if abs(value - n) > PIXEL_TOLERANCE:
        raise InvalidDataError(f"{what} lies {value:.3f} pixels from the scene's corner, not a whole number: "
                               "the tiles are not on one pixel grid")
    return int(n)


def tile_placements(georefs: Mapping[str, GeoRef | None], shapes: Mapping[str, tuple[int, int]]
                    ) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """``((H, W) of the scene the tiles cover, {id: (row, column) of the tile's pixel (0, 0)})``."""
    if not georefs:
        raise InvalidDataError("no tiles to place")
    origins: dict[str, tuple[float, float]] = {}
    first: GeoRef | None = None
    for tile_id, geo in georefs.items():
        if geo is None or geo.origin is None or geo.pixel_size is None:
            raise InvalidDataError(f"tile {tile_id} carries no georeferencing (tie point and pixel size), "
                                   "so the tiles cannot be placed in a mosaic")
        if first is None:
            first = geo
        if geo.epsg != first.epsg:
            raise InvalidDataError(f"tile {tile_id} is in EPSG:{geo.epsg}, another tile in EPSG:{first.epsg}")
        sx, sy = geo.pixel_size
        if not (sx > 0 and sy > 0) or abs(sx - first.pixel_size[0]) > 1e-9 * sx or abs(sy - first.pixel_size[1]) > 1e-9 * sy:
            raise InvalidDataError(f"tile {tile_id} has pixels of {sx:g} x {sy:g}, another tile {first.pixel_size[0]:g} x "
                                   f"{first.pixel_size[1]:g}: the tiles are not on one pixel grid")
        origins[tile_id] = geo.origin
    sx, sy = first.pixel_size  # type: ignore[union-attr]
    west = min(x for x, _ in origins.values())
    north = max(y for _, y in origins.values())
    placements = {t: (_whole((north - y) / sy, f"tile {t}"), _whole((x - west) / sx, f"tile {t}"))
                  for t, (x, y) in origins.items()}
    height = max(r + shapes[t][0] for t, (r, _) in placements.items())
    width = max(c + shapes[t][1] for t, (_, c) in placements.items())
    if max(height, width) > MAX_SCENE_SIDE:
        raise InvalidDataError(f"the tiles would span {height} x {width} pixels, more than the {MAX_SCENE_SIDE} a side "
                               "a mosaic may: their georeferencing cannot be placed")
    return (height, width), placements
