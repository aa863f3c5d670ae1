"""Insert DropBlock layers into an existing Keras model (Functional or Sequential)."""

from __future__ import annotations

import collections
import difflib
import numbers

import keras

from tfdropblock._compat import (flatten_layers, functional_class, inputs_struct,
                                 keras_history_operation, nodes_by_depth, outputs_struct)
from tfdropblock.models._common import DROPBLOCK_BY_RANK, is_int

# Keras 3 keeps the Functional class private; the graph attributes read here are its own.
_Functional = functional_class()


def add_dropblock(model, after, rate=0.1, block_size=7, *, suffix="_dropblock", **layer_kwargs):
    """A copy of ``model`` with a DropBlock layer after each selected layer, sharing its weights.

    The functional graph is walked in order and every original layer is called again on the
    new tensors, so the new model uses the *same layer objects* (same variables: training one
    trains the other). The DropBlock rank is picked from each selected layer's output rank:
    3-D outputs get :class:`~tfdropblock.DropBlock1D`, 4-D ``DropBlock2D``, 5-D ``DropBlock3D``.
    Each DropBlock is named ``<layer name><suffix>``.

    Args:
        model: a Functional model (e.g. ``keras.applications.ResNet50(weights=None)``) or a
            built Sequential model. Subclassed models have no layer graph and are refused.
        after: which layers get a DropBlock after them: a layer name, a list of names (or
            layer objects), or a callable ``layer -> bool`` applied to every layer of the model
            (input layers included). Only top-level layers can be selected: to reach inside a
            nested model, rewrite that model first.
        rate: drop rate in [0, 1), or a callable ``layer -> rate`` (e.g. a quarter of the rate
            in an earlier stage, as the paper does).
        block_size: int or per-axis tuple (clamped to each map).
        suffix: appended to the selected layer's name to name its DropBlock.
        **layer_kwargs: passed to every DropBlock layer (``share_channels``, ``gamma_mode``,
            ``seed``, ``data_format``). An int ``seed`` gives the i-th inserted layer
            ``seed + i``, so layers do not draw identical masks. Without ``data_format`` each
            DropBlock takes the selected layer's own ``data_format`` when it has one (Conv,
            pooling), else ``keras.config.image_data_format()``.

    Returns:
        A new Functional ``keras.Model`` with the original model's name, inputs and output
        structure (not compiled: compile it before training).

    Raises:
        TypeError: ``model`` is not a Keras model, is subclassed, or ``after`` / ``rate`` have
            the wrong type.
        ValueError: a name matches no layer (close matches are listed), a selected layer is
            called more than once in the model (shared layer), returns several tensors, or its
            output is not a 3-D, 4-D or 5-D feature map with static spatial dims.

    Example:
        >>> base = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        >>> model = add_dropblock(
        ...     base, after=lambda l: l.name.startswith(("conv4_", "conv5_"))
        ...     and l.name.endswith("_out"),
        ...     rate=lambda l: 0.1 if l.name.startswith("conv5_") else 0.025, block_size=7)
    """
    functional = _as_functional(model)
    operations = functional.operations
    targets = _select(functional, operations, after)
    by_depth = nodes_by_depth(functional)
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    nodes_of = collections.defaultdict(list)
    for node in nodes:
        nodes_of[id(node.operation)].append(node)
    for layer in targets:
        _check_target(functional, layer, nodes_of[id(layer)],
                      _data_format(layer, layer_kwargs))

    taken = {op.name for op in operations}
    seed = layer_kwargs.pop("seed", None)
    if seed is not None and not is_int(seed):
        raise TypeError(f"Invalid seed={seed!r}: expected an int or None.")
    inserted = []

    def drop(layer, tensor):
        layer_rate = rate(layer) if callable(rate) else rate
        if isinstance(layer_rate, bool) or not isinstance(layer_rate, numbers.Real):
            raise TypeError(
                f"Invalid rate={layer_rate!r} for layer {layer.name!r}: expected a float in "
                "[0, 1), or a callable returning one.")
        kwargs = dict(layer_kwargs, data_format=_data_format(layer, layer_kwargs))
        if seed is not None:
            kwargs["seed"] = seed + len(inserted)
        cls = DROPBLOCK_BY_RANK[len(tensor.shape) - 2]
        dropblock = cls(rate=layer_rate, block_size=block_size,
                        name=_unique(f"{layer.name}{suffix}", taken), **kwargs)
        inserted.append(dropblock)
        return dropblock(tensor)

    target_ids = {id(layer) for layer in targets}
    by_input_layer = {id(x): keras_history_operation(x) for x in functional.inputs}
    new_inputs = []
    tensors = {}
    for x in functional.inputs:
        new = keras.Input(batch_shape=x.shape, dtype=x.dtype, sparse=x.sparse,
                          name=by_input_layer[id(x)].name)
        new_inputs.append(new)
        input_layer = by_input_layer[id(x)]
        tensors[id(x)] = drop(input_layer, new) if id(input_layer) in target_ids else new

    for node in nodes:
        if node.is_input:
            continue
        if any(id(x) not in tensors for x in node.input_tensors):
            continue  # Not reachable from the inputs; Functional's own walk skips it too.
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = keras.tree.flatten(node.operation(*args, **kwargs))
        if id(node.operation) in target_ids:
            outputs = [drop(node.operation, outputs[0])]
        for old, new in zip(node.outputs, outputs):
            tensors[id(old)] = new

    missing = [x.name for x in functional.outputs if id(x) not in tensors]
    if missing:
        raise ValueError(f"Could not rebuild model {model.name!r}: outputs {missing} are not "
                         "reachable from its inputs.")
    inputs = keras.tree.pack_sequence_as(inputs_struct(functional), new_inputs)
    outputs = keras.tree.pack_sequence_as(
        outputs_struct(functional), [tensors[id(x)] for x in functional.outputs])
    return keras.Model(inputs, outputs, name=model.name)


def _as_functional(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid model={model!r}: expected a keras.Model (Functional or Sequential).")
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                f"Sequential model {model.name!r} has no input shape yet, so it has no graph "
                "to rewrite: start it with keras.Input(shape=...) or call "
                "model.build(input_shape) first.")
        # Replay the layers on a fresh input: a Functional model over the same layer objects.
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype,
                             name=f"{model.name}_input")
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if _Functional is None or not isinstance(model, _Functional):
        raise TypeError(
            f"Cannot rewrite model {model.name!r}: it is a subclassed keras.Model "
            f"({type(model).__module__}.{type(model).__qualname__}) whose call() is Python code, "
            "so there is no layer graph to insert DropBlock into. Add the DropBlock layers in "
            "its call(), or build it as a Functional model: keras.Model(inputs, outputs).")
    return model


def _select(model, operations, after):
    if callable(after) and not isinstance(after, (str, keras.layers.Layer)):
        targets = [op for op in operations if after(op)]
        if not targets:
            raise ValueError(f"after={after!r} selected no layer of model {model.name!r}.")
        return targets
    names = [after] if isinstance(after, (str, keras.layers.Layer)) else after
    try:
        names = list(names)
    except TypeError:
        names = None
    if not names or not all(isinstance(n, (str, keras.layers.Layer)) for n in names):
        raise TypeError(
            f"Invalid after={after!r}: expected a layer name, a non-empty list of layer names "
            "(or layer objects), or a callable layer -> bool.")
    by_name = {op.name: op for op in operations}
    targets = []
    for name in dict.fromkeys(names):
        if isinstance(name, keras.layers.Layer):
            if not any(op is name for op in operations):
                raise ValueError(f"Layer {name.name!r} (an object) is not a top-level layer "
                                 f"of model {model.name!r}.")
            targets.append(name)
            continue
        if name in by_name:
            targets.append(by_name[name])
            continue
        nested = _nested_owner(model, name)
        if nested is not None:
            raise ValueError(
                f"Layer {name!r} is inside the nested model {nested!r} of model "
                f"{model.name!r}; add_dropblock only inserts after top-level layers: rewrite "
                f"{nested!r} with add_dropblock first, or select {nested!r} itself.")
        close = difflib.get_close_matches(name, list(by_name), n=5, cutoff=0.6)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(f"No layer named {name!r} in model {model.name!r}.{hint}")
    return targets


def _nested_owner(model, name):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = {sub.name for sub in flatten_layers(layer, include_self=False)}
            if name in inner:
                return layer.name
    return None


def _data_format(layer, layer_kwargs):
    """The caller's ``data_format``, else the selected layer's own, else Keras's default."""
    if layer_kwargs.get("data_format") is not None:
        return layer_kwargs["data_format"]
    own = getattr(layer, "data_format", None)
    if own in ("channels_last", "channels_first"):
        return own
    return keras.config.image_data_format()


def _check_target(model, layer, nodes, data_format):
    if len(nodes) > 1:
        raise ValueError(
            f"Layer {layer.name!r} is called {len(nodes)} times in model {model.name!r} (a "
            "shared layer); inserting DropBlock after it is not supported, since it is "
            "ambiguous whether each call should get its own mask. Select the layers that "
            "consume its outputs instead.")
    # The node's outputs, not layer.output: the layer may also be called in other models.
    outputs = nodes[0].outputs if nodes else []
    if len(outputs) != 1:
        raise ValueError(
            f"Layer {layer.name!r} returns {len(outputs)} tensors; DropBlock after a "
            "multi-output layer is not supported. Select the layers that consume its outputs "
            "instead.")
    shape = tuple(outputs[0].shape)
    if len(shape) - 2 not in DROPBLOCK_BY_RANK:
        raise ValueError(
            f"Layer {layer.name!r} outputs shape {shape} (rank {len(shape)}): DropBlock needs "
            "(batch, spatial..., channels) features of rank 3 (DropBlock1D), 4 (DropBlock2D) "
            "or 5 (DropBlock3D).")
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    if any(d is None for d in spatial):
        raise ValueError(
            f"Layer {layer.name!r} outputs shape {shape} with dynamic spatial dims "
            f"({data_format}): DropBlock sizes its blocks from static spatial dims; give the "
            "model a fixed input shape.")


def _unique(name, taken):
    candidate, i = name, 2
    while candidate in taken:
        candidate = f"{name}_{i}"
        i += 1
    taken.add(candidate)
    return candidate
