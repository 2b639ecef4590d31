"""Synthetic C2Seg-like data (real data cannot be downloaded everywhere): scenes (the scene files
of both tracks) and tile_sets (challenge-style GeoTIFF tile folders and zips built from them)."""
