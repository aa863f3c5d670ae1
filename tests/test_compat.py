"""One test per shim of tfdropblock._compat: each private TensorFlow, Keras or tf2onnx API the
package reaches into must still exist and behave as the shim says, so that an upgrade that
moves one fails here instead of degrading silently (the XLA probe's fallback is the slow mask
layout; the TF-initialised probe's, spawning every isolated child)."""

import subprocess
import sys

import keras
import numpy as np
import pytest
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


# -- What differs between the supported versions ---------------------------------------------


def test_version_tuple_reads_release_numbers():
    assert _compat.version_tuple("3.15.1") == (3, 15, 1)
    assert _compat.version_tuple("2.16.0rc0") == (2, 16, 0)
    assert _compat.version_tuple("3.5") == (3, 5, 0)
    assert _compat.version_tuple("2.21.0.dev20261201") == (2, 21, 0)
    assert _compat.keras_version() == keras.__version__


@pytest.mark.parametrize("version, missing", [
    ("3.5.0", {"onnx": "3.8.0", "openvino": "3.11.0", "litert": "3.13.0"}),
    ("3.8.0", {"openvino": "3.11.0", "litert": "3.13.0"}),
    ("3.12.4", {"litert": "3.13.0"}),
    ("3.13.0", {}),
    ("3.15.1", {}),
])
def test_keras_export_missing_names_installed_and_first_versions(version, missing):
    for fmt in ("tf_saved_model", "onnx", "openvino", "litert"):
        why = _compat.keras_export_missing(fmt, version)
        if fmt in missing:
            assert why == (f"the installed Keras {version} has no model.export(format={fmt!r}); "
                           f"it arrived in Keras {missing[fmt]}")
        else:
            assert why is None
    assert _compat.keras_export_missing(None, version) is None


def test_keras_export_since_is_true_of_the_installed_keras():
    # Keras 3.8 on lists its formats in Model.export ("available_formats"); before, it wrote a
    # SavedModel whatever `format` said, and named no other format.
    import inspect

    source = inspect.getsource(keras.Model.export)
    for fmt in ("onnx", "openvino", "litert"):
        has = _compat.keras_export_missing(fmt) is None
        assert (f'"{fmt}"' in source) == has, (fmt, keras.__version__)


class _Archive:
    def __init__(self):
        self.calls = []


class _OldArchive(_Archive):  # Keras 3.5: write_out(filepath, options=None)
    def write_out(self, filepath, options=None):
        self.calls.append((filepath, {}))


class _NewArchive(_Archive):  # Keras 3.6 on
    def write_out(self, filepath, options=None, verbose=True):
        self.calls.append((filepath, {"verbose": verbose}))


def test_write_out_passes_verbose_only_where_it_is_taken(tmp_path):
    old, new = _OldArchive(), _NewArchive()
    _compat.write_out(old, tmp_path / "a")
    _compat.write_out(new, tmp_path / "b")
    assert old.calls == [(str(tmp_path / "a"), {})]
    assert new.calls == [(str(tmp_path / "b"), {"verbose": False})]


def test_write_out_writes_a_saved_model_with_the_installed_keras(tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    _compat.write_out(archive, tmp_path / "sm")
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert reloaded.serve(tf.ones((1, 3))).shape == (1, 2)


class _OldModel:  # Keras 3.5: export(filepath, format="tf_saved_model")
    def __init__(self):
        self.calls = []

    def export(self, filepath, format="tf_saved_model"):
        self.calls.append((filepath, format))


def test_model_export_drops_verbose_before_keras_3_6_and_refuses_missing_formats(
        tmp_path, monkeypatch):
    monkeypatch.setattr(_compat, "keras_version", lambda: "3.5.0")
    model = _OldModel()
    _compat.model_export(model, tmp_path / "m", "tf_saved_model")
    assert model.calls == [(str(tmp_path / "m"), "tf_saved_model")]
    # Keras 3.5 would write a SavedModel for format="litert": refused instead.
    with pytest.raises(ValueError, match=r"^The installed Keras 3\.5\.0 has no "
                                         r"model\.export\(format='litert'\); it arrived in "
                                         r"Keras 3\.13\.0\.$"):
        _compat.model_export(model, tmp_path / "t", "litert")
    assert len(model.calls) == 1


def test_model_export_writes_a_saved_model_with_the_installed_keras(tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    _compat.model_export(model, tmp_path / "sm", "tf_saved_model")
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
