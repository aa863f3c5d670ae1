"""Inspect an artifact made elsewhere (e.g. by ``model.export()``): no model, no reference."""

from __future__ import annotations

from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock.export import formats
from tfdropblock.export.checks.rules import content_findings
from tfdropblock.export.core.errors import InputError


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
    fmt = format or formats.detect(path)
    graph = graph_of(Path(path), fmt)
    return content_findings(graph, layer_names, check="inspect")


def inspect_summary(path, layer_names=None):
    """``inspect`` plus what was read, for reports: dict with format, entry, op counts, findings."""
    fmt = formats.detect(path)
    graph = graph_of(Path(path), fmt)
    findings = content_findings(graph, layer_names, check="inspect")
    return {"path": str(path), "format": fmt, "entry": graph.entry,
            "op_count": sum(graph.ops.values()), "ops": dict(sorted(graph.ops.items())),
            "ok": not findings, "findings": [f.to_dict() for f in findings]}


def graph_of(path, fmt):
    """The graph of the artifact at ``path``, read by format ``fmt``'s reader.

    The boundary of the parsers for files from elsewhere: whatever a corrupted file makes a
    parser raise is that file's InputError, never another exception.
    """
    try:
        return formats.get(fmt).read_graph(path)
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"{path}: cannot parse this {fmt} artifact (nested too deeply).") \
            from None
    except MemoryError:
        raise InputError(f"{path}: cannot parse this {fmt} artifact (sizes beyond memory).") \
            from None
    except Exception as e:  # a parser gap: still this file's error, with what went wrong
        raise InputError(f"{path}: cannot parse this {fmt} artifact "
                         f"({describe_error(e, 300)}).") from None
