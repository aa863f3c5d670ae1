"""Facts of the inputs a run checks on and of Keras's outputs on them, computed once per run
and read by the checks: the model's input/output description (:func:`keras_io`), which outputs
a comparison cannot fail on (:func:`degenerate_outputs`), whether the inputs' rows differ, and
the class-score output that labels index (:func:`class_scores`, :func:`top_classes`)."""

from __future__ import annotations

import numpy as np

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.run.tolerance import of as tolerance_of


def degenerate_outputs(input_batches, expected_batches, atol, rtol):
    """Outputs whose comparison with Keras cannot fail: {output: [(batch size, why), ...]}.

    A comparison proves nothing when every Keras value is within ``atol`` of 0 (an artifact
    returning zeros passes), when Keras's values are NaN or infinite (NaN equals NaN here, so
    a broken artifact passes), or when Keras gives every row of a batch the same output within
    the tolerance although the inputs differ (an artifact that ignores its input passes: an
    untrained deep network whose activations vanish does that). ``input_batches`` None skips
    the last test (the inputs are not known).
    """
    found = {}
    for index, expected in enumerate(expected_batches):
        inputs = input_batches[index] if input_batches is not None else None
        n = _batch_size(inputs) if inputs is not None else None
        for name, ref in expected.items():
            ref = np.asarray(ref)
            size = len(ref) if ref.ndim else 1
            why = _degenerate(ref, inputs, n, tolerance_of(atol, name), tolerance_of(rtol, name))
            if why:
                found.setdefault(name, []).append((size, why))
    return found


def _degenerate(ref, inputs, n, atol, rtol):
    if ref.size == 0:
        return "the Keras output is empty: there is nothing to compare"
    try:
        r = ref.astype(np.float64)
    except (TypeError, ValueError):
        return None  # strings and objects: compared for equality, which can fail
    finite = np.isfinite(r)
    if not finite.all():
        bad = int((~finite).sum())
        return (f"{bad} of {r.size} Keras value(s) are NaN or infinite on these inputs: where "
                "the artifact has the same, the comparison proves nothing")
    peak = float(np.abs(r).max())
    if peak <= atol:
        return (f"every Keras value is within atol={atol:g} of 0 (max |keras| {peak:.3g}): an "
                "artifact returning zeros would pass; compare with a smaller atol")
    if (n is not None and n > 1 and r.ndim and len(r) == n and rows_differ(inputs)
            and np.isclose(r, r[:1], rtol=rtol, atol=atol).all()):
        spread = float(np.abs(r - r[:1]).max())
        return (f"the Keras output is the same for all {n} rows of the batch within the "
                f"tolerance (largest difference from row 0: {spread:.3g}) although the inputs "
                "differ: an artifact that ignores its input would pass")
    return None


def _batch_size(inputs):
    sizes = {len(np.asarray(a)) for a in inputs.values() if np.ndim(a)}
    return sizes.pop() if len(sizes) == 1 else None


def rows_differ(inputs, rows=None):
    """Whether some input's rows are not all the same (only inputs of ``rows`` rows count
    when given): outputs identical across such rows mean the model ignores its input."""
    for value in inputs.values():
        a = np.asarray(value)
        if a.ndim and len(a) > 1 and (rows is None or len(a) == rows):
            try:
                if not np.array_equal(a, np.broadcast_to(a[:1], a.shape), equal_nan=True):
                    return True
            except TypeError:
                if not np.array_equal(a, np.broadcast_to(a[:1], a.shape)):
                    return True
    return False


def keras_io(signature, batches, expected):
    """The Keras model's inputs and outputs in the form :func:`io_check` compares: names,
    dtypes and shapes, with None for the batch axis. An output's first axis is its batch axis
    when its length is the batch size in every batch checked (the batches differ in size)."""
    sizes = [_batch_size(b) for b in batches]
    outputs = []
    for name in expected[0]:
        arrays = [np.asarray(e[name]) for e in expected]
        shapes = {a.shape for a in arrays}
        shape = list(arrays[0].shape)
        if len(shapes) > 1:
            shape = [d if all(a.ndim == len(shape) and a.shape[i] == d for a in arrays) else None
                     for i, d in enumerate(shape)]
        batched = bool(shape) and all(a.ndim and len(a) == s for a, s in zip(arrays, sizes))
        if batched:
            shape[0] = None
        outputs.append({"name": name, "dtype": arrays[0].dtype.name, "shape": shape,
                        "batched": batched})
    inputs = [{**spec, "batched": True} for spec in signature.describe()]
    return {"inputs": inputs, "outputs": outputs}


def class_scores(outputs, labels):
    """The name of the model's class score output that ``labels`` index: its only output, of
    shape (batch, classes) with classes >= 2 and every label in range; InputError otherwise."""
    what = "labels (--labels) need a model whose output is a class score vector"
    if len(outputs) != 1:
        raise InputError(f"Invalid labels (--labels): the model has {len(outputs)} outputs "
                         f"{sorted(outputs)}; {what} (one output of shape (batch, classes)).")
    (name, scores), = outputs.items()
    shape = np.shape(scores)
    if len(shape) != 2 or shape[1] < 2:
        raise InputError(f"Invalid labels (--labels): output {name!r} has shape "
                         f"{(None, *shape[1:])}; {what}, of shape (batch, classes >= 2).")
    low, high = int(np.min(labels)), int(np.max(labels))
    if low < 0 or high >= shape[1]:
        raise InputError(f"Invalid labels (--labels): classes {low}..{high}; the model's output "
                         f"{name!r} scores {shape[1]} classes (0..{shape[1] - 1}).")
    return name


def top_classes(scores):
    """The top class of each row of class scores."""
    return np.argmax(np.asarray(scores), axis=1)
