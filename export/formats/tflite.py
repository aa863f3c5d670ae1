"""TFLite (LiteRT): conversion from the exported SavedModel, the flatbuffer reader, a runner,
and the quantized variants (float16, dynamic range, int8) with their twin comparison.

Converting from the SavedModel (not from concrete functions) is what freezes Keras 3 variables.
Builtin ops only by default: a random op that leaks into the inference graph then fails the
conversion instead of turning silently into Flex ops that most runtimes cannot run.

The reader reads every subgraph (init subgraphs included); opcode =
max(builtin_code, deprecated_builtin_code), Flex and other custom ops by their custom code.
"""

from __future__ import annotations

import collections
import functools
import re
import warnings
from pathlib import Path

import numpy as np

from tfdropblock._util import describe_error, one_line
from tfdropblock._files import write_bytes
from tfdropblock.export.calibration import check_calibration
from tfdropblock.export.checks import MAX_DIFFERENCES, TwinComparison
from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format, Option, check_bool, read_bytes, register
from tfdropblock.export.formats.quantized import check_mode, register_variants
from tfdropblock.export.formats.saved_model import ENDPOINT, read_saved_model
from tfdropblock.export.graphs import Graph, is_tf_random
from tfdropblock.export.report import CheckResult, Finding

_UNSUPPORTED = re.compile(r"'tf\.(\w+)' op")
# The TFLite calibrator runs the deprecated tf.lite.Interpreter internally: not ours to fix.
_INTERPRETER_WARNING = r".*tf\.lite\.Interpreter is deprecated.*"
TFLITE_MODES = ("float16", "dynamic", "int8")
_TFLITE_RANDOM = {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"}


def convert_tflite(saved_model_dir, select_tf_ops=False):
    """Flatbuffer bytes of the SavedModel's ``serve`` signature; ConversionError on failure."""
    import tensorflow as tf

    converter = _converter(saved_model_dir)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    return _run_converter(converter, "TFLite conversion")


def _converter(saved_model_dir):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                    signature_keys=[ENDPOINT])


def _run_converter(converter, what):
    """``converter.convert()``; a failure is a ConversionError that names the ops the builtin
    runtime lacks when the converter says so, else the first line of its message."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_INTERPRETER_WARNING)
            return converter.convert()
    except Exception as e:
        unsupported = sorted(set(_UNSUPPORTED.findall(str(e))))
        if unsupported:
            summary = f"ops not supported by the builtin runtime: {', '.join(unsupported)}"
        else:
            summary = one_line(e)
        raise ConversionError(f"{what} failed: {summary}") from e


def interpreter(model_content, preserve_all_tensors=False):
    """A LiteRT interpreter without the default XNNPACK delegate, which would replace ops;
    ``preserve_all_tensors`` keeps every intermediate tensor readable after a run (LiteRT
    otherwise reuses their memory)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_content=model_content, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
        experimental_preserve_all_tensors=preserve_all_tensors)


class TFLiteRunner:
    """Runs the ``serve`` signature with named inputs (any batch size); named numpy outputs."""

    def __init__(self, model_content, preserve_all_tensors=False):
        self.interpreter = interpreter(model_content, preserve_all_tensors)
        self.key = None
        signatures = self.interpreter.get_signature_list()
        key = ENDPOINT if ENDPOINT in signatures else next(iter(signatures), None)
        if key is None:
            raise ValueError("TFLite model has no signature.")
        self.key = key
        self.runner = self.interpreter.get_signature_runner(key)

    def __call__(self, named_inputs):
        outputs = self.runner(**named_inputs)
        return {k: np.array(v, copy=True) for k, v in outputs.items()}

    def io(self):
        """The signature's inputs and outputs; ``shape_signature`` (-1 for a dynamic dim), not
        ``shape``, which is whatever the last call resized the tensors to."""
        def describe(details):
            return [{"name": name, "dtype": np.dtype(d["dtype"]).name,
                     "shape": [None if int(x) < 0 else int(x)
                               for x in d.get("shape_signature", d["shape"])]}
                    for name, d in details.items()]

        return {"inputs": describe(self.runner.get_input_details()),
                "outputs": describe(self.runner.get_output_details())}


def tflite_probe(model_content):
    """A :class:`~tfdropblock.export.locate.Probe` of the ``serve`` signature: LiteRT (same
    resolver as the parity runner) with every intermediate tensor preserved, each operator's
    outputs in execution order, named by the ops the converter fused into them (``;``)."""
    from tfdropblock.export.locate import Probe

    runner = TFLiteRunner(model_content, preserve_all_tensors=True)
    model = _tflite_model(model_content)
    index = next((int(s.subgraphIndex) for s in model.signatureDefs or []
                  if _name(s.signatureKey) == runner.key), 0)
    graph = model.subgraphs[index]
    tensors = [(int(t), _name(graph.tensors[t].name).split(";"))
               for op in graph.operators for t in _ints(op.outputs) if t >= 0]
    readers = {}
    for op in graph.operators:  # an operator is named by the tensors it writes
        names = [n for t in _ints(op.outputs) if t >= 0
                 for n in _name(graph.tensors[t].name).split(";")]
        for t in _ints(op.inputs):
            readers.setdefault(int(t), []).append(names)
    outputs = {name: int(d["index"]) for name, d in runner.runner.get_output_details().items()}
    keys = [key for key, _ in tensors]

    def run(named_inputs):
        runner(named_inputs)
        return {key: np.array(runner.interpreter.get_tensor(key, index), copy=True)
                for key in keys}

    return Probe("litert (all tensors preserved)", tensors, outputs, run, readers)


class _Corrupt(Exception):
    """A flatbuffer offset, length or size that the buffer cannot hold."""


class _FlatBuffer:
    """Bounds-checked reads of the few TFLite schema fields that ``tflite_graph`` needs.

    The generated ``schema_py_generated`` reader trusts every offset: Python's ``unpack_from``
    accepts negative offsets (a corrupted vtable then reads from the end of the file), string
    slices past the end are silently truncated, and a corrupted vector length makes the reader
    iterate up to 2**32 elements, each of which may alias the same large string: time and memory
    quadratic in the file size. Here every read is checked against the buffer, and the total of
    vector elements and string bytes read is capped by what a file of this size can hold without
    aliasing (a converter never shares tensors or names between entries).
    """

    # (vtable slot byte offset) of each field read; see tensorflow/compiler/mlir/lite/schema.
    MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS = 6, 8
    OPCODE_DEPRECATED_BUILTIN, OPCODE_CUSTOM, OPCODE_BUILTIN = 4, 6, 10
    SUBGRAPH_TENSORS, SUBGRAPH_OPERATORS, SUBGRAPH_NAME = 4, 10, 12
    TENSOR_NAME = 10
    OPERATOR_OPCODE_INDEX, OPERATOR_OUTPUTS = 4, 8

    def __init__(self, buf):
        import struct

        self.buf = buf
        self.size = len(buf)
        self._struct = struct
        self.elements_left = self.size // 4
        self.string_bytes_left = self.size

    def _unpack(self, fmt, pos, width):
        if pos < 0 or pos + width > self.size:
            raise _Corrupt(f"offset {pos} outside the {self.size}-byte buffer")
        return self._struct.unpack_from(fmt, self.buf, pos)[0]

    def u32(self, pos):
        return self._unpack("<I", pos, 4)

    def _field(self, table, slot):
        """Absolute position of a table field, or None when absent."""
        vtable = table - self._unpack("<i", table, 4)
        vtable_size = self._unpack("<H", vtable, 2)
        if slot + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + slot, 2)
        return table + offset if offset else None

    def root(self):
        return self.u32(0)

    def scalar(self, table, slot, fmt, width, default=0):
        pos = self._field(table, slot)
        return default if pos is None else self._unpack(fmt, pos, width)

    def _target(self, table, slot):
        pos = self._field(table, slot)
        return None if pos is None else pos + self.u32(pos)

    def tables(self, table, slot):
        """Positions of the tables of a vector-of-tables field (empty if absent)."""
        vector = self._target(table, slot)
        if vector is None:
            return []
        length = self.u32(vector)
        if length > (self.size - vector - 4) // 4:
            raise _Corrupt(f"vector of {length} elements at offset {vector} runs past the end")
        if length > self.elements_left:
            raise _Corrupt(f"more table entries than {self.size} bytes can hold (aliased "
                           "entries?)")
        self.elements_left -= length
        return [vector + 4 + 4 * i + self.u32(vector + 4 + 4 * i) for i in range(length)]

    def ints(self, table, slot):
        """The values of a vector-of-int32 field (empty if absent)."""
        vector = self._target(table, slot)
        if vector is None:
            return []
        length = self.u32(vector)
        if length > (self.size - vector - 4) // 4 or length > self.elements_left:
            raise _Corrupt(f"vector of {length} ints at offset {vector} runs past the end")
        self.elements_left -= length
        return [self._unpack("<i", vector + 4 + 4 * i, 4) for i in range(length)]

    def string(self, table, slot):
        start = self._target(table, slot)
        if start is None:
            return None
        length = self.u32(start)
        if start + 4 + length > self.size:
            raise _Corrupt(f"string of {length} bytes at offset {start} runs past the end")
        if length > self.string_bytes_left:
            raise _Corrupt(f"names total more bytes than the {self.size}-byte file holds "
                           "(aliased strings?)")
        self.string_bytes_left -= length
        return self.buf[start + 4:start + 4 + length].decode("utf-8", "replace")


@functools.cache
def _builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def builtin_name(code):
    """The name of a TFLite builtin operator code (``BUILTIN_<n>`` for one the schema lacks)."""
    return _builtin_names().get(code, f"BUILTIN_{code}")


def tflite_graph(path_or_bytes):
    """Ops of every subgraph of a .tflite flatbuffer; InputError if it is not a valid one."""
    from ai_edge_litert import schema_py_generated as schema

    buf = read_bytes(path_or_bytes, "a TFLite model")
    where = path_or_bytes if isinstance(path_or_bytes, (str, Path)) else "<bytes>"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier).")
    fb = _FlatBuffer(buf)
    try:
        model = fb.root()
        codes = []
        for oc in fb.tables(model, fb.MODEL_OPERATOR_CODES):
            code = max(fb.scalar(oc, fb.OPCODE_BUILTIN, "<i", 4),
                       fb.scalar(oc, fb.OPCODE_DEPRECATED_BUILTIN, "<b", 1))
            if code == schema.BuiltinOperator.CUSTOM:
                codes.append(fb.string(oc, fb.OPCODE_CUSTOM) or "CUSTOM")
            else:
                codes.append(builtin_name(code))
        ops, names, flex = collections.Counter(), [], []
        sites = collections.defaultdict(list)
        for s, sub in enumerate(fb.tables(model, fb.MODEL_SUBGRAPHS)):
            name = fb.string(sub, fb.SUBGRAPH_NAME)
            label = f"subgraph {s}" + (f" ({name})" if name else "")
            tensor_names = [fb.string(t, fb.TENSOR_NAME)
                            for t in fb.tables(sub, fb.SUBGRAPH_TENSORS)]
            names.extend((label, name) for name in tensor_names if name)
            for op_table in fb.tables(sub, fb.SUBGRAPH_OPERATORS):
                index = fb.scalar(op_table, fb.OPERATOR_OPCODE_INDEX, "<I", 4)
                if index >= len(codes):
                    raise _Corrupt(f"operator code index {index} of {len(codes)}")
                op = codes[index]
                ops[op] += 1
                if op.startswith("Flex"):
                    flex.append(op)
                if op.startswith("Flex") or is_tflite_random(op):
                    # An operator has no name of its own: its output tensors' carry the scope.
                    outputs = [tensor_names[i] for i in fb.ints(op_table, fb.OPERATOR_OUTPUTS)
                               if 0 <= i < len(tensor_names) and tensor_names[i]]
                    sites[op].append(f"{label}: output {outputs[0]!r}" if outputs else label)
    except _Corrupt as e:
        raise InputError(f"{where}: corrupted TFLite flatbuffer ({e}).") from None
    return Graph("tflite", ops, names, flex_ops=sorted(set(flex)), entry="all subgraphs",
                 sites=dict(sites),
                 is_random=is_tflite_random, flex_finding=(
                     "Flex op {op}", "needs the TensorFlow Flex delegate, which LiteRT's builtin "
                                     "runtime lacks"))


def is_tflite_random(op):
    """A TFLite random builtin, or a Flex op wrapping a TensorFlow random op."""
    return op in _TFLITE_RANDOM or (op.startswith("Flex") and is_tf_random(op[4:]))



# -- quantized variants (tflite:float16, tflite:dynamic, tflite:int8) ---------------------------
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
    if not isinstance(int8_io, bool):
        raise InputError(f"Invalid int8_io={int8_io!r}: expected True or False.")
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


class TFLiteFormat(Format):
    """LiteRT flatbuffers, converted from the SavedModel; quantized as :data:`TFLITE_MODES`."""

    name = "tflite"
    title = "TFLite"
    artifact = "model.tflite"
    converts_from = "saved_model"
    modes = TFLITE_MODES
    options = (
        Option("tflite_select_tf_ops", False, bool,
               help="allow TensorFlow (Flex) ops, which the standard LiteRT runtime refuses"),
        Option("int8_io", False, check_bool("int8_io"), flag="--int8-io", quantized_only=True,
               help="TFLite int8 with integer inputs and outputs (default: float)"),
    )
    refused_by = "TFLite converter (builtin ops only)"
    invalid_what = ("the model does not load and run in the LiteRT interpreter (builtin ops, "
                    "no default delegate)")
    keras_format = "litert"
    keras_calls_inference = True  # Keras 3.15's LiteRT exporter passes training=False

    def keras_artifact(self, path):
        return Path(path).read_bytes()

    def convert(self, run, reference):
        saved = run.get(self.converts_from, reference)
        try:
            content = convert_tflite(saved, run.settings.option("tflite_select_tf_ops"))
        except ConversionError:
            raise
        except Exception as e:
            raise ConversionError(f"TFLite conversion failed: {describe_error(e)}") from e
        write_bytes(run.path(self.name, reference), content)
        return content

    def read_graph(self, source, signature=None):
        return tflite_graph(source)

    def is_random_op(self, op):
        return is_tflite_random(op)

    def sniff(self, path, head):
        return path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3"

    def conversion(self, artifact, graph, run):
        return {"bytes": len(artifact)}, []

    def runtimes(self, run, artifact):
        runner = TFLiteRunner(artifact)
        io = runner.io()
        if {t["name"] for t in io["inputs"]} == {t["name"] for t in run.io["inputs"]}:
            runner(run.batches[0])  # loads is not enough: it must run
        return io, {"interpreter": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}, {"litert": runner}

    def probe(self, run, artifact, runtime):
        return tflite_probe(artifact)


    # -- quantized variants ----------------------------------------------------------------

    def quantize(self, run, mode, reference, calibration):
        data = quantize_tflite(run.get("saved_model", reference), mode, calibration,
                               int8_io=run.settings.option("int8_io"))
        write_bytes(run.path(f"{self.name}:{mode}", reference), data)
        return data

    def quantized_runtimes(self, artifact):
        return {"litert": QuantizedTFLiteRunner(artifact)}

    def twin_comparison(self, artifact, twin):
        return compare_tflite(_tflite_bytes(artifact), _tflite_bytes(twin))

    def quantized_checks(self, mode, artifact):
        """int8 only: ``coverage``, the ops still computing in float (a warning when any)."""
        if mode != "int8":
            return {}, []
        floating = float_ops(artifact)
        check = CheckResult(True if not floating else None, {
            "float_ops": floating, "status": "integer" if not floating else "partial"})
        warnings_ = [Finding(
            "coverage", "ops still computing in float: " + ", ".join(
                f"{op} x{n}" for op, n in sorted(floating.items())), self.name,
            "the TFLite quantizer has no int8 version of them; an integer-only "
            "accelerator cannot run this model")] if floating else []
        return {"coverage": check}, warnings_

    def quantization_info(self, run, mode):
        return {"int8_io": run.settings.option("int8_io") if mode == "int8" else None}


TFLITE = register(TFLiteFormat())
register_variants(TFLITE)
