"""Where a datastore's files are: its filesystem and root, safe paths, and one error line per failure.

Split from `skybutler.datastore.store` so that the parts of the datastore (writes and
commits in ``_transactions``, ingest in ``_ingest``, the removal journal and run manifests
in ``_journal``, reading in ``store``) share one notion of "a path under the root" and one
translation of filesystem errors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..errors import DatasetExistsError, FileAccessError, SkyButlerError
from ._files import CHUNK
from .backends import filesystem, is_url, scheme_of

__all__ = ["StoreLocation", "file_hash"]

_log = logging.getLogger(__name__)

# Errors of remote filesystem libraries (s3fs and what it builds on) that mean "cannot reach
# or use the store": turned into one FileAccessError line naming the endpoint and the path.
_REMOTE_ERROR_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "urllib3", "requests")


def file_hash(fs: AbstractFileSystem, full: str, algorithm: str) -> str:
    """The hex digest of a file, read in chunks (a local file straight through ``open``: same errors, less work)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(full, "rb") if isinstance(fs, LocalFileSystem) else fs.open(full, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class StoreLocation:
    """One datastore root: its filesystem, full paths, and the errors of reaching it.

    Parameters
    ----------
    root
        The root as the user gave it (a local path or URL); messages name it.
    storage_options
        Passed to fsspec (credentials, endpoint URL, ...).

    Attributes
    ----------
    fs
        The fsspec filesystem of the root.
    path
        The root's path on ``fs`` without a trailing slash (empty for a bucket's top).
    local
        Whether the root is on local disk (temporary names and renames are used).
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any]):
        self.root = root
        self.storage_options = dict(storage_options)
        fs, root_path = filesystem(root, self.storage_options)
        self.fs: AbstractFileSystem = fs
        self.path = root_path.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)

    def relative(self, path: str) -> str:
        """``path`` normalised, or `FileAccessError` if it would leave the root."""
        bad = (
            not isinstance(path, str)
            or not path
            or "\0" in path
            or "\\" in path
            or path.startswith("/")
            or is_url(path)
            or ".." in path.split("/")
        )
        norm = "" if bad else posixpath.normpath(path)
        if bad or norm in (".", ""):
            raise FileAccessError(
                f"Path {path!r} would lie outside the datastore root {self.root} "
                "(paths are relative, POSIX-style, without '..' or NUL)"
            )
        return norm

    def full(self, relative: str) -> str:
        """The path on `fs` of a path relative to the root (already checked by `relative`)."""
        return f"{self.path}/{relative}" if self.path else f"/{relative}"

    def filesystem_of(self, url: str) -> tuple[AbstractFileSystem, str]:
        """The filesystem and path of a URL or local path outside the root."""
        if not is_url(url):
            url = os.path.abspath(url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if scheme_of(url) in protocols or (self.local and not is_url(url)):
            return self.fs, self.fs._strip_protocol(url)
        fs, path = filesystem(url)
        return fs, path

    def locate(self, path: str) -> tuple[AbstractFileSystem, str]:
        """Filesystem and full path for a read: a path under the root, or a ``direct`` URL."""
        if isinstance(path, str) and is_url(path):
            return self.filesystem_of(path)
        return self.fs, self.full(self.relative(path))

    def endpoint(self) -> str:
        """`` (endpoint URL)`` for messages when the storage options name one, else empty."""
        options = self.storage_options
        url = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
        return f" (endpoint {url})" if url else ""

    @contextlib.contextmanager
    def errors(self, action: str, path: str) -> Iterator[None]:
        """Turn an error of the filesystem library into one `FileAccessError` line.

        An unreachable or refusing object store otherwise surfaces as a botocore or aiohttp
        traceback of a hundred lines; the line names the store, its endpoint and the path.
        """
        try:
            yield
        except SkyButlerError:
            raise
        except (FileNotFoundError, FileExistsError, IsADirectoryError):
            raise  # callers give these their own meaning
        except Exception as err:
            module = type(err).__module__.split(".")[0]
            if not isinstance(err, OSError) and module not in _REMOTE_ERROR_MODULES:
                raise
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            code = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
            raise FileAccessError(
                code, f"Cannot {action} {path!r} in the datastore at {self.root}{self.endpoint()}: {reason}"
            ) from None

    def missing(self, path: str) -> FileAccessError:
        """The error for a file that is not there."""
        return FileAccessError(errno.ENOENT, f"No file {path!r} in the datastore at {self.root}")

    def exists_error(self, rel: str) -> DatasetExistsError:
        """The error for a write to a path that holds a file already."""
        return DatasetExistsError(
            f"File {rel!r} already exists in the datastore at {self.root}; "
            "no put ever overwrites a stored dataset"
        )

    def delete(self, full: str) -> None:
        """Delete a file by full path (errors as the filesystem raises them)."""
        if self.local:
            os.unlink(full)
        else:
            self.fs.rm_file(full)

    def discard(self, full: str) -> None:
        """Delete a file by full path if it is there; a failure is logged, never raised."""
        try:
            self.delete(full)
        except FileNotFoundError:
            pass
        except Exception as err:  # never mask the error that made us clean up
            _log.warning("Could not remove %s: %s", full, (str(err).splitlines() or [""])[0])
