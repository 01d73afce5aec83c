"""skybutler: a data repository and batch-processing system for survey pipelines.

The names below are the public API; everything else is an implementation detail.

``import skybutler`` stays cheap: the errors and the version are imported here, every
other public name on first use (PEP 562 ``__getattr__``), so a process that needs
only the command line, an error class or the version never imports SQLAlchemy,
numpy or pydantic. ``from skybutler import Butler`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .errors import (
    BatchError,
    ChecksumMismatchError,
    CollectionError,
    ConfigError,
    DatabaseConnectionError,
    DataIdError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    DimensionError,
    DumpVersionError,
    ExecutionError,
    FileAccessError,
    FileLostError,
    FormatError,
    GraphError,
    MergeError,
    MissingDependencyError,
    PipelineError,
    QueryError,
    ReadOnlyError,
    RepositoryDamagedError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    SchemaVersionError,
    SkyButlerError,
    StagingError,
    StorageClassError,
    TemplateError,
    TransferConflictError,
    TransferError,
)

if TYPE_CHECKING:
    from .butler import Butler, Cutouts, FileDataset
    from .config import RepositoryConfig
    from .dimensions import DimensionUniverse, Region
    from .model import CollectionType, DataId, DatasetRef, DatasetType, Image
    from .pipeline import (
        Input,
        Output,
        Pipeline,
        PrerequisiteInput,
        QuantumContext,
        QuantumGraph,
        Task,
        TaskConfig,
        build_quantum_graph,
        execute_graph,
    )
    from .provenance import ExecutionStatus, export_provenance, lineage, provenance_of

# Public name -> the module that defines it, imported when the name is first asked for.
_LAZY_NAMES: dict[str, str] = {
    **dict.fromkeys(("Butler", "Cutouts", "FileDataset"), ".butler"),
    "RepositoryConfig": ".config",
    **dict.fromkeys(("DimensionUniverse", "Region"), ".dimensions"),
    **dict.fromkeys(("CollectionType", "DataId", "DatasetRef", "DatasetType", "Image"), ".model"),
    **dict.fromkeys(("Input", "Output", "Pipeline", "PrerequisiteInput", "QuantumContext", "QuantumGraph", "Task",
                     "TaskConfig", "build_quantum_graph", "execute_graph"), ".pipeline"),
    **dict.fromkeys(("ExecutionStatus", "export_provenance", "lineage", "provenance_of"), ".provenance"),
}

# The layers an eager package root used to leave as attributes (``skybutler.butler``, ...):
# still reachable after a bare ``import skybutler``, imported on first use.
_SUBMODULES = frozenset({"batch", "butler", "cli", "config", "datastore", "demo", "dimensions", "formats", "model",
                         "ops", "pipeline", "provenance", "registry", "transfer", "web"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES, *_SUBMODULES})


__all__ = [
    "BatchError",
    "Butler",
    "ChecksumMismatchError",
    "CollectionError",
    "CollectionType",
    "ConfigError",
    "Cutouts",
    "DataId",
    "DataIdError",
    "DatabaseConnectionError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetRef",
    "DatasetType",
    "DatasetTypeError",
    "DimensionError",
    "DimensionUniverse",
    "DumpVersionError",
    "ExecutionError",
    "ExecutionStatus",
    "FileAccessError",
    "FileDataset",
    "FileLostError",
    "FormatError",
    "GraphError",
    "Image",
    "Input",
    "MergeError",
    "MissingDependencyError",
    "Output",
    "Pipeline",
    "PipelineError",
    "PrerequisiteInput",
    "QuantumContext",
    "QuantumGraph",
    "QueryError",
    "ReadOnlyError",
    "Region",
    "RepositoryConfig",
    "RepositoryDamagedError",
    "RepositoryExistsError",
    "RepositoryNotFoundError",
    "SchemaVersionError",
    "SkyButlerError",
    "StagingError",
    "StorageClassError",
    "Task",
    "TaskConfig",
    "TemplateError",
    "TransferConflictError",
    "TransferError",
    "build_quantum_graph",
    "execute_graph",
    "export_provenance",
    "lineage",
    "provenance_of",
]
