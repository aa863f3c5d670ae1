"""SavedModel: export through ``keras.export.ExportArchive``, its graph reader, its runner.

``model.export()`` traces ``model.__call__`` without ``training``; in Keras 3.15 a layer that
defaults ``training=True`` (Resizing, CenterCrop, Random*) then switches every later layer to
training mode. The endpoint here passes ``training=False`` explicitly, which removes that leak.

The graph reader walks from the signature's outputs backwards through the graph, into every
function-valued attribute (PartitionedCall ``f``, If/Case branches, While cond/body, ...),
recursively. ``saved_model_cli scan`` stops at (Stateful)PartitionedCall; this does not.

One module per piece, in the order a format is used: conversion, reader, runtime, probe, then
``format`` (the :class:`~tfdropblock.export.formats.base.Format` that registers it).
"""

from tfdropblock.export.formats.saved_model import format  # noqa: F401  (registers saved_model)
