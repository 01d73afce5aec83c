"""skybutler: a data repository and batch-processing system for survey pipelines.

The names below are the public API; everything else is an implementation detail.
"""

from .butler import Butler, Cutouts, FileDataset
from .config import RepositoryConfig
from .dimensions import DimensionUniverse, Region
from .errors import (
    CollectionError,
    ConfigError,
    DatabaseConnectionError,
    DataIdError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    DimensionError,
    ExecutionError,
    FileAccessError,
    FormatError,
    GraphError,
    PipelineError,
    QueryError,
    ReadOnlyError,
    RepositoryNotFoundError,
    SkyButlerError,
    StorageClassError,
    TemplateError,
)
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

__version__ = "0.1.0"

__all__ = [
    "Butler",
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
    "ExecutionError",
    "ExecutionStatus",
    "FileAccessError",
    "FileDataset",
    "FormatError",
    "GraphError",
    "Image",
    "Input",
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
    "RepositoryNotFoundError",
    "SkyButlerError",
    "StorageClassError",
    "Task",
    "TaskConfig",
    "TemplateError",
    "build_quantum_graph",
    "execute_graph",
    "export_provenance",
    "lineage",
    "provenance_of",
]
