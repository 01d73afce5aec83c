"""The ``skybutler`` command line: thin click commands over the library.

Each command lives in a ``*_cmds`` module that imports only what its own options need;
`COMMANDS` names them, and the root group imports a module when one of its commands
is asked for (click's "lazy loading of subcommands"). So ``skybutler --help`` imports
no layer of the library, and ``skybutler COMMAND ...`` only what COMMAND needs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .._version import __version__
from ..errors import SkyButlerError

# Command name -> ("module:attribute" of the click command or group, its short help).
# The short help is what ``skybutler --help`` lists without importing the module;
# tests/cli/test_lazy_commands.py keeps it equal to the command's own docstring.
COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("batch_cmds:batch_group",
              "Batch processing: campaigns run as shared-nothing jobs on an engine (local or Parsl)."),
    "collection": ("repo_cmds:collection", "List and define collections (RUN, TAGGED, CHAINED, CALIBRATION)."),
    "config": ("repo_cmds:config", "Show the configuration in force."),
    "create": ("repo_cmds:create", "Create a new repository in REPO."),
    "demo": ("demo_cmds:demo", "Make synthetic HSC-like data and run the 8-step DMTN-059 pipeline on it."),
    "export": ("dump_cmds:export",
               "Export datasets of REPO to a portable dump at DEST (a new directory, or a path ending in .zip)."),
    "get": ("repo_cmds:get", "Copy one dataset's file to OUTPUT."),
    "import": ("dump_cmds:import_", "Import a dump (directory or .zip made by `skybutler export`) into REPO."),
    "import-daf-butler": ("daf_cmds:import_daf_butler", "Import daf_butler content into REPO: an export file "
                          "EXPORT_YAML, or a repository with --repo."),
    "ingest": ("repo_cmds:ingest", "Register existing FILES (or a --table of files) as datasets in RUN."),
    "ingest-origin": ("repo_cmds:ingest_origin",
                      "Where ingested datasets came from: original path or URL, plugin and header metadata."),
    "insert-dimensions": ("repo_cmds:insert_dimensions", "Insert dimension records from FILE."),
    "migrate": ("migrate_cmds:migrate", "Upgrade the registry of REPO to the schema of this skybutler."),
    "pipeline": ("pipeline_cmds:pipeline_group",
                 "Pipelines: show a pipeline file, build its quantum graph, run the graph."),
    "provenance": ("provenance_cmds:provenance_group", "Provenance: the execution that made a dataset, its "
                   "ancestors and descendants, PROV export."),
    "query": ("repo_cmds:query", "Query datasets, data ids and dimension records."),
    "rebuild": ("integrity_cmds:rebuild", "Recreate the lost registry of REPO from its files and run manifests."),
    "register-dataset-type": ("repo_cmds:register_dataset_type", "Register dataset type NAME with DIMENSIONS (e.g."),
    "remove-runs": ("repo_cmds:remove_runs", "Delete RUNS with all their datasets, files and execution records."),
    "retrieve": ("transfer_cmds:retrieve", "Copy the files of datasets (all types, or DATASET_TYPE...) out of REPO "
                 "into the directory DEST."),
    "serve": ("web_cmds:serve", "Serve a read-only web view of the repository REPO until Ctrl-C."),
    "transfer": ("transfer_cmds:transfer", "Copy datasets (all types, or DATASET_TYPE...) from SOURCE_REPO into "
                 "DEST_REPO, with what they need."),
    "verify": ("integrity_cmds:verify", "Check that every registered file of REPO is there, whole and unchanged, "
               "and nothing else is."),
}

DEBUG_HINT = "run with --debug for the traceback"


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, secrets hidden (a library message may quote a URL or an option)."""
    from ..config import redact_text  # pydantic: only when an error is shown

    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return redact_text(text)


class _Group(click.Group):
    """Every error is one line (no traceback unless --debug) with a non-zero exit code.

    A `SkyButlerError` (a user mistake, explained by its message) exits with 1; any
    other exception (a bug, or the system refusing something) is named by its type,
    with a hint to rerun with ``--debug``, and exits with 2; Ctrl-C exits with 130.
    Click's own usage errors keep click's handling (exit code 2, usage shown).

    Commands are those of `COMMANDS`, each imported when first asked for.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(f"{__name__}.{module}"), attr), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the short help of `COMMANDS` for the commands not imported yet."""
        listed = [(name, self.commands.get(name)) for name in self.list_commands(ctx)]
        listed = [(name, cmd) for name, cmd in listed if cmd is None or not cmd.hidden]
        if not listed:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in listed)
        # A command not imported yet is shortened by click's own rule, from the text in COMMANDS.
        rows = [(name, (cmd or click.Command(name, help=COMMANDS[name][1])).get_short_help_str(limit))
                for name, cmd in listed]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
@click.version_option(__version__, package_name="skybutler")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
def main(debug: bool) -> None:
    """skybutler: a data repository and batch processing for survey pipelines.

    Start with `skybutler create REPO`, then `skybutler --help` on any command.
    Every command that takes REPO accepts the repository directory (the one
    holding skybutler.yaml). Errors are one line; `skybutler --debug COMMAND ...`
    shows the traceback.
    """


__all__ = ["COMMANDS", "main"]
