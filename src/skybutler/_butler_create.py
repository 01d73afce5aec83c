"""`Butler.create`'s registry, and its way out of a create killed before it finished (`left_by_an_interrupted_create`)."""

from __future__ import annotations

from pathlib import Path

from .config import CONFIG_FILE, RepositoryConfig
from .dimensions import DimensionUniverse
from .errors import RepositoryExistsError
from .registry import Registry, normalise_url, sqlite_file

__all__ = ["left_by_an_interrupted_create", "new_registry"]


def new_registry(cfg: RepositoryConfig, root: Path, universe: DimensionUniverse | None) -> Registry:
    """The registry of a new repository at ``root``, as ``cfg`` (environment applied) says where."""
    try:
        return Registry.create(cfg.registry.db, universe=universe, namespace=cfg.registry.namespace,
                               root=str(root), sync_every_commit=cfg.registry.sync_every_commit)
    except RepositoryExistsError as exc:
        return left_by_an_interrupted_create(cfg, root, universe, exc)


def left_by_an_interrupted_create(cfg: RepositoryConfig, root: Path, universe: DimensionUniverse | None,
                                   exists: RepositoryExistsError) -> Registry:
    """The registry a create of ``root`` made before it was stopped, to be taken over; else a clear error.

    The registry is made in one transaction and the root's configuration file written
    after it, so a create killed in between leaves a whole, empty registry and no
    ``skybutler.yaml``: neither opening the root nor creating it again worked. A SQLite
    file inside ``root`` is this root's own: holding no collection and no dataset type
    (nothing can have been written without the configuration file), it is taken over.
    A database elsewhere (a PostgreSQL namespace, a file outside the root) may be another
    repository's: it is never taken over.
    """
    url = normalise_url(cfg.registry.db, str(root))
    file = sqlite_file(url)
    if file is None or root.resolve() not in file.resolve().parents:
        where = f"namespace {cfg.registry.namespace!r} of " if cfg.registry.namespace else ""
        raise RepositoryExistsError(
            f"{exists}; {root} has no {CONFIG_FILE}, so it is another repository's (or this one's from a create "
            f"that was interrupted): give another {'namespace' if cfg.registry.namespace else 'registry'}, or remove "
            f"the repository in {where}that database if nothing uses it") from None
    reg = Registry.open(cfg.registry.db, namespace=cfg.registry.namespace, root=str(root),
                        sync_every_commit=cfg.registry.sync_every_commit)
    same_universe = universe is None or universe.document == reg.universe.document
    if reg.collections() or reg.dataset_types() or not same_universe:
        reg.close()
        what = "holds collections or dataset types" if same_universe else "has another dimension universe"
        raise RepositoryExistsError(
            f"{exists} that {what}, but {root} has no {CONFIG_FILE}: restore that file from a backup instead of "
            "creating the repository again") from None
    return reg
