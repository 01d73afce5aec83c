"""Every exception a user of skybutler can catch.

All of them derive from `SkyButlerError`; those caused by user input also
derive from the matching builtin so ``except KeyError`` style code works::

    SkyButlerError
    ├── ConfigError(ValueError)               bad or missing configuration, an unknown option value
    │   ├── TemplateError                      a file template that is invalid or not unique
    │   └── MissingDependencyError(ImportError)  an optional dependency (a skybutler extra) not installed
    ├── RepositoryNotFoundError(FileNotFoundError)  a path or URL that is not a repository
    ├── RepositoryExistsError(FileExistsError)      a place that already holds a repository (or a demo)
    ├── RepositoryDamagedError(OSError)             a registry database that is damaged or unreadable
    ├── SchemaVersionError(RuntimeError)            a registry schema older or newer than this skybutler's
    ├── DatabaseConnectionError(ConnectionError)    a database server that cannot be reached
    ├── DimensionError(ValueError)             unknown dimension, bad data id, missing record
    │   └── DataIdError(KeyError)              a data id with missing, extra or mistyped keys
    ├── DatasetTypeError(ValueError)           unknown or conflicting dataset type
    ├── CollectionError(ValueError)            unknown collection, wrong collection type
    ├── DatasetNotFoundError(LookupError)      no dataset for a ref or a data id
    ├── DatasetExistsError(ValueError)         a put or ingest that would overwrite a dataset
    ├── StorageClassError(TypeError)           an object that does not fit its storage class
    ├── FormatError(ValueError)                a file that cannot be read or written in its format
    ├── FileAccessError(OSError)               a file that is missing, unreadable or outside the root
    │   ├── FileLostError                      a dataset whose file is gone (recorded lost, or missing now)
    │   └── ChecksumMismatchError              a file whose bytes no longer match the registry's checksum
    ├── QueryError(ValueError)                 an invalid query expression
    ├── ReadOnlyError(PermissionError)         a write through a read-only butler, or to a read-only file
    ├── PipelineError(ValueError)              an invalid pipeline, task or connection
    ├── GraphError(ValueError)                 a quantum graph that cannot be built or read
    ├── ExecutionError(RuntimeError)           a quantum or job that failed
    │   └── StagingError                       a job input that is missing or not what the manifest says
    ├── MergeError(RuntimeError)               a job outcome that cannot be merged (conflict, damage)
    ├── TransferError(RuntimeError)            an export, import or transfer that cannot be done
    │   ├── TransferConflictError              datasets the target holds otherwise (same type, data id, run)
    │   └── DumpVersionError                   a dump written by a newer skybutler, or not a dump
    └── BatchError(RuntimeError)               a campaign that cannot be submitted, or an unknown submission
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "ChecksumMismatchError",
    "CollectionError",
    "ConfigError",
    "DataIdError",
    "DatabaseConnectionError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetTypeError",
    "DimensionError",
    "DumpVersionError",
    "ExecutionError",
    "FileAccessError",
    "FileLostError",
    "FormatError",
    "GraphError",
    "MergeError",
    "MissingDependencyError",
    "PipelineError",
    "QueryError",
    "ReadOnlyError",
    "RepositoryDamagedError",
    "RepositoryExistsError",
    "RepositoryNotFoundError",
    "SchemaVersionError",
    "SkyButlerError",
    "StagingError",
    "StorageClassError",
    "TemplateError",
    "TransferConflictError",
    "TransferError",
]


class SkyButlerError(Exception):
    """Root of every error skybutler raises on purpose."""


class ConfigError(ValueError, SkyButlerError):
    """A configuration value is invalid or missing."""


class TemplateError(ConfigError):
    """A file template is invalid, unsafe, or cannot give unique names."""


class MissingDependencyError(ImportError, ConfigError):
    """An optional dependency is not installed; the message gives the ``pip install`` line.

    Also a `ConfigError`: the configuration asked for a backend this installation lacks.
    """


class RepositoryNotFoundError(FileNotFoundError, SkyButlerError):
    """A path or URL does not hold a skybutler repository."""


class RepositoryExistsError(FileExistsError, SkyButlerError):
    """A repository (or another thing skybutler would create, e.g. a demo) is already there."""


class RepositoryDamagedError(OSError, SkyButlerError):
    """A registry database is damaged, truncated, not a database, or cannot be read."""


class SchemaVersionError(RuntimeError, SkyButlerError):
    """A registry's schema is older (migrate it) or newer (upgrade skybutler) than this skybutler's."""


class DatabaseConnectionError(ConnectionError, SkyButlerError):
    """A registry database cannot be reached (the message never shows a password)."""


class DimensionError(ValueError, SkyButlerError):
    """An unknown dimension, a bad dimension record, or a data id value with no record."""


class DataIdError(KeyError, DimensionError):
    """A data id with a missing, extra or mistyped key."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class DatasetTypeError(ValueError, SkyButlerError):
    """An unknown dataset type, or one registered differently before."""


class CollectionError(ValueError, SkyButlerError):
    """An unknown collection, or a collection of the wrong type for the operation."""


class DatasetNotFoundError(LookupError, SkyButlerError):
    """No dataset matches a ref, or a dataset type and data id in the given collections."""


class DatasetExistsError(ValueError, SkyButlerError):
    """A dataset already exists for this dataset type, data id and run."""


class StorageClassError(TypeError, SkyButlerError):
    """An object does not match the storage class of its dataset type."""


class FormatError(ValueError, SkyButlerError):
    """A file cannot be read or written in the format its storage class uses."""


class FileAccessError(OSError, SkyButlerError):
    """A file is missing, unreadable, or would lie outside the datastore root."""

    def __str__(self) -> str:  # the message already names the file; skip OSError's "[Errno N]"
        return str(self.strerror) if self.strerror else super().__str__()


class FileLostError(FileAccessError):
    """A dataset whose file is gone: recorded lost by ``verify --mark-lost``, or missing when read."""


class ChecksumMismatchError(FileAccessError):
    """A file whose bytes no longer match the checksum the registry recorded (bit-rot, tampering)."""


class QueryError(ValueError, SkyButlerError):
    """A query expression is invalid: a syntax error, an unknown name, a bad literal."""


class ReadOnlyError(PermissionError, SkyButlerError):
    """A write was attempted through a butler opened read-only, or to a file opened for reading."""


class PipelineError(ValueError, SkyButlerError):
    """A pipeline definition, task or connection is invalid."""


class GraphError(ValueError, SkyButlerError):
    """A quantum graph cannot be built, or a graph file cannot be read."""


class ExecutionError(RuntimeError, SkyButlerError):
    """A quantum or job failed while running."""


class StagingError(ExecutionError):
    """A job's input could not be staged: missing, or of another size or checksum than its manifest says."""


class MergeError(RuntimeError, SkyButlerError):
    """A job's outcome cannot be merged into the central repository (damaged, or conflicting with what is there)."""


class TransferError(RuntimeError, SkyButlerError):
    """An export, import or transfer between repositories that cannot be done."""


class TransferConflictError(TransferError):
    """Datasets refused because the target holds others for the same type, data id and run.

    Everything else was written; nothing was overwritten. ``conflicts`` has one line per
    refused dataset.
    """

    def __init__(self, message: str, conflicts: list[str] | None = None):
        super().__init__(message)
        self.conflicts = list(conflicts or [])


class DumpVersionError(TransferError):
    """A dump this skybutler cannot read: written by a newer version (both named), or not a dump."""


class BatchError(RuntimeError, SkyButlerError):
    """A campaign cannot be submitted as configured, or a submission named does not exist."""
