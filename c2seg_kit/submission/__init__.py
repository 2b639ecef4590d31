"""The submission file (``predictions.h5``) and the hidden-labels file (``labels.h5``),
docs/formats.md: their rules, safe readers, writers, packing and scoring.

The modules, each importing only those listed before it:

- :mod:`~c2seg_kit.submission.formats`: format names, root attributes, the two layouts (scene,
  tiles), size rules, and the readers' base class;
- :mod:`~c2seg_kit.submission.scene_readers` and :mod:`~c2seg_kit.submission.tile_readers`:
  the checked readers of each layout (the tile rules: ids, counts);
- :mod:`~c2seg_kit.submission.readers`: ``open_submission``, ``open_labels`` and
  ``open_class_raster``, which pick the reader a file's format and layout call for;
- :mod:`~c2seg_kit.submission.writers` and :mod:`~c2seg_kit.submission.tile_writers`: atomic,
  streaming writers of each layout, which read back what they wrote;
- :mod:`~c2seg_kit.submission.pack_files`: `c2seg pack` and `unpack` (class images <-> a
  tile-layout file);
- :mod:`~c2seg_kit.submission.score_files`: a submission scored against labels, and the report
  files of `c2seg score`.

The names most users need are importable from here:

>>> from c2seg_kit.submission import open_submission, write_submission
"""

from c2seg_kit.submission.formats import LABELS_FORMAT, SUBMISSION_FORMAT
from c2seg_kit.submission.readers import open_class_raster, open_labels, open_submission, submission_track
from c2seg_kit.submission.scene_readers import Labels, Submission
from c2seg_kit.submission.score_files import score_files
from c2seg_kit.submission.tile_readers import TileLabels, TileSubmission
from c2seg_kit.submission.tile_writers import (
    tile_labels_writer,
    tile_submission_writer,
    write_tile_labels,
    write_tile_submission,
)
from c2seg_kit.submission.writers import submission_writer, write_labels, write_submission

__all__ = [
    "LABELS_FORMAT",
    "SUBMISSION_FORMAT",
    "Labels",
    "Submission",
    "TileLabels",
    "TileSubmission",
    "open_class_raster",
    "open_labels",
    "open_submission",
    "score_files",
    "submission_track",
    "submission_writer",
    "tile_labels_writer",
    "tile_submission_writer",
    "write_labels",
    "write_submission",
    "write_tile_labels",
    "write_tile_submission",
]
