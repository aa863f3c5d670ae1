"""Training-mode leaks: the layers that run in training mode when the model is called without
``training=``, as Keras's own exporters call it.

In Keras 3.15 a layer whose ``call`` defaults ``training=True`` (Resizing, CenterCrop, the
Random* layers) writes True into the call context when the caller passed nothing, and every
later layer that defaults ``training=None`` (Dropout in a custom layer, BatchNormalization, a
context-following DropBlock) then runs in training mode. The kit's own exports pass
``training=False`` and are not affected; ``model.export`` is.

The rule: the model is rebuilt as a Keras model exposing every layer's output, and called once
plainly and once with ``training=False`` on the same inputs. A layer is a leak when its output
differs between the two calls while the outputs of the layers feeding it did not: only the
first layer that changes in each chain is blamed, not everything downstream of it. A model
that cannot be rebuilt so (a subclassed model) is judged as a whole: its own name is listed
when its outputs differ. A layer shared between several call sites has no single output and
is not probed; a leak in it is blamed on the first probed layer after it.
"""

from __future__ import annotations

import numpy as np

from tfdropblock._compat import keras_history_operation


def training_mode_leaks(model, inputs):
    """Names of the layers of ``model`` whose output differs between ``model(inputs)`` and
    ``model(inputs, training=False)`` while their inputs do not (see the module's rule)."""
    probe = _probe(model)
    if probe is None:
        return [] if _same(model(inputs), model(inputs, training=False)) else [model.name]
    layers, probe_model = probe
    plain = probe_model(inputs)
    inference = probe_model(inputs, training=False)
    changed = {layer.name: not _same(a, b) for layer, a, b in zip(layers, plain, inference)}
    return [layer.name for layer in layers
            if changed[layer.name] and not any(changed.get(name) for name in _sources(layer))]


def _probe(model):
    """``(layers, model exposing each layer's output)`` of a functional or Sequential model
    built on ``keras.Input``; None for one that cannot be rebuilt so."""
    import keras

    try:
        inputs = model.input  # the model's own input structure: a tensor, list or dict
    except (AttributeError, ValueError):
        return None
    if inputs is None:
        return None
    layers, outputs = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output  # raises for a layer called at several sites
        except (AttributeError, ValueError):
            continue
        layers.append(layer)
        outputs.append(output)
    if not layers:
        return None
    try:
        return layers, keras.Model(inputs, outputs)
    except Exception:  # a graph Keras cannot cut at these tensors: judge the model whole
        return None


def _sources(layer):
    """Names of the layers whose outputs ``layer`` takes."""
    import keras

    try:
        tensors = keras.tree.flatten(layer.input)
    except (AttributeError, ValueError):
        return []
    return [keras_history_operation(t).name for t in tensors]


def _same(a, b):
    import keras

    a, b = keras.tree.flatten(a), keras.tree.flatten(b)
    return len(a) == len(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True) for x, y in zip(a, b))
