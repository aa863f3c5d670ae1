"""Immunity to Keras's call-context training leak, in plain calls and in Keras's own exports.

The plain-call tests run on TensorFlow and JAX; the exports are ``tf_only``.

In Keras 3.15 a layer whose ``call`` defaults ``training=True`` (Resizing, CenterCrop, the
Random* layers) writes True into the call context, and a later layer defaulting to
``training=None`` inherits it under a plain ``model(x)`` and in ``model.export``. The layers
default to ``training=False``, which the functional node records, as Keras's Dropout does.
"""

import keras
import numpy as np
import pytest

import backend
from backend import numpy
from conftest import needs_keras_export
from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D
from tfdropblock._compat import model_export

# TF (StatelessRandomUniformFullIntV2, RngReadAndSkip), ONNX (RandomUniform), LiteRT
# (RANDOM_UNIFORM, FlexStatelessRandom...): matched without case.
RANDOM_OPS = ("random", "rng")


class CountingDropBlock2D(DropBlock2D):
    """Counts the traces that build the training mask: Python runs ``_drop`` once per trace."""

    drops = 0

    def _drop(self, inputs):
        CountingDropBlock2D.drops += 1
        return super()._drop(inputs)


def preprocessed(style, layer, preprocessing="resizing"):
    """Resizing or CenterCrop (both default ``training=True``), a conv, then ``layer``."""
    first = (keras.layers.Resizing(12, 12) if preprocessing == "resizing"
             else keras.layers.CenterCrop(12, 12))
    conv = keras.layers.Conv2D(4, 3, padding="same")
    keras.utils.set_random_seed(0)
    if style == "sequential":
        return keras.Sequential([keras.Input((16, 16, 3)), first, conv, layer])
    inputs = keras.Input((16, 16, 3))
    return keras.Model(inputs, layer(conv(first(inputs))))


def identity_twin(model):
    """The same model with DropBlock left out (its inference path must be exactly this)."""
    return keras.Model(model.inputs, model.layers[-1].input)


IMAGES = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)


@pytest.mark.parametrize("preprocessing", ["resizing", "center_crop"])
@pytest.mark.parametrize("style", ["functional", "sequential"])
def test_plain_call_after_a_training_default_layer_is_inference(style, preprocessing):
    model = preprocessed(style, DropBlock2D(0.5, 3, seed=1), preprocessing)
    want = identity_twin(model)(IMAGES)
    calls = [model, lambda x: model.predict(x, verbose=0)]
    if backend.TENSORFLOW:
        import tensorflow as tf

        calls.append(tf.function(model))
    else:  # JAX: the stateless call a jax.jit inference step makes
        import jax

        calls.append(lambda x: jax.jit(lambda nt, t: backend.stateless(model, nt, t, None)[0])(
            [v.value for v in model.non_trainable_variables], x))
    want = numpy(want)
    for call in calls:
        np.testing.assert_array_equal(numpy(call(IMAGES)), want)
    # Training is still reachable, and does drop.
    assert (numpy(model(IMAGES, training=True)) == 0).mean() > 0.1


class TrainingByDefault(keras.layers.Layer):
    """An identity whose call defaults to training=True, as Resizing's and the Random* layers'."""

    def call(self, x, training=True):
        return x


@pytest.mark.parametrize("cls,shape", [(DropBlock1D, (10, 4)), (DropBlock3D, (4, 6, 6, 2))])
def test_every_rank_is_immune(cls, shape):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, cls(0.5, 2, seed=0)(TrainingByDefault()(inputs)))
    x = np.ones((8, *shape), np.float32)
    np.testing.assert_array_equal(numpy(model(x)), x)
    assert (numpy(model(x, training=True)) == 0).any()


def test_fit_evaluate_and_custom_loops_still_choose_the_mode():
    CountingDropBlock2D.drops = 0
    model = preprocessed("functional", CountingDropBlock2D(0.3, 3, seed=1))
    model.compile("sgd", "mse")
    targets = np.zeros((4, 12, 12, 4), np.float32)
    model.fit(IMAGES, targets, epochs=1, verbose=0)
    assert CountingDropBlock2D.drops >= 1  # the train function built the mask
    after_fit = CountingDropBlock2D.drops
    model.evaluate(IMAGES, targets, verbose=0)
    model.predict(IMAGES, verbose=0)
    assert CountingDropBlock2D.drops == after_fit  # evaluate and predict did not
    a, b = model(IMAGES, training=True), model(IMAGES, training=True)
    assert not np.array_equal(numpy(a), numpy(b))


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.drop = DropBlock2D(0.5, 3, seed=2)

    def call(self, x):
        return self.drop(self.conv(x))  # no training argument: inherited from the caller


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def call(self, x, training=None):
        return self.block(x, training=training)


def test_layer_nested_in_a_subclassed_model_inherits_the_callers_mode():
    model = Net()
    np.testing.assert_array_equal(numpy(model(IMAGES)), numpy(model(IMAGES)))
    assert not np.array_equal(numpy(model(IMAGES, training=True)),
                              numpy(model(IMAGES, training=True)))


# --- Keras's own model.export ------------------------------------------------------------------

def graph_op_types(graph_def):
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def assert_no_random_op(types):
    assert not [t for t in types if any(r in t.lower() for r in RANDOM_OPS)], sorted(types)


@pytest.mark.tf_only
@pytest.mark.parametrize("style", ["functional", "sequential"])
def test_keras_saved_model_export_is_the_identity_path(style, tmp_path):
    import tensorflow as tf

    model = preprocessed(style, DropBlock2D(0.5, 3, seed=1))
    model_export(model, tmp_path / "sm", "tf_saved_model")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert_no_random_op(graph_op_types(serve.graph.as_graph_def()))
    [first] = serve(tf.constant(IMAGES)).values()
    [second] = serve(tf.constant(IMAGES)).values()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, identity_twin(model)(IMAGES), rtol=1e-6, atol=1e-6)


@pytest.mark.tf_only
@needs_keras_export("onnx")
@pytest.mark.parametrize("style", ["functional", "sequential"])
def test_keras_onnx_export_loads_in_onnxruntime(style, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = preprocessed(style, DropBlock2D(0.5, 3, seed=1))
    path = str(tmp_path / "m.onnx")
    model(IMAGES)  # Keras's ONNX export refuses a model that was never called
    model_export(model, path, "onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert_no_random_op({node.op_type for node in proto.graph.node})
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    [out] = session.run(None, {name: IMAGES})
    np.testing.assert_allclose(out, identity_twin(model)(IMAGES), rtol=1e-5, atol=1e-5)


@pytest.mark.tf_only
@needs_keras_export("litert")
def test_keras_litert_export_runs_in_the_litert_interpreter(tmp_path):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    model = preprocessed("functional", DropBlock2D(0.5, 3, seed=1), "center_crop")
    path = str(tmp_path / "m.tflite")
    model_export(model, path, "litert")
    interpreter = litert.Interpreter(
        model_path=path,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    [detail] = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], IMAGES.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], IMAGES)
    interpreter.invoke()  # a Flex (TF) random op would be refused here
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, identity_twin(model)(IMAGES), rtol=1e-5, atol=1e-5)
    assert_no_random_op(litert_op_names(path))


def litert_op_names(path):
    """Builtin and custom op names of every subgraph's operator codes, from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        tflite = schema.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = set()
    for code in tflite.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        names.add(code.customCode.decode() if code.customCode else codes[builtin])
    assert names, "no operators parsed"
    return names
