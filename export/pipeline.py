"""Conversion of one model (and of its identity reference) to every format, and ``export``.

A :class:`Session` owns a work directory and converts lazily, caching each artifact: a format
converted from another's artifact (TFLite from the SavedModel) reuses it, the traced inference
function is traced once and shared (the identity-reference test, the ONNX conversion and the
leak classification all read it), and the identity reference (see :mod:`.identity`) is
exported the same way as the model itself, or not at all when its traced graph is the model's.
"""

from __future__ import annotations

from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock.export import formats as registry
from tfdropblock.export.atomic import check_out_dir
from tfdropblock.export.errors import ConversionError, OutputError, write_failure
from tfdropblock.export.formats.onnx import DEFAULT_OPSET
from tfdropblock.export.formats.saved_model import traced_graph
from tfdropblock.export.identity import dropblock_names, dropblocks_as_identity
from tfdropblock.export.formats import check_formats
from tfdropblock.export.loading import load_model
from tfdropblock.export.report import FORMATS
from tfdropblock.export.settings import Settings
from tfdropblock.export.signature import Signature
from tfdropblock.export.staging import commit, destination, workspace

# Where each built-in format's artifact is written, under out_dir.
ARTIFACTS = {name: registry.get(name).artifact for name in FORMATS}


class Session:
    """Converts one model (and its identity reference) to each format, once, under ``workdir``."""

    def __init__(self, model, signature, workdir, settings=None, *, generated=None,
                 calibration=None):
        self.model = model
        self.signature = signature
        self.workdir = Path(workdir)
        self.settings = settings if settings is not None else Settings()
        self.layer_names = dropblock_names(model)
        self._cache = {}
        self._functions = {}
        self._graphs = {}
        self._reference_is_main = None
        self.reference_how = None
        # The distribution of the run's generated inputs (None: the user's), which generated
        # int8 calibration batches follow; and those batches with how they were made, once
        # made (formats.quantized.calibration), or as given.
        self.generated = generated
        self.calibration = calibration

    @property
    def has_dropblock(self):
        return bool(self.layer_names)

    def function(self, reference=False):
        """The traced inference function (a ``tf.function`` of the flat inputs), one per side.
        The reference's is traced with the DropBlocks as identities."""
        if reference not in self._functions:
            self._functions[reference] = self.signature.flat_function(self.model)
        return self._functions[reference]

    def traced_graph(self, reference=False):
        """The ops of :meth:`function`, before any converter touches it."""
        if reference not in self._graphs:
            if reference:
                with dropblocks_as_identity(self.model):
                    self._graphs[reference] = traced_graph(self.function(True))
            else:
                self._graphs[reference] = traced_graph(self.function(False))
        return self._graphs[reference]

    def reference_is_main(self):
        """Whether the identity reference's exports are, by construction, the model's own.

        Without DropBlock layers they trivially are. In ``"auto"`` mode the two inference
        functions are traced (cheap) and their op multisets compared, functions included: when
        equal, the converters receive the same graph and the reference export is the model's
        export, so converting it again would only double the cost. When they differ (a leak),
        the reference is exported for real. ``"export"`` mode always exports it.
        """
        if self._reference_is_main is None:
            if not self.has_dropblock:
                self._reference_is_main, self.reference_how = True, "model has no DropBlock"
            elif self.settings.reference == "export":
                self._reference_is_main, self.reference_how = False, "exported"
            else:
                same = self.traced_graph(False).ops == self.traced_graph(True).ops
                self._reference_is_main = same
                self.reference_how = ("traced inference graphs identical: the model's export "
                                      "is the reference's" if same else
                                      "exported (traced inference graphs differ)")
        return self._reference_is_main

    def path(self, fmt, reference=False):
        directory = self.workdir / ("reference" if reference else "main")
        directory.mkdir(parents=True, exist_ok=True)
        return directory / registry.get(fmt).artifact

    def get(self, fmt, reference=False):
        """Format ``fmt``'s artifact (as its :meth:`Format.convert` returns it), converted once;
        ``reference``: the identity reference's (the model's own when they are the same)."""
        if reference and self.reference_is_main():
            reference = False
        key = (fmt, reference)
        if key not in self._cache:
            spec = registry.get(fmt)
            if reference:
                with dropblocks_as_identity(self.model):
                    self._cache[key] = spec.convert(self, True)
            else:
                self._cache[key] = spec.convert(self, False)
        return self._cache[key]

    def artifact(self, fmt):
        """Convert ``fmt`` for export: ConversionError if it cannot make a valid artifact."""
        registry.get(fmt).exportable(self, self.get(fmt))
        return self.path(fmt)


def export(model, out_dir, formats=FORMATS, *, input_signature=None, opset=DEFAULT_OPSET,
           tflite_select_tf_ops=False, onnx_external_data=None, safe_mode=True, quantize=None,
           int8_io=False, progress=None):
    """Export ``model(x, training=False)`` to ``out_dir`` in each of ``formats``.

    Writes ``saved_model/`` (``keras.export.ExportArchive``, endpoint and signature ``serve``),
    ``model.tflite`` (converted from that SavedModel; builtin ops only unless
    ``tflite_select_tf_ops``) and ``model.onnx`` (tf2onnx ``from_function``, opset ``opset`` <=
    18; rejected if tf2onnx left any op unconverted). The batch axis stays dynamic.

    Everything is built in a hidden sibling of ``out_dir`` (on its filesystem) and moved into
    place only once every format converted: on any failure (or Ctrl-C) nothing in ``out_dir``
    changes. Concurrent runs into one ``out_dir`` are safe: see :mod:`tfdropblock.export.atomic`
    for what a reader sees.

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

    formats = check_formats(formats)
    variants = check_quantize(quantize, formats)
    formats = tuple(dict.fromkeys(formats + variants))
    settings = Settings(input_signature=input_signature, tflite_select_tf_ops=tflite_select_tf_ops,
                        opset=opset, onnx_external_data=onnx_external_data, quantize=variants,
                        int8_io=int8_io)
    check_out_dir(out_dir)  # before loading and converting: an unusable out_dir fails at once
    model = load_model(model, safe_mode)
    signature = Signature.from_model(model, input_signature)
    say = progress or (lambda fmt, message: None)
    errors = []
    with workspace(out_dir) as stage:
        session = Session(model, signature, stage, settings)
        for fmt in formats:
            say(fmt, "converting")
            try:
                session.artifact(fmt)
                say(fmt, "converted")
            except Exception as e:  # a converter bug is that format's failure, not the run's
                reason = write_failure(e)
                if reason:  # the other formats would hit the same full disk
                    raise OutputError(
                        f"Cannot write to out_dir={str(Path(out_dir).absolute())!r}: writing "
                        f"the {fmt} artifact failed: {reason} (disk full, quota or file-size "
                        "limit?); nothing was written.") from None
                text = str(e) if isinstance(e, ConversionError) else describe_error(e)
                errors.append(f"{fmt}: {text}")
                say(fmt, f"failed: {text}")
        if errors:
            raise ConversionError("export failed, nothing written: " + "; ".join(errors))
        commit(out_dir, {fmt: stage / "main" for fmt in formats})
    return {fmt: destination(out_dir, fmt) for fmt in formats}
