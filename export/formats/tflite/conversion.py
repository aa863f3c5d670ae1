"""TFLite conversion: the SavedModel through ``tf.lite.TFLiteConverter``, builtin ops only
(Flex ops when asked)."""

from __future__ import annotations

import re
import warnings

from tfdropblock._util import one_line
from tfdropblock.export.core.errors import ConversionError
from tfdropblock.export.formats.saved_model.conversion import ENDPOINT
from tfdropblock.export.formats.tflite.runtime import _INTERPRETER_WARNING

_UNSUPPORTED = re.compile(r"'tf\.(\w+)' op")


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
