"""Export kit: prove that DropBlock folds away in SavedModel, TFLite (LiteRT) and ONNX.

    >>> from tfdropblock.export import export, verify, inspect, assert_folds_away
    >>> report = verify(model)                 # export every format, then check each
    >>> print(report); report.ok
    >>> export(model, "out/")                  # saved_model/, model.tflite, model.onnx
    >>> inspect("elsewhere/model.onnx")        # findings for an artifact made elsewhere

Public API: :func:`export`, :func:`verify`, :func:`inspect`, :func:`assert_folds_away`,
:class:`Report`, :class:`FormatResult`, :class:`Finding`, :func:`dropblocks_as_identity`, and
the errors :class:`InputError` (bad usage, unreadable input) and :class:`ConversionError`
(a converter or runtime failed).
"""

from tfdropblock.export.errors import ConversionError, ExportKitError, InputError
from tfdropblock.export.identity import dropblocks_as_identity
from tfdropblock.export.inspection import inspect
from tfdropblock.export.pipeline import ARTIFACTS, export
from tfdropblock.export.report import (FORMATS, SCHEMA_VERSION, CheckResult, Finding,
                                       FormatResult, Report)
from tfdropblock.export.verifier import assert_folds_away, verify

__all__ = [
    "ARTIFACTS",
    "FORMATS",
    "SCHEMA_VERSION",
    "CheckResult",
    "ConversionError",
    "ExportKitError",
    "Finding",
    "FormatResult",
    "InputError",
    "Report",
    "assert_folds_away",
    "dropblocks_as_identity",
    "export",
    "inspect",
    "verify",
]
