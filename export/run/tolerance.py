"""Parity tolerances per output: one default for every output, overrides by output name.

A tolerance is a float (every output) or a :class:`PerOutput`: a dict {output name: value}
whose missing names read as its default. In a dict given to ``verify`` the key
:data:`DEFAULT_KEY` (``"*"``) sets that default; without it the default is the kit's. The CLI
spells the same thing ``--atol 1e-4,probs=1e-3``.
"""

from __future__ import annotations

import math

from tfdropblock.export.core.errors import InputError

DEFAULT_KEY = "*"

_FLAGS = {"atol": "--atol", "rtol": "--rtol"}


class PerOutput(dict):
    """{output name: tolerance}; any other output reads as :attr:`default`."""

    def __init__(self, default, overrides=()):
        super().__init__(overrides)
        self.default = default

    def __missing__(self, name):
        return self.default

    def __reduce__(self):  # pickled for the isolated children, default included
        return (PerOutput, (self.default, dict(self)))

    def __repr__(self):
        return f"PerOutput({self.default!r}, {dict(self)!r})"


def of(tolerance, name):
    """The tolerance that applies to output ``name``."""
    return tolerance[name] if isinstance(tolerance, dict) else tolerance


def default_of(tolerance):
    return tolerance.default if isinstance(tolerance, PerOutput) else tolerance


def overrides_of(tolerance):
    return dict(tolerance) if isinstance(tolerance, PerOutput) else {}


def _number(arg, value, where=""):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise InputError(f"Invalid {arg}{where}={value!r}: expected a finite float >= 0.")
    return float(value)


def checked(arg, value, default):
    """``value`` (a number, or a dict {output name: number} with an optional ``"*"``
    default, else ``default``) as a float, or a :class:`PerOutput` when it names outputs.
    InputError naming ``arg`` otherwise."""
    if not isinstance(value, dict):
        return _number(arg, value)
    overrides = {}
    for name, number in value.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"Invalid {arg} key {name!r}: expected an output name, or "
                             f"{DEFAULT_KEY!r} for the default.")
        overrides[name] = _number(arg, number, f"[{name!r}]")
    base = overrides.pop(DEFAULT_KEY, None)
    base = _number(arg, default) if base is None else base
    return PerOutput(base, overrides) if overrides else base


def parse(text):
    """A CLI tolerance, ``VALUE``, ``NAME=VALUE[,NAME=VALUE]`` or a mix (a bare value is the
    default): a float, or a dict for :func:`checked`. ValueError with the reason."""
    out = {}
    for item in text.split(","):
        name, sep, number = item.strip().rpartition("=")
        name = name.strip() if sep else DEFAULT_KEY
        if sep and not name:
            raise ValueError(f"{item!r} has no output name before '='")
        if name in out:
            raise ValueError(f"{'the default' if name == DEFAULT_KEY else repr(name)} is "
                             "given twice")
        try:
            value = float(number)
        except ValueError:
            value = -1.0
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{number.strip()!r} is not a finite number >= 0")
        out[name] = value
    return out[DEFAULT_KEY] if list(out) == [DEFAULT_KEY] else out


def check_names(arg, tolerance, outputs):
    """InputError naming ``arg`` (and its flag) when ``tolerance`` names an output the model
    does not have; ``outputs``: the model's output names."""
    unknown = [name for name in overrides_of(tolerance) if name not in outputs]
    if unknown:
        raise InputError(f"Invalid {arg} ({_FLAGS.get(arg, arg)}) for output {unknown[0]!r}: "
                         f"the model has no such output; its outputs are {list(outputs)}.")

