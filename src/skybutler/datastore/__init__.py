"""Where bytes live: the fsspec-backed `Datastore` and the `FileTemplates` that name its files."""

from ._ingest import scan_local
from .backends import is_in_memory, is_url
from .store import MANIFEST_DIR, TRANSFER_MODES, Datastore, PendingFile, is_temporary
from .templates import DEFAULT_TEMPLATE, FileTemplate, FileTemplates, sanitize

__all__ = [
    "DEFAULT_TEMPLATE",
    "MANIFEST_DIR",
    "TRANSFER_MODES",
    "Datastore",
    "FileTemplate",
    "FileTemplates",
    "PendingFile",
    "is_in_memory",
    "is_temporary",
    "is_url",
    "sanitize",
    "scan_local",
]
