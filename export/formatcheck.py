"""Verification of one format: convert, then structure, validity, parity, determinism.

:func:`run_format` is the unit of work: :func:`tfdropblock.export.verify` runs it in-process,
the isolated runner in a child process per format group. What is checked, in which order, is
:meth:`tfdropblock.export.formats.Format.check`.
"""

from __future__ import annotations

import time

import numpy as np

from tfdropblock._util import describe_error
from tfdropblock.export import checks
from tfdropblock.export import formats as registry
from tfdropblock.export.errors import ConversionError, InputError, OutputError, write_failure
from tfdropblock.export.identity import dropblock_names
from tfdropblock.export.report import ERROR, FAILED, CheckResult, FormatResult, Report
from tfdropblock.export.signature import Signature, named_outputs

NO_DROPBLOCK_NOTE = ("the model has no DropBlock layer: its structure is compared with itself; "
                     "the random-op, Flex, name, parity and determinism checks still apply")


class Context:
    """What every format's verification needs: the model, its inputs and Keras's outputs."""

    def __init__(self, model, signature, batches, atol, rtol, source=None, expected=None,
                 generated=None, thresholds=None):
        self.model = model
        self.signature = signature
        self.batches = batches
        self.atol, self.rtol = atol, rtol
        self.source = source
        self.expected = expected if expected is not None else [self.keras(b) for b in batches]
        self.generated = generated  # the distribution of generated inputs; None for the user's
        self.thresholds = thresholds  # quantized quality floors; None: each mode's defaults
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


def make_context(model, settings, source=None):
    """The :class:`Context` of ``model`` under ``settings`` (a :class:`Settings`)."""
    signature = Signature.from_model(model, settings.input_signature, settings.inputs)
    atol, rtol, seed = settings.atol, settings.rtol, settings.seed
    if settings.inputs is not None:
        batches = signature.batches(settings.inputs, seed)
        return Context(model, signature, batches, atol, rtol, source)

    # Generated inputs must exercise the model, or parity compares nothing: the first
    # distribution on which no output's comparison is degenerate is used.
    def judge(batches):
        expected = [keras_outputs(model, signature, b) for b in batches]
        return len(checks.degenerate_outputs(batches, expected, atol, rtol)), expected

    batches, distribution, expected = signature.generated_batches(seed, judge)
    return Context(model, signature, batches, atol, rtol, source, expected=expected,
                   generated=distribution)


def build_report(model_info, results, settings, **extra):
    """The :class:`Report` of per-format ``results``; ``extra`` goes into its settings."""
    notes = [] if model_info.get("has_dropblock", True) else [NO_DROPBLOCK_NOTE]
    return Report(model=model_info, formats=results, settings={**settings.report(), **extra},
                  notes=notes)


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
        registry.get(fmt).check(ctx, session, result, lambda message: say(fmt, message))
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
        result.error = describe_error(error)
