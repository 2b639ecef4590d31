"""The data verbs from the command line: output, JSON, and one-line errors with exit 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from cli_support import run_cli as run


def test_info_json_matches_files(capsys, synth_ab):
    code, out, err = run(capsys, "info", str(synth_ab), "--track", "AB", "--json")
    assert code == 0, err
    info = json.loads(out)
    berlin = info["berlin"]
    mat = scipy.io.loadmat(synth_ab / "berlin_multimodal.mat")
    assert berlin["shape"] == list(mat["label"].shape)
    assert berlin["label_histogram"] == np.bincount(mat["label"].ravel(), minlength=14).tolist()
    assert berlin["modalities"]["sar"]["nan"] == int(np.isnan(mat["SAR"]).sum()) > 0
    assert berlin["modalities"]["hsi"]["bands"] == 242


def test_info_table(capsys, synth_bw):
    code, out, _ = run(capsys, "info", str(synth_bw), "--track", "BW")
    assert code == 0
    assert "beijing (source, MATLAB v7.3 (HDF5))" in out and "HSI grid 1/3" in out and "Surface water" in out


def test_prepare_cli(capsys, synth_ab, tmp_path):
    code, out, err = run(capsys, "prepare", str(synth_ab), "--track", "AB", "--out", str(tmp_path / "p"), "--quiet")
    assert code == 0, err
    assert "non-finite repaired" in out and (tmp_path / "p" / "manifest.json").is_file()


def test_synth_cli(capsys, tmp_path):
    code, out, err = run(capsys, "synth", str(tmp_path), "--track", "BW", "--scale", "0.01", "--quiet")
    assert code == 0, err
    assert (tmp_path / "wuhan.mat").is_file() and (tmp_path / "labels.h5").is_file()


@pytest.mark.parametrize("args,message", [
    (["info", "{missing}", "--track", "AB"], "does not exist"),
    (["info", "{empty}", "--track", "AB"], "expected scene files augsburg_multimodal.mat"),
    # prepare and info share one rule for what a data folder holds (c2seg_kit/io/locate.py), hence one message
    (["prepare", "{empty}", "--track", "BW", "--out", "{tmp}/o"], "expected scene files beijing.mat and wuhan.mat"),
    (["info", "{broken}", "--track", "AB"], "not a readable MATLAB"),
    (["prepare", "{empty}", "--track", "AB", "--out", "{tmp}/o", "--percentiles", "90", "10"], "percentiles"),
])
def test_user_mistakes_are_one_line(capsys, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "augsburg_multimodal.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "broken": tmp_path / "broken", "tmp": tmp_path}
    code, out, err = run(capsys, *[a.format(**paths) for a in args])
    assert code in (1, 2)
    assert message in err
    assert "Traceback" not in err
    if code == 1:
        assert len(err.strip().splitlines()) == 1


def test_unknown_track_is_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "info", str(tmp_path), "--track", "XY")
    assert code == 2 and "XY" in err


def test_light_core_imports_no_torch_or_fastapi():
    """The participant's light install must not need torch or fastapi: import every core module."""
    import subprocess
    import sys

    code = (
        "import pkgutil, importlib, sys, c2seg_kit\n"
        "for m in pkgutil.walk_packages(c2seg_kit.__path__, 'c2seg_kit.'):\n"
        "    if m.name != 'c2seg_kit.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "from c2seg_kit.cli import cli\n"
        "for verb in ('synth', 'info', 'prepare', 'validate', 'score', 'render', 'submit', 'leaderboard'):\n"
        "    cli.get_command(None, verb)\n"
        "bad = sorted(n for n in ('torch', 'fastapi', 'sqlalchemy', 'uvicorn', 'sklearn') if n in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_prepare_on_tiles_explains(capsys, tmp_path):
    # prepare reads tiles (it used to refuse them): a tile folder without tiles is one line
    (tmp_path / "C2Seg_AB" / "train" / "msi").mkdir(parents=True)
    code, _, err = run(capsys, "prepare", str(tmp_path), "--track", "AB", "--out", str(tmp_path / "o"))
    assert code == 1 and "expected hsi, msi, sar tiles in" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# Simulates the light install: torch, fastapi & co. cannot be imported in the child process.
BLOCK_EXTRAS = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'fastapi', 'sqlalchemy', 'uvicorn', 'sklearn', 'pydantic_settings'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "from c2seg_kit.cli import main\n"
    "main()\n"
)


@pytest.mark.parametrize("args,code,expect", [
    (["--help"], 0, "validate"),
    (["validate", "--help"], 0, "PREDICTIONS"),
    (["train-baseline", "--data", "x", "--track", "AB", "--out", "y"], 1, "'baseline' extra"),
    (["import-weights", "x", "--prepared", "x", "--track", "AB", "--out", "y"], 1, "'baseline' extra"),
    (["serve", "--labels", "x"], 1, "'server' extra"),
])
def test_light_install_cli(args, code, expect):
    """In a fresh interpreter without the extras, the CLI works and names the missing extra."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS, *args], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    assert expect in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_core_names_neither_the_baseline_nor_the_server_package():
    """Imports go one way: the baseline and server verbs join through entry points, so no file of
    the core names c2seg_baseline or c2seg_server, not even for a lazy import."""
    from pathlib import Path

    import c2seg_kit

    root = Path(c2seg_kit.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "c2seg_baseline" in p.read_text() or "c2seg_server" in p.read_text()]
    assert offenders == []


def test_plugin_verbs_come_from_entry_points():
    from c2seg_kit.cli import CORE_COMMANDS, all_commands, plugin_commands

    plugins = plugin_commands()
    assert {"train-baseline", "predict", "serve", "admin"} <= set(plugins)
    assert not set(plugins) & set(CORE_COMMANDS)
    assert all(target.startswith(("c2seg_baseline.", "c2seg_server.")) for target in plugins.values())
    assert set(all_commands()) == set(plugins) | set(CORE_COMMANDS)


def test_mistyped_verb_gets_a_suggestion(capsys):
    code, _, err = run(capsys, "sumbit", "x.h5")
    assert code == 2 and "No such command 'sumbit'. Did you mean 'submit'?" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "No such command 'frobnicate'." in err and "Did you mean" not in err


def test_top_level_help_shows_every_verb_in_full(capsys):
    """No verb's description is cut off with '...': each shows its whole first sentence."""
    from c2seg_kit.cli import LazyGroup, cli

    code, out, _ = run(capsys, "--help")
    assert code == 0 and "..." not in out.split("Commands:")[1]
    flat = "".join(out.split())  # wrapping may break lines at spaces and after hyphens
    for name in LazyGroup.list_commands(cli, None):
        first = cli.get_command(None, name).get_short_help_str(limit=1_000)
        assert "".join(f"{name} {first}".split()) in flat, name
        assert name in out.split("Commands:")[0], f"{name} missing from the overview"
