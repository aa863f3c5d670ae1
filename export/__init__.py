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
    "ConversionError": "tfdropblock.export.core.errors",
    "ExportKitError": "tfdropblock.export.core.errors",
    "InputError": "tfdropblock.export.core.errors",
    "OutputError": "tfdropblock.export.core.errors",
    "dropblocks_as_identity": "tfdropblock.export.model.identity",
    "inspect": "tfdropblock.export.execution.inspection",
    "ARTIFACTS": "tfdropblock.export.execution.exporter",
    "export": "tfdropblock.export.execution.exporter",
    "FORMATS": "tfdropblock.export.run.registry",
    "SCHEMA_VERSION": "tfdropblock.export.report.report",
    "CheckResult": "tfdropblock.export.core.results",
    "Finding": "tfdropblock.export.core.results",
    "FormatResult": "tfdropblock.export.core.results",
    "Report": "tfdropblock.export.report.report",
    "assert_folds_away": "tfdropblock.export.execution.verifier",
    "verify": "tfdropblock.export.execution.verifier",
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
