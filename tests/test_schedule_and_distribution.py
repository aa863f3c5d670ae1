"""DropBlockScheduler (ramp without retracing) and MirroredStrategy (a mask per replica).

The scheduler's tests run on TensorFlow and JAX; the tf.distribute ones are ``tf_only``
(JAX's ``DataParallel``: tests/test_jax.py).
"""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import backend
from backend import numpy
from tfdropblock import DropBlock2D, DropBlockScheduler, dropblock_layers


class TracedDropBlock(DropBlock2D):
    """Counts Python traces of its call: a retrace of the train function shows up here."""

    traces = 0

    def call(self, inputs, training=None):
        TracedDropBlock.traces += 1
        return super().call(inputs, training=training)


def build(layer_a, layer_b):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = layer_a(x)
    inner = keras.Sequential([keras.Input((12, 12, 4)), layer_b], name="inner")
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


class RateLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append([float(numpy(layer.current_rate)) for layer in dropblock_layers(
            self.model)])


def test_scheduler_ramps_linearly_without_retracing():
    TracedDropBlock.traces = 0
    model = build(TracedDropBlock(0.2, 3, seed=1), DropBlock2D(0.1, 3, seed=2))
    model.compile("sgd", "mse", jit_compile=True)
    x, y = np.random.rand(16, 12, 12, 3).astype("f4"), np.zeros((16, 1), "f4")
    log = RateLog()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0,
              callbacks=[DropBlockScheduler(ramp_steps=4, start_rate=0.0), log])
    traces_after_first_epoch = TracedDropBlock.traces
    model.fit(x, y, batch_size=2, epochs=1, verbose=0,
              callbacks=[DropBlockScheduler(ramp_steps=4), log])
    # The scheduler runs first, so the log sees the rate of the step about to run.
    want = [[min(s / 4, 1) * 0.2, min(s / 4, 1) * 0.1] for s in range(8)] + [[0.2, 0.1]] * 8
    np.testing.assert_allclose(log.rates, want, atol=1e-7)
    assert TracedDropBlock.traces == traces_after_first_epoch
    assert len(dropblock_layers(model)) == 2  # the nested Sequential's layer is found


def test_scheduler_rate_drives_the_drop_fraction():
    layer = DropBlock2D(0.4, 3, seed=0)
    model = keras.Sequential([keras.Input((16, 16, 8)), layer])
    scheduler = DropBlockScheduler(ramp_steps=10)
    scheduler.set_model(model)
    fn = backend.training_call(model, "xla")  # one trace: the rate is read at run time
    fractions = []
    for step in (0, 5, 10):
        scheduler.update(step)
        fractions.append(float(np.mean(numpy(fn(backend.ones((32, 16, 16, 8)))) == 0)))
    assert fractions[0] == 0.0
    assert 0.1 < fractions[1] < 0.25 < fractions[2] < 0.45, fractions


def test_scheduler_accepts_numpy_integers():
    assert DropBlockScheduler(np.int64(10)).ramp_steps == 10


@pytest.mark.tf_only  # the JAX custom loop: tests/test_jax.py
def test_scheduler_in_custom_training_loop():
    import tensorflow as tf

    model = build(DropBlock2D(0.2, 3), DropBlock2D(0.2, 3))
    optimizer = keras.optimizers.SGD()
    scheduler = DropBlockScheduler(ramp_steps=3, start_rate=0.05)
    scheduler.set_model(model)

    @tf.function(jit_compile=True)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    rates = []
    for step in (1, 2, 7):  # a resumed loop: steps need not start at 0 nor be consecutive
        scheduler.update(step)
        rates.append(float(numpy(dropblock_layers(model)[0].current_rate)))
        train_step(tf.ones((4, 12, 12, 3)))
    assert rates == pytest.approx([0.05 + 0.15 / 3, 0.05 + 0.3 / 3, 0.2])
    assert train_step.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("kwargs,argument", [
    (dict(ramp_steps=0), "ramp_steps"), (dict(ramp_steps=2.5), "ramp_steps"),
    (dict(ramp_steps=10, start_rate=1.5), "rate"), (dict(ramp_steps="10"), "ramp_steps")])
def test_scheduler_bad_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        DropBlockScheduler(**kwargs)


MIRRORED = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfdropblock import DropBlock2D

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = DropBlock2D(0.3, 3, seed=5)

    @tf.function
    def step(x):
        return strategy.run(lambda t: layer(t, training=True), args=(x,))

    out = step(tf.ones((4, 12, 12, 4)))
    a, b = [t.numpy() for t in strategy.experimental_local_results(out)]
    assert (a == 0).any() and (b == 0).any()
    assert not np.array_equal(a, b), "replicas drew the same masks"

    with strategy.scope():
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = DropBlock2D(0.2, 3, seed=1)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(1)(x))
        model.compile("sgd", "mse")
    hist = model.fit(np.random.rand(16, 12, 12, 3).astype("f4"), np.zeros((16, 1), "f4"),
                     batch_size=8, epochs=2, verbose=0)
    assert all(np.isfinite(hist.history["loss"]))
    print("MIRRORED_OK")
""")


@pytest.mark.tf_only
def test_mirrored_strategy_each_replica_draws_its_own_masks():
    # Logical devices must be set before TensorFlow initialises: a fresh interpreter.
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                            timeout=300)
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]


# --- schedules of the step ----------------------------------------------------------------------

# 0 up to step 2, 0.5 up to step 4, then 1 (boundaries belong to the interval below them).
STEPS = keras.optimizers.schedules.PiecewiseConstantDecay([2, 4], [0.0, 0.5, 1.0])


def two_group_model():
    """Two DropBlocks at the paper's group-3 : group-4 ratio of rates (1 : 4)."""
    return build(DropBlock2D(0.025, 3, seed=1), DropBlock2D(0.1, 3, seed=2))


def fit_steps(model, scheduler, steps, log):
    x, y = np.random.rand(2 * steps, 12, 12, 3).astype("f4"), np.zeros((2 * steps, 1), "f4")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[scheduler, log])


def test_learning_rate_schedule_keeps_per_group_ratios():
    model = two_group_model()
    model.compile("sgd", "mse")
    log = RateLog()
    fit_steps(model, DropBlockScheduler(schedule=STEPS), 6, log)
    fractions = [0.0, 0.0, 0.0, 0.5, 0.5, 1.0]
    np.testing.assert_allclose(log.rates, [[0.025 * f, 0.1 * f] for f in fractions], atol=1e-7)


@keras.saving.register_keras_serializable(package="tests")
def half_then_full(step):
    return 0.5 if step < 3 else 1.0


def test_resumed_run_continues_the_schedule(tmp_path):
    model = two_group_model()
    model.compile("sgd", "mse")
    fit_steps(model, DropBlockScheduler(schedule=STEPS), 3, RateLog())
    model.save(tmp_path / "m.keras")
    resumed = keras.saving.load_model(tmp_path / "m.keras")
    log = RateLog()
    fit_steps(resumed, DropBlockScheduler(schedule=STEPS), 3, log)
    # Steps 3, 4, 5 (the optimizer's iterations came back with the file), not 0, 1, 2.
    np.testing.assert_allclose(log.rates, [[0.0125, 0.05], [0.0125, 0.05], [0.025, 0.1]],
                               atol=1e-7)


@pytest.mark.parametrize("scheduler", [
    DropBlockScheduler(schedule=STEPS),
    DropBlockScheduler(schedule=keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=10, warmup_target=1.0, warmup_steps=5)),
    DropBlockScheduler(schedule=half_then_full),
    DropBlockScheduler(ramp_steps=7, start_rate=0.02),
], ids=["piecewise", "cosine_warmup", "registered_function", "ramp"])
def test_scheduler_round_trips_through_keras_serialisation(scheduler):
    clones = [DropBlockScheduler.from_config(scheduler.get_config()),
              keras.saving.deserialize_keras_object(
                  keras.saving.serialize_keras_object(scheduler))]
    for clone in clones:
        assert isinstance(clone, DropBlockScheduler)
        assert clone.get_config() == scheduler.get_config()
        for step in (0, 1, 3, 5, 8, 20):
            assert clone.rate_at(step, 0.1) == pytest.approx(scheduler.rate_at(step, 0.1))


@pytest.mark.parametrize("kwargs,argument", [
    (dict(), "ramp_steps"), (dict(ramp_steps=3, schedule=STEPS), "schedule"),
    (dict(schedule=0.5), "schedule"), (dict(schedule=STEPS, start_rate=0.1), "start_rate")])
def test_scheduler_needs_one_of_ramp_steps_and_schedule(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        DropBlockScheduler(**kwargs)


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan")])
def test_schedule_output_outside_zero_one_is_a_clear_error(value):
    scheduler = DropBlockScheduler(schedule=lambda step: value)
    scheduler.set_model(two_group_model())
    with pytest.raises(ValueError, match=r"schedule output .* in \[0, 1\]"):
        scheduler.update(0)


# --- MultiWorkerMirroredStrategy: two local worker processes ---------------------------------------

MULTI_WORKER = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    import keras
    from tfdropblock import DropBlock2D

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        dropblock = DropBlock2D(0.3, 3, seed=5)
        dropout = keras.layers.Dropout(0.3, seed=5)

    @tf.function
    def step(x):
        return strategy.run(lambda t: (dropblock(t, training=True), dropout(t, training=True)),
                            args=(x,))

    masks = [strategy.experimental_local_results(out)[0].numpy() == 0
             for out in step(tf.ones((4, 12, 12, 4)))]
    np.savez(sys.argv[1], dropblock=masks[0], dropout=masks[1])
""")


def free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.tf_only
def test_multi_worker_mirrored_strategy_each_worker_draws_its_own_masks(tmp_path):
    import json
    import os

    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-c", MULTI_WORKER, str(tmp_path / f"w{index}.npz")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log[-3000:]
    first, second = (np.load(tmp_path / f"w{index}.npz") for index in range(2))
    assert first["dropblock"].any() and second["dropblock"].any()
    assert not np.array_equal(first["dropblock"], second["dropblock"]), "workers repeat one mask"
    # The contrast the layer's replica fold-in exists for: Keras's Dropout repeats its mask.
    np.testing.assert_array_equal(first["dropout"], second["dropout"])
