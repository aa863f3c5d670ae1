"""What a format sees of a run: :class:`FormatRun`, the one interface a
:class:`~tfdropblock.export.formats.base.Format` and the check sequence read. A
:class:`~tfdropblock.export.run.run.Run` is one; so is the slice
``pipeline.given.verify_quantized`` builds over two artifacts made elsewhere."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class FormatRun(Protocol):
    """The run a format converts and is checked in."""

    model: Any              # the keras.Model (None where the artifacts were made elsewhere)
    signature: Any          # its model.signature.Signature
    settings: Any           # the run.settings.Settings (``option(name)``: a format's option)
    calibration: Any        # int8 calibration (batches, how), or None until first needed
    layer_names: Any        # the DropBlock layers' names, for the name-scope check
    batches: list           # the inputs checked on, {input name: array} per batch
    expected: list          # Keras's (or the stored) outputs on them, per batch
    io: Any                 # Keras's inputs and outputs as the validity check compares them
    reference_how: Any      # how the identity reference was made, for the report
    keras_exporter: bool    # the artifacts are Keras's model.export: decided once, here
    training_mode_leaks: Any  # the layers that run in training mode under model(x)
    label_batches: Any      # with labels: the labelled rows in batches, else None

    def path(self, fmt, reference=False): ...          # where ``fmt``'s artifact is written
    def get(self, fmt, reference=False): ...           # ``fmt``'s artifact, converted once
    def function(self, reference=False): ...           # the traced inference function
