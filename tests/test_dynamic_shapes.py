"""Spatial sizes known only at run time: on TensorFlow one trace serves every size, with the
static path's distribution (gamma, clamped block and valid seed grid from the runtime shape); on
JAX, which compiles per shape, a fully convolutional model fits on batches of every size."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import backend
import stats
from tfdropblock import DropBlock1D, DropBlock2D, gamma_for

# Sizes of one trace: larger than the block, non-square, and smaller than it on one or every
# axis (the block is clamped to the map, as on the static path).
SIZES_2D = [(14, 14), (8, 16), (3, 20), (4, 4)]


def dropped_fractions(y, spatial):
    maps = np.moveaxis(np.asarray(y) == 0, -1, 1).reshape(-1, *spatial)
    return maps, maps.reshape(len(maps), -1).mean(axis=1)


@pytest.mark.tf_only
@pytest.mark.parametrize("mode", ["paper", "exact"])
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_unknown_spatial_dims_traced_once_match_the_exact_expectation(jit, mode):
    layer = DropBlock2D(0.2, 5, seed=3, gamma_mode=mode)
    step = tf.function(lambda t: layer(t, training=True), jit_compile=jit,
                       input_signature=[tf.TensorSpec((None, None, None, 8))])
    block = (5, 5)
    for spatial in SIZES_2D:
        fractions = []
        for _ in range(2):
            maps, per_map = dropped_fractions(step(tf.ones((48, *spatial, 8))), spatial)
            fractions.append(per_map)
            assert all(stats.is_union_of_blocks(m, block) for m in maps[:24])
        fractions = np.concatenate(fractions)
        gamma = gamma_for(0.2, spatial, block, mode)
        want = stats.expected(gamma, spatial, block)
        tol = stats.tolerance(gamma, spatial, block, len(fractions))
        assert abs(fractions.mean() - want) < tol, (spatial, fractions.mean(), want, tol)
    assert step.experimental_get_tracing_count() == 1
    assert len(step._list_all_concrete_functions()) == 1


@pytest.mark.parametrize("run", backend.MODES)
def test_every_size_compiled_matches_the_exact_expectation(run, monkeypatch):
    # One layer, compiled for each size in turn (JAX compiles per shape; TensorFlow retraces),
    # smaller than the block on one or every axis included.
    layer = DropBlock2D(0.2, 5, seed=3)
    step = backend.training_call(layer, backend.implementation(monkeypatch, run))
    block = (5, 5)
    for spatial in SIZES_2D:
        maps, per_map = dropped_fractions(backend.numpy(step(backend.ones((96, *spatial, 8)))),
                                          spatial)
        assert all(stats.is_union_of_blocks(m, block) for m in maps[:24])
        gamma = gamma_for(0.2, spatial, block)
        tol = stats.tolerance(gamma, spatial, block, len(per_map))
        want = stats.expected(gamma, spatial, block)
        assert abs(per_map.mean() - want) < tol, (spatial, per_map.mean(), want, tol)


@pytest.mark.tf_only
def test_dropblock1d_on_variable_length_sequences():
    layer = DropBlock1D(0.15, 7, seed=0)
    step = tf.function(lambda t: layer(t, training=True),
                       input_signature=[tf.TensorSpec((None, None, 16))])
    for steps in (50, 9, 5):
        y = step(tf.ones((64, steps, 16)))
        maps, per_map = dropped_fractions(y, (steps,))
        gamma = gamma_for(0.15, (steps,), 7)
        tol = stats.tolerance(gamma, (steps,), (7,), len(per_map))
        assert abs(per_map.mean() - stats.expected(gamma, (steps,), (7,))) < tol
        assert all(stats.is_union_of_blocks(m, (7,)) for m in maps[:32])
    assert step.experimental_get_tracing_count() == 1


@pytest.mark.tf_only
def test_rescale_uses_the_runtime_count():
    layer = DropBlock2D(0.3, 3, seed=1)
    step = tf.function(lambda t: layer(t, training=True), jit_compile=True,
                       input_signature=[tf.TensorSpec((None, None, None, 5))])
    x = tf.random.uniform((4, 11, 7, 5), 0.5, 1.5)
    y = step(x).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], x.numpy()[kept] * kept.size / kept.sum(), rtol=1e-6)


def variable_size_batches():
    rng = np.random.default_rng(0)
    for size in (12, 20, 9, 16):
        yield rng.random((4, size, size + 3, 3), dtype=np.float32), np.zeros((4, 2), np.float32)


@pytest.mark.parametrize("jit_compile", ["auto", True, False])
def test_fully_convolutional_model_fits_on_variable_size_batches(jit_compile):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = DropBlock2D(0.2, 7, seed=0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile("sgd", "mse", jit_compile=jit_compile)
    data = tf.data.Dataset.from_generator(variable_size_batches, output_signature=(
        tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None, 2))))
    history = model.fit(data, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    x = next(variable_size_batches())[0]
    np.testing.assert_array_equal(backend.numpy(model(x)), backend.numpy(model(x)))
