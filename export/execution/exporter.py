"""``export``: convert a model to each format (one :class:`~.run.Run`), refuse what cannot be
shipped, and move the artifacts into place together."""

from __future__ import annotations

from tfdropblock._util import describe_error
from tfdropblock.export import formats as registry
from tfdropblock.export.execution.atomic import check_out_dir
from tfdropblock.export.core.errors import ConversionError, refused_write
from tfdropblock.export.formats import check_formats
from tfdropblock.export.model.loading import load_model
from tfdropblock.export.run.registry import FORMATS, accept
from tfdropblock.export.run.run import Run
from tfdropblock.export.run.settings import Settings
from tfdropblock.export.execution.staging import commit, destination, output_error, workspace

# Where each built-in format's artifact is written, under out_dir.
ARTIFACTS = {name: registry.get(name).artifact for name in FORMATS}


# export's own options, beyond the formats' (registry.options): {keyword: default}.
OPTIONS = {"input_signature": None, "safe_mode": True, "quantize": None, "progress": None}


def export(model, out_dir, formats=FORMATS, **options):
    """Export ``model(x, training=False)`` to ``out_dir`` in each of ``formats``.

    Writes ``saved_model/`` (``keras.export.ExportArchive``, endpoint and signature ``serve``),
    ``model.tflite`` (converted from that SavedModel; builtin ops only unless
    ``tflite_select_tf_ops``) and ``model.onnx`` (tf2onnx ``from_function``, opset ``opset`` <=
    18; rejected if tf2onnx left any op unconverted). The batch axis stays dynamic.

    Everything is built in a hidden sibling of ``out_dir`` (on its filesystem) and moved into
    place only once every format converted: on any failure (or Ctrl-C) nothing in ``out_dir``
    changes. Concurrent runs into one ``out_dir`` are safe: see
    :mod:`tfdropblock.export.execution.atomic`
    for what a reader sees.

    Every option is a keyword, declared once: :data:`OPTIONS` and each registered format's
    :class:`~tfdropblock.export.run.registry.Option` (a plugin format's own included); any
    other name is an InputError naming the closest one.

    Args:
        model: a ``keras.Model`` or the path of a ``.keras`` file.
        out_dir: destination directory (created if missing).
        formats: any of ``"saved_model"``, ``"tflite"``, ``"onnx"``.
        input_signature: TensorSpecs for models whose inputs Keras cannot tell (subclassed).
        opset: ONNX opset, 13 to 18.
        onnx_external_data: ``None`` writes the ONNX weights to ``model.onnx.data`` beside
            ``model.onnx`` only when the model exceeds the 2 GiB protobuf limit; ``True``
            always; ``False`` never (a model over the limit is then a ConversionError).
        quantize, int8_io: quantized artifacts too (``model.int8.tflite``, ``model.int8.onnx``,
            ...), as :func:`~tfdropblock.export.verify` takes them; int8 is calibrated on
            generated batches here (``verify(..., inputs=..., out_dir=...)`` calibrates on
            yours).
        progress: optional callable ``progress(format, message)``.
    Returns:
        dict format -> path written.
    Raises:
        ConversionError: a converter failed (every format is still attempted first).
        OutputError: ``out_dir`` cannot be created or written, or the filesystem refused a
            write (disk full, quota, file-size limit); an InputError (CLI exit status 2).
        InputError: bad arguments or an unloadable model.
    """
    from tfdropblock.export.formats.quantized import check_quantize

    given = accept("export", options, OPTIONS, named=("formats",))
    safe_mode, progress = given.pop("safe_mode"), given.pop("progress")
    formats = check_formats(formats)
    variants = check_quantize(given.pop("quantize"), formats)
    formats = tuple(dict.fromkeys(formats + variants))
    settings = Settings.make(quantize=variants, **given)
    check_out_dir(out_dir)  # before loading and converting: an unusable out_dir fails at once
    model = load_model(model, safe_mode)
    say = progress or (lambda fmt, message: None)
    errors = []
    with workspace(out_dir) as stage:
        run = Run(model, stage, settings)
        for fmt in formats:
            say(fmt, "converting")
            try:
                run.artifact(fmt)
                say(fmt, "converted")
            except Exception as e:  # a converter bug is that format's failure, not the run's
                refused = refused_write(fmt, e)
                if refused:  # the other formats would hit the same full disk
                    raise output_error(out_dir, refused) from None
                text = str(e) if isinstance(e, ConversionError) else describe_error(e)
                errors.append(f"{fmt}: {text}")
                say(fmt, f"failed: {text}")
        if errors:
            raise ConversionError("export failed, nothing written: " + "; ".join(errors))
        commit(out_dir, {fmt: stage / "main" for fmt in formats})
    return {fmt: destination(out_dir, fmt) for fmt in formats}
