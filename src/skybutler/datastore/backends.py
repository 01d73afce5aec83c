"""Datastore backends by short name: the one table from URL scheme to filesystem.

A datastore root is a local path or a URL whose scheme names a backend here
(``s3://bucket/prefix``). A backend living in an optional extra is imported on
first use only, and its absence is one `ConfigError` saying what to install,
never an ``ImportError`` traceback. Schemes fsspec knows but the datastore does
not support (``http://``, read-only) are refused with the list of supported ones.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from ..errors import ConfigError, MissingDependencyError

__all__ = ["BACKENDS", "Backend", "backend_of", "filesystem", "is_in_memory", "is_url", "scheme_of"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(url: str) -> str | None:
    """The URL scheme of ``url`` in lower case (``"s3"``), or None for a local path.

    The one test of "is this a URL?" in skybutler: a scheme followed by ``://``
    (``C:/data`` or ``raw/file.fits`` are paths).

    Examples
    --------
    >>> scheme_of("S3://bucket/key"), scheme_of("/data/raw.fits")
    ('s3', None)
    """
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``s3://...``, ``file://...``) rather than a local path."""
    return scheme_of(path) is not None


def is_in_memory(url: str) -> bool:
    """Whether ``url`` names fsspec's memory filesystem (one per process: never shared with workers)."""
    scheme = scheme_of(url)
    return scheme is not None and BACKENDS.get(scheme, _NO_BACKEND).name == "memory"


@dataclass(frozen=True)
class Backend:
    """One kind of place bytes can live.

    Attributes
    ----------
    name
        The short name users see (``"s3"``).
    module
        The module that implements it, when it is not part of fsspec itself.
    extra
        The skybutler extra that installs ``module`` (``pip install 'skybutler[extra]'``).
    """

    name: str
    module: str | None = None
    extra: str | None = None

    def require(self) -> None:
        """Raise `MissingDependencyError` with the install command when the backend's module is missing."""
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            raise MissingDependencyError(f"the {self.name} datastore needs {self.module}: pip install 'skybutler[{self.extra}]'")


#: URL scheme -> backend (aliases share one entry).
BACKENDS: dict[str, Backend] = {
    "file": Backend("file"),
    "local": Backend("file"),
    "memory": Backend("memory"),
    "s3": Backend("s3", module="s3fs", extra="s3"),
    "s3a": Backend("s3", module="s3fs", extra="s3"),
}
_NO_BACKEND = Backend("")


def backend_of(url: str) -> Backend:
    """The backend of a path (``file``) or URL; `ConfigError` for a scheme the datastore does not support."""
    scheme = scheme_of(url) or "file"
    try:
        return BACKENDS[scheme]
    except KeyError:
        known = ", ".join(sorted({f"{b.name}://" for b in BACKENDS.values()}))
        raise ConfigError(f"Datastore root {url!r} (datastore.root): unsupported scheme {scheme}:// "
                          f"(supported: {known}, or a local path)") from None


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``url``, with ``storage_options`` (credentials, endpoint, ...).

    Examples
    --------
    >>> fs, path = filesystem("memory://doc-backends/root")
    >>> fs.protocol, path
    ('memory', '/doc-backends/root')
    """
    backend = backend_of(url)
    backend.require()
    options = dict(storage_options or {})
    if backend.name not in ("file", "memory"):
        # Other processes (jobs staging out, other writers) add files all the time: a cached
        # listing would make them look missing to this one.
        options.setdefault("use_listings_cache", False)
    try:
        return url_to_fs(url, **options)
    except ImportError as exc:  # a dependency of the backend's own module
        raise MissingDependencyError(f"the {backend.name} datastore cannot be loaded ({exc}): "
                          f"pip install 'skybutler[{backend.extra or backend.name}]'") from None
    except TypeError as exc:  # an option the filesystem does not take
        raise ConfigError(f"datastore.storage_options are not accepted by the {backend.name} datastore: {exc}"
                          ) from None
