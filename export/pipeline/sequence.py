"""The one check sequence, the same for every format, float or quantized.

:func:`check_format` converts a format on a run and checks it: conversion, structure,
validity, the comparison with Keras (parity for a float format; for a quantized variant its
identity twin and quality floors), accuracy when the run has labels, determinism, then the
format's own checks (``Format.checks``) and, for a quantized variant, its quantizer's. A
format only describes itself (:class:`~tfdropblock.export.formats.base.Format`); what is
checked, and in which order, is here.
"""

from __future__ import annotations

import dataclasses

from tfdropblock._util import describe_error
from tfdropblock.export.checks import rules as checks
from tfdropblock.export.checks.metrics import quality_check, thresholds_for
from tfdropblock.export.core.errors import ConversionError
from tfdropblock.export.core.results import CheckResult, Finding
from tfdropblock.export.run import registry
from tfdropblock.export.run.calibration import of_run as run_calibration

PARITY = "checking parity"
TWIN = "checking the quantized model against its identity twin and Keras"


def check_format(fmt, run, result, say, thresholds=None):
    """Convert ``fmt`` on ``run`` and check it into ``result``. With Keras's exporter, first
    the training mode the model runs in under it (:func:`..checks.rules.training_mode_check`).
    ``thresholds``: a quantized variant's quality floors (default: its mode's)."""
    exporter = registry.keras_exporter(fmt.name) if run.keras_exporter else None
    if exporter is not None:
        check, findings = checks.training_mode_check(
            run.training_mode_leaks, exporter.calls_inference, fmt.name)
        result.checks["training_mode"] = check
        result.findings.extend(findings)
    artifact = _converted(fmt, run, result, exporter)
    if artifact is None:
        return
    graph = fmt.artifact_graph(artifact)
    left = list(graph.unsupported_ops)
    details, blocked = fmt.conversion(artifact, graph, run)
    result.checks["conversion"] = CheckResult(not left, details)
    if not left and run.path(fmt.name) is not None:
        result.artifact = str(run.path(fmt.name))
    # An op a converter could not lower is its limit, not a leak: it is the conversion
    # check's, and the structure check still looks for what DropBlock could have left
    # (random ops, extra ops, scoped names), so a real leak is still a failure. A random op
    # left unconverted is both, and stays a structure finding.
    reason = None
    if blocked:
        reason = fmt.blocked_by(artifact, blocked)
        details["blocked_by"] = reason
        graph = dataclasses.replace(graph, unsupported_ops=[op for op in left
                                                            if op not in blocked])
    say("checking structure")
    reference = fmt.artifact_graph(run.get(fmt.name, reference=True))
    check, findings = checks.structure_check(graph, reference, run.layer_names)
    check.details["reference"] = run.reference_how
    result.checks["structure"] = check
    result.findings.extend(findings)
    if blocked and not any(fmt.is_random_op(op) for op in left):
        if check.ok:
            # Equal to a reference that has the same unconverted ops proves nothing about
            # an invalid model: not checked, rather than passed.
            check.ok = None
            check.details["not_checked"] = reason
        raise ConversionError(reason)
    try:
        io, details, runners = (exporter.runtimes(fmt, run, artifact) if exporter
                                else fmt.runtimes(run, artifact))
    except Exception as e:
        result.checks["validity"] = CheckResult(False, {"error": describe_error(e)})
        result.add(Finding("validity", fmt.invalid_what, fmt.name, describe_error(e)))
        return
    if io is None:  # the runtimes feed and return what Keras does: no I/O to compare
        result.checks["validity"] = CheckResult(True, details)
    else:
        findings = checks.io_check(run.io, io, fmt.name)
        result.checks["validity"] = CheckResult(not findings, {**details, "io": io})
        result.findings.extend(findings)
        if {t["name"] for t in io["inputs"]} != {t["name"] for t in run.io["inputs"]}:
            return  # its inputs cannot be fed as the Keras model's: nothing can run
    say(PARITY if fmt.mode is None else TWIN)
    runs, pairs = {}, {}
    for label, runner in runners.items():
        runs[label] = [runner(b) for b in run.batches]
        pairs[label] = (runs[label][-1], runner(run.batches[-1]))
    if fmt.mode is None:
        _parity(fmt, run, artifact, runs, result)
    else:
        _twin_and_quality(fmt, run, artifact, runs, result, thresholds)
    if run.label_batches is not None:
        label, runner = next(iter(runners.items()))
        say(f"top-1 on {len(run.settings.labels)} labelled rows ({label})")
        check, findings = checks.accuracy_check(
            run.top_classes(runner), run.keras_top, run.settings.labels,
            run.settings.accuracy_drop(fmt.mode is not None), label)
        result.checks["accuracy"] = check
        result.findings.extend(findings)
    check, findings = checks.determinism_check(pairs)
    result.checks["determinism"] = check
    result.findings.extend(findings)
    for extra in fmt.checks:
        check, findings, warnings = extra(run, artifact, runners)
        result.checks[extra.name] = check
        result.findings.extend(findings)
        result.warnings.extend(warnings)
    if fmt.mode is not None:
        _quantized_extras(fmt, run, artifact, result)


def _converted(fmt, run, result, exporter):
    """The artifact, or None when its converter refused a DropBlock leak (then recorded in
    ``result`` as a structure failure); other conversion errors propagate."""
    try:
        return run.get(fmt.name)
    except ConversionError as e:
        refused_by = (f"Keras's model.export(format={exporter.keras_format!r})"
                      if exporter is not None else fmt.refused_by)
        if refused_by and leak_refused(run, result, e, refused_by):
            return None
        raise


def _parity(fmt, run, artifact, runs, result):
    """A float format's outputs against Keras's, located when asked or when they differ."""
    check, findings, warnings = checks.parity_check(runs, run.expected, run.atol, run.rtol,
                                                    run.batches, run.compared_with)
    result.checks["parity"] = check
    result.findings.extend(findings)
    result.warnings.extend(warnings)
    if check.ok is False or run.settings.locate:
        check.details.update(located(fmt, run, artifact, check))


def located(fmt, run, artifact, check):
    """The parity details of :func:`~tfdropblock.export.checks.locate.locate`, run through the
    first runtime whose parity failed (else the first)."""
    from tfdropblock.export.checks import locate

    failed = [c["runtime"] for c in check.details["comparisons"] if not c["ok"]]
    labels = list(dict.fromkeys(c["runtime"] for c in check.details["comparisons"]))
    if not labels:
        return locate.unavailable("nothing was compared")
    if run.keras_exporter:
        # The probes read the tensor and scope names of the kit's own conversion.
        return locate.unavailable("not located: the artifact is Keras's export, whose "
                                  "tensor names the locator does not map")
    runtime = (failed or labels)[0]
    try:
        probe = fmt.probe(run, artifact, runtime)
        if probe is None:
            return locate.unavailable(f"the {fmt.name} format cannot expose its "
                                      "intermediate tensors")
        return locate.locate(run, probe)
    except Exception as e:  # locating explains a parity result, it never changes it
        return locate.unavailable(f"locating failed: {describe_error(e)}")


def _twin_and_quality(fmt, run, artifact, runs, result, thresholds):
    """A quantized variant against its identity twin (quantized the same way), and its
    outputs against Keras's within the mode's quality floors."""
    twin = run.get(fmt.name, reference=True)
    twin_runs = {label: [runner(b) for b in run.batches]
                 for label, runner in fmt.quantizer.runtimes(twin).items()}
    comparison = fmt.quantizer.twin_comparison(artifact, twin)
    check, findings = checks.twin_check(comparison, runs, twin_runs, fmt.base)
    check.details["reference"] = run.reference_how
    result.checks["twin"] = check
    result.findings.extend(findings)
    check, findings, warnings = quality_check(runs, run.expected,
                                              thresholds_for(thresholds or fmt.mode),
                                              run.batches)
    result.checks["quality"] = check
    result.findings.extend(findings)
    result.warnings.extend(warnings)


def _quantized_extras(fmt, run, artifact, result):
    """The quantizer's own checks of the mode, and the report's ``quantization``."""
    extra, warnings = fmt.quantizer.checks(fmt.mode, artifact)
    result.checks.update(extra)
    result.warnings.extend(warnings)
    result.quantization = {
        "format": fmt.base, "mode": fmt.mode, "bytes": fmt.size(artifact),
        "calibration": run_calibration(run)[1] if fmt.mode == "int8" else None,
        "int8_io": None, **fmt.quantizer.info(run, fmt.mode)}


def leak_refused(run, result, error, where):
    """A converter failed: if the traced inference function holds random ops, that is the leak
    being caught (a check failure), not a tool failure. Returns True when it classified it."""
    try:
        graph = run.traced_graph()
    except Exception:
        return False
    random = graph.random_ops()
    if not random:
        return False
    result.checks["conversion"] = CheckResult(False, {"error": str(error)})
    result.checks["structure"] = CheckResult(False, {"entry": graph.entry,
                                                     "random_ops": random})
    layers = sorted({graph.layer(op, run.layer_names) for op in random} - {None})
    in_layers = f" in layer(s) {', '.join(map(repr, layers))}" if layers else ""
    result.add(Finding("structure", f"random op(s) in the inference function: "
                                    f"{', '.join(random)}{in_layers}", where,
                       f"a layer draws noise at inference time, and the converter refused "
                       f"it: {error}"))
    result.findings.extend(
        Finding(f.check, f.what, f"{graph.entry}: {f.where}", f.why)
        for f in checks.content_findings(graph, run.layer_names) if f.what.startswith("name "))
    return True
