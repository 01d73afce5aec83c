"""Schema migrations of registries: Alembic, configured in code (no alembic.ini).

The revisions live in ``migrations/versions/`` (one file each, ``NNNN_what.py``,
revision id ``"NNNN"``); each one ends by recording its schema version in the
``meta`` table, which is what `Registry.open` checks. Revision ``0001`` is the
schema of release 0.1.0, whose repositories have no ``alembic_version`` table:
`upgrade` stamps them at it first. `Registry.create` makes the newest schema
directly and stamps the head revision.

To change the schema: edit ``schema.py``, bump its ``SCHEMA_VERSION``, and add
the next revision (copy ``0002_datasets_view.py``); ``tests/registry/test_migrations.py``
upgrades a repository of the previous release and checks that the result is
the schema `Registry.create` makes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..config import redact_url
from ..dimensions import DimensionUniverse
from ..errors import RepositoryNotFoundError, SchemaVersionError
from ._db import database_errors, open_existing

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

# Alembic is imported where it is used, not here: opening a repository never needs it, and
# importing it costs ~0.3 s in every process (a batch job on Slurm or Parsl starts a fresh one).

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
"""The revision of release 0.1.0's schema (schema version 1), which had no version table."""

_VERSION_TABLE = "alembic_version"
_LOCK_ID = 0x5B7B_0001  # PostgreSQL advisory lock serialising upgrades of one database


@dataclass(frozen=True)
class MigrationStep:
    """One step of an upgrade: a revision to apply, or the stamp of an unversioned repository."""

    revision: str
    description: str

    def __str__(self) -> str:
        return f"{self.revision}: {self.description}"


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped with this skybutler (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def head_revision() -> str:
    """The newest revision: the schema `Registry.create` makes."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


def meta_table() -> sa.Table:
    """The ``meta`` table (key, value), the same in every schema version."""
    # A full Table (not sa.table) so the engine's schema_translate_map puts it in the namespace.
    return sa.Table("meta", sa.MetaData(), sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text))


def stored_universe(conn: sa.Connection) -> DimensionUniverse:
    """The dimension universe a repository was created with (for revisions that need its columns)."""
    meta = meta_table()
    text = conn.execute(sa.select(meta.c.value).where(meta.c.key == "universe")).scalar_one()
    return DimensionUniverse(json.loads(text))


def set_schema_version(conn: sa.Connection, version: int) -> None:
    """Record ``version`` as the repository's schema version (each revision's last step)."""
    meta = meta_table()
    done = conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=str(version)))
    if done.rowcount == 0:
        conn.execute(sa.insert(meta).values(key="schema_version", value=str(version)))


def _version_schema(conn: sa.Connection, namespace: str | None) -> str | None:
    return namespace if conn.dialect.name == "postgresql" else None


def current_revision(conn: sa.Connection, namespace: str | None = None) -> str | None:
    """The repository's Alembic revision; None when it has no version table (release 0.1.0)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table_schema": _version_schema(conn, namespace)})
    return context.get_current_revision()


def stamp_head(conn: sa.Connection, namespace: str | None = None) -> None:
    """Record the head revision in a repository whose tables were just made at the newest schema."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table_schema": _version_schema(conn, namespace)})
    context.stamp(script_directory(), "head")


def migrate_connection(conn: sa.Connection, target: str = "head", *, namespace: str | None = None,
                       universe: DimensionUniverse | None = None, stamp_first: str | None = None) -> None:
    """Run the revisions up to ``target`` on ``conn``, inside the caller's transaction.

    ``stamp_first`` records a revision before upgrading (for a repository without a
    version table); ``universe`` is for the baseline made from nothing (tests).
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes.update(connection=conn, namespace=namespace, universe=universe)
    if stamp_first is not None:
        command.stamp(config, stamp_first)
    command.upgrade(config, target)


def _pending(current: str | None) -> Iterator[MigrationStep]:
    script = script_directory()
    revisions = list(script.iterate_revisions("head", current or BASELINE))
    for rev in reversed(revisions):
        if rev.revision != current and not (current is None and rev.revision == BASELINE):
            yield MigrationStep(rev.revision, (rev.doc or "").strip().splitlines()[0])


def upgrade(url: str, *, namespace: str | None = None, root: str | None = None,
            dry_run: bool = False) -> list[MigrationStep]:
    """Upgrade a repository's registry to the schema of this skybutler.

    All steps run in one transaction, so an interrupted upgrade leaves the
    repository as it was and can simply be run again; an up-to-date repository
    is left untouched (the call is idempotent).

    Parameters
    ----------
    url
        The registry database URL (as in the repository configuration).
    namespace
        The PostgreSQL schema holding the repository's tables.
    root
        The repository root, under which a relative SQLite path lies.
    dry_run
        Only report the steps; change nothing.

    Returns
    -------
    steps
        The steps applied (or, with ``dry_run``, to apply); empty when up to date.

    Examples
    --------
    >>> from skybutler.registry import upgrade
    >>> for step in upgrade("sqlite:///registry.sqlite3", root="/data/repo"):  # doctest: +SKIP
    ...     print(step)
    0001: stamp (unversioned repository of release 0.1.0)
    0002: datasets_view: every dataset with its type, run, filled-in dimensions and file.
    """
    sa_url, engine = open_existing(url, root=root, namespace=namespace)
    try:
        with database_errors(sa_url), engine.connect().execution_options(write=not dry_run) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_ID)))
            if not sa.inspect(conn).has_table("meta", schema=_version_schema(conn, namespace)):
                raise RepositoryNotFoundError(f"Registry database {redact_url(sa_url)} holds no skybutler repository")
            current = current_revision(conn, namespace)
            steps: list[MigrationStep] = []
            if current is None:
                meta = meta_table()
                version = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                if version != "1":
                    raise SchemaVersionError(
                        f"Registry {redact_url(sa_url)} has schema version {version} but no migration history; "
                        "only repositories of release 0.1.0 (schema version 1) can be upgraded from that state")
                steps.append(MigrationStep(BASELINE, "stamp (unversioned repository of release 0.1.0)"))
            elif current not in {r.revision for r in script_directory().walk_revisions()}:
                raise SchemaVersionError(
                    f"Registry {redact_url(sa_url)} is at revision {current}, newer than this skybutler's "
                    f"{head_revision()}; upgrade skybutler instead")
            steps.extend(_pending(current))
            if not dry_run and steps:
                migrate_connection(conn, namespace=namespace,
                                   stamp_first=BASELINE if current is None else None)
            return steps
    finally:
        engine.dispose()
