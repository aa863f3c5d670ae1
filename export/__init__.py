"""Export kit: prove that DropBlock folds away in SavedModel, TFLite (LiteRT) and ONNX.

    >>> from tfdropblock.export import export, verify, inspect, assert_folds_away
    >>> report = verify(model)                 # export every format, then check each
    >>> print(report); report.ok
    >>> export(model, "out/")                  # saved_model/, model.tflite, model.onnx
    >>> inspect("elsewhere/model.onnx")        # findings for an artifact made elsewhere

Public API: :func:`export`, :func:`verify`, :func:`inspect`, :func:`assert_folds_away`,
:class:`Report`, :class:`FormatResult`, :class:`Finding`, :func:`dropblocks_as_identity`, and
the errors :class:`InputError` (bad usage, unreadable input), its subclass :class:`OutputError`
(the output cannot be written: not a directory, read-only, disk full) and
:class:`ConversionError` (a converter or runtime failed).
"""

from tfdropblock._lazy import lazy_exports

# Imported on first use: the CLI reads argument errors and --help without TensorFlow.
_EXPORTS = {
    "ConversionError": "tfdropblock.export.errors",
    "ExportKitError": "tfdropblock.export.errors",
    "InputError": "tfdropblock.export.errors",
    "OutputError": "tfdropblock.export.errors",
    "dropblocks_as_identity": "tfdropblock.export.identity",
    "inspect": "tfdropblock.export.inspection",
    "ARTIFACTS": "tfdropblock.export.exporter",
    "export": "tfdropblock.export.exporter",
    "FORMATS": "tfdropblock.export.report",
    "SCHEMA_VERSION": "tfdropblock.export.report",
    "CheckResult": "tfdropblock.export.report",
    "Finding": "tfdropblock.export.report",
    "FormatResult": "tfdropblock.export.report",
    "Report": "tfdropblock.export.report",
    "assert_folds_away": "tfdropblock.export.verifier",
    "verify": "tfdropblock.export.verifier",
}

__all__ = sorted(_EXPORTS)

_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name):
    # The kit traces TensorFlow graphs: under another Keras backend, one sentence on what to do.
    from tfdropblock._util import non_tensorflow_backend

    problem = name in _EXPORTS and not name.endswith("Error") and non_tensorflow_backend()
    if problem:
        raise RuntimeError(f"tfdropblock.export.{name}: {problem}")
    return _getattr(name)
