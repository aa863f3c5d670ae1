"""Verification of one format: convert, then structure, validity, parity, determinism.

:func:`run_format` is the unit of work: :func:`tfdropblock.export.verify` runs it in-process,
the isolated runner in a child process per format.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tfdropblock.export import checks
from tfdropblock.export.errors import ConversionError, InputError, OutputError, write_failure
from tfdropblock.export.graphs import (is_random_op, onnx_graph, saved_model_graph, tflite_graph,
                                       traced_graph)
from tfdropblock.export.identity import dropblock_names
from tfdropblock.export.loading import one_line
from tfdropblock.export.onnx_export import ONNX_DATA, OrtRunner, blocked_by, onnx_io
from tfdropblock.export.report import ERROR, FAILED, CheckResult, Finding, FormatResult
from tfdropblock.export.savedmodel import ENDPOINT, SavedModelRunner
from tfdropblock.export.signature import named_outputs
from tfdropblock.export.tflite import TFLiteRunner


class Context:
    """What every format's verification needs: the model, its inputs and Keras's outputs."""

    def __init__(self, model, signature, batches, atol, rtol, source=None, expected=None,
                 generated=None):
        self.model = model
        self.signature = signature
        self.batches = batches
        self.atol, self.rtol = atol, rtol
        self.source = source
        self.expected = expected if expected is not None else [self.keras(b) for b in batches]
        self.generated = generated  # the distribution of generated inputs; None for the user's
        self.layer_names = dropblock_names(model)
        self.io = checks.keras_io(signature, batches, self.expected)

    def keras(self, named):
        return keras_outputs(self.model, self.signature, named)

    def model_info(self):
        return {"name": self.model.name, "source": self.source,
                "dropblock_layers": self.layer_names,
                "has_dropblock": bool(self.layer_names),
                "inputs": self.signature.describe(),
                "outputs": list(self.expected[0]),
                "batch_sizes": [len(next(iter(b.values()))) for b in self.batches],
                "generated_inputs": self.generated}


def keras_outputs(model, signature, named):
    """Keras's outputs (``training=False``) on named inputs, named as the artifacts' are."""
    outputs = model(signature.pack([named[n] for n in signature.names]), training=False)
    return {k: np.asarray(v) for k, v in named_outputs(outputs).items()}


def run_format(ctx, session, fmt, progress=None):
    """Convert and check one format; never raises for a converter or runtime failure.

    Raises OutputError when the filesystem refused a write (disk full, quota, file-size
    limit): that is no format's failure, and the other formats would meet it too.
    """
    say = progress or (lambda fmt, message: None)
    result = FormatResult(fmt)
    start = time.perf_counter()
    try:
        say(fmt, "converting")
        {"saved_model": _saved_model, "tflite": _tflite, "onnx": _onnx}[fmt](
            ctx, session, result, lambda message: say(fmt, message))
        result.settle()
    except (KeyboardInterrupt, SystemExit, OutputError):
        raise
    except Exception as e:
        reason = write_failure(e)
        if reason:
            raise OutputError(f"writing the {fmt} artifact failed: {reason} (disk full, "
                              "quota or file-size limit?)") from None
        _record_error(result, e)
    result.seconds = time.perf_counter() - start
    say(fmt, f"{result.status} in {result.seconds:.1f} s")
    return result


def _record_error(result, error):
    # A check that already failed decides the format, as it decides the run (README: a check
    # failure takes precedence over a format that could not be checked).
    failed = bool(result.findings) or any(c.ok is False for name, c in result.checks.items()
                                          if name != "conversion")
    result.status = FAILED if failed else ERROR
    if isinstance(error, ConversionError):
        result.error = str(error)
        result.checks.setdefault("conversion", CheckResult(False, {"error": str(error)}))
    elif isinstance(error, InputError):
        result.error = str(error)
    else:
        result.error = f"{type(error).__name__}: {one_line(error)}"


def _structure(ctx, result, graph, reference_graph, session):
    check, findings = checks.structure_check(graph, reference_graph, ctx.layer_names)
    check.details["reference"] = session.reference_how
    result.checks["structure"] = check
    result.findings.extend(findings)


def _parity_and_determinism(ctx, result, runners):
    """``runners``: {label: callable(named inputs) -> named outputs}."""
    runs, pairs = {}, {}
    for label, run in runners.items():
        runs[label] = [run(b) for b in ctx.batches]
        pairs[label] = (runs[label][-1], run(ctx.batches[-1]))
    check, findings, warnings = checks.parity_check(runs, ctx.expected, ctx.atol, ctx.rtol,
                                                    ctx.batches)
    result.checks["parity"] = check
    result.findings.extend(findings)
    result.warnings.extend(warnings)
    check, findings = checks.determinism_check(pairs)
    result.checks["determinism"] = check
    result.findings.extend(findings)


def _valid_io(ctx, result, actual, details):
    """Validity: the artifact's inputs and outputs are the Keras model's. Returns whether its
    inputs can be fed as the Keras model's (else parity cannot run)."""
    findings = checks.io_check(ctx.io, actual, result.format)
    result.checks["validity"] = CheckResult(not findings, {**details, "io": actual})
    result.findings.extend(findings)
    return {t["name"] for t in actual["inputs"]} == {t["name"] for t in ctx.io["inputs"]}


def _invalid(result, what, error):
    result.checks["validity"] = CheckResult(False, {"error": f"{type(error).__name__}: "
                                                             f"{one_line(error)}"})
    result.add(Finding("validity", what, result.format, f"{type(error).__name__}: "
                                                        f"{one_line(error)}"))


def _saved_model(ctx, session, result, say):
    path = session.saved_model()
    result.artifact = str(path)
    result.checks["conversion"] = CheckResult(True)
    say("checking structure")
    _structure(ctx, result, saved_model_graph(path, ENDPOINT),
               saved_model_graph(session.saved_model(reference=True), ENDPOINT), session)
    try:
        runner = SavedModelRunner(path)
    except Exception as e:
        _invalid(result, "the SavedModel does not reload", e)
        return
    if not _valid_io(ctx, result, runner.io(), {"reloaded": True}):
        return
    say("checking parity")
    _parity_and_determinism(ctx, result, {"saved_model (reloaded)": runner})


def _leak_refused(ctx, result, error, where):
    """A converter failed: if the traced inference function holds random ops, that is the leak
    being caught (a check failure), not a tool failure. Returns True when it classified it."""
    try:
        graph = traced_graph(ctx.model, ctx.signature)
    except Exception:
        return False
    random = graph.random_ops()
    if not random:
        return False
    result.checks["conversion"] = CheckResult(False, {"error": str(error)})
    result.checks["structure"] = CheckResult(False, {"entry": graph.entry,
                                                     "random_ops": random})
    result.add(Finding("structure", f"random op(s) in the inference function: "
                                    f"{', '.join(random)}", where,
                       f"a layer draws noise at inference time, and the converter refused "
                       f"it: {error}"))
    result.findings.extend(
        Finding(f.check, f.what, f"{graph.entry}: {f.where}", f.why)
        for f in checks.content_findings(graph, ctx.layer_names) if f.what.startswith("name "))
    return True


def _tflite(ctx, session, result, say):
    try:
        content = session.tflite()
    except ConversionError as e:
        if _leak_refused(ctx, result, e, "TFLite converter (builtin ops only)"):
            return
        raise
    result.artifact = str(session.path("tflite"))
    result.checks["conversion"] = CheckResult(True, {"bytes": len(content)})
    say("checking structure")
    _structure(ctx, result, tflite_graph(content), tflite_graph(session.tflite(reference=True)),
               session)
    try:
        runner = TFLiteRunner(content)
        io = runner.io()
        feedable = {t["name"] for t in io["inputs"]} == {t["name"] for t in ctx.io["inputs"]}
        if feedable:
            runner(ctx.batches[0])
    except Exception as e:
        _invalid(result, "the model does not load and run in the LiteRT interpreter "
                         "(builtin ops, no default delegate)", e)
        return
    if not _valid_io(ctx, result, io, {"interpreter": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}):
        return
    say("checking parity")
    _parity_and_determinism(ctx, result, {"litert": runner})


def _onnx(ctx, session, result, say):
    import onnx

    try:
        proto = session.onnx()
    except ConversionError as e:
        if _leak_refused(ctx, result, e, "tf2onnx"):
            return
        raise
    graph = onnx_graph(proto)
    left = graph.unsupported_ops
    result.checks["conversion"] = CheckResult(not left, {"opset": session.opset,
                                                         "unconverted_ops": left})
    if not left:
        result.artifact = str(session.path("onnx"))
    # An op tf2onnx could not lower is the converter's limit, not a leak: it is the conversion
    # check's, and the structure check still looks for what DropBlock could have left (random
    # ops, extra ops, scoped names), so a real leak is still a failure. A random op left
    # unconverted is both, and stays a structure finding.
    blocked = [op for op in left if not is_random_op("onnx", op)]
    if blocked:
        reason = blocked_by(proto, blocked)
        result.checks["conversion"].details["blocked_by"] = reason
        graph = dataclasses.replace(graph, unsupported_ops=[op for op in left
                                                            if op not in blocked])
    say("checking structure")
    _structure(ctx, result, graph, onnx_graph(session.onnx(reference=True)), session)
    if blocked and not any(is_random_op("onnx", op) for op in left):
        if result.checks["structure"].ok:
            # Equal to a reference that has the same unconverted ops proves nothing about an
            # invalid model: not checked, rather than passed.
            result.checks["structure"].ok = None
            result.checks["structure"].details["not_checked"] = reason
        raise ConversionError(reason, format="onnx", unsupported_ops=blocked)
    path = session.path("onnx")
    external = (path.parent / ONNX_DATA).exists()
    io = onnx_io(proto)
    try:
        # What was written is what is checked: by path, which is also the only way the checker
        # and ORT read a model whose weights are in external data.
        source = path if path.exists() else proto.SerializeToString()
        onnx.checker.check_model(str(path) if path.exists() else proto, full_check=True)
        runners = {"onnxruntime (ORT_DISABLE_ALL)": OrtRunner(source, "disable_all"),
                   "onnxruntime (default optimisations)": OrtRunner(source, "default")}
    except Exception as e:
        _invalid(result, "onnx.checker (full_check) or ONNX Runtime rejects the model", e)
        return
    if not _valid_io(ctx, result, io, {"checker": "full_check", "external_data": external}):
        return
    say("checking parity")
    _parity_and_determinism(ctx, result, runners)
