"""TFLite (LiteRT) conversion from the exported SavedModel, and an XNNPACK-free runner.

Converting from the SavedModel (not from concrete functions) is what freezes Keras 3 variables.
Builtin ops only by default: a random op that leaks into the inference graph then fails the
conversion instead of turning silently into Flex ops that most runtimes cannot run.
"""

from __future__ import annotations

import re

import numpy as np

from tfdropblock.export.errors import ConversionError
from tfdropblock.export.savedmodel import ENDPOINT

_UNSUPPORTED = re.compile(r"'tf\.(\w+)' op")


def convert_tflite(saved_model_dir, select_tf_ops=False):
    """Flatbuffer bytes of the SavedModel's ``serve`` signature; ConversionError on failure."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                         signature_keys=[ENDPOINT])
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    try:
        return converter.convert()
    except Exception as e:
        message = str(e)
        unsupported = sorted(set(_UNSUPPORTED.findall(message)))
        if unsupported:
            summary = f"ops not supported by the builtin runtime: {', '.join(unsupported)}"
        else:
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            summary = (lines[0] if lines else type(e).__name__)[:400]
        raise ConversionError(f"TFLite conversion failed: {summary}", format="tflite",
                              unsupported_ops=unsupported) from e


def interpreter(model_content):
    """A LiteRT interpreter without the default XNNPACK delegate, which would replace ops."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_content=model_content, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


class TFLiteRunner:
    """Runs the ``serve`` signature with named inputs (any batch size); named numpy outputs."""

    def __init__(self, model_content):
        self.interpreter = interpreter(model_content)
        signatures = self.interpreter.get_signature_list()
        key = ENDPOINT if ENDPOINT in signatures else next(iter(signatures), None)
        if key is None:
            raise ValueError("TFLite model has no signature.")
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
