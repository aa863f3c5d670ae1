"""Inspect an artifact made elsewhere (e.g. by ``model.export()``): no model, no reference."""

from __future__ import annotations

from pathlib import Path

from tfdropblock.export.checks import content_findings
from tfdropblock.export.graphs import detect_format, graph_of


def inspect(path, layer_names=None, format=None):
    """Findings for a SavedModel directory, a ``.tflite`` or an ``.onnx`` file.

    Looks for random ops and the RNG ops that feed them (every SavedModel signature, every
    TFLite subgraph, every ONNX subgraph and model-local function a node calls), ONNX Dropout
    nodes whose ``training_mode`` is not a constant False, Flex ops, ops tf2onnx left
    unconverted, and node or tensor names carrying a DropBlock layer's name scope:
    ``layer_names`` if given (names, or ``parent/name`` for names several layers share), else
    Keras's default names (``drop_block2d``, ``drop_block2d_1``...; pass custom names
    explicitly).
    The file is only parsed, never run.

    Returns:
        list of :class:`Finding` (empty when clean).
    Raises:
        InputError: the path is missing, unreadable, truncated or not an artifact.
    """
    fmt = format or detect_format(path)
    graph = graph_of(Path(path), fmt)
    return content_findings(graph, layer_names, check="inspect")


def inspect_summary(path, layer_names=None):
    """``inspect`` plus what was read, for reports: dict with format, entry, op counts, findings."""
    fmt = detect_format(path)
    graph = graph_of(Path(path), fmt)
    findings = content_findings(graph, layer_names, check="inspect")
    return {"path": str(path), "format": fmt, "entry": graph.entry,
            "op_count": sum(graph.ops.values()), "ops": dict(sorted(graph.ops.items())),
            "ok": not findings, "findings": [f.to_dict() for f in findings]}
