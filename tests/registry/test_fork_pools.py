"""A forked process never uses or closes its parent's pooled database connections.

A connection is a session on the server (or an open SQLite file): a child that used the
parent's would mix its messages with the parent's, and one that closed it (``Butler.close``)
would end the parent's session. The child opens its own; the parent goes on on its own.
"""

from __future__ import annotations

import os
import traceback

import pytest

from skybutler import Butler
from support.services import PG_URL

DATASET_TYPE = "meta"


def in_child(work) -> int:  # noqa: ANN001
    """Run ``work()`` in a forked child; its exit status (0: it returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()  # shown by pytest with the failure
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_a_forked_child_reads_writes_and_closes_without_touching_its_parents_connections(
        tmp_path, database, request):
    registry = {} if database == "sqlite" else {"registry": PG_URL, "namespace": request.getfixturevalue("pg_namespace")}
    butler = Butler.create(str(tmp_path / "repo"), run="r", **registry)
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    ref = butler.put({"by": "parent"}, DATASET_TYPE)
    assert butler.registry.get_files([ref.id])  # through the pool, which now holds the parent's connection

    def child() -> None:
        assert butler.registry.get_files([ref.id])  # the pool's turn: never the parent's connection
        assert butler.get(ref) == {"by": "parent"}
        butler.put({"by": "child"}, DATASET_TYPE, run="child")
        assert len(list(butler.query_datasets(DATASET_TYPE, collections=["child"]))) == 1
        butler.close()

    assert in_child(child) == 0
    # The parent's sessions are intact: reads and writes on its own connections go on.
    assert butler.registry.get_files([ref.id])
    assert len(list(butler.query_datasets(DATASET_TYPE, collections=["child"]))) == 1
    assert butler.get(ref) == {"by": "parent"}
    butler.put({"by": "parent again"}, DATASET_TYPE, run="later")
    butler.close()
