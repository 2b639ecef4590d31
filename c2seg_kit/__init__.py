"""c2seg-kit: the C2Seg cross-city multimodal segmentation benchmark toolkit.

The core never imports torch or fastapi at module level, so the light install (readers,
metrics, submission format, CLI client) works without them.
"""

__version__ = "0.1.0"
