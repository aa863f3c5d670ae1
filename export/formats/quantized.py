"""Quantized variants of the TFLite and ONNX formats, one registered format per mode:
``tflite:float16``, ``tflite:dynamic``, ``tflite:int8``, ``onnx:dynamic``, ``onnx:int8``.

Each is converted by :mod:`tfdropblock.export.quantize` from the float format's own input
(TFLite: the kit's SavedModel; ONNX: the kit's float ONNX model), for the model and for its
identity reference, and checked by :func:`~tfdropblock.export.quantize.verify_quantized`
(structure, validity, twin, quality, determinism; coverage for TFLite int8) instead of
parity. It is grouped with its float format (same child process, conversions shared).

Calibration (int8 only): the user's inputs (every row, as given) when there are any, else
generated batches (:data:`CALIBRATION_BATCHES` batches of :data:`CALIBRATION_ROWS` rows,
drawn from the distribution the verification's own generated inputs use, with other seeds):
the evaluation batches are never the generated calibration batches.

:func:`check_quantize` turns ``quantize=`` and ``formats=`` into the variant names: a mode
goes to every requested float format that supports it; a mode that no requested format
supports is an InputError (``float16`` with only ``onnx``).
"""

from __future__ import annotations

from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format, get, register
from tfdropblock.export.report import CheckResult

# Kept equal to tfdropblock.export.quantize.MODES (a test checks it); not imported from there,
# which imports this package.
MODES = {"tflite": ("float16", "dynamic", "int8"), "onnx": ("dynamic", "int8")}
ALL_MODES = ("float16", "dynamic", "int8")
CALIBRATION_BATCHES, CALIBRATION_ROWS, CALIBRATION_SEED = 8, 8, 1000


def check_quantize(quantize, formats, arg="quantize"):
    """The quantized variants (``"tflite:int8"``, ...) that ``quantize`` (None, a mode, a
    comma-separated string or an iterable of modes) asks of ``formats``; ``arg`` names the
    argument in the InputError."""
    if quantize is None:
        return ()
    items = [quantize] if isinstance(quantize, str) else quantize
    try:
        modes = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    except TypeError:
        modes = None
    if not modes or any(m not in ALL_MODES for m in modes):
        raise InputError(f"Invalid {arg}={quantize!r}: expected one or more of {ALL_MODES} "
                         f"(TFLite: {', '.join(MODES['tflite'])}; ONNX: "
                         f"{', '.join(MODES['onnx'])}).")
    bases = [f for f in formats if f in MODES]
    if not bases:
        raise InputError(f"Invalid {arg}={quantize!r}: quantization applies to tflite and onnx; "
                         f"formats are {tuple(formats)}.")
    out = []
    for mode in dict.fromkeys(modes):
        supported = [f for f in bases if mode in MODES[f]]
        if not supported:
            raise InputError(
                f"Invalid {arg}={mode!r} for formats {tuple(bases)}: {mode} applies to "
                + " and ".join(f for f in MODES if mode in MODES[f])
                + f" only; {', '.join(bases)} accepts {', '.join(MODES[bases[0]])}"
                + (" (and so on per format)" if len(bases) > 1 else "") + ".")
        out += [f"{f}:{mode}" for f in supported]
    return tuple(sorted(out, key=lambda n: (list(MODES).index(n.split(":")[0]),
                                            ALL_MODES.index(n.split(":")[1]))))


def calibration(session):
    """The int8 calibration batches of ``session`` (see the module docstring), made once."""
    cached = getattr(session, "_calibration", None)
    if cached is not None:
        return cached
    signature, settings = session.signature, session.settings
    if settings.inputs is not None:
        batches = [signature.name_inputs(settings.inputs)]
        how = "user inputs"
    else:
        distribution = getattr(session, "generated_distribution", None)
        kwargs = {"distribution": distribution} if distribution else {}
        batches = [signature.generate(CALIBRATION_ROWS, CALIBRATION_SEED + settings.seed + i,
                                      **kwargs) for i in range(CALIBRATION_BATCHES)]
        how = (f"generated: {CALIBRATION_BATCHES} batches of {CALIBRATION_ROWS}"
               + (f" ({distribution})" if distribution else ""))
    session._calibration, session.calibration_how = batches, how
    return batches


class QuantizedFormat(Format):
    """``base`` (``"tflite"`` or ``"onnx"``) quantized as ``mode``."""

    def __init__(self, base, mode):
        self.base, self.mode = base, mode
        self.name = f"{base}:{mode}"
        self.artifact = f"model.{mode}.{base}"
        self.converts_from = base  # grouped with the float format: shares its conversions
        self.refused_by = get(base).refused_by
        self.invalid_what = f"the {mode} quantized model does not load and run"

    def convert(self, session, reference):
        from tfdropblock._util import describe_error
        from tfdropblock._files import write_bytes
        from tfdropblock.export.quantize import quantize_onnx, quantize_tflite

        batches = calibration(session) if self.mode == "int8" else None
        try:
            if self.base == "tflite":
                saved = session.get("saved_model", reference)
                data = quantize_tflite(saved, self.mode, batches,
                                       int8_io=session.settings.int8_io)
                write_bytes(session.path(self.name, reference), data)
                return data
            proto = session.get("onnx", reference)
            quantized = quantize_onnx(proto, self.mode, batches)
        except (ConversionError, InputError):
            raise
        except Exception as e:
            raise ConversionError(f"{self.name} quantization failed: {describe_error(e)}",
                                  format=self.name) from e
        write_bytes(session.path(self.name, reference), quantized.SerializeToString())
        return quantized

    def read_graph(self, source, signature=None):
        return get(self.base).read_graph(source, signature)

    def is_random_op(self, op):
        return get(self.base).is_random_op(op)

    def sniff(self, path, head):
        return False  # an artifact on disk is inspected as its float format

    def check(self, ctx, session, result, say):
        from tfdropblock.export.quantize import verify_quantized

        session.generated_distribution = ctx.generated
        artifact = self.converted(ctx, session, result)
        if artifact is None:
            return
        size = len(artifact) if isinstance(artifact, bytes) else artifact.ByteSize()
        result.checks["conversion"] = CheckResult(True, {"bytes": size, "mode": self.mode})
        result.artifact = str(session.path(self.name))
        say("checking the quantized model against its identity twin and Keras")
        twin = session.get(self.name, reference=True)
        checked = verify_quantized(self.base, self.mode, artifact, twin, ctx.batches,
                                   ctx.expected, layer_names=ctx.layer_names)
        for name, check in checked.checks.items():
            if name in ("structure", "twin"):
                check.details["reference"] = session.reference_how
            result.checks[name] = check
        result.findings.extend(checked.findings)
        result.warnings.extend(checked.warnings)
        result.quantization = {"format": self.base, "mode": self.mode, "bytes": size,
                               "calibration": (getattr(session, "calibration_how", None)
                                               if self.mode == "int8" else None),
                               "int8_io": bool(session.settings.int8_io)
                               if self.base == "tflite" and self.mode == "int8" else None}


VARIANTS = tuple(register(QuantizedFormat(base, mode))
                 for base, modes in MODES.items() for mode in modes)
