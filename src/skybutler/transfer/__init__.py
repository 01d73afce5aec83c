"""Moving registry content and files between repositories: subsets for jobs, merges of their outcomes."""

from .merge import MergeReport, merge_run
from .subset import SUBSET_PAGE_SIZE, write_subset

__all__ = ["SUBSET_PAGE_SIZE", "MergeReport", "merge_run", "write_subset"]
