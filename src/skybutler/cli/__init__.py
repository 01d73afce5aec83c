"""The ``skybutler`` command line: thin click commands over the library."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import SkyButlerError
from . import repo_cmds


class _Group(click.Group):
    """Turns every user-facing skybutler error into one clear line and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SkyButlerError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="skybutler")
def main() -> None:
    """skybutler: a data repository and batch processing for survey pipelines.

    Start with `skybutler create REPO`, then `skybutler --help` on any command.
    Every command that takes REPO accepts the repository directory (the one
    holding skybutler.yaml).
    """


for command in repo_cmds.COMMANDS:
    main.add_command(command)


def _attach_optional() -> None:
    # Command groups of later layers; each module defines one click group.
    import importlib

    for module, attr in (("pipeline_cmds", "pipeline_group"), ("provenance_cmds", "provenance_group"),
                         ("ops_cmds", "COMMANDS"), ("batch_cmds", "batch_group"), ("demo_cmds", "demo")):
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
