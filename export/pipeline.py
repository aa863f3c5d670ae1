"""Conversion of one model (and of its identity reference) to every format, and ``export``.

A :class:`Session` owns a work directory and converts lazily, caching each artifact: the TFLite
conversion reuses the SavedModel, and the identity reference (see :mod:`.identity`) is exported
the same way as the model itself, or not at all when its traced graph is the model's.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tfdropblock.export.atomic import commit, staging_dir, write_bytes
from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.graphs import onnx_graph, traced_graph
from tfdropblock.export.identity import dropblock_names, dropblocks_as_identity
from tfdropblock.export.loading import check_formats, load_model, one_line
from tfdropblock.export.onnx_export import DEFAULT_OPSET, check_opset, convert_onnx
from tfdropblock.export.report import FORMATS
from tfdropblock.export.savedmodel import export_saved_model
from tfdropblock.export.signature import Signature
from tfdropblock.export.tflite import convert_tflite

ARTIFACTS = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
REFERENCE_MODES = ("auto", "export")

# Test hook: "FORMAT:KIND[,FORMAT:KIND]" makes that format's converter raise, crash (SIGSEGV)
# or hang, so that fault isolation can be tested against real processes.
FAULT_ENV = "TFDROPBLOCK_EXPORT_FAULT"


def _fault(fmt):
    spec = os.environ.get(FAULT_ENV, "")
    for item in spec.split(","):
        target, _, kind = item.strip().partition(":")
        if target != fmt:
            continue
        if kind == "raise":
            raise RuntimeError(f"injected fault in the {fmt} converter ({FAULT_ENV})")
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "hang":
            while True:
                time.sleep(3600)


class Session:
    """Converts one model (and its identity reference) to each format, once, under ``workdir``."""

    def __init__(self, model, signature, workdir, opset=DEFAULT_OPSET, tflite_select_tf_ops=False,
                 reference="auto"):
        if reference not in REFERENCE_MODES:
            raise InputError(f"Invalid reference={reference!r}: expected one of "
                             f"{REFERENCE_MODES}.")
        self.model = model
        self.signature = signature
        self.workdir = Path(workdir)
        self.opset = check_opset(opset)
        self.select_tf_ops = bool(tflite_select_tf_ops)
        self.reference_mode = reference
        self.layer_names = dropblock_names(model)
        self._cache = {}
        self._reference_is_main = None
        self.reference_how = None

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
            elif self.reference_mode == "export":
                self._reference_is_main, self.reference_how = False, "exported"
            else:
                main = traced_graph(self.model, self.signature)
                with dropblocks_as_identity(self.model):
                    reference = traced_graph(self.model, self.signature)
                same = main.ops == reference.ops
                self._reference_is_main = same
                self.reference_how = ("traced inference graphs identical: the model's export "
                                      "is the reference's" if same else
                                      "exported (traced inference graphs differ)")
        return self._reference_is_main

    @property
    def has_dropblock(self):
        return bool(self.layer_names)

    def path(self, fmt, reference=False):
        directory = self.workdir / ("reference" if reference else "main")
        directory.mkdir(parents=True, exist_ok=True)
        return directory / ARTIFACTS[fmt]

    def _get(self, key, build, reference):
        if reference and self.reference_is_main():
            reference = False
        cache_key = (key, reference)
        if cache_key not in self._cache:
            if reference:
                with dropblocks_as_identity(self.model):
                    self._cache[cache_key] = build(True)
            else:
                self._cache[cache_key] = build(False)
        return self._cache[cache_key]

    def saved_model(self, reference=False):
        def build(ref):
            if not ref:
                _fault("saved_model")
            path = self.path("saved_model", ref)
            try:
                return export_saved_model(self.model, path, self.signature)
            except Exception as e:
                raise ConversionError(f"SavedModel export failed: {type(e).__name__}: "
                                      f"{one_line(e)}", format="saved_model") from e
        return self._get("saved_model", build, reference)

    def tflite(self, reference=False):
        def build(ref):
            saved = self.saved_model(ref)
            if not ref:
                _fault("tflite")
            try:
                content = convert_tflite(saved, self.select_tf_ops)
            except ConversionError:
                raise
            except Exception as e:
                raise ConversionError(f"TFLite conversion failed: {type(e).__name__}: "
                                      f"{one_line(e)}", format="tflite") from e
            write_bytes(self.path("tflite", ref), content)
            return content
        return self._get("tflite", build, reference)

    def onnx(self, reference=False):
        """The raw ModelProto; written to disk only when it holds no unconverted op."""
        def build(ref):
            if not ref:
                _fault("onnx")
            proto = convert_onnx(self.model, self.signature, self.opset)
            if not onnx_graph(proto).unsupported_ops:
                write_bytes(self.path("onnx", ref), proto.SerializeToString())
            return proto
        return self._get("onnx", build, reference)

    def artifact(self, fmt):
        """Convert ``fmt`` for export: ConversionError if it cannot make a valid artifact."""
        if fmt == "saved_model":
            self.saved_model()
        elif fmt == "tflite":
            self.tflite()
        else:
            left = onnx_graph(self.onnx()).unsupported_ops
            if left:
                raise ConversionError(
                    f"tf2onnx could not convert {len(left)} op type(s): {', '.join(left)}",
                    format="onnx", unsupported_ops=left)
        return self.path(fmt)


def export(model, out_dir, formats=FORMATS, *, input_signature=None, opset=DEFAULT_OPSET,
           tflite_select_tf_ops=False, safe_mode=True, progress=None):
    """Export ``model(x, training=False)`` to ``out_dir`` in each of ``formats``.

    Writes ``saved_model/`` (``keras.export.ExportArchive``, endpoint and signature ``serve``),
    ``model.tflite`` (converted from that SavedModel; builtin ops only unless
    ``tflite_select_tf_ops``) and ``model.onnx`` (tf2onnx ``from_function``, opset ``opset`` <=
    18; rejected if tf2onnx left any op unconverted). The batch axis stays dynamic.

    Everything is built in a hidden sibling of ``out_dir`` and moved into place only once every
    format converted: on any failure (or Ctrl-C) nothing in ``out_dir`` changes.

    Args:
        model: a ``keras.Model`` or the path of a ``.keras`` file.
        out_dir: destination directory (created if missing).
        formats: any of ``"saved_model"``, ``"tflite"``, ``"onnx"``.
        input_signature: TensorSpecs for models whose inputs Keras cannot tell (subclassed).
        opset: ONNX opset, 13 to 18.
        progress: optional callable ``progress(format, message)``.
    Returns:
        dict format -> path written.
    Raises:
        ConversionError: a converter failed (every format is still attempted first).
        InputError: bad arguments or an unloadable model.
    """
    formats = check_formats(formats)
    check_opset(opset)
    model = load_model(model, safe_mode)
    signature = Signature.from_model(model, input_signature)
    say = progress or (lambda fmt, message: None)
    errors = []
    with staging_dir(out_dir) as stage:
        session = Session(model, signature, stage, opset, tflite_select_tf_ops)
        for fmt in formats:
            say(fmt, "converting")
            try:
                session.artifact(fmt)
                say(fmt, "converted")
            except ConversionError as e:
                errors.append(f"{fmt}: {e}")
                say(fmt, f"failed: {e}")
            except Exception as e:  # a converter bug is that format's failure, not the run's
                errors.append(f"{fmt}: {type(e).__name__}: {one_line(e)}")
                say(fmt, f"failed: {type(e).__name__}: {one_line(e)}")
        if errors:
            raise ConversionError("export failed, nothing written: " + "; ".join(errors))
        written = commit(stage / "main", out_dir, [ARTIFACTS[f] for f in formats])
    return dict(zip(formats, map(str, written)))
