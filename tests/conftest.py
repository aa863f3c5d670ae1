import os
import sys

# Quiet TensorFlow's start-up logging; set before any test module imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
# Test-only converter faults (fault_injection.py): in this process, and through _site's
# sitecustomize.py in every Python process a test starts.
_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_site")
sys.path.insert(0, _SITE)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SITE, os.environ.get("PYTHONPATH")]))

import pytest  # noqa: E402

import fault_injection  # noqa: E402

fault_injection.install()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tf_only: needs the TensorFlow backend (graphs, tf.distribute, the export "
        "kit); deselect with -m 'not tf_only' under another KERAS_BACKEND")
    config.addinivalue_line(
        "markers", "jax_only: needs KERAS_BACKEND=jax (the JAX step of .ci/run runs them)")


def pytest_collection_modifyitems(config, items):
    # A test for another backend is reported as skipped, with the reason: never run into an
    # import error, nor counted as passed.
    import keras

    name = keras.backend.backend()
    foreign = [m for m, needs in (("tf_only", "tensorflow"), ("jax_only", "jax")) if needs != name]
    for item in items:
        for marker in foreign:
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(
                    reason=f"{marker}: this run's KERAS_BACKEND is {name}"))


@pytest.fixture(scope="session")
def tiny_image_model():
    """Builder of tiny conv models (16x16x3 -> 2 logits) for the export tests.

    ``tiny_image_model(dropblock_cls)`` puts one ``dropblock_cls(rate, block_size)`` after the
    first conv; ``None`` leaves DropBlock out. Conversions of such a model take well under 1 s.
    """

    def build(dropblock_cls="default", rate=0.2, block_size=3, resizing=False, name=None):
        import keras

        import tfdropblock

        if dropblock_cls == "default":
            dropblock_cls = tfdropblock.DropBlock2D
        keras.utils.set_random_seed(0)
        inputs = keras.Input((16, 16, 3), name="image")
        x = training_on_by_default(16)(inputs) if resizing else inputs
        x = keras.layers.Conv2D(4, 3, padding="same")(x)
        if dropblock_cls is not None:
            x = dropblock_cls(rate, block_size)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(2)(x), name=name)

    return build


@pytest.fixture(scope="session")
def context_following_dropblock():
    """A DropBlock2D whose ``call`` defaults to ``training=None``, as the layers did before they
    were made immune: after Resizing, Keras 3.15's call context switches it on under
    ``model.export``, which is the leak the inspectors must catch. Named as the layer, so that
    Keras gives it the default name (drop_block2d) the name-scope check looks for."""
    import tfdropblock

    class DropBlock2D(tfdropblock.DropBlock2D):
        def call(self, inputs, training=None):
            return super().call(inputs, training=training)

    return DropBlock2D


def training_on_by_default(size):
    """A deterministic layer whose ``call`` defaults to ``training=True``, so that under a plain
    ``model(x)`` Keras runs the layers after it in training mode: ``Resizing(size, size)`` from
    Keras 3.6 on (when Resizing became an image preprocessing layer taking ``training``).
    Keras 3.5's Resizing takes no ``training`` and switches nothing on, and its layers that
    default to ``training=True`` all draw noise then (Random*): there, an identity layer of
    the tests' own that defaults to ``training=True``. docs/COMPATIBILITY.md."""
    import keras

    from tfdropblock._compat import keras_version, version_tuple

    if version_tuple(keras_version()) >= (3, 6, 0):
        return keras.layers.Resizing(size, size)
    return _training_on_by_default_class()()


_TRAINING_ON = []


def _training_on_by_default_class():
    if not _TRAINING_ON:
        import keras

        @keras.saving.register_keras_serializable(package="tfdropblock_tests")
        class TrainingOnByDefault(keras.layers.Layer):
            """An identity whose call defaults to training=True, as Resizing's (Keras 3.6 on)."""

            def call(self, x, training=True):
                return x

        _TRAINING_ON.append(TrainingOnByDefault)
    return _TRAINING_ON[0]


def keras_formats():
    """The kit's formats whose Keras exporter (``model.export(format=...)``) the installed
    Keras has: all three from Keras 3.13 on, ``saved_model`` alone on Keras 3.5 to 3.7."""
    from tfdropblock._compat import keras_export_missing
    from tfdropblock.export import FORMATS, formats

    return tuple(name for name in FORMATS
                 if keras_export_missing(formats.keras_exporter(name).keras_format) is None)


def needs_keras_export(keras_format):
    """Skips a test of Keras's ``model.export(format=keras_format)`` on a Keras without it,
    the reason naming the installed version and the first that has it."""
    from tfdropblock._compat import keras_export_missing

    missing = keras_export_missing(keras_format)
    return pytest.mark.skipif(missing is not None, reason=str(missing))


def exact_gelu_lowers_to_erfc():
    """Whether this TensorFlow's exact ``tf.nn.gelu`` lowers to Erfc, which tf2onnx 1.17 lacks
    (TensorFlow 2.21.0), rather than to Erf, which it converts (TensorFlow 2.16.2). Where it
    does not, the op tf2onnx lacks in a gelu network with a grouped conv is the conv's
    jit_compile function call (StatefulPartitionedCall). docs/COMPATIBILITY.md."""
    import tensorflow as tf

    graph = tf.function(lambda x: tf.nn.gelu(x, approximate=False)).get_concrete_function(
        tf.TensorSpec([1], tf.float32)).graph
    return "Erfc" in {op.type for op in graph.get_operations()}


def write_and_import(folder, name, source):
    """Writes ``source`` as ``folder/name.py`` and imports it, as ``--import name`` run from
    ``folder`` would; ``sys.path`` is left as it was."""
    import importlib

    (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
