"""The reference model for the structural check: the same model with every DropBlock an identity.

A DropBlock that folds away at inference leaves no op of its own, so exporting the model and
exporting it with each DropBlock swapped for ``lambda x: x`` must give the same op multiset.
Instead of cloning (``keras.models.clone_model`` cannot rebuild subclassed models, nor DropBlock
layers held inside custom layers) the swap is done in place: each DropBlock instance's ``call``
is shadowed by an identity for the duration of the ``with`` block, then restored. Weights, names
and every other layer are the very same objects, so only the DropBlock layers can differ.
"""

from __future__ import annotations

import collections
import contextlib

from tfdropblock._compat import flatten_layers
from tfdropblock import dropblock_layers

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


class DropBlockNames(list):
    """The DropBlock layers' names, one per instance: the plain name, or for a name that several
    instances share (in different nested models) its path from the model, ``"a/db"``.

    A list, as reports show it; it also carries what the name-scope check needs to tell a
    DropBlock's scope from another layer's (see :func:`..graphs.scope_matcher`):
    ``dropblock_scopes`` and ``other_scopes``, ``(parent name, layer name)`` of every
    DropBlock and of every other layer, the model and nested models included.
    """

    def __init__(self, names=(), dropblock_scopes=(), other_scopes=()):
        super().__init__(names)
        self.dropblock_scopes = list(dropblock_scopes)
        self.other_scopes = list(other_scopes)


def dropblock_names(model):
    """One name per DropBlock layer instance of ``model``, in discovery order (see
    :class:`DropBlockNames`); nested models and layers held by layers included."""
    layers = {id(layer): layer for layer in dropblock_layers(model)}
    entries = []  # (path from the model, is a DropBlock)
    seen = {id(model)}

    def visit(layer, path):
        for child in flatten_layers(layer, include_self=False, recursive=False):
            if id(child) in seen:  # a layer shared by two parents is one instance
                continue
            seen.add(id(child))
            entries.append(((*path, child.name), id(child) in layers))
            visit(child, (*path, child.name))

    visit(model, (model.name,))
    # Whatever dropblock_layers finds that the walk did not (it should find them all) is still
    # counted, as a layer of the model itself.
    entries += [((model.name, layer.name), True) for key, layer in layers.items()
                if key not in seen]
    paths = [path for path, is_db in entries if is_db]
    shared = collections.Counter(path[-1] for path in paths)
    names = [path[-1] if shared[path[-1]] == 1 else "/".join(path[1:]) for path in paths]
    return DropBlockNames(
        names, [(path[-2], path[-1]) for path in paths],
        [(None, model.name)] + [(path[-2], path[-1]) for path, is_db in entries if not is_db])
