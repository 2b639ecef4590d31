"""Shared fixtures: tiny synthetic cities in the real layouts, and their prepared caches.

Everything is generated from seeds at test time (c2seg_kit.synth), so no data is committed.
"""

from __future__ import annotations

import os

import pytest

# keep torch and BLAS from oversubscribing CI's 2 cores when tests run in one process
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synth_ab(tmp_path_factory):
    """A tiny AB pair (MATLAB v5): Augsburg ~89x136, Berlin ~246x81, plus labels.h5."""
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth import synthesize

    out = tmp_path_factory.mktemp("synth_ab")
    synthesize(out, TRACKS["AB"], scale=0.1, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_bw(tmp_path_factory):
    """A tiny BW pair (MATLAB v7.3, HSI at 1/3): Beijing ~269x174, Wuhan ~125x173, plus labels.h5."""
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth import synthesize

    out = tmp_path_factory.mktemp("synth_bw")
    synthesize(out, TRACKS["BW"], scale=0.02, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_ab(synth_ab, tmp_path_factory):
    """The prepared cache of `synth_ab`."""
    from c2seg_kit.prepare import prepare
    from c2seg_kit.registry import TRACKS

    out = tmp_path_factory.mktemp("prepared_ab")
    prepare(synth_ab, TRACKS["AB"], out, progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_bw(synth_bw, tmp_path_factory):
    from c2seg_kit.prepare import prepare
    from c2seg_kit.registry import TRACKS

    out = tmp_path_factory.mktemp("prepared_bw")
    prepare(synth_bw, TRACKS["BW"], out, progress=False)
    return out
