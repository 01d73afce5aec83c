"""What a job gathers besides its outputs: science metadata, job figures, and the junk left in scratch.

Science metadata are FITS header keys an operator names per dataset type (an output's
``SEEING`` or ``MAGZERO``), read from the primary header and the first extension's.
Job figures are this process's and its children's CPU time and peak memory, the
environment variables a campaign names, and the disk left in scratch.

Junk is every file in scratch that the job did not expect: not an output, not a
staged input, not the scratch repository's own files (registry, its WAL, its
configuration, the datastore's run manifests). A task that writes a stray file in its
working directory, or anywhere under scratch, leaves it here; the job keeps it in a
tarball beside its outcome, for the operator, and never stages it out.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import sys
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE
from ..datastore import MANIFEST_DIR

__all__ = ["REGISTRY_FILE", "environment_values", "find_junk", "free_disk", "header_values", "process_usage",
           "task_modules", "write_junk"]

REGISTRY_FILE = "registry.sqlite3"
"""The scratch registry's file name (beside ``skybutler.yaml`` in scratch, and in the outcome)."""

_BOOKKEEPING = MANIFEST_DIR.split("/")[0] + "/"  # ".skybutler/": run manifests and pending removals


def header_values(path: str | Path, keys: Iterable[str]) -> dict[str, Any]:
    """Values of FITS header ``keys`` in a file: the primary header, then the first extension's.

    Keys found in neither are left out; values are plain JSON values (an undefined
    value is None, a NaN or infinity is None too).

    Raises
    ------
    OSError
        The file cannot be read as FITS (the caller names the dataset).
    """
    from astropy.io import fits

    wanted = [k.upper() for k in keys]
    out: dict[str, Any] = {}
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        headers = [hdul[0].header]
        if len(hdul) > 1:
            headers.append(hdul[1].header)
        for key in wanted:
            for header in headers:
                if key in header:
                    out[key] = _plain(header[key])
                    break
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    if type(value).__name__ == "Undefined":  # astropy's value of a card without one
        return None
    return str(value)


def process_usage() -> tuple[float, int]:
    """``(CPU seconds, peak resident bytes)`` of this process and its waited-for children.

    The peak is the larger of this process's and its largest child's (``ru_maxrss``);
    CPU time is the sum of user and system time of both.
    """
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    unit = 1 if sys.platform == "darwin" else 1024
    return cpu, max(me.ru_maxrss, children.ru_maxrss) * unit


def environment_values(names: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of environment variables ``names``; unset ones are left out."""
    env = os.environ if environ is None else environ
    return {name: env[name] for name in names if name in env}


def free_disk(path: str | Path) -> int | None:
    """Bytes free (to this user) in the file system holding ``path``; None when it cannot be told."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def task_modules(pipeline: Mapping[str, Any]) -> list[str]:
    """Modules of a pipeline mapping's task classes (``"pkg.mod:Class"`` or ``"pkg.mod.Class"``)."""
    out = []
    for entry in (pipeline.get("tasks") or {}).values():
        path = entry.get("class") if isinstance(entry, Mapping) else entry
        if isinstance(path, str) and path:
            out.append(path.partition(":")[0] if ":" in path else path.rpartition(".")[0])
    return [m for m in dict.fromkeys(out) if m]


def _own(rel: str) -> bool:
    """The scratch repository's own files (registry and its journals, configuration, run manifests)."""
    if rel == CONFIG_FILE or (rel.startswith(REGISTRY_FILE) and "/" not in rel):
        return True
    return rel.startswith("datastore/" + _BOOKKEEPING)


def find_junk(scratch: str | Path, expected: Iterable[str]) -> list[str]:
    """Files under ``scratch`` (relative POSIX paths, sorted) that are not expected and not its own.

    Parameters
    ----------
    scratch
        The job's scratch directory.
    expected
        Paths relative to ``scratch`` of files that belong there: staged inputs and
        outputs (``datastore/<path>``).

    Symbolic links count as files (a link to a directory is not followed).
    """
    scratch = str(scratch)
    keep = set(expected)
    out = []
    for dirpath, dirnames, filenames in os.walk(scratch):
        rel_dir = os.path.relpath(dirpath, scratch)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [*filenames, *links]:
            rel = prefix + name
            if rel not in keep and not _own(rel):
                out.append(rel)
    return sorted(out)


def write_junk(scratch: str | Path, paths: Iterable[str], tarball: str | Path) -> None:
    """Write ``paths`` (relative to ``scratch``) into a gzip tarball, links kept as links."""
    scratch = Path(scratch)
    Path(tarball).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz", compresslevel=6) as tar:
        for rel in paths:
            tar.add(scratch / rel, arcname=rel, recursive=False)
