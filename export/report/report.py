"""The verification report: :class:`Report` (the per-format results, its exit code, JSON of
schema :data:`SCHEMA_VERSION`, JUnit XML through :mod:`.junit`, the table through
:mod:`.table`) and :func:`build_report`, which assembles one from a run's results."""

from __future__ import annotations

import dataclasses
import json
import platform

from tfdropblock._util import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from tfdropblock.export.core.results import ERROR, FAILED, jsonable
from tfdropblock.export.report.table import format_table

# 2: formats.<name>.warnings; parity status/degenerate/max_scaled_error; validity io;
#    model.generated_inputs; structure ok null when a conversion blocked the format.
# 3: quantized variants as formats ("tflite:int8", ...) with checks twin, quality (and
#    coverage for tflite:int8) instead of parity; formats.<name>.quantization (null for a
#    float format); settings.quantize and settings.int8_io when quantizing.
# 4: checks.accuracy (top1, keras_top1, agreement, rows, drop, max_drop, runtime) on every
#    format when labels are given; settings.labels (rows), max_accuracy_drop,
#    quantized_accuracy_drop and batch_size then.
# 5: checks.parity.tolerances ({output: {atol, rtol}}) and atol, rtol on each comparison;
#    settings.atol_outputs and rtol_outputs (the per-output overrides); settings.inputs
#    "stored" with settings.load_outputs, and settings.save_outputs, when given.
#    formats.<name>.exporter ("tfdropblock" or "keras"); settings.exporter;
#    model.training_mode_leaks; checks.training_mode (leaks, reached, exporter_calls) on every
#    format with exporter "keras".
#    checks.parity.layers (model order: layer, class, compared, reason, max_abs_error,
#    max_scaled_error, tolerance_ratio, within_tolerance, tensor, transposed,
#    layout_ambiguous), first_divergence, locate_runtime, locate_reason when parity fails or
#    locate is asked; settings.locate.
SCHEMA_VERSION = 5

NO_DROPBLOCK_NOTE = ("the model has no DropBlock layer: its structure is compared with itself; "
                     "the random-op, Flex, name, parity and determinism checks still apply")


@dataclasses.dataclass
class Report:
    """Result of :func:`tfdropblock.export.verify`.

    ``ok`` is True when every requested format passed every check. ``exit_code`` is what the CLI
    returns: 0 all passed, 1 a check failed, 3 a converter or runtime failed (a definite check
    failure takes precedence over a format that could not be checked).
    """

    model: dict
    formats: dict
    settings: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        return bool(self.formats) and all(r.ok for r in self.formats.values())

    @property
    def findings(self):
        return [f for r in self.formats.values() for f in r.findings]

    @property
    def warnings(self):
        return [f for r in self.formats.values() for f in r.warnings]

    @property
    def training_mode_leaks(self):
        """The layers that run in training mode under ``model(x)`` (see :mod:`.leaks`); None
        when not checked."""
        return self.model.get("training_mode_leaks")

    @property
    def exit_code(self):
        statuses = {r.status for r in self.formats.values()}
        if FAILED in statuses:
            return EXIT_FAILED
        if ERROR in statuses:
            return EXIT_ERROR
        return EXIT_OK

    def to_dict(self):
        return {
            "schema_version": SCHEMA_VERSION,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "versions": versions(),
            "model": jsonable(self.model),
            "settings": jsonable(self.settings),
            "notes": list(self.notes),
            "formats": {name: r.to_dict() for name, r in self.formats.items()},
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, **kwargs)

    def to_junit(self):
        """The report as JUnit XML: a testcase per format and check (see :mod:`.junit`)."""
        from tfdropblock.export.report.junit import to_junit

        return to_junit(self)

    def __str__(self):
        return format_table(self)


def versions():
    """Versions of the stack the artifacts were produced and checked with (None if missing)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for key, dist in (("tfdropblock", "tfdropblock"), ("tensorflow", "tensorflow"),
                      ("keras", "keras"), ("tf2onnx", "tf2onnx"), ("onnx", "onnx"),
                      ("onnxruntime", "onnxruntime"), ("litert", "ai-edge-litert"),
                      ("numpy", "numpy")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def build_report(model_info, results, settings, **extra):
    """The :class:`Report` of per-format ``results``; ``extra`` goes into its settings."""
    notes = [] if model_info.get("has_dropblock", True) else [NO_DROPBLOCK_NOTE]
    if model_info.get("training_mode_leak_check_error"):
        notes.append("the training-mode leak check could not run (model(x) without training= "
                     f"failed): {model_info['training_mode_leak_check_error']}")
    return Report(model=model_info, formats=results, settings={**settings.report(), **extra},
                  notes=notes)
