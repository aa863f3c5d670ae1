"""The settings of one verification or export: validated once, then passed whole."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tfdropblock.export.errors import InputError
from tfdropblock.export import formats
from tfdropblock.validation import is_int

REFERENCE_MODES = ("auto", "export")
DEFAULT_TIMEOUT = 600  # seconds allowed to each format's converter in an isolated run
WRITE_POLICIES = ("passed", "all_or_nothing", "converted")


def check_tolerance(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise InputError(f"Invalid {name}={value!r}: expected a finite float >= 0.")
    return float(value)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"Invalid {name}={value!r}: expected one of {choices}.")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``verify`` and ``export`` are asked to do, beyond the model and the formats.

    Validated on construction (InputError names the bad field); picklable, since the isolated
    runner sends it to its child processes. ``options`` holds each format's own options (its
    :class:`~tfdropblock.export.formats.base.Option` group: ``opset``, ``tflite_select_tf_ops``
    ...), every registered one with its default when not given; :meth:`make` takes them as
    keywords.
    """

    inputs: Any = None
    atol: float = 1e-5
    rtol: float = 1e-4
    input_signature: Any = None
    seed: int = 0
    reference: str = "auto"
    quantize: tuple = ()        # the quantized variants asked for ("tflite:int8", ...)
    options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def make(cls, **kwargs):
        """Settings from keywords, the formats' options among them."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {k: v for k, v in kwargs.items() if k not in fields}
        return cls(**{k: v for k, v in kwargs.items() if k in fields}, options=options)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("atol", check_tolerance("atol", self.atol))
        set_("rtol", check_tolerance("rtol", self.rtol))
        check_choice("reference", self.reference, REFERENCE_MODES)
        if not is_int(self.seed) or self.seed < 0:
            raise InputError(f"Invalid seed={self.seed!r}: expected an int >= 0.")
        set_("seed", int(self.seed))
        set_("quantize", tuple(self.quantize or ()))
        known = formats.options()
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise InputError(f"Invalid option {unknown[0]}={self.options[unknown[0]]!r}: the "
                             f"formats' options are {tuple(known)}.")
        set_("options", {name: option.check(self.options.get(name, option.default))
                         for name, option in known.items()})

    def option(self, name):
        """The value of a format's option ``name``."""
        return self.options[name]

    def report(self):
        """The report's ``settings``: the tolerances and conversion options, and whose inputs;
        the quantized variants' options only when quantizing."""
        known = formats.options()
        return {"atol": self.atol, "rtol": self.rtol, "seed": self.seed,
                "reference": self.reference,
                **{name: value for name, value in self.options.items()
                   if not getattr(known.get(name), "quantized_only", False)},
                "inputs": "user" if self.inputs is not None else "generated",
                **({"quantize": list(self.quantize),
                    **{name: value for name, value in self.options.items()
                       if getattr(known.get(name), "quantized_only", False)}}
                   if self.quantize else {})}
