"""Forward + backward of DropBlock against Keras Dropout, SpatialDropout and the elementwise floor.

A case is one training-mode step on a fixed input: ``loss = sum(layer(x) * w)`` under a
``tf.GradientTape`` and the gradient with respect to ``x``, in graph mode (``tf.function``) or
XLA (``tf.function(jit_compile=True)``). The floor is ``x * c``: the least any elementwise
layer can cost in the same step (read x, write the gradient).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D, tf_ops

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
