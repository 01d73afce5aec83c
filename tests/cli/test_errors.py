"""Every CLI error is one line (plus at most a hint), with a meaningful exit code; --debug shows the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from skybutler import Butler
from skybutler.cli import main
from skybutler.config import CONFIG_FILE, RepositoryConfig

SKYBUTLER = str(Path(sys.executable).with_name("skybutler"))


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors") / "repo"
    Butler.create(root).close()
    return root


@pytest.fixture
def repo(template_repo, tmp_path):
    import shutil

    shutil.copytree(template_repo, tmp_path / "repo")
    return tmp_path / "repo"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, exit_code=1):
    """The error text, after checking it is one line on stderr (the output holds nothing else)."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "expected a mapping of sections"),
    ("registry: {db: [\n", "is not valid YAML: line 2 column 1"),
    ("registry: {dbb: x}\n", "registry.dbb: unknown key"),
    ("registry: {sync_every_commit: maybe}\n", "registry.sync_every_commit: should be a valid boolean"),
    ("datastore: {root: 'ftp://host/dir'}\n", "Datastore root 'ftp://host/dir' (datastore.root): unsupported scheme "
                                              "ftp:// (supported: file://, memory://, s3://, or a local path)"),
])
def test_a_bad_configuration_file_is_one_line(repo, text, message):
    (repo / CONFIG_FILE).write_text(text)
    lines = one_line_error(invoke("config", "show", repo))
    assert len(lines) == 1 and message in lines[0]
    assert str(repo) in lines[0] or "(datastore.root)" in lines[0]


def test_a_missing_extra_is_one_line_with_the_install_command(repo, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed
    (repo / CONFIG_FILE).write_text("datastore: {root: 's3://bucket/repo'}\n")
    lines = one_line_error(invoke("config", "show", repo))
    assert lines == ["Error: the s3 datastore needs s3fs: pip install 'skybutler[s3]'"]


def test_an_unexpected_error_names_its_type_and_hints_at_debug(tmp_path):
    (tmp_path / "plain-file").write_text("")
    lines = one_line_error(invoke("create", tmp_path / "plain-file" / "repo"), exit_code=2)
    assert lines[0].startswith("Error: NotADirectoryError: ") and "plain-file" in lines[0]
    assert lines[1:] == ["Hint: run with --debug for the traceback"]


def test_debug_shows_the_traceback(repo):
    (repo / CONFIG_FILE).write_text("- a\n")
    result = invoke("--debug", "config", "show", repo)
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "ConfigError"  # raised, not turned into a line


def test_ctrl_c_exits_with_130(repo, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RepositoryConfig, "to_yaml", interrupted)
    result = invoke("config", "show", repo)
    assert result.exit_code == 130 and result.stderr == "Interrupted\n"


def test_the_real_entry_point_prints_one_line_and_exits_non_zero(repo):
    (repo / CONFIG_FILE).write_text("registry:\n  db: sqlite:///registry.sqlite3\n  colour: blue\n")
    done = subprocess.run([SKYBUTLER, "collection", "list", str(repo)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"Error: Invalid {repo / CONFIG_FILE}: registry.colour: unknown key"]
    done = subprocess.run([SKYBUTLER, "--debug", "collection", "list", str(repo)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "Traceback (most recent call last)" in done.stderr


def test_error_messages_never_show_a_password(repo):
    (repo / CONFIG_FILE).write_text("registry: {db: 'postgresql://me:hunter2secret@127.0.0.1:1/db'}\n")
    result = invoke("config", "show", repo)
    assert result.exit_code == 1 and "hunter2secret" not in result.output
    assert "me:***@" in result.output


def test_a_demo_over_a_directory_that_is_not_a_repository_is_one_line_and_changes_nothing(tmp_path):
    # (a demo over a finished or interrupted demo resumes it: see tests/demo)
    (tmp_path / "demo" / "repo").mkdir(parents=True)
    lines = one_line_error(invoke("demo", tmp_path / "demo"))
    assert lines == [f"Error: {tmp_path / 'demo' / 'repo'} exists but is not a repository; remove it or pick "
                     "another directory"]
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["repo"]
