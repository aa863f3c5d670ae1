"""How close a quantized artifact's outputs are to Keras's float outputs (``training=False``).

Per output, over every batch given (concatenated along the batch axis):

* ``max_abs_error``: the largest ``|artifact - keras|``;
* ``snr_db``: ``10 * log10(sum(keras**2) / sum((keras - artifact)**2))``, ``inf`` when the
  outputs are equal;
* ``cosine``: cosine similarity of the flattened outputs; ``min_row_cosine``, the worst over
  the rows of the batch, is reported but not judged (one peaked row of a softmax swings it);
* ``top1_agreement``: for classifier outputs, ``(batch, classes)`` with ``classes > 1``, the
  share of rows whose top class is Keras's (a row whose top Keras score is tied counts as
  agreeing when the artifact picks any of the tied classes); None for other outputs.

The default floors per mode are :data:`THRESHOLDS`: they catch a broken quantization, they are
not accuracy targets. What they were measured on, and the failures they are for:
``docs/QUANTIZATION.md``. A DropBlock active during calibration is not what these metrics can
see (it widens activation ranges by at most 1 / keep_prob): the ``twin`` check proves that.

A comparison that cannot fail proves nothing and is flagged, never passed: an empty Keras
output, NaN or infinite Keras values, a constant Keras output (all zeros included: any
artifact returning that constant scores ``inf``), or Keras rows that are all the same although
the inputs differ (an artifact that ignores its input would pass). Such an output is a warning
and is not judged; when every output is degenerate the check's ``ok`` is None and its status
``"vacuous"``, as :func:`tfdropblock.export.checks.rules.parity_check` reports it. An artifact
producing NaN or infinity where Keras is finite fails.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfdropblock.export.run.inputs import rows_differ
from tfdropblock.export.core.errors import InputError
from tfdropblock.export.core.results import CheckResult, Finding

QUALITY_OK, QUALITY_FAILED, QUALITY_VACUOUS = "ok", "failed", "vacuous"

# Rows of a batched output closer than this (relative to the output's scale) count as equal.
_SAME_ROWS = 1e-6


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Minimums every output must meet; ``top1`` applies to classifier outputs only."""

    snr_db: float
    cosine: float
    top1: float

    def __post_init__(self):
        for name in ("snr_db", "cosine", "top1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise InputError(f"Invalid {name}={value!r}: expected a number.")
        if not -1.0 <= self.cosine <= 1.0:
            raise InputError(f"Invalid cosine={self.cosine!r}: expected a float in [-1, 1].")
        if not 0.0 <= self.top1 <= 1.0:
            raise InputError(f"Invalid top1={self.top1!r}: expected a float in [0, 1].")


# See the module docstring for the measurements behind these; top1=0.0 reports, not judges.
THRESHOLDS = {
    "float16": Thresholds(snr_db=30.0, cosine=0.999, top1=0.9),
    "dynamic": Thresholds(snr_db=8.0, cosine=0.9, top1=0.0),
    "int8": Thresholds(snr_db=8.0, cosine=0.9, top1=0.0),
}


def thresholds_for(mode_or_thresholds):
    """:class:`Thresholds` given one, or the defaults of a mode name (``"float16"``,
    ``"dynamic"``, ``"int8"``); InputError otherwise."""
    if isinstance(mode_or_thresholds, Thresholds):
        return mode_or_thresholds
    if isinstance(mode_or_thresholds, str) and mode_or_thresholds in THRESHOLDS:
        return THRESHOLDS[mode_or_thresholds]
    raise InputError(f"Invalid thresholds={mode_or_thresholds!r}: expected a Thresholds or one "
                     f"of {tuple(THRESHOLDS)}.")


def output_metrics(actual, expected, input_batch=None):
    """Metrics of one output: ``actual`` (artifact) against ``expected`` (Keras), same shape.

    Returns a dict: ``max_abs_error``, ``snr_db``, ``cosine``, ``min_row_cosine`` (None for an
    output without a batch axis), ``top1_agreement`` (None unless a classifier output),
    ``rows``, ``non_finite`` (artifact values that are NaN or infinite where Keras's are
    finite) and ``degenerate`` (why the comparison cannot fail, or None). ``input_batch``
    (named input arrays of the same rows) enables the "rows all the same although the inputs
    differ" test.
    """
    out = np.asarray(actual)
    ref = np.asarray(expected)
    if out.shape != ref.shape:
        raise InputError(f"Invalid outputs: the artifact's shape {out.shape} differs from "
                         f"Keras's {ref.shape}.")
    row = {"max_abs_error": None, "snr_db": None, "cosine": None, "min_row_cosine": None,
           "top1_agreement": None, "rows": int(ref.shape[0]) if ref.ndim else 1,
           "non_finite": 0, "degenerate": _degenerate(ref, input_batch)}
    if row["degenerate"] and ref.size == 0:
        return row
    o, r = out.astype(np.float64), ref.astype(np.float64)
    finite_ref = np.isfinite(r)
    bad = ~np.isfinite(o) & finite_ref
    row["non_finite"] = int(bad.sum())
    if not finite_ref.all():
        return row
    with np.errstate(invalid="ignore", over="ignore"):
        diff = o - r
        row["max_abs_error"] = float(np.max(np.abs(diff))) if not bad.any() else math.inf
        row["snr_db"] = -math.inf if bad.any() else _snr(r, diff)
        row["cosine"] = -1.0 if bad.any() else _cosine(r.ravel(), o.ravel())
        if r.ndim >= 1 and r.shape[0] > 0:
            rows_r, rows_o = r.reshape(r.shape[0], -1), o.reshape(o.shape[0], -1)
            row["min_row_cosine"] = -1.0 if bad.any() else float(min(
                _cosine(a, b) for a, b in zip(rows_r, rows_o)))
        if r.ndim == 2 and r.shape[1] > 1 and r.shape[0] > 0:
            picked = np.argmax(np.where(np.isfinite(o), o, -np.inf), axis=1)
            agree = r[np.arange(len(r)), picked] >= r.max(axis=1)
            row["top1_agreement"] = float(agree.mean())
    return row


def _snr(r, diff):
    noise = float(np.sum(diff * diff))
    signal = float(np.sum(r * r))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _cosine(a, b):
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _degenerate(ref, inputs):
    if ref.size == 0:
        return "the Keras output is empty: there is nothing to compare"
    try:
        r = ref.astype(np.float64)
    except (TypeError, ValueError):
        return "the Keras output is not numeric: SNR and cosine do not apply"
    finite = np.isfinite(r)
    if not finite.all():
        return (f"{int((~finite).sum())} of {r.size} Keras value(s) are NaN or infinite on "
                "these inputs: SNR and cosine are undefined")
    if float(np.ptp(r)) == 0.0:
        return (f"the Keras output is the constant {float(r.flat[0]):.6g}: an artifact returning "
                "that constant would score an infinite SNR")
    if inputs is not None and r.ndim and len(r) > 1 and rows_differ(inputs, len(r)):
        spread = float(np.max(np.abs(r - r[:1])))
        if spread <= _SAME_ROWS * float(np.max(np.abs(r))):
            return (f"the Keras output is the same for all {len(r)} rows (largest difference "
                    f"from row 0: {spread:.3g}) although the inputs differ: an artifact that "
                    "ignores its input would pass")
    return None


def concatenate(batches):
    """Named arrays of several batches joined along the batch axis; an output whose shapes
    cannot be joined (no batch axis) is flattened and joined, so values still pair up."""
    if not batches:
        return {}
    joined = {}
    for name in batches[0]:
        arrays = [np.asarray(b[name]) for b in batches]
        if all(a.ndim for a in arrays) and len({a.shape[1:] for a in arrays}) == 1:
            joined[name] = np.concatenate(arrays, axis=0)
        else:
            joined[name] = np.concatenate([a.reshape(-1) for a in arrays])
    return joined


def quality_check(runs, expected_batches, thresholds, input_batches=None):
    """``runs``: {runtime label: [named outputs per batch]}, compared with Keras's
    ``expected_batches`` (same order) against ``thresholds`` (a :class:`Thresholds` or a mode).

    Returns ``(check, findings, warnings)`` like
    :func:`~tfdropblock.export.checks.rules.parity_check`:
    a threshold missed is a finding; a degenerate output is a warning and is not judged; when
    every output is degenerate ``ok`` is None and ``status`` ``"vacuous"``.
    """
    limits = thresholds_for(thresholds)
    expected = concatenate(expected_batches)
    inputs = concatenate(input_batches) if input_batches is not None else None
    findings, comparisons, degenerate = [], [], {}
    for label, batches in runs.items():
        if len(batches) != len(expected_batches):
            raise InputError(f"Invalid runs[{label!r}]: {len(batches)} batches of outputs for "
                             f"{len(expected_batches)} batches of Keras outputs.")
        actual = concatenate(batches)
        for name, ref in expected.items():
            if name not in actual:
                findings.append(Finding("quality", f"output {name!r} missing; has "
                                                   f"{sorted(actual)}", label))
                continue
            metrics = output_metrics(actual[name], ref, inputs)
            comparisons.append({"runtime": label, "output": name, **metrics})
            if metrics["degenerate"]:
                degenerate.setdefault(name, metrics["degenerate"])
                continue
            for what in _missed(metrics, limits):
                findings.append(Finding(
                    "quality", f"output {name!r} is too far from Keras (training=False): "
                               f"{what}", f"{label}, {metrics['rows']} rows",
                    "the quantized model does not compute what the float model does"))
    warnings = [Finding("quality", f"the comparison of output {name!r} with Keras proves "
                                   "nothing", "", f"{why}. Pass inputs on which the model's "
                                                  "outputs vary")
                for name, why in degenerate.items()]
    vacuous = bool(expected) and set(expected) <= set(degenerate)
    status = QUALITY_FAILED if findings else QUALITY_VACUOUS if vacuous else QUALITY_OK
    judged = [c for c in comparisons if not c["degenerate"]]
    details = {"status": status, "thresholds": dataclasses.asdict(limits),
               "worst": _worst(judged), "comparisons": comparisons,
               "degenerate": [{"output": n, "why": w} for n, w in degenerate.items()]}
    ok = False if findings else None if vacuous else True
    return CheckResult(ok, details), findings, warnings


def _missed(m, limits):
    if m["non_finite"]:
        yield (f"{m['non_finite']} NaN or infinite value(s) where Keras's are finite")
        return
    if m["snr_db"] < limits.snr_db:
        yield f"SNR {m['snr_db']:.1f} dB < {limits.snr_db:g} dB"
    if m["cosine"] < limits.cosine:
        yield f"cosine similarity {m['cosine']:.5f} < {limits.cosine:g}"
    if m["top1_agreement"] is not None and m["top1_agreement"] < limits.top1:
        yield f"top-1 agreement {m['top1_agreement']:.3f} < {limits.top1:g}"


def _worst(comparisons):
    """The worst value of each metric over the judged comparisons (None when none)."""
    def pick(key, fn):
        values = [c[key] for c in comparisons if c[key] is not None]
        return fn(values) if values else None

    return {"max_abs_error": pick("max_abs_error", max), "snr_db": pick("snr_db", min),
            "cosine": pick("cosine", min), "min_row_cosine": pick("min_row_cosine", min),
            "top1_agreement": pick("top1_agreement", min)}
