"""A verb whose extra is not installed says, in one line, how to install it both from a clone of
the repository (a path) and from the package index (the distribution's name)."""

from __future__ import annotations

import click
import pytest

import c2seg_kit.cli as cli_mod


@pytest.mark.parametrize("module,extra", [("fastapi", "server"), ("uvicorn.protocols", "server"), ("torch", "baseline")])
def test_missing_extra_names_the_clone_and_the_index_install(monkeypatch, capsys, module, extra):
    @click.command()
    def needs_extra() -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    monkeypatch.setattr(cli_mod, "cli", needs_extra)
    with pytest.raises(SystemExit) as exc:
        cli_mod.main([])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"needs the '{extra}' extra ({module} is missing)" in err
    assert f'pip install ".[{extra}]"' in err  # from a clone
    assert f'pip install "c2seg-kit[{extra}]"' in err  # from the package index


def test_a_module_of_no_extra_is_not_blamed_on_one(monkeypatch):
    """A missing module that no extra brings is a bug, not an install hint."""

    @click.command()
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nosuchthing'", name="nosuchthing")

    monkeypatch.setattr(cli_mod, "cli", broken)
    with pytest.raises(ModuleNotFoundError):
        cli_mod.main([])
