"""Quantized variants of a format: one registered format per mode (``tflite:int8``, ...).

A format offers quantized modes by listing them in :attr:`Format.modes` and implementing the
quantized hooks (:meth:`Format.quantize`, :meth:`Format.quantized_runtimes`,
:meth:`Format.twin_comparison`, optionally :meth:`Format.quantized_checks` and
:meth:`Format.quantization_info`); :func:`register_variants` then registers one
:class:`QuantizedFormat` per mode. The formats' ``modes`` are the one table of modes.

A variant is converted from its float format's own input, for the model and for its identity
reference, and goes through the same check sequence as every format
(:meth:`Format.check`), with the twin and quality comparisons in place of parity. It is
grouped with its float format (same child process, conversions shared).

Calibration (int8 only) is the run's: :func:`tfdropblock.export.run.calibration.of_run`.
"""

from __future__ import annotations

import copy
import types

from tfdropblock.export.checks import rules as checks
from tfdropblock.export.run.calibration import of_run as run_calibration
from tfdropblock.export.core.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format
from tfdropblock.export.run.registry import get, names, register
from tfdropblock.export.checks.metrics import quality_check, thresholds_for
from tfdropblock.export.core.results import FormatResult


def modes():
    """{format: its quantized modes} of every registered format that has any."""
    return {name: get(name).modes for name in names() if get(name).modes
            and get(name).mode is None}


def all_modes():
    """Every mode some format offers, in the order the formats list them."""
    return tuple(dict.fromkeys(m for offered in modes().values() for m in offered))


def check_mode(fmt, mode):
    """``mode`` if format ``fmt`` offers it; InputError naming the accepted values otherwise."""
    table = modes()
    if fmt not in table:
        raise InputError(f"Invalid format={fmt!r}: expected one of {tuple(table)}.")
    if mode not in table[fmt]:
        raise InputError(f"Invalid mode={mode!r} for {fmt}: expected one of {table[fmt]}.")
    return mode


def register_variants(fmt):
    """Register ``fmt``'s quantized variant of each of its :attr:`~Format.modes`."""
    return tuple(register(QuantizedFormat(fmt.name, mode)) for mode in fmt.modes)


def check_quantize(quantize, formats, arg="quantize"):
    """The quantized variants (``"tflite:int8"``, ...) that ``quantize`` (None, a mode, a
    comma-separated string or an iterable of modes) asks of ``formats``; ``arg`` names the
    argument in the InputError."""
    if quantize is None:
        return ()
    items = [quantize] if isinstance(quantize, str) else quantize
    try:
        asked = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    except TypeError:
        asked = None
    table, every = modes(), all_modes()
    if not asked or any(m not in every for m in asked):
        offered = "; ".join(f"{get(f).title or f}: {', '.join(m)}" for f, m in table.items())
        raise InputError(f"Invalid {arg}={quantize!r}: expected one or more of {every} "
                         f"({offered}).")
    bases = [f for f in formats if f in table]
    if not bases:
        raise InputError(f"Invalid {arg}={quantize!r}: quantization applies to "
                         f"{' and '.join(table)}; formats are {tuple(formats)}.")
    out = []
    for mode in dict.fromkeys(asked):
        supported = [f for f in bases if mode in table[f]]
        if not supported:
            raise InputError(
                f"Invalid {arg}={mode!r} for formats {tuple(bases)}: {mode} applies to "
                + " and ".join(f for f in table if mode in table[f])
                + f" only; {', '.join(bases)} accepts {', '.join(table[bases[0]])}"
                + (" (and so on per format)" if len(bases) > 1 else "") + ".")
        out += [f"{f}:{mode}" for f in supported]
    return tuple(sorted(out, key=lambda n: (list(table).index(n.split(":")[0]),
                                            every.index(n.split(":")[1]))))


class QuantizedFormat(Format):
    """Format ``base`` quantized as ``mode``: the float format's hooks do the work."""

    comparing = "checking the quantized model against its identity twin and Keras"
    thresholds = None  # the quality floors (a metrics.Thresholds); None: the mode's

    def __init__(self, base, mode):
        float_format = get(base)
        self.base, self.mode = base, mode
        self.name = f"{base}:{mode}"
        self.title = f"{float_format.title or base} {mode}"
        self.artifact = f"model.{mode}.{base}"
        self.converts_from = base  # grouped with the float format: shares its conversions
        self.refused_by = float_format.refused_by
        self.invalid_what = f"the {mode} quantized model does not load and run"

    @property
    def float_format(self):
        return get(self.base)

    def convert(self, run, reference):
        from tfdropblock._util import describe_error

        batches = run_calibration(run)[0] if self.mode == "int8" else None
        try:
            return self.float_format.quantize(run, self.mode, reference, batches)
        except (ConversionError, InputError):
            raise
        except Exception as e:
            raise ConversionError(f"{self.name} quantization failed: "
                                  f"{describe_error(e)}") from e

    def read_graph(self, source, signature=None):
        return self.float_format.read_graph(source, signature)

    def is_random_op(self, op):
        return self.float_format.is_random_op(op)

    def conversion(self, artifact, graph, run):
        return {"bytes": _size(artifact), "mode": self.mode}, []

    def runtimes(self, run, artifact):
        runners = self.float_format.quantized_runtimes(artifact)
        for runner in runners.values():
            runner(run.batches[0])  # loads is not enough: it must run
        return None, {"runtimes": sorted(runners)}, runners

    def compare(self, run, artifact, runs, result):
        twin = run.get(self.name, reference=True)
        twin_runs = {label: [runner(b) for b in run.batches]
                     for label, runner in self.float_format.quantized_runtimes(twin).items()}
        comparison = self.float_format.twin_comparison(artifact, twin)
        check, findings = checks.twin_check(comparison, runs, twin_runs, self.base)
        check.details["reference"] = run.reference_how
        result.checks["twin"] = check
        result.findings.extend(findings)
        limits = self.thresholds or thresholds_for(self.mode)
        check, findings, warnings = quality_check(runs, run.expected, limits, run.batches)
        result.checks["quality"] = check
        result.findings.extend(findings)
        result.warnings.extend(warnings)

    def finish(self, run, artifact, result):
        extra, warnings = self.float_format.quantized_checks(self.mode, artifact)
        result.checks.update(extra)
        result.warnings.extend(warnings)
        result.quantization = {
            "format": self.base, "mode": self.mode, "bytes": _size(artifact),
            "calibration": run_calibration(run)[1] if self.mode == "int8" else None,
            "int8_io": None, **self.float_format.quantization_info(run, self.mode)}


def _size(artifact):
    return len(artifact) if isinstance(artifact, bytes) else artifact.ByteSize()


def verify_quantized(fmt, mode, artifact, twin, inputs, expected, *, layer_names=None,
                     thresholds=None):
    """The check sequence of variant ``fmt:mode`` (:meth:`Format.check`) on an artifact made
    elsewhere, against its identity twin and Keras's outputs.

    Args:
        fmt, mode: the float format and the mode both were quantized with (the mode picks the
            default thresholds).
        artifact: the model quantized (as the format's quantizer returns it, or a path);
            ``twin``: the same model with every DropBlock an identity, quantized the same way
            with the same calibration batches.
        inputs: batches ``{input name: array}`` to evaluate on (not the calibration batches).
        expected: Keras's float outputs (``training=False``) on ``inputs``, named as the
            artifacts' outputs.
        layer_names: the DropBlock layers' names (:func:`~.identity.dropblock_names`), for the
            name-scope check; None looks for Keras's default names.
        thresholds: a :class:`~.metrics.Thresholds`; default: the mode's.
    Returns:
        :class:`~tfdropblock.export.core.results.FormatResult`, settled. Raises nothing for a failed
        check; InputError if an artifact cannot be parsed at all.
    """
    check_mode(fmt, mode)
    if len(inputs) != len(expected) or not inputs:
        raise InputError(f"Invalid inputs/expected: {len(inputs)} input batches and "
                         f"{len(expected)} batches of Keras outputs; expected the same number, "
                         "at least one.")
    variant = get(f"{fmt}:{mode}")
    given = _Given(artifact, twin, list(inputs), list(expected), layer_names)
    variant = copy.copy(variant)  # with its own floors, for this call only
    variant.thresholds = thresholds_for(thresholds or mode)
    result = FormatResult(variant.name)
    variant.check(given, result, lambda message: None)
    return result.settle()


class _Given:
    """The slice of a :class:`~tfdropblock.export.run.run.Run` that :meth:`Format.check` reads,
    over two artifacts already made and Keras's outputs already computed."""

    reference_how = "given"
    calibration = (None, "given")
    io = None  # the runtimes feed and return what Keras does
    model = signature = None
    keras_exporter = False
    training_mode_leaks = label_batches = None

    def __init__(self, artifact, twin, batches, expected, layer_names):
        self._artifacts = {False: artifact, True: twin}
        self.batches, self.expected = batches, expected
        self.layer_names = layer_names
        self.settings = types.SimpleNamespace(option=lambda name: None)

    def get(self, name, reference=False):
        return self._artifacts[reference]

    def path(self, name, reference=False):
        return None

    def function(self, reference=False):
        raise NotImplementedError("the artifacts were made elsewhere: nothing is traced")
