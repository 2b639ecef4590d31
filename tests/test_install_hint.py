"""Installing the right thing: a verb whose extra is not installed says, in one line, how to
install it both from a clone of the repository (a path) and from the package index (the
distribution's name); the participants' page's install pins the CPU torch first."""

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


def test_participants_install_pins_the_cpu_torch_first_and_names_the_gpu_way():
    """Where participants read how to install, the pinned CPU torch comes before the baseline extra
    (an unpinned torch pulls a multi-GB CUDA build), with the pin the Makefile uses, and the GPU
    alternative is said there too."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = root / "docs" / "participants.md"
    section = page.read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    pin = re.search(r"^TORCH_PIN \?= (\S+)$", (root / "Makefile").read_text(), re.M).group(1)
    assert f"pip install {pin}" in commands
    assert commands.index(f"pip install {pin}") < commands.index('pip install ".[baseline]"')
    assert "CUDA build of torch" in section and "GPU" in section
