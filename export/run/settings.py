"""The settings of one verification or export: validated once, then passed whole."""

from __future__ import annotations

import dataclasses
from typing import Any

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.run import registry, tolerance
from tfdropblock.validation import is_int

REFERENCE_MODES = ("auto", "export")
# Who makes the artifacts: the kit's own conversion paths, or Keras's ``model.export``.
EXPORTERS = ("tfdropblock", "keras")
DEFAULT_TIMEOUT = 600  # seconds allowed to each format's converter in an isolated run
WRITE_POLICIES = ("passed", "all_or_nothing", "converted")
# Rows run through a model at once when labels are given (Keras and every artifact).
BATCH_SIZE = 500
# With labels, the largest drop of a quantized variant's top-1 below Keras's that passes
# unless max_accuracy_drop says otherwise: on the trained Fashion-MNIST model every correct
# variant dropped <= 0.56 points, int8 calibrated on one grey image 9.0 and 9.1
# (docs/ACCURACY.md, "Quality floors"). Float formats are judged only when it is given.
QUANTIZED_ACCURACY_DROP = 0.02


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"Invalid {name}={value!r}: expected one of {choices}.")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``verify`` and ``export`` are asked to do, beyond the model and the formats.

    Validated on construction (InputError names the bad field); picklable, since the isolated
    runner sends it to its child processes. ``options`` holds each format's own options (its
    :class:`~tfdropblock.export.run.registry.Option` group: ``opset``, ``tflite_select_tf_ops``
    ...), every registered one with its default when not given; :meth:`make` takes them as
    keywords.
    """

    inputs: Any = None
    # A float for every output, or {output name: float} (see :mod:`.tolerance`).
    atol: Any = 1e-5
    rtol: Any = 1e-4
    input_signature: Any = None
    seed: int = 0
    reference: str = "auto"
    quantize: tuple = ()        # the quantized variants asked for ("tflite:int8", ...)
    labels: Any = None          # integer class per row of ``inputs`` (see :func:`labelled`)
    max_accuracy_drop: float | None = None
    batch_size: int = BATCH_SIZE
    calibration: Any = None     # int8 calibration inputs (as ``inputs``), else see quantized
    golden: Any = None          # stored inputs and outputs to compare with (a golden.Golden)
    save_outputs: str | None = None  # where the run's inputs and reference outputs go
    exporter: str = EXPORTERS[0]
    locate: bool = False        # compare every layer's output even when parity passes
    options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def keywords(cls):
        """{keyword: default} of the fields ``verify`` takes as keyword options (the inputs,
        tolerances and stored outputs it takes otherwise)."""
        return {f.name: f.default for f in dataclasses.fields(cls)
                if f.name not in ("inputs", "atol", "rtol", "golden", "options")}

    @classmethod
    def make(cls, **kwargs):
        """Settings from keywords, the formats' options among them."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {k: v for k, v in kwargs.items() if k not in fields}
        return cls(**{k: v for k, v in kwargs.items() if k in fields}, options=options)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("atol", tolerance.checked("atol", self.atol, Settings.atol))
        set_("rtol", tolerance.checked("rtol", self.rtol, Settings.rtol))
        if self.golden is not None:
            from tfdropblock.export.run.golden import check_alone

            check_alone(self.inputs, self.labels)
        check_choice("reference", self.reference, REFERENCE_MODES)
        if not is_int(self.seed) or self.seed < 0:
            raise InputError(f"Invalid seed={self.seed!r}: expected an int >= 0.")
        set_("seed", int(self.seed))
        set_("quantize", tuple(self.quantize or ()))
        if self.labels is not None:
            set_("labels", check_labels(self.labels, self.inputs))
        if self.max_accuracy_drop is not None:
            drop = self.max_accuracy_drop
            if isinstance(drop, bool) or not isinstance(drop, (int, float)) or \
                    not 0.0 <= drop <= 1.0:
                raise InputError(f"Invalid max_accuracy_drop={drop!r}: expected a fraction in "
                                 "[0, 1] (0.02: two points of top-1).")
            if self.labels is None:
                raise InputError("max_accuracy_drop needs labels= (--labels): without labels "
                                 "there is no accuracy to judge.")
            set_("max_accuracy_drop", float(drop))
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise InputError(f"Invalid batch_size={self.batch_size!r} (--batch-size): expected "
                             "an int >= 1.")
        set_("batch_size", int(self.batch_size))
        if self.calibration is not None and not any(v.endswith(":int8") for v in self.quantize):
            raise InputError("calibration (--calibration) is the int8 calibration data: it "
                             "needs an int8 variant (quantize='int8', --quantize int8).")
        check_choice("exporter", self.exporter, EXPORTERS)
        registry.check_bool("locate")(self.locate)
        known = registry.options()
        registry.accept("Settings", self.options, {})
        set_("options", {name: option.check(self.options.get(name, option.default))
                         for name, option in known.items()})
        for name, option in known.items():
            value = self.options[name]
            if option.applies_to and value != option.default and \
                    option.applies_to not in self.quantize:
                fmt, _, mode = option.applies_to.partition(":")
                raise InputError(f"{option.flag or name} applies to {registry.get(fmt).title} "
                                 f"{mode} only ({name}={value!r}): pass --quantize {mode} "
                                 f"(quantize={mode!r}) with {fmt} in --formats.")
        if self.exporter == "keras":
            check_keras_exportable(self)

    def accuracy_drop(self, quantized):
        """The largest top-1 drop below Keras's that passes (None: reported, not judged)."""
        if self.labels is None or self.max_accuracy_drop is not None:
            return self.max_accuracy_drop
        return QUANTIZED_ACCURACY_DROP if quantized else None

    def option(self, name):
        """The value of a format's option ``name``."""
        return self.options[name]

    def report(self):
        """The report's ``settings``: the tolerances and conversion options, and whose inputs;
        the quantized variants' options only when quantizing."""
        known = registry.options()
        return {"atol": tolerance.default_of(self.atol),
                "rtol": tolerance.default_of(self.rtol),
                "atol_outputs": tolerance.overrides_of(self.atol),
                "rtol_outputs": tolerance.overrides_of(self.rtol), "seed": self.seed,
                "reference": self.reference, "exporter": self.exporter,
                "locate": self.locate,
                **{name: value for name, value in self.options.items()
                   if not getattr(known.get(name), "quantized_only", False)},
                "inputs": "user" if self.inputs is not None else
                "stored" if self.golden is not None else "generated",
                **({"load_outputs": self.golden.path} if self.golden is not None else {}),
                **({"save_outputs": self.save_outputs} if self.save_outputs else {}),
                **({"labels": len(self.labels), "max_accuracy_drop": self.max_accuracy_drop,
                    "quantized_accuracy_drop": self.accuracy_drop(True),
                    "batch_size": self.batch_size} if self.labels is not None else {}),
                **({"quantize": list(self.quantize),
                    **{name: value for name, value in self.options.items()
                       if getattr(known.get(name), "quantized_only", False)}}
                   if self.quantize else {})}


def check_keras_exportable(settings):
    """InputError naming both options for what Keras's exporters cannot be asked to do.

    Keras 3.15's ``model.export`` makes float artifacts only, and writes an ONNX model as one
    file; what it does with Flex ops and opsets is taken as it is (``opset`` is passed to its
    ONNX exporter, ``tflite_select_tf_ops`` changes nothing: its LiteRT exporter always allows
    Flex ops, which the structure check then reports)."""
    keras = "Invalid exporter='keras' (--exporter keras) with"
    if settings.quantize:
        raise InputError(f"{keras} quantize={list(settings.quantize)} (--quantize): Keras's "
                         "exporters make float artifacts only; quantized variants need "
                         "exporter='tfdropblock'.")
    if settings.options.get("onnx_external_data"):
        raise InputError(f"{keras} onnx_external_data=True (--onnx-external-data): Keras's "
                         "ONNX exporter writes one file; external data needs "
                         "exporter='tfdropblock'.")
    if settings.locate:
        raise InputError(f"{keras} locate=True (--locate): the locator maps the tensor names "
                         "of the kit's own conversions only.")


def _rows(inputs):
    """The rows of user inputs (array, list or dict of arrays with a batch axis), or None."""
    import numpy as np

    arrays = list(inputs.values()) if isinstance(inputs, dict) else \
        list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    shapes = [np.shape(a) for a in arrays]
    return shapes[0][0] if shapes and shapes[0] else None


def check_labels(labels, inputs, arg="labels"):
    """``labels`` as a 1-D int64 array of one class per row of ``inputs``; InputError naming
    ``arg`` for labels that are not integers, not one per row, or given without inputs."""
    import numpy as np

    if inputs is None:
        raise InputError(f"Invalid {arg}: labels need the inputs they label (--inputs NPZ, "
                         "inputs=).")
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"Invalid {arg}: dtype {array.dtype}; expected integer class indices "
                         "(int32 or int64), one per input row.")
    rows = _rows(inputs)
    if array.ndim != 1 or len(array) != rows:
        raise InputError(f"Invalid {arg}: shape {array.shape}; expected ({rows},), one class "
                         f"per input row.")
    return array.astype(np.int64)


def labelled(inputs, labels, arg="labels"):
    """``(inputs, labels)`` with ``labels`` resolved: an array is checked as is; a name is an
    array of ``inputs`` (a dict, as an NPZ loads), taken out of them, the others staying the
    model's inputs. InputError naming ``arg`` otherwise."""
    if labels is None:
        return inputs, None
    if isinstance(labels, str) and inputs is None:
        raise InputError(f"Invalid {arg} {labels!r}: it names an array of the inputs; pass them "
                         "(inputs=, --inputs NPZ).")
    if isinstance(labels, str):
        if not isinstance(inputs, dict) or labels not in inputs:
            have = sorted(inputs) if isinstance(inputs, dict) else None
            raise InputError(f"Invalid {arg} {labels!r}: no such array in the inputs"
                             + (f"; they hold {have}." if have else
                                " (a name needs inputs as a dict or NPZ of named arrays)."))
        inputs = dict(inputs)
        labels = inputs.pop(labels)
        if not inputs:
            raise InputError(f"Invalid {arg}: the inputs hold only the labels; the model's "
                             "inputs are the NPZ's other arrays.")
    return inputs, check_labels(labels, inputs, arg)
