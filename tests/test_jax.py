"""Training on JAX: a custom ``jax.jit`` step threading the seed state and the scheduler's ramp,
``keras.distribution.DataParallel`` over two CPU devices, and a model trained on JAX shipped
through TensorFlow (``tfdropblock verify``).

Run by the JAX step of ``.ci/run`` (``KERAS_BACKEND=jax``); marked ``jax_only``, so the
TensorFlow run reports them as skipped.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from backend import numpy
from tfdropblock import DropBlock2D, DropBlockScheduler

pytestmark = pytest.mark.jax_only


def probe_model():
    """A conv that keeps its positive output (ones kernel, frozen), DropBlock, and a head: the
    second output shows the mask (zeros are dropped units)."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer="ones", trainable=False)(
        inputs)
    dropped = DropBlock2D(0.3, 3, seed=1)(x)
    logits = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(dropped))
    return keras.Model(inputs, [logits, dropped])


def test_custom_jit_step_threads_the_seed_state_and_the_scheduler_ramp():
    import jax

    model = probe_model()
    optimizer = keras.optimizers.SGD(0.01)
    optimizer.build(model.trainable_variables)
    scheduler = DropBlockScheduler(ramp_steps=4)
    scheduler.set_model(model)
    traces = []

    def loss_fn(trainable, non_trainable, x):
        (logits, dropped), non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True)
        return keras.ops.mean(logits**2), (dropped, non_trainable)

    @jax.jit
    def train_step(trainable, non_trainable, optimizer_variables, x):
        traces.append(1)
        (loss, (dropped, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, x)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable)
        return loss, dropped, trainable, non_trainable, optimizer_variables

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    optimizer_variables = [v.value for v in optimizer.variables]
    x = np.ones((16, 12, 12, 3), "float32")
    fractions, masks = [], []
    for step in range(7):
        non_trainable = scheduler.stateless_update(step, non_trainable)
        loss, dropped, trainable, non_trainable, optimizer_variables = train_step(
            trainable, non_trainable, optimizer_variables, x)
        assert np.isfinite(float(loss))
        masks.append(numpy(dropped) == 0)
        fractions.append(masks[-1].mean())
    assert len(traces) == 1  # a new rate and a new seed state are values, not a retrace
    assert fractions[0] == 0.0  # the ramp starts at rate 0
    assert 0.05 < fractions[2] < fractions[4] and 0.2 < np.mean(fractions[4:]) < 0.4, fractions
    assert not np.array_equal(masks[4], masks[5])  # the seed state was threaded through
    # The layer's own variables are untouched until the loop writes its state back.
    layer = model.layers[2]
    assert float(numpy(layer.current_rate)) == pytest.approx(0.3)
    for variable, value in zip(model.non_trainable_variables, non_trainable):
        variable.assign(value)
    assert float(numpy(layer.current_rate)) == pytest.approx(0.3)  # the ramp's end: the rate


DATA_PARALLEL = textwrap.dedent("""
    import os
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import keras
    import numpy as np
    from tfdropblock import DropBlock2D, DropBlockScheduler

    devices = jax.devices("cpu")
    assert len(devices) == 2, devices
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)

    # One training call on a batch sharded over the two devices.
    layer = DropBlock2D(0.3, 3, seed=5)
    layer.build((8, 12, 12, 4))
    x = keras.distribution.distribute_tensor(
        np.ones((8, 12, 12, 4), "float32"), distribution.get_data_layout((8, 12, 12, 4)))
    assert len(x.sharding.device_set) == 2
    step = jax.jit(lambda state, t: layer.stateless_call([], state, t, training=True))
    y, _ = step([v.value for v in layer.non_trainable_variables], x)
    shards = sorted(y.addressable_shards, key=lambda s: s.index[0].start or 0)
    assert len(shards) == 2 and shards[0].data.shape[0] == 4, [s.index for s in shards]
    first, second = (np.asarray(s.data) == 0 for s in shards)
    assert first.any() and second.any()
    assert not np.array_equal(first, second), "the devices drew the same masks"

    # fit under the distribution, with the scheduler's ramp.
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = DropBlock2D(0.2, 3, seed=1)(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(h)))
    model.compile("sgd", "mse", jit_compile=True)
    history = model.fit(np.random.rand(32, 12, 12, 3).astype("f4"), np.zeros((32, 1), "f4"),
                        batch_size=8, epochs=2, verbose=0,
                        callbacks=[DropBlockScheduler(ramp_steps=4)])
    assert np.isfinite(history.history["loss"]).all()
    assert abs(float(model.layers[2].current_rate.numpy()) - 0.2) < 1e-7
    print("DATA_PARALLEL_OK")
""")


def test_data_parallel_on_two_cpu_devices_draws_a_mask_per_device():
    # XLA's host device count must be set before JAX starts: a fresh interpreter.
    result = subprocess.run([sys.executable, "-c", DATA_PARALLEL], capture_output=True,
                            text=True, timeout=300)
    assert "DATA_PARALLEL_OK" in result.stdout, result.stderr[-3000:]


PREDICT_ON_TENSORFLOW = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    import tfdropblock
    assert keras.backend.backend() == "tensorflow"
    model = keras.saving.load_model(sys.argv[1])
    np.save(sys.argv[2], keras.ops.convert_to_numpy(model(np.load(sys.argv[3]))))
""")


def test_model_trained_on_jax_loads_and_verifies_under_tensorflow(tiny_image_model, tmp_path):
    model = tiny_image_model(rate=0.2, block_size=3)
    model.compile("sgd", "mse", jit_compile=True)
    x = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
    model.fit(x, np.zeros((16, 2), "f4"), batch_size=8, epochs=1, verbose=0,
              callbacks=[DropBlockScheduler(ramp_steps=2)])
    path = tmp_path / "trained_on_jax.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x[:4])

    tf_env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, "-c", PREDICT_ON_TENSORFLOW, str(path),
                             str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, timeout=300, env=tf_env)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), numpy(model(x[:4])), atol=1e-5)

    # The CLI, from a shell whose KERAS_BACKEND is jax: it runs Keras on TensorFlow itself.
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "tfdropblock", "verify", str(path),
                             "--json", str(report)], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, KERAS_BACKEND="jax"))
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    verified = json.loads(report.read_text())
    assert verified["ok"] is True
    statuses = {name: f["status"] for name, f in verified["formats"].items()}
    assert set(statuses) >= {"saved_model", "tflite", "onnx"}, statuses
    assert set(statuses.values()) == {"passed"}, statuses


def test_library_verify_under_jax_says_what_to_do_in_one_sentence():
    with pytest.raises(RuntimeError, match=r"TensorFlow backend .*tfdropblock verify") as error:
        from tfdropblock.export import verify  # noqa: F401
    assert "\n" not in str(error.value) and str(error.value).count(". ") == 0
