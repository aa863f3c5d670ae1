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

GAMMA_MODES = ("paper", "exact")


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


def expected_drop_fraction(gamma, spatial_shape, block_size) -> float:
    """Exact expected fraction of dropped units for a given seed probability."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    block = clamp_block(spatial_shape, block_size)
    k, weight = coverage_histogram(spatial_shape, block)
    return float(np.sum(weight * (1.0 - (1.0 - float(gamma)) ** k)))


def exact_gamma(rate, spatial_shape, block_size) -> float:
    """Gamma whose exact expected drop fraction equals ``rate`` (float64 bisection)."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if expected_drop_fraction(mid, spatial_shape, block_size) < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def gamma_for(rate, spatial_shape, block_size, mode: str = "paper") -> float:
    """Python-side gamma for a static rate, in either mode (used by tests and tools)."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    block = clamp_block(spatial_shape, block_size)
    if mode == "paper":
        return paper_gamma(rate, spatial_shape, block)
    if mode == "exact":
        return exact_gamma(rate, spatial_shape, block)
    raise ValueError(f"Invalid gamma_mode={mode!r}. Expected one of {GAMMA_MODES}.")


def gamma_tensor(rate, spatial_shape, block, mode: str):
    """Gamma as a float32 tensor from a (possibly variable) rate tensor.

    The exact mode runs a few Newton steps on the coverage equation, starting from the paper's
    gamma: the equation is concave and increasing in gamma and the paper's gamma never exceeds
    the root, so the iterates climb to the root without overshooting. Everything but ``rate`` is
    a compile-time constant, which keeps the XLA graph static.
    """
    import tensorflow as tf

    # A rate tensor cannot be validated without ops; clipping keeps it meaningful instead.
    rate = tf.clip_by_value(tf.cast(rate, tf.float32), 0.0, 1.0)
    gamma = tf.minimum(rate * paper_gamma_factor(spatial_shape, block), 1.0)
    if mode == "paper":
        return gamma
    k, weight = coverage_histogram(tuple(spatial_shape), tuple(block))
    k = tf.constant(k, tf.float32)
    weight = tf.constant(weight, tf.float32)
    for _ in range(_NEWTON_STEPS):
        keep = 1.0 - gamma
        excess = tf.reduce_sum(weight * (1.0 - keep**k)) - rate
        slope = tf.reduce_sum(weight * k * keep ** (k - 1.0))
        gamma = tf.clip_by_value(gamma - excess / tf.maximum(slope, 1e-12), 0.0, 1.0)
    return gamma


_NEWTON_STEPS = 8


# --- The seed probability the layers realise --------------------------------------------------
#
# The layers compare 16 random bits per seed with a threshold that is rounded up or down at
# random once per call (``tfdropblock.ops._seed_threshold``): a call realises the seed
# probability ``floor(gamma * 2**16 + r) / 2**16`` with ``r ~ U[0, 1)``. Any one call is within
# 2**-16 of gamma (relative error below ``2**-16 / gamma``: 0.46% for the paper's 28x28 map,
# block 7, rate 0.1, where gamma = 3.3e-3), and over calls the mean is gamma exactly, capped at
# ``1 - 2**-16``.

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
    """Mean seed probability the layers realise for ``gamma``: gamma, capped at ``1 - 2**-16``."""
    return float(sum(g * p for g, p in realised_gammas(gamma)))


def effective_drop_fraction(gamma, spatial_shape, block_size) -> float:
    """Exact expected dropped fraction of the layers over calls, for seed probability ``gamma``.

    The mix of :func:`expected_drop_fraction` at the two per-call seed probabilities; it differs
    from ``expected_drop_fraction(gamma, ...)`` by a second-order term (below 1e-7 for the paper's
    settings), far under the sampling noise of any test.
    """
    return float(sum(p * expected_drop_fraction(g, spatial_shape, block_size)
                     for g, p in realised_gammas(gamma) if p > 0))
