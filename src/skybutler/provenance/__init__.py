"""Provenance: executions, used / wasGeneratedBy / wasDerivedFrom, lineage, W3C PROV export.

Every attempt to run a quantum is an *execution*, recorded in the registry with
its host, times, CPU time, peak memory, software versions and configuration
hash. Its edges follow the Open Provenance Model:

- **used**: the execution was given this input (dataset id and the file it was read from);
- **wasGeneratedBy**: this output was written by the execution (and to which file);
- **wasDerivedFrom**: this output derives from that input. A task may report the inputs
  it actually used (a coadd that rejects outlier warps); the others were given
  ("used") but are not ancestors.

Lineage follows wasDerivedFrom up (ancestors) or down (descendants) with one
recursive SQL query.
"""

from .query import DatasetEntry, LineageEntry, Provenance, execution_summary, lineage, provenance_of
from .record import (
    KEY_PACKAGES,
    ExecutionRecord,
    ResourceUsage,
    config_hash,
    record_executions,
    software_versions,
)
from .states import FAILED_STATES, TERMINAL_STATES, ExecutionStatus
from .w3c import NAMESPACE, export_provenance, to_prov_document

__all__ = [
    "FAILED_STATES",
    "KEY_PACKAGES",
    "NAMESPACE",
    "TERMINAL_STATES",
    "DatasetEntry",
    "ExecutionRecord",
    "ExecutionStatus",
    "LineageEntry",
    "Provenance",
    "ResourceUsage",
    "config_hash",
    "execution_summary",
    "export_provenance",
    "lineage",
    "provenance_of",
    "record_executions",
    "software_versions",
    "to_prov_document",
]
