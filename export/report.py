"""Findings, per-format results and the verification report (JSON-able, schema-versioned)."""

from __future__ import annotations

import dataclasses
import json
import platform
from typing import Any

from tfdropblock._util import EXIT_ERROR, EXIT_FAILED, EXIT_OK

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

FORMATS = ("saved_model", "tflite", "onnx")
CHECKS = ("conversion", "structure", "validity", "parity", "determinism")

PASSED, FAILED, ERROR = "passed", "failed", "error"
LEAK_WARNING = ("runs in training mode when the model is called without training=, as Keras's "
                "exporters call it")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: which check saw it, what it is, where in the artifact, and why it matters."""

    check: str
    what: str
    where: str = ""
    why: str = ""

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        text = f"[{self.check}] {self.what}"
        if self.where:
            text += f" (at {self.where})"
        if self.why:
            text += f": {self.why}"
        return text


@dataclasses.dataclass
class CheckResult:
    """Outcome of one check on one format; ``ok`` is None when the check could not run."""

    ok: bool | None
    details: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return {"ok": self.ok, **_jsonable(self.details)}


@dataclasses.dataclass
class FormatResult:
    """Everything verified about one export format.

    ``status`` is ``"passed"``, ``"failed"`` (a check found a problem) or ``"error"`` (the
    converter or a runtime failed, so the format could not be checked).
    """

    format: str
    status: str = PASSED
    artifact: str | None = None
    checks: dict = dataclasses.field(default_factory=dict)
    findings: list = dataclasses.field(default_factory=list)
    error: str | None = None
    seconds: float | None = None
    # Findings that do not fail the format: a check that ran but could prove nothing (a parity
    # comparison that cannot fail), said so rather than shown as "ok".
    warnings: list = dataclasses.field(default_factory=list)
    # A quantized variant's {"format", "mode", "bytes", "calibration", "int8_io"}; else None.
    quantization: dict | None = None
    # Who made the artifact: "tfdropblock" (the kit's conversion) or "keras" (model.export).
    exporter: str | None = None

    @property
    def ok(self):
        return self.status == PASSED

    def add(self, finding):
        self.findings.append(finding)

    def settle(self):
        """Derive ``status`` from the checks (an error, once set, stays)."""
        if self.status == ERROR:
            return self
        failed = any(c.ok is False for c in self.checks.values()) or bool(self.findings)
        self.status = FAILED if failed else PASSED
        return self

    def to_dict(self):
        return {
            "format": self.format,
            "status": self.status,
            "artifact": self.artifact,
            "error": self.error,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "checks": {name: check.to_dict() for name, check in self.checks.items()},
            "findings": [f.to_dict() for f in self.findings],
            "warnings": [f.to_dict() for f in self.warnings],
            "quantization": _jsonable(self.quantization),
            "exporter": self.exporter,
        }

    @classmethod
    def from_dict(cls, data):
        return cls(
            format=data["format"], status=data["status"], artifact=data.get("artifact"),
            error=data.get("error"), seconds=data.get("seconds"),
            checks={k: CheckResult(v.get("ok"), {x: y for x, y in v.items() if x != "ok"})
                    for k, v in data.get("checks", {}).items()},
            findings=[Finding(**f) for f in data.get("findings", [])],
            warnings=[Finding(**f) for f in data.get("warnings", [])],
            quantization=data.get("quantization"), exporter=data.get("exporter"))


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
            "model": _jsonable(self.model),
            "settings": _jsonable(self.settings),
            "notes": list(self.notes),
            "formats": {name: r.to_dict() for name, r in self.formats.items()},
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, **kwargs)

    def to_junit(self):
        """The report as JUnit XML: a testcase per format and check (see :mod:`.junit`)."""
        from tfdropblock.export.junit import to_junit

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


# Checks without a column: the conversion shows as the row's result and error line, the
# quantized coverage as its warnings.
_NO_COLUMN = ("conversion", "coverage")


def columns(results):
    """The table's check columns: the float formats' sequence, with every other check the
    results hold placed before the next column it precedes in its own result (a quantized
    format's twin and quality come before determinism)."""
    shown = list(CHECKS[1:])
    for result in results:
        names = [name for name in result.checks if name not in _NO_COLUMN]
        for i, name in enumerate(names):
            if name not in shown:
                later = next((n for n in names[i + 1:] if n in shown), None)
                shown.insert(shown.index(later) if later else len(shown), name)
    return shown


def format_table(report):
    """A terminal table: one row per format, one column per check, then the findings."""
    shown_checks = columns(report.formats.values())
    header = ("format", *shown_checks, "result")
    rows = []
    for name, r in report.formats.items():
        cells = [name]
        for check in shown_checks:
            c = r.checks.get(check)
            if c is not None and c.details.get("status") == "vacuous":
                cells.append("vacuous")  # ran, but could not have failed: see the warnings
            elif c is not None and check == "accuracy":
                cells.append({True: "ok ", False: "FAIL ", None: ""}[c.ok]
                             + f"{100 * c.details['top1']:.1f}%")
            elif c is None or c.ok is None:
                cells.append("-")
            elif c.ok and check == "quality":
                snr = (c.details.get("worst") or {}).get("snr_db")
                cells.append("ok" if snr is None else f"ok {snr:.0f}dB" if isinstance(
                    snr, (int, float)) and snr != float("inf") else "ok inf")
            elif c.ok:
                worst = c.details.get("max_abs_error")
                cells.append("ok" if worst is None else f"ok {worst:.1e}")
            else:
                cells.append("FAIL")
        cells.append(r.status.upper())
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line("-" * w for w in widths), *map(line, rows)]
    names = report.model.get("dropblock_layers", [])
    shown = ", ".join(names[:4]) + (f", ... {len(names) - 4} more" if len(names) > 4 else "")
    out.insert(0, f"model {report.model.get('name')!r}: {len(names)} DropBlock layer(s)"
               + (f" ({shown})" if names else ""))
    for note in report.notes:
        out.append(f"note: {note}")
    if report.settings.get("exporter") != "keras":  # with Keras's, they are findings
        for name in report.training_mode_leaks or []:
            out.append(f"warning: layer {name!r} {LEAK_WARNING}")
    for name, r in report.formats.items():
        out.extend(divergence_lines(name, r.checks.get("parity")))
    for name, r in report.formats.items():
        if r.error:
            out.append(f"{name}: error: {r.error}")
        for f in r.findings:
            out.append(f"{name}: {f}")
        for f in r.warnings:
            out.append(f"{name}: warning: {f}")
    out.append("OK" if report.ok else "FAILED")
    return "\n".join(out)


# Compared layers shown on each side of the first divergence.
AROUND = 2


def divergence_lines(name, parity):
    """The table's lines on where ``name``'s artifact first diverges from Keras: the first
    divergent layer and the compared layers around it (see :mod:`.locate`)."""
    details = parity.details if parity is not None else {}
    if "layers" not in details:
        return []
    rows = details["layers"]
    compared = [r for r in rows if r["compared"]]
    first = details.get("first_divergence")
    where = f"{name}: layers ({details.get('locate_runtime')}): {len(compared)} of {len(rows)} " \
            "compared"
    if details.get("locate_reason"):
        return [f"{name}: layers not located: {details['locate_reason']}"]
    if not first:
        return [f"{where}, every one within tolerance"]
    lines = [f"{where}; first divergence: {first['layer']!r}, max abs error "
             f"{first['max_abs_error']:.3g}, {first['tolerance_ratio']:.3g}x the tolerance "
             f"({first['diverging_layers']} layer(s) beyond it)"]
    if first.get("uncompared_inputs"):
        lines.append(f"{name}:   not compared before it (the divergence may start there): "
                     f"{', '.join(first['uncompared_inputs'])}")
    at = next(i for i, r in enumerate(compared) if r["layer"] == first["layer"])
    for row in compared[max(0, at - AROUND):at + AROUND + 1]:
        mark = ">" if row["layer"] == first["layer"] else " "
        scaled = row["max_scaled_error"]
        lines.append(f"{name}: {mark} {row['layer']:<32} {row['class']:<22} "
                     f"abs {row['max_abs_error']:.2e}  scaled "
                     + (f"{scaled:.2e}" if scaled is not None else "-") +
                     f"  x tol {row['tolerance_ratio']:.2g}")
    return lines


def _jsonable(value: Any):
    """Plain JSON types only: numpy scalars and arrays, tuples and paths are converted."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)  # strict JSON has no NaN/Infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
