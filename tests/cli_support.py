"""The `c2seg` entry point in-process, as the CLI tests drive it."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

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


@contextlib.contextmanager
def _environment(env: dict | None, cwd) -> Iterator[None]:
    """os.environ replaced by `env` (when given) and the working folder by `cwd`, then restored."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update({k: str(v) for k, v in env.items()})
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(saved_env)


def cli_in_process(args, *, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``c2seg ARGS`` through the real entry point in this interpreter, answered as
    ``subprocess.run(..., env=env, cwd=cwd, capture_output=True, text=True)`` would answer for a
    fresh one: exit code, stdout, stderr. Warnings are shown on stderr as a fresh interpreter shows
    them (Python's default filters, not the test runner's); the environment, the working folder and
    the thread count torch runs with are restored afterwards. Where the fresh interpreter is what
    is tested (which modules a command imports, signals, the exit of a process), start one."""
    args = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    code = 0
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), _environment(env, cwd):
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
