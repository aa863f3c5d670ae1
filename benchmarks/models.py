"""ResNet-50 training step with DropBlock against the same network without it.

Uses ``tfdropblock.models.resnet50_dropblock`` (the paper's placement: DropBlock in groups 3 and
4, block 7); the baseline is the same builder with ``dropblock_groups=()``, i.e. the network with
every DropBlock layer removed. One step: forward in training mode, softmax cross-entropy,
gradients, an SGD update.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from benchmarks.layers import MODES


def available():
    """None when the models package can be used, else why not."""
    try:
        from tfdropblock.models import resnet50_dropblock  # noqa: F401
    except Exception as e:  # reported as a skipped table; the run then exits 1
        return f"tfdropblock.models.resnet50_dropblock unavailable ({type(e).__name__}: {e})"
    return None


def train_step_fn(model, x, y, jit):
    """A callable running one SGD training step of ``model``; blocks until done."""
    optimizer = keras.optimizers.SGD(0.01)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    def run():
        step(x, y).numpy()

    return run


def resnet_cases(input_size=224, batch=4, width=64, modes=("graph", "xla")):
    """``{(variant, mode): callable}`` for ResNet-50 with and without DropBlock.

    224x224 as in the paper: its DropBlock maps are then 28x28 (conv4_block1's first conv),
    14x14 and 7x7, where block 7 fits, so the overhead measured is the mask's work on real maps.
    (At 64x64 they were 4x4 and 2x2, and the table measured the executor's per-op overhead.)
    A small batch keeps a step near a second on two cores.
    """
    from tfdropblock.models import resnet50_dropblock

    x = tf.random.stateless_uniform((batch, input_size, input_size, 3), [5, 6])
    y = tf.random.stateless_uniform((batch,), [7, 8], maxval=10, dtype=tf.int32)
    cases = {}
    variants = {"ResNet-50 + DropBlock (groups 3, 4)": (3, 4), "ResNet-50 without DropBlock": ()}
    for label, groups in variants.items():
        for mode in modes:
            model = resnet50_dropblock((input_size, input_size, 3), 10, width=width, rate=0.1,
                                       block_size=7, dropblock_groups=groups, seed=0,
                                       classifier_activation=None)
            cases[(label, mode)] = train_step_fn(model, x, y, MODES[mode])
    meta = {"input": (batch, input_size, input_size, 3), "width": width, "classes": 10}
    return cases, meta
