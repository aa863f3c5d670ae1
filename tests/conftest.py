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
        x = keras.layers.Resizing(16, 16)(inputs) if resizing else inputs
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
