"""The networks and the training of the Fashion-MNIST studies (``benchmarks.accuracy``).

Two small residual networks built from the reference models' ``conv_bn`` and their DropBlock
placement rule (after each conv + BatchNorm and on the shortcut, in the later groups, each
group at a quarter of the next one's rate):

- ``image_net``: 28x28x1 images. Stem conv, then three groups of one basic block each; only
  group 2 downsamples, so groups 2 and 3 (the regularised ones) see 14x14 maps, where a 7x7
  block covers 49 of 196 units, as the paper's block 7 on its ResNet-50's 14x14 group-3 maps
  at 224x224 input. Downsampling twice would leave 7x7 maps, where a 7x7 block is the whole
  map (SpatialDropout).
- ``sequence_net``: each image read as 28 time steps of 28 features (its rows), a 1-D network
  of the same layout at length 28 without downsampling.

The regulariser sits at every marked place: ``"none"``, ``"dropout"`` (Keras ``Dropout``),
``"spatial"`` (Keras ``SpatialDropout1D``/``2D``) or ``"dropblock"`` (``DropBlock1D``/``2D``).
Dropout and SpatialDropout keep their rate for the whole run; DropBlock's rate is ramped
linearly from 0 over the whole run by ``DropBlockScheduler``, as the authors' code does.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from benchmarks import datasets
from tfdropblock import DropBlock1D, DropBlock2D, DropBlockScheduler
from tfdropblock.models import _common as common

REGULARISERS = ("none", "dropout", "spatial", "dropblock")
GAMMA_MODES = ("paper", "exact")
NUM_CLASSES = datasets.NUM_CLASSES
_SPATIAL = {1: keras.layers.SpatialDropout1D, 2: keras.layers.SpatialDropout2D}
_DROPBLOCK = {1: DropBlock1D, 2: DropBlock2D}


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Invalid {name}={value!r}: expected one of {choices}.")
    return value


class Regulariser:
    """Inserts one kind of regulariser at each marked place of a network (``self(x, rate,
    name)``); DropBlock layers are seeded ``seed``, ``seed + 1``, ... in build order."""

    def __init__(self, kind, rank, block_size=7, gamma_mode="paper", seed=0):
        self.kind = check_choice("regulariser", kind, REGULARISERS)
        self.rank = rank
        self.block_size = block_size
        self.gamma_mode = check_choice("gamma_mode", gamma_mode, GAMMA_MODES)
        self.seed = seed
        self.count = 0

    def __call__(self, x, rate, name):
        if self.kind == "none" or rate is None:
            return x
        self.count += 1
        layer_seed = self.seed + self.count
        if self.kind == "dropout":
            return keras.layers.Dropout(rate, seed=layer_seed, name=name)(x)
        if self.kind == "spatial":
            return _SPATIAL[self.rank](rate, seed=layer_seed, name=name)(x)
        return _DROPBLOCK[self.rank](rate, self.block_size, seed=layer_seed,
                                     gamma_mode=self.gamma_mode, name=name)(x)


def _basic_block(x, rank, filters, strides, prefix, regularise, rate):
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        shortcut = common.conv_bn(x, rank, filters, 1, strides, f"{prefix}_0", relu=False)
        shortcut = regularise(shortcut, rate, f"{prefix}_0_drop")
    x = common.conv_bn(x, rank, filters, 3, strides, f"{prefix}_1")
    x = regularise(x, rate, f"{prefix}_1_drop")
    x = common.conv_bn(x, rank, filters, 3, 1, f"{prefix}_2", relu=False, zero_gamma=True)
    x = regularise(x, rate, f"{prefix}_2_drop")
    x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def _residual_net(rank, input_shape, strides, width, regularise, rate, name):
    """Stem conv, then one basic block per group; the regulariser in groups 2 and 3, group 2
    at a quarter of group 3's rate (the authors' rule for their groups 3 and 4)."""
    rates = {1: None, 2: common.group_rate(rate, 2, 3), 3: rate}
    inputs = keras.Input(input_shape, name="image")
    x = common.conv_bn(inputs, rank, width, 3, 1, "stem")
    for group, (stride, filters) in enumerate(zip(strides, (width, 2 * width, 4 * width)), 1):
        x = _basic_block(x, rank, filters, stride, f"group{group}", regularise, rates[group])
    pool = keras.layers.GlobalAveragePooling2D if rank == 2 else keras.layers.GlobalAveragePooling1D
    x = pool(name="avg_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(x), name=name)


def image_net(regulariser="none", rate=0.1, block_size=7, gamma_mode="paper", width=16, seed=0):
    """The 2-D network: 28x28x1 -> 10 logits; groups 2 and 3 at 14x14."""
    regularise = Regulariser(regulariser, 2, block_size, gamma_mode, seed)
    return _residual_net(2, (28, 28, 1), (1, 2, 1), width, regularise, rate, "fmnist_resnet")


def sequence_net(regulariser="none", rate=0.1, block_size=5, gamma_mode="paper", width=16,
                 seed=0):
    """The 1-D network: 28 steps x 28 features -> 10 logits, length 28 throughout."""
    regularise = Regulariser(regulariser, 1, block_size, gamma_mode, seed)
    return _residual_net(1, (28, 28), (1, 1, 1), width, regularise, rate, "fmnist_seqnet")


def as_images(x):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (np.asarray(x, np.float32) / 255.0)[..., None]


def as_sequences(x):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28): 28 steps (rows) of 28 features."""
    return np.asarray(x, np.float32) / 255.0


def train(model, x, y, epochs, batch_size=128, learning_rate=2e-3, seed=0):
    """Adam with cosine decay, DropBlock ramped over the whole run. Returns seconds taken."""
    keras.utils.set_random_seed(seed)
    steps = epochs * -(-len(y) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)  # graph mode is faster on CPU
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[DropBlockScheduler(ramp_steps=steps)])
    return time.perf_counter() - start


def accuracy(model, x, y, batch_size=1000):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))
