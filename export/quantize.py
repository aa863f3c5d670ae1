"""Quantized deployment: float16, dynamic-range and int8 TFLite, dynamic and int8 ONNX, and the
proof that DropBlock folds away in them too.

Artifacts (pure functions: paths, bytes or protos in, bytes or protos out):

* :func:`quantize_tflite` converts the kit's SavedModel (its ``serve`` signature, which calls
  ``model(x, training=False)``) with builtin ops only: ``float16`` (weights in half precision),
  ``dynamic`` (int8 weights, float activations), ``int8`` (full integer: weights and
  activations, calibrated on a representative dataset; float inputs and outputs unless
  ``int8_io``).
* :func:`quantize_onnx` quantizes the kit's ONNX model with ``onnxruntime.quantization``:
  ``int8`` (static, QDQ format, int8 activations and per-channel int8 weights, MinMax
  calibration) or ``dynamic`` (int8 weights, activations quantized at run time); weights use
  7 bits by default (``reduce_range``, for x86 CPUs without VNNI).

Calibration never runs Keras: the batches go through the exported inference graph (the
TFLite calibrator runs the float model converted from the SavedModel's ``serve`` signature;
ONNX Runtime runs the ONNX model), so no DropBlock can be in training mode while scales are
measured. What proves it for a given model is :func:`compare_quantized`: the model quantized
with the same batches as its identity twin (every DropBlock replaced by identity, see
:func:`~tfdropblock.export.identity.dropblocks_as_identity`) must be the same artifact, every
weight, scale and zero point included, and must give bit-identical outputs.

Checks (:func:`verify_quantized` runs them all on one artifact and its twin):

* ``structure``: the op multiset equals the twin's quantized the same way; no random, Flex or
  unconverted op, no name from a DropBlock's scope (:func:`.checks.structure_check`);
* ``twin``: the artifact equals the twin's, tensor by tensor (TFLite: types, shapes,
  quantization parameters and buffer bytes of every tensor; ONNX: a name-independent hash of
  every node, attribute and initializer), and the two give bit-identical outputs;
* ``validity``: LiteRT without default delegates runs it; ``onnx.checker`` full check and ONNX
  Runtime (CPU) load it;
* ``quality``: SNR, cosine, top-1 against Keras's float outputs (:mod:`.metrics`);
* ``determinism``: two runs give bit-identical outputs;
* ``coverage`` (TFLite int8 only): the ops still computing in float, a warning when any.

Converter facts (TensorFlow 2.21, onnxruntime 1.32):

* TFLite's dynamic-range mode leaves tensors of fewer than 1024 elements in float: a model
  with only small weights comes out unchanged.
* Full-integer int8 uses ``TFLITE_BUILTINS_INT8`` only, yet an op the quantizer does not
  handle still converts and stays float between a DEQUANTIZE and a QUANTIZE: ``CONV_3D``
  (DropBlock3D's volumes) is one, and dynamic range leaves its weights in float too. The
  ``coverage`` check lists such ops (a warning: the artifact is valid, but not all-integer).
* tf2onnx names nodes with a process-wide counter (``conv__6`` in one conversion,
  ``conv__21`` in the next), so two ONNX exports of the same graph are never byte-identical:
  the twin comparison hashes the graph without names.
* ``quant_pre_process`` runs here with ONNX shape inference only: its ORT graph optimisation
  would fold Identity, Dropout and constant ``If`` nodes, hiding from the structure check a
  leak that the float export still has; its symbolic shape inference needs sympy, which the
  CNNs checked here do not need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tfdropblock.export import checks
from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.formats.onnx import load_onnx, onnx_graph
from tfdropblock.export.formats.saved_model import ENDPOINT, read_saved_model
from tfdropblock.export.formats.tflite import TFLiteRunner, tflite_graph
from tfdropblock.export.metrics import quality_check, thresholds_for
from tfdropblock.export.report import CheckResult, Finding

TFLITE_MODES = ("float16", "dynamic", "int8")
ONNX_MODES = ("dynamic", "int8")
MODES = {"tflite": TFLITE_MODES, "onnx": ONNX_MODES}
MAX_DIFFERENCES = 8

_UNSUPPORTED = re.compile(r"'tf\.(\w+)' op")
# The TFLite calibrator runs the deprecated tf.lite.Interpreter internally: not ours to fix.
_INTERPRETER_WARNING = r".*tf\.lite\.Interpreter is deprecated.*"


def check_mode(fmt, mode):
    """``mode`` if ``fmt`` supports it; InputError naming the accepted values otherwise."""
    if fmt not in MODES:
        raise InputError(f"Invalid format={fmt!r}: expected one of {tuple(MODES)}.")
    if mode not in MODES[fmt]:
        raise InputError(f"Invalid mode={mode!r} for {fmt}: expected one of {MODES[fmt]}.")
    return mode


def check_calibration(calibration, inputs, mode="int8"):
    """``calibration`` as a list of batches ``{input name: array}``, checked against ``inputs``
    (``{name: numpy dtype}`` of the artifact) and cast to their dtypes.

    Accepts one batch (a dict) or a non-empty list of them; each batch has every input, a
    batch axis of at least 1 row, the same rows for every input, and finite floats.
    """
    if mode != "int8":
        return None
    if calibration is None:
        raise InputError("Invalid calibration=None: mode='int8' needs calibration batches "
                         "(a list of {input name: array}) to measure activation ranges.")
    batches = [calibration] if isinstance(calibration, dict) else calibration
    try:
        batches = list(batches)
    except TypeError:
        raise InputError(f"Invalid calibration of type {type(calibration).__name__}: expected "
                         "a dict {input name: array} or a list of them.") from None
    if not batches:
        raise InputError("Invalid calibration: no batch; expected at least one "
                         "{input name: array}.")
    checked = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict):
            raise InputError(f"Invalid calibration[{i}] of type {type(batch).__name__}: "
                             f"expected a dict {{input name: array}} with keys {sorted(inputs)}.")
        if sorted(batch) != sorted(inputs):
            raise InputError(f"Invalid calibration[{i}]: inputs {sorted(batch)}; the artifact "
                             f"takes {sorted(inputs)}.")
        named, rows = {}, set()
        for name, dtype in inputs.items():
            array = np.asarray(batch[name])
            if array.ndim == 0 or len(array) == 0:
                raise InputError(f"Invalid calibration[{i}][{name!r}]: shape {array.shape}; "
                                 "expected a batch axis with at least one row.")
            try:
                array = array.astype(dtype)
            except (TypeError, ValueError):
                raise InputError(f"Invalid calibration[{i}][{name!r}]: dtype {array.dtype} "
                                 f"cannot be cast to the input's {np.dtype(dtype).name}.") from None
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                raise InputError(f"Invalid calibration[{i}][{name!r}]: NaN or infinite values "
                                 "would make every activation range meaningless.")
            rows.add(len(array))
            named[name] = array
        if len(rows) != 1:
            raise InputError(f"Invalid calibration[{i}]: inputs have different batch sizes "
                             f"{ {k: len(v) for k, v in named.items()} }.")
        checked.append(named)
    return checked


# -- TFLite ------------------------------------------------------------------------------------

def saved_model_inputs(saved_model_dir, signature=ENDPOINT):
    """``{input name: numpy dtype}`` of a SavedModel signature, read from saved_model.pb."""
    import tensorflow as tf

    meta = read_saved_model(saved_model_dir)
    if signature not in meta.signature_def:
        raise InputError(f"{saved_model_dir}: no signature {signature!r}; has "
                         f"{sorted(meta.signature_def)}.")
    return {name: tf.dtypes.as_dtype(spec.dtype).as_numpy_dtype
            for name, spec in meta.signature_def[signature].inputs.items()}


def quantize_tflite(saved_model_dir, mode, calibration=None, *, int8_io=False):
    """Flatbuffer bytes of the SavedModel's ``serve`` signature quantized as ``mode``.

    Args:
        saved_model_dir: a SavedModel written by the kit (``serve`` endpoint calling
            ``model(x, training=False)``).
        mode: ``"float16"``, ``"dynamic"`` or ``"int8"`` (:data:`TFLITE_MODES`).
        calibration: for ``"int8"``, the representative dataset: a list of batches
            ``{input name: array}`` (ignored by the other modes).
        int8_io: ``"int8"`` only: int8 inputs and outputs (quantize inputs and dequantize
            outputs with their tensors' scale and zero point, as :class:`QuantizedTFLiteRunner`
            does) instead of float ones.
    Raises:
        InputError: a bad mode, flag or calibration set.
        ConversionError: the converter failed (an op with no builtin or int8 kernel included).
    """
    import tensorflow as tf

    check_mode("tflite", mode)
    if not isinstance(int8_io, bool):
        raise InputError(f"Invalid int8_io={int8_io!r}: expected True or False.")
    if int8_io and mode != "int8":
        raise InputError(f"Invalid int8_io=True with mode={mode!r}: int8 inputs and outputs "
                         "need mode='int8'.")
    batches = check_calibration(calibration, saved_model_inputs(saved_model_dir), mode)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                         signature_keys=[ENDPOINT])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        # Integer kernels only: an op the quantizer knows but cannot make int8 fails here
        # (ops it does not know, such as CONV_3D, stay float: see float_ops).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: iter(batches)
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_INTERPRETER_WARNING)
            return converter.convert()
    except Exception as e:
        message = str(e)
        unsupported = sorted(set(_UNSUPPORTED.findall(message)))
        if unsupported:
            summary = f"ops not supported by the builtin runtime: {', '.join(unsupported)}"
        else:
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            summary = (lines[0] if lines else type(e).__name__)[:400]
        raise ConversionError(f"TFLite {mode} conversion failed: {summary}", format="tflite",
                              unsupported_ops=unsupported) from e


class QuantizedTFLiteRunner(TFLiteRunner):
    """Runs a (quantized) TFLite model with float inputs and outputs, whatever its I/O types:
    an int8 input is quantized with its tensor's scale and zero point, an int8 output
    dequantized. ``raw`` runs without that conversion."""

    def __init__(self, model_content):
        super().__init__(model_content)
        self._in = self.runner.get_input_details()
        self._out = self.runner.get_output_details()

    def raw(self, named_inputs):
        return super().__call__(named_inputs)

    def __call__(self, named_inputs):
        feed = {name: _quantize(np.asarray(named_inputs[name]), d) for name, d in self._in.items()}
        return {name: _dequantize(value, self._out[name]) for name, value in self.raw(feed).items()}

    def io(self):
        """As :meth:`TFLiteRunner.io`, with the dtypes a caller feeds and gets (float for
        quantized I/O) and the artifact's own in ``stored_dtype``."""
        described = super().io()
        for side, details in (("inputs", self._in), ("outputs", self._out)):
            for t in described[side]:
                d = details[t["name"]]
                t["stored_dtype"] = t["dtype"]
                if _quantized_io(d):
                    t["dtype"] = "float32"
        return described


def _quantized_io(details):
    dtype = np.dtype(details["dtype"])
    scale, _ = details.get("quantization", (0.0, 0))
    return np.issubdtype(dtype, np.integer) and scale != 0.0


def _quantize(x, details):
    if not _quantized_io(details) or np.issubdtype(x.dtype, np.integer):
        return x
    scale, zero_point = details["quantization"]
    info = np.iinfo(np.dtype(details["dtype"]))
    q = np.round(x.astype(np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(details["dtype"])


def _dequantize(q, details):
    if not _quantized_io(details):
        return q
    scale, zero_point = details["quantization"]
    return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)


# -- ONNX --------------------------------------------------------------------------------------

def onnx_inputs(proto):
    """``{input name: numpy dtype}`` of an ONNX graph (initializers are not inputs)."""
    import onnx

    initializers = {t.name for t in proto.graph.initializer}
    return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            for v in proto.graph.input if v.name not in initializers}


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
    for name, flag in (("per_channel", per_channel), ("reduce_range", reduce_range)):
        if not isinstance(flag, bool):
            raise InputError(f"Invalid {name}={flag!r}: expected True or False.")
    if isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except Exception:
            raise InputError("Invalid model: the bytes are not a serialised ONNX model.") from None
    else:
        proto = load_onnx(model)
    left = onnx_graph(proto).unsupported_ops
    if left:
        raise ConversionError(f"cannot quantize an ONNX model holding unconverted ops: "
                              f"{', '.join(left)}", format="onnx", unsupported_ops=left)
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
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise ConversionError(f"ONNX {mode} quantization failed: {type(e).__name__}: "
                                  f"{(lines[0] if lines else '')[:400]}", format="onnx") from e
        finally:
            logger.setLevel(level)
        return onnx.load_model(str(out))


def ort_runners(proto):
    """ONNX Runtime (CPU) runners of a quantized model at both optimisation levels: without
    optimisation the QDQ pairs run as written; the default level fuses them into integer
    kernels (QLinearConv...), which is what a deployment runs."""
    from tfdropblock.export.formats.onnx import OrtRunner

    data = proto.SerializeToString()
    return {"onnxruntime (ORT_DISABLE_ALL)": OrtRunner(data, "disable_all"),
            "onnxruntime (default optimisations)": OrtRunner(data, "default")}


# -- Comparison with the identity twin ---------------------------------------------------------

@dataclasses.dataclass
class TwinComparison:
    """Whether a quantized artifact is its identity twin's. ``identical``: same ops, tensors,
    weights, scales and zero points (names aside); ``byte_identical``: the files are equal;
    ``differences``: the first differences found, as text; ``compared``: tensors (TFLite) or
    nodes and initializers (ONNX) compared."""

    identical: bool
    byte_identical: bool
    differences: list
    compared: int

    def to_dict(self):
        return dataclasses.asdict(self)


def compare_quantized(fmt, artifact, twin):
    """:class:`TwinComparison` of two TFLite flatbuffers (bytes or paths) or two ONNX models
    (paths, bytes or ModelProtos)."""
    if fmt == "tflite":
        return _compare_tflite(_tflite_bytes(artifact), _tflite_bytes(twin))
    if fmt == "onnx":
        return _compare_onnx(_onnx_proto(artifact), _onnx_proto(twin))
    raise InputError(f"Invalid format={fmt!r}: expected 'tflite' or 'onnx'.")


def _tflite_bytes(artifact):
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return bytes(artifact)
    tflite_graph(artifact)  # InputError for anything that is not a flatbuffer
    return Path(artifact).read_bytes()


def _onnx_proto(artifact):
    import onnx

    if isinstance(artifact, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        proto.ParseFromString(bytes(artifact))
        return proto
    return load_onnx(artifact)


def _compare_tflite(a, b):
    """Tensor by tensor, in the converter's order: type, shape, quantization and buffer bytes.

    The flatbuffers are parsed with the generated (trusting) reader: both are artifacts this
    module just produced, not files from elsewhere.
    """
    ma, mb = _tflite_model(a), _tflite_model(b)
    differences, compared = [], 0

    def differ(text):
        if len(differences) < MAX_DIFFERENCES:
            differences.append(text)

    if len(ma.subgraphs) != len(mb.subgraphs):
        differ(f"{len(ma.subgraphs)} subgraphs vs {len(mb.subgraphs)}")
    for s, (ga, gb) in enumerate(zip(ma.subgraphs, mb.subgraphs)):
        if len(ga.tensors) != len(gb.tensors):
            differ(f"subgraph {s}: {len(ga.tensors)} tensors vs {len(gb.tensors)}")
        if len(ga.operators) != len(gb.operators):
            differ(f"subgraph {s}: {len(ga.operators)} operators vs {len(gb.operators)}")
        for i, (oa, ob) in enumerate(zip(ga.operators, gb.operators)):
            ca, cb = _opcode(ma, oa), _opcode(mb, ob)
            if ca != cb or list(_ints(oa.inputs)) != list(_ints(ob.inputs)) or \
                    list(_ints(oa.outputs)) != list(_ints(ob.outputs)):
                differ(f"subgraph {s}: operator {i} is {ca} vs {cb} (or wired differently)")
            elif _plain(oa.builtinOptions) != _plain(ob.builtinOptions):
                differ(f"subgraph {s}: operator {i} ({ca}) has different options")
        for i, (ta, tb) in enumerate(zip(ga.tensors, gb.tensors)):
            compared += 1
            name = _name(ta.name)
            for what, va, vb in (
                    ("type", ta.type, tb.type),
                    ("shape", list(_ints(ta.shape)), list(_ints(tb.shape))),
                    ("shape signature", list(_ints(ta.shapeSignature)),
                     list(_ints(tb.shapeSignature)))):
                if va != vb:
                    differ(f"subgraph {s}: tensor {i} {name!r}: {what} {va} vs {vb}")
            qa, qb = _quantization(ta.quantization), _quantization(tb.quantization)
            for key in ("scale", "zeroPoint", "quantizedDimension", "min", "max"):
                if qa.get(key) != qb.get(key):
                    differ(f"subgraph {s}: tensor {i} {name!r}: quantization {key} "
                           f"{_short(qa.get(key))} vs {_short(qb.get(key))}")
            da, db = _buffer(ma, ta), _buffer(mb, tb)
            if da != db:
                differ(f"subgraph {s}: tensor {i} {name!r}: data differs "
                       f"({len(da)} vs {len(db)} bytes)")
    identical = not differences
    return TwinComparison(identical, a == b, differences, compared)


def _tflite_model(buf):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)


def _opcode(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _name(code.customCode) if code.customCode else builtin


def _ints(values):
    return () if values is None else (int(v) for v in values)


def _name(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _quantization(q):
    if q is None:
        return {}
    out = {}
    for key in ("scale", "zeroPoint", "quantizedDimension", "min", "max"):
        value = getattr(q, key, None)
        out[key] = None if value is None else (
            np.asarray(value).tolist() if not np.isscalar(value) else value)
    return out


def _buffer(model, tensor):
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return b"" if data is None else np.asarray(data, dtype=np.uint8).tobytes()


def _plain(obj):
    if obj is None or isinstance(obj, (int, float, str, bool, bytes)):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return {k: _plain(v) for k, v in sorted(vars(obj).items())}


def _short(value, limit=4):
    if isinstance(value, list) and len(value) > limit:
        shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value[:limit])
        return f"[{shown}, ... ({len(value)})]"
    return value


def _compare_onnx(a, b):
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


# -- Checks ------------------------------------------------------------------------------------

@dataclasses.dataclass
class QuantizedResult:
    """The checks of one quantized artifact (``format``: ``"tflite"`` or ``"onnx"``,
    ``mode``), as a :class:`~tfdropblock.export.report.FormatResult` holds them: ``checks``
    (name -> CheckResult), ``findings`` and ``warnings`` (Finding lists), ``bytes``."""

    format: str
    mode: str
    checks: dict = dataclasses.field(default_factory=dict)
    findings: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    bytes: int = 0

    @property
    def name(self):
        return f"{self.format}:{self.mode}"

    @property
    def ok(self):
        return not self.findings and all(c.ok is not False for c in self.checks.values())

    def to_dict(self):
        return {"format": self.format, "mode": self.mode, "ok": self.ok, "bytes": self.bytes,
                "checks": {k: c.to_dict() for k, c in self.checks.items()},
                "findings": [f.to_dict() for f in self.findings],
                "warnings": [f.to_dict() for f in self.warnings]}

    def __str__(self):
        lines = [f"{self.name}: {'ok' if self.ok else 'FAILED'}"]
        lines += [f"  {f}" for f in self.findings]
        lines += [f"  warning: {f}" for f in self.warnings]
        return "\n".join(lines)


def verify_quantized(fmt, mode, artifact, twin, inputs, expected, *, layer_names=None,
                     thresholds=None):
    """Every check of one quantized artifact against its identity twin and against Keras.

    Args:
        fmt: ``"tflite"`` (``artifact``, ``twin``: flatbuffer bytes or paths) or ``"onnx"``
            (ModelProtos, bytes or paths).
        mode: the mode both were quantized with (picks the default thresholds).
        artifact: the model quantized; ``twin``: the same model with every DropBlock an
            identity, quantized the same way with the same calibration batches.
        inputs: batches ``{input name: array}`` to evaluate on (not the calibration batches).
        expected: Keras's float outputs (``training=False``) on ``inputs``, named as the
            artifacts' outputs.
        layer_names: the DropBlock layers' names (:func:`~.identity.dropblock_names`), for the
            name-scope check; None looks for Keras's default names.
        thresholds: a :class:`~.metrics.Thresholds`; default: the mode's.
    Returns:
        :class:`QuantizedResult`. Raises nothing for a failed check; InputError if an
        artifact cannot be parsed at all.
    """
    check_mode(fmt, mode)
    limits = thresholds_for(thresholds if thresholds is not None else mode)
    if len(inputs) != len(expected) or not inputs:
        raise InputError(f"Invalid inputs/expected: {len(inputs)} input batches and "
                         f"{len(expected)} batches of Keras outputs; expected the same number, "
                         "at least one.")
    result = QuantizedResult(fmt, mode)
    if fmt == "tflite":
        data, twin_data = _tflite_bytes(artifact), _tflite_bytes(twin)
        result.bytes = len(data)
        graph, reference = tflite_graph(data), tflite_graph(twin_data)
    else:
        data, twin_data = _onnx_proto(artifact), _onnx_proto(twin)
        result.bytes = data.ByteSize()
        graph, reference = onnx_graph(data), onnx_graph(twin_data)
    structure, findings = checks.structure_check(graph, reference, layer_names)
    result.checks["structure"] = structure
    result.findings += findings

    try:
        runners, twin_runners = _runners(fmt, data), _runners(fmt, twin_data)
        runs = {label: [r(b) for b in inputs] for label, r in runners.items()}
    except Exception as e:
        text = str(e).strip().splitlines()
        result.checks["validity"] = CheckResult(False, {"error": text[0][:300] if text else ""})
        result.findings.append(Finding(
            "validity", f"the quantized model does not load and run: {type(e).__name__}",
            _runtime_names(fmt), text[0][:300] if text else ""))
        return result
    result.checks["validity"] = CheckResult(True, {"runtimes": sorted(runners)})

    comparison = compare_quantized(fmt, data, twin_data)
    twin_findings = [Finding("twin", f"differs from the identity twin quantized the same way: "
                                     f"{d}", fmt, "DropBlock changed the quantized model "
                                     "(weights, scales or ops): it did not fold away before "
                                     "quantization, or was active during calibration")
                     for d in comparison.differences]
    mismatched = []
    for label, runner in twin_runners.items():
        twin_out = [runner(b) for b in inputs]
        for k, (mine, theirs) in enumerate(zip(runs[label], twin_out)):
            for name in mine:
                a, b = np.asarray(mine[name]), np.asarray(theirs.get(name))
                if a.shape != b.shape or a.tobytes() != b.tobytes():
                    mismatched.append(f"{label}, batch {k}, output {name!r}")
    if mismatched:
        twin_findings.append(Finding(
            "twin", f"outputs differ from the identity twin's: {', '.join(mismatched[:3])}"
                    + (f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""), fmt,
            "the model and its DropBlock-free twin must compute bit-identical outputs"))
    result.checks["twin"] = CheckResult(not twin_findings, {
        **comparison.to_dict(), "outputs_bit_identical": not mismatched})
    result.findings += twin_findings

    quality, findings, warnings_ = quality_check(runs, expected, limits, inputs)
    result.checks["quality"] = quality
    result.findings += findings
    result.warnings += warnings_

    pairs = {label: (runs[label][0], runner(inputs[0])) for label, runner in runners.items()}
    determinism, findings = checks.determinism_check(pairs)
    result.checks["determinism"] = determinism
    result.findings += findings
    if fmt == "tflite" and mode == "int8":
        floating = float_ops(data)
        result.checks["coverage"] = CheckResult(True if not floating else None, {
            "float_ops": floating, "status": "integer" if not floating else "partial"})
        if floating:
            result.warnings.append(Finding(
                "coverage", "ops still computing in float: " + ", ".join(
                    f"{op} x{n}" for op, n in sorted(floating.items())), "tflite",
                "the TFLite quantizer has no int8 version of them; an integer-only "
                "accelerator cannot run this model"))
    return result


_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


def float_ops(content):
    """``{op: count}`` of the operators of a TFLite model that read or write a float32
    tensor, QUANTIZE and DEQUANTIZE (the conversions at the model's edges) aside."""
    from ai_edge_litert import schema_py_generated as schema

    model = _tflite_model(content)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts = {}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = _opcode(model, op)
            name = code if isinstance(code, str) else names.get(code, f"BUILTIN_{code}")
            tensors = [graph.tensors[i] for i in (*_ints(op.inputs), *_ints(op.outputs))
                       if i >= 0]
            if name not in _EDGE_OPS and any(t.type == schema.TensorType.FLOAT32
                                             for t in tensors):
                counts[name] = counts.get(name, 0) + 1
    return counts


def _runners(fmt, artifact):
    if fmt == "tflite":
        return {"litert": QuantizedTFLiteRunner(artifact)}
    import onnx

    onnx.checker.check_model(artifact, full_check=True)
    return ort_runners(artifact)


def _runtime_names(fmt):
    return ("LiteRT (builtin ops, no default delegate)" if fmt == "tflite"
            else "onnx.checker (full_check) / ONNX Runtime CPU")


# -- From a Keras model ------------------------------------------------------------------------

def quantize_model(model, fmt, mode, calibration=None, workdir=None, *, signature=None,
                   int8_io=False, per_channel=True, reduce_range=True, opset=None):
    """``(artifact, twin)``: ``model`` and its identity twin exported as the kit exports them
    and quantized the same way with the same ``calibration``. TFLite: flatbuffer bytes;
    ONNX: ModelProtos. ``workdir`` holds the SavedModels (default: a temporary directory,
    removed afterwards). The twin is always exported for real, so the comparison is not of
    one conversion with itself."""
    from tfdropblock.export.identity import dropblocks_as_identity
    from tfdropblock.export.signature import Signature

    check_mode(fmt, mode)
    signature = signature or Signature.from_model(model)
    with tempfile.TemporaryDirectory(prefix="tfdropblock-quant-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        out = []
        for twin in (False, True):
            with (dropblocks_as_identity(model) if twin else contextlib.nullcontext()):
                out.append(_export_quantized(model, signature, fmt, mode, calibration,
                                             base / ("twin" if twin else "main"), int8_io,
                                             per_channel, reduce_range, opset))
        return tuple(out)


def _export_quantized(model, signature, fmt, mode, calibration, directory, int8_io,
                      per_channel, reduce_range, opset):
    from tfdropblock.export.formats.onnx import DEFAULT_OPSET, convert_onnx
    from tfdropblock.export.formats.saved_model import export_saved_model

    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "tflite":
        saved = export_saved_model(model, directory / "saved_model", signature)
        return quantize_tflite(saved, mode, calibration, int8_io=int8_io)
    proto = convert_onnx(model, signature, opset or DEFAULT_OPSET)
    return quantize_onnx(proto, mode, calibration, per_channel=per_channel,
                         reduce_range=reduce_range)
