"""`--help` that is consistent: every command and subcommand of `c2seg` is walked
(the lazy group's verbs, `admin`'s and `submissions`' subcommands included) and each option is
held to the same rules: it has help; its help never writes a default by hand (click shows it,
as `[default: ...]`); a non-flag option with a default shows it; an option read from a C2SEG_*
variable shows the variable; a track is taken through the registry's choice."""

from __future__ import annotations

import re

import click
import pytest

from c2seg_kit.cli import cli
from c2seg_kit.registry import TRACKS

pytest.importorskip("torch")  # train-baseline and predict must be walked too
pytest.importorskip("fastapi")  # serve and admin


def walk(group: click.Group, path: tuple[str, ...] = ("c2seg",)):
    """(path, command) for the group and every command below it."""
    yield path, group
    ctx = click.Context(group, info_name=path[-1])
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from walk(cmd, (*path, name))
        else:
            yield (*path, name), cmd


COMMANDS = dict(walk(cli))


def options():
    for path, cmd in COMMANDS.items():
        for param in cmd.params:
            if isinstance(param, click.Option):
                yield " ".join(path), param


def has_default(opt: click.Option) -> bool:
    default = opt.default
    return not (default is None or default is getattr(click.core, "UNSET", None) or default == ()
                or callable(default))


def test_the_walk_reaches_every_level():
    names = {" ".join(p) for p in COMMANDS}
    # the lazy group's verbs, both plugin packages' verbs, and the subcommands of both groups
    assert {"c2seg synth", "c2seg submit", "c2seg demo", "c2seg train-baseline", "c2seg predict", "c2seg serve",
            "c2seg admin", "c2seg admin add-team", "c2seg admin rescore", "c2seg admin hide",
            "c2seg submissions", "c2seg submissions select", "c2seg submissions edit"} <= names


def test_every_option_has_help():
    missing = [f"{path} {opt.opts[0]}" for path, opt in options() if not (opt.help or "").strip()]
    assert missing == []


def test_no_help_text_writes_a_default_by_hand():
    by_hand = [f"{path} {opt.opts[0]}: {opt.help}" for path, opt in options()
               if re.search(r"default", opt.help or "", re.IGNORECASE)]
    assert by_hand == []


def test_every_non_flag_option_with_a_default_shows_it():
    hidden = [f"{path} {opt.opts[0]} (default {opt.default!r})" for path, opt in options()
              if not opt.is_flag and has_default(opt) and not opt.show_default]
    assert hidden == []


def test_options_read_from_the_environment_show_the_variable():
    for path, opt in options():
        if opt.envvar:
            assert opt.show_envvar, f"{path} {opt.opts[0]} reads {opt.envvar} without saying so"
            assert str(opt.envvar).startswith("C2SEG_")


def test_every_track_comes_from_the_registry():
    found = []
    for path, cmd in COMMANDS.items():
        for param in cmd.params:
            if param.name in ("track", "track_name") or "--track" in getattr(param, "opts", ()):
                found.append(" ".join(path))
                assert isinstance(param.type, click.Choice), (path, param.name)
                assert sorted(param.type.choices) == sorted(TRACKS), (path, param.name)
    # the verbs that take a track, as an option or (admin phase) an argument
    assert {"c2seg synth", "c2seg prepare", "c2seg train-baseline", "c2seg predict", "c2seg leaderboard",
            "c2seg admin phase", "c2seg admin export"} <= set(found)


def test_help_pages_write_tracks_in_capitals(capsys):
    """AB and BW, never ab/bw, and no hand-written AB|BW list (the registry's choice shows them)."""
    from c2seg_kit.cli import main

    for path in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([*path[1:], "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert not re.search(r"(?<![\w/])(ab|bw)(?![\w/])", out), (path, out)  # a folder (runs/ab/) may
        # only click's own metavar of the registry's choice: [AB|BW] (an option), {AB|BW} (an argument)
        assert out.count("AB|BW") == out.count("[AB|BW]") + out.count("{AB|BW}"), (path, out)


def test_serve_shows_the_servers_own_defaults(monkeypatch):
    """serve repeats the server's defaults only so that --help can show them: they must agree."""
    import importlib

    from c2seg_server import edge
    from c2seg_server.cli import SERVE_DEFAULTS
    from c2seg_server.config import MB, Settings

    for name in list(__import__("os").environ):
        if name.startswith("C2SEG_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert SERVE_DEFAULTS["data_dir"] == str(settings.data_dir)
    assert SERVE_DEFAULTS["scoring_workers"] == settings.scoring_workers
    assert SERVE_DEFAULTS["quota_per_day"] == settings.quota_per_day
    assert SERVE_DEFAULTS["max_upload_mb"] * MB == settings.max_upload_bytes
    assert SERVE_DEFAULTS["max_connections_per_client"] == importlib.reload(edge).MAX_CONNECTIONS_PER_CLIENT
    shown = {o.name: o for o in COMMANDS[("c2seg", "serve")].params}
    for name in ("scoring_workers", "max_connections_per_client"):
        assert shown[name].default == SERVE_DEFAULTS[name] and shown[name].show_default is True
    # the data folder has no fixed default (the recorded one comes first): its help names the fallback
    assert shown["data_dir"].show_default.endswith(f"else {SERVE_DEFAULTS['data_dir']}")
    assert shown["quota"].default == SERVE_DEFAULTS["quota_per_day"]
    rescore = {o.name: o for o in COMMANDS[("c2seg", "admin", "rescore")].params}
    assert rescore["scoring_workers"].default == SERVE_DEFAULTS["scoring_workers"]


def test_the_prepared_cache_is_named_as_prepare_names_it():
    """prepare writes --out PREPARED_DIR; train-baseline and predict read --prepared PREPARED_DIR
    (--data, the older spelling, still works: test_baseline_train runs both)."""
    prepare_out = next(p for p in COMMANDS[("c2seg", "prepare")].params if p.name == "out_dir")
    assert prepare_out.metavar == "PREPARED_DIR"
    for verb in ("train-baseline", "predict"):
        data = next(p for p in COMMANDS[("c2seg", verb)].params if p.name == "data")
        assert data.opts == ["--prepared", "--data"] and data.metavar == "PREPARED_DIR", verb
