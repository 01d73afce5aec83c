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
    "FileAccessError",
    "FileDataset",
    "FormatError",
    "GraphError",
    "Image",
    "PipelineError",
    "QueryError",
    "ReadOnlyError",
    "Region",
    "RepositoryConfig",
    "RepositoryNotFoundError",
    "SkyButlerError",
    "StorageClassError",
    "TemplateError",
]
