"""Shared fixtures: repositories on every registry and datastore backend.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, database ``test``); each test gets
its own schema, dropped afterwards. With SKYBUTLER_REQUIRE_SERVICES=1 a missing
server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.services import PG_URL, PREVIOUS_RELEASE, RELEASE_FIXTURES  # noqa: F401  (re-exported for fixtures)
from support.slurm_cluster import pytest_sessionfinish, pytest_sessionstart, slurm_cluster  # noqa: F401

REQUIRE_SERVICES = os.environ.get("SKYBUTLER_REQUIRE_SERVICES") == "1"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Make ``--dist loadgroup`` (pyproject.toml) group the tests marked ``xdist_group`` on pytest 9.2.

    pytest-xdist 3.8 tells its scheduler a test's group by appending ``@group`` to
    ``item._nodeid``, which pytest 9.2 no longer reads (pytest-dev/pytest-xdist#1386): the
    groups were silently ignored and a module fixture the group shares (the demo's run) was
    built once per worker. This writes the same suffix into the id pytest 9.2 keeps; with a
    pytest or xdist where the suffix is already there it does nothing.
    """
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers under loadgroup
        return
    try:  # pytest's private id class: another pytest may lack it, and then grouping is only lost (slower)
        from _pytest.nodeid import NodeId

        parse = NodeId.parse
    except (ImportError, AttributeError):
        return
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = parse(item.nodeid + suffix)


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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port, for the whole session; yields fsspec storage options."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        _service_missing("moto's S3 server (pip install 'moto[server]')")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    yield options
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the moto server; yields ``(bucket name, storage options)``."""
    import boto3

    name = f"sb-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=name)
    yield name, s3_server
    bucket = boto3.resource("s3", endpoint_url=s3_server["endpoint_url"], aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1").Bucket(name)
    bucket.objects.all().delete()
    bucket.delete()


@pytest.fixture(scope="session")
def s3_shared_bucket(s3_server):
    """One bucket for the session's `make_butler` repositories, each under its own prefix.

    Making and emptying a bucket per test costs more than many of the tests themselves.
    """
    import boto3

    name = f"sb-shared-{uuid.uuid4().hex[:12]}"
    options = {"endpoint_url": s3_server["endpoint_url"], "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    boto3.client("s3", **options).create_bucket(Bucket=name)
    yield name, s3_server
    bucket = boto3.resource("s3", **options).Bucket(name)
    bucket.objects.all().delete()
    bucket.delete()


# A backend is "<registry>-<datastore>": the registry axis (sqlite: a file in the root,
# postgresql: a schema on the test server) crossed with the datastore axis (local: files in the
# root, s3: a bucket on moto's server, memory: the all-in-memory fake, whose registry is
# in-memory SQLite too). "sqlite-upgraded" is the previous release's repository, upgraded.
REGISTRIES = ("sqlite", "postgresql")
DATASTORES = ("local", "memory", "s3")
BACKENDS = ["sqlite-local", "sqlite-memory", "postgresql-local", "sqlite-s3"]


def backend_axes(backend: str) -> tuple[str, str]:
    """``(registry, datastore)`` of a backend name; e.g. ``"postgresql-s3"`` -> ``("postgresql", "s3")``."""
    if backend == "sqlite-upgraded":
        return "sqlite-upgraded", "local"
    registry, _, datastore = backend.partition("-")
    if registry not in REGISTRIES or datastore not in DATASTORES or backend == "postgresql-memory":
        raise ValueError(f"unknown test backend {backend!r}")
    return registry, datastore


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=[*BACKENDS, "postgresql-s3", "sqlite-upgraded"])
def conformance_backend(request):
    """Every backend plus ``postgresql-s3`` (the shared central repository's combination) and
    ``sqlite-upgraded``: an empty repository of the previous release, upgraded.

    The conformance suite (tests/test_butler.py) opts in by overriding ``backend``
    with this; other modules keep to `BACKENDS` so the suite's time stays down.
    """
    return request.param


def _default_registry(config) -> bool:
    """Whether a ``make_butler`` configuration leaves the registry at the root's own SQLite file."""
    from skybutler import RepositoryConfig

    if config is None:
        return True
    if isinstance(config, RepositoryConfig):
        db = config.registry.db
    elif isinstance(config, Mapping):
        db = config.get("registry", {}).get("db")
    else:  # a configuration file: created as usual
        return False
    return db in (None, RepositoryConfig().registry.db)


def _upgraded_repository(root: Path, kwargs: dict):
    """A butler on a copy of the previous release's empty repository, upgraded to this one's schema."""
    from skybutler import Butler, RepositoryConfig
    from skybutler.registry import upgrade

    shutil.copytree(PREVIOUS_RELEASE / "empty", root)
    config = kwargs.pop("config", None)
    cfg = config.model_copy(deep=True) if isinstance(config, RepositoryConfig) else \
        RepositoryConfig.from_mapping(dict(config or {}))
    if "datastore" in kwargs:
        cfg.datastore.root = kwargs.pop("datastore")
    cfg.write(root)
    upgrade(cfg.registry.db, root=str(root))
    return Butler(root, **kwargs)


@pytest.fixture(scope="session")
def standard_records(tmp_path_factory):
    """The records of ``support.records.insert_records``, built once per test run (per xdist worker)."""
    from skybutler import Butler
    from support.records import RecordsTemplate

    return RecordsTemplate.build(Butler.create(tmp_path_factory.mktemp("standard-records") / "template"))


@pytest.fixture(scope="session")
def pg_template(pg_engine, tmp_path_factory):
    """A PostgreSQL repository schema (with the standard records) copied into each test's schema."""
    from support.pg_schema import PostgresSchemaTemplate

    template = PostgresSchemaTemplate.build(PG_URL, tmp_path_factory.mktemp("pg-template"))
    yield template
    with pg_engine.begin() as conn:
        template.drop(conn)


@pytest.fixture(scope="session")
def upgraded_standard_records(tmp_path_factory):
    """`standard_records` in the previous release's empty repository, upgraded once per test run."""
    from support.records import RecordsTemplate

    return RecordsTemplate.build(_upgraded_repository(tmp_path_factory.mktemp("upgraded-records") / "template", {}))


def _repository_from_template(root: Path, kwargs: dict, copy_registry):
    """A butler on a new repository whose registry ``copy_registry(config)`` copies from a template.

    What `Butler.create` does but for making the registry: ``kwargs`` are its arguments
    (``registry`` and ``namespace`` go to the configuration).
    """
    from skybutler import Butler, RepositoryConfig

    config = kwargs.pop("config", None)
    cfg = config.model_copy(deep=True) if isinstance(config, RepositoryConfig) else \
        RepositoryConfig.from_mapping(dict(config or {}))
    if "datastore" in kwargs:
        cfg.datastore.root = kwargs.pop("datastore")
    if "registry" in kwargs:
        cfg.registry.db = kwargs.pop("registry")
    if "namespace" in kwargs:
        cfg.registry.namespace = kwargs.pop("namespace")
    root.mkdir(parents=True)
    copy_registry(cfg)
    cfg.write(root)
    return Butler(root, **kwargs)


def _copy_file(template, root: Path, *, records: bool = True):
    def copy_registry(cfg) -> None:
        shutil.copyfile(template.sqlite_file if records else template.empty_sqlite_file, root / "registry.sqlite3")
    return copy_registry


@pytest.fixture
def make_butler(request, tmp_path, backend):
    """Factory: ``make_butler(**create_kwargs)`` makes a new repository on this test's backend.

    The registry is a copy of one made once per test run (a SQLite file, or a PostgreSQL
    schema's DDL and rows) unless the test names a database, schema or universe, or the
    registry is in memory: those are made by `Butler.create`. ``make_butler(records=True)``
    gives one that already holds the records of ``support.records.insert_records`` (default
    arguments); tests that need other records call ``insert_records`` themselves.
    tests/test_butler.py checks that a copy is what `Butler.create` makes.
    """
    from skybutler import Butler

    made = []
    counter = iter(range(1000))
    prefix = uuid.uuid4().hex

    def make(*, records: bool = False, **kwargs):
        if records and "universe" in kwargs:
            raise TypeError("make_butler(records=True) copies records of the default universe; "
                            "insert records of a custom universe with insert_records")
        root = tmp_path / f"repo{next(counter)}"
        registry, datastore = backend_axes(backend)
        # A test that chooses the database, schema or universe gets a repository made as usual.
        own_registry = bool({"universe", "registry", "namespace"} & kwargs.keys()) or \
            not _default_registry(kwargs.get("config"))
        if datastore == "memory":
            kwargs.setdefault("registry", "sqlite://")
            kwargs.setdefault("datastore", f"memory://skybutler-test-{uuid.uuid4().hex}")
        elif datastore == "s3":
            bucket, options = request.getfixturevalue("s3_shared_bucket")
            kwargs.setdefault("datastore", f"s3://{bucket}/{prefix}/repo{len(made)}")
            config = dict(kwargs.pop("config", None) or {})
            config["datastore"] = {**config.get("datastore", {}), "storage_options": options}
            kwargs["config"] = config
        if registry == "postgresql":
            request.getfixturevalue("pg_engine")
            kwargs.setdefault("registry", PG_URL)
            kwargs.setdefault("namespace", request.getfixturevalue("pg_namespace") + f"_{len(made)}")
        if own_registry or datastore == "memory":  # an in-memory registry has no file to copy
            butler = Butler.create(root, **kwargs)
            if records:
                request.getfixturevalue("standard_records").fill(butler)
        elif registry == "sqlite-upgraded":
            if records:
                template = request.getfixturevalue("upgraded_standard_records")
                butler = _repository_from_template(root, kwargs, _copy_file(template, root))
            else:
                butler = _upgraded_repository(root, kwargs)
        elif registry == "postgresql":
            template, engine = request.getfixturevalue("pg_template"), request.getfixturevalue("pg_engine")

            def copy_schema(cfg) -> None:
                with engine.begin() as conn:
                    template.copy_into(conn, cfg.registry.namespace, records=records)

            butler = _repository_from_template(root, kwargs, copy_schema)
        else:
            template = request.getfixturevalue("standard_records")
            butler = _repository_from_template(root, kwargs, _copy_file(template, root, records=records))
        made.append(butler)
        return butler

    yield make
    for b in made:
        if b.registry.dialect == "postgresql" and b.config.registry.namespace:
            with b.registry.engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{b.config.registry.namespace}" CASCADE'))
        b.close()
