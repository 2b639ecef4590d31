"""The kit's error family.

Every error a user can cause derives from :class:`C2SegError`; the CLI prints its message on
one line and exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class C2SegError(Exception):
    """A problem with the user's input, explained in one line."""


class DatasetNotFoundError(C2SegError, FileNotFoundError):
    """Expected scene or tile files are missing; the message names what and where."""


class InvalidDataError(C2SegError, ValueError):
    """A data file exists but its content is unusable (wrong variables, shapes, labels...)."""


class InvalidSubmissionError(C2SegError, ValueError):
    """A prediction file is refused; the message says why in one line."""
