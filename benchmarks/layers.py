"""Forward + backward of DropBlock against Keras Dropout, SpatialDropout and the elementwise floor.

A case is one training-mode step on a fixed input: ``loss = sum(layer(x) * w)`` and the gradient
with respect to ``x``. On TensorFlow (:func:`layer_cases`) under a ``tf.GradientTape``, in graph
mode (``tf.function``) or XLA (``tf.function(jit_compile=True)``); on JAX (:func:`jax_cases`,
``python -m benchmarks.layers --jax`` with ``KERAS_BACKEND=jax``, which ``benchmarks.run`` starts
for its ``jax`` table) ``jax.value_and_grad`` of the layer's ``stateless_call`` under
``jax.jit``, the seed state threaded through. The floor is ``x * c``: the least any elementwise
layer can cost in the same step (read x, write the gradient).
"""

from __future__ import annotations

import argparse
import json
import sys

import keras

from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D

MODES = {"graph": False, "xla": True}
DROPBLOCK = {1: DropBlock1D, 2: DropBlock2D, 3: DropBlock3D}
SPATIAL_DROPOUT = {1: keras.layers.SpatialDropout1D, 2: keras.layers.SpatialDropout2D,
                   3: keras.layers.SpatialDropout3D}

# name: (input shape, block size); rate 0.1, channels last.
SHAPES = {
    "2d": ((32, 28, 28, 128), 7),
    "1d": ((32, 784, 128), 7),
    "3d": ((32, 8, 14, 14, 64), 3),
}
RATE = 0.1


def step_fn(layer_fn, x, jit, unknown_spatial=False):
    """A callable running one forward + backward step of ``layer_fn`` on ``x``; blocks until done.

    ``unknown_spatial`` traces with the spatial dims unknown (as a fully convolutional model
    does), so the layer sizes its mask from the runtime shape.
    """
    import tensorflow as tf

    w = tf.random.stateless_normal(x.shape, [1, 2])
    signature = None
    if unknown_spatial:
        signature = [tf.TensorSpec((x.shape[0], *[None] * (x.shape.rank - 2), x.shape[-1]))]

    @tf.function(jit_compile=jit, input_signature=signature)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer_fn(x) * w)
        return loss, tape.gradient(loss, x)

    def run():
        loss, _ = step(x)
        loss.numpy()  # CPU kernels (and XLA on CPU) run synchronously; this only makes sure

    return run


def layer_cases(name, modes=("graph", "xla")):
    """Cases of one shape: ``{(layer, mode): callable}``."""
    import tensorflow as tf

    from tfdropblock import tf_ops

    shape, block = SHAPES[name]
    rank = len(shape) - 2
    x = tf.random.stateless_normal(shape, [3, 4])
    c = tf.constant(1.0 - RATE)
    layers = {
        "floor (x * c)": lambda t: t * c,
        "keras Dropout": keras.layers.Dropout(RATE, seed=1),
        f"keras SpatialDropout{rank}D": SPATIAL_DROPOUT[rank](RATE, seed=1),
        f"DropBlock{rank}D per-channel": DROPBLOCK[rank](RATE, block, seed=1),
        f"DropBlock{rank}D shared-channel": DROPBLOCK[rank](RATE, block, seed=1,
                                                            share_channels=True),
    }
    cases = {}
    for label, layer in layers.items():
        fn = layer if label.startswith("floor") else (lambda t, l=layer: l(t, training=True))
        for mode in modes:
            cases[(label, mode)] = step_fn(fn, x, MODES[mode])
    # The same layer traced with unknown spatial dims: what the dynamic path costs.
    dynamic = DROPBLOCK[rank](RATE, block, seed=1)
    for mode in modes:
        cases[(f"DropBlock{rank}D per-channel, unknown spatial dims", mode)] = step_fn(
            lambda t: dynamic(t, training=True), x, MODES[mode], unknown_spatial=True)
    if "graph" in modes:
        # Graph mode's dense seeds (what it uses above tf_ops.SPARSE_MAX_RATE, and used at every
        # rate before the sparse draw), beside the sparse draw it uses at this rate.
        seeds = keras.random.SeedGenerator(1)
        blocks = (block,) * rank
        cases[(f"DropBlock{rank}D per-channel, dense seeds", "graph")] = step_fn(
            lambda t: tf_ops.apply_mask(
                t, *tf_ops.mask_and_count(t, RATE, blocks, seeds.next())), x, False)
    return cases, {"shape": shape, "block": block, "rate": RATE}


def jax_cases(name="2d"):
    """JAX cases of one shape, each ``(layer, "jax.jit")``: a stateless forward + backward step
    under ``jax.jit``, the layer's seed state threaded from call to call."""
    import jax
    import jax.numpy as jnp

    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    shape, block = SHAPES[name]
    rank = len(shape) - 2
    x = jax.random.normal(jax.random.key(3), shape)
    w = jax.random.normal(jax.random.key(1), shape)
    layers = {
        "floor (x * c)": None,
        "keras Dropout": keras.layers.Dropout(RATE, seed=1),
        f"DropBlock{rank}D per-channel": DROPBLOCK[rank](RATE, block, seed=1),
        f"DropBlock{rank}D shared-channel": DROPBLOCK[rank](RATE, block, seed=1,
                                                            share_channels=True),
    }
    cases = {}
    for label, layer in layers.items():
        if layer is None:
            def call(t, state, c=1.0 - RATE):
                return t * c, state
            state = []
        else:
            layer.build(shape)
            call = (lambda t, state, l=layer: l.stateless_call([], state, t, training=True))
            state = [v.value for v in layer.non_trainable_variables]

        def loss(t, state, call=call):
            y, state = call(t, state)
            return jnp.sum(y * w), state

        step = jax.jit(jax.value_and_grad(loss, has_aux=True))

        def run(step=step, box=[state]):
            (value, box[0]), grad = step(x, box[0])
            grad.block_until_ready()

        cases[(label, "jax.jit")] = run
    return cases, {"shape": shape, "block": block, "rate": RATE}


def main(argv=None):
    """``--jax``: time :func:`jax_cases` and print ``{"meta", "versions", "seconds"}`` as JSON
    (seconds per round of each case), for ``benchmarks.run``'s ``jax`` table."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--jax", action="store_true", required=True)
    parser.add_argument("--table", default="2d", choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    import jax

    from benchmarks import timing

    cases, meta = jax_cases(args.table)
    results = timing.measure(cases, rounds=args.rounds, warmup=args.warmup)
    json.dump({"meta": meta, "versions": f"JAX {jax.__version__}, Keras {keras.__version__}",
               "seconds": [[label, mode, r.seconds] for (label, mode), r in results.items()]},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
