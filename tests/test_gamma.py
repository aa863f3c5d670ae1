"""The numpy-side gamma helpers: argument forms they accept, and clear errors for the rest."""

import pytest

from tfdropblock.gamma import effective_drop_fraction, expected_drop_fraction, gamma_for


def test_int_block_size_is_every_axis():
    assert gamma_for(0.1, (28, 28), 7) == gamma_for(0.1, (28, 28), (7, 7))
    assert gamma_for(0.1, (8, 16), 5, "exact") == gamma_for(0.1, (8, 16), (5, 5), "exact")
    gamma = gamma_for(0.1, (28, 28), 7)
    assert expected_drop_fraction(gamma, (28, 28), 7) == pytest.approx(0.0939, abs=1e-4)
    assert effective_drop_fraction(gamma, (28, 28), 7) == pytest.approx(
        effective_drop_fraction(gamma, (28, 28), (7, 7)), abs=0)


@pytest.mark.parametrize("call", [
    lambda: gamma_for(0.1, (28, 28), (7,)),
    lambda: gamma_for(0.1, (28, 28), (7, 7, 7)),
    lambda: expected_drop_fraction(0.01, (28, 28), (7,)),
    lambda: effective_drop_fraction(0.01, (8, 8, 8), (3, 3)),
])
def test_block_size_of_the_wrong_length_is_rejected(call):
    # (7,) on a 2-D map used to give a gamma of 0.509 (one axis only), silently.
    with pytest.raises(ValueError, match=r"block_size=.*tuple of [23] positive ints"):
        call()


@pytest.mark.parametrize("block", [0, -1, (7, 0), 2.5, "7", True])
def test_bad_block_size_values_are_rejected(block):
    with pytest.raises(ValueError, match="block_size"):
        gamma_for(0.1, (28, 28), block)


@pytest.mark.parametrize("shape", [(), (28, 0), (28, -3), (28.0, 28), 28, None])
def test_bad_spatial_shape_is_rejected(shape):
    with pytest.raises(ValueError, match=r"spatial_shape=.*positive ints"):
        gamma_for(0.1, shape, 3)
    with pytest.raises(ValueError, match="spatial_shape"):
        expected_drop_fraction(0.01, shape, 3)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rate_outside_0_1_is_rejected(rate):
    for mode in ("paper", "exact"):
        with pytest.raises(ValueError, match=r"rate=.*\[0, 1\)"):
            gamma_for(rate, (28, 28), 7, mode)


@pytest.mark.parametrize("gamma", [-0.01, 1.01, float("nan")])
def test_gamma_outside_0_1_is_rejected(gamma):
    with pytest.raises(ValueError, match=r"gamma=.*\[0, 1\]"):
        expected_drop_fraction(gamma, (28, 28), 7)
    with pytest.raises(ValueError, match="gamma="):
        effective_drop_fraction(gamma, (28, 28), 7)


def test_bad_mode_names_the_accepted_values():
    with pytest.raises(ValueError, match=r"gamma_mode='papr'.*'paper', 'exact'"):
        gamma_for(0.1, (28, 28), 7, "papr")


def test_numpy_ints_are_accepted():
    import numpy as np

    shape = tuple(np.int64(s) for s in (28, 28))
    assert gamma_for(0.1, shape, np.int32(7)) == gamma_for(0.1, (28, 28), 7)
