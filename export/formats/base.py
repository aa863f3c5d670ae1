"""What a format is, and the verification every format goes through.

A :class:`Format` says everything the kit needs to know about one artifact format: its file
name and companion files, how a :class:`~tfdropblock.export.run.run.Run` converts to it (and from
which other format's artifact), how its graph is read from the raw artifact, which of its ops
are random, how files of it are recognised, which runtimes load and run it, and, for a format
with quantized modes, how it quantizes. :meth:`Format.check` is the one check sequence, the
same for every format, float or quantized. Formats register in
:mod:`tfdropblock.export.run.registry`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock.export.checks import rules as checks
from tfdropblock.export.core.errors import ConversionError, InputError
from tfdropblock.export.formats.keras_exports import keras_export, renamed
from tfdropblock.export.model.loading import check_regular_file
from tfdropblock.export.core.results import CheckResult, Finding


def read_bytes(path_or_bytes, kind):
    """The bytes of an in-memory artifact, or of the regular file at a path; InputError for a
    directory, a non-regular file, a missing, unreadable or empty one."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    path = Path(path_or_bytes)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {kind} file.")
    check_regular_file(path, f"{kind} file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if not data:
        raise InputError(f"{path}: empty file, expected {kind}.")
    return data


class Format:
    """One artifact format. Subclasses set the class attributes and implement the methods that
    raise NotImplementedError; the others have defaults that suit a plain format."""

    name: str = ""
    title: str = ""             # how messages name it ("TFLite"); default: its name
    artifact: str = ""          # file (or directory) name the artifact is written as
    companions: tuple = ()      # files that belong to the artifact when present (written first)
    converts_from: str | None = None  # the format whose artifact this one is converted from
    # Quantized modes: each is the registered variant "name:mode" (see formats.quantized),
    # made by the quantized hooks below.
    modes: tuple = ()
    mode: str | None = None  # set on a quantized variant: the mode it is
    comparing: str = "checking parity"  # the progress line of the comparison with Keras
    options: tuple = ()  # its Option group: what its conversion can be asked
    # Label of a converter that refuses a random op: a conversion failure is then a caught
    # leak when the traced inference function holds random ops. None: never classified so.
    refused_by: str | None = None
    invalid_what: str = "the artifact does not load"  # the validity finding when runtimes fail
    # Keras's own exporter of this format (``model.export(format=...)``), used with
    # exporter="keras"; None: Keras has none.
    keras_format: str | None = None
    # Whether that exporter calls ``model(x, training=False)``, which a training-mode leak
    # (see :mod:`..leaks`) does not reach; Keras 3.15's SavedModel and ONNX exporters do not.
    keras_calls_inference: bool = False

    # -- what each format provides -------------------------------------------------------------

    def convert(self, run, reference):
        """Convert ``run.model`` (the identity reference when ``reference``; the run
        has already swapped it in) and write the artifact to ``run.path(name,
        reference)``. Returns the artifact as the other methods take it (a path, bytes, a
        proto). Raises ConversionError for a converter failure."""
        raise NotImplementedError

    def read_graph(self, source, signature=None):
        """The :class:`~tfdropblock.export.model.graphs.Graph` of a raw artifact: a path, or what
        :meth:`convert` returned. InputError when it is not one of this format."""
        raise NotImplementedError

    def is_random_op(self, op):
        """Whether ``op`` (an op type as :meth:`read_graph` counts it) draws random numbers."""
        raise NotImplementedError

    def sniff(self, path, head):
        """Whether ``path`` is an artifact of this format: called with ``head`` empty (decide by
        name, or directory), then with the file's first 8 bytes."""
        return False

    def runtimes(self, run, artifact):
        """Load the artifact: ``(io, details, {label: runner})``. ``io`` is its inputs and
        outputs (``{"inputs": [...], "outputs": [...]}`` of name, dtype, shape), ``details`` the
        validity check's details, each runner a callable from named inputs to named outputs.
        Any exception is the validity finding :attr:`invalid_what`."""
        raise NotImplementedError

    def artifact_graph(self, artifact):
        """The graph the structure check compares: what the inference entry point reaches."""
        return self.read_graph(artifact)

    def conversion(self, artifact, graph, run):
        """``(details, blocked)``: the conversion check's details, and the ops the converter
        left that make the artifact invalid (a converter limit, not a leak). A format whose
        graph has ``unsupported_ops`` fails the conversion check."""
        return {}, []

    def blocked_by(self, artifact, ops):
        """Why the converter left ``ops`` unconverted, one sentence."""
        return f"the {self.name} converter cannot convert {', '.join(ops)}"

    def keras_convert(self, run, reference):
        """As :meth:`convert`, through Keras's ``model.export`` (exporter="keras")."""
        path = run.path(self.name, reference)
        keras_export(run.model, self.keras_format, path, **self.keras_options(run))
        return self.keras_artifact(path)

    def keras_options(self, run):
        """The keywords of this format's options that Keras's exporter takes."""
        return {}

    def keras_artifact(self, path):
        """What Keras wrote at ``path``, as :meth:`convert` returns the kit's artifact."""
        return path

    def keras_runtimes(self, run, artifact):
        """As :meth:`runtimes` for an artifact Keras made: its tensors fed and read under the
        kit's names (:func:`..keras_exports.renamed`), and run once, since Keras reports
        success for files a runtime cannot run."""
        io, details, runners = self.runtimes(run, artifact)
        if io is not None:
            io, runners, names = renamed(io, runners, run.signature.names, list(run.expected[0]))
            if names:
                details = {**details, "renamed": names}
        if {t["name"] for t in (io or run.io)["inputs"]} == {t["name"] for t in run.io["inputs"]}:
            next(iter(runners.values()))(run.batches[0])
        return io, details, runners

    def exportable(self, run, artifact):
        """For ``export``: raise ConversionError unless the artifact can be shipped."""

    def compare(self, run, artifact, runs, result):
        """Judge ``runs`` ({runtime label: [named outputs per batch of ``run.batches``]})
        against Keras's outputs into ``result``: parity, for a float format."""
        check, findings, warnings = checks.parity_check(runs, run.expected, run.atol, run.rtol,
                                                        run.batches, run.compared_with)
        result.checks["parity"] = check
        result.findings.extend(findings)
        result.warnings.extend(warnings)
        if check.ok is False or run.settings.locate:
            check.details.update(self.located(run, artifact, check))

    def located(self, run, artifact, check):
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
            probe = self.probe(run, artifact, runtime)
            if probe is None:
                return locate.unavailable(f"the {self.name} format cannot expose its "
                                          "intermediate tensors")
            return locate.locate(run, probe)
        except Exception as e:  # locating explains a parity result, it never changes it
            return locate.unavailable(f"locating failed: {describe_error(e)}")

    def probe(self, run, artifact, runtime):
        """A :class:`~tfdropblock.export.checks.locate.Probe` of the artifact's intermediate tensors
        run as ``runtime`` (a label of :meth:`runtimes`) runs it, for locating the first
        divergent layer; None when the format cannot expose them."""
        return None

    def finish(self, run, artifact, result):
        """Anything the format checks or records after determinism (nothing by default)."""

    # -- quantized variants: what a format with ``modes`` provides ------------------------------

    def quantize(self, run, mode, reference, calibration):
        """This format's artifact of ``run``'s model (its identity reference when
        ``reference``) quantized as ``mode`` (int8: on the ``calibration`` batches), written
        to ``run.path(f"{name}:{mode}", reference)``; returned as the hooks below take it."""
        raise NotImplementedError

    def quantized_runtimes(self, artifact):
        """{label: runner} of a quantized artifact: float inputs in, float outputs out."""
        raise NotImplementedError

    def twin_comparison(self, artifact, twin):
        """A :class:`~tfdropblock.export.checks.rules.TwinComparison` of two quantized artifacts."""
        raise NotImplementedError

    def quantized_checks(self, mode, artifact):
        """``({name: CheckResult}, [warnings])`` this format adds for ``mode``."""
        return {}, []

    def quantization_info(self, run, mode):
        """What the report's ``quantization`` says of ``mode`` beyond format, mode, bytes and
        calibration."""
        return {}

    # -- the verification, the same for every format -------------------------------------------

    def converted(self, run, result):
        """The artifact, or None when its converter refused a DropBlock leak (then recorded in
        ``result`` as a structure failure); other conversion errors propagate."""
        try:
            return run.get(self.name)
        except ConversionError as e:
            refused_by = (f"Keras's model.export(format={self.keras_format!r})"
                          if run.keras_exporter else self.refused_by)
            if refused_by and leak_refused(run, result, e, refused_by):
                return None
            raise

    def check(self, run, result, say):
        """The one check sequence, into ``result``: convert, then conversion, structure,
        validity, the comparison with Keras (:meth:`compare`), accuracy (when the run has
        labels: every labelled row, batch by batch, through the first runtime), determinism,
        and what the format adds (:meth:`finish`). With Keras's exporter, first the training
        mode the model runs in under it (:func:`..checks.training_mode_check`)."""
        keras = run.keras_exporter
        if keras:
            check, findings = checks.training_mode_check(
                run.training_mode_leaks, self.keras_calls_inference, self.name)
            result.checks["training_mode"] = check
            result.findings.extend(findings)
        artifact = self.converted(run, result)
        if artifact is None:
            return
        graph = self.artifact_graph(artifact)
        left = list(graph.unsupported_ops)
        details, blocked = self.conversion(artifact, graph, run)
        result.checks["conversion"] = CheckResult(not left, details)
        if not left and run.path(self.name) is not None:
            result.artifact = str(run.path(self.name))
        # An op a converter could not lower is its limit, not a leak: it is the conversion
        # check's, and the structure check still looks for what DropBlock could have left
        # (random ops, extra ops, scoped names), so a real leak is still a failure. A random op
        # left unconverted is both, and stays a structure finding.
        reason = None
        if blocked:
            reason = self.blocked_by(artifact, blocked)
            details["blocked_by"] = reason
            graph = dataclasses.replace(graph, unsupported_ops=[op for op in left
                                                                if op not in blocked])
        say("checking structure")
        reference = self.artifact_graph(run.get(self.name, reference=True))
        check, findings = checks.structure_check(graph, reference, run.layer_names)
        check.details["reference"] = run.reference_how
        result.checks["structure"] = check
        result.findings.extend(findings)
        if blocked and not any(self.is_random_op(op) for op in left):
            if check.ok:
                # Equal to a reference that has the same unconverted ops proves nothing about
                # an invalid model: not checked, rather than passed.
                check.ok = None
                check.details["not_checked"] = reason
            raise ConversionError(reason)
        try:
            io, details, runners = (self.keras_runtimes if keras else self.runtimes)(run, artifact)
        except Exception as e:
            result.checks["validity"] = CheckResult(False, {"error": describe_error(e)})
            result.add(Finding("validity", self.invalid_what, self.name, describe_error(e)))
            return
        if io is None:  # the runtimes feed and return what Keras does: no I/O to compare
            result.checks["validity"] = CheckResult(True, details)
        else:
            findings = checks.io_check(run.io, io, self.name)
            result.checks["validity"] = CheckResult(not findings, {**details, "io": io})
            result.findings.extend(findings)
            if {t["name"] for t in io["inputs"]} != {t["name"] for t in run.io["inputs"]}:
                return  # its inputs cannot be fed as the Keras model's: nothing can run
        say(self.comparing)
        runs, pairs = {}, {}
        for label, runner in runners.items():
            runs[label] = [runner(b) for b in run.batches]
            pairs[label] = (runs[label][-1], runner(run.batches[-1]))
        self.compare(run, artifact, runs, result)
        if run.label_batches is not None:
            label, runner = next(iter(runners.items()))
            say(f"top-1 on {len(run.settings.labels)} labelled rows ({label})")
            check, findings = checks.accuracy_check(
                run.top_classes(runner), run.keras_top, run.settings.labels,
                run.settings.accuracy_drop(self.mode is not None), label)
            result.checks["accuracy"] = check
            result.findings.extend(findings)
        check, findings = checks.determinism_check(pairs)
        result.checks["determinism"] = check
        result.findings.extend(findings)
        self.finish(run, artifact, result)


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
