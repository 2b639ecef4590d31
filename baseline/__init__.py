"""HighDAN baseline (installed as c2seg_baseline)."""
