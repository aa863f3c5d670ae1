"""One test per shim of tfdropblock._compat: each private TensorFlow, Keras or tf2onnx API the
package reaches into must still exist and behave as the shim says, so that an upgrade that
moves one fails here instead of degrading silently (the XLA probe's fallback is the slow mask
layout; the TF-initialised probe's, spawning every isolated child)."""

import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from tfdropblock import _compat


def test_xla_probe_exists_and_sees_jit_compile():
    assert _compat.xla_probe() is not None, (
        "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext is gone: DropBlock "
        "would silently use the executor mask layout under XLA (correct, but slow)")
    seen = {}

    @tf.function(jit_compile=True)
    def under_xla(x):
        seen["xla"] = _compat.in_xla_context()
        return x + 1

    @tf.function
    def plain(x):
        seen["graph"] = _compat.in_xla_context()
        return x + 1

    under_xla(tf.ones(2))
    plain(tf.ones(2))
    assert seen == {"xla": True, "graph": False}
    assert _compat.in_xla_context() is False  # eager


def test_tf_initialized_tracks_the_first_op():
    code = ("import sys; from tfdropblock import _compat; a = _compat.tf_initialized(); "
            "import tensorflow as tf; b = _compat.tf_initialized(); tf.constant(1.0) + 1; "
            "print(a, b, _compat.tf_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["None", "False", "True"]


def _functional():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    dense = keras.layers.Dense(2, name="dense")
    y = dense(keras.layers.Add(name="add")([inputs["a"], inputs["b"]]))
    return keras.Model(inputs, [y, y], name="f"), dense


def test_flatten_layers_includes_nested_models_and_self():
    inner, dense = _functional()
    outer = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="pre")], name="o")
    names = [layer.name for layer in _compat.flatten_layers(inner)]
    assert names[0] == "f" and {"dense", "add"} <= set(names)
    assert "f" not in [layer.name for layer in _compat.flatten_layers(inner, include_self=False)]
    assert "pre" in [layer.name for layer in _compat.flatten_layers(outer, include_self=False)]


def test_functional_internals():
    model, dense = _functional()
    assert _compat.functional_class() is not None and isinstance(model, _compat.functional_class())
    assert not isinstance(keras.layers.Dense(1), _compat.functional_class())
    by_depth = _compat.nodes_by_depth(model)
    assert any(node.operation is dense for nodes in by_depth.values() for node in nodes)
    assert set(_compat.inputs_struct(model)) == {"a", "b"}
    assert isinstance(_compat.outputs_struct(model), list) and len(_compat.outputs_struct(model)) == 2
    x = model.inputs[0]
    assert _compat.keras_history_operation(x).name in ("a", "b")
    assert _compat.inputs_struct(object(), "default") == "default"


def test_tf2onnx_convert_graph_def_converts_a_frozen_graph():
    from tf2onnx import tf_loader

    fn = tf.function(lambda x: {"y": x * 2.0},
                     input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    concrete = fn.get_concrete_function()
    inputs = [t.name for t in concrete.inputs]
    outputs = [t.name for t in concrete.outputs]
    frozen = tf_loader.from_function(concrete, inputs, outputs)
    proto, external = _compat.tf2onnx_convert_graph_def(
        frozen, name="f", continue_on_error=True, opset=17, input_names=inputs,
        output_names=outputs)
    assert [n.op_type for n in proto.graph.node] == ["Mul"]
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: np.ones((2, 3), np.float32)})[0]
    np.testing.assert_array_equal(got, np.full((2, 3), 2.0, np.float32))


def test_keras_home_is_the_folder_get_file_caches_in(tmp_path, monkeypatch):
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    assert _compat.keras_home() == str(tmp_path)
    # What get_file reads: a file already in that cache is returned without any download.
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "f.txt").write_text("cached")
    path = keras.utils.get_file("f.txt", origin="http://127.0.0.1:9/never")
    assert path == str(tmp_path / "datasets" / "f.txt")
