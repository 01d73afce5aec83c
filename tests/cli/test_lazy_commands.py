"""The root group imports its commands on demand, and lists them as if it had imported them all."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from skybutler.cli import COMMANDS, main

HEAVY = ("numpy", "sqlalchemy", "pydantic", "fsspec", "astropy", "pyarrow")


def _imported_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after running ``code``."""
    probe = (f"{code}\nimport sys\n"
             f"print('heavy:', *sorted({{m.partition('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[-1].split()[1:]


def _run_cli(*args: str) -> str:
    return ("import sys\nfrom skybutler.cli import main\n"
            f"try:\n    main([{', '.join(map(repr, args))}])\nexcept SystemExit:\n    pass")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_registered_command_loads_under_its_own_name(name):
    cmd = main.get_command(click.Context(main), name)
    assert cmd is not None and cmd.name == name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_short_help_is_the_commands_own(name):
    # `skybutler --help` shows COMMANDS' text without importing the module: it must be the docstring's.
    cmd = main.get_command(click.Context(main), name)
    assert cmd is not None
    assert COMMANDS[name][1] == cmd.get_short_help_str(limit=10**6)


def test_the_lazy_listing_is_clicks_own():
    lazy = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    eager = click.Group(name=main.name, params=main.params, help=main.help,
                        context_settings=main.context_settings)
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None
        eager.add_command(command, name)
    assert lazy == CliRunner().invoke(eager, ["--help"], terminal_width=80).output


def test_root_help_and_version_import_no_layer():
    assert _imported_after(_run_cli("--help")) == []
    assert _imported_after(_run_cli("--version")) == []


@pytest.mark.parametrize("args", [("create", "--help"), ("query", "datasets", "--help"), ("demo", "--help"),
                                  ("serve", "--help"), ("batch", "--help"), ("pipeline", "--help"),
                                  ("ingest", "--help"), ("transfer", "--help"), ("export", "--help"),
                                  ("import", "--help")])
def test_a_commands_help_imports_no_heavy_library(args):
    assert _imported_after(_run_cli(*args)) == []
