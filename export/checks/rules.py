"""The checks themselves: structure against the identity reference, parity, the identity
twin of a quantized artifact, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfdropblock.export.model.graphs import scope_matcher
from tfdropblock.export.run.inputs import degenerate_outputs
from tfdropblock.export.run.tolerance import default_of
from tfdropblock.export.run.tolerance import of as tolerance_of
from tfdropblock.export.core.results import LEAK_WARNING, CheckResult, Finding

MAX_NAME_FINDINGS = 5
MAX_DIFFERENCES = 8  # twin differences listed


def content_findings(graph, layer_names=None, check="structure"):
    """Random ops, Flex ops (each with the layer whose scope holds it, when the reader can
    tell), ops a converter left unconverted, DropBlock-scoped names."""
    findings = []

    def in_layer(op):
        layer = graph.layer(op, layer_names)
        return f" in layer {layer!r}" if layer else ""

    for op in graph.random_ops():
        findings.append(Finding(
            check, f"random op {op} x{graph.ops[op]}{in_layer(op)}", graph.where(op),
            "inference must be deterministic: a layer draws noise at inference time"))
    for what, where, why in graph.hazards:
        findings.append(Finding(check, what, where, why))
    for op in graph.flex_ops:
        what, why = graph.flex_finding
        findings.append(Finding(check, what.format(op=op) + in_layer(op), graph.where(op), why))
    for op in graph.unsupported_ops:
        what, why = graph.unsupported_finding
        findings.append(Finding(check, what.format(op=op), graph.entry, why))
    matches = scope_matcher(layer_names)
    hits = [(where, name) for where, name in graph.names if matches(name)]
    for where, name in hits[:MAX_NAME_FINDINGS]:
        findings.append(Finding(
            check, f"name {name!r} carries a DropBlock layer's name scope", where,
            "a DropBlock layer created ops or tensors in the inference graph"))
    if len(hits) > MAX_NAME_FINDINGS:
        findings.append(Finding(check, f"... and {len(hits) - MAX_NAME_FINDINGS} more "
                                       "DropBlock-scoped names", graph.entry))
    return findings


def structure_check(graph, reference, layer_names):
    """Op multiset equal to the identity reference's, plus :func:`content_findings`."""
    extra = graph.ops - reference.ops
    missing = reference.ops - graph.ops
    findings = []
    if extra:
        findings.append(Finding(
            "structure", f"{sum(extra.values())} op(s) more than the model with every DropBlock "
            f"replaced by identity: {_counts(extra)}", graph.entry,
            "DropBlock did not fold away at inference"))
    if missing:
        findings.append(Finding(
            "structure", f"{sum(missing.values())} op(s) of the identity reference missing: "
            f"{_counts(missing)}", graph.entry,
            "the export differs from the same model without DropBlock"))
    findings += content_findings(graph, layer_names)
    details = {"entry": graph.entry, "ops": dict(sorted(graph.ops.items())),
               "op_count": sum(graph.ops.values()),
               "extra_ops": dict(sorted(extra.items())),
               "missing_ops": dict(sorted(missing.items())),
               "random_ops": graph.random_ops()}
    return CheckResult(not findings, details), findings


LEAK_WHY = f"it {LEAK_WARNING}"


def training_mode_check(leaks, calls_inference, where):
    """Whether a training-mode leak (:mod:`.leaks`) reaches an artifact Keras's exporter made:
    one finding per leaking layer unless that exporter calls ``model(x, training=False)``;
    not checked (``ok`` None) when the leak check could not run (``leaks`` None)."""
    if leaks is None:
        return CheckResult(None, {"leaks": None}), []
    leaks = list(leaks)
    reached = not calls_inference
    findings = [Finding("training_mode", f"layer {name!r} runs in training mode in Keras's export",
                        where, LEAK_WHY) for name in leaks] if reached else []
    return CheckResult(not findings, {"leaks": leaks, "reached": reached and bool(leaks),
                                      "exporter_calls": "model(x, training=False)"
                                      if calls_inference else "model(x)"}), findings


def compare_outputs(actual, expected, atol, rtol):
    """Per output, a dict: ``ok``, ``max_abs_error``, ``max_rel_error``, ``max_abs_expected``
    (the largest finite |Keras value|), ``max_scaled_error`` (max abs error over that, so an
    error can be read against the output's own scale), ``problem`` (text, or None), and the
    ``atol`` and ``rtol`` it was judged with (each a float, or per output: see
    :mod:`.tolerance`)."""
    rows = {}
    tolerances = atol, rtol
    for name, ref in expected.items():
        atol, rtol = (tolerance_of(t, name) for t in tolerances)
        row = {"ok": False, "max_abs_error": None, "max_rel_error": None,
               "max_abs_expected": None, "max_scaled_error": None, "problem": None,
               "atol": atol, "rtol": rtol}
        rows[name] = row
        if name not in actual:
            row["problem"] = f"output {name!r} missing; has {sorted(actual)}"
            continue
        out = np.asarray(actual[name])
        ref = np.asarray(ref)
        if out.shape != ref.shape:
            row["problem"] = f"shape {out.shape} != expected {ref.shape}"
            continue
        if out.size == 0:
            row.update(ok=True, max_abs_error=0.0, max_rel_error=0.0)
            continue
        o, r = out.astype(np.float64), ref.astype(np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf and inf / inf: counted as inf below
            diff = np.abs(o - r)
            both_nan = np.isnan(o) & np.isnan(r)
            diff = np.where(both_nan, 0.0, diff)
            nonzero = np.abs(r) > 0
            max_abs = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
            rel = np.where(nonzero, diff / np.where(nonzero, np.abs(r), 1.0), 0.0)
            max_rel = float(np.max(np.where(np.isnan(rel), np.inf, rel)))
        finite_ref = np.abs(r[np.isfinite(r)])
        scale = float(finite_ref.max()) if finite_ref.size else None
        close = np.isclose(o, r, rtol=rtol, atol=atol, equal_nan=True)
        row.update(ok=bool(close.all()), max_abs_error=max_abs, max_rel_error=max_rel,
                   max_abs_expected=scale,
                   max_scaled_error=max_abs / scale if scale else None)
        if not close.all():
            row["problem"] = _mismatch(o, r, close)
    return rows


def _mismatch(o, r, close):
    """What differs, with non-finite values explained rather than shown as a bare mismatch."""
    parts = []
    keras_bad = ~np.isfinite(r) & np.isfinite(o)
    artifact_bad = ~np.isfinite(o) & np.isfinite(r)
    if keras_bad.any():
        parts.append(f"Keras output has {int(keras_bad.sum())} non-finite value(s) where the "
                     "artifact has finite ones")
    if artifact_bad.any():
        parts.append(f"the artifact output has {int(artifact_bad.sum())} non-finite value(s) "
                     "where Keras has finite ones")
    idx = tuple(int(i) for i in np.argwhere(~close)[0])
    parts.append(f"{int((~close).sum())} of {close.size} values differ, first at {idx}: "
                 f"{float(o[idx]):.9g} vs {float(r[idx]):.9g}")
    return "; ".join(parts)


PARITY_OK, PARITY_FAILED, PARITY_VACUOUS = "ok", "failed", "vacuous"


def parity_check(runs, expected_batches, atol, rtol, input_batches=None,
                 against="Keras (training=False)"):
    """``runs``: {runtime label: [named outputs per batch]}; compares each with Keras (or
    what ``against`` names: the stored outputs of ``load_outputs``).

    Returns ``(check, findings, warnings)``. A mismatch is a finding. An output whose
    comparison cannot fail (:func:`degenerate_outputs`) is a warning; when every output is
    degenerate the check proved nothing: ``ok`` None, ``status`` ``"vacuous"``, and the format
    is not failed for it (the structure and determinism checks still decide), but the report
    says so instead of "ok".
    """
    comparisons, findings = [], []
    worst, worst_scaled = 0.0, None
    degenerate = degenerate_outputs(input_batches, expected_batches, atol, rtol)
    for label, batches in runs.items():
        for batch_index, (actual, expected) in enumerate(zip(batches, expected_batches)):
            n = len(next(iter(expected.values()))) if expected else 0
            for name, row in compare_outputs(actual, expected, atol, rtol).items():
                comparisons.append({
                    "runtime": label, "batch_size": n, "output": name, "ok": row["ok"],
                    "atol": row["atol"], "rtol": row["rtol"],
                    "max_abs_error": row["max_abs_error"], "max_rel_error": row["max_rel_error"],
                    "max_abs_expected": row["max_abs_expected"],
                    "max_scaled_error": row["max_scaled_error"],
                    "degenerate": name in degenerate})
                max_abs = row["max_abs_error"]
                if max_abs is not None:
                    worst = max(worst, max_abs)
                if row["max_scaled_error"] is not None:
                    worst_scaled = max(worst_scaled or 0.0, row["max_scaled_error"])
                if not row["ok"]:
                    findings.append(Finding(
                        "parity", f"output {name!r} differs from {against}: "
                                  f"{row['problem']}", f"{label}, batch {n}",
                        f"max abs error {max_abs}, tolerance atol={row['atol']} "
                        f"rtol={row['rtol']}"
                        if max_abs is not None else "outputs do not match"))
    warnings = [Finding("parity", f"the comparison of output {name!r} with Keras proves "
                                  "nothing", f"batch {size}",
                        f"{why}. Pass inputs= (--inputs) on which the model's outputs vary")
                for name, reasons in degenerate.items() for size, why in reasons[:1]]
    outputs = set(expected_batches[0]) if expected_batches else set()
    vacuous = bool(outputs) and outputs <= set(degenerate)
    status = PARITY_FAILED if findings else PARITY_VACUOUS if vacuous else PARITY_OK
    details = {"status": status, "atol": default_of(atol), "rtol": default_of(rtol),
               # The tolerance each output was judged with: the default or its own.
               "tolerances": {name: {"atol": tolerance_of(atol, name),
                                     "rtol": tolerance_of(rtol, name)}
                              for name in (expected_batches[0] if expected_batches else {})},
               "max_abs_error": worst,
               "max_scaled_error": worst_scaled,
               "batch_sizes": sorted({c["batch_size"] for c in comparisons}),
               "degenerate": [{"output": name, "batch_size": size, "why": why}
                              for name, reasons in degenerate.items() for size, why in reasons],
               "comparisons": comparisons}
    ok = False if findings else None if vacuous else True
    return CheckResult(ok, details), findings, warnings


def io_check(expected, actual, where):
    """Findings where an artifact's inputs or outputs (``actual``, from the artifact itself)
    differ from the Keras model's (``expected``, :func:`keras_io`): names, count, dtypes,
    ranks, static dims, and a batch axis that must stay dynamic."""
    findings = []
    for side in ("inputs", "outputs"):
        want = {t["name"]: t for t in expected[side]}
        have = {t["name"]: t for t in actual[side]}
        extra = [n for n in have if n not in want]
        missing = [n for n in want if n not in have]
        if extra:
            findings.append(Finding(
                "validity", f"{len(have)} {side} where the Keras model has {len(want)}: extra "
                            f"{_names(extra)}", where,
                f"a caller feeding the Keras model's {side} cannot use these"
                + (" (a converter made captured constants into inputs?)"
                   if side == "inputs" else "")))
        if missing:
            findings.append(Finding(
                "validity", f"{side[:-1]} {_names(missing)} of the Keras model missing; has "
                            f"{_names(list(have))}", where,
                f"the artifact's {side} must be named as the Keras model's"))
        for name in want:
            if name not in have:
                continue
            w, h = want[name], have[name]
            what = f"{side[:-1]} {name!r}"
            if w["dtype"] != h["dtype"]:
                findings.append(Finding("validity", f"{what} is {h['dtype']}, Keras's is "
                                                    f"{w['dtype']}", where,
                                        "the artifact's dtypes must be the Keras model's"))
            ws, hs = w.get("shape"), h.get("shape")
            if ws is None or hs is None:
                continue
            if len(ws) != len(hs):
                findings.append(Finding("validity", f"{what} has rank {len(hs)} {hs}, Keras's "
                                                    f"has rank {len(ws)} {ws}", where,
                                        "the artifact's shapes must be the Keras model's"))
                continue
            if w.get("batched") and hs and hs[0] is not None:
                findings.append(Finding("validity", f"{what} has a fixed batch axis of "
                                                    f"{hs[0]}", where,
                                        "the batch axis must stay dynamic, as the Keras "
                                        "model's is"))
            start = 1 if w.get("batched") else 0
            fixed = [(i, a, b) for i, (a, b) in enumerate(zip(ws, hs))
                     if i >= start and a is not None and b is not None and a != b]
            if fixed:
                findings.append(Finding("validity", f"{what} has shape {hs}, Keras's is {ws}",
                                        where, "the artifact's shapes must be the Keras "
                                               "model's"))
    return findings


def _names(names, limit=4):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


@dataclasses.dataclass
class TwinComparison:
    """Whether a quantized artifact is its identity twin's. ``identical``: same ops, tensors,
    weights, scales and zero points (names aside); ``byte_identical``: the files are equal;
    ``differences``: the first differences found, as text; ``compared``: tensors (TFLite) or
    nodes and initializers (ONNX) compared."""

    identical: bool
    byte_identical: bool
    differences: list
    compared: int

    def to_dict(self):
        return dataclasses.asdict(self)


def twin_check(comparison, runs, twin_runs, where):
    """A quantized artifact against its identity twin quantized the same way: ``comparison``
    (a :class:`TwinComparison`) must find them identical, and the two must give bit-identical
    outputs (``runs``, ``twin_runs``: {runtime label: [named outputs per batch]})."""
    findings = [Finding("twin", f"differs from the identity twin quantized the same way: {d}",
                        where, "DropBlock changed the quantized model (weights, scales or ops): "
                        "it did not fold away before quantization, or was active during "
                        "calibration")
                for d in comparison.differences]
    mismatched = []
    for label, batches in twin_runs.items():
        for k, (mine, theirs) in enumerate(zip(runs[label], batches)):
            for name in mine:
                a, b = np.asarray(mine[name]), np.asarray(theirs.get(name))
                if a.shape != b.shape or a.tobytes() != b.tobytes():
                    mismatched.append(f"{label}, batch {k}, output {name!r}")
    if mismatched:
        findings.append(Finding(
            "twin", f"outputs differ from the identity twin's: {', '.join(mismatched[:3])}"
                    + (f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""), where,
            "the model and its DropBlock-free twin must compute bit-identical outputs"))
    return CheckResult(not findings, {**comparison.to_dict(),
                                      "outputs_bit_identical": not mismatched}), findings


def determinism_check(pairs):
    """``pairs``: {label: (outputs run 1, outputs run 2)}; bit-identical or a finding."""
    findings = []
    for label, (first, second) in pairs.items():
        for name in first:
            a, b = np.asarray(first[name]), np.asarray(second.get(name))
            if a.shape != b.shape or a.tobytes() != b.tobytes():
                findings.append(Finding(
                    "determinism", f"output {name!r} differs between two runs on the same input",
                    label, "the exported model is not deterministic: noise at inference time"))
    return CheckResult(not findings, {"runtimes": sorted(pairs)}), findings


def _counts(counter, limit=12):
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{op} x{n}" for op, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more op types)" if len(items) > limit else "")


def accuracy_check(top, keras_top, labels, max_drop, where):
    """Top-1 of an artifact's top classes ``top`` and of Keras's on ``labels``, and the share
    of rows where they agree; fails when the artifact's top-1 is more than ``max_drop`` below
    Keras's (None: reported, not judged)."""
    top1 = float(np.mean(top == labels))
    keras_top1 = float(np.mean(keras_top == labels))
    drop = keras_top1 - top1
    ok = None if max_drop is None else bool(drop <= max_drop + 1e-12)
    details = {"top1": top1, "keras_top1": keras_top1,
               "agreement": float(np.mean(top == keras_top)), "rows": int(len(labels)),
               "drop": drop, "max_drop": max_drop, "runtime": where}
    findings = [] if ok is not False else [Finding(
        "accuracy", f"top-1 {top1:.2%} is {drop:.2%} below Keras's {keras_top1:.2%}", where,
        f"more than the {max_drop:.2%} allowed (max_accuracy_drop) on {len(labels)} labelled "
        "rows")]
    return CheckResult(ok, details), findings
