"""``inspect`` and the graph readers on real artifacts, and on untrusted, broken inputs."""

import shutil
import zipfile

import pytest

from tfdropblock.export import InputError, export, inspect
from tfdropblock.export.formats.onnx.reader import onnx_graph
from tfdropblock.export.formats.saved_model.reader import saved_model_graph
from tfdropblock.export.formats.tflite.reader import tflite_graph
from tfdropblock.export.model.graphs import scope_matcher


@pytest.fixture(scope="module")
def model(tiny_image_model):
    return tiny_image_model()


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "out"
    export(model, out)
    return out


def test_graph_readers_see_the_model_ops(artifacts):
    sm = saved_model_graph(artifacts / "saved_model", "serve")
    assert sm.ops["Conv2D"] == 1 and sm.ops["MatMul"] == 1
    tfl = tflite_graph(artifacts / "model.tflite")
    assert tfl.ops["CONV_2D"] == 1 and tfl.flex_ops == []
    onnx = onnx_graph(artifacts / "model.onnx")
    assert onnx.ops["Conv"] == 1 and onnx.unsupported_ops == []


def test_inspect_reports_layer_names_given_explicitly(artifacts, model):
    # Only names that occur are flagged: the conv layer's scope is in every format.
    conv = next(layer.name for layer in model.layers if layer.name.startswith("conv2d"))
    for name in ("saved_model", "model.tflite", "model.onnx"):
        assert inspect(artifacts / name) == [], name
        findings = [f for f in inspect(artifacts / name, layer_names=[conv])
                    if f.what.startswith("name ")]
        assert findings and all(conv in f.what for f in findings), name


def test_scope_matcher_matches_whole_scope_components():
    matches = scope_matcher(["db"])
    assert matches("model/db/mul") and matches("model/db_1/mul;model/conv/BiasAdd")
    assert matches("functional_1/db_3_1/Cast:0")
    assert not matches("model/dbx/mul") and not matches("model/my_db/mul")
    default = scope_matcher()
    assert default("functional_1/drop_block2d_3/Cast:0") and default("m/drop_block3d_2_1/x")
    assert not default("resnet50_dropblock_1/conv1_conv_1/convolution"), "a model's scope"
    assert not default("functional_1/conv2d/Conv2D")


def _write(path, data):
    path.write_bytes(data)
    return path


def _bad_inputs(artifacts, tmp):
    onnx_bytes = (artifacts / "model.onnx").read_bytes()
    tflite_bytes = (artifacts / "model.tflite").read_bytes()
    no_vars = tmp / "no_variables"
    shutil.copytree(artifacts / "saved_model", no_vars)
    shutil.rmtree(no_vars / "variables")
    bad_pb = tmp / "bad_pb"
    bad_pb.mkdir()
    _write(bad_pb / "saved_model.pb", b"\x00garbage" * 10)
    empty_dir = tmp / "empty_dir"
    empty_dir.mkdir()
    keras_zip = tmp / "model.keras"
    with zipfile.ZipFile(keras_zip, "w") as z:
        z.writestr("config.json", "{}")
    return {
        "missing": tmp / "nope.onnx",
        "empty onnx": _write(tmp / "empty.onnx", b""),
        "truncated onnx": _write(tmp / "trunc.onnx", onnx_bytes[: len(onnx_bytes) // 3]),
        "garbage onnx": _write(tmp / "garbage.onnx", b"\xff" * 100),
        "truncated tflite": _write(tmp / "trunc.tflite", tflite_bytes[:200]),
        "corrupted tflite": _write(tmp / "corrupt.tflite",
                                   tflite_bytes[:8] + b"\xff" * (len(tflite_bytes) - 8)),
        "png as tflite": _write(tmp / "image.tflite", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50),
        "dir as onnx": _make_dir(tmp / "dir.onnx"),
        "savedmodel without variables": no_vars,
        "corrupted saved_model.pb": bad_pb,
        "directory without saved_model.pb": empty_dir,
        "keras archive": keras_zip,
        "saved_model.pb file": artifacts / "saved_model" / "saved_model.pb",
    }


def _make_dir(path):
    path.mkdir()
    return path


def test_untrusted_inputs_raise_one_line_input_errors(artifacts, tmp_path):
    for label, path in _bad_inputs(artifacts, tmp_path).items():
        with pytest.raises(InputError) as info:
            inspect(path)
        message = str(info.value)
        assert "\n" not in message and str(path.name) in message, (label, message)
