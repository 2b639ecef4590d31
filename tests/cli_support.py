"""The `c2seg` entry point in-process, as the CLI tests drive it."""

from __future__ import annotations

import pytest

from c2seg_kit.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``c2seg ARGS`` through the real entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err
