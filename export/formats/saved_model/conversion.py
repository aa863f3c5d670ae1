"""SavedModel conversion through ``keras.export.ExportArchive``, with an endpoint that
calls ``model(x, training=False)``."""

from __future__ import annotations

from tfdropblock._compat import write_out

ENDPOINT = "serve"


def export_saved_model(model, path, signature, function=None):
    """Write ``model(inputs, training=False)`` as a SavedModel at ``path`` (which must not exist).

    ``function``: the traced inference function (:meth:`Signature.flat_function`) to serve, so
    that it is not traced again; default: ``signature``'s endpoint, traced here.
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    if function is not None:
        function.get_concrete_function()  # traced: ExportArchive takes it as it is
        archive.add_endpoint(ENDPOINT, function)
    else:
        fn, input_signature = signature.endpoint(model)
        archive.add_endpoint(ENDPOINT, fn, input_signature=input_signature)
    write_out(archive, path)
    return path
