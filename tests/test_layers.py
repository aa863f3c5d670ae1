"""Behaviour of the DropBlock layers: semantics, statistics, modes, dtypes, serialisation.

Runs on TensorFlow and on JAX (``tests/backend.py``); the few TensorFlow-only tests are marked
``tf_only``.
"""

import math

import keras
import numpy as np
import pytest

import backend
import stats
from backend import numpy
from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D, dropblock, gamma_for
from tfdropblock.layers import _DropBlock

LAYERS = {1: DropBlock1D, 2: DropBlock2D, 3: DropBlock3D}


def ones(batch, spatial, channels, data_format="channels_last", dtype="float32"):
    shape = (batch, *spatial, channels) if data_format == "channels_last" else (
        batch, channels, *spatial)
    return backend.ones(shape, dtype)


def dropped_maps(y, data_format):
    """Boolean dropped-unit maps, one per (sample, channel)."""
    y = numpy(y).astype(np.float32)
    if data_format == "channels_last":
        y = np.moveaxis(y, -1, 1)
    return (y == 0).reshape(-1, *y.shape[2:])


# --- 1. inference is the identity, with no op at all -------------------------------------------

@pytest.mark.parametrize("training", [False, None])
def test_inference_returns_input_itself(training):
    x = backend.uniform((2, 8, 8, 3))
    assert DropBlock2D(0.5, 3)(x, training=training) is x


def test_inference_adds_no_op_and_training_builds_the_mask():
    # Traced: a TensorFlow graph (nothing but the placeholder and its identity), a jaxpr on JAX
    # (no equation at all). The training trace is the counterpart: not trivially empty.
    model = keras.Sequential([keras.Input((16, 16, 4)), DropBlock2D(0.2, 5, name="db")])
    (inference, names), (training, lines) = backend.inference_and_training_ops(
        model, (None, 16, 16, 4))
    assert inference <= {"Placeholder", "Identity", "NoOp"}, inference
    if backend.TENSORFLOW:
        assert not [name for name in names if "db" in name]
    assert any("random" in t.lower() for t in training) or any(
        "random_bits" in line or "threefry" in line for line in lines), training


# --- 2. paper semantics and statistics -----------------------------------------------------------

CASES = [
    # rank, spatial, block, rate, share_channels, data_format, gamma_mode
    (2, (14, 14), 7, 0.1, False, "channels_last", "paper"),
    (2, (8, 16), 5, 0.1, False, "channels_last", "paper"),
    (2, (16, 16), 5, 0.3, True, "channels_last", "paper"),
    (2, (12, 9), (4, 2), 0.2, False, "channels_first", "paper"),
    (2, (14, 14), 6, 0.1, False, "channels_last", "exact"),
    (1, (40,), 5, 0.2, False, "channels_last", "paper"),
    (1, (31,), 4, 0.15, True, "channels_first", "exact"),
    (3, (6, 8, 10), 3, 0.2, False, "channels_last", "paper"),
    (3, (5, 6, 7), (2, 3, 4), 0.25, True, "channels_first", "paper"),
    # Above tf_ops.SPARSE_MAX_RATE graph mode draws dense seeds: per channel too.
    (2, (10, 12), 3, 0.4, False, "channels_first", "paper"),
]


@pytest.mark.parametrize("run", backend.MODES)
@pytest.mark.parametrize("rank,spatial,block,rate,share,data_format,mode", CASES)
def test_drop_fraction_matches_exact_expectation(rank, spatial, block, rate, share, data_format,
                                                 mode, run, monkeypatch):
    # TensorFlow's eager and XLA paths lay the seeds out differently (bytes vs bit-packed words,
    # 8 channels to a word): test both, with channel counts that do and do not fill the words;
    # the keras.ops algorithm (JAX's, and TensorFlow's "keras-*" modes) the same way.
    batch, channels = 64, {1: 5, 2: 8, 3: 11}[rank]
    layer = LAYERS[rank](rate, block, seed=7, data_format=data_format, share_channels=share,
                         gamma_mode=mode)
    call = backend.training_call(layer, backend.implementation(monkeypatch, run))
    blocks = layer.block_size
    gamma = gamma_for(rate, spatial, blocks, mode)
    if mode == "paper":
        assert gamma == pytest.approx(stats.paper_gamma(rate, spatial, blocks), rel=1e-12)
    fractions = []
    for _ in range(4):
        y = call(ones(batch, spatial, channels, data_format))
        maps = dropped_maps(y, data_format)
        if share:
            # One mask per sample: all channels agree, and only samples are independent.
            per_sample = maps.reshape(batch, channels, *spatial)
            assert (per_sample == per_sample[:, :1]).all()
            maps = per_sample[:, 0]
        fractions.append(maps.reshape(len(maps), -1).mean(axis=1))
        for dropped in maps[:16]:
            assert stats.is_union_of_blocks(dropped, blocks)
    fractions = np.concatenate(fractions)
    want = stats.expected(gamma, spatial, blocks)
    if mode == "exact":
        assert want == pytest.approx(rate, rel=1e-9)
    tol = stats.tolerance(gamma, spatial, blocks, len(fractions))
    assert abs(fractions.mean() - want) < tol, (fractions.mean(), want, tol)


@pytest.mark.tf_only
@pytest.mark.parametrize("n,gamma", [(5000, 0.003), (300, 0.2), (64, 0.9)])
def test_sparse_seed_positions_are_independent_bernoulli(n, gamma):
    # Graph mode's seeds come from geometric gaps: per position and in count, Bernoulli(gamma).
    import tensorflow as tf

    from tfdropblock.tf_ops import _bernoulli_positions

    draw = tf.function(lambda seed: _bernoulli_positions(n, gamma, seed, tf.int32))
    draws = 2000
    hits = np.zeros(n)
    counts = []
    for i in range(draws):
        positions = draw(tf.constant([i, 3], tf.int64)).numpy()
        assert (np.diff(positions) > 0).all() and (positions >= 0).all() and (positions < n).all()
        hits[positions] += 1
        counts.append(len(positions))
    sd = math.sqrt(n * gamma * (1 - gamma))
    assert abs(np.mean(counts) - n * gamma) < 5 * sd / math.sqrt(draws)
    assert np.var(counts) == pytest.approx(sd**2, rel=0.2, abs=0.05)
    # First, middle and last positions alike (a truncated draw would starve the last ones).
    per_position_sd = math.sqrt(gamma * (1 - gamma) / draws)
    for part in (hits[: n // 10], hits[n // 2: n // 2 + n // 10], hits[-(n // 10):]):
        assert abs(part.mean() / draws - gamma) < 5 * per_position_sd / math.sqrt(len(part))


@pytest.mark.tf_only
@pytest.mark.parametrize("gamma,want", [(0.0, 0), (1.0, 37)])
def test_sparse_seed_positions_at_the_extremes(gamma, want):
    import tensorflow as tf

    from tfdropblock.tf_ops import _bernoulli_positions

    positions = _bernoulli_positions(37, gamma, tf.constant([1, 2], tf.int64), tf.int64)
    assert len(positions) == want and (positions.numpy() == np.arange(want)).all()


def test_statistical_check_rejects_seeds_outside_the_valid_region():
    # Seeds anywhere (timm-style) over-drop small maps: the tolerance used above tells it apart.
    spatial, block, rate = (14, 14), (7, 7), 0.1
    gamma = gamma_for(rate, spatial, block)
    rng = np.random.default_rng(0)
    n = 2048
    seeds = rng.random((n, 14 + 6, 14 + 6)) < gamma
    window = np.lib.stride_tricks.sliding_window_view(seeds, block, axis=(1, 2)).any((-1, -2))
    fraction = window[:, 3:17, 3:17].mean()
    tol = stats.tolerance(gamma, spatial, block, n)
    assert abs(fraction - stats.expected(gamma, spatial, block)) > tol


@pytest.mark.parametrize("run", backend.MODES)
def test_output_rescaled_by_count_over_count_ones_over_whole_batch(run, monkeypatch):
    layer = DropBlock2D(0.3, 3, seed=3)
    x = backend.uniform((4, 10, 10, 5))
    y = numpy(backend.training_call(layer, backend.implementation(monkeypatch, run))(x))
    kept = y != 0
    scale = kept.size / kept.sum()
    np.testing.assert_allclose(y[kept], numpy(x)[kept] * scale, rtol=1e-6)


@pytest.mark.tf_only
def test_all_dropped_gives_zeros_not_nan():
    # rate just below 1 on a map the block covers whole: every map is dropped with high odds.
    import tensorflow as tf

    from tfdropblock.tf_ops import apply_mask

    keep = tf.zeros((2, 4, 4, 1))
    y = apply_mask(tf.ones((2, 4, 4, 1)), keep)
    assert np.all(y.numpy() == 0)


def test_even_and_odd_blocks_tile_the_map_edges():
    # A seed grid of S - b + 1 positions per axis: the first and last blocks touch the edges.
    layer = DropBlock1D(0.5, 4, seed=0)
    maps = dropped_maps(layer(ones(512, (9,), 1), training=True), "channels_last")
    assert maps[:, 0].any() and maps[:, -1].any()
    assert all(stats.is_union_of_blocks(m, (4,)) for m in maps)


@pytest.mark.parametrize("spatial,block,rate,want", [
    ((14, 14), (7, 7), 0.1, 0.0929), ((28, 28), (7, 7), 0.1, 0.0939),
    ((7, 7), (3, 3), 0.1, 0.0947), ((16, 16), (5, 5), 0.3, 0.2502),
    ((8, 16), (5, 5), 0.1, 0.0939)])
def test_expected_drop_fraction_of_paper_gamma(spatial, block, rate, want):
    # Worked values of the coverage equation: overlapping blocks drop a little under `rate`.
    gamma = stats.paper_gamma(rate, spatial, block)
    assert stats.expected(gamma, spatial, block) == pytest.approx(want, abs=5e-5)


# --- 3. block larger than the map ----------------------------------------------------------------

@pytest.mark.parametrize("spatial", [(5, 5), (1, 1), (3, 20)])
def test_block_larger_than_map_is_clamped(spatial):
    layer = DropBlock2D(0.4, 7, seed=1)
    y = numpy(layer(ones(256, spatial, 2), training=True))
    assert np.isfinite(y).all()
    maps = dropped_maps(y, "channels_last")
    block = tuple(min(7, s) for s in spatial)
    gamma = stats.paper_gamma(0.4, spatial, (7, 7))
    assert all(stats.is_union_of_blocks(m, block) for m in maps[:32])
    tol = stats.tolerance(gamma, spatial, block, len(maps))
    assert abs(maps.mean() - stats.expected(gamma, spatial, block)) < tol


# --- 4. XLA, dynamic batch, fresh masks, reproducible seeds --------------------------------------

def small_model(layer, input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = layer(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize("jit_compile", [True, False])
def test_trains_under_compile_jit_compile(jit_compile):
    model = small_model(DropBlock2D(0.2, 3, seed=0))
    model.compile("sgd", keras.losses.MeanSquaredError(), jit_compile=jit_compile)
    x, y = np.random.rand(24, 16, 16, 3).astype("f4"), np.random.rand(24, 2).astype("f4")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert model.jit_compile is jit_compile
    assert all(math.isfinite(v) for v in history.history["loss"])


@pytest.mark.tf_only
def test_tf_function_jit_compile_dynamic_batch_and_new_masks():
    import tensorflow as tf

    layer = DropBlock2D(0.3, 3, seed=4)
    step = tf.function(lambda x: layer(x, training=True), jit_compile=True,
                       input_signature=[tf.TensorSpec((None, 12, 12, 4))])
    a = step(tf.ones((3, 12, 12, 4))).numpy()
    b = step(tf.ones((5, 12, 12, 4))).numpy()
    c = step(tf.ones((3, 12, 12, 4))).numpy()
    assert a.shape == (3, 12, 12, 4) and b.shape == (5, 12, 12, 4)
    assert (a == 0).any() and not np.array_equal(a, c)
    for m in dropped_maps(a, "channels_last"):
        assert stats.is_union_of_blocks(m, (3, 3))


@pytest.mark.tf_only
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_keras_ops_path_on_tensorflow_with_an_unknown_batch(jit, monkeypatch):
    # The portable algorithm needs static spatial dims only: a graph traced with the batch
    # unknown (what Keras's fit traces) counts over the runtime batch.
    import tensorflow as tf

    from tfdropblock import ops

    monkeypatch.setattr(ops, "IMPLEMENTATION", "keras")
    layer = DropBlock2D(0.3, 3, seed=4)
    step = tf.function(lambda x: layer(x, training=True), jit_compile=jit,
                       input_signature=[tf.TensorSpec((None, 12, 12, 4))])
    x = backend.uniform((5, 12, 12, 4))
    y = numpy(step(x))
    kept = y != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y[kept], numpy(x)[kept] * kept.size / kept.sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="static spatial dims"):
        tf.function(lambda x: layer(x, training=True),
                    input_signature=[tf.TensorSpec((None, None, 12, 4))])(x)


@pytest.mark.parametrize("run", backend.MODES)
def test_compiled_batch_sizes_and_new_masks(run, monkeypatch):
    # JAX compiles per shape: each batch size gets its trace, every call a new mask.
    layer = DropBlock2D(0.3, 3, seed=4)
    step = backend.training_call(layer, backend.implementation(monkeypatch, run))
    a, b, c = (numpy(step(ones(n, (12, 12), 4))) for n in (3, 5, 3))
    assert a.shape == (3, 12, 12, 4) and b.shape == (5, 12, 12, 4)
    assert (a == 0).any() and not np.array_equal(a, c)
    for m in dropped_maps(a, "channels_last"):
        assert stats.is_union_of_blocks(m, (3, 3))


@pytest.mark.parametrize("run", backend.MODES)
def test_same_seed_same_masks(run, monkeypatch):
    run = backend.implementation(monkeypatch, run)

    def masks():
        layer = DropBlock2D(0.3, 3, seed=11)
        fn = backend.training_call(layer, run)
        return [numpy(fn(ones(2, (10, 10), 3))) for _ in range(3)]

    first, second = masks(), masks()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])


# --- 5. mixed precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("run", backend.MODES)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_compute_dtype(policy, run, monkeypatch):
    run = backend.implementation(monkeypatch, run)
    layer = DropBlock2D(0.2, 3, seed=0, dtype=policy)
    y = backend.training_call(layer, run)(ones(2, (8, 8), 3))
    assert backend.dtype_name(y) == policy.split("_")[1]
    assert (numpy(keras.ops.cast(y, "float32")) == 0).any()
    model = small_model(DropBlock2D(0.2, 3, dtype=policy))
    assert model.layers[2].compute_dtype == policy.split("_")[1]


@pytest.mark.parametrize("run", backend.MODES)
@pytest.mark.parametrize("dtype", [d for d in backend.FLOAT_DTYPES if d != "float32"])
def test_input_dtype_preserved(dtype, run, monkeypatch):
    layer = DropBlock2D(0.2, 3, seed=0, dtype=dtype)
    y = backend.training_call(layer, backend.implementation(monkeypatch, run))(
        ones(2, (8, 8), 3, dtype=dtype))
    assert backend.dtype_name(y) == dtype


@pytest.mark.tf_only  # JAX without x64 has no float64 arrays
@pytest.mark.parametrize("training", [True, False])
def test_default_layer_autocasts_float64_to_float32(training):
    # What docs/SEMANTICS.md says under "Dtypes": Keras's autocast, not the layer, decides.
    x = backend.ones((2, 8, 8, 3), "float64")
    assert backend.dtype_name(DropBlock2D(0.2, 3, seed=0)(x, training=training)) == "float32"
    assert backend.dtype_name(dropblock(x, 0.2, 3, seed=0, training=training)) == "float64"


# --- 6. gradients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("run", backend.MODES)
def test_gradient_flows_through_kept_units_scaled(run, monkeypatch):
    layer = DropBlock2D(0.3, 3, seed=5)
    x = backend.uniform((4, 10, 10, 3))
    y, grad = backend.output_and_gradient(layer, x, backend.implementation(monkeypatch, run))
    grad = numpy(grad)
    ratio = numpy(y) / numpy(x)  # keep * scale, per unit
    np.testing.assert_allclose(grad, ratio, rtol=1e-6)
    assert (grad == 0).any() and (grad > 1).any()


# --- 7. serialisation ----------------------------------------------------------------------------------

def test_get_config_round_trips_every_argument():
    layer = DropBlock3D(0.25, (1, 3, 5), seed=9, data_format="channels_first",
                        share_channels=True, gamma_mode="exact", name="db3")
    config = layer.get_config()
    clone = DropBlock3D.from_config(config)
    assert clone.get_config() == config
    for key, value in dict(rate=0.25, block_size=(1, 3, 5), seed=9, data_format="channels_first",
                           share_channels=True, gamma_mode="exact").items():
        assert config[key] == value


def test_keras_file_round_trip_without_custom_objects(tmp_path):
    model = small_model(DropBlock2D(0.2, (3, 2), seed=1, share_channels=True))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[2]
    assert isinstance(layer, DropBlock2D)
    assert layer.get_config() == model.layers[2].get_config()
    x = np.random.rand(2, 16, 16, 3).astype("f4")
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), rtol=1e-6)


# --- 9. model styles -----------------------------------------------------------------------------------

class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.drop = DropBlock2D(0.3, 3, seed=2)

    def call(self, x, training=None):
        return self.drop(self.conv(x), training=training)


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = keras.layers.Dense(1)

    def call(self, x, training=None):
        return self.head(keras.ops.mean(self.block(x, training=training), axis=(1, 2)))


@pytest.mark.parametrize("style", ["sequential", "functional", "subclassed"])
def test_model_styles_train_and_infer(style):
    if style == "sequential":
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                  DropBlock2D(0.3, 3), keras.layers.Flatten(),
                                  keras.layers.Dense(1)])
    elif style == "functional":
        model = small_model(DropBlock2D(0.3, 3), (8, 8, 3))
    else:
        model = Net()
    x = np.random.rand(8, 8, 8, 3).astype("f4")
    model.compile("sgd", "mse", jit_compile=True)
    model.fit(x, np.zeros((8, model(x).shape[-1]), "f4"), verbose=0, epochs=1)
    np.testing.assert_array_equal(numpy(model(x)), numpy(model(x)))  # inference: deterministic
    assert not np.array_equal(numpy(model(x, training=True)), numpy(model(x, training=True)))


# --- 10. bad arguments and inputs ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,argument", [
    (dict(rate=1.0, block_size=3), "rate"),
    (dict(rate=-0.1, block_size=3), "rate"),
    (dict(rate=float("nan"), block_size=3), "rate"),
    (dict(rate="0.1", block_size=3), "rate"),
    (dict(rate=0.1, block_size=0), "block_size"),
    (dict(rate=0.1, block_size=(3, 3, 3)), "block_size"),
    (dict(rate=0.1, block_size=(3, -1)), "block_size"),
    (dict(rate=0.1, block_size=2.5), "block_size"),
    (dict(rate=0.1, block_size=3, data_format="NHWC"), "data_format"),
    (dict(rate=0.1, block_size=3, gamma_mode="fast"), "gamma_mode"),
    (dict(rate=0.1, block_size=3, seed="x"), "seed"),
    (dict(rate=0.1, block_size=3, share_channels="False"), "share_channels"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        DropBlock2D(**kwargs)


def test_wrong_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="DropBlock2D expects 4-D inputs"):
        DropBlock2D(0.1, 3)(backend.ones((2, 8, 3)), training=True)


@pytest.mark.parametrize("training", [True, False, None])
def test_non_float_input_is_a_clear_error_in_every_mode(training):
    with pytest.raises(TypeError, match="DropBlock2D expects a floating-point input.*int32"):
        DropBlock2D(0.1, 3, dtype="int32")(backend.ones((2, 8, 8, 3), "int32"),
                                           training=training)


def test_non_float_symbolic_input_fails_when_the_model_is_built():
    with pytest.raises(TypeError, match="floating-point"):
        DropBlock2D(0.1, 3)(keras.Input((8, 8, 3), dtype="int32"))


@pytest.mark.parametrize("kwargs,argument", [
    (dict(seed=None), "seed"), (dict(seed="a"), "seed"), (dict(seed=[1, 2, 3]), "seed"),
    (dict(seed=1, block_size=(3,)), "block_size"), (dict(seed=1, rate=1.5), "rate"),
    (dict(seed=1, share_channels=1), "share_channels"),
    (dict(seed=1, gamma_mode="nope"), "gamma_mode")])
def test_functional_form_bad_arguments_name_the_argument(kwargs, argument):
    args = {"rate": 0.1, "block_size": 3, **kwargs}
    with pytest.raises((TypeError, ValueError), match=argument):
        dropblock(backend.ones((2, 8, 8, 3)), **args)


@pytest.mark.parametrize("run", ["eager", "keras-eager"] if backend.TENSORFLOW else ["eager"])
def test_rate_tensor_out_of_range_is_clipped(run, monkeypatch):
    backend.implementation(monkeypatch, run)
    x = backend.ones((4, 8, 8, 3))
    rate = keras.ops.convert_to_tensor
    assert np.all(numpy(dropblock(x, rate(-0.5), 3, seed=1)) == 1.0)
    np.testing.assert_array_equal(numpy(dropblock(x, rate(1.5), 3, seed=1)),
                                  numpy(dropblock(x, rate(1.0), 3, seed=1)))


@pytest.mark.parametrize("run", backend.MODES)
def test_all_dropped_gives_zeros_not_nan_in_every_mode(run, monkeypatch):
    # TensorFlow's XLA layout takes count_ones from a popcount of its packed words.
    layer = DropBlock2D(0.9999, 3, seed=0)
    step = backend.training_call(layer, backend.implementation(monkeypatch, run))
    outputs = [numpy(step(backend.ones((1, 3, 3, 1)))) for _ in range(8)]
    assert all(np.isfinite(y).all() for y in outputs)
    assert any((y == 0).all() for y in outputs)


# --- compatibility and the functional form --------------------------------------------------------

def test_keras_cv_positional_signature():
    layer = DropBlock2D(0.1, (3, 5), 42)
    assert (layer.rate, layer.block_size, layer.seed) == (0.1, (3, 5), 42)
    assert layer.data_format == keras.config.image_data_format()
    assert isinstance(layer, _DropBlock)


@pytest.mark.parametrize("run", ["eager", "keras-eager"] if backend.TENSORFLOW else ["eager"])
def test_functional_form_matches_layer_semantics(run, monkeypatch):
    backend.implementation(monkeypatch, run)
    x = backend.ones((64, 12, 12, 4))
    y = dropblock(x, 0.2, 3, seed=5)
    maps = dropped_maps(y, "channels_last")
    gamma = stats.paper_gamma(0.2, (12, 12), (3, 3))
    assert abs(maps.mean() - stats.expected(gamma, (12, 12), (3, 3))) < stats.tolerance(
        gamma, (12, 12), (3, 3), len(maps))
    assert dropblock(x, 0.2, 3, seed=5, training=False) is x
    np.testing.assert_array_equal(numpy(y), numpy(dropblock(x, 0.2, 3, seed=5)))
    generator = keras.random.SeedGenerator(5)
    assert not np.array_equal(numpy(dropblock(x, 0.2, 3, seed=generator)),
                              numpy(dropblock(x, 0.2, 3, seed=generator)))
    if run.startswith("keras-"):
        return  # keras.random on TensorFlow takes no seed tensor; the TensorFlow path does
    # A stateless seed tensor of two ints (TensorFlow and JAX): a mask of its own, repeatable.
    pair = keras.ops.convert_to_tensor(np.array([5, 1], "int32"))
    z = numpy(dropblock(x, 0.2, 3, seed=pair))
    assert (z == 0).any() and np.array_equal(z, numpy(dropblock(x, 0.2, 3, seed=pair)))
