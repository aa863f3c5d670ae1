"""The export kit's ``verify`` against the bare conversions it wraps.

``tfdropblock.export.verify(model)`` converts to SavedModel, TFLite and ONNX and checks each
artifact (structure against an identity reference, validity, parity, determinism). The baseline
is the sum of the three plain conversions of the same model: ``model.export`` to a SavedModel,
``TFLiteConverter.from_saved_model``, and ``tf2onnx.convert.from_function``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time


def available():
    try:
        from tfdropblock.export import verify  # noqa: F401
        from tfdropblock.models import default_model  # noqa: F401
        import tf2onnx  # noqa: F401
    except Exception as e:
        return f"export kit unavailable ({type(e).__name__}: {e})"
    return None


def bare_conversions(model):
    """Seconds of each plain conversion: SavedModel, TFLite, ONNX."""
    import tensorflow as tf
    import tf2onnx

    seconds = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        model.export(f"{tmp}/saved_model", format="tf_saved_model", verbose=False)
        seconds["SavedModel (model.export)"] = time.perf_counter() - start

        start = time.perf_counter()
        tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved_model").convert()
        seconds["TFLite (TFLiteConverter)"] = time.perf_counter() - start

        spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
        fn = tf.function(lambda x: model(x, training=False))
        start = time.perf_counter()
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
        seconds["ONNX (tf2onnx)"] = time.perf_counter() - start
    return seconds


def export_rows(rounds=2):
    """``[(label, median seconds)]``: verify, then each bare conversion and their sum."""
    import statistics

    from tfdropblock.export import verify
    from tfdropblock.models import default_model

    model = default_model()
    verify_s, bare = [], {}
    for _ in range(rounds):  # alternate the two so that load drifts hit both
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            report = verify(model)
            verify_s.append(time.perf_counter() - start)
        for k, v in bare_conversions(model).items():
            bare.setdefault(k, []).append(v)
    rows = [(k, statistics.median(v)) for k, v in bare.items()]
    total = sum(s for _, s in rows)
    rows.append(("sum of bare conversions", total))
    rows.append((f"verify (3 formats, ok={report.ok})", statistics.median(verify_s)))
    return rows, total
