"""The artifact formats, one folder each, and the registry they register in.

``saved_model`` (:mod:`.saved_model`), ``tflite`` (:mod:`.tflite`, converted from the
SavedModel) and ``onnx`` (:mod:`.onnx`) register themselves on import, in that order, each
with its quantized variants (:mod:`.quantized`) and its Keras exporter (:mod:`.keras_exports`). The registry itself is
:mod:`tfdropblock.export.run.registry`, re-exported here for format modules and plugins.
"""

from tfdropblock.export.formats.base import Format
from tfdropblock.export.run.registry import (Option, check_formats, detect, get, groups,
                                             keras_exporter, names, options, register,
                                             register_keras_exporter, unregister)
from tfdropblock.export.formats import saved_model, tflite, onnx  # noqa: E402,F401  (register)

__all__ = ["Format", "Option", "check_formats", "detect", "get", "groups", "keras_exporter",
           "names", "options", "register", "register_keras_exporter", "unregister"]
