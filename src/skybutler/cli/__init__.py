"""The ``skybutler`` command line: thin click commands over the library."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..config import redact_text
from ..errors import SkyButlerError
from . import repo_cmds

DEBUG_HINT = "run with --debug for the traceback"


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, secrets hidden (a library message may quote a URL or an option)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return redact_text(text)


class _Group(click.Group):
    """Every error is one line (no traceback unless --debug) with a non-zero exit code.

    A `SkyButlerError` (a user mistake, explained by its message) exits with 1; any
    other exception (a bug, or the system refusing something) is named by its type,
    with a hint to rerun with ``--debug``, and exits with 2; Ctrl-C exits with 130.
    Click's own usage errors keep click's handling (exit code 2, usage shown).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.secho("Interrupted", fg="red", err=True)
            sys.exit(130)
        except SkyButlerError as exc:
            if _debug(ctx):
                raise
            click.secho(f"Error: {_one_line(exc)}", fg="red", err=True)
            sys.exit(1)
        except Exception as exc:
            if _debug(ctx):
                raise
            message = _one_line(exc)
            click.secho(f"Error: {type(exc).__name__}{': ' + message if message else ''}", fg="red", err=True)
            click.echo(f"Hint: {DEBUG_HINT}", err=True)
            sys.exit(2)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("debug"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="skybutler")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
def main(debug: bool) -> None:
    """skybutler: a data repository and batch processing for survey pipelines.

    Start with `skybutler create REPO`, then `skybutler --help` on any command.
    Every command that takes REPO accepts the repository directory (the one
    holding skybutler.yaml). Errors are one line; `skybutler --debug COMMAND ...`
    shows the traceback.
    """


for command in repo_cmds.COMMANDS:
    main.add_command(command)


def _attach_optional() -> None:
    # Command groups of later layers; each module defines one click group.
    import importlib

    for module, attr in (("pipeline_cmds", "pipeline_group"), ("provenance_cmds", "provenance_group"),
                         ("ops_cmds", "COMMANDS"), ("batch_cmds", "batch_group"), ("demo_cmds", "demo"),
                         ("integrity_cmds", "COMMANDS"),
                         ("migrate_cmds", "COMMANDS"),
                         ("dump_cmds", "COMMANDS"),
                         ("transfer_cmds", "COMMANDS"),
                         ("daf_cmds", "COMMANDS"),
                         ("web_cmds", "COMMANDS")):
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue
            raise
        obj = getattr(mod, attr)
        for cmd in obj if isinstance(obj, list) else [obj]:
            main.add_command(cmd)


_attach_optional()

__all__ = ["main"]
