"""What the layer tests need from the Keras backend they run on (TensorFlow or JAX), in one place.

Keras fixes its backend at import, so each backend is a pytest process of its own:
``make test-jax`` (``KERAS_BACKEND=jax python -m pytest -m "not tf_only"`` on the layer test
files, the JAX step of ``.ci/run``).

``mode`` names how a training call runs: ``eager``; ``xla`` compiled (``tf.function(
jit_compile=True)`` on TensorFlow, ``jax.jit`` of a stateless call that threads the seed state on
JAX); ``graph`` (TensorFlow only); and, on TensorFlow, ``keras-eager`` / ``keras-xla``: the same
through the portable ``keras.ops`` algorithm (``tfdropblock.ops.IMPLEMENTATION = "keras"``).
"""

from __future__ import annotations

import keras
import numpy as np

BACKEND = keras.backend.backend()
TENSORFLOW = BACKEND == "tensorflow"
JAX = BACKEND == "jax"

# Float dtypes an input can have: JAX without x64 makes float64 arrays float32.
FLOAT_DTYPES = ["float16", "bfloat16", "float32"] + (["float64"] if TENSORFLOW else [])

# The modes every statistical test runs in on this backend.
MODES = ["eager", "xla", "keras-eager", "keras-xla"] if TENSORFLOW else ["eager", "xla"]


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def dtype_name(x):
    return keras.backend.standardize_dtype(x.dtype)


def ones(shape, dtype="float32"):
    return keras.ops.ones(shape, dtype)


def uniform(shape, low=0.5, high=1.5, seed=0):
    return keras.ops.convert_to_tensor(
        np.random.default_rng(seed).uniform(low, high, shape).astype("float32"))


def implementation(monkeypatch, mode):
    """Sets ``tfdropblock.ops.IMPLEMENTATION`` for ``mode`` for one test; returns the plain
    mode (``eager``, ``graph`` or ``xla``)."""
    from tfdropblock import ops

    monkeypatch.setattr(ops, "IMPLEMENTATION", "keras" if mode.startswith("keras-") else "auto")
    return mode.removeprefix("keras-")


def stateless(layer, non_trainable, x, training=True):
    """``layer(x, training=...)`` on the given non-trainable values (the seed state, the rate):
    ``(y, new non-trainable values)``. Unlike ``Layer.stateless_call``, which runs ``call``
    itself, this goes through ``__call__``, so inputs are cast to the compute dtype as in
    ``fit``."""
    mapping = list(zip(layer.non_trainable_variables, non_trainable))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        y = layer(x, training=training)
    new = [scope.get_current_value(v) for v in layer.non_trainable_variables]
    return y, [n if n is not None else old for n, old in zip(new, non_trainable)]


def training_call(layer, mode="eager"):
    """``x -> layer(x, training=True)`` run in ``mode``; a new mask at every call.

    On JAX ``xla`` is ``jax.jit`` of ``layer.stateless_call``, the seed state threaded through
    and written back after each call, as a JAX training step does.
    """
    if mode == "eager":
        return lambda x: layer(x, training=True)
    if TENSORFLOW:
        import tensorflow as tf

        return tf.function(lambda x: layer(x, training=True), jit_compile=mode == "xla")
    assert mode == "xla", f"mode {mode!r} does not exist on {BACKEND}"
    import jax

    step = jax.jit(lambda non_trainable, x: stateless(layer, non_trainable, x))

    def call(x):
        if not layer.built:
            layer.build(x.shape)
        y, state = step([v.value for v in layer.non_trainable_variables], x)
        for variable, value in zip(layer.non_trainable_variables, state):
            variable.assign(value)
        return y

    call.step = step
    return call


def output_and_gradient(layer, x, mode="eager"):
    """``(y, d sum(y) / dx)`` of one training call of ``layer`` in ``mode``."""
    if TENSORFLOW:
        import tensorflow as tf

        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return y, tape.gradient(y, x)

        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return run(keras.ops.convert_to_tensor(x))
    import jax

    if not layer.built:
        layer.build(x.shape)
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def total(x):
        y, _ = stateless(layer, non_trainable, x)
        return keras.ops.sum(y), y

    run = jax.grad(total, has_aux=True)
    if mode == "xla":
        run = jax.jit(run)
    grad, y = run(x)
    return y, grad


def inference_and_training_ops(layer, shape):
    """The op types of ``layer(x, training=False)`` and of ``layer(x, training=True)`` traced on
    an input of ``shape``: graph op types on TensorFlow, jaxpr primitives on JAX."""
    if TENSORFLOW:
        import tensorflow as tf

        def types(training):
            graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
                tf.TensorSpec(shape)).graph
            return {op.type for op in graph.get_operations()}, [
                op.name for op in graph.get_operations()]

        return types(False), types(True)
    import jax

    layer.build(shape)
    x = np.ones([d or 2 for d in shape], "float32")
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def types(training):
        jaxpr = jax.make_jaxpr(lambda t: stateless(layer, non_trainable, t, training)[0])(x)
        return {str(e.primitive) for e in jaxpr.eqns}, str(jaxpr).split("\n")

    return types(False), types(True)
