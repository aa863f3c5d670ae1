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


from tfdropblock.export.errors import ConversionError, InputError

DEFAULT_OPSET = 17
MAX_OPSET = 18  # the newest opset tf2onnx 1.17 emits
MIN_OPSET = 13


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
            raise ConversionError(f"tf2onnx failed: {type(e).__name__}: {_one_line(e)}",
                                  format="onnx") from e
    return proto


def unsupported_ops(proto):
    """Op types in the default domain that ONNX does not define: what tf2onnx could not lower."""
    from tfdropblock.export.graphs import onnx_graph

    return onnx_graph(proto).unsupported_ops


def export_onnx(model, path, signature, opset=DEFAULT_OPSET):
    """Convert and write to ``path``; ConversionError if tf2onnx left any op unconverted."""
    from tfdropblock.export.atomic import write_bytes

    proto = convert_onnx(model, signature, opset)
    left = unsupported_ops(proto)
    if left:
        raise ConversionError(f"tf2onnx could not convert {len(left)} op type(s): "
                              f"{', '.join(left)}", format="onnx", unsupported_ops=left)
    write_bytes(path, proto.SerializeToString())
    return path


class OrtRunner:
    """ONNX Runtime session on CPU at ``level`` ("disable_all" or "default")."""

    def __init__(self, model_bytes, level="default"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if level == "disable_all":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, named_inputs):
        feed = {i.name: named_inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


def _one_line(e):
    text = str(e).strip().splitlines()
    return text[0][:500] if text else type(e).__name__
