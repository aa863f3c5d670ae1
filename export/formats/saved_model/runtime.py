"""The reloaded SavedModel's ``serve`` signature as a runner."""

from __future__ import annotations

import numpy as np
from tfdropblock.export.formats.saved_model.conversion import ENDPOINT



class SavedModelRunner:
    """Calls the reloaded ``serve`` signature with named inputs; returns named numpy outputs."""

    def __init__(self, path, endpoint=ENDPOINT):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(path))
        if endpoint not in self.loaded.signatures:
            raise ValueError(f"SavedModel has no signature {endpoint!r}; "
                             f"has {sorted(self.loaded.signatures)}.")
        self.fn = self.loaded.signatures[endpoint]

    def __call__(self, named_inputs):
        outputs = self.fn(**named_inputs)
        return {k: np.asarray(v) for k, v in outputs.items()}

    def io(self):
        """The signature's inputs and outputs (name, dtype, shape with None for unknown dims)."""
        import tensorflow as tf

        args, kwargs = self.fn.structured_input_signature
        inputs = {**{getattr(s, "name", None) or f"arg_{i}": s
                     for i, s in enumerate(tf.nest.flatten(args))}, **kwargs}
        return {"inputs": [_spec(name, s) for name, s in inputs.items()],
                "outputs": [_spec(name, s) for name, s in self.fn.structured_outputs.items()]}


def _spec(name, spec):
    shape = None if spec.shape.rank is None else [
        None if d is None else int(d) for d in spec.shape.as_list()]
    return {"name": str(name), "dtype": spec.dtype.name, "shape": shape}
