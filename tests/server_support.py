"""What the in-process server tests share: a labels file of a module's label array and the
scoring pool that serves it (one per module: starting worker processes costs seconds).

A module that names this file in its ``pytest_plugins`` and defines a ``label_array`` fixture and
a ``SPLIT`` dict gets the fixtures ``labels_file`` and ``pool`` from here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from c2seg_kit.submission.writers import write_labels


def write_labels_file(tmp_path_factory, label_array: np.ndarray, track: str = "AB") -> Path:
    """``label_array`` as the labels file of ``track``, in a fresh temporary folder."""
    path = tmp_path_factory.mktemp("labels") / f"labels_{track.lower()}.h5"
    write_labels(path, label_array, track)
    return path


@contextmanager
def scoring_pool(labels_file: Path, split: dict) -> Iterator:
    """The server's scoring pool (one worker) for ``labels_file`` with the split settings ``split``."""
    from c2seg_server.config import Settings
    from c2seg_server.main import make_pool, served_tracks

    settings = Settings(labels=[labels_file], scoring_workers=1, **split)
    with make_pool(settings, served_tracks(settings.labels)) as pool:
        yield pool


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory, label_array):
    """The module's ``label_array`` as track AB's labels file."""
    return write_labels_file(tmp_path_factory, label_array)


@pytest.fixture(scope="module")
def pool(request, labels_file):
    """The scoring pool of ``labels_file`` on the module's ``SPLIT`` settings."""
    with scoring_pool(labels_file, request.module.SPLIT) as p:
        yield p
