"""Exact statistics of DropBlock masks, for tests with tolerances derived from the sample size."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tfdropblock.gamma import clamp_block, expected_drop_fraction


def _axis_seed_interval(size, block):
    u = np.arange(size)
    return np.maximum(0, u - block + 1), np.minimum(u, size - block)


def drop_fraction_variance(gamma, spatial_shape, block_size):
    """Exact variance of the dropped fraction of one map.

    Units u, v are both kept iff no seed in K(u) | K(v) fires, where K(u) is the set of valid
    seeds whose block covers u. Those sets are boxes, so |K(u) & K(v)| is the product of
    per-axis interval overlaps.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    block = clamp_block(spatial_shape, block_size)
    k = np.ones(())
    both = np.ones(())
    for size, b in zip(spatial_shape, block):
        lo, hi = _axis_seed_interval(size, b)
        k = np.multiply.outer(k, hi - lo + 1)
        overlap = np.minimum.outer(hi, hi) - np.maximum.outer(lo, lo) + 1
        # Axis-wise outer products keep the (u, v) pairing as (u1, v1, u2, v2, ...).
        both = np.multiply.outer(both, np.maximum(overlap, 0))
    rank = len(spatial_shape)
    order = list(range(0, 2 * rank, 2)) + list(range(1, 2 * rank, 2))
    n = int(np.prod(spatial_shape))
    both = both.transpose(order).reshape(n, n)
    k = k.reshape(n)
    keep = 1.0 - gamma
    p_keep = keep**k
    p_keep_both = keep ** (k[:, None] + k[None, :] - both)
    covariance = p_keep_both - np.outer(p_keep, p_keep)
    return float(covariance.sum() / n**2)


def tolerance(gamma, spatial_shape, block_size, n_maps, sigmas=5.0):
    """``sigmas`` standard errors of the mean drop fraction over ``n_maps`` independent maps."""
    return sigmas * np.sqrt(drop_fraction_variance(gamma, spatial_shape, block_size) / n_maps)


def expected(gamma, spatial_shape, block_size):
    return expected_drop_fraction(gamma, spatial_shape, block_size)


def is_union_of_blocks(dropped, block):
    """True when a boolean map's dropped units are exactly a union of whole in-map blocks.

    The opening of the map by the block (erode to the seeds whose whole block is dropped, then
    grow them back) must give the map back; blocks reaching outside the map are never seeds.
    """
    dropped = np.asarray(dropped, bool)
    block = clamp_block(dropped.shape, block)
    seeds = sliding_window_view(dropped, block).all(axis=tuple(range(-len(block), 0)))
    grown = np.zeros_like(dropped)
    for offset in np.ndindex(*block):
        index = tuple(slice(o, o + s) for o, s in zip(offset, seeds.shape))
        grown[index] |= seeds
    return bool(np.array_equal(grown, dropped))


def paper_gamma(rate, spatial_shape, block_size):
    """The paper's gamma written out independently of the library, for the clamped block."""
    block = [min(b, s) for b, s in zip(block_size, spatial_shape)]
    units = np.prod(spatial_shape, dtype=float)
    valid = np.prod([s - b + 1 for s, b in zip(spatial_shape, block)], dtype=float)
    return min(1.0, rate * units / np.prod(block, dtype=float) / valid)
