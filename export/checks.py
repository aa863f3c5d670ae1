"""The checks themselves: structure against the identity reference, parity, determinism."""

from __future__ import annotations

import numpy as np

from tfdropblock.export.graphs import scope_matcher
from tfdropblock.export.report import CheckResult, Finding

MAX_NAME_FINDINGS = 5


def content_findings(graph, layer_names=None, check="structure"):
    """Random ops, Flex ops, ops a converter left unconverted, DropBlock-scoped names."""
    findings = []
    for op in graph.random_ops():
        findings.append(Finding(
            check, f"random op {op} x{graph.ops[op]}", graph.entry,
            "inference must be deterministic: a layer draws noise at inference time"))
    for op in graph.flex_ops:
        findings.append(Finding(
            check, f"Flex op {op}", graph.entry,
            "needs the TensorFlow Flex delegate, which LiteRT's builtin runtime lacks"))
    for op in graph.unsupported_ops:
        findings.append(Finding(
            check, f"unconverted op {op} in the default ONNX domain", graph.entry,
            "tf2onnx could not lower it (continue_on_error): the model is invalid"))
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


def compare_outputs(actual, expected, atol, rtol):
    """Per output: (ok, max_abs, max_rel, problem) of ``actual`` against ``expected``."""
    rows = {}
    for name, ref in expected.items():
        if name not in actual:
            rows[name] = (False, None, None, f"output {name!r} missing; has {sorted(actual)}")
            continue
        out = np.asarray(actual[name])
        ref = np.asarray(ref)
        if out.shape != ref.shape:
            rows[name] = (False, None, None, f"shape {out.shape} != expected {ref.shape}")
            continue
        if out.size == 0:
            rows[name] = (True, 0.0, 0.0, None)
            continue
        o, r = out.astype(np.float64), ref.astype(np.float64)
        diff = np.abs(o - r)
        both_nan = np.isnan(o) & np.isnan(r)
        diff = np.where(both_nan, 0.0, diff)
        nonzero = np.abs(r) > 0
        max_abs = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
        rel = np.where(nonzero, diff / np.where(nonzero, np.abs(r), 1.0), 0.0)
        max_rel = float(np.max(np.where(np.isnan(rel), np.inf, rel)))
        close = np.isclose(o, r, rtol=rtol, atol=atol, equal_nan=True)
        problem = None
        if not close.all():
            idx = tuple(int(i) for i in np.argwhere(~close)[0])
            problem = (f"{int((~close).sum())} of {close.size} values differ, first at {idx}: "
                       f"{o[idx]!r} vs {r[idx]!r}")
        rows[name] = (bool(close.all()), max_abs, max_rel, problem)
    return rows


def parity_check(runs, expected_batches, atol, rtol):
    """``runs``: {runtime label: [named outputs per batch]}; compares each with Keras."""
    comparisons, findings = [], []
    worst = 0.0
    for label, batches in runs.items():
        for batch_index, (actual, expected) in enumerate(zip(batches, expected_batches)):
            n = len(next(iter(expected.values()))) if expected else 0
            for name, (ok, max_abs, max_rel, problem) in compare_outputs(
                    actual, expected, atol, rtol).items():
                comparisons.append({"runtime": label, "batch_size": n, "output": name, "ok": ok,
                                    "max_abs_error": max_abs, "max_rel_error": max_rel})
                if max_abs is not None:
                    worst = max(worst, max_abs)
                if not ok:
                    findings.append(Finding(
                        "parity", f"output {name!r} differs from Keras (training=False): {problem}",
                        f"{label}, batch {n}",
                        f"max abs error {max_abs}, tolerance atol={atol} rtol={rtol}"
                        if max_abs is not None else "outputs do not match"))
    details = {"atol": atol, "rtol": rtol, "max_abs_error": worst,
               "batch_sizes": sorted({c["batch_size"] for c in comparisons}),
               "comparisons": comparisons}
    return CheckResult(not findings, details), findings


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
