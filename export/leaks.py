"""Training-mode leaks: the layers that run in training mode when the model is called without
``training=``, as Keras's own exporters call it.

In Keras 3.15 a layer whose ``call`` defaults ``training=True`` (Resizing, CenterCrop, the
Random* layers) writes True into the call context when the caller passed nothing, and every
later layer that defaults ``training=None`` (Dropout in a custom layer, BatchNormalization, a
context-following DropBlock) then runs in training mode. The kit's own exports pass
``training=False`` and are not affected; ``model.export`` is.

The rule: the model's layer graph is rebuilt as a Keras model exposing the output of every
layer call, and called once plainly and once with ``training=False`` on the same inputs (one
batch of the run's inputs). A layer call is a leak when its output differs between the two
calls while the outputs feeding it did not: only the first layer that changes in each chain is
blamed, not everything downstream of it. Each call site of a shared layer is judged on its
own; a nested model is one layer of the outer graph, blamed as a whole. A model without a
layer graph (subclassed) is judged as a whole: its own name is listed when its outputs
differ. Outputs are compared exactly: the two calls run the same kernels on the same inputs.
"""

from __future__ import annotations

import numpy as np

from tfdropblock._compat import layer_graph, nodes_by_depth


def training_mode_leaks(model, inputs):
    """Names of the layers of ``model`` whose output differs between ``model(inputs)`` and
    ``model(inputs, training=False)`` while their inputs do not (see the module's rule)."""
    probe = _probe(model)
    if probe is None:
        return [] if _same(model(inputs), model(inputs, training=False)) else [model.name]
    nodes, probe_model = probe
    plain = probe_model(inputs)
    inference = probe_model(inputs, training=False)
    changed, at = {}, 0
    for node in nodes:  # each node's outputs, in the probe's flat output order
        n = len(node.outputs)
        changed[id(node)] = not _same(plain[at:at + n], inference[at:at + n])
        at += n
    made_by = {id(t): id(node) for node in nodes for t in node.outputs}
    leaks = [node.operation.name for node in nodes if changed[id(node)] and not any(
        changed.get(made_by.get(id(t))) for t in node.input_tensors)]
    return list(dict.fromkeys(leaks))


def _probe(model):
    """``(nodes, model exposing every node's outputs)``: the layer calls of a functional or
    built Sequential model, each site of a shared layer its own node; None for a model
    without a layer graph (subclassed)."""
    import keras

    graph = layer_graph(model)
    if graph is None:
        return None
    by_depth = nodes_by_depth(graph)
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
             if not node.is_input]
    if not nodes:
        return None
    try:
        return nodes, keras.Model(graph.input, [t for node in nodes for t in node.outputs])
    except Exception:  # a graph Keras cannot cut at these tensors: judge the model whole
        return None


def _same(a, b):
    import keras

    a, b = keras.tree.flatten(a), keras.tree.flatten(b)
    return len(a) == len(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True) for x, y in zip(a, b))
