"""Helpers shared by the reference models: argument checks, DropBlock placement, seeded weights."""

from __future__ import annotations

import keras
import numpy as np

from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D
from tfdropblock import validation
from tfdropblock.validation import is_int

# Every reference model is channels_last whatever keras.config.image_data_format() says:
# TensorFlow's CPU kernels and TFLite only run NHWC convolutions, and the DropBlock layers
# would otherwise pick the global default and disagree with the convolutions.
DATA_FORMAT = "channels_last"

DROPBLOCK_BY_RANK = {1: DropBlock1D, 2: DropBlock2D, 3: DropBlock3D}


def check_positive_int(value, arg):
    if not is_int(value) or value < 1:
        raise ValueError(f"Invalid {arg}={value!r}: expected an int >= 1.")
    return int(value)


def check_int_tuple(value, arg, length, minimum=1):
    """A tuple of ``length`` ints, each >= ``minimum``."""
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != length or not all(is_int(v) and v >= minimum for v in items):
        raise ValueError(
            f"Invalid {arg}={value!r}: expected a tuple of {length} ints >= {minimum}.")
    return tuple(int(v) for v in items)


def check_input_shape(input_shape, spatial_rank, arg="input_shape"):
    """``(spatial..., channels)`` with every dim a static positive int.

    DropBlock sizes its blocks and gamma from the static spatial shape, so ``None`` dims are
    refused here rather than deep inside the first DropBlock layer.
    """
    return check_int_tuple(input_shape, f"{arg} (static {spatial_rank} spatial dims + channels)",
                           spatial_rank + 1)


def check_groups(groups, num_groups, arg="dropblock_groups"):
    try:
        items = tuple(groups)
    except TypeError:
        items = None
    valid = tuple(range(1, num_groups + 1))
    if items is None or not all(is_int(g) and g in valid for g in items):
        raise ValueError(
            f"Invalid {arg}={groups!r}: expected a tuple of group numbers from {valid} "
            "(empty for no DropBlock).")
    return tuple(sorted(set(int(g) for g in items)))


def group_rate(rate, group, num_groups):
    """The authors' per-group rate: the last group at ``rate``, each earlier group at a quarter
    of the next one (their ``1 - (1 - keep_prob) / 4 ** (4 - group)``)."""
    return rate / 4.0 ** (num_groups - group)


class DropBlockPlacer:
    """Creates the DropBlock layers of one model with consistent settings.

    With an int ``seed`` every layer gets ``seed + i`` (``i`` counts layers in build order), so
    two builds draw the same masks; with ``None`` each layer seeds itself at random.
    """

    def __init__(self, spatial_rank, rate, block_size, seed, share_channels, gamma_mode):
        self.cls = DROPBLOCK_BY_RANK[spatial_rank]
        self.rate = validation.check_rate(rate)
        self.block_size = validation.check_block_size(block_size, spatial_rank)
        if seed is not None and not is_int(seed):
            raise TypeError(f"Invalid seed={seed!r}: expected an int or None.")
        self.seed = seed
        self.share_channels = bool(share_channels)
        self.gamma_mode = validation.check_gamma_mode(gamma_mode)
        self.count = 0

    def __call__(self, x, rate, name):
        seed = None if self.seed is None else self.seed + self.count
        self.count += 1
        return self.cls(rate=rate, block_size=self.block_size, seed=seed,
                        data_format=DATA_FORMAT, share_channels=self.share_channels,
                        gamma_mode=self.gamma_mode, name=name)(x)


def maybe_drop(x, placer, rate, name):
    """``placer(x)`` when this stage has DropBlock (``rate`` not None), else ``x``."""
    return x if rate is None else placer(x, rate, name)


def stage_rates(rate, groups, num_groups):
    """Per-stage rate (None where the stage has no DropBlock), stages numbered from 1."""
    return {g: (group_rate(rate, g, num_groups) if g in groups else None)
            for g in range(1, num_groups + 1)}


_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def seeded_weights(model, seed=0):
    """Overwrite every weight of ``model`` with draws from ``numpy.random.default_rng(seed)``.

    Independent of ``keras.utils.set_random_seed`` and of how many layers were built before:
    the same architecture and seed always give the same weights. Kernels are He-normal,
    biases and BatchNorm shifts small, BatchNorm scales and moving statistics spread around 1
    and 0 so that an inference graph exercises every term (unlike the all-ones/all-zeros
    defaults, which let a broken BatchNorm fold go unnoticed). DropBlock rates and other
    non-trainable state that is not a BatchNorm statistic are left alone.

    Args:
        model: a built Keras model.
        seed: int seed of the numpy generator.

    Returns:
        ``model``, for chaining.

    Example:
        >>> model = seeded_weights(resnet50_dropblock((64, 64, 3), 10, width=8), seed=0)
    """
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built: build it before seeding its weights.")
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        name = variable.name
        if name in _KERNEL_NAMES:
            if name == "depthwise_kernel":
                fan_in = int(np.prod(shape[:-2]))
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            value = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
        elif name == "bias" or name == "beta":
            value = rng.normal(0.0, 0.05, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.0, shape)
        elif name == "moving_mean":
            value = rng.normal(0.0, 0.1, shape)
        elif name == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.trainable:
            value = rng.normal(0.0, 0.05, shape)
        else:
            continue
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return model


_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
_PAD = {1: keras.layers.ZeroPadding1D, 2: keras.layers.ZeroPadding2D,
        3: keras.layers.ZeroPadding3D}
_POOL = {1: keras.layers.MaxPooling1D, 2: keras.layers.MaxPooling2D,
         3: keras.layers.MaxPooling3D}
_GAP = {1: keras.layers.GlobalAveragePooling1D, 2: keras.layers.GlobalAveragePooling2D,
        3: keras.layers.GlobalAveragePooling3D}
_GMP = {1: keras.layers.GlobalMaxPooling1D, 2: keras.layers.GlobalMaxPooling2D,
        3: keras.layers.GlobalMaxPooling3D}

# The authors' TPU ResNet uses these BatchNorm constants (decay 0.9, epsilon 1e-5).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def per_axis(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def conv_bn(x, rank, filters, kernel_size, strides, name, relu=True, zero_gamma=False):
    """Conv (no bias) + BatchNorm (+ ReLU), with the authors' fixed padding for strided convs.

    A strided 'same' convolution pads by an amount that depends on the input size; padding
    explicitly by ``k - 1`` split before/after, then a 'valid' convolution, makes the output
    independent of the input parity, as ``conv2d_fixed_padding`` does in the authors' code.
    """
    kernel = per_axis(kernel_size, rank)
    stride = per_axis(strides, rank)
    padding = "same"
    if any(s > 1 for s in stride):
        pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
        if any(sum(p) for p in pads):
            if rank == 1:
                x = _PAD[1](pads[0], name=f"{name}_pad")(x)
            else:
                x = _PAD[rank](tuple(pads), data_format=DATA_FORMAT, name=f"{name}_pad")(x)
        padding = "valid"
    x = _CONV[rank](filters, kernel, strides=stride, padding=padding, use_bias=False,
                    data_format=DATA_FORMAT, kernel_initializer="he_normal",
                    name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones", name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def max_pool(x, rank, pool_size, strides, name):
    return _POOL[rank](per_axis(pool_size, rank), strides=per_axis(strides, rank),
                       padding="same", data_format=DATA_FORMAT, name=name)(x)


def head(x, rank, include_top, num_classes, pooling, classifier_activation):
    """Global pooling + classifier, or the feature map / pooled features without a top."""
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"Invalid pooling={pooling!r}: expected None, 'avg' or 'max'.")
    if include_top:
        x = _GAP[rank](data_format=DATA_FORMAT, name="avg_pool")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation,
                                  name="predictions")(x)
    if pooling == "avg":
        return _GAP[rank](data_format=DATA_FORMAT, name="avg_pool")(x)
    if pooling == "max":
        return _GMP[rank](data_format=DATA_FORMAT, name="max_pool")(x)
    return x
