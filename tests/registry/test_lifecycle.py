"""Creating and opening registries: lost, damaged or foreign databases, and a create that fails half-way."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from skybutler import Butler, ConfigError, RepositoryNotFoundError, SkyButlerError
from skybutler.cli import main
from skybutler.registry import Registry
from support.records import insert_records
from support.services import PG_URL


@pytest.fixture
def sqlite_repo(tmp_path):
    """A closed SQLite repository with some rows (its WAL checkpointed into the file)."""
    root = tmp_path / "repo"
    with Butler.create(root, run="r") as butler:
        insert_records(butler, skymap=False)
        butler.register_dataset_type("metadata", ["visit", "detector"], "dict")
        butler.put({"a": 1}, "metadata", instrument="HSC", visit=903334, detector=1)
    assert not (root / "registry.sqlite3-wal").exists()
    return root


def one_line_error(root) -> str:
    result = CliRunner().invoke(main, ["query", "datasets", str(root), "metadata", "--collections", "r"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0, result.output
    return result.output


def test_a_deleted_registry_file_is_reported_and_not_recreated(sqlite_repo):
    db = sqlite_repo / "registry.sqlite3"
    db.unlink()
    with pytest.raises(RepositoryNotFoundError, match=f"{db} does not exist"):
        Butler(sqlite_repo)
    assert str(db) in one_line_error(sqlite_repo)
    assert not db.exists()


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
def test_a_damaged_registry_file_is_one_clear_error_naming_it(sqlite_repo, damage):
    db = sqlite_repo / "registry.sqlite3"
    data = db.read_bytes()
    db.write_bytes({"random bytes": os.urandom(len(data)), "truncated": data[:len(data) // 2],
                    "empty": b""}[damage])
    with pytest.raises(SkyButlerError) as info:
        Butler(sqlite_repo)
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    assert str(db) in one_line_error(sqlite_repo)


def test_a_damaged_page_inside_the_file_is_one_clear_error_naming_it(sqlite_repo):
    # The header is intact and the length right: only reading the pages finds the damage.
    db = sqlite_repo / "registry.sqlite3"
    data = bytearray(db.read_bytes())
    data[100:4096] = os.urandom(3996)  # the schema table's page
    db.write_bytes(bytes(data))
    with pytest.raises(SkyButlerError) as info:
        Butler(sqlite_repo)
    assert str(db) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["mysql://user:hunter2@db.example.org/repo", "foo://somewhere", "registry.db"])
def test_an_unsupported_database_url_names_it_and_the_supported_schemes(tmp_path, url):
    with pytest.raises(ConfigError) as info:
        Butler.create(tmp_path / "repo", registry=url)
    message = str(info.value)
    assert "hunter2" not in message and "sqlite://" in message and "postgresql://" in message
    assert url.replace("hunter2", "***") in message
    assert not (tmp_path / "repo").exists()
    with pytest.raises(ConfigError):
        Registry.open(url)


# -- a create that fails half-way leaves nothing behind --------------------------------------


def _fail_at_the_last_step(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("skybutler.registry._migrate.stamp_head", broken)


def _tables(engine: sa.Engine, namespace: str | None = None) -> list[str]:
    inspector = sa.inspect(engine)
    return inspector.get_table_names(schema=namespace) + inspector.get_view_names(schema=namespace)


def test_a_failed_sqlite_create_leaves_nothing_and_a_retry_works(tmp_path, monkeypatch):
    _fail_at_the_last_step(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        Butler.create(tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    monkeypatch.undo()
    Butler.create(tmp_path / "repo").close()


@pytest.mark.postgresql
def test_a_failed_postgresql_create_leaves_no_schema_and_a_retry_works(tmp_path, monkeypatch, pg_engine,
                                                                       pg_namespace):
    _fail_at_the_last_step(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        Butler.create(tmp_path / "repo", registry=PG_URL, namespace=pg_namespace)
    assert pg_namespace not in sa.inspect(pg_engine).get_schema_names()
    assert not (tmp_path / "repo").exists()
    monkeypatch.undo()
    with Butler.create(tmp_path / "repo", registry=PG_URL, namespace=pg_namespace, run="r") as butler:
        butler.register_dataset_type("metadata", ["instrument"], "dict")
        butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
        assert butler.get(butler.put({"a": 1}, "metadata", instrument="HSC")) == {"a": 1}


@pytest.mark.postgresql
def test_a_failed_create_in_an_existing_schema_leaves_it_empty(tmp_path, monkeypatch, pg_engine, pg_namespace):
    with pg_engine.begin() as conn:  # made by an administrator, owned by someone else
        conn.execute(sa.text(f'CREATE SCHEMA "{pg_namespace}"'))
    _fail_at_the_last_step(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        Registry.create(PG_URL, namespace=pg_namespace)
    assert pg_namespace in sa.inspect(pg_engine).get_schema_names()
    assert _tables(pg_engine, pg_namespace) == []
    monkeypatch.undo()
    Registry.create(PG_URL, namespace=pg_namespace).close()
    assert "datasets_view" in _tables(pg_engine, pg_namespace)


def test_creating_over_an_existing_repository_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/registry.sqlite3"
    Registry.create(url).close()
    with pytest.raises(SkyButlerError, match="already holds a repository"):
        Registry.create(url)
    Registry.open(url).close()


def _create_killed_before_its_configuration(root, registry: dict) -> None:
    """Run ``Butler.create(root, **registry)`` in a process killed after its registry, before ``skybutler.yaml``."""
    import subprocess
    import sys

    code = ("import os, signal, sys; from skybutler import Butler; from skybutler.config import RepositoryConfig; "
            "RepositoryConfig.write = lambda self, root: os.kill(os.getpid(), signal.SIGKILL); "
            "Butler.create(sys.argv[1], **eval(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, str(root), repr(registry)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]


def test_a_create_killed_before_its_configuration_is_finished_by_the_next_create(tmp_path):
    """Killed between its registry (one transaction) and its skybutler.yaml, a create left a root that neither
    opened ("not a repository: create one") nor created ("already holds a repository")."""
    root = tmp_path / "repo"
    _create_killed_before_its_configuration(root, {})
    assert (root / "registry.sqlite3").exists() and not (root / "skybutler.yaml").exists()
    with pytest.raises(RepositoryNotFoundError, match="create one with"):
        Butler(root)
    with Butler.create(root, run="r") as butler:
        butler.register_dataset_type("metadata", ["instrument"], "dict")
        butler.insert_dimension_records("instrument", [{"instrument": "HSC"}])
        assert butler.get(butler.put({"a": 1}, "metadata", instrument="HSC")) == {"a": 1}


def test_a_registry_with_data_but_no_configuration_is_never_created_over(sqlite_repo):
    (sqlite_repo / "skybutler.yaml").unlink()
    with pytest.raises(SkyButlerError, match="holds collections or dataset types, but .* has no skybutler.yaml: "
                                             "restore that file"):
        Butler.create(sqlite_repo)
    assert (sqlite_repo / "registry.sqlite3").exists()


@pytest.mark.postgresql
def test_a_postgresql_repository_is_never_taken_over_by_another_root(tmp_path, pg_engine, pg_namespace):
    Butler.create(tmp_path / "one", registry=PG_URL, namespace=pg_namespace).close()
    with pytest.raises(SkyButlerError, match="another repository's .* give another namespace"):
        Butler.create(tmp_path / "two", registry=PG_URL, namespace=pg_namespace)
    assert not (tmp_path / "two").exists()
    Butler(tmp_path / "one").close()
