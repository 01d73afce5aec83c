"""Between a job's attempts: what an earlier attempt left in the central datastore, and what it did not stage out.

Used by `skybutler.batch.service.SubmissionRunner` before it hands a job over again
(`remove_unmerged_outputs`) and when an outcome comes back (`unstaged_outputs`).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._butler_remove import writers_kept_out
from ..provenance import ExecutionStatus
from ..registry import pipeline_sql

if TYPE_CHECKING:
    from ..butler import Butler
    from ..pipeline import QuantumGraph
    from .manifest import JobOutcome

__all__ = ["remove_unmerged_outputs", "unstaged_outputs"]


def remove_unmerged_outputs(butler: Butler, quanta: Sequence[Any]) -> None:
    """Remove the files an earlier attempt of ``quanta`` staged out but that were never merged (no row names them).

    A new attempt writes the same paths; its logs (times, execution ids) differ from the
    earlier ones, and stage-out never overwrites a file.
    """
    paths = [r.extra["path"] for q in quanta for r in q.output_refs() if "path" in r.extra]
    if not paths:
        return
    registry, datastore = butler.registry, butler.datastore
    named = pipeline_sql.known_paths(registry, paths)
    stray = [p for p in paths if p not in named and datastore.exists(p)]
    if stray:
        # Looked up again and removed while writers of file rows are kept out: a put of
        # the same dataset may have taken one for a crashed write's leftover, replaced it
        # and committed since (or be about to).
        with writers_kept_out(registry):
            named = pipeline_sql.known_paths(registry, stray)
            datastore.remove([p for p in stray if p not in named])
    # And the temporary files of an earlier attempt killed while staging out (those of
    # live writers, other jobs staging into the same directories, are left alone). Only
    # on local disk: an object store is written at the final key, and listing it would
    # fill fsspec's listings cache, after which this process's `exists` misses the files
    # jobs stage out later.
    if datastore.is_local:
        datastore.clean_temporaries({posixpath.dirname(p) for p in paths})


def unstaged_outputs(graph: QuantumGraph, outcome: JobOutcome) -> list[uuid.UUID]:
    """The outputs of the outcome's succeeded quanta that its stage-out did not place."""
    staged = {o.dataset_id for o in outcome.outputs}
    return [r.id for q in outcome.quanta if q.status == ExecutionStatus.SUCCEEDED.value
            for r in graph[q.quantum_id].output_refs() if r.id not in staged]
