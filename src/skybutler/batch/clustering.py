"""Clustering: cutting a quantum graph into jobs.

A task in a cluster of the campaign (`skybutler.batch.campaign.Clustering`) has its
quanta grouped with those of the cluster's other tasks that share the values of the
cluster's dimensions: ``{name: per_visit, tasks: [isr, calibrate], dimensions: [visit]}``
makes one job per visit running both steps in sequence. A cluster without dimensions is
one job for all its quanta. A task in no cluster gets one job per quantum.

Jobs depend on each other where a quantum of one reads an output of a quantum of
another. A grouping can make jobs wait for each other (tasks A and C in one cluster,
B between them in another): that is refused, naming the jobs of the cycle.

Job names are stable (the same graph gives the same names), readable and safe as file
names: ``<cluster>_<values of its dimensions>`` (``per_visit_HSC_903334``) or
``<task>_<data id values>`` (``make_warp_HSC_903334_rings_0_8,6``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._gc import paused_gc
from ..dimensions import DimensionUniverse
from ..errors import BatchError, DimensionError
from ..pipeline import QuantumGraph
from .campaign import Clustering

__all__ = ["JobPlan", "cluster_graph", "summarize"]

# Characters kept in a job name; everything else becomes "-". Names are also directory
# names and engine job names (Slurm, Parsl), where these are safe.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+=@-]")
_MAX_NAME = 200
"""Longest job name kept as it is; longer ones are cut and given a digest (file names hold 255 bytes)."""


@dataclass(slots=True)  # made by the 10^5
class JobPlan:
    """One job of a submission: the quanta it runs and the jobs it waits for.

    Attributes
    ----------
    name
        Unique in the submission, safe as a file name.
    cluster
        The campaign cluster it comes from, or the task label for a one-quantum job.
    quanta
        Its quanta, each after every quantum of the job it reads outputs of.
    task_labels
        Labels of its quanta's tasks, in pipeline order.
    upstream
        Names of the jobs whose outputs its quanta read.
    """

    name: str
    cluster: str
    quanta: list[uuid.UUID]
    task_labels: list[str]
    upstream: set[str] = field(default_factory=set)


def cluster_graph(graph: QuantumGraph, clustering: Clustering, *,
                  universe: DimensionUniverse | None = None) -> list[JobPlan]:
    """Group a graph's quanta into jobs, listed in dependency order (a job after those it waits for).

    Parameters
    ----------
    graph
        The quantum graph.
    clustering
        The campaign's clusters (tasks in none get one job per quantum).
    universe
        The repository's dimensions (default: the shipped ones). A cluster's dimensions
        are taken with those they require: ``[patch]`` groups by skymap, tract and patch
        (patch 8 of two tracts are two patches), ``[visit]`` by instrument and visit.

    Returns
    -------
    list of JobPlan
        Every quantum is in exactly one job.

    Raises
    ------
    BatchError
        A quantum of a clustered task has no value for one of the cluster's dimensions,
        or the grouping makes jobs wait for each other (the message names the cycle).

    Examples
    --------
    >>> jobs = cluster_graph(graph, Clustering(clusters=[
    ...     Cluster(name="per_visit", tasks=["isr", "calibrate"], dimensions=["visit"])]))  # doctest: +SKIP
    >>> jobs[0].name, len(jobs[0].quanta)                                                   # doctest: +SKIP
    ('per_visit_HSC_903334', 32)
    """
    universe = universe or DimensionUniverse.default()
    try:
        group_by = {c.name: universe.closure(c.dimensions) for c in clustering.clusters}
    except DimensionError as exc:
        raise BatchError(f"Clustering: {exc}") from None
    with paused_gc():  # 10^5 small acyclic objects: collector passes would dominate
        return _cluster(graph, clustering, group_by)


def _cluster(graph: QuantumGraph, clustering: Clustering, group_by: dict[str, tuple[str, ...]]) -> list[JobPlan]:
    cluster_of = clustering.cluster_of()
    # Quanta are worked on by position: a UUID's hash is computed in Python, an int's is not,
    # and 10^5 quanta with their edges would hash ids millions of times.
    ids = list(graph.quanta)
    quanta = list(graph.quanta.values())
    position = {qid: p for p, qid in enumerate(ids)}
    ups = [[p for p in map(position.get, q.upstream) if p is not None] for q in quanta]
    # Group key -> job index: a cluster and the values of its dimensions.
    index_of_key: dict[tuple[object, ...], int] = {}
    job_of = [0] * len(ids)
    members: list[list[int]] = []
    labels: list[dict[str, None]] = []
    raw_names: list[str] = []
    clusters: list[str] = []
    for p in _quantum_order(ups):
        q = quanta[p]
        label = q.task_label
        spec = cluster_of.get(label)
        if spec is None:  # one job for this quantum alone
            i = len(members)
            members.append([p])
            labels.append({label: None})
            raw_names.append("_".join([label, *map(str, q.data_id.required_items.values())]))
            clusters.append(label)
        else:
            try:
                values = tuple(q.data_id[d] for d in group_by[spec.name])
            except KeyError as exc:
                raise BatchError(f"Cluster {spec.name!r} groups by {', '.join(group_by[spec.name])}, but quantum "
                                 f"{q} has no {exc.args[0]!r}") from None
            key = (spec.name, values)
            found = index_of_key.get(key)
            if found is None:
                i = index_of_key[key] = len(members)
                members.append([])
                labels.append({})
                raw_names.append("_".join([spec.name, *map(str, values)]))
                clusters.append(spec.name)
            else:
                i = found
            members[i].append(p)
            labels[i][label] = None
        job_of[p] = i
    upstream: list[set[int]] = [set() for _ in members]
    for p, i in enumerate(job_of):
        for u in ups[p]:
            j = job_of[u]
            if j != i:
                upstream[i].add(j)
    job_order = _job_order(upstream, raw_names)
    names = _unique_names(raw_names, job_order)
    return [JobPlan(name=names[i], cluster=clusters[i], quanta=[ids[p] for p in members[i]],
                    task_labels=list(labels[i]), upstream={names[j] for j in upstream[i]}) for i in job_order]


def _quantum_order(ups: Sequence[Sequence[int]]) -> Sequence[int]:
    """Positions of the quanta with every one after those it reads from (``ups[p]``: positions p reads from).

    A built or read graph lists them so already (tasks in dependency order); that is
    checked in one pass, and only a graph that is not gets sorted.
    """
    if all(u < p for p, us in enumerate(ups) for u in us):
        return range(len(ups))
    downstream: list[list[int]] = [[] for _ in ups]
    for p, us in enumerate(ups):
        for u in us:
            downstream[u].append(p)
    waiting = [len(us) for us in ups]
    ready = deque(p for p, n in enumerate(waiting) if n == 0)
    out: list[int] = []
    while ready:
        p = ready.popleft()
        out.append(p)
        for d in downstream[p]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    if len(out) != len(ups):
        raise BatchError("The quantum graph has a cycle among its quanta (a damaged graph?)")
    return out


def _job_order(upstream: Sequence[set[int]], names: Sequence[str]) -> list[int]:
    """Jobs in dependency order (Kahn's algorithm, ties in creation order); a cycle is a `BatchError`."""
    downstream: list[list[int]] = [[] for _ in upstream]
    waiting = [len(ups) for ups in upstream]
    for i, ups in enumerate(upstream):
        for j in ups:
            downstream[j].append(i)
    ready = deque(i for i, n in enumerate(waiting) if n == 0)
    out: list[int] = []
    while ready:
        i = ready.popleft()
        out.append(i)
        for d in downstream[i]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    if len(out) != len(upstream):
        cycle = _find_cycle(upstream, {i for i, n in enumerate(waiting) if n > 0})
        shown = " -> ".join(names[i] for i in [*cycle, cycle[0]])
        raise BatchError(f"The clustering makes jobs wait for each other: {shown} (each reads outputs of the "
                         "next); put the tasks in between into the same cluster, or split the cluster")
    return out


def _find_cycle(upstream: Sequence[set[int]], stuck: set[int]) -> list[int]:
    """One cycle among ``stuck`` jobs (each still waits for another stuck one), each job waiting for the next."""
    start = min(stuck)
    seen: dict[int, int] = {}
    path: list[int] = []
    i = start
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = min(j for j in upstream[i] if j in stuck)
    return path[seen[i]:]


def _unique_names(raw: Sequence[str], order: Iterable[int]) -> list[str]:
    """Safe, unique job names; a clash gets ``_2``, ``_3``... in dependency order (stable for one graph)."""
    names = [""] * len(raw)
    used: set[str] = set()
    safe = [_safe_name(r) for r in raw]
    natural = set(safe)
    for i in order:
        name = safe[i]
        if name in used:
            # Never a name that is another job's own: it keeps it, whatever the order.
            n = 2
            while f"{name}_{n}" in used or f"{name}_{n}" in natural:
                n += 1
            name = f"{name}_{n}"
        used.add(name)
        names[i] = name
    return names


def _safe_name(raw: str) -> str:
    name = _UNSAFE.sub("-", raw).lstrip(".-") or "job"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = f"{name[:_MAX_NAME - 13]}_{digest}"
    return name


def summarize(jobs: Iterable[JobPlan]) -> list[dict[str, Any]]:
    """Jobs and quanta per cluster (or unclustered task), in the order clusters first appear.

    What ``batch submit --dry-run`` prints: one row per cluster,
    ``{"cluster": str, "tasks": [labels], "jobs": int, "quanta": int}``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:
        row = rows.setdefault(job.cluster, {"cluster": job.cluster, "tasks": [], "jobs": 0, "quanta": 0})
        row["tasks"] += [label for label in job.task_labels if label not in row["tasks"]]
        row["jobs"] += 1
        row["quanta"] += len(job.quanta)
    return list(rows.values())
