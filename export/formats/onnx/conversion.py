"""ONNX conversion: tf2onnx on the traced ``model(x, training=False)`` (captured constants
frozen, not made inputs), the opset and external-data options, the dynamic batch axis, and
writing the ModelProto (its weights beside it past the 2 GiB protobuf limit)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from tfdropblock._compat import tf2onnx_convert_graph_def
from tfdropblock._util import describe_error
from tfdropblock._files import write_bytes
from tfdropblock.export.core.errors import ConversionError, InputError
from tfdropblock.export.formats.onnx.reader import _graphs, _nodes

DEFAULT_OPSET = 17
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
