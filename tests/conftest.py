"""Shared fixtures: repositories on every registry and datastore backend.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, database ``test``); each test gets
its own schema, dropped afterwards. With SKYBUTLER_REQUIRE_SERVICES=1 a missing
server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("SKYBUTLER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("SKYBUTLER_REQUIRE_SERVICES") == "1"


def _service_missing(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is not available and SKYBUTLER_REQUIRE_SERVICES=1")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def pg_engine():
    from skybutler.registry._db import normalise_url

    engine = sa.create_engine(normalise_url(PG_URL))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError:
        _service_missing(f"PostgreSQL at {PG_URL}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_namespace(pg_engine):
    """A fresh PostgreSQL schema name, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


BACKENDS = ["sqlite-local", "sqlite-memory", "postgresql-local"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def make_butler(request, tmp_path, backend):
    """Factory: ``make_butler(**create_kwargs)`` creates a repository on this test's backend."""
    from skybutler import Butler

    made = []
    counter = iter(range(1000))

    def make(**kwargs):
        root = tmp_path / f"repo{next(counter)}"
        if backend == "sqlite-memory":
            kwargs.setdefault("registry", "sqlite://")
            kwargs.setdefault("datastore", f"memory://skybutler-test-{uuid.uuid4().hex}")
        elif backend == "postgresql-local":
            request.getfixturevalue("pg_engine")
            kwargs.setdefault("registry", PG_URL)
            kwargs.setdefault("namespace", request.getfixturevalue("pg_namespace") + f"_{len(made)}")
        butler = Butler.create(root, **kwargs)
        made.append(butler)
        return butler

    yield make
    for b in made:
        if b.registry.dialect == "postgresql" and b.config.registry.namespace:
            with b.registry.engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{b.config.registry.namespace}" CASCADE'))
        b.close()
