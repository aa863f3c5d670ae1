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

One module per piece, in the order a format is used: conversion, reader, runtime, probe,
quantization, then ``format`` (the :class:`~tfdropblock.export.formats.base.Format` that
registers it).
"""

from tfdropblock.export.formats.onnx import format  # noqa: F401  (registers onnx)
