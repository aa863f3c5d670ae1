"""The settings of one verification or export: validated once, then passed whole."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tfdropblock.export.errors import InputError
from tfdropblock.export.formats.onnx import DEFAULT_OPSET, check_external_data, check_opset
from tfdropblock.gamma import is_int

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
    runner sends it to its child processes. Per format: ``opset`` and ``onnx_external_data``
    are the ONNX conversion's, ``tflite_select_tf_ops`` the TFLite one's.
    """

    inputs: Any = None
    atol: float = 1e-5
    rtol: float = 1e-4
    input_signature: Any = None
    opset: int = DEFAULT_OPSET
    seed: int = 0
    tflite_select_tf_ops: bool = False
    reference: str = "auto"
    onnx_external_data: bool | None = None
    quantize: tuple = ()        # the quantized variants asked for ("tflite:int8", ...)
    int8_io: bool = False       # TFLite int8: integer inputs and outputs too

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("atol", check_tolerance("atol", self.atol))
        set_("rtol", check_tolerance("rtol", self.rtol))
        check_opset(self.opset)
        check_external_data(self.onnx_external_data)
        check_choice("reference", self.reference, REFERENCE_MODES)
        if not is_int(self.seed) or self.seed < 0:
            raise InputError(f"Invalid seed={self.seed!r}: expected an int >= 0.")
        set_("seed", int(self.seed))
        set_("tflite_select_tf_ops", bool(self.tflite_select_tf_ops))
        if not isinstance(self.int8_io, bool):
            raise InputError(f"Invalid int8_io={self.int8_io!r}: expected True or False.")
        set_("quantize", tuple(self.quantize or ()))

    def report(self):
        """The report's ``settings``: the tolerances and conversion options, and whose inputs."""
        return {"atol": self.atol, "rtol": self.rtol, "opset": self.opset, "seed": self.seed,
                "tflite_select_tf_ops": self.tflite_select_tf_ops, "reference": self.reference,
                "onnx_external_data": self.onnx_external_data,
                "inputs": "user" if self.inputs is not None else "generated",
                **({"quantize": list(self.quantize), "int8_io": self.int8_io}
                   if self.quantize else {})}
