"""Stored ("golden") inputs and reference outputs: what a run compared with, kept in an NPZ.

``save_outputs`` (``--save-outputs``) writes the inputs a run checked the artifacts on and
Keras's outputs on them; ``load_outputs`` (``--load-outputs``) makes a later run check on those
inputs and compare every artifact with those outputs instead of Keras's fresh ones, so that a
change of Keras, TensorFlow or a converter that moves the outputs is caught against the
outputs of a known-good run. The Keras model is still what gets exported.

The NPZ's keys: ``format`` (the string :data:`FORMAT`), ``version`` (:data:`VERSION`), and per
batch ``k`` (0, 1, ...: a run checks on two batch sizes) ``input/<k>/<input name>`` and
``output/<k>/<output name>``.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from tfdropblock.export.core.errors import InputError, OutputError
from tfdropblock.export.model.loading import read_npz
from tfdropblock.export.model.signature import name_mismatch

FORMAT = "tfdropblock.golden"
VERSION = 1
_FLAG = "load_outputs (--load-outputs)"


@dataclasses.dataclass(frozen=True)
class Golden:
    """Stored batches ``[{input name: array}]`` and outputs ``[{output name: array}]``, one
    per batch, read from ``path``."""

    path: str
    batches: list
    outputs: list

    def fitted(self, signature, keras):
        """``(batches, outputs)`` once they fit the model: every input of ``signature`` and no
        other, of its dtype and shape (batch aside), one batch size per batch; and for each
        batch the outputs ``keras(batch)`` names, of its shapes and dtypes. InputError naming
        ``--load-outputs`` otherwise."""
        batches = []
        for k, batch in enumerate(self.batches):
            self._same_names(f"batch {k} inputs", batch, signature.names)
            named = {}
            for spec in signature.specs:
                array, dtype = batch[spec.name], spec.dtype.as_numpy_dtype
                if array.dtype != dtype:
                    self._fail(f"input {spec.name!r} of batch {k} is {array.dtype}; the model "
                               f"takes {np.dtype(dtype).name}")
                if array.ndim != spec.shape.rank or \
                        not spec.shape[1:].is_compatible_with(array.shape[1:]):
                    self._fail(f"input {spec.name!r} of batch {k} has shape {array.shape}; the "
                               f"model takes {tuple(spec.shape)}")
                named[spec.name] = array
            if len({len(a) for a in named.values()}) > 1:
                self._fail(f"the inputs of batch {k} differ in batch size")
            batches.append(named)
        outputs = []
        for k, (batch, stored) in enumerate(zip(batches, self.outputs)):
            fresh = keras(batch)
            self._same_names(f"batch {k} outputs", stored, list(fresh))
            for name, array in fresh.items():
                if stored[name].shape != array.shape or stored[name].dtype != array.dtype:
                    self._fail(f"output {name!r} of batch {k} is {stored[name].dtype} "
                               f"{stored[name].shape}; the model's is {array.dtype} "
                               f"{array.shape}")
            outputs.append({name: stored[name] for name in fresh})
        return batches, outputs

    def _same_names(self, what, have, want):
        mismatch = name_mismatch(have, want)
        if mismatch:
            self._fail(f"{what} are {mismatch}")

    def _fail(self, why):
        raise InputError(f"Invalid {_FLAG} {self.path}: {why}.")


def check_alone(inputs, labels):
    """InputError unless stored outputs come without ``inputs`` and ``labels``: the file holds
    the inputs to check on, and labels label rows of ``inputs``."""
    for given, what in ((inputs, "inputs= (--inputs)"), (labels, "labels= (--labels)")):
        if given is not None:
            raise InputError(f"Invalid {_FLAG} with {what}: the stored file holds the inputs "
                             "to check on (and labels need inputs=); give one or the other.")


def load(path):
    """The :class:`Golden` stored at ``path``; InputError naming ``--load-outputs`` for a file
    that is not such an NPZ (the model is not needed to tell)."""
    def fail(why):
        raise InputError(f"Invalid {_FLAG} {path}: {why}.")

    arrays = read_npz(path, f"Invalid {_FLAG}")
    if not isinstance(arrays, dict) or str(arrays.get("format", "")) != FORMAT:
        fail(f"not a file of stored outputs (no format={FORMAT!r}; write one with "
             "--save-outputs)")
    version = arrays.pop("version", None)
    if version is None or version.shape != () or version.dtype.kind not in "iu" or \
            int(version) != VERSION:
        fail(f"version {None if version is None else version.tolist()!r}; this tfdropblock "
             f"reads version {VERSION}")
    del arrays["format"]
    sides = {"input": {}, "output": {}}
    for key, array in arrays.items():
        side, _, rest = key.partition("/")
        index, _, name = rest.partition("/")
        if side not in sides or not index.isdigit() or not name:
            fail(f"unexpected array {key!r} (expected input/<batch>/<name> and "
                 "output/<batch>/<name>)")
        sides[side].setdefault(int(index), {})[name] = array
    inputs, outputs = sides["input"], sides["output"]
    if not inputs:
        fail("no stored inputs")
    if sorted(inputs) != list(range(len(inputs))):
        fail(f"input batches {sorted(inputs)}; expected 0 to {len(inputs) - 1}")
    if sorted(outputs) != sorted(inputs):
        fail(f"outputs stored for batches {sorted(outputs)}, inputs for {sorted(inputs)}")
    return Golden(str(path), [inputs[k] for k in sorted(inputs)],
                  [outputs[k] for k in sorted(outputs)])


def save(path, batches, outputs):
    """Write ``batches`` and ``outputs`` (one dict of each per batch) to ``path`` whole
    (temporary sibling, then one rename); OutputError naming ``--save-outputs`` if refused."""
    from tfdropblock._files import write_bytes

    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION)}
    for k, (batch, expected) in enumerate(zip(batches, outputs)):
        arrays.update({f"input/{k}/{name}": np.asarray(a) for name, a in batch.items()})
        arrays.update({f"output/{k}/{name}": np.asarray(a) for name, a in expected.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        write_bytes(path, buffer.getvalue())
    except OSError as e:
        raise OutputError(f"Cannot write save_outputs (--save-outputs) {path}: "
                          f"{e.strerror or e}.") from None
