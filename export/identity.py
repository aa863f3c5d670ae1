"""The reference model for the structural check: the same model with every DropBlock an identity.

A DropBlock that folds away at inference leaves no op of its own, so exporting the model and
exporting it with each DropBlock swapped for ``lambda x: x`` must give the same op multiset.
Instead of cloning (``keras.models.clone_model`` cannot rebuild subclassed models, nor DropBlock
layers held inside custom layers) the swap is done in place: each DropBlock instance's ``call``
is shadowed by an identity for the duration of the ``with`` block, then restored. Weights, names
and every other layer are the very same objects, so only the DropBlock layers can differ.
"""

from __future__ import annotations

import contextlib

from tfdropblock.schedule import dropblock_layers

_MISSING = object()


def _identity_call(inputs, *args, **kwargs):
    return inputs


@contextlib.contextmanager
def dropblocks_as_identity(model):
    """Within the block, every DropBlock layer of ``model`` (nested, subclassed) is an identity."""
    layers = list({id(layer): layer for layer in dropblock_layers(model)}.values())
    saved = [(layer, layer.__dict__.get("call", _MISSING)) for layer in layers]
    try:
        for layer in layers:
            # object.__setattr__ skips Keras's attribute tracking: this is not layer state.
            object.__setattr__(layer, "call", _identity_call)
        yield layers
    finally:
        for layer, previous in saved:
            if previous is _MISSING:
                layer.__dict__.pop("call", None)
            else:
                object.__setattr__(layer, "call", previous)


def dropblock_names(model):
    """Names of the DropBlock layers of ``model``, in discovery order, without duplicates."""
    return list(dict.fromkeys(layer.name for layer in dropblock_layers(model)))
