"""ONNX: conversion through tf2onnx, the graph reader, ONNX Runtime runners, and the
quantized variants (dynamic, int8) with their twin comparison.

``tf2onnx.convert.from_keras`` fails on Keras 3 here; ``from_function`` on
``model(x, training=False)`` works, except that it makes every non-resource input of the
concrete function a graph input, captured constants included (``Normalization(mean=...)``
captures its mean and variance by value): :func:`_from_function` converts as ``from_function``
does but, like ``from_keras``, leaves the captures out, so they are frozen into initializers.
Every tf2onnx entry point converts with ``continue_on_error=True``: an op it cannot lower is
only logged and copied into the default domain, giving an invalid model; the reader's
``unsupported_ops`` finds those, and the format refuses to write or export such a model.

The reader walks the graph, every subgraph held in node attributes (If/Loop/Scan) and every
model-local function (FunctionProto) a node calls, as written by the converter; Dropout nodes
whose training_mode is not provably a constant False are hazards.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from tfdropblock._compat import tf2onnx_convert_graph_def
from tfdropblock._util import describe_error
from tfdropblock._files import write_bytes
from tfdropblock.export.calibration import check_calibration
from tfdropblock.export.checks import MAX_DIFFERENCES, TwinComparison
from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format, Option, read_bytes, register
from tfdropblock.export.formats.quantized import check_mode, register_variants
from tfdropblock.export.graphs import Graph, is_tf_random

DEFAULT_OPSET = 17
ONNX_MODES = ("dynamic", "int8")
MAX_OPSET = 18  # the newest opset tf2onnx 1.17 emits
MIN_OPSET = 13

# One protobuf message cannot be serialised beyond 2 GiB: a bigger ModelProto must keep its
# tensors in a separate file ("external data"), which ONNX, onnx.checker (given a path) and
# ONNX Runtime (given a path) read back.
PROTOBUF_LIMIT = 2**31 - 1
ONNX_DATA = "model.onnx.data"
EXTERNAL_DATA_MODES = (None, True, False)
_FLOAT_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_LIMIT_MESSAGES = ("larger than 2GB", "exceeds maximum protobuf size", "string too long",
                   "2GB", "2 GB")


def check_external_data(value):
    if value not in EXTERNAL_DATA_MODES or (value is not None and not isinstance(value, bool)):
        raise InputError(f"Invalid onnx_external_data={value!r}: expected None (only when the "
                         "model exceeds the 2 GiB protobuf limit), True or False.")
    return value


def check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"Invalid opset={opset!r}: expected an int in [{MIN_OPSET}, {MAX_OPSET}].")
    return opset


@contextlib.contextmanager
def _quiet_tf2onnx():
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def convert_onnx(model, signature, opset=DEFAULT_OPSET, function=None):
    """The raw ``onnx.ModelProto`` tf2onnx produces (possibly holding unsupported ops).

    ``function``: the traced inference function to convert (default: a new
    :meth:`Signature.flat_function`); a run passes the one it already traced.
    """
    check_opset(opset)
    fn = function if function is not None else signature.flat_function(model)
    with _quiet_tf2onnx():
        try:
            proto = _from_function(fn, list(signature.specs), opset)
        except Exception as e:
            if over_protobuf_limit(e, model):
                raise ConversionError(
                    f"tf2onnx failed: the model's weights ({weight_bytes(model) / 2**30:.2f} "
                    "GiB) reach the 2 GiB protobuf limit, and tf2onnx 1.17 first freezes them "
                    "into one TensorFlow graph (its large_model mode fails with numpy 2): "
                    "export this model to SavedModel, or to ONNX with tf2onnx --large_model "
                    f"under numpy 1 ({describe_error(e, 500)})") from e
            raise ConversionError(f"tf2onnx failed: {describe_error(e, 500)}") from e
    name_batch_axis(proto)
    return proto


def _from_function(fn, specs, opset):
    """``tf2onnx.convert.from_function`` with the concrete function's captures left out of the
    graph inputs.

    tf2onnx 1.17's ``from_function`` lists every non-resource placeholder as an input, and a
    tensor captured by value (a constant held by a layer, not a variable) is one; freezing then
    keeps it as a required input named after the op that read it (``.../Sub/y:0``).
    ``from_keras`` filters the captures out; it cannot be used itself, since its Keras 3
    fallback traces the model without our explicit input names and output dict.
    """
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    concrete = fn.get_concrete_function(*specs)
    captured = {t.name for t in concrete.graph.internal_captures}
    input_names = [t.name for t in concrete.inputs
                   if t.dtype != tf.dtypes.resource and t.name not in captured]
    output_names = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    if len(input_names) != len(specs):
        raise ConversionError(f"the traced function has {len(input_names)} non-captured "
                              f"inputs for {len(specs)} input specs")
    renames = convert.tensor_names_from_structed(concrete, input_names, output_names)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, input_names, output_names)
        proto, _ = tf2onnx_convert_graph_def(
            frozen, name=concrete.name, continue_on_error=True, opset=opset,
            input_names=input_names, output_names=output_names, tensors_to_rename=renames)
    return proto


BATCH_AXIS = "batch"


def name_batch_axis(proto):
    """Name the symbolic first axis of every graph input and output ``batch``.

    tf2onnx names unknown dims ``unk__N``, a fresh name per tensor, which tells a reader (and
    tools that match dims by name) nothing. The kit's signatures put the batch first and leave
    it None, and a Keras model's outputs keep it first, so the first symbolic axis of a graph
    input or output is the batch. The old names are renamed wherever they occur in value_info
    too, so the graph stays consistent.
    """
    old = set()
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            old.add(dims[0].dim_param)
        elif dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_AXIS
    if not old:
        return proto
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in old:
                dim.dim_param = BATCH_AXIS
    return proto


def onnx_io(proto):
    """Graph inputs and outputs as ``{"inputs": [...], "outputs": [...]}`` of name, dtype and
    shape (None for a symbolic or unknown dim), the form :func:`checks.io_check` compares."""
    import onnx

    def describe(value):
        tensor = value.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except Exception:
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        shape = ([d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
                 if tensor.HasField("shape") else None)
        return {"name": value.name, "dtype": dtype, "shape": shape}

    initializers = {t.name for t in proto.graph.initializer}
    return {"inputs": [describe(v) for v in proto.graph.input if v.name not in initializers],
            "outputs": [describe(v) for v in proto.graph.output]}


def blocked_by(proto, ops):
    """Why tf2onnx left each of ``ops`` unconverted, as one sentence naming the upstream limit."""
    import tf2onnx

    nodes = [n for g in (proto.graph, *proto.functions) for n in _nodes(g)]
    xla = sorted({node.op_type for node in nodes if node.op_type in ops
                  and any(a.name == "_XlaMustCompile" and a.i for a in node.attribute)})
    plain = [op for op in ops if op not in xla]
    parts = []
    if plain:
        parts.append(f"op{'s' if len(plain) > 1 else ''} {', '.join(plain)}")
    if xla:
        parts.append(f"{', '.join(xla)}: a call of a jit_compile=True function, which it does "
                     "not inline (Keras's grouped Conv2D on TensorFlow CPU is one)")
    return f"tf2onnx {tf2onnx.__version__} cannot convert {', nor '.join(parts)}"


def _graphs(graph):
    """``graph`` and every subgraph its nodes hold in attributes (If/Loop/Scan), recursively."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _nodes(graph):
    for g in _graphs(graph):
        yield from g.node


def over_protobuf_limit(error, model):
    """Whether a tf2onnx failure is the 2 GiB limit. Measured with tf2onnx 1.17 / TF 2.21: one
    tensor over 2 GiB fails with "Cannot create a tensor proto whose content is larger than
    2GB."; several smaller ones adding up to more fail with just "Invalid GraphDef"."""
    weights = weight_bytes(model)
    text = str(error)
    return (weights > PROTOBUF_LIMIT or any(m in text for m in _LIMIT_MESSAGES)
            or (weights > 2**30 and "Invalid GraphDef" in text))


def weight_bytes(model):
    """Bytes of the model's weights, from their shapes (no copy)."""
    total = 0
    for w in getattr(model, "weights", ()):
        try:
            count = 1
            for dim in w.shape:
                count *= int(dim)
            total += count * np.dtype(str(w.dtype)).itemsize
        except (TypeError, ValueError):
            continue
    return total


def needs_external_data(proto, mode=None):
    """Whether to save ``proto`` with external data: ``mode`` if set, else only when it cannot
    be serialised as one message."""
    if mode is not None:
        return mode
    try:
        return proto.ByteSize() > PROTOBUF_LIMIT
    except Exception:  # a message protobuf cannot even measure is past its limit
        return True


def save_onnx(proto, path, external_data=None):
    """Write ``proto`` to ``path``: one file, or ``path`` plus ``model.onnx.data`` beside it.

    ``path`` is in a private staging directory; the pair is moved out by ``atomic.commit``.
    With external data the in-memory proto keeps only references to the data file, as
    written. Returns True if external.
    """
    import onnx
    from onnx.external_data_helper import set_external_data

    path = Path(path)
    if not needs_external_data(proto, external_data):
        if needs_external_data(proto):
            raise ConversionError(
                f"the ONNX model ({proto.ByteSize() / 2**30:.2f} GiB) exceeds the 2 GiB "
                "protobuf limit: export with onnx_external_data=None or True "
                "(--onnx-external-data) to keep its weights in model.onnx.data")
        write_bytes(path, proto.SerializeToString())
        return False
    data = path.with_name(ONNX_DATA)
    if data.exists():  # onnx appends to an existing data file
        data.unlink()
    # Weights (floating-point initializers, whatever their size) and any tensor of 1 MiB or
    # more go out; small integer constants stay inline: they are the shapes and axes that
    # shape inference (onnx.checker full_check) must read, and it does not read external data.
    # (convert_model_to_external_data only knows a size threshold: 1024 bytes would leave a
    # small model's weights inline, 0 moves the axes out and full_check then fails.)
    for tensor in _initializers(proto.graph):
        if tensor.HasField("raw_data") and (tensor.data_type in _FLOAT_TYPES
                                            or len(tensor.raw_data) >= 2**20):
            set_external_data(tensor, location=ONNX_DATA)
    onnx.save_model(proto, str(path))
    return True


def _initializers(graph):
    for g in _graphs(graph):
        yield from g.initializer


def ort_runners(source):
    """ONNX Runtime (CPU) runners at both optimisation levels, from serialised bytes or a path:
    without optimisation the graph runs as written (QDQ pairs included); the default level
    removes Identity/Dropout, folds constants and fuses QDQ into integer kernels, which is what
    a deployment runs."""
    return {"onnxruntime (ORT_DISABLE_ALL)": OrtRunner(source, "disable_all"),
            "onnxruntime (default optimisations)": OrtRunner(source, "default")}


class OrtRunner:
    """ONNX Runtime session on CPU at ``level`` ("disable_all" or "default"), from serialised
    bytes or from a path (needed for a model whose weights are in external data)."""

    def __init__(self, model_bytes, level="default"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if level == "disable_all":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        source = str(model_bytes) if isinstance(model_bytes, (str, Path)) else model_bytes
        self.session = ort.InferenceSession(source, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, named_inputs):
        feed = {i.name: named_inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))



# -- reading ---------------------------------------------------------------------------------

def onnx_probe(proto, level, label):
    """A :class:`~tfdropblock.export.locate.Probe` of the main graph: a copy of the model with
    every node output made a graph output (typed by ONNX shape inference where it can), run by
    ONNX Runtime at ``level``. Extra outputs keep ONNX Runtime from fusing the nodes that make
    them, so at the default level the probe can differ from the deployed graph's kernels."""
    import onnx

    from tfdropblock.export.locate import Probe

    probed = onnx.ModelProto()
    probed.CopyFrom(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(probed).graph.value_info
    except Exception:  # shapes only type the extra outputs; ORT infers the rest itself
        inferred = []
    types = {v.name: v for v in inferred}
    present = {o.name for o in probed.graph.output}
    tensors, readers = [], {}
    for node in probed.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append([node.name])
        for out in node.output:
            if not out:
                continue
            tensors.append((out, [node.name]))
            if out not in present:
                probed.graph.output.append(types.get(out) or onnx.ValueInfoProto(name=out))
                present.add(out)
    runner = OrtRunner(probed.SerializeToString(), level)
    return Probe(label, tensors, {o.name: o.name for o in proto.graph.output}, runner, readers)


_ONNX_RANDOM = {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike",
                "Multinomial", "Bernoulli"}


def _is_random(op):
    """An ONNX random op, or a TensorFlow one tf2onnx left unconverted (``domain:op`` too)."""
    op_type = op.split(":")[-1]
    return op_type in _ONNX_RANDOM or is_tf_random(op_type)


def load_onnx(path_or_proto):
    """An ``onnx.ModelProto`` from a path or a proto; InputError if it is not an ONNX model."""
    import onnx

    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto
    data = read_bytes(path_or_proto, "an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise InputError(f"{path_or_proto}: corrupted ONNX model ({type(e).__name__}).") from None
    if not model.ir_version or not model.HasField("graph"):
        raise InputError(f"{path_or_proto}: not an ONNX model (no IR version or graph).")
    return model


def onnx_graph(path_or_proto):
    """Ops of the graph, of every subgraph held in node attributes and of every model-local
    function a node calls (and the functions and subgraphs those hold), as written."""
    model = load_onnx(path_or_proto)
    reader = _OnnxReader(model)
    reader.walk_graph(model.graph, "graph", {}, reader.opset)
    return Graph("onnx", reader.ops, reader.names,
                 unsupported_ops=sorted(set(reader.unsupported)),
                 entry=f"graph (opset {reader.opset.get('', '?')})",
                 sites=dict(reader.sites), hazards=reader.hazards, is_random=_is_random,
                 unsupported_finding=(
                     "unconverted op {op} in the default ONNX domain",
                     "tf2onnx could not lower it (continue_on_error): the model is invalid"))


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a value comes from, as far as the training-mode check needs: a constant boolean
    scalar (``value``), or anything else, described for the finding."""

    text: str
    value: object = None

    @property
    def key(self):
        return self.value if isinstance(self.value, bool) else "not constant"


_ABSENT = _Source("absent", False)  # an optional input left empty: training_mode defaults False
_DROPOUT_WHY = ("ONNX Dropout draws a random mask unless training_mode is False: inference is "
                "not deterministic (and runtimes fold it only when they can prove it False)")


class _OnnxReader:
    """One pass over an ONNX model: op counts, names, random-op sites, training-mode hazards.

    Each local function's ops and names are counted once (as SavedModel functions are), but
    its body is checked again for each distinct binding of its inputs to constants, since a
    Dropout inside it is in training mode or not depending on what the caller passes.
    """

    def __init__(self, model):
        self.functions = {(_text(f.domain), _text(f.name), _text(f.overload)): f
                          for f in model.functions}
        self.opset = {_text(imp.domain): imp.version for imp in model.opset_import}
        self.ops, self.names, self.unsupported = collections.Counter(), [], []
        self.sites = collections.defaultdict(list)
        self.hazards = []
        self._hazards_seen = set()
        self._counted, self._checked, self._active = set(), set(), set()

    def walk_graph(self, graph, label, outer, opset, count=True):
        # Subgraphs see the names of the graphs that hold them (ONNX outer scope).
        scope = collections.ChainMap({}, outer)
        for init in graph.initializer:
            name = _text(init.name)
            if count:
                self.names.append((label, name))
            scope[name] = _Source(f"initializer {name!r}", _bool_scalar(init))
        for value in graph.input:
            # Also an initializer's name: then the initializer is a default the caller can
            # override, not a constant.
            name = _text(value.name)
            scope[name] = _Source(f"graph input {name!r}" if label == "graph"
                                  else f"input {name!r} of subgraph {label}")
        self.walk_nodes(graph.node, label, scope, opset, count)

    def walk_nodes(self, nodes, label, scope, opset, count):
        import onnx

        for node in nodes:
            domain, op_type, name = _text(node.domain), _text(node.op_type), _text(node.name)
            standard = domain in ("", "ai.onnx")
            key = op_type if standard else f"{domain}:{op_type}"
            function = self.functions.get((domain, op_type, _text(node.overload)))
            if count:
                self.ops[key] += 1
                if standard and function is None and not onnx.defs.has(op_type, ""):
                    self.unsupported.append(op_type)
                self.names.append((label, name))
                self.names.extend((label, _text(out)) for out in node.output if out)
                if _is_random(key):
                    self.sites[key].append(f"{label}: node {name!r}")
            if standard and op_type == "Dropout" and function is None:
                self.check_dropout(node, label, scope, opset.get("", opset.get("ai.onnx", 0)))
            for out in node.output:
                if out:
                    scope[_text(out)] = self.output_source(node, standard, op_type, scope)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self.walk_graph(attr.g, f"{label}/{name}.{_text(attr.name)}", scope, opset,
                                    count)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, g in enumerate(attr.graphs):
                        self.walk_graph(g, f"{label}/{name}.{_text(attr.name)}[{i}]", scope,
                                        opset, count)
            if function is not None:
                self.walk_function(function, node, label, scope)

    def walk_function(self, function, node, label, scope):
        fid = (_text(function.domain), _text(function.name), _text(function.overload))
        if fid in self._active:  # a function calling itself: invalid ONNX, and endless
            return
        inputs = [_text(i) for i in node.input]
        binding = {}
        for i, formal in enumerate(function.input):
            actual = inputs[i] if i < len(inputs) else ""
            binding[_text(formal)] = (
                scope.get(actual, _Source(f"{actual!r}, defined nowhere in the caller's scope"))
                if actual else _ABSENT)
        check_key = (fid, tuple(binding[f].key for f in sorted(binding)))
        count = fid not in self._counted
        if not count and check_key in self._checked:
            return
        self._counted.add(fid)
        self._checked.add(check_key)
        own = {_text(imp.domain): imp.version for imp in function.opset_import}
        opset = {**self.opset, **own}
        # The call path: "graph, node 'a' -> function local:F, node 'b' -> function local:G".
        flabel = (f"{label}, node {_text(node.name)!r} -> function {fid[0]}:{fid[1]}"
                  + (f" (overload {fid[2]})" if fid[2] else ""))
        self._active.add(fid)
        try:
            # A function body sees its inputs and nothing of the caller's scope.
            self.walk_nodes(function.node, flabel, dict(binding), opset, count)
        finally:
            self._active.discard(fid)

    @staticmethod
    def output_source(node, standard, op_type, scope):
        name = _text(node.name)
        if standard and op_type == "Constant":
            value = next((a.t for a in node.attribute if _text(a.name) == "value"), None)
            return _Source(f"Constant node {name!r}",
                           None if value is None else _bool_scalar(value))
        if standard and op_type == "Identity" and node.input:
            return scope.get(_text(node.input[0]), _Source(f"output of node {name!r} (Identity)"))
        return _Source(f"output of node {name!r} ({op_type})")

    def check_dropout(self, node, label, scope, version):
        name = _text(node.name)
        if version and version < 7:
            # Dropout-1 and -6 run in training mode unless is_test is set.
            is_test = next((a.i for a in node.attribute if _text(a.name) == "is_test"), 0)
            if not is_test:
                self.add_hazard(node, f"Dropout node {name!r} runs in training mode (opset "
                                      f"{version}, is_test not set)", label)
            return
        mode = _text(node.input[2]) if len(node.input) > 2 else ""
        source = scope.get(mode, _Source(f"{mode!r}, defined nowhere in scope")) if mode \
            else _ABSENT
        if source.value is False:
            return
        shown = f"{source.text} = True" if source.value is True else source.text
        self.add_hazard(node, f"Dropout node {name!r} may run in training mode: training_mode "
                              f"is {shown}, not a constant False", label)

    def add_hazard(self, node, what, where):
        if (id(node), what) not in self._hazards_seen:
            self._hazards_seen.add((id(node), what))
            self.hazards.append((what, where, _DROPOUT_WHY))


def _bool_scalar(tensor):
    """True/False for a one-element BOOL tensor stored in the file, else None (not decoded:
    anything else, external data included, is no constant boolean to this check)."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_type != onnx.TensorProto.BOOL or tensor.data_location == \
            onnx.TensorProto.EXTERNAL:
        return None
    size = 1
    for d in tensor.dims:
        size *= d
    if size != 1:
        return None
    try:
        return bool(numpy_helper.to_array(tensor).reshape(-1)[0])
    except Exception:  # a malformed tensor: not provably False, so flagged
        return None

def _text(value):
    """A proto string field as str: upb hands back bytes for a proto2 string that is not UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


# -- quantized variants (onnx:dynamic, onnx:int8) ---------------------------------------------
# Quantized from the kit's float ONNX model with onnxruntime.quantization. quant_pre_process
# runs with ONNX shape inference only: its ORT graph optimisation would fold Identity, Dropout
# and constant If nodes, hiding from the structure check a leak that the float export still
# has. tf2onnx names nodes with a process-wide counter, so two exports of one graph are never
# byte-identical: the twin comparison hashes the graph without names.

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


# -- the format ------------------------------------------------------------------------------

class OnnxFormat(Format):
    """ONNX through tf2onnx; quantized by ONNX Runtime as :data:`ONNX_MODES`."""

    name = "onnx"
    title = "ONNX"
    artifact = "model.onnx"
    companions = (ONNX_DATA,)
    modes = ONNX_MODES
    options = (
        Option("opset", DEFAULT_OPSET, lambda value: check_opset(value), flag="--opset",
               type=int, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} ({DEFAULT_OPSET})"),
        Option("onnx_external_data", None, lambda value: check_external_data(value),
               flag="--onnx-external-data",
               help="write the ONNX weights to model.onnx.data beside model.onnx (default: only "
                    "for a model over the 2 GiB protobuf limit)"),
    )
    refused_by = "tf2onnx"
    invalid_what = "onnx.checker (full_check) or ONNX Runtime rejects the model"
    keras_format = "onnx"

    def keras_options(self, run):
        return {"opset_version": run.settings.option("opset")}

    def keras_artifact(self, path):
        return load_onnx(path)

    def keras_runtimes(self, run, artifact):
        # ONNX Runtime first: its refusal is what a user of Keras's file meets (Keras reported
        # success), and what the validity finding should say.
        ort_runners(run.path(self.name))
        return super().keras_runtimes(run, artifact)

    def convert(self, run, reference):
        """The raw ModelProto; written to disk only when it holds no unconverted op."""
        settings = run.settings
        proto = convert_onnx(run.model, run.signature, settings.option("opset"),
                             function=run.function(reference))
        if not onnx_graph(proto).unsupported_ops:
            save_onnx(proto, run.path(self.name, reference), settings.option("onnx_external_data"))
        return proto

    def read_graph(self, source, signature=None):
        return onnx_graph(source)

    def is_random_op(self, op):
        return _is_random(op)

    def sniff(self, path, head):
        return path.suffix.lower() == ".onnx"

    def conversion(self, artifact, graph, run):
        """Ops tf2onnx left unconverted fail the conversion; those that are not random ops (a
        converter limit, not a leak) block the format."""
        left = graph.unsupported_ops
        return ({"opset": run.settings.option("opset"), "unconverted_ops": left},
                [op for op in left if not self.is_random_op(op)])

    def blocked_by(self, artifact, ops):
        return blocked_by(artifact, ops)

    def runtimes(self, run, artifact):
        import onnx

        path = run.path(self.name)
        details = {"checker": "full_check", "external_data": (path.parent / ONNX_DATA).exists()}
        io = onnx_io(artifact)
        # What was written is what is checked: by path, which is also the only way the checker
        # and ORT read a model whose weights are in external data.
        source = path if path.exists() else artifact.SerializeToString()
        onnx.checker.check_model(str(path) if path.exists() else artifact, full_check=True)
        return io, details, ort_runners(source)

    def probe(self, run, artifact, runtime):
        level = "disable_all" if "DISABLE_ALL" in runtime else "default"
        return onnx_probe(artifact, level, runtime)

    def exportable(self, run, artifact):
        left = onnx_graph(artifact).unsupported_ops
        if left:
            raise ConversionError(blocked_by(artifact, left))
        # A graph input the model lacks (a captured constant made an input) cannot be fed.
        inputs = [t["name"] for t in onnx_io(artifact)["inputs"]]
        if sorted(inputs) != sorted(run.signature.names):
            raise ConversionError(f"tf2onnx made graph inputs {inputs}, not the model's "
                                  f"{run.signature.names}")


    # -- quantized variants ----------------------------------------------------------------

    def quantize(self, run, mode, reference, calibration):
        quantized = quantize_onnx(run.get(self.name, reference), mode, calibration)
        write_bytes(run.path(f"{self.name}:{mode}", reference), quantized.SerializeToString())
        return quantized

    def quantized_runtimes(self, artifact):
        import onnx

        onnx.checker.check_model(artifact, full_check=True)
        return ort_runners(artifact.SerializeToString())

    def twin_comparison(self, artifact, twin):
        return compare_onnx(_onnx_proto(artifact), _onnx_proto(twin))


ONNX = register(OnnxFormat())
register_variants(ONNX)
