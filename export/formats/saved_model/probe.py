"""The SavedModel probe for ``locate``: the reloaded serving graph, frozen."""

from __future__ import annotations

import re

import numpy as np
from tfdropblock.export.formats.saved_model.conversion import ENDPOINT
from tfdropblock.export.formats.saved_model.runtime import SavedModelRunner



# The reloaded serving function calls the traced one through a call op (a SavedModel saved
# again nests one more); inlined, the traced function's ops are named under them.
_CALL_SCOPES = re.compile(r"^((Stateful)?PartitionedCall(_\d+)?/)+")


def saved_model_probe(path, endpoint=ENDPOINT):
    """A :class:`~tfdropblock.export.checks.locate.Probe` of the reloaded SavedModel's ``endpoint``:
    its graph as read back from the artifact, with the function it calls inlined and its
    variables frozen to the values saved (TensorFlow's own freezing, as tf2onnx does), every
    op output fetched; run by TensorFlow as the reloaded signature is."""
    import tensorflow as tf

    from tfdropblock._compat import freeze_concrete_function
    from tfdropblock.export.checks.locate import Probe

    runner = SavedModelRunner(path, endpoint)  # held: its variables must outlive the freezing
    fn = runner.fn
    frozen = freeze_concrete_function(fn)
    graph_def = frozen.graph.as_graph_def()
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    # Each input by its placeholder's name, which is the signature's argument name; the order
    # of the frozen function's inputs need not be the signature's.
    _, kwargs = fn.structured_input_signature
    by_placeholder = {t.name.split(":")[0]: t.name for t in frozen.inputs}
    feeds = {name: graph.get_tensor_by_name(by_placeholder[spec.name or name])
             for name, spec in kwargs.items()}
    # A signature returns a dict, flattened in sorted key order.
    outputs = dict(zip(sorted(fn.structured_outputs), (t.name for t in frozen.outputs)))
    tensors = [(t.name, [_CALL_SCOPES.sub("", node.name)])
               for node in graph_def.node if node.op != "Const"  # weights: not outputs
               for t in graph.get_operation_by_name(node.name).outputs
               if t.dtype.is_floating or t.dtype.is_integer or t.dtype == tf.bool]
    readers = {}
    for node in graph_def.node:
        for name in node.input:
            if not name.startswith("^"):  # a control input reads no value
                key = name if ":" in name else f"{name}:0"
                readers.setdefault(key, []).append([_CALL_SCOPES.sub("", node.name)])
    fetch = [graph.get_tensor_by_name(key) for key, _ in tensors]
    pruned = wrapped.prune(list(feeds.values()), fetch)
    keys = [key for key, _ in tensors]

    def run(named_inputs):
        values = pruned(*(tf.constant(named_inputs[n]) for n in feeds))
        return {key: np.asarray(v) for key, v in zip(keys, values)}

    return Probe("saved_model (reloaded, variables frozen)", tensors, outputs, run, readers)
