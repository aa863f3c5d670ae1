"""Layer names in the name-scope check and in reports (a layer named like a suffixed DropBlock
scope; DropBlocks sharing a name in nested models), and weights files from keras-cv."""

import keras
import numpy as np
import pytest

import tfdropblock
from tfdropblock.export import verify
from tfdropblock.export.model.graphs import scope_matcher
from tfdropblock.export.model.identity import dropblock_names

FORMATS = ("saved_model", "tflite", "onnx")


class IgnoresTraining(tfdropblock.DropBlock2D):
    """Drops at inference too."""

    def call(self, inputs, training=None):
        return self._drop(inputs)


def _head(inputs, x):
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def neighbour_model():
    """A DropBlock named ``drop`` and a Conv2D named ``drop_1``, whose scope in a traced graph
    (``drop_1_2``) also extends ``drop``."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = tfdropblock.DropBlock2D(0.2, 3, name="drop")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="drop_1")(x)
    return _head(inputs, x)


def twin_submodels_model(dropblock_cls=tfdropblock.DropBlock2D):
    """Two nested models, each with a DropBlock named ``db``."""
    keras.utils.set_random_seed(0)

    def block(name):
        inputs = keras.Input((16, 16, 4))
        x = dropblock_cls(0.2, 3, name="db")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(x), name=name)

    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    return _head(inputs, block("b")(block("a")(x)))


def test_a_layer_named_like_a_suffixed_dropblock_scope_is_no_structure_failure():
    report = verify(neighbour_model(), formats=FORMATS)
    assert report.ok, str(report)
    assert report.model["dropblock_layers"] == ["drop"]


def test_dropblocks_sharing_a_name_are_each_reported_and_verify():
    report = verify(twin_submodels_model(), formats=FORMATS)
    assert report.ok, str(report)
    assert report.model["dropblock_layers"] == ["a/db", "b/db"]
    assert "2 DropBlock layer(s) (a/db, b/db)" in str(report)


def test_leaks_of_dropblocks_sharing_a_name_are_still_name_findings():
    report = verify(twin_submodels_model(IgnoresTraining), formats=("saved_model",))
    findings = [str(f) for f in report.formats["saved_model"].findings]
    assert not report.ok
    assert any("a_1/db" in f and "name scope" in f for f in findings), findings


def test_dropblock_names_counts_instances_and_keeps_unique_names_plain():
    model = twin_submodels_model()
    names = dropblock_names(model)
    assert names == ["a/db", "b/db"]
    assert names.dropblock_scopes == [("a", "db"), ("b", "db")]
    assert {(None, model.name), (model.name, "a"), (model.name, "conv")} <= set(
        names.other_scopes)
    assert any(parent == "b" for parent, _ in names.other_scopes), "the nested models' layers"
    assert dropblock_names(neighbour_model()) == ["drop"]
    # One instance used twice is one layer.
    shared = tfdropblock.DropBlock2D(0.1, 3, name="shared")
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, shared(shared(inputs)))
    assert dropblock_names(model) == ["shared"]


def test_scope_matcher_gives_each_component_to_the_longest_layer_name_it_extends():
    matches = scope_matcher(dropblock_names(neighbour_model()))
    # The Conv2D "drop_1": as traced ("drop_1_2"), and its captured variables.
    assert not matches("functional_1/drop_1_2/convolution")
    assert not matches("drop_1/kernel_1")
    # Scopes only DropBlock "drop" can own: itself, suffixed beyond what "drop_1" explains.
    assert matches("functional_1/drop/mul") and matches("drop/current_rate_1")
    assert matches("functional_1/drop_2/mul")
    assert not matches("functional_1/dropx/mul") and not matches("functional_1/conv/Conv2D")
    # Without the model's other layers (inspect with layer names) suffixes still match.
    assert scope_matcher(["drop"])("functional_1/drop_1/mul")


def test_scope_matcher_tells_same_named_layers_apart_by_their_parent():
    matches = scope_matcher(["a/x"], other_layers=[("b", "x"), (None, "functional")])
    assert matches("functional_1/a_1/x/mul") and matches("functional_1/a/x_1/mul")
    assert not matches("functional_1/b_1/x/convolution")
    # No parent in the name (a captured variable): cannot tell, so no name finding.
    assert not matches("x/kernel_1")


# -- keras-cv weights --------------------------------------------------------------------------

class KerasCVDropBlock2D(keras.layers.Layer):
    """What keras-cv's DropBlock2D stores: no variables (a SeedGenerator, which saves none)."""

    def __init__(self, rate, block_size, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.block_size, self.seed = rate, block_size, seed
        self._random_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        return inputs

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "block_size": self.block_size,
                "seed": self.seed}


# Keras stores a layer's variables under its class name, snake-cased: keras-cv's is also
# "DropBlock2D", so the entry is where tfdropblock's layer looks for it.
KerasCVDropBlock2D.__name__ = "DropBlock2D"


def weights_model(dropblock_cls, rate=0.25):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = dropblock_cls(rate, 3, name="db")(x)
    return _head(inputs, x)


X = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")


def test_keras_cv_weights_load_into_the_tfdropblock_model(tmp_path):
    cv = weights_model(KerasCVDropBlock2D)
    path = tmp_path / "cv.weights.h5"
    cv.save_weights(path)
    model = weights_model(tfdropblock.DropBlock2D)
    for layer in model.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    model.get_layer("db").current_rate.assign(0.05)
    model.load_weights(path)
    np.testing.assert_array_equal(model(X, training=False), cv(X, training=False))
    # keras-cv has no schedule: the layer runs at its configured rate.
    assert float(model.get_layer("db").current_rate.numpy()) == pytest.approx(0.25)


def test_keras_cv_whole_model_file_loads_with_tfdropblock_in_its_place(tmp_path):
    # keras-cv registers the layer as "keras_cv>DropBlock2D"; keras_cv is not installed here,
    # so the registration is made for saving only, then removed.
    registered = keras.saving.register_keras_serializable(package="keras_cv")(
        type("DropBlock2D", (KerasCVDropBlock2D,), {}))
    cv = weights_model(registered)
    path = tmp_path / "cv.keras"
    try:
        cv.save(path)
    finally:
        del keras.saving.get_custom_objects()["keras_cv>DropBlock2D"]
    model = keras.saving.load_model(
        path, custom_objects={"keras_cv>DropBlock2D": tfdropblock.DropBlock2D})
    layer = model.get_layer("db")
    assert isinstance(layer, tfdropblock.DropBlock2D) and layer.rate == 0.25
    np.testing.assert_array_equal(model(X, training=False), cv(X, training=False))


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_own_round_trip_keeps_the_scheduled_rate(tmp_path, suffix):
    model = weights_model(tfdropblock.DropBlock2D)
    model.get_layer("db").current_rate.assign(0.125)
    path = tmp_path / f"model{suffix}"
    if suffix == ".keras":
        model.save(path)
        loaded = keras.saving.load_model(path)
    else:
        model.save_weights(path)
        loaded = weights_model(tfdropblock.DropBlock2D)
        loaded.load_weights(path)
    assert float(loaded.get_layer("db").current_rate.numpy()) == 0.125
    np.testing.assert_array_equal(loaded(X, training=False), model(X, training=False))


def test_a_weights_file_with_other_variables_still_fails(tmp_path):
    # Only the empty entry is accepted: a layer with a different variable is still Keras's error.
    class TwoVariables(keras.layers.Layer):
        def __init__(self, rate, block_size, **kwargs):
            super().__init__(**kwargs)
            self.a = self.add_weight(shape=(), initializer="zeros", trainable=False, name="a")
            self.b = self.add_weight(shape=(), initializer="zeros", trainable=False, name="b")

        def call(self, inputs):
            return inputs

    TwoVariables.__name__ = "DropBlock2D"
    path = tmp_path / "other.weights.h5"
    weights_model(TwoVariables).save_weights(path)
    with pytest.raises(ValueError, match="variables"):
        weights_model(tfdropblock.DropBlock2D).load_weights(path)

