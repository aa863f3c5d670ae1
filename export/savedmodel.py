"""SavedModel export through ``keras.export.ExportArchive``, and a runner for the reloaded model.

``model.export()`` traces ``model.__call__`` without ``training``; in Keras 3.15 a layer that
defaults ``training=True`` (Resizing, CenterCrop, Random*) then switches every later layer to
training mode. The endpoint here passes ``training=False`` explicitly, which removes that leak.
"""

from __future__ import annotations

import numpy as np

ENDPOINT = "serve"


def export_saved_model(model, path, signature):
    """Write ``model(inputs, training=False)`` as a SavedModel at ``path`` (which must not exist)."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    fn, input_signature = signature.endpoint(model)
    archive.add_endpoint(ENDPOINT, fn, input_signature=input_signature)
    archive.write_out(str(path), verbose=False)
    return path


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
