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

from tfdropblock.export.atomic import (check_out_dir, commit_many, staging_dir,
                                       write_bytes)
from tfdropblock.export.errors import ConversionError, InputError, OutputError, write_failure
from tfdropblock.export.graphs import onnx_graph, traced_graph
from tfdropblock.export.identity import dropblock_names, dropblocks_as_identity
from tfdropblock.export.loading import check_formats, load_model, one_line
from tfdropblock.export.onnx_export import (DEFAULT_OPSET, ONNX_DATA, check_external_data,
                                            check_opset, convert_onnx, save_onnx)
from tfdropblock.export.report import FORMATS
from tfdropblock.export.savedmodel import export_saved_model
from tfdropblock.export.signature import Signature
from tfdropblock.export.tflite import convert_tflite

ARTIFACTS = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
# Files that belong to an artifact when present: an ONNX model's external data.
COMPANIONS = {"onnx": (ONNX_DATA,)}
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
                 reference="auto", onnx_external_data=None):
        if reference not in REFERENCE_MODES:
            raise InputError(f"Invalid reference={reference!r}: expected one of "
                             f"{REFERENCE_MODES}.")
        self.model = model
        self.signature = signature
        self.workdir = Path(workdir)
        self.opset = check_opset(opset)
        self.select_tf_ops = bool(tflite_select_tf_ops)
        self.onnx_external_data = check_external_data(onnx_external_data)
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
                save_onnx(proto, self.path("onnx", ref), self.onnx_external_data)
            return proto
        return self._get("onnx", build, reference)

    def artifact(self, fmt):
        """Convert ``fmt`` for export: ConversionError if it cannot make a valid artifact."""
        if fmt == "saved_model":
            self.saved_model()
        elif fmt == "tflite":
            self.tflite()
        else:
            from tfdropblock.export.onnx_export import blocked_by, onnx_io

            proto = self.onnx()
            left = onnx_graph(proto).unsupported_ops
            if left:
                raise ConversionError(blocked_by(proto, left), format="onnx",
                                      unsupported_ops=left)
            # A graph input the model lacks (a captured constant made an input) cannot be fed.
            inputs = [t["name"] for t in onnx_io(proto)["inputs"]]
            if sorted(inputs) != sorted(self.signature.names):
                raise ConversionError(f"tf2onnx made graph inputs {inputs}, not the model's "
                                      f"{self.signature.names}", format="onnx")
        return self.path(fmt)


def export(model, out_dir, formats=FORMATS, *, input_signature=None, opset=DEFAULT_OPSET,
           tflite_select_tf_ops=False, onnx_external_data=None, safe_mode=True, progress=None):
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
        progress: optional callable ``progress(format, message)``.
    Returns:
        dict format -> path written.
    Raises:
        ConversionError: a converter failed (every format is still attempted first).
        OutputError: ``out_dir`` cannot be created or written, or the filesystem refused a
            write (disk full, quota, file-size limit); an InputError (CLI exit status 2).
        InputError: bad arguments or an unloadable model.
    """
    formats = check_formats(formats)
    check_opset(opset)
    check_external_data(onnx_external_data)
    check_out_dir(out_dir)  # before loading and converting: an unusable out_dir fails at once
    model = load_model(model, safe_mode)
    signature = Signature.from_model(model, input_signature)
    say = progress or (lambda fmt, message: None)
    errors = []
    with staging_dir(out_dir) as stage:
        session = Session(model, signature, stage, opset, tflite_select_tf_ops,
                          onnx_external_data=onnx_external_data)
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
                text = str(e) if isinstance(e, ConversionError) else (
                    f"{type(e).__name__}: {one_line(e)}")
                errors.append(f"{fmt}: {text}")
                say(fmt, f"failed: {text}")
        if errors:
            raise ConversionError("export failed, nothing written: " + "; ".join(errors))
        items, remove = commit_plan({fmt: stage / "main" for fmt in formats})
        commit_many(out_dir, items, remove)
    return {fmt: str(Path(out_dir).absolute() / ARTIFACTS[fmt]) for fmt in formats}


def commit_plan(staged):
    """``staged``: format -> directory holding its artifact. Returns ``(items, remove)`` for
    :func:`~tfdropblock.export.atomic.commit_many`: each artifact's companion files go in
    before the artifact that refers to them, and a companion the new artifact does not have is
    removed after it (an older ``model.onnx.data`` must not outlive its ``model.onnx``)."""
    items, remove = [], []
    for fmt, directory in staged.items():
        directory = Path(directory)
        for companion in COMPANIONS.get(fmt, ()):
            if (directory / companion).exists():
                items.append((directory / companion, companion))
            else:
                remove.append(companion)
        items.append((directory / ARTIFACTS[fmt], ARTIFACTS[fmt]))
    return items, remove
