"""Quantized variants of a format: one registered format per mode (``tflite:int8``, ...).

A format offers quantized modes through a :class:`Quantizer`, its own small object: the modes,
how to quantize, the runtimes of a quantized artifact, the twin comparison and, optionally,
checks and report entries of its own. :func:`register_quantizer` registers one
:class:`QuantizedFormat` per mode; the registered variants are the one table of modes
(:func:`modes`).

A variant is converted from its float format's own input, for the model and for its identity
reference, and goes through the same check sequence as every format
(:mod:`tfdropblock.export.pipeline.sequence`), with the twin and quality comparisons in place
of parity. It is grouped with its float format (same child process, conversions shared).

Calibration (int8 only) is the run's: :func:`tfdropblock.export.run.calibration.of_run`.
"""

from __future__ import annotations

from tfdropblock.export.run.calibration import of_run as run_calibration
from tfdropblock.export.core.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format
from tfdropblock.export.run.registry import get, names, register


class Quantizer:
    """What a format with quantized modes provides, registered with :func:`register_quantizer`.
    Subclasses set :attr:`modes` and implement the three methods that raise
    NotImplementedError."""

    modes: tuple = ()  # the modes offered, in the order the CLI and reports list them

    def quantize(self, run, mode, reference, calibration):
        """The format's artifact of ``run``'s model (its identity reference when
        ``reference``) quantized as ``mode`` (int8: on the ``calibration`` batches), written
        to ``run.path(f"{name}:{mode}", reference)``; returned as the methods below take it."""
        raise NotImplementedError

    def runtimes(self, artifact):
        """{label: runner} of a quantized artifact: float inputs in, float outputs out."""
        raise NotImplementedError

    def twin_comparison(self, artifact, twin):
        """A :class:`~tfdropblock.export.checks.rules.TwinComparison` of two quantized
        artifacts."""
        raise NotImplementedError

    def checks(self, mode, artifact):
        """``({name: CheckResult}, [warnings])`` this format adds for ``mode``."""
        return {}, []

    def info(self, run, mode):
        """What the report's ``quantization`` says of ``mode`` beyond format, mode, bytes and
        calibration."""
        return {}


def modes():
    """{format: its quantized modes} of every registered format that has any, from the
    registered variants."""
    table = {}
    for name in names():
        variant = get(name)
        if variant.mode is not None:
            table[variant.base] = (*table.get(variant.base, ()), variant.mode)
    return table


def quantizer(fmt):
    """The :class:`Quantizer` registered for float format ``fmt``; InputError when it has none."""
    for name in names():
        variant = get(name)
        if variant.mode is not None and variant.base == fmt:
            return variant.quantizer
    raise InputError(f"Invalid format={fmt!r}: expected one of {tuple(modes())}.")


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


def register_quantizer(fmt, quantizer):
    """Register float format ``fmt``'s variant of each of ``quantizer``'s modes."""
    return tuple(register(QuantizedFormat(fmt.name, mode, quantizer))
                 for mode in quantizer.modes)


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
    """Format ``base`` quantized as ``mode`` by its :class:`Quantizer`; reads as ``base`` does."""

    def __init__(self, base, mode, quantizer):
        float_format = get(base)
        self.base, self.mode, self.quantizer = base, mode, quantizer
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
            return self.quantizer.quantize(run, self.mode, reference, batches)
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
        return {"bytes": self.size(artifact), "mode": self.mode}, []

    def runtimes(self, run, artifact):
        runners = self.quantizer.runtimes(artifact)
        for runner in runners.values():
            runner(run.batches[0])  # loads is not enough: it must run
        return None, {"runtimes": sorted(runners)}, runners

    @staticmethod
    def size(artifact):
        """The quantized artifact's size in bytes (flatbuffer bytes or a proto)."""
        return len(artifact) if isinstance(artifact, bytes) else artifact.ByteSize()
