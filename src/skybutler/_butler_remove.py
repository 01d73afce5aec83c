"""How `Butler` removes datasets and runs: rows first, then files, and an interruption finished later.

Inside the registry transaction, after the rows are deleted and before the commit, the list
of files to delete is written to the datastore (`Datastore.record_removal`); once committed,
the files are deleted and the list dropped. A removal cut short by a crash or an unreachable
store leaves its list behind, and `finish_removals` (run by the next removal) deletes the
files that no row names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._butler_put import connection_lost, lost_connection
from .datastore import Datastore
from .registry import pipeline_sql

if TYPE_CHECKING:
    from .registry import FileRecord, Registry

__all__ = ["finish_removals", "owned_paths", "remove_then_delete"]


def owned_paths(records: Sequence[FileRecord]) -> list[str]:
    """The paths of ``records`` that the datastore owns (and so may delete)."""
    # Files recorded by absolute location were ingested "direct": they are not ours to delete.
    return [r.path for r in records if Datastore.owns(r.path)]


def remove_then_delete(registry: Registry, datastore: Datastore, remove_rows: Callable[[], list[FileRecord]],
                       label: str, purge: bool = True) -> int:
    """Run ``remove_rows`` in a transaction, then delete the files of the rows it removed; returns how many.

    ``label`` names what is removed (a run, or ``"datasets"``) in the list of files and in
    errors; with ``purge`` False the files stay.
    """
    try:
        with registry.transaction():
            records = remove_rows()
            paths = owned_paths(records) if purge else []
            pending = datastore.record_removal(paths, label=label) if paths else None
    except sa.exc.DBAPIError as exc:
        if lost_connection(exc) is None:
            raise
        raise connection_lost(registry, exc, f"removing {label}", "repeat the removal to finish it") from None
    if pending is not None:
        datastore.remove(paths)
        datastore.forget_removal(pending)
    return len(records)


def finish_removals(registry: Registry, datastore: Datastore) -> dict[str, int]:
    """Delete the files no row names of every interrupted removal; the count per label (see `Butler.finish_removals`)."""
    done: dict[str, int] = {}
    for rel, label, paths in datastore.pending_removals():
        named = pipeline_sql.known_paths(registry, paths)
        gone = [p for p in paths if p not in named]
        datastore.remove(gone)
        datastore.forget_removal(rel)
        done[label] = done.get(label, 0) + len(gone)
    return done
