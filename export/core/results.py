"""What a check finds and what a format's verification comes to: :class:`Finding`,
:class:`CheckResult`, :class:`FormatResult` (the one result type, float and quantized), their
statuses, and :func:`jsonable`, the plain-JSON form every result and the report are written in.
Every later stage fills or reads these; the report stage renders them."""

from __future__ import annotations

import dataclasses
from typing import Any

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
        return {"ok": self.ok, **jsonable(self.details)}


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
            "quantization": jsonable(self.quantization),
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


def jsonable(value: Any):
    """Plain JSON types only: numpy scalars and arrays, tuples and paths are converted."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)  # strict JSON has no NaN/Infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
