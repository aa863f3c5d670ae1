"""The DropBlock training transform (Ghiasi et al., 2018, Algorithm 1) on ``keras.ops`` and
``keras.random``: one algorithm that every Keras backend runs, and the one switch to the
TensorFlow fast paths.

:func:`keras_drop` is the algorithm. On the TensorFlow backend the layers take the
TensorFlow-specific implementation in :mod:`tfdropblock.tf_ops` instead (graph mode draws seeds
sparsely, XLA bit-packs them; sizes known only at run time work there), which draws the same
distribution; ``IMPLEMENTATION = "keras"`` sends TensorFlow through :func:`keras_drop` too. The
statistical tests hold both to the exact expectation.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np

from tfdropblock.gamma import gamma_tensor
from tfdropblock.validation import (check_block_size, check_bool, check_data_format,
                                    check_float_input, check_gamma_mode, check_rate, is_int)

# The one switch: "auto" takes tfdropblock.tf_ops on the TensorFlow backend and keras_drop on
# every other; "keras" takes keras_drop everywhere. Read when a training call is traced.
IMPLEMENTATIONS = ("auto", "keras")
IMPLEMENTATION = "auto"


def uses_tensorflow_path():
    """True when training calls run :mod:`tfdropblock.tf_ops` (see ``IMPLEMENTATION``)."""
    if IMPLEMENTATION not in IMPLEMENTATIONS:
        raise ValueError(f"Invalid tfdropblock.ops.IMPLEMENTATION={IMPLEMENTATION!r}: expected "
                         f"one of {IMPLEMENTATIONS}.")
    return IMPLEMENTATION == "auto" and keras.backend.backend() == "tensorflow"


def spatial_shape_of(shape, rank, data_format):
    """Static spatial dims of a ``rank + 2``-D input shape; raises if the rank is wrong."""
    shape = tuple(shape)
    if len(shape) != rank + 2:
        raise ValueError(
            f"Invalid input rank: DropBlock{rank}D expects {rank + 2}-D inputs "
            f"(batch, {rank} spatial axes, channels), received shape {shape}."
        )
    return shape[1:-1] if data_format == "channels_last" else shape[2:]


def drop(x, rate, block_size, seed, data_format="channels_last", share_channels=False,
         gamma_mode="paper", max_rate=None):
    """``x`` times its rescaled DropBlock mask, on the implementation the switch picks.

    ``seed`` is an int, a ``keras.random.SeedGenerator`` or a (2,) integer seed tensor;
    ``max_rate``, a Python float, is the highest value a tensor ``rate`` takes (a layer's
    configured rate, which a schedule only scales down; the TensorFlow path picks its seed
    layout from it). Other arguments as in :func:`dropblock`, already checked.
    """
    spatial_shape_of(x.shape, len(block_size), data_format)  # checks the rank
    if uses_tensorflow_path():
        from tfdropblock import tf_ops

        return tf_ops.drop(x, rate, block_size, tf_ops.stateless_seed(seed), data_format,
                           share_channels, gamma_mode, max_rate=max_rate)
    return keras_drop(x, rate, block_size, seed, data_format, share_channels, gamma_mode)


def keras_drop(x, rate, block_size, seed, data_format="channels_last", share_channels=False,
               gamma_mode="paper"):
    """Algorithm 1 on ``keras.ops``, torchvision's way: seeds on the valid grid, then padded.

    1. Seeds ~ Bernoulli(gamma) only where a whole block fits: ``S - b + 1`` positions per axis
       of the block clamped to the map (``b = min(block, S)``), per sample and channel (one
       channel with ``share_channels``), from float32 noise;
    2. grow: pad ``b - 1`` zeros on both sides of each axis and take the max over windows of
       ``b``, one axis at a time, so a seed at ``j`` drops ``[j, j + b - 1]``, inside the map;
    3. ``x * keep * count(keep) / count_ones(keep)``, counted over the whole batch (zeros, not
       NaN, when everything is dropped), the mask cast once to ``x``'s dtype.

    Spatial dims must be static (JAX and torch compile or run per shape; TensorFlow with
    unknown spatial dims takes :mod:`tfdropblock.tf_ops`); the batch may be unknown.
    """
    rank = len(block_size)
    channel_axis = 1 if data_format == "channels_first" else rank + 1
    axes = list(range(2, rank + 2)) if channel_axis == 1 else list(range(1, rank + 1))
    shape = list(x.shape)
    if any(not is_int(shape[a]) for a in axes):
        raise ValueError(f"DropBlock{rank}D on the {keras.backend.backend()} backend needs "
                         f"static spatial dims, received shape {tuple(shape)}.")
    used = [min(b, shape[a]) for a, b in zip(axes, block_size)]
    gamma = gamma_tensor(rate, [shape[a] for a in axes], used, gamma_mode)
    noise_shape = list(keras.ops.shape(x))
    noise_shape[channel_axis] = 1 if share_channels else noise_shape[channel_axis]
    for a, b in zip(axes, used):
        noise_shape[a] -= b - 1
    dropped = keras.ops.cast(keras.random.uniform(noise_shape, seed=seed) < gamma, "float32")
    for a, b in zip(axes, used):
        if b > 1:
            padding = [(0, 0)] * len(shape)
            padding[a] = (b - 1, b - 1)
            window = [1] * rank
            window[axes.index(a)] = b
            dropped = keras.ops.max_pool(keras.ops.pad(dropped, padding), tuple(window), strides=1,
                                         padding="valid", data_format=data_format)
    keep = 1.0 - dropped
    total = keras.ops.cast(keras.ops.size(keep), "float32")
    scale = total / keras.ops.maximum(keras.ops.sum(keep), 1.0)
    return x * keras.ops.cast(keep * scale, x.dtype)


def keras_seed(seed):
    """What ``keras.random`` takes as a seed, from what :func:`dropblock` accepts."""
    if isinstance(seed, keras.random.SeedGenerator):
        return seed
    if is_int(seed):
        return int(seed)
    if keras.backend.backend() == "jax" and not isinstance(seed, (str, bytes)):
        try:
            value = np.asarray(seed)
        except Exception:  # noqa: BLE001 - a traced seed: JAX takes it as it is
            value = None
        if value is None or (value.shape == (2,) and np.issubdtype(value.dtype, np.integer)):
            return keras.ops.cast(seed, "uint32")
    raise TypeError(f"Invalid seed={seed!r}: expected an int, a keras.random.SeedGenerator or, "
                    "on the TensorFlow and JAX backends, an integer tensor of shape (2,).")


def dropblock(x, rate, block_size, seed, *, training=True, data_format="channels_last",
              share_channels=False, gamma_mode="paper"):
    """Apply DropBlock to ``x`` (functional form of the layers), on any Keras backend.

    Args:
        x: float tensor of rank 3, 4 or 5 (1, 2 or 3 spatial axes); on TensorFlow, spatial
            dims may be unknown until run time.
        rate: probability of dropping a unit, in [0, 1); a float, or a scalar tensor (clipped
            to [0, 1], since a tensor's value cannot be checked without adding ops).
        block_size: int, or tuple of per-axis sizes; clamped to the map.
        seed: an int (the same mask at every call, as ``tf.random.stateless_*``), a
            ``keras.random.SeedGenerator`` (a new mask at every call), or a stateless seed
            tensor of two ints (TensorFlow and JAX).
        training: ``False``/``None`` returns ``x`` itself.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        share_channels: one mask per sample, shared by all channels.
        gamma_mode: ``"paper"`` (the paper's formula) or ``"exact"`` (expected drop = rate).

    Example:
        >>> y = dropblock(keras.ops.ones((2, 14, 14, 8)), 0.1, 7, seed=42)
    """
    if not training:
        return x
    x = keras.ops.convert_to_tensor(x)
    check_float_input(x)
    try:
        rank = len(x.shape) - 2
    except (TypeError, ValueError):  # a TensorFlow tensor of unknown rank
        rank = None
    if rank not in (1, 2, 3):
        raise ValueError(f"Invalid input rank: DropBlock expects 3-D, 4-D or 5-D inputs, "
                         f"received shape {x.shape}.")
    if isinstance(rate, numbers.Number):
        check_rate(rate)
    data_format = check_data_format(data_format)
    block = check_block_size(block_size, rank)
    share_channels = check_bool(share_channels, "share_channels")
    gamma_mode = check_gamma_mode(gamma_mode)
    if not uses_tensorflow_path():
        seed = keras_seed(seed)
    return drop(x, rate, block, seed, data_format, share_channels, gamma_mode)
