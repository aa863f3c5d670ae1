"""Behaviour of the DropBlock layers: semantics, statistics, modes, dtypes, serialisation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import stats
from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D, dropblock, gamma_for
from tfdropblock.layers import _DropBlock

LAYERS = {1: DropBlock1D, 2: DropBlock2D, 3: DropBlock3D}


def ones(batch, spatial, channels, data_format="channels_last", dtype="float32"):
    shape = (batch, *spatial, channels) if data_format == "channels_last" else (
        batch, channels, *spatial)
    return tf.ones(shape, dtype)


def dropped_maps(y, data_format):
    """Boolean dropped-unit maps, one per (sample, channel)."""
    y = np.asarray(y, np.float32)
    if data_format == "channels_last":
        y = np.moveaxis(y, -1, 1)
    return (y == 0).reshape(-1, *y.shape[2:])


# --- 1. inference is the identity, with no op at all -------------------------------------------

@pytest.mark.parametrize("training", [False, None])
def test_inference_returns_input_itself(training):
    x = tf.random.normal((2, 8, 8, 3))
    assert DropBlock2D(0.5, 3)(x, training=training) is x


def test_inference_graph_has_no_dropblock_op():
    model = keras.Sequential([keras.Input((16, 16, 4)), DropBlock2D(0.2, 5, name="db")])
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((None, 16, 16, 4))).graph
    types = {op.type for op in graph.get_operations()}
    assert types <= {"Placeholder", "Identity", "NoOp"}, types
    assert not [op.name for op in graph.get_operations() if "db" in op.name]


def test_training_graph_does_build_the_mask():
    # The counterpart of the test above: the training graph is not trivially empty.
    layer = DropBlock2D(0.2, 5)
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec((None, 16, 16, 4))).graph
    types = {op.type for op in graph.get_operations()}
    assert "StatelessRandomUniformFullIntV2" in types or any("Random" in t for t in types), types


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


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("rank,spatial,block,rate,share,data_format,mode", CASES)
def test_drop_fraction_matches_exact_expectation(rank, spatial, block, rate, share, data_format,
                                                 mode, compiled):
    # Eager and XLA lay the seeds out differently (bytes vs bit-packed words, 8 channels to a
    # word): test both, with channel counts that do and do not fill the words.
    batch, channels = 64, {1: 5, 2: 8, 3: 11}[rank]
    layer = LAYERS[rank](rate, block, seed=7, data_format=data_format, share_channels=share,
                         gamma_mode=mode)
    call = layer if not compiled else tf.function(
        lambda t, training: layer(t, training=training), jit_compile=True)
    blocks = layer.block_size
    gamma = gamma_for(rate, spatial, blocks, mode)
    if mode == "paper":
        assert gamma == pytest.approx(stats.paper_gamma(rate, spatial, blocks), rel=1e-12)
    fractions = []
    for _ in range(4):
        y = call(ones(batch, spatial, channels, data_format), training=True)
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


@pytest.mark.parametrize("n,gamma", [(5000, 0.003), (300, 0.2), (64, 0.9)])
def test_sparse_seed_positions_are_independent_bernoulli(n, gamma):
    # Graph mode's seeds come from geometric gaps: per position and in count, Bernoulli(gamma).
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


@pytest.mark.parametrize("gamma,want", [(0.0, 0), (1.0, 37)])
def test_sparse_seed_positions_at_the_extremes(gamma, want):
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


def test_output_rescaled_by_count_over_count_ones_over_whole_batch():
    layer = DropBlock2D(0.3, 3, seed=3)
    x = tf.random.uniform((4, 10, 10, 5), 0.5, 1.5)
    y = layer(x, training=True).numpy()
    kept = y != 0
    scale = kept.size / kept.sum()
    np.testing.assert_allclose(y[kept], x.numpy()[kept] * scale, rtol=1e-6)


def test_all_dropped_gives_zeros_not_nan():
    # rate just below 1 on a map the block covers whole: every map is dropped with high odds.
    keep = tf.zeros((2, 4, 4, 1))
    from tfdropblock.tf_ops import apply_mask

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
    y = layer(ones(256, spatial, 2), training=True).numpy()
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


def test_trains_under_compile_jit_compile():
    model = small_model(DropBlock2D(0.2, 3, seed=0))
    model.compile("sgd", keras.losses.MeanSquaredError(), jit_compile=True)
    x, y = np.random.rand(24, 16, 16, 3).astype("f4"), np.random.rand(24, 2).astype("f4")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert model.jit_compile is True
    assert all(math.isfinite(v) for v in history.history["loss"])


def test_tf_function_jit_compile_dynamic_batch_and_new_masks():
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


def test_same_seed_same_masks_in_graph_mode():
    def run():
        layer = DropBlock2D(0.3, 3, seed=11)
        fn = tf.function(lambda x: layer(x, training=True))
        return [fn(tf.ones((2, 10, 10, 3))).numpy() for _ in range(3)]

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])


# --- 5. mixed precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_compute_dtype(policy):
    layer = DropBlock2D(0.2, 3, seed=0, dtype=policy)
    y = layer(tf.ones((2, 8, 8, 3)), training=True)
    assert y.dtype == tf.as_dtype(policy.split("_")[1])
    fn = tf.function(lambda x: layer(x, training=True), jit_compile=True)
    assert fn(tf.ones((2, 8, 8, 3))).dtype == y.dtype
    model = small_model(DropBlock2D(0.2, 3, dtype=policy))
    assert model.layers[2].compute_dtype == policy.split("_")[1]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_input_dtype_preserved(dtype):
    y = DropBlock2D(0.2, 3, seed=0, dtype=dtype)(tf.ones((2, 8, 8, 3), dtype), training=True)
    assert y.dtype == tf.as_dtype(dtype)


@pytest.mark.parametrize("training", [True, False])
def test_default_layer_autocasts_float64_to_float32(training):
    # What docs/SEMANTICS.md says under "Dtypes": Keras's autocast, not the layer, decides.
    x = tf.ones((2, 8, 8, 3), tf.float64)
    assert DropBlock2D(0.2, 3, seed=0)(x, training=training).dtype == tf.float32
    assert dropblock(x, 0.2, 3, seed=0, training=training).dtype == tf.float64


# --- 6. gradients -----------------------------------------------------------------------------------

def test_gradient_flows_through_kept_units_scaled():
    layer = DropBlock2D(0.3, 3, seed=5)
    x = tf.random.uniform((4, 10, 10, 3), 0.5, 1.5)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    grad = tape.gradient(y, x).numpy()
    ratio = (y / x).numpy()  # keep * scale, per unit
    np.testing.assert_allclose(grad, ratio, rtol=1e-6)
    assert (grad == 0).any() and (grad > 1).any()


def test_gradient_under_xla_matches_the_forward_mask():
    layer = DropBlock2D(0.3, 3, seed=5)

    @tf.function(jit_compile=True)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return y, tape.gradient(y, x)

    x = tf.random.uniform((4, 10, 10, 3), 0.5, 1.5)
    y, grad = forward_backward(x)
    np.testing.assert_allclose(grad.numpy(), (y / x).numpy(), rtol=1e-6)
    assert (grad.numpy() == 0).any() and (grad.numpy() > 1).any()


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
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


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
    np.testing.assert_array_equal(model(x), model(x))  # inference is deterministic
    assert not np.array_equal(model(x, training=True), model(x, training=True))


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
        DropBlock2D(0.1, 3)(tf.ones((2, 8, 3)), training=True)


@pytest.mark.parametrize("training", [True, False, None])
def test_non_float_input_is_a_clear_error_in_every_mode(training):
    with pytest.raises(TypeError, match="DropBlock2D expects a floating-point input.*int32"):
        DropBlock2D(0.1, 3, dtype="int32")(tf.ones((2, 8, 8, 3), tf.int32), training=training)


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
        dropblock(tf.ones((2, 8, 8, 3)), **args)


def test_rate_tensor_out_of_range_is_clipped():
    x = tf.ones((4, 8, 8, 3))
    assert np.all(dropblock(x, tf.constant(-0.5), 3, seed=1).numpy() == 1.0)
    np.testing.assert_array_equal(dropblock(x, tf.constant(1.5), 3, seed=1),
                                  dropblock(x, tf.constant(1.0), 3, seed=1))


def test_all_dropped_under_xla_gives_zeros_not_nan():
    # The XLA layout takes count_ones from a popcount of its packed words, not from the mask.
    layer = DropBlock2D(0.9999, 3, seed=0)
    step = tf.function(lambda t: layer(t, training=True), jit_compile=True)
    outputs = [step(tf.ones((1, 3, 3, 1))).numpy() for _ in range(8)]
    assert all(np.isfinite(y).all() for y in outputs)
    assert any((y == 0).all() for y in outputs)


# --- compatibility and the functional form --------------------------------------------------------

def test_keras_cv_positional_signature():
    layer = DropBlock2D(0.1, (3, 5), 42)
    assert (layer.rate, layer.block_size, layer.seed) == (0.1, (3, 5), 42)
    assert layer.data_format == keras.config.image_data_format()
    assert isinstance(layer, _DropBlock)


def test_functional_form_matches_layer_semantics():
    x = tf.ones((64, 12, 12, 4))
    y = dropblock(x, 0.2, 3, seed=5)
    maps = dropped_maps(y, "channels_last")
    gamma = stats.paper_gamma(0.2, (12, 12), (3, 3))
    assert abs(maps.mean() - stats.expected(gamma, (12, 12), (3, 3))) < stats.tolerance(
        gamma, (12, 12), (3, 3), len(maps))
    assert dropblock(x, 0.2, 3, seed=5, training=False) is x
    np.testing.assert_array_equal(y, dropblock(x, 0.2, 3, seed=5))
    generator = keras.random.SeedGenerator(5)
    assert not np.array_equal(dropblock(x, 0.2, 3, seed=generator),
                              dropblock(x, 0.2, 3, seed=generator))
