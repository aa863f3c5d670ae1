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
