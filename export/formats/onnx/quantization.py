"""ONNX's quantized modes (dynamic, int8) through ONNX Runtime's quantizer, and the twin
comparison: a hash of each graph's structure that finds where two quantized graphs differ."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from tfdropblock._files import write_bytes
from tfdropblock._util import describe_error
from tfdropblock.export.run.calibration import check_calibration
from tfdropblock.export.checks.rules import MAX_DIFFERENCES, TwinComparison
from tfdropblock.export.core.errors import ConversionError, InputError
from tfdropblock.export.formats.quantized import Quantizer, check_mode
from tfdropblock.export.run.registry import check_bool
from tfdropblock.export.formats.onnx.reader import load_onnx, onnx_graph, onnx_inputs
from tfdropblock.export.formats.onnx.runtime import ort_runners

ONNX_MODES = ("dynamic", "int8")


# Quantized from the kit's float ONNX model with onnxruntime.quantization. quant_pre_process
# runs with ONNX shape inference only: its ORT graph optimisation would fold Identity, Dropout
# and constant If nodes, hiding from the structure check a leak that the float export still
# has. tf2onnx names nodes with a process-wide counter, so two exports of one graph are never
# byte-identical: the twin comparison hashes the graph without names.
def _reader(batches):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches, in order, to ORT's calibrator."""

        def __init__(self):
            self._iter = iter(batches)

        def get_next(self):
            return next(self._iter, None)

        def __len__(self):
            return len(batches)

    return Reader()


def quantize_onnx(model, mode, calibration=None, *, per_channel=True, reduce_range=True):
    """The ``onnx.ModelProto`` of ``model`` (a path, serialised bytes or a ModelProto)
    quantized with ``onnxruntime.quantization`` as ``mode``.

    Args:
        model: an ONNX model as the kit writes it (no unconverted op).
        mode: ``"int8"`` (static QDQ: int8 activations and weights, MinMax ranges measured by
            running ``model`` in ONNX Runtime on ``calibration``) or ``"dynamic"`` (int8
            weights; activations quantized at run time) (:data:`ONNX_MODES`).
        calibration: for ``"int8"``, a list of batches ``{input name: array}`` (ignored by
            ``"dynamic"``).
        per_channel: per-channel weight scales (more accurate for convolutions).
        reduce_range: 7-bit weights. ONNX Runtime's integer kernels on x86 CPUs without VNNI
            (AVX2) add pairs of uint8 x int8 products in int16, which saturates with full
            8-bit weights: measured on AVX2, a small CNN fell from 37 dB to 17 dB SNR at the
            default optimisation level (fused QLinearConv) while ORT_DISABLE_ALL (QDQ run in
            float) kept 37 dB; with 7-bit weights both give 36 dB. Pass False for VNNI or ARM
            targets.
    Raises:
        InputError: a bad mode, model or calibration set.
        ConversionError: the model holds unconverted ops, or the quantizer failed.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_dynamic, quantize_static)

    check_mode("onnx", mode)
    check_bool("per_channel")(per_channel)
    check_bool("reduce_range")(reduce_range)
    proto = _onnx_proto(model)
    left = onnx_graph(proto).unsupported_ops
    if left:
        raise ConversionError(f"cannot quantize an ONNX model holding unconverted ops: "
                              f"{', '.join(left)}")
    batches = check_calibration(calibration, onnx_inputs(proto), mode)
    with tempfile.TemporaryDirectory(prefix="tfdropblock-quant-") as tmp:
        tmp = Path(tmp)
        source, prepared, out = tmp / "model.onnx", tmp / "prepared.onnx", tmp / "quant.onnx"
        onnx.save_model(proto, str(source))
        logger = logging.getLogger()
        level = logger.level
        try:
            # Shape inference only (see the module docstring for why no optimisation).
            quant_pre_process(str(source), str(prepared), skip_optimization=True,
                              skip_symbolic_shape=True)
            logger.setLevel(max(level, logging.ERROR))  # ORT's advice is logged at WARNING
            if mode == "int8":
                quantize_static(str(prepared), str(out), _reader(batches),
                                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                reduce_range=reduce_range,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax,
                                calibration_providers=["CPUExecutionProvider"])
            else:
                quantize_dynamic(str(prepared), str(out), per_channel=per_channel,
                                 reduce_range=reduce_range, weight_type=QuantType.QInt8)
        except InputError:
            raise
        except Exception as e:
            raise ConversionError(f"ONNX {mode} quantization failed: "
                                  f"{describe_error(e)}") from e
        finally:
            logger.setLevel(level)
        return onnx.load_model(str(out))


def _onnx_proto(artifact):
    """A ModelProto from a path, serialised bytes or a ModelProto; InputError otherwise."""
    import onnx

    if isinstance(artifact, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(artifact))
        except Exception:
            raise InputError("Invalid model: the bytes are not a serialised ONNX model.") from None
        return proto
    return load_onnx(artifact)


def compare_onnx(a, b):
    """Every graph output's computation, hashed without names: a node's hash covers its op,
    domain, attributes and the hashes of its inputs (an initializer's covers its type, shape
    and bytes; a graph input's, its name, which is the model's interface), so equal hashes are
    the same computation with the same weights, scales and zero points."""
    ha, hb = _OnnxHasher(a), _OnnxHasher(b)
    differences = []
    outs_a, outs_b = ha.outputs(), hb.outputs()
    if sorted(outs_a) != sorted(outs_b):
        differences.append(f"graph outputs {sorted(outs_a)} vs {sorted(outs_b)}")
    if sorted(ha.inputs) != sorted(hb.inputs):
        differences.append(f"graph inputs {sorted(ha.inputs)} vs {sorted(hb.inputs)}")
    if dict(ha.opsets) != dict(hb.opsets):
        differences.append(f"opsets {dict(ha.opsets)} vs {dict(hb.opsets)}")
    diverging = [name for name in outs_a if name in outs_b and outs_a[name] != outs_b[name]]
    if diverging or len(ha.node_hashes) != len(hb.node_hashes):
        differences.extend(_first_divergence(ha, hb))
        if diverging:
            differences.append(f"graph output(s) {diverging} computed differently")
    differences = differences[:MAX_DIFFERENCES]
    identical = not differences
    return TwinComparison(identical, a.SerializeToString() == b.SerializeToString(), differences,
                          len(ha.node_hashes) + ha.initializers)


def _first_divergence(ha, hb):
    """The nodes of ``ha`` whose computation ``hb`` lacks although all their inputs are
    shared: where the two graphs start to differ, with the differing initializers."""
    shared_values = set(hb.value_hashes.values())
    known_b = set(hb.node_hashes.values())
    found = []
    for node in ha.order:
        h = ha.node_hashes[id(node)]
        if h in known_b:
            continue
        produced = [i for i in node.input if i and i not in ha.initializer_names]
        if all(ha.value_hashes.get(i) in shared_values for i in produced):
            changed = [i for i in node.input if i in ha.initializer_names
                       and ha.value_hashes[i] not in shared_values]
            text = f"node {node.name!r} ({node.op_type})"
            if changed:
                text += " has different " + ", ".join(
                    f"initializer {n!r} = {ha.describe_initializer(n)}" for n in changed[:2])
            else:
                text += " has no counterpart in the twin"
            found.append(text)
            if len(found) >= MAX_DIFFERENCES - 1:
                break
    return found or ["the graphs differ"]


class _OnnxHasher:
    def __init__(self, proto):
        self.proto = proto
        self.opsets = {imp.domain or "": imp.version for imp in proto.opset_import}
        self.value_hashes = {}
        self.node_hashes = {}
        self.order = list(proto.graph.node)
        self.initializer_names = set()
        self.initializers = 0
        self._tensors = {}
        self.inputs = [v.name for v in proto.graph.input]
        self._hash_graph(proto.graph, self.value_hashes)

    def _hash_graph(self, graph, scope, top=True):
        from onnx import numpy_helper

        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            digest = _sha(b"init", str(init.data_type).encode(), str(list(init.dims)).encode(),
                          np.ascontiguousarray(array).tobytes())
            scope[init.name] = digest
            if top:
                self.initializer_names.add(init.name)
                self.initializers += 1
                self._tensors[init.name] = array
        for value in graph.input:
            if value.name not in scope:
                scope[value.name] = _sha(b"input", value.name.encode())
        pending = list(graph.node)
        # Nodes are listed in topological order by the ONNX spec; a second pass covers a
        # writer that did not, and anything left is hashed with unknown inputs.
        for _ in range(2):
            waiting = []
            for node in pending:
                if all((not i) or i in scope for i in node.input):
                    self._hash_node(node, scope, top)
                else:
                    waiting.append(node)
            pending = waiting
        for node in pending:
            self._hash_node(node, scope, top)
        return scope

    def _hash_node(self, node, scope, top):
        import onnx

        parts = [b"node", (node.domain or "").encode(), node.op_type.encode()]
        for attr in sorted(node.attribute, key=lambda a: a.name):
            if attr.type == onnx.AttributeProto.GRAPH:
                parts.append(self._hash_subgraph(attr.g, scope))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                parts.extend(self._hash_subgraph(g, scope) for g in attr.graphs)
            else:
                copy = onnx.AttributeProto()
                copy.CopyFrom(attr)
                copy.doc_string = ""
                parts.append(copy.SerializeToString(deterministic=True))
        parts.extend((scope.get(i, _sha(b"unknown", i.encode())) if i else b"-")
                     for i in node.input)
        digest = _sha(*parts)
        if top:
            self.node_hashes[id(node)] = digest
        for k, out in enumerate(node.output):
            if out:
                scope[out] = _sha(digest, str(k).encode())

    def _hash_subgraph(self, graph, outer):
        inner = self._hash_graph(graph, dict(outer), top=False)
        return _sha(b"graph", *[inner.get(o.name, b"?") for o in graph.output])

    def outputs(self):
        return {o.name: self.value_hashes.get(o.name) for o in self.proto.graph.output}

    def describe_initializer(self, name):
        array = self._tensors[name]
        if array.size <= 4:
            return np.array2string(array.reshape(-1), precision=6)
        return f"{array.dtype.name}{list(array.shape)}"


def _sha(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


class OnnxQuantizer(Quantizer):
    """ONNX Runtime's quantizer, as :data:`ONNX_MODES`."""

    modes = ONNX_MODES

    def quantize(self, run, mode, reference, calibration):
        quantized = quantize_onnx(run.get("onnx", reference), mode, calibration)
        write_bytes(run.path(f"onnx:{mode}", reference), quantized.SerializeToString())
        return quantized

    def runtimes(self, artifact):
        import onnx

        onnx.checker.check_model(artifact, full_check=True)
        return ort_runners(artifact.SerializeToString())

    def twin_comparison(self, artifact, twin):
        return compare_onnx(_onnx_proto(artifact), _onnx_proto(twin))
