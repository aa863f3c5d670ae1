"""The DropBlock rate over training: the paper's linear ramp, or any schedule of the step."""

from __future__ import annotations

import math

import keras

from tfdropblock.validation import check_rate, is_int
from tfdropblock.layers import dropblock_layers


@keras.saving.register_keras_serializable(package="tfdropblock")
class DropBlockScheduler(keras.callbacks.Callback):
    """Sets every DropBlock layer's rate before each training step.

    Either a linear ramp, as in the paper (keep_prob from 1 to its target): the rate goes from
    ``start_rate`` to each layer's configured rate over ``ramp_steps`` optimizer steps, then
    holds. Or ``schedule``: a callable of the step returning the fraction, in [0, 1], of each
    layer's configured rate, so layers configured at different rates (the paper's group 3 at a
    quarter of group 4) keep their ratio at every step. A
    ``keras.optimizers.schedules.LearningRateSchedule`` is such a callable.

    The rate is written to each layer's ``current_rate`` variable, so no schedule retraces or
    recompiles the train function. The step is the optimizer's iteration count when the model
    has one, so a run resumed from a checkpoint or a ``.keras`` file continues the schedule; else
    the number of batches this callback has seen.

    Args:
        ramp_steps: number of training steps to reach the configured rate (an int >= 1); or
            None with ``schedule``.
        start_rate: rate at step 0 of the ramp, in [0, 1).
        schedule: None, or a callable ``step -> fraction`` (a ``LearningRateSchedule``, or a
            function; a function round-trips through Keras serialisation when it is registered
            with ``keras.saving.register_keras_serializable``).

    Example:
        >>> model.fit(x, y, epochs=10, callbacks=[DropBlockScheduler(ramp_steps=5000)])
        >>> warmup = keras.optimizers.schedules.CosineDecay(
        ...     0.0, decay_steps=1, warmup_target=1.0, warmup_steps=5000)
        >>> model.fit(x, y, epochs=10, callbacks=[DropBlockScheduler(schedule=warmup)])

    In a custom loop, call ``scheduler.set_model(model)`` once, then ``scheduler.update(step)``
    before each step with your global step. (Keras's ``on_train_batch_begin(batch)`` passes the
    batch index within the epoch, which is not a global step, so the callback ignores it.) A
    stateless loop (a ``jax.jit`` step on ``model.stateless_call``) holds the variables' values
    itself: ``non_trainable = scheduler.stateless_update(step, non_trainable)`` puts the rates
    into that list instead, the rest of it (the seed state) as it was.

    On JAX, ``fit`` keeps the model's state outside its variables during an epoch; the callback
    syncs it (``model.jax_state_sync()``) before each step, so the step reads the rate it sets.
    """

    def __init__(self, ramp_steps=None, start_rate=0.0, schedule=None):
        super().__init__()
        if isinstance(schedule, dict):  # from get_config
            schedule = keras.saving.deserialize_keras_object(schedule)
        if (ramp_steps is None) == (schedule is None):
            raise ValueError(f"Invalid ramp_steps={ramp_steps!r}, schedule={schedule!r}: expected "
                             "exactly one of them (an int >= 1, or a callable of the step).")
        if ramp_steps is not None and (not is_int(ramp_steps) or ramp_steps < 1):
            raise ValueError(f"Invalid ramp_steps={ramp_steps!r}: expected an int >= 1.")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"Invalid schedule={schedule!r}: expected a callable of the step "
                            "returning a fraction in [0, 1], e.g. a LearningRateSchedule.")
        self.start_rate = check_rate(start_rate)
        if schedule is not None and self.start_rate != 0.0:
            raise ValueError(f"Invalid start_rate={start_rate!r} with a schedule: the schedule "
                             "gives the fraction of the rate at every step, step 0 included.")
        self.ramp_steps = None if ramp_steps is None else int(ramp_steps)
        self.schedule = schedule
        self._batches = 0

    def fraction_at(self, step):
        """The schedule's fraction of the configured rate at ``step`` (checked to be in [0, 1])."""
        value = self.schedule(step)
        fraction = float(keras.ops.convert_to_numpy(value))
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"Invalid schedule output {fraction!r} at step {step}: the schedule "
                             "must return a fraction of each layer's rate in [0, 1].")
        return fraction

    def rate_at(self, step, target_rate):
        if self.schedule is not None:
            return target_rate * self.fraction_at(step)
        progress = min(max(step, 0) / self.ramp_steps, 1.0)
        return self.start_rate + (target_rate - self.start_rate) * progress

    def rates(self, step):
        """``{layer: rate at step}`` for every DropBlock layer of the model."""
        fraction = None if self.schedule is None else self.fraction_at(step)
        return {layer: self.rate_at(step, layer.rate) if fraction is None
                else layer.rate * fraction for layer in dropblock_layers(self.model)}

    def update(self, step):
        """Set every DropBlock layer's rate for ``step``; returns the layers updated."""
        rates = self.rates(step)
        for layer, rate in rates.items():
            layer.current_rate.assign(rate)
        return list(rates)

    def stateless_update(self, step, non_trainable_variables):
        """``non_trainable_variables`` (values, in ``model.non_trainable_variables``' order) with
        every DropBlock layer's rate for ``step``; the layers' variables are left alone."""
        by_variable = {id(layer.current_rate): rate for layer, rate in self.rates(step).items()}
        return [keras.ops.convert_to_tensor(by_variable[id(variable)], "float32")
                if id(variable) in by_variable else value
                for variable, value in zip(self.model.non_trainable_variables,
                                           non_trainable_variables)]

    def _step(self):
        # Keras's JAX trainer holds the state outside the variables during an epoch: write it
        # back, which also makes the trainer read the variables (the rate set next) again.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
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

    def get_config(self):
        schedule = self.schedule
        return {"ramp_steps": self.ramp_steps, "start_rate": self.start_rate,
                "schedule": None if schedule is None
                else keras.saving.serialize_keras_object(schedule)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
