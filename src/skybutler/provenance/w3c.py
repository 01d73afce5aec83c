"""W3C PROV export (PROV-JSON, PROV-N) through the `prov` package.

Datasets are entities, executions are activities, tasks are software agents;
the edges are ``used``, ``wasGeneratedBy``, ``wasDerivedFrom`` and
``wasAssociatedWith``. Identifiers live in the ``skybutler`` namespace
(``urn:skybutler:``): ``skybutler:dataset-<uuid>``, ``skybutler:execution-<uuid>``,
``skybutler:task-<label>``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from prov.constants import PROV_TYPE
from prov.model import PROV, ProvDocument

from ..errors import ConfigError
from ..model import DatasetRef
from ..registry import provenance_sql
from .query import as_dataset_id, registry_of

__all__ = ["NAMESPACE", "export_provenance", "to_prov_document"]

NAMESPACE = "urn:skybutler:"
"""URI of the ``skybutler`` prefix used by every identifier in the export."""

FORMATS = ("json", "provn")


def to_prov_document(butler: Any, refs_or_ids: Iterable[DatasetRef | uuid.UUID | str] | DatasetRef | uuid.UUID | str,
                     *, direction: str = "up", max_depth: int = 1000) -> ProvDocument:
    """A PROV document for datasets and their lineage.

    Parameters
    ----------
    butler
        A `Butler` (or its registry).
    refs_or_ids
        One dataset or several.
    direction
        ``"up"`` adds every ancestor, ``"down"`` every descendant, ``"both"`` both,
        ``"none"`` only the datasets themselves; each generating execution comes with
        everything it used and wrote.

    Examples
    --------
    >>> doc = to_prov_document(butler, coadd_ref)                  # doctest: +SKIP
    >>> print(doc.get_provn())                                     # doctest: +SKIP
    """
    registry = registry_of(butler)
    if isinstance(refs_or_ids, (DatasetRef, uuid.UUID, str)):
        refs_or_ids = [refs_or_ids]
    wanted = list(dict.fromkeys(as_dataset_id(r) for r in refs_or_ids))
    directions = {"up": ("up",), "down": ("down",), "both": ("up", "down"), "none": ()}[direction]
    ids = dict.fromkeys(wanted)
    for did in wanted:
        for d in directions:
            for node, _depth in provenance_sql.lineage(registry, did, direction=d, max_depth=max_depth):
                ids.setdefault(node)
    made = provenance_sql.generating_executions(registry, list(ids))
    executions: dict[uuid.UUID, dict[str, Any]] = {row["id"]: row for row, _ in made.values()}
    edges = {eid: provenance_sql.execution_edges(registry, eid) for eid in executions}
    for e in edges.values():
        for did, _ in (*e["used"], *e["generated"]):
            ids.setdefault(did)
    refs = registry.get_datasets(list(ids))
    files = registry.get_files(list(ids))

    doc = ProvDocument()
    doc.add_namespace("skybutler", NAMESPACE)

    def entity_id(did: uuid.UUID) -> str:
        return f"skybutler:dataset-{did}"

    for did in ids:
        ref = refs.get(did)
        attrs: dict[Any, Any] = {PROV_TYPE: PROV["Entity"]}
        if ref is not None:
            attrs.update({"prov:label": f"{ref.dataset_type.name} {ref.data_id}",
                          "skybutler:dataset_type": ref.dataset_type.name,
                          "skybutler:data_id": json.dumps(dict(ref.data_id), sort_keys=True),
                          "skybutler:run": ref.run})
        if did in files:
            attrs["skybutler:path"] = files[did].path
        doc.entity(entity_id(did), attrs)
    agents: set[str] = set()
    for eid, row in executions.items():
        details = json.loads(row["details"]) if row.get("details") else {}
        activity = doc.activity(f"skybutler:execution-{eid}", row["start_time"], row["end_time"], {
            "prov:label": f"{row['task_label']} {row['data_id_key']}",
            "skybutler:task_label": row["task_label"], "skybutler:status": row["status"],
            "skybutler:host": row["host"] or "", "skybutler:run": row["run"] or "",
            "skybutler:config_hash": row["config_hash"] or "",
            "skybutler:software": row["software"] or "{}",
        })
        agent = f"skybutler:task-{row['task_label']}"
        if agent not in agents:
            agents.add(agent)
            doc.agent(agent, {PROV_TYPE: PROV["SoftwareAgent"], "prov:label": row["task_label"],
                              "skybutler:task_class": details.get("task_class", "")})
        doc.wasAssociatedWith(activity, agent)
        for did, path in edges[eid]["used"]:
            doc.used(activity, entity_id(did), other_attributes={"skybutler:path": path or ""})
        for did, path in edges[eid]["generated"]:
            doc.wasGeneratedBy(entity_id(did), activity, other_attributes={"skybutler:path": path or ""})
    for did, source in provenance_sql.derived_edges(registry, list(ids)):
        if source in ids:
            doc.wasDerivedFrom(entity_id(did), entity_id(source))
    return doc


def export_provenance(butler: Any, ref_or_id: DatasetRef | uuid.UUID | str, *, format: str = "json",
                      direction: str = "up") -> str:
    """The PROV document of a dataset and its lineage as PROV-JSON (``"json"``) or PROV-N (``"provn"``).

    Raises
    ------
    ConfigError
        If ``format`` is not one of `FORMATS`.
    """
    if format not in FORMATS:
        raise ConfigError(f"Unknown PROV format {format!r}; use one of {', '.join(FORMATS)}")
    doc = to_prov_document(butler, ref_or_id, direction=direction)
    if format == "json":
        return str(doc.serialize(format="json", indent=2))
    return str(doc.get_provn())

