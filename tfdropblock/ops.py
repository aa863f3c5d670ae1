"""The DropBlock training transform (Ghiasi et al., 2018, Algorithm 1) as plain TensorFlow ops.

Built for XLA: every shape that sizes a pool or enters gamma is static, noise comes from the
philox counter-based generator (the default algorithm is two orders of magnitude slower under
XLA on CPU), blocks grow through one max pool per axis instead of one N-D pool, and the mask is
cast to the input dtype once, at the end.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

from tfdropblock.gamma import GAMMA_MODES, clamp_block, gamma_tensor

DATA_FORMATS = ("channels_last", "channels_first")
_TWO_POW_32 = 4294967296.0


def check_rate(rate):
    """Validate a static drop rate: a real number in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"Invalid rate={rate!r}: expected a float in [0, 1).")
    if math.isnan(rate) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Invalid rate={rate!r}: expected a float in [0, 1).")
    return float(rate)


def check_block_size(block_size, rank):
    """Normalise ``block_size`` to a tuple of ``rank`` positive ints."""
    sizes = (block_size,) * rank if _is_int(block_size) else block_size
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = ()
    if len(sizes) != rank or not all(_is_int(b) and b > 0 for b in sizes):
        raise ValueError(
            f"Invalid block_size={block_size!r}: expected a positive int or a tuple of "
            f"{rank} positive ints (one per spatial axis)."
        )
    return tuple(int(b) for b in sizes)


def check_data_format(data_format):
    if data_format is None:
        import keras

        data_format = keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(f"Invalid data_format={data_format!r}: expected one of {DATA_FORMATS}.")
    return data_format


def check_gamma_mode(gamma_mode):
    if gamma_mode not in GAMMA_MODES:
        raise ValueError(f"Invalid gamma_mode={gamma_mode!r}: expected one of {GAMMA_MODES}.")
    return gamma_mode


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def spatial_shape_of(shape, rank, data_format):
    """Static spatial dims of a ``rank + 2``-D input shape; raises if the rank is wrong."""
    shape = tuple(shape)
    if len(shape) != rank + 2:
        raise ValueError(
            f"Invalid input rank: DropBlock{rank}D expects {rank + 2}-D inputs "
            f"(batch, {rank} spatial axes, channels), received shape {shape}."
        )
    return shape[1:-1] if data_format == "channels_last" else shape[2:]


def drop_mask(x, rate, block_size, seed, data_format="channels_last",
              share_channels=False, gamma_mode="paper"):
    """Float32 keep-mask (1 kept, 0 dropped), not yet rescaled.

    Args:
        x: the input: static spatial dims; batch and channels may be dynamic.
        rate: drop rate, a float or a scalar tensor (e.g. a variable ramped by a schedule).
        block_size: tuple of per-axis block sizes, one per spatial axis.
        seed: int64 tensor of shape (2,) for the stateless generator.
    Returns:
        The mask, broadcastable to the input: one channel when ``share_channels``.
    """
    rank = len(block_size)
    shape = x.shape.as_list()
    spatial = spatial_shape_of(shape, rank, data_format)
    if any(s is None for s in spatial):
        raise ValueError(
            f"DropBlock needs static spatial dimensions to size its blocks, received {spatial}; "
            "give the model an input shape with fixed spatial sizes."
        )
    block = clamp_block(spatial, block_size)
    gamma = gamma_tensor(rate, spatial, block, gamma_mode)

    dynamic = tf.shape(x)
    batch = shape[0] if shape[0] is not None else dynamic[0]
    channel_axis = -1 if data_format == "channels_last" else 1
    channels = 1 if share_channels else shape[channel_axis]
    if channels is None:
        channels = dynamic[channel_axis]
    grid = [s - b + 1 for s, b in zip(spatial, block)]

    # Seeds live on the valid grid only, so every block they grow lies inside the map by
    # construction. Channels-first maps are folded into the batch to pool them as NHWC.
    if data_format == "channels_last":
        noise_shape = [batch, *grid, channels]
    else:
        noise_shape = [batch * channels, *grid, 1]
    bits = tf.random.stateless_uniform(
        tf.stack(noise_shape) if _has_tensor(noise_shape) else noise_shape,
        seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox")
    threshold = tf.cast(tf.minimum(tf.cast(gamma, tf.float64) * _TWO_POW_32, _TWO_POW_32 - 1),
                        tf.uint32)
    seeds = tf.cast(bits < threshold, tf.float32)

    for axis, b in enumerate(block, start=1):
        if b == 1:
            continue
        paddings = [[0, 0]] * (rank + 2)
        paddings[axis] = [b - 1, b - 1]
        window = [1] * (rank + 2)
        window[axis] = b
        seeds = tf.nn.max_pool(tf.pad(seeds, paddings), window, strides=1, padding="VALID")
    keep = 1.0 - seeds
    if data_format == "channels_first":
        keep = tf.reshape(keep, tf.stack([batch, channels, *spatial])
                          if _has_tensor([batch, channels]) else [batch, channels, *spatial])
    return keep


def dropblock(x, rate, block_size, seed, *, training=True, data_format="channels_last",
              share_channels=False, gamma_mode="paper"):
    """Apply DropBlock to ``x`` (functional form of the layers).

    Args:
        x: float tensor of rank 3, 4 or 5 (1, 2 or 3 spatial axes), static spatial dims.
        rate: probability of dropping a unit, in [0, 1); a float or scalar tensor.
        block_size: int, or tuple of per-axis sizes; clamped to the map.
        seed: int, or int tensor of shape (2,): the stateless seed.
        training: ``False``/``None`` returns ``x`` itself.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        share_channels: one mask per sample, shared by all channels.
        gamma_mode: ``"paper"`` (the paper's formula) or ``"exact"`` (expected drop = rate).

    Example:
        >>> y = dropblock(tf.ones((2, 14, 14, 8)), 0.1, 7, seed=42)
    """
    if not training:
        return x
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"DropBlock expects a floating-point input, received dtype {x.dtype.name}.")
    rank = x.shape.rank - 2 if x.shape.rank is not None else None
    if rank not in (1, 2, 3):
        raise ValueError(
            f"Invalid input rank: DropBlock expects 3-D, 4-D or 5-D inputs, received shape {x.shape}."
        )
    if isinstance(rate, numbers.Number):
        check_rate(rate)
    data_format = check_data_format(data_format)
    block = check_block_size(block_size, rank)
    if _is_int(seed):
        seed = tf.constant([seed, 0], tf.int64)
    keep = drop_mask(x, rate, block, seed, data_format, share_channels,
                     check_gamma_mode(gamma_mode))
    return apply_mask(x, keep)


def apply_mask(x, keep):
    """``x * keep * count(keep) / count_ones(keep)``, counted over the whole batch.

    An all-dropped mask gives zeros, not NaN. Gradients flow through the kept units only,
    scaled like the forward pass.
    """
    total = tf.cast(tf.size(keep), tf.float32)
    scale = total / tf.maximum(tf.reduce_sum(keep), 1.0)
    return x * tf.cast(keep * scale, x.dtype)


def _has_tensor(values):
    return any(isinstance(v, tf.Tensor) for v in values)
