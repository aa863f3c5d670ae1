"""TFLite's quantized modes (float16, dynamic, int8), their runner (quantized I/O), the
float-op coverage of int8, and the twin comparison of two quantized flatbuffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfdropblock._files import write_bytes
from tfdropblock.export.core.results import CheckResult, Finding
from tfdropblock.export.run.calibration import check_calibration
from tfdropblock.export.checks.rules import MAX_DIFFERENCES, TwinComparison
from tfdropblock.export.core.errors import InputError
from tfdropblock.export.formats.quantized import Quantizer, check_mode
from tfdropblock.export.run.registry import check_bool
from tfdropblock.export.formats.saved_model.conversion import ENDPOINT
from tfdropblock.export.formats.saved_model.reader import read_saved_model
from tfdropblock.export.formats.tflite.conversion import _converter, _run_converter
from tfdropblock.export.formats.tflite.reader import (_ints, _name, _tflite_model, builtin_name,
                                                      tflite_graph)
from tfdropblock.export.formats.tflite.runtime import TFLiteRunner

TFLITE_MODES = ("float16", "dynamic", "int8")


# Converted from the kit's SavedModel (its ``serve`` signature calls model(x, training=False))
# with builtin ops only. Dynamic range leaves tensors of fewer than 1024 elements in float;
# full-integer int8 keeps an op the quantizer does not handle (CONV_3D) in float between a
# DEQUANTIZE and a QUANTIZE: :func:`float_ops` lists them for the coverage check.
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
    check_bool("int8_io")(int8_io)
    if int8_io and mode != "int8":
        raise InputError(f"Invalid int8_io=True with mode={mode!r}: int8 inputs and outputs "
                         "need mode='int8'.")
    batches = check_calibration(calibration, saved_model_inputs(saved_model_dir), mode)
    converter = _converter(saved_model_dir)
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
    return _run_converter(converter, f"TFLite {mode} conversion")


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


def _tflite_bytes(artifact):
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return bytes(artifact)
    tflite_graph(artifact)  # InputError for anything that is not a flatbuffer
    return Path(artifact).read_bytes()


def compare_tflite(a, b):
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


def _opcode(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _name(code.customCode) if code.customCode else builtin


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


_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


def float_ops(content):
    """``{op: count}`` of the operators of a TFLite model that read or write a float32
    tensor, QUANTIZE and DEQUANTIZE (the conversions at the model's edges) aside."""
    from ai_edge_litert import schema_py_generated as schema

    model = _tflite_model(content)
    counts = {}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = _opcode(model, op)
            name = code if isinstance(code, str) else builtin_name(code)
            tensors = [graph.tensors[i] for i in (*_ints(op.inputs), *_ints(op.outputs))
                       if i >= 0]
            if name not in _EDGE_OPS and any(t.type == schema.TensorType.FLOAT32
                                             for t in tensors):
                counts[name] = counts.get(name, 0) + 1
    return counts


class TFLiteQuantizer(Quantizer):
    """The TFLite converter's post-training quantization, as :data:`TFLITE_MODES`, from the
    SavedModel."""

    modes = TFLITE_MODES

    def quantize(self, run, mode, reference, calibration):
        data = quantize_tflite(run.get("saved_model", reference), mode, calibration,
                               int8_io=run.settings.option("int8_io"))
        write_bytes(run.path(f"tflite:{mode}", reference), data)
        return data

    def runtimes(self, artifact):
        return {"litert": QuantizedTFLiteRunner(artifact)}

    def twin_comparison(self, artifact, twin):
        return compare_tflite(_tflite_bytes(artifact), _tflite_bytes(twin))

    def checks(self, mode, artifact):
        """int8 only: ``coverage``, the ops still computing in float (a warning when any)."""
        if mode != "int8":
            return {}, []
        floating = float_ops(artifact)
        check = CheckResult(True if not floating else None, {
            "float_ops": floating, "status": "integer" if not floating else "partial"})
        warnings_ = [Finding(
            "coverage", "ops still computing in float: " + ", ".join(
                f"{op} x{n}" for op, n in sorted(floating.items())), "tflite",
            "the TFLite quantizer has no int8 version of them; an integer-only "
            "accelerator cannot run this model")] if floating else []
        return {"coverage": check}, warnings_

    def info(self, run, mode):
        return {"int8_io": run.settings.option("int8_io") if mode == "int8" else None}
