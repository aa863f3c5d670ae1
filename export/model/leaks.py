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
A layer that draws noise in every mode (its output differs between two ``training=False``
calls too) is not a training-mode leak and is not listed: the structure and determinism checks
report it; telling the two apart costs a third call, made only when some layer is suspect.
"""

from __future__ import annotations

import numpy as np

from tfdropblock._compat import layer_graph, nodes_by_depth


def training_mode_leaks(model, inputs):
    """Names of the layers of ``model`` whose output differs between ``model(inputs)`` and
    ``model(inputs, training=False)`` while their inputs do not (see the module's rule)."""
    probe = _probe(model)
    run = probe[1] if probe is not None else model

    def call(**training):
        # A layer in training mode updates its state (BatchNormalization's moving statistics,
        # seed generators): every call leaves the model as it found it, so the exports and
        # Keras's expected outputs still agree.
        with _state_kept(model):
            return run(inputs, **training)

    try:
        plain, inference = call(), call(training=False)
    except Exception:  # a graph that runs whole but not cut open: judge it whole
        if probe is None:
            raise
        probe, run = None, model
        plain, inference = call(), call(training=False)
    if probe is None:
        if _same(plain, inference):
            return []
        return [] if not _same(inference, _advanced(model, model, inputs)) else [model.name]
    nodes, probe_model = probe
    changed = _changed(nodes, plain, inference)
    made_by = {id(t): id(node) for node in nodes for t in node.outputs}
    blamed = [node for node in nodes if changed[id(node)] and not any(
        changed.get(made_by.get(id(t))) for t in node.input_tensors)]
    if blamed:
        # A layer that draws noise in every mode differs too: it is no training-mode leak
        # (the structure and determinism checks are its judges), so a second inference call
        # tells the two apart. Only a model with a suspect pays for it.
        noisy = _changed(nodes, inference, _advanced(probe_model, model, inputs))
        blamed = [node for node in blamed if not noisy[id(node)]]
    return list(dict.fromkeys(node.operation.name for node in blamed))


def _advanced(run, model, inputs):
    """``run(inputs, training=False)`` a second time, the seed generators one call further on
    than the first, as a layer that draws noise at inference would see them; ``model``'s
    state kept."""
    with _state_kept(model):
        run(inputs, training=False)  # the first call's draws, again
        return run(inputs, training=False)


class _state_kept:
    """Restores the non-trainable variables of ``model`` (moving statistics, seed generator
    states) on exit."""

    def __init__(self, model):
        self.variables = list(model.non_trainable_variables)

    def __enter__(self):
        self.saved = [np.array(v.numpy(), copy=True) for v in self.variables]

    def __exit__(self, *exc):
        for variable, value in zip(self.variables, self.saved):
            variable.assign(value)


def _changed(nodes, a, b):
    """{id(node): whether its outputs differ between the flat probe outputs ``a`` and ``b``}."""
    changed, at = {}, 0
    for node in nodes:  # each node's outputs, in the probe's flat output order
        n = len(node.outputs)
        changed[id(node)] = not _same(a[at:at + n], b[at:at + n])
        at += n
    return changed


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
