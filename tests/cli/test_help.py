"""Every command explains itself: --help works and says something for every command and group."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from skybutler.cli import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    # list_commands / get_command, not group.commands: the root group imports its commands on demand.
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"`skybutler {' '.join((*prefix, name))}` is listed but cannot be loaded"
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


ALL = list(_commands(main))


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help(path, command):
    assert command.help and len(command.help.strip()) > 20, f"`skybutler {' '.join(path)}` needs a docstring"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_main_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    for name in ("create", "ingest", "query", "remove-runs"):
        assert name in result.output


def test_every_command_is_in_the_readme():
    # The README is the operator's first page: every command (and sub-command) appears in it
    # as `skybutler <path>` somewhere, so nothing exists only behind --help.
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [" ".join(path) for path, cmd in ALL
               if not isinstance(cmd, click.Group) and f"skybutler {' '.join(path)}" not in readme]
    assert not missing, f"commands missing from README.md: {', '.join(missing)}"


def test_main_help_lists_every_group_and_command():
    result = CliRunner().invoke(main, ["--help"])
    for name in main.list_commands(click.Context(main)):
        assert name in result.output
