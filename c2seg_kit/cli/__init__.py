"""The `c2seg` command line: one click group whose verbs live in small modules.

The core's own verbs are listed in CORE_COMMANDS. The baseline's and the server's verbs live in
their own packages and join through the ``c2seg.commands`` entry points that pyproject.toml
declares, so the core never names those packages. Every verb is imported only when it is used
(or its help is shown), so `c2seg validate` never pays for torch or fastapi, and a missing
optional extra is reported in one line instead of breaking the whole CLI.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import sys

import click

from c2seg_kit import __version__
from c2seg_kit.errors import C2SegError

#: Entry-point group through which the baseline and server packages add their verbs.
ENTRY_POINT_GROUP = "c2seg.commands"

# verb -> "module:attribute"; one row per verb, grouped by the module that owns it.
CORE_COMMANDS: dict[str, str] = {
    "synth": "c2seg_kit.cli.data:synth",
    "info": "c2seg_kit.cli.data:info",
    "prepare": "c2seg_kit.cli.data:prepare",
    "export": "c2seg_kit.cli.data:export",
    "validate": "c2seg_kit.cli.scoring:validate",
    "score": "c2seg_kit.cli.scoring:score",
    "render": "c2seg_kit.cli.scoring:render",
    "pack": "c2seg_kit.cli.packing:pack",
    "unpack": "c2seg_kit.cli.packing:unpack",
    "submit": "c2seg_kit.cli.participant:submit",
    "attach-model": "c2seg_kit.cli.participant:attach_model",
    "leaderboard": "c2seg_kit.cli.participant:leaderboard",
    "me": "c2seg_kit.cli.account:me",
    "submissions": "c2seg_kit.cli.account:submissions",
    "demo": "c2seg_kit.cli.demo:demo",
}


@functools.cache
def plugin_commands() -> dict[str, str]:
    """Verbs other packages of the distribution register: name -> "module:attribute". Read once per
    process: every lookup of a verb asks (twice per command line, once per verb for --help), and
    scanning the installed distributions' entry points is the slow part."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def all_commands() -> dict[str, str]:
    return {**plugin_commands(), **CORE_COMMANDS}


# a missing import -> the extra that brings it, so the light install explains itself
EXTRA_OF_MODULE = {
    "torch": "baseline",
    **dict.fromkeys(("fastapi", "starlette", "sqlalchemy", "uvicorn", "pydantic", "pydantic_settings", "jinja2",
                     "multipart", "python_multipart", "psycopg", "alembic"), "server"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, target in all_commands().items() if self._importable(target))

    @staticmethod
    def _importable(target: str) -> bool:
        try:
            return importlib.util.find_spec(target.split(":")[0]) is not None
        except ModuleNotFoundError:  # a parent package is missing
            return False

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = all_commands().get(name)
        if target is None or not self._importable(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """As click's, but a mistyped verb gets a suggestion, as a mistyped option does."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each verb with the whole first sentence of its help, wrapped rather than cut off."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="c2seg")
def cli() -> None:
    """Tools for the C2Seg cross-city multimodal segmentation benchmark.

    Data: synth, info, prepare, export. Scoring: validate, score, render. Tiles: pack, unpack. Baseline:
    train-baseline, predict, import-weights. Leaderboard: serve, admin, submit, attach-model, leaderboard, me,
    submissions. Start with `c2seg demo` to see the whole path on synthetic data.
    """


def fail(message: str) -> NoReturn:  # noqa: F821
    """Print a one-line explanation on stderr and exit 1 (a user mistake). The message may carry
    text from a server or a file: control characters and bidi controls are shown as escapes."""
    from c2seg_kit.text import for_terminal

    click.echo(f"error: {for_terminal(message)}", err=True)
    sys.exit(1)


def missing_extra_hint(extra: str, module: str) -> str:
    """The one line for a verb whose extra is not installed, with both ways to install it: the
    quoted path works in a clone of the repository, the name only from the package index."""
    return (f"this command needs the '{extra}' extra ({module} is missing): in a clone of the repository "
            f"pip install \".[{extra}]\", or from the package index pip install \"c2seg-kit[{extra}]\"")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes (C2SegError) become one line on stderr and exit 1."""
    try:
        # standalone_mode=False hands exceptions to us; ctx.exit(n) comes back as n.
        rv = cli.main(args=argv, prog_name="c2seg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:  # usage errors keep click's formatting and exit 2
        e.show()
        sys.exit(e.exit_code)
    except C2SegError as e:
        fail(str(e))
    except ModuleNotFoundError as e:
        extra = EXTRA_OF_MODULE.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        fail(missing_extra_hint(extra, e.name or ""))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # disk full, permission denied, ...: the user's environment, not a bug
        if isinstance(e, (BrokenPipeError,)):
            sys.exit(1)
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    sys.exit(rv if isinstance(rv, int) else 0)
