"""Seed probability (gamma) for DropBlock, and the exact expected drop fraction.

Seeds are sampled only in the valid seed region: the positions whose whole block lies inside the
map, ``S - b + 1`` per axis. A unit ``u`` is dropped when any of the ``k(u)`` valid seeds whose
block covers it fires, so with independent seeds::

    E[dropped fraction] = mean_u (1 - (1 - gamma) ** k(u))

The paper's gamma ignores block overlap, so its realised drop fraction is a little below ``rate``;
``"exact"`` solves the equation above for gamma instead, making the expectation equal ``rate``.
"""

from __future__ import annotations

import functools

import numpy as np

from tfdropblock.validation import (GAMMA_MODES, check_block_size, check_gamma, check_rate,
                                check_spatial_shape, is_int)


def _shape_and_block(spatial_shape, block_size):
    shape = check_spatial_shape(spatial_shape)
    return shape, clamp_block(shape, check_block_size(block_size, len(shape)))


def clamp_block(spatial_shape, block_size):
    """Per-axis block clamped to the map, so a block larger than the map covers it whole."""
    return tuple(min(int(b), int(s)) for b, s in zip(block_size, spatial_shape))


def axis_coverage(size: int, block: int) -> np.ndarray:
    """For each position of one axis, how many valid seed positions' blocks cover it."""
    u = np.arange(size)
    return np.minimum(u, size - block) - np.maximum(0, u - block + 1) + 1


@functools.lru_cache(maxsize=256)
def coverage_histogram(spatial_shape: tuple, block: tuple):
    """Distinct coverage counts ``k`` and the fraction of units having each.

    Coverage is separable: ``k(u)`` is the product of the per-axis counts.
    """
    k = np.ones((), dtype=np.int64)
    for size, b in zip(spatial_shape, block):
        k = np.multiply.outer(k, axis_coverage(size, b))
    values, counts = np.unique(k, return_counts=True)
    return values.astype(np.float64), counts / counts.sum()


def paper_gamma(rate, spatial_shape, block) -> float:
    """Gamma from the paper's formula, with the valid seed region of the clamped block."""
    return min(1.0, float(rate) * paper_gamma_factor(spatial_shape, block))


def paper_gamma_factor(spatial_shape, block) -> float:
    """``gamma / rate`` in the paper's formula: units per block-area per valid seed."""
    units = np.prod(spatial_shape, dtype=np.float64)
    area = np.prod(block, dtype=np.float64)
    seeds = np.prod([s - b + 1 for s, b in zip(spatial_shape, block)], dtype=np.float64)
    return float(units / area / seeds)


def _drop_fraction(gamma, spatial_shape, block):
    k, weight = coverage_histogram(spatial_shape, block)
    return float(np.sum(weight * (1.0 - (1.0 - gamma) ** k)))


def expected_drop_fraction(gamma, spatial_shape, block_size) -> float:
    """Exact expected fraction of dropped units for a given seed probability.

    ``spatial_shape`` is the map's size, one int per axis; ``block_size`` an int (every axis) or
    one int per axis, clamped to the map as the layers do.
    """
    shape, block = _shape_and_block(spatial_shape, block_size)
    return _drop_fraction(check_gamma(gamma), shape, block)


def exact_gamma(rate, spatial_shape, block_size) -> float:
    """Gamma whose exact expected drop fraction equals ``rate`` (float64 bisection)."""
    rate = check_rate(rate)
    shape, block = _shape_and_block(spatial_shape, block_size)
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _drop_fraction(mid, shape, block) < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def gamma_for(rate, spatial_shape, block_size, mode: str = "paper") -> float:
    """Python-side gamma for a static rate, in either mode (used by tests and tools).

    ``rate`` in [0, 1); ``spatial_shape`` one int per axis; ``block_size`` an int (every axis)
    or one int per axis, clamped to the map.
    """
    rate = check_rate(rate)
    shape, block = _shape_and_block(spatial_shape, block_size)
    if mode == "paper":
        return paper_gamma(rate, shape, block)
    if mode == "exact":
        return exact_gamma(rate, shape, block)
    raise ValueError(f"Invalid gamma_mode={mode!r}: expected one of {GAMMA_MODES}.")


def gamma_tensor(rate, spatial_shape, block, mode: str):
    """Gamma as a float32 tensor from a (possibly variable) rate tensor, on any Keras backend.

    ``spatial_shape`` and the clamped ``block`` are ints, or (TensorFlow only) scalar tensors
    for a map whose size is known only at run time. The exact mode runs a few Newton steps on
    the coverage equation, starting from the paper's gamma: the equation is concave and
    increasing in gamma and the paper's gamma never exceeds the root, so the iterates climb to
    the root without overshooting. With static sizes everything but ``rate`` is a compile-time
    constant, which keeps an XLA graph static.
    """
    from keras import ops

    static = all(is_int(v) for v in (*spatial_shape, *block))
    # A rate tensor cannot be validated without ops; clipping keeps it meaningful instead.
    rate = ops.clip(ops.cast(rate, "float32"), 0.0, 1.0)
    if static:
        factor = paper_gamma_factor(spatial_shape, block)
    else:
        import tensorflow as tf

        sizes = [tf.cast(s, tf.float32) for s in spatial_shape]
        blocks = [tf.cast(b, tf.float32) for b in block]
        factor = (_product(sizes) / _product(blocks)
                  / _product([s - b + 1.0 for s, b in zip(sizes, blocks)]))
    gamma = ops.minimum(rate * factor, 1.0)
    if mode == "paper":
        return gamma
    if static:
        k, weight = coverage_histogram(tuple(int(s) for s in spatial_shape),
                                       tuple(int(b) for b in block))
        k, weight = ops.convert_to_tensor(k, "float32"), ops.convert_to_tensor(weight, "float32")
    else:
        k, weight = _coverage_tensor(spatial_shape, block)
    for _ in range(_NEWTON_STEPS):
        keep = 1.0 - gamma
        excess = ops.sum(weight * (1.0 - keep**k)) - rate
        slope = ops.sum(weight * k * keep ** (k - 1.0))
        gamma = ops.clip(gamma - excess / ops.maximum(slope, 1e-12), 0.0, 1.0)
    return gamma


def _coverage_tensor(spatial_shape, block):
    """``k(u)`` of every unit of a map sized at run time, flattened, and the weight of a unit.

    The graph-side :func:`axis_coverage` and its outer product: one value per unit rather than
    a histogram, which needs no sort and costs little next to the mask (a map, not a batch).
    """
    import tensorflow as tf

    k = tf.ones([], tf.float32)
    for size, b in zip(spatial_shape, block):
        u = tf.range(size)
        count = tf.minimum(u, size - b) - tf.maximum(0, u - b + 1) + 1
        k = k[..., None] * tf.cast(count, tf.float32)
    k = tf.reshape(k, [-1])
    return k, 1.0 / tf.cast(tf.size(k), tf.float32)


def _product(values):
    out = values[0]
    for v in values[1:]:
        out = out * v
    return out


_NEWTON_STEPS = 8


# --- The seed probability the layers realise with dense seeds ----------------------------------
#
# In graph mode, up to ``tfdropblock.tf_ops.SPARSE_MAX_RATE``, the layers draw the gaps between
# seeds in float64 and realise gamma itself. Under XLA, and in graph mode above that rate, they
# compare 16 random bits per seed with a threshold that is rounded up or down at
# random once per call (``tfdropblock.tf_ops._seed_threshold``): a call realises the seed
# probability ``floor(gamma * 2**16 + r) / 2**16`` with ``r ~ U[0, 1)``. Any one call is within
# 2**-16 of gamma (relative error below ``2**-16 / gamma``: 0.46% for the paper's 28x28 map,
# block 7, rate 0.1, where gamma = 3.3e-3), and over calls the mean is gamma exactly, capped at
# ``1 - 2**-16``. For that map one call's expected drop fraction lies in 0.0937 to 0.0941
# (0.0939 over calls): at most 0.24 standard deviations of the drop fraction that one
# (32, 28, 28, 128) batch realises by chance.

SEED_BITS = 16
_QUANTUM = 2.0**-SEED_BITS


def realised_gammas(gamma):
    """The two seed probabilities one call can realise for ``gamma``, with their odds.

    Returns:
        ``((low, p_low), (high, p_high))``: consecutive multiples of 2**-16 around ``gamma``;
        ``p_high = gamma * 2**16 - floor(gamma * 2**16)``.
    """
    scaled = min(max(float(gamma), 0.0), 1.0) / _QUANTUM
    low = float(np.floor(scaled))
    frac = scaled - low
    cap = 1.0 / _QUANTUM - 1.0  # the threshold is at most 2**16 - 1
    return ((min(low, cap) * _QUANTUM, 1.0 - frac), (min(low + 1.0, cap) * _QUANTUM, frac))


def effective_gamma(gamma) -> float:
    """Mean seed probability of the dense (16-bit) seeds for ``gamma``: gamma, capped at
    ``1 - 2**-16``."""
    return float(sum(g * p for g, p in realised_gammas(gamma)))


def effective_drop_fraction(gamma, spatial_shape, block_size) -> float:
    """Exact expected dropped fraction of the layers over calls, for seed probability ``gamma``.

    The mix of :func:`expected_drop_fraction` at the two per-call seed probabilities; it differs
    from ``expected_drop_fraction(gamma, ...)`` by a second-order term (below 1e-7 for the paper's
    settings), far under the sampling noise of any test.
    """
    shape, block = _shape_and_block(spatial_shape, block_size)
    return float(sum(p * _drop_fraction(g, shape, block)
                     for g, p in realised_gammas(check_gamma(gamma)) if p > 0))
