"""The `c2seg` entry point in-process, as the CLI tests drive it."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import warnings

import pytest

from c2seg_kit.cli import main

#: Python's warning filters when started without -W options: what a user's terminal shows.
_PYTHON_DEFAULT_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                           ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                           ("ignore", ResourceWarning, ""))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``c2seg ARGS`` through the real entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def cli_in_process(args) -> subprocess.CompletedProcess:
    """``c2seg ARGS`` through the real entry point in this interpreter, answered as
    ``subprocess.run(..., capture_output=True, text=True)`` would answer for a fresh one: exit code,
    stdout, stderr. Warnings are shown on stderr as a fresh interpreter shows them (Python's
    default filters, not the test runner's), and the thread count torch runs with is restored."""
    args = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    code = 0
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.resetwarnings()
        for action, category, module in reversed(_PYTHON_DEFAULT_FILTERS):
            warnings.filterwarnings(action, category=category, module=module)
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                err.write(f"{e.code}\n")
        finally:
            torch = sys.modules.get("torch")
            if torch is not None and threads is not None and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return subprocess.CompletedProcess(["c2seg", *args], code, out.getvalue(), err.getvalue() + shown)
