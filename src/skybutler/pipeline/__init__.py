"""Pipelines: tasks and their connections, pipeline files, quantum graphs, single-node execution.

- `Task`, `TaskConfig`, `Input`, `PrerequisiteInput`, `Output`, `QuantumContext`: writing tasks;
- `Pipeline`: the YAML file of labelled, configured tasks, validated on load;
- `QuantumGraphBuilder` / `build_quantum_graph`: one quantum per task per data id, from registry joins;
- `QuantumGraph`: the graph and its file (plain versioned JSON lines, one quantum readable alone);
- `GraphExecutor` / `execute_graph`: runs a graph with N processes, recording provenance.
"""

from .builder import QuantumGraphBuilder, build_quantum_graph
from .executor import ExecutionReport, GraphExecutor, QuantumOutcome, QuantumRunner, execute_graph
from .graph import GRAPH_FORMAT, GRAPH_VERSION, Quantum, QuantumGraph
from .pipeline import DatasetTypeFlow, Pipeline, import_task
from .task import (
    Connection,
    DeferredHandle,
    Input,
    Output,
    PrerequisiteInput,
    QuantumContext,
    Task,
    TaskConfig,
)

__all__ = [
    "GRAPH_FORMAT",
    "GRAPH_VERSION",
    "Connection",
    "DatasetTypeFlow",
    "DeferredHandle",
    "ExecutionReport",
    "GraphExecutor",
    "Input",
    "Output",
    "Pipeline",
    "PrerequisiteInput",
    "Quantum",
    "QuantumContext",
    "QuantumGraph",
    "QuantumGraphBuilder",
    "QuantumOutcome",
    "QuantumRunner",
    "Task",
    "TaskConfig",
    "build_quantum_graph",
    "execute_graph",
    "import_task",
]
