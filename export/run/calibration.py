"""Calibration batches for int8 quantization: the ones a user gives, and the checks every
quantizer runs on them."""

from __future__ import annotations

import numpy as np

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.model.signature import name_mismatch


def check_calibration(calibration, inputs, mode="int8"):
    """``calibration`` as a list of batches ``{input name: array}``, checked against ``inputs``
    (``{name: numpy dtype}`` of the artifact) and cast to their dtypes.

    Accepts one batch (a dict) or a non-empty list of them; each batch has every input, a
    batch axis of at least 1 row, the same rows for every input, and finite floats.
    """
    if mode != "int8":
        return None
    if calibration is None:
        raise InputError("Invalid calibration=None: mode='int8' needs calibration batches "
                         "(a list of {input name: array}) to measure activation ranges.")
    batches = [calibration] if isinstance(calibration, dict) else calibration
    try:
        batches = list(batches)
    except TypeError:
        raise InputError(f"Invalid calibration of type {type(calibration).__name__}: expected "
                         "a dict {input name: array} or a list of them.") from None
    if not batches:
        raise InputError("Invalid calibration: no batch; expected at least one "
                         "{input name: array}.")
    checked = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict):
            raise InputError(f"Invalid calibration[{i}] of type {type(batch).__name__}: "
                             f"expected a dict {{input name: array}} with keys {sorted(inputs)}.")
        mismatch = name_mismatch(batch, sorted(inputs), whose="the artifact's")
        if mismatch:
            raise InputError(f"Invalid calibration[{i}]: inputs {mismatch}.")
        named, rows = {}, set()
        for name, dtype in inputs.items():
            array = np.asarray(batch[name])
            if array.ndim == 0 or len(array) == 0:
                raise InputError(f"Invalid calibration[{i}][{name!r}]: shape {array.shape}; "
                                 "expected a batch axis with at least one row.")
            try:
                array = array.astype(dtype)
            except (TypeError, ValueError):
                raise InputError(f"Invalid calibration[{i}][{name!r}]: dtype {array.dtype} "
                                 f"cannot be cast to the input's {np.dtype(dtype).name}.") from None
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                raise InputError(f"Invalid calibration[{i}][{name!r}]: NaN or infinite values "
                                 "would make every activation range meaningless.")
            rows.add(len(array))
            named[name] = array
        if len(rows) != 1:
            raise InputError(f"Invalid calibration[{i}]: inputs have different batch sizes "
                             f"{ {k: len(v) for k, v in named.items()} }.")
        checked.append(named)
    return checked


def given_calibration(signature, settings):
    """``settings.calibration`` as ``(batches, how)``: checked against the model's inputs
    (InputError naming ``calibration``), in batches of ``settings.batch_size`` rows."""
    named = signature.name_inputs(settings.calibration, arg="calibration (--calibration)")
    rows = {len(a) for a in named.values()}
    if len(rows) != 1 or 0 in rows:
        raise InputError("Invalid calibration (--calibration): expected the same number of "
                         f"rows, at least one, for every input; got "
                         f"{ {k: len(a) for k, a in named.items()} }.")
    rows, size = rows.pop(), settings.batch_size
    batches = [{k: a[i:i + size] for k, a in named.items()} for i in range(0, rows, size)]
    return batches, f"given: {rows} rows"


CALIBRATION_BATCHES, CALIBRATION_ROWS, CALIBRATION_SEED = 8, 8, 1000


def of_run(run):
    """The int8 calibration batches of ``run`` and how they were made, decided once and kept
    in ``run.calibration``: the given ones (``calibration=``, ``--calibration``: real training
    images, say, in batches of ``batch_size`` rows; :meth:`Run.choose_inputs` calls this first,
    so that they are checked before any conversion), else the user's inputs (every row, as
    given; with labels, the first batch), else the stored ones, else generated batches
    (:data:`CALIBRATION_BATCHES` batches of :data:`CALIBRATION_ROWS` rows, drawn from the
    distribution the run's own generated inputs use, with other seeds): the evaluation
    batches are never the generated calibration batches. The one calibration path."""
    if run.calibration is None:
        signature, settings = run.signature, run.settings
        if settings.calibration is not None:
            run.calibration = given_calibration(signature, settings)
        elif settings.labels is not None:  # the first batch: all rows need not fit at once
            rows = len(next(iter(run.batches[0].values())))
            run.calibration = ([run.batches[0]], f"user inputs (the first {rows} rows)")
        elif settings.inputs is not None:
            run.calibration = ([signature.name_inputs(settings.inputs)], "user inputs")
        elif settings.golden is not None:
            run.calibration = ([run.batches[0]], "the stored inputs (load_outputs)")
        else:
            distribution = run.generated
            kwargs = {"distribution": distribution} if distribution else {}
            run.calibration = (
                [signature.generate(CALIBRATION_ROWS, CALIBRATION_SEED + settings.seed + i,
                                    **kwargs) for i in range(CALIBRATION_BATCHES)],
                f"generated: {CALIBRATION_BATCHES} batches of {CALIBRATION_ROWS}"
                + (f" ({distribution})" if distribution else ""))
    return run.calibration
