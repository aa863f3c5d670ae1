"""The inference endpoint every format is exported from, and the inputs it is checked on.

Every format exports ``model(inputs, training=False)`` with an explicit input signature whose
batch axis is None (so the batch stays dynamic) and whose tensors carry explicit names, so that
SavedModel signatures, TFLite signature runners and ONNX graphs all agree on input and output
names. Outputs are named as TensorFlow names signature outputs: the keys of a dict, else
``output_0``, ``output_1``... in ``tf.nest.flatten`` order.
"""

from __future__ import annotations

import re

import numpy as np

from tfdropblock._compat import inputs_struct
from tfdropblock.export.core.errors import InputError

_VALID_NAME = re.compile(r"[^A-Za-z0-9_.\-]")

# Float input distributions tried for generated inputs, in order: standard normal suits models
# that expect normalised inputs; [0, 255] the image models that rescale or normalise inside
# (EfficientNet, MobileNetV3 with preprocessing); [0, 1] the ones that expect scaled pixels.
_DRAW = {
    "standard normal": lambda rng, shape: rng.standard_normal(shape),
    "uniform [0, 255]": lambda rng, shape: rng.uniform(0.0, 255.0, shape),
    "uniform [0, 1]": lambda rng, shape: rng.uniform(0.0, 1.0, shape),
}
DISTRIBUTIONS = tuple(_DRAW)


class Signature:
    """Input structure of a model: one TensorSpec, a list of them, or a dict of them."""

    def __init__(self, struct):
        import tensorflow as tf

        self.struct = struct
        self.specs = tf.nest.flatten(struct)
        self.names = [s.name for s in self.specs]
        if len(set(self.names)) != len(self.names):
            raise InputError(f"Input names must be unique, received {self.names}.")
        self.kind = ("dict" if isinstance(struct, dict) else
                     "list" if isinstance(struct, (list, tuple)) else "single")

    @classmethod
    def from_model(cls, model, input_signature=None, inputs=None):
        """Derive the signature from ``input_signature``, the model's inputs, or ``inputs``."""
        import tensorflow as tf

        if input_signature is not None:
            struct = input_signature
            if isinstance(struct, (list, tuple)) and len(struct) == 1:
                struct = struct[0]
            return cls(_normalise(tf.nest.map_structure(_as_spec, struct)))
        struct = inputs_struct(model)
        if struct is None:
            try:
                flat = list(model.inputs or [])
            except (AttributeError, ValueError):
                flat = []
            struct = flat[0] if len(flat) == 1 else flat or None
        if struct is None and inputs is not None:
            struct = tf.nest.map_structure(
                lambda a: tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)),
                inputs)
            return cls(_normalise(struct))
        if struct is None:
            raise InputError(
                f"Cannot tell the inputs of model {getattr(model, 'name', model)!r} (a subclassed "
                "model that was never built on keras.Input?): pass input_signature=, e.g. "
                "[tf.TensorSpec((None, 32, 32, 3), tf.float32, name='image')].")
        return cls(_normalise(tf.nest.map_structure(_as_spec, struct)))

    def endpoint(self, model):
        """(fn, input_signature) for ``keras.export.ExportArchive.add_endpoint``."""
        if self.kind == "single":
            return (lambda x: model(x, training=False)), [self.struct]
        if self.kind == "list":
            return (lambda *xs: model(list(xs), training=False)), list(self.specs)
        return (lambda d: model(d, training=False)), [self.struct]

    def flat_function(self, model, training=False):
        """A tf.function of the flat inputs (in ``names`` order) returning a dict of named
        outputs: the inference function every format is converted from, traced once per
        run. Its input signature is :meth:`endpoint`'s, flattened. ``training=None`` calls
        the model without the argument, as Keras's exporters do."""
        import tensorflow as tf

        kwargs = {} if training is None else {"training": training}

        def fn(*flat):
            return named_outputs(model(self.pack(list(flat)), **kwargs))

        specs = tf.nest.flatten(self.endpoint(model)[1])
        return tf.function(fn, input_signature=specs, autograph=False)

    def pack(self, flat):
        """Flat values (in ``names`` order) to the model's input structure."""
        import tensorflow as tf

        if self.kind == "single":
            return flat[0]
        if self.kind == "list":
            return list(flat)
        return tf.nest.pack_sequence_as(self.struct, flat)

    def describe(self):
        return [{"name": s.name, "shape": [None if d is None else int(d) for d in s.shape],
                 "dtype": s.dtype.name} for s in self.specs]

    # -- inputs --------------------------------------------------------------------------------

    def generate(self, batch, seed=0, distribution=DISTRIBUTIONS[0]):
        """Reproducible inputs for a batch of ``batch``: floats drawn from ``distribution`` (one
        of :data:`DISTRIBUTIONS`), small ints, coin bools."""
        if distribution not in _DRAW:
            raise InputError(f"Invalid distribution={distribution!r}: expected one of "
                             f"{DISTRIBUTIONS}.")
        rng = np.random.default_rng(seed)
        out = {}
        for spec in self.specs:
            dims = list(spec.shape)[1:]
            if any(d is None for d in dims):
                raise InputError(
                    f"Input {spec.name!r} has shape {spec.shape} with an unknown non-batch "
                    "dimension: pass inputs= with example data.")
            shape = (batch, *map(int, dims))
            dtype = spec.dtype.as_numpy_dtype
            if spec.dtype.is_floating:
                out[spec.name] = _DRAW[distribution](rng, shape).astype(dtype)
            elif spec.dtype.is_integer:
                out[spec.name] = rng.integers(0, 8, shape).astype(dtype)
            elif spec.dtype.is_bool:
                out[spec.name] = rng.random(shape) < 0.5
            else:
                raise InputError(f"Cannot generate inputs of dtype {spec.dtype.name} for input "
                                 f"{spec.name!r}: pass inputs=.")
        return out

    def generated_batches(self, seed=0, judge=None):
        """Generated batches of sizes 1 and 3 that exercise the model, if one distribution does.

        ``judge(batches)`` returns ``(number of outputs whose comparison could not fail,
        anything)``. The distributions are tried in order (standard normal first, then an image's
        [0, 255], then [0, 1]) and the first one judged 0 wins, else the one judged lowest. Only
        the float inputs change between distributions, so without one a single set is made.
        Returns ``(batches, distribution, what judge returned with them)``.
        """
        candidates = DISTRIBUTIONS if any(s.dtype.is_floating for s in self.specs) else \
            DISTRIBUTIONS[:1]
        best = None
        for distribution in candidates:
            batches = [self.generate(1, seed, distribution),
                       self.generate(3, seed + 1, distribution)]
            if judge is None:
                return batches, distribution, None
            score, extra = judge(batches)
            if best is None or score < best[0]:
                best = (score, batches, distribution, extra)
            if score == 0:
                break
        return best[1], best[2], best[3]

    def batches(self, inputs=None, seed=0):
        """Two input batches of different sizes (dicts name -> array) to check parity on.

        User inputs of batch ``n`` give that batch and its first row (or, for ``n == 1``, the row
        tiled twice); generated ones have batch sizes 1 and 3.
        """
        if inputs is None:
            return [self.generate(1, seed), self.generate(3, seed + 1)]
        named = self.name_inputs(inputs)
        n = {len(a) for a in named.values()}
        if len(n) != 1:
            raise InputError(f"Invalid inputs: batch sizes differ between inputs: "
                             f"{ {k: len(a) for k, a in named.items()} }.")
        n = n.pop()
        if n == 0:
            raise InputError("Invalid inputs: the batch is empty.")
        second = ({k: a[:1] for k, a in named.items()} if n > 1
                  else {k: np.concatenate([a, a]) for k, a in named.items()})
        return [named, second]

    def name_inputs(self, inputs, arg="inputs"):
        """User inputs (array, list, or dict) to a dict name -> array, validated; errors name
        ``arg``."""
        import tensorflow as tf

        if isinstance(inputs, dict):
            mismatch = name_mismatch(inputs, self.names, extra_ok=True)
            if mismatch:
                raise InputError(f"Invalid {arg}: inputs {mismatch}.")
            flat = [inputs[n] for n in self.names]
        else:
            flat = tf.nest.flatten(inputs)
            if len(flat) != len(self.specs):
                raise InputError(f"Invalid {arg}: {len(flat)} arrays for {len(self.specs)} "
                                 f"model inputs {self.names}.")
        named = {}
        for spec, value in zip(self.specs, flat):
            arr = np.asarray(value)
            if arr.ndim != spec.shape.rank or not spec.shape[1:].is_compatible_with(arr.shape[1:]):
                raise InputError(f"Invalid {arg}: {spec.name!r} has shape {arr.shape}, "
                                 f"expected {spec.shape}.")
            arr = arr.astype(spec.dtype.as_numpy_dtype)
            if spec.dtype.is_floating and arr.size and not np.isfinite(arr).any():
                raise InputError(f"Invalid {arg}: {spec.name!r} has no finite value (all NaN "
                                 "or infinite): Keras and the artifacts would both return NaN, "
                                 "and a comparison of NaN with NaN proves nothing.")
            named[spec.name] = arr
        return named


def name_mismatch(have, want, extra_ok=False, whose="the model's"):
    """The one check of a set of names against the model's (user inputs, calibration
    batches, stored inputs and outputs): None when ``have`` holds every name of ``want`` (and,
    unless ``extra_ok``, no other), else what differs, for the caller's InputError."""
    missing = [n for n in want if n not in have]
    extra = [] if extra_ok else [n for n in have if n not in want]
    if not missing and not extra:
        return None
    return (f"{sorted(have)}; {whose} are {list(want)}"
            + (f" (missing {missing})" if missing else "")
            + (f" (extra {extra})" if extra else ""))


def named_outputs(outputs):
    """Model outputs as a flat dict, named as TensorFlow names signature outputs."""
    import tensorflow as tf

    if isinstance(outputs, dict):
        return {str(k): v for k, v in outputs.items()}
    return {f"output_{i}": v for i, v in enumerate(tf.nest.flatten(outputs))}


def _as_spec(x):
    import tensorflow as tf

    shape = tuple(getattr(x, "shape", ()))
    dtype = tf.as_dtype(getattr(x, "dtype", "float32"))
    return tf.TensorSpec((None, *shape[1:]) if shape else shape, dtype,
                         name=getattr(x, "name", None))


def _normalise(struct):
    """Give every spec a unique valid tensor name (dict keys win for dict inputs)."""
    import tensorflow as tf

    used = set()

    def name(spec, wanted):
        base = _VALID_NAME.sub("_", wanted or "input") or "input"
        if not re.match(r"[A-Za-z]", base):
            base = "input_" + base
        candidate, i = base, 1
        while candidate in used:
            candidate, i = f"{base}_{i}", i + 1
        used.add(candidate)
        return tf.TensorSpec(spec.shape, spec.dtype, name=candidate)

    if isinstance(struct, dict):
        return {k: name(v, str(k)) for k, v in struct.items()}
    if isinstance(struct, (list, tuple)):
        return [name(s, s.name or f"input_{i}") for i, s in enumerate(struct)]
    return name(struct, struct.name)
