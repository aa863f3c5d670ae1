"""Reference models: structure (DropBlock where the paper puts it), XLA training, inference
identity, deterministic default model, and the add_dropblock rewriter."""

import keras
import numpy as np
import pytest

from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D, DropBlockScheduler, dropblock_layers
from tfdropblock.models import (DEFAULT_MODEL_CONFIG, add_dropblock, default_model,
                                mobilenet_v2_dropblock, resnet50_dropblock, seeded_weights,
                                sequence_dropblock, volume_dropblock)

# The smallest configurations that still have every stage (and so every DropBlock group):
# XLA compile time on CPU grows with the layer count, so the training tests stay cheap.
SMALL = {
    "resnet50": (lambda **kw: resnet50_dropblock((32, 32, 3), 4, width=4,
                                                 blocks_per_stage=(1, 1, 1, 1), **kw),
                 (32, 32, 3), DropBlock2D),
    "mobilenet_v2": (lambda **kw: mobilenet_v2_dropblock((32, 32, 3), 4, alpha=0.35,
                                                         repeats=(1,) * 7, **kw),
                     (32, 32, 3), DropBlock2D),
    "sequence": (lambda **kw: sequence_dropblock((64, 2), 4, width=4,
                                                 blocks_per_stage=(1, 1, 1, 1), **kw),
                 (64, 2), DropBlock1D),
    "volume": (lambda **kw: volume_dropblock((8, 16, 16, 1), 4, width=4,
                                             blocks_per_stage=(1, 1, 1, 1), **kw),
               (8, 16, 16, 1), DropBlock3D),
}


def _data(shape, n=4, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, classes, n)


def _producer(layer):
    """Name of the layer whose output feeds ``layer`` in its latest call (the newest model)."""
    return layer._inbound_nodes[-1].input_tensors[0]._keras_history.operation.name


# ---------------------------------------------------------------------------------------------
# Reference models


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_model_trains_one_step_under_xla(name):
    build, shape, cls = SMALL[name]
    model = build(seed=0)
    assert all(isinstance(layer, cls) for layer in dropblock_layers(model))
    x, y = _data(shape)
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy",
                  jit_compile=True)
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0,
                        callbacks=[DropBlockScheduler(ramp_steps=2)])
    assert model.jit_compile is True
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, np.array(w))
               for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) > len(changed) // 2
    # Two steps: the scheduler set every DropBlock to half its rate for step 1 of 2.
    for layer in dropblock_layers(model):
        assert float(layer.current_rate.numpy()) == pytest.approx(layer.rate / 2)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_inference_is_the_model_without_dropblock(name):
    build, shape, _ = SMALL[name]
    model = seeded_weights(build(rate=0.5, seed=0), seed=3)
    plain = build(dropblock_groups=())
    assert dropblock_layers(plain) == [] and dropblock_layers(model)
    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    x, _ = _data(shape, n=3)
    expected = keras.ops.convert_to_numpy(plain(x, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), expected)
    # predict() runs a tf.function, whose fused kernels round differently from eager:
    # compare graph with graph.
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))


def test_resnet50_dropblock_placement_matches_the_authors():
    model = resnet50_dropblock((64, 64, 3), 10, width=4, rate=0.1, block_size=7)
    layers = dropblock_layers(model)
    by_group = {g: [layer for layer in layers if layer.name.startswith(f"conv{g + 1}_")]
                for g in (1, 2, 3, 4)}
    # Groups 1-2 (conv2_x, conv3_x): none. Groups 3-4: four per bottleneck block (after each
    # conv+BN and on the shortcut), 6 and 3 blocks.
    assert by_group[1] == [] and by_group[2] == []
    assert len(by_group[3]) == 6 * 4 and len(by_group[4]) == 3 * 4 and len(layers) == 36
    assert {layer.rate for layer in by_group[4]} == {0.1}
    assert {layer.rate for layer in by_group[3]} == {0.1 / 4}
    assert {layer.block_size for layer in layers} == {(7, 7)}
    assert {layer.share_channels for layer in layers} == {False}
    for stage, blocks in ((4, 6), (5, 3)):
        for block in range(1, blocks + 1):
            p = f"conv{stage}_block{block}"
            assert _producer(model.get_layer(f"{p}_1_dropblock")) == f"{p}_1_relu"
            assert _producer(model.get_layer(f"{p}_2_dropblock")) == f"{p}_2_relu"
            assert _producer(model.get_layer(f"{p}_3_dropblock")) == f"{p}_3_bn"
            shortcut = _producer(model.get_layer(f"{p}_0_dropblock"))
            assert shortcut == (f"{p}_0_bn" if block == 1 else f"conv{stage}_block{block - 1}_out")
            add = model.get_layer(f"{p}_add")._inbound_nodes[0].input_tensors
            assert [t._keras_history.operation.name for t in add] == [
                f"{p}_0_dropblock", f"{p}_3_dropblock"]


def test_full_size_models_have_the_published_parameter_counts():
    resnet = resnet50_dropblock()
    trainable = sum(int(np.prod(w.shape)) for w in resnet.trainable_weights)
    assert trainable == 25_557_032  # torchvision's resnet50 (no conv biases), 1000 classes
    assert resnet.get_layer("conv5_block3_out").output.shape == (None, 7, 7, 2048)
    mobile = mobilenet_v2_dropblock()
    # keras.applications.MobileNetV2: 3,538,984 weights, plus one rate variable per DropBlock.
    assert mobile.count_params() - len(dropblock_layers(mobile)) == 3_538_984


def test_mobilenet_dropblock_only_at_stride_16_and_32():
    model = mobilenet_v2_dropblock((64, 64, 3), 10, alpha=0.35, rate=0.2)
    layers = dropblock_layers(model)
    # Blocks 6-12 (64 and 96 channels) are at stride 16: group 3; blocks 13-16 at stride 32.
    assert {int(layer.name.split("_")[1]) for layer in layers} == set(range(6, 17))
    for layer in layers:
        block = int(layer.name.split("_")[1])
        assert layer.rate == pytest.approx(0.2 if block >= 13 else 0.05), layer.name
        stride = 64 // layer.input.shape[1]
        if layer.name.endswith("_expand_dropblock") and block in (6, 13):
            assert stride == (8 if block == 6 else 16)  # before the block's strided depthwise
        else:
            assert stride == (32 if block >= 13 else 16), layer.name
    kinds = {layer.name.split("_", 2)[2] for layer in layers}
    assert kinds == {"expand_dropblock", "depthwise_dropblock", "project_dropblock",
                     "shortcut_dropblock"}
    for layer in layers:
        if layer.name.endswith("_shortcut_dropblock"):
            add = model.get_layer(layer.name.replace("_shortcut_dropblock", "_add"))
            assert layer.name in [t._keras_history.operation.name
                                  for t in add._inbound_nodes[0].input_tensors]


@pytest.mark.parametrize("build, per_block", [(sequence_dropblock, 3), (volume_dropblock, 3)])
def test_1d_and_3d_models_drop_in_groups_3_and_4(build, per_block):
    shape = (256, 1) if build is sequence_dropblock else (8, 32, 32, 1)
    model = build(shape, 5, width=4, rate=0.2, block_size=3)
    layers = dropblock_layers(model)
    assert len(layers) == (2 + 2) * per_block  # 2 basic blocks in each of groups 3 and 4
    for layer in layers:
        assert layer.name.startswith(("conv4_", "conv5_"))
        assert layer.rate == pytest.approx(0.2 if layer.name.startswith("conv5_") else 0.05)


def test_dropblock_groups_seed_and_options():
    model = resnet50_dropblock((64, 64, 3), 10, width=4, blocks_per_stage=(1, 1, 1, 1),
                               rate=0.16, dropblock_groups=(2, 3, 4), seed=7,
                               share_channels=True, gamma_mode="exact")
    rates = {layer.name[:5]: layer.rate for layer in dropblock_layers(model)}
    assert rates == {"conv3": pytest.approx(0.01), "conv4": pytest.approx(0.04),
                     "conv5": pytest.approx(0.16)}
    seeds = [layer.seed for layer in dropblock_layers(model)]
    assert sorted(seeds) == list(range(7, 7 + len(seeds)))
    assert {(layer.share_channels, layer.gamma_mode) for layer in dropblock_layers(model)} == {
        (True, "exact")}


def test_models_are_channels_last_whatever_the_global_format():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = resnet50_dropblock((32, 32, 3), 4, width=4, blocks_per_stage=(1, 1, 1, 1))
    finally:
        keras.config.set_image_data_format(previous)
    assert {layer.data_format for layer in dropblock_layers(model)} == {"channels_last"}
    assert model.get_layer("conv1_conv").data_format == "channels_last"


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(None, 64, 3)), "input_shape"),
    (dict(input_shape=(64, 64)), "input_shape"),
    (dict(rate=1.0), "rate"),
    (dict(block_size=0), "block_size"),
    (dict(dropblock_groups=(5,)), "dropblock_groups"),
    (dict(blocks_per_stage=(1, 1, 1)), "blocks_per_stage"),
    (dict(width=0), "width"),
    (dict(num_classes=0), "num_classes"),
    (dict(pooling="sum", include_top=False), "pooling"),
    (dict(gamma_mode="bogus"), "gamma_mode"),
])
def test_resnet_argument_errors_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        resnet50_dropblock(**kwargs)


def test_mobilenet_argument_errors():
    with pytest.raises(ValueError, match="alpha"):
        mobilenet_v2_dropblock(alpha=0)
    with pytest.raises(ValueError, match="repeats"):
        mobilenet_v2_dropblock(repeats=(1, 2))


def test_default_model_is_deterministic_and_independent_of_the_global_seed():
    keras.utils.set_random_seed(1)
    first = default_model()
    keras.utils.set_random_seed(2)
    second = default_model()
    assert first.input_shape == (None, *DEFAULT_MODEL_CONFIG["input_shape"])
    assert first.output_shape == (None, DEFAULT_MODEL_CONFIG["num_classes"])
    assert len(dropblock_layers(first)) == 36
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # Seeded weights are not the all-ones / all-zeros BatchNorm defaults.
    assert float(np.std(first.get_layer("conv4_block1_1_bn").moving_variance)) > 0.1
    x, _ = _data(DEFAULT_MODEL_CONFIG["input_shape"], n=2)
    out = keras.ops.convert_to_numpy(first(x))
    np.testing.assert_array_equal(out, keras.ops.convert_to_numpy(second(x)))
    assert np.all(np.isfinite(out)) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert sorted(layer.seed for layer in dropblock_layers(first)) == list(range(36))


# ---------------------------------------------------------------------------------------------
# add_dropblock


def _small_functional():
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    skip = x
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(x)
    x = keras.layers.Add(name="add")([x, skip])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="small")


def test_add_dropblock_inserts_after_named_layers_and_shares_weights():
    base = _small_functional()
    model = add_dropblock(base, after=["relu_a", "conv_b"], rate=0.3, block_size=3, seed=5)
    names = [layer.name for layer in model.layers]
    assert names.index("relu_a_dropblock") == names.index("relu_a") + 1
    assert _producer(model.get_layer("relu_a_dropblock")) == "relu_a"
    assert _producer(model.get_layer("conv_b_dropblock")) == "conv_b"
    # The skip connection reads the DropBlock output, as every consumer of relu_a now does.
    add_inputs = model.get_layer("add")._inbound_nodes[-1].input_tensors
    assert {t._keras_history.operation.name for t in add_inputs} == {
        "conv_b_dropblock", "relu_a_dropblock"}
    layers = dropblock_layers(model)
    assert [type(layer) for layer in layers] == [DropBlock2D, DropBlock2D]
    assert [(layer.rate, layer.block_size, layer.seed) for layer in layers] == [
        (0.3, (3, 3), 5), (0.3, (3, 3), 6)]
    assert model.name == base.name and model.input_shape == base.input_shape
    # Same layer objects, hence the same variables.
    for layer in base.layers[1:]:
        assert model.get_layer(layer.name) is layer
    assert {id(v) for v in base.weights} <= {id(v) for v in model.weights}
    x, y = _data((16, 16, 3), n=4, classes=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)),
                                  keras.ops.convert_to_numpy(base(x)))
    # Training the rewritten model trains the original.
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), jit_compile=True)
    kernel = np.array(base.get_layer("conv_a").kernel)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not np.array_equal(kernel, np.array(base.get_layer("conv_a").kernel))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)),
                                  keras.ops.convert_to_numpy(base(x)))


def test_add_dropblock_picks_rank_data_format_and_accepts_callables():
    inputs = keras.Input((32, 4), name="seq")
    x = keras.layers.Conv1D(4, 3, name="c1")(inputs)
    x = keras.layers.Reshape((5, 6, 1, 4), name="to_volume")(x)
    x = keras.layers.Conv3D(2, 1, name="c3")(x)
    plain = keras.Model(inputs, x)
    model = add_dropblock(plain, after=lambda layer: layer.name in ("c1", "c3"),
                          rate=lambda layer: 0.2 if layer.name == "c1" else 0.1, block_size=2)
    assert isinstance(model.get_layer("c1_dropblock"), DropBlock1D)
    by_object = add_dropblock(plain, after=[plain.get_layer("c1")], block_size=2)
    assert isinstance(by_object.get_layer("c1_dropblock"), DropBlock1D)
    with pytest.raises(ValueError, match="not a top-level layer"):
        add_dropblock(plain, after=keras.layers.Dense(2, name="stranger"))
    assert isinstance(model.get_layer("c3_dropblock"), DropBlock3D)
    assert model.get_layer("c1_dropblock").rate == 0.2
    assert model.get_layer("c3_dropblock").rate == 0.1

    inputs = keras.Input((3, 8, 8))
    x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="nchw")(inputs)
    model = add_dropblock(keras.Model(inputs, x), "nchw", block_size=3)
    assert model.get_layer("nchw_dropblock").data_format == "channels_first"
    assert model.get_layer("nchw_dropblock").block_size == (3, 3)


def test_add_dropblock_on_keras_applications_resnet50():
    base = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)

    def in_groups_3_4(layer):
        return layer.name.startswith(("conv4_", "conv5_")) and layer.name.endswith("_out")

    model = add_dropblock(base, after=in_groups_3_4, block_size=7,
                          rate=lambda layer: 0.1 if layer.name.startswith("conv5_") else 0.025)
    layers = dropblock_layers(model)
    assert len(layers) == 6 + 3
    assert sorted({layer.rate for layer in layers}) == [0.025, 0.1]
    assert _producer(model.get_layer("conv4_block2_out_dropblock")) == "conv4_block2_out"
    # conv4_block3 now reads the dropped features.
    assert _producer(model.get_layer("conv4_block3_1_conv")) == "conv4_block2_out_dropblock"
    assert {id(v) for v in base.weights} <= {id(v) for v in model.weights}
    assert len(model.weights) == len(base.weights) + len(layers)  # + one rate variable each
    x, _ = _data((64, 64, 3), n=2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)),
                                  keras.ops.convert_to_numpy(base(x, training=False)))


def test_add_dropblock_converts_sequential_and_keeps_the_original_working():
    seq = keras.Sequential([keras.Input((12, 12, 2)), keras.layers.Conv2D(4, 3, name="c1"),
                            keras.layers.Conv2D(4, 3, name="c2"),
                            keras.layers.Flatten(name="flatten"),
                            keras.layers.Dense(2, name="out")], name="seq")
    x, _ = _data((12, 12, 2), n=2)
    before = keras.ops.convert_to_numpy(seq(x))
    model = add_dropblock(seq, after="c1", rate=0.2, block_size=3)
    assert [layer.name for layer in model.layers][1:] == ["c1", "c1_dropblock", "c2", "flatten",
                                                          "out"]
    assert model.get_layer("c2") is seq.get_layer("c2")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), before)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(seq(x)), before)
    # Twice on the same layer: the second DropBlock gets a fresh name.
    twice = add_dropblock(model, after="c1", block_size=3)
    assert "c1_dropblock_2" in [layer.name for layer in twice.layers]


def test_add_dropblock_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"No layer named 'relu_b'.*Close matches: \['relu_a'"):
        add_dropblock(_small_functional(), after=["relu_a", "relu_b"])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="custom")
        self.conv = keras.layers.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


class _TwoOutputs(keras.layers.Layer):
    def call(self, x):
        return x, -x


@pytest.mark.parametrize("make, after, error, match", [
    (lambda: _Subclassed(), "conv", TypeError, r"subclassed keras\.Model.*_Subclassed.*no layer "
                                               "graph"),
    (lambda: keras.layers.Dense(2), "x", TypeError, "expected a keras.Model"),
    (lambda: keras.Sequential([keras.layers.Dense(2, name="d")]), "d", ValueError,
     "no input shape yet"),
    (_small_functional, "gap", ValueError, r"rank 2.*DropBlock needs"),
    (_small_functional, 42, TypeError, "Invalid after=42"),
    (_small_functional, [], TypeError, "Invalid after"),
    (_small_functional, lambda layer: False, ValueError, "selected no layer"),
])
def test_add_dropblock_refuses_what_it_cannot_rewrite(make, after, error, match):
    with pytest.raises(error, match=match):
        add_dropblock(make(), after=after)


def test_add_dropblock_refuses_shared_multi_output_nested_and_dynamic_layers():
    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(ValueError, match="'shared' is called 2 times.*shared layer"):
        add_dropblock(model, "shared")

    inputs = keras.Input((8, 8, 4))
    a, b = _TwoOutputs(name="split")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="'split' returns 2 tensors"):
        add_dropblock(model, "split")

    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 3, name="deep")],
                             name="inner")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, inner(inputs))
    with pytest.raises(ValueError, match="inside the nested model 'inner'"):
        add_dropblock(model, "deep")
    assert isinstance(add_dropblock(model, "inner", block_size=3).get_layer("inner_dropblock"),
                      DropBlock2D)

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match="dynamic spatial dims"):
        add_dropblock(model, "conv")
