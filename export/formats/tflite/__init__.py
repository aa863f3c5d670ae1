"""TFLite (LiteRT): conversion from the exported SavedModel, the flatbuffer reader, a runner,
and the quantized variants (float16, dynamic range, int8) with their twin comparison.

Converting from the SavedModel (not from concrete functions) is what freezes Keras 3 variables.
Builtin ops only by default: a random op that leaks into the inference graph then fails the
conversion instead of turning silently into Flex ops that most runtimes cannot run.

The reader reads every subgraph (init subgraphs included); opcode =
max(builtin_code, deprecated_builtin_code), Flex and other custom ops by their custom code.

One module per piece, in the order a format is used: conversion, reader, runtime, probe,
quantization, then ``format`` (the :class:`~tfdropblock.export.formats.base.Format` that
registers it).
"""

from tfdropblock.export.formats.tflite import format  # noqa: F401  (registers tflite)
