"""`c2seg prepare`: from a city's raw rasters to the cache the baseline and the datasets read.

pipeline (the verb: both layouts, the manifest) <- scene_city / tile_city (one city each) <- steps
(options, reports) <- pca (the exact and the authors' solvers), repair (NaN/inf/nodata), and cache
(the prepared cache's reader, which the baseline imports).
"""
