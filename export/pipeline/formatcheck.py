"""Verification of one format: convert, then structure, validity, parity, determinism.

:func:`run_format` is the unit of work and :func:`check_each` the one loop over it:
:func:`tfdropblock.export.verify` runs that loop in-process, the isolated runner in a child
process per format group. What is checked, in which order, is
:func:`tfdropblock.export.pipeline.sequence.check_format`.
"""

from __future__ import annotations

import time

from tfdropblock._util import describe_error
from tfdropblock.export import formats as registry
from tfdropblock.export.core.errors import ConversionError, InputError, OutputError, refused_write
from tfdropblock.export.core.results import ERROR, FAILED, CheckResult, FormatResult
from tfdropblock.export.pipeline.sequence import check_format

def check_each(run, formats, progress=None):
    """``(format, FormatResult)`` of each of ``formats`` in turn, converted and checked on
    ``run``: the loop of an in-process verification and of each isolated child."""
    for fmt in formats:
        yield fmt, run_format(run, fmt, progress)


def run_format(run, fmt, progress=None):
    """Convert and check one format; never raises for a converter or runtime failure.

    Raises OutputError when the filesystem refused a write (disk full, quota, file-size
    limit): that is no format's failure, and the other formats would meet it too.
    """
    say = progress or (lambda fmt, message: None)
    result = FormatResult(fmt, exporter=run.settings.exporter)
    start = time.perf_counter()
    try:
        say(fmt, "converting")
        check_format(registry.get(fmt), run, result, lambda message: say(fmt, message))
        result.settle()
    except (KeyboardInterrupt, SystemExit, OutputError):
        raise
    except Exception as e:
        refused = refused_write(fmt, e)
        if refused:
            raise refused from None
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
