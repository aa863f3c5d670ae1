"""Argument checks for the layers, the functional form and the numpy-side helpers, in one place.

Each names the argument and the values it accepts. TensorFlow and Keras are imported only by
the checks that need them, so that ``tfdropblock.gamma`` validates its arguments without
loading TensorFlow.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

GAMMA_MODES = ("paper", "exact")
DATA_FORMATS = ("channels_last", "channels_first")


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


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {name}={value!r}: expected True or False.")
    return bool(value)


def check_float_input(x, who="DropBlock"):
    import keras

    if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
        raise TypeError(f"{who} expects a floating-point input, received dtype "
                        f"{keras.backend.standardize_dtype(x.dtype)}.")


def check_seed(seed):
    """A stateless seed tensor from an int, a ``SeedGenerator`` or a (2,) integer tensor."""
    import keras
    import tensorflow as tf

    if isinstance(seed, keras.random.SeedGenerator):
        return seed.next()
    if is_int(seed):
        return tf.constant([seed, 0], tf.int64)
    if isinstance(seed, (tf.Tensor, tf.Variable, np.ndarray, list, tuple)):
        tensor = tf.convert_to_tensor(seed)
        if tensor.dtype in (tf.int32, tf.int64) and tensor.shape.as_list() == [2]:
            return tensor
    raise TypeError(f"Invalid seed={seed!r}: expected an int, a keras.random.SeedGenerator or an "
                    "int32/int64 tensor of shape (2,).")



def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_rate(rate):
    """Validate a static drop rate: a real number in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"Invalid rate={rate!r}: expected a float in [0, 1).")
    if math.isnan(rate) or not 0.0 <= rate < 1.0:
        raise ValueError(f"Invalid rate={rate!r}: expected a float in [0, 1).")
    return float(rate)


def check_block_size(block_size, rank):
    """Normalise ``block_size`` to a tuple of ``rank`` positive ints (an int goes to every axis)."""
    sizes = (block_size,) * rank if is_int(block_size) else block_size
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = ()
    if len(sizes) != rank or not all(is_int(b) and b > 0 for b in sizes):
        raise ValueError(
            f"Invalid block_size={block_size!r}: expected a positive int or a tuple of "
            f"{rank} positive ints (one per spatial axis)."
        )
    return tuple(int(b) for b in sizes)


def check_spatial_shape(spatial_shape):
    """Normalise the map's spatial size to a non-empty tuple of positive ints."""
    try:
        sizes = tuple(spatial_shape)
    except TypeError:
        sizes = ()
    if not sizes or not all(is_int(s) and s > 0 for s in sizes):
        raise ValueError(f"Invalid spatial_shape={spatial_shape!r}: expected a tuple of positive "
                         "ints, one per spatial axis, e.g. (28, 28).")
    return tuple(int(s) for s in sizes)


def check_gamma(gamma):
    """Validate a seed probability: a real number in [0, 1]."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or math.isnan(gamma) \
            or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Invalid gamma={gamma!r}: expected a float in [0, 1].")
    return float(gamma)
