"""ONNX export through tf2onnx, from a tf.function with an explicit signature, and ORT runners.

``tf2onnx.convert.from_keras`` fails on Keras 3 here; ``from_function`` on
``model(x, training=False)`` works. Every tf2onnx entry point converts with
``continue_on_error=True``: an op it cannot lower is only logged and copied into the default
domain, giving an invalid model. :func:`unsupported_ops` finds those, and :func:`export_onnx`
refuses to write such a model.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from tfdropblock.export.errors import ConversionError, InputError

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


def convert_onnx(model, signature, opset=DEFAULT_OPSET):
    """The raw ``onnx.ModelProto`` tf2onnx produces (possibly holding unsupported ops)."""
    import tf2onnx

    check_opset(opset)
    fn = signature.flat_function(model)
    with _quiet_tf2onnx():
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=list(signature.specs),
                                                     opset=opset)
        except Exception as e:
            if over_protobuf_limit(e, model):
                raise ConversionError(
                    f"tf2onnx failed: the model's weights ({weight_bytes(model) / 2**30:.2f} "
                    "GiB) reach the 2 GiB protobuf limit, and tf2onnx 1.17 first freezes them "
                    "into one TensorFlow graph (its large_model mode fails with numpy 2): "
                    "export this model to SavedModel, or to ONNX with tf2onnx --large_model "
                    f"under numpy 1 ({type(e).__name__}: {_one_line(e)})", format="onnx") from e
            raise ConversionError(f"tf2onnx failed: {type(e).__name__}: {_one_line(e)}",
                                  format="onnx") from e
    return proto


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

    from tfdropblock.export.atomic import write_bytes

    path = Path(path)
    if not needs_external_data(proto, external_data):
        if needs_external_data(proto):
            raise ConversionError(
                f"the ONNX model ({proto.ByteSize() / 2**30:.2f} GiB) exceeds the 2 GiB "
                "protobuf limit: export with onnx_external_data=None or True "
                "(--onnx-external-data) to keep its weights in model.onnx.data", format="onnx")
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
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _initializers(g)


def unsupported_ops(proto):
    """Op types in the default domain that ONNX does not define: what tf2onnx could not lower."""
    from tfdropblock.export.graphs import onnx_graph

    return onnx_graph(proto).unsupported_ops


def export_onnx(model, path, signature, opset=DEFAULT_OPSET):
    """Convert and write to ``path``; ConversionError if tf2onnx left any op unconverted."""
    proto = convert_onnx(model, signature, opset)
    left = unsupported_ops(proto)
    if left:
        raise ConversionError(f"tf2onnx could not convert {len(left)} op type(s): "
                              f"{', '.join(left)}", format="onnx", unsupported_ops=left)
    save_onnx(proto, path)
    return path


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


def _one_line(e):
    text = str(e).strip().splitlines()
    return text[0][:500] if text else type(e).__name__
