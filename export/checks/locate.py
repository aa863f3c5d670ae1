"""First divergence: the first Keras layer whose output an artifact gets wrong.

When parity fails the final outputs only say *that* an artifact differs. Here the same inputs
go through the artifact with its intermediate tensors exposed (a :class:`Probe`, which each
format builds from its own artifact), and every Keras layer whose output survives in it is
compared with Keras's own output of that layer (``training=False``, same inputs).

Mapping a layer to a tensor is by name, never by guess. Keras opens one name scope per layer
call in the traced inference function (``functional_1/conv2d_1/...``; TensorFlow makes each
scope unique by a ``_<n>`` suffix), and the converters name their tensors after those ops:
tf2onnx names each node after the TensorFlow op it came from, and the TFLite converter names a
tensor after every op fused into it, joined by ``;``. So:

1. the layer scopes are read from the traced inference function, in the order its ops were
   created, and matched in model order to the layers (a scope is a layer's name, or its name
   with one ``_<n>`` suffix);
2. an artifact tensor belongs to the *latest* layer (in model order) among the scopes its
   names mention: a tensor TFLite fused from a convolution and the activation after it holds
   the activation's output, not the convolution's;
3. a layer's output is the last of its tensors (in execution order) whose shape is the Keras
   output's, preferring those read outside the layer (by another layer's op or as a graph
   output) to those only the layer itself reads, or, for a 4-D output, the NCHW permutation of it (tf2onnx runs convolutions in
   NCHW between Transposes), which is transposed back before comparing; where H == W == C the
   shape cannot tell the two apart, and the reading closer to Keras is taken
   (``layout_ambiguous``: the other reading scrambles the tensor); the artifact's graph
   outputs are the outputs of the layers that make the model's outputs.

A layer with no such tensor is ``compared: false`` with the reason (no op named after it: an
identity at inference, or merged into an op named otherwise; fused into a later layer's
tensor; no tensor of its output shape; several outputs; called more than once).

Errors are measured as the parity check measures them (:func:`.checks.compare_outputs`):
``max_abs_error``, ``max_scaled_error`` (max abs error over the layer's largest |Keras value|),
and beyond tolerance where ``|got - keras| <= atol + rtol * |keras|`` fails for some value;
``tolerance_ratio`` is the largest ``|got - keras| / (atol + rtol * |keras|)``, so above 1 is
beyond tolerance.

"First" in a DAG: the layers are in Keras's model order, which is a topological order (every
layer comes after the layers it reads), so the first compared layer beyond tolerance is one
none of whose compared ancestors is beyond tolerance; a layer that is fine is never blamed for
a successor. When some producer between it and its nearest compared ancestors was not compared
(fused away), ``uncompared_inputs`` names it: the divergence may begin there.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

from tfdropblock._compat import (call_count, functional_class, inbound_layers,
                                 inputs_struct, keras_history_operation)
from tfdropblock.export.checks.rules import compare_outputs
from tfdropblock.export.model.signature import named_outputs
from tfdropblock.export.run.tolerance import default_of


@dataclasses.dataclass
class Probe:
    """An artifact's intermediate tensors, run through one of its runtimes.

    ``tensors``: ``(key, names)`` per tensor, in execution order, ``names`` being the op names
    the tensor carries; ``outputs``: {model output name: key} of the graph outputs; ``run``:
    named inputs to {key: array} of every tensor listed; ``readers``: {key: [names of each op
    that reads it]}."""

    runtime: str
    tensors: list
    outputs: dict
    run: Callable
    readers: dict = dataclasses.field(default_factory=dict)


def unavailable(reason):
    """What the parity details hold when no layer can be located."""
    return {"layers": [], "first_divergence": None, "locate_runtime": None,
            "locate_reason": reason}


def is_layer_graph(model):
    """Whether ``model``'s layers have outputs of their own (functional or Sequential)."""
    import keras

    functional = functional_class()
    return isinstance(model, keras.Sequential) or (functional is not None
                                                  and isinstance(model, functional))


def model_layers(model):
    """The layers whose outputs are compared: the model's own (nested models as one layer),
    in model order, input layers left out."""
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def keras_layer_outputs(model, signature, batches, layers):
    """``({layer name: [array per batch]}, {layer name: reason})``: Keras's own output of each
    layer (``training=False``) on ``batches``, or why a layer has none to compare."""
    import keras

    tensors, reasons = {}, {}
    for layer in layers:
        if call_count(layer) > 1:
            reasons[layer.name] = (f"called {call_count(layer)} times (a shared layer): its "
                                   "calls' outputs are not told apart")
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError) as e:
            reasons[layer.name] = f"no single output in the model ({e})"
            continue
        if isinstance(output, (list, tuple, dict)):
            reasons[layer.name] = "several outputs: not mapped"
            continue
        tensors[layer.name] = output
    if not tensors:
        return {}, reasons
    probe = keras.Model(inputs_struct(model, model.inputs), list(tensors.values()))
    values = {name: [] for name in tensors}
    for batch in batches:
        outputs = probe(signature.pack([batch[n] for n in signature.names]), training=False)
        for name, value in zip(tensors, outputs):
            values[name].append(np.asarray(value))
    return values, reasons


def layer_scopes(model, layers, op_names):
    """{scope: layer index}: the name scope each layer's call opened in the traced inference
    function, from its op names in creation order."""
    model_scope = _scope_pattern(model.name)
    depth = 1 if any(model_scope.fullmatch(n.split("/")[0]) for n in op_names) else 0
    seen = []
    for name in op_names:
        parts = name.split("/")
        if len(parts) <= depth or (depth and not model_scope.fullmatch(parts[0])):
            continue
        if parts[depth] not in seen:
            seen.append(parts[depth])
    patterns = [_scope_pattern(layer.name) for layer in layers]
    scopes, position = {}, 0
    for scope in seen:
        # Each call opens its scope after the previous layer's: the next layer it matches.
        for index in range(position, len(layers)):
            if patterns[index].fullmatch(scope):
                scopes[scope], position = index, index + 1
                break
    return scopes, depth, model_scope


def _scope_pattern(name):
    return re.compile(re.escape(name) + r"(_\d+)?")


def attribute(probe, model, layers, op_names):
    """``({layer index: [key, ...]}, {layer index: later layer index})``: the tensors of each
    layer, those read outside the layer (by another layer's op or as a graph output) after the
    others, each group in execution order; and, for a layer mentioned only by tensors of later
    layers, the layer it was fused into."""
    scopes, depth, model_scope = layer_scopes(model, layers, op_names)

    def owner(names):
        indices = set()
        for name in names:
            parts = name.split("/")
            if len(parts) > depth and (not depth or model_scope.fullmatch(parts[0])):
                if parts[depth] in scopes:
                    indices.add(scopes[parts[depth]])
        return indices

    owned, mentioned, outside = {}, {}, set(probe.outputs.values())
    for key, names in probe.tensors:
        indices = owner(names)
        if not indices:
            continue
        last = max(indices)
        owned.setdefault(last, []).append(key)
        for index in indices - {last}:
            mentioned[index] = max(last, mentioned.get(index, last))
        if any(max(owner(reader), default=None) != last for reader in probe.readers.get(key, [])):
            outside.add(key)
    index_of = {layer.name: i for i, layer in enumerate(layers)}
    outputs = named_outputs(_outputs_struct(model))
    for out_name, key in probe.outputs.items():
        tensor = outputs.get(out_name)
        if tensor is None:
            continue
        index = index_of.get(keras_history_operation(tensor).name)
        if index is not None:
            owned.setdefault(index, []).append(key)  # last: what the layer finally returns
    # A tensor only the layer itself reads is an intermediate (or a pass-through such as the
    # second output of the IdentityN behind Keras's swish), never its output, while another
    # one leaves the layer.
    ordered = {index: [k for k in keys if k not in outside] + [k for k in keys if k in outside]
               for index, keys in owned.items()}
    return ordered, mentioned


def _outputs_struct(model):
    from tfdropblock._compat import outputs_struct

    try:
        return outputs_struct(model)
    except AttributeError:
        return model.outputs


def _layouts(value, shape):
    """``value`` read as a Keras output of ``shape``: ``[(array, transposed)]``, empty when it
    cannot be one; as it is, and/or from NCHW for 4-D (both when H == W == C, where the
    shape cannot tell the layouts apart)."""
    found = [(value, False)] if value.shape == shape else []
    if value.ndim == 4 and len(shape) == 4 and value.shape == (shape[0], shape[3], shape[1],
                                                                 shape[2]):
        found.append((np.transpose(value, (0, 2, 3, 1)), True))
    return found


def compare_layer(artifact, reference, atol, rtol):
    """The comparison of one layer's output over every batch, by the parity check's rule."""
    worst_abs, scale, ok, ratio = 0.0, 0.0, True, 0.0
    for got, want in zip(artifact, reference):
        row = compare_outputs({"x": got}, {"x": want}, atol, rtol)["x"]
        ok = ok and row["ok"]
        worst_abs = max(worst_abs, row["max_abs_error"] if row["max_abs_error"] is not None
                        else float("inf"))
        scale = max(scale, row["max_abs_expected"] or 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
            diff = np.where(np.isnan(g) & np.isnan(w), 0.0, np.abs(g - w))
            bound = atol + rtol * np.abs(w)
            r = np.where(diff == 0, 0.0, diff / bound)
        if r.size:
            ratio = max(ratio, float(np.nanmax(np.where(np.isnan(r), np.inf, r))))
    return {"within_tolerance": ok, "max_abs_error": worst_abs,
            "max_scaled_error": worst_abs / scale if scale else None,
            "tolerance_ratio": ratio}


def locate(run, probe):
    """The parity details of locating: ``layers`` (one row per layer, in model order),
    ``first_divergence`` (None when every compared layer is within tolerance),
    ``locate_runtime`` and ``locate_reason`` (None, or why nothing could be compared)."""
    model = run.model
    if not is_layer_graph(model):
        return unavailable("the model is not a functional Keras model: its layers' outputs "
                           "cannot be taken on their own")
    layers = model_layers(model)
    reference, reasons = keras_layer_outputs(model, run.signature, run.batches, layers)
    values = [probe.run(batch) for batch in run.batches]
    op_names = [op.name for op in run.function(False).get_concrete_function().graph
                .get_operations()]
    owned, fused_into = attribute(probe, model, layers, op_names)
    rows = []
    for index, layer in enumerate(layers):
        row = {"layer": layer.name, "class": type(layer).__name__, "compared": False,
               "max_abs_error": None, "max_scaled_error": None, "tolerance_ratio": None,
               "within_tolerance": None, "tensor": None, "transposed": False}
        rows.append(row)
        if layer.name in reasons:
            row["reason"] = reasons[layer.name]
            continue
        want = reference[layer.name]
        keys = owned.get(index, [])
        fitted = None
        for key in reversed(keys):  # the last of its tensors that has its output's shape
            readings = [_layouts(np.asarray(v[key]), w.shape) for v, w in zip(values, want)]
            if all(readings):
                fitted = key, readings
                break
        if fitted is None:
            if keys:
                shapes = sorted({str(tuple(np.shape(values[0][k]))) for k in keys})
                row["reason"] = (f"none of its {len(keys)} tensor(s) has its output shape "
                                 f"{tuple(want[0].shape)} (they have {', '.join(shapes)})")
            elif index in fused_into:
                row["reason"] = ("fused: its ops survive only inside a tensor of the later "
                                 f"layer {layers[fused_into[index]].name!r}")
            else:
                row["reason"] = ("no tensor of the artifact is named after it: it computes "
                                 "nothing at inference (an identity), or the converter merged "
                                 "its ops into one named otherwise (tf2onnx names a Conv it "
                                 "folded a BatchNormalization into Conv__<n>)")
            continue
        key, readings = fitted
        # Where the shape cannot tell NHWC from NCHW, the reading closer to Keras is the
        # layout (the other one is a scrambled tensor, nowhere near); the row says so.
        options = []
        # Layers have no output names: each is judged with the default tolerance, not the
        # per-output overrides parity applies to the model's outputs.
        atol, rtol = default_of(run.atol), default_of(run.rtol)
        for transposed in (False, True):
            got = [next((a for a, t in r if t == transposed), None) for r in readings]
            if all(g is not None for g in got):
                options.append((compare_layer(got, want, atol, rtol), transposed))
        measured, transposed = min(options, key=lambda o: o[0]["max_abs_error"])
        row.update(compared=True, tensor=str(key), transposed=transposed, **measured)
        if len(options) > 1:
            row["layout_ambiguous"] = True
    return {"layers": rows, "first_divergence": first_divergence(rows, layers),
            # With load_outputs parity is judged on the stored outputs, but the file has no
            # layer outputs: the layers are this run's Keras's, and the line says so.
            "locate_runtime": probe.runtime + (
                "; layers against this run's Keras (the stored file holds the model's outputs "
                "only)" if run.settings.golden is not None else ""),
            "locate_reason": None if any(r["compared"] for r in rows) else
            "no layer's output could be mapped to a tensor of the artifact"}


def first_divergence(rows, layers):
    """The first compared layer beyond tolerance, in model order (a topological order), with
    the producers between it and its nearest compared ancestors that were not compared."""
    by_name = {row["layer"]: row for row in rows}
    for row, layer in zip(rows, layers):
        if row["compared"] and not row["within_tolerance"]:
            return {"layer": row["layer"], "max_abs_error": row["max_abs_error"],
                    "max_scaled_error": row["max_scaled_error"],
                    "tolerance_ratio": row["tolerance_ratio"],
                    "uncompared_inputs": _uncompared_ancestors(layer, by_name),
                    "diverging_layers": sum(1 for r in rows
                                            if r["compared"] and not r["within_tolerance"])}
    return None


def _uncompared_ancestors(layer, by_name):
    found, stack, seen = [], list(inbound_layers(layer)), set()
    while stack:
        producer = stack.pop()
        if producer.name in seen or producer.name not in by_name:
            continue  # an input layer, or one outside the compared set
        seen.add(producer.name)
        if not by_name[producer.name]["compared"]:
            found.append(producer.name)
            stack.extend(inbound_layers(producer))
    return sorted(found)
