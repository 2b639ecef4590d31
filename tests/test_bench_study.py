"""The domain-adaptation study's closing summary (bench/study_da.py): with one seed the spread is
undefined and said to be, never printed as a zero."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def study():
    path = Path(__file__).resolve().parents[1] / "bench" / "study_da.py"
    spec = importlib.util.spec_from_file_location("study_da", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_seed_has_no_spread(study):
    lines = study.summary({"source-only": [0.30], "HighDAN": [0.35], "HighDAN-noDice": [0.33]})
    text = "\n".join(lines)
    assert "0.0000" not in text and "std n/a (one seed)" in text
    rows = [line for line in lines if line.startswith("HighDAN ")]
    assert rows and "n/a (one seed)" in rows[0]
    assert "t =" not in text  # no test statistic over one pair


def test_several_seeds_give_the_sample_spread(study):
    lines = study.summary({"source-only": [0.30, 0.32], "HighDAN": [0.35, 0.39], "HighDAN-noDice": [0.33, 0.31]})
    row = next(line for line in lines if line.startswith("HighDAN "))
    assert "0.0283" in row  # stdev(0.35, 0.39)
    assert "n/a" not in "\n".join(lines)
