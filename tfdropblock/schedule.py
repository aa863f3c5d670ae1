"""Linear ramp of the DropBlock rate over training, as in the paper."""

from __future__ import annotations

import keras

from tfdropblock._compat import flatten_layers
from tfdropblock.layers import _DropBlock
from tfdropblock.ops import check_rate, is_int


def dropblock_layers(model):
    """Every DropBlock layer of ``model``, nested models and layers included."""
    return [layer for layer in flatten_layers(model, include_self=True, recursive=True)
            if isinstance(layer, _DropBlock)]


class DropBlockScheduler(keras.callbacks.Callback):
    """Ramps every DropBlock layer's rate linearly from ``start_rate`` to its configured rate.

    The paper ramps keep_prob from 1 to its target over training; here the ramp spans
    ``ramp_steps`` optimizer steps, then holds. The rate is written to each layer's
    ``current_rate`` variable, so the ramp never retraces or recompiles the train function.
    The step is the optimizer's iteration count when the model has one (a resumed run picks up
    where it left off), else the number of batches seen.

    Args:
        ramp_steps: number of training steps to reach the configured rate (>= 1).
        start_rate: rate at step 0, in [0, 1).

    Example:
        >>> model.fit(x, y, epochs=10, callbacks=[DropBlockScheduler(ramp_steps=5000)])

    In a custom loop, call ``scheduler.set_model(model)`` once, then ``scheduler.update(step)``
    before each step with your global step. (Keras's ``on_train_batch_begin(batch)`` passes the
    batch index within the epoch, which is not a global step, so the callback ignores it.)
    """

    def __init__(self, ramp_steps, start_rate=0.0):
        super().__init__()
        if not is_int(ramp_steps) or ramp_steps < 1:
            raise ValueError(f"Invalid ramp_steps={ramp_steps!r}: expected an int >= 1.")
        self.ramp_steps = int(ramp_steps)
        self.start_rate = check_rate(start_rate)
        self._batches = 0

    def rate_at(self, step, target_rate):
        progress = min(max(step, 0) / self.ramp_steps, 1.0)
        return self.start_rate + (target_rate - self.start_rate) * progress

    def update(self, step):
        """Set every DropBlock layer's rate for ``step``; returns the layers updated."""
        layers = dropblock_layers(self.model)
        for layer in layers:
            layer.current_rate.assign(self.rate_at(step, layer.rate))
        return layers

    def _step(self):
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is not None and getattr(optimizer, "built", True):
            return int(keras.ops.convert_to_numpy(iterations))
        return self._batches

    def on_train_begin(self, logs=None):
        self.update(self._step())

    def on_train_batch_begin(self, batch, logs=None):
        self.update(self._step())
        self._batches += 1
