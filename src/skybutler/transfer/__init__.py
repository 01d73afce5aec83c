"""Moving registry content and files between repositories: subsets for jobs, merges of their outcomes,
and transfers of any content (`ContentSource`) into a repository (`import_content`)."""

from .content import (
    TRANSFER_CHOICES,
    Certification,
    CollectionContent,
    ContentSource,
    DatasetContent,
    ProvenanceBatch,
    TransferReport,
)
from .importer import import_content
from .merge import MergeReport, merge_run
from .source import TRANSFER_SCOPES, RegistrySource
from .subset import SUBSET_PAGE_SIZE, write_subset

__all__ = [
    "SUBSET_PAGE_SIZE",
    "TRANSFER_CHOICES",
    "TRANSFER_SCOPES",
    "Certification",
    "CollectionContent",
    "ContentSource",
    "DatasetContent",
    "MergeReport",
    "ProvenanceBatch",
    "RegistrySource",
    "TransferReport",
    "import_content",
    "merge_run",
    "write_subset",
]
