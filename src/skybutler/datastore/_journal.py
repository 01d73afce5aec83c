"""What the datastore writes about its own files: lists of files to delete, and run manifests.

Split from `skybutler.datastore.store`, which documents both (`Datastore.record_removal`,
`Datastore.append_manifest`). Both live under ``.skybutler/`` below the root.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from ..errors import FileAccessError
from ._file_namer import sanitize_cached
from ._files import HOST_TAG, owner_gone, stamp_seconds
from ._location import StoreLocation

__all__ = ["MANIFEST_DIR", "REMOVALS_DIR", "append_manifest", "forget_removal", "pending_removals",
           "record_removal", "removal_listing"]

MANIFEST_DIR = ".skybutler/manifests"
"""Where run manifests live, relative to the datastore root."""

REMOVALS_DIR = ".skybutler/removals"
"""Where lists of files to delete wait until they are deleted (see `Datastore.record_removal`)."""
_REMOVAL = re.compile(r"^(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{32}\.json$")

_SORTED_JSON = json.JSONEncoder(sort_keys=True).encode
"""``json.dumps(value, sort_keys=True)``, without making an encoder per call (``json.dumps``
does with any argument; a put appends one manifest line, and that was a third of its cost)."""


def record_removal(location: StoreLocation, paths: Iterable[str], *, label: str) -> str:
    """Write the list of ``paths`` about to be deleted; returns its path relative to the root.

    The paths are written as the registry holds them, neither normalised nor sorted: this
    runs inside the removal's transaction (1,000,000 paths took 2.4 s that way), and what
    reads the list back checks each path again before deleting it (`Datastore.remove`) and
    compares them with the registry's paths (`finish_removals`), which are in this form.
    """
    rel = f"{REMOVALS_DIR}/{HOST_TAG}-{os.getpid()}-{os.urandom(16).hex()}.json"
    listed = paths if isinstance(paths, list) else list(paths)
    if not all(map(str.__instancecheck__, listed)):
        raise FileAccessError(f"Removal list {label!r}: every path must be a string")
    text = json.dumps({"label": label, "paths": listed})
    full = location.full(rel)
    with location.errors("write", rel):
        if location.local:
            os.makedirs(posixpath.dirname(full), exist_ok=True)
        with location.fs.open(full, "wb") as f:
            f.write(text.encode("utf-8"))
    return rel


def pending_removals(location: StoreLocation, open_file: Callable[[str], IO[Any]],
                     ) -> Iterator[tuple[str, str, list[str]]]:
    """Lists of interrupted removals, ``(list path, label, paths)``, read through ``open_file``.

    Lists of removals still running in another process are left out (same rule as for
    temporary files); unreadable ones (cut short by a crash) are removed.
    """
    base = location.full(REMOVALS_DIR)
    with location.errors("list", REMOVALS_DIR):
        try:
            infos = location.fs.ls(base, detail=True, refresh=True) if not location.local else [
                {"name": e.path, "ctime": e.stat().st_ctime} for e in os.scandir(base)]
        except (FileNotFoundError, NotADirectoryError):
            return
    now = time.time()
    for info in sorted(infos, key=lambda i: str(i["name"])):
        name = posixpath.basename(str(info["name"]))
        match = _REMOVAL.match(name)
        if match is None:
            continue
        stamp = stamp_seconds(info)
        changed = now if stamp is None else stamp
        mine = match["host"] == HOST_TAG and int(match["pid"]) == os.getpid()
        if not mine and not owner_gone(match["host"], match["pid"], changed, now):
            continue
        rel = f"{REMOVALS_DIR}/{name}"
        try:
            with open_file(rel) as f:
                data = json.loads(f.read())
            listed = str(data["label"]), [str(p) for p in data["paths"]]
        except OSError as err:
            if err.errno == errno.ENOENT:  # another process finished that removal meanwhile
                continue
            raise
        except (ValueError, KeyError, TypeError):
            forget_removal(location, rel)
            continue
        yield rel, *listed


def removal_listing(location: StoreLocation, open_file: Callable[[str], IO[Any]], paths: Iterable[str],
                    known: dict[str, tuple[str, frozenset[str]]]) -> dict[str, str]:
    """The label of a removal (running or interrupted) whose list names each of ``paths`` that one names.

    One listing of the lists for all of ``paths``. ``known`` keeps the lists already read,
    by name (a list never changes once written): a put into a run being removed meets the
    same lists for every file. Lists that are gone are dropped from it; an unreadable one
    (cut short by a crash) names nothing.
    """
    wanted = set(paths)
    base = location.full(REMOVALS_DIR)
    with location.errors("list", REMOVALS_DIR):
        try:
            names = [posixpath.basename(str(n)) for n in (
                os.listdir(base) if location.local else location.fs.ls(base, detail=False, refresh=True))]
        except (FileNotFoundError, NotADirectoryError):
            names = []
    present = {n for n in names if _REMOVAL.match(n)}
    for gone in set(known) - present:
        del known[gone]
    found: dict[str, str] = {}
    for name in sorted(present):
        listed = known.get(name)
        if listed is None:
            try:
                with open_file(f"{REMOVALS_DIR}/{name}") as f:
                    data = json.loads(f.read())
                listed = (str(data["label"]), frozenset(str(p) for p in data["paths"]))
            except OSError as err:
                if err.errno == errno.ENOENT:  # finished meanwhile
                    continue
                raise
            except (ValueError, KeyError, TypeError):
                listed = ("", frozenset())
            known[name] = listed
        for path in wanted & listed[1]:
            found.setdefault(path, listed[0])
    return found


def forget_removal(location: StoreLocation, rel: str) -> None:
    """Delete a list written by `record_removal`."""
    with location.errors("remove", rel):
        location.discard(location.full(location.relative(rel)))


def append_manifest(location: StoreLocation, run: str, entries: Iterable[Mapping[str, str]]) -> str:
    """Append ``entries`` to the manifest of ``run``; returns its path relative to the root ("" if none)."""
    text = "".join(_SORTED_JSON(dict(e)) + "\n" for e in entries)
    if not text:
        return ""
    name = sanitize_cached(run)
    if location.local:
        rel = f"{MANIFEST_DIR}/{name}.jsonl"
        full = location.full(rel)
        try:
            fd = os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            fd = os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        return rel
    rel = f"{MANIFEST_DIR}/{name}/{os.urandom(16).hex()}.jsonl"
    with location.errors("write", rel), location.fs.open(location.full(rel), "wb") as f:
        f.write(text.encode("utf-8"))
    return rel
