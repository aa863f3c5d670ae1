"""Clean models export and verify in every format, with real converters and runtimes."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdropblock
from tfdropblock.export import (FORMATS, SCHEMA_VERSION, InputError, assert_folds_away,
                                dropblocks_as_identity, export, inspect, verify)


@pytest.fixture(scope="module")
def clean_report(tiny_image_model):
    # The identity reference is converted for real here: equality is shown on the artifacts.
    return verify(tiny_image_model(), reference="export")


@pytest.fixture(scope="module")
def exported(tiny_image_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "artifacts"
    paths = export(tiny_image_model(), out)
    return out, paths


def test_clean_model_passes_every_check_in_every_format(clean_report):
    assert clean_report.ok, str(clean_report)
    assert clean_report.exit_code == 0
    assert list(clean_report.formats) == list(FORMATS)
    for fmt, result in clean_report.formats.items():
        assert result.status == "passed", (fmt, result.findings, result.error)
        assert set(result.checks) >= {"structure", "validity", "parity", "determinism"}
        structure = result.checks["structure"].details
        assert structure["extra_ops"] == {} and structure["missing_ops"] == {}
        assert structure["random_ops"] == []
        assert structure["op_count"] > 0
        parity = result.checks["parity"].details
        assert parity["batch_sizes"] == [1, 3]
        assert parity["max_abs_error"] < 1e-5


def test_reference_shortcut_only_when_the_traced_graphs_are_identical(tiny_image_model,
                                                                    clean_report):
    assert clean_report.formats["onnx"].checks["structure"].details["reference"] == "exported"
    report = verify(tiny_image_model(), formats=("onnx",))
    assert report.ok, str(report)
    assert "identical" in report.formats["onnx"].checks["structure"].details["reference"]


def test_report_lists_what_was_checked(clean_report):
    # Keras numbers default layer names per process: drop_block2d, drop_block2d_1...
    [name] = clean_report.model["dropblock_layers"]
    assert re.fullmatch(r"drop_block2d(_\d+)?", name), name
    assert clean_report.model["inputs"] == [
        {"name": "image", "shape": [None, 16, 16, 3], "dtype": "float32"}]
    onnx_runtimes = {c["runtime"] for c in
                     clean_report.formats["onnx"].checks["parity"].details["comparisons"]}
    assert onnx_runtimes == {"onnxruntime (ORT_DISABLE_ALL)",
                             "onnxruntime (default optimisations)"}
    table = str(clean_report)
    assert "PASSED" in table and table.rstrip().endswith("OK")


def test_report_json_schema(clean_report):
    data = json.loads(json.dumps(clean_report.to_dict(), allow_nan=False))
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["ok"] is True and data["exit_code"] == 0
    for key in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "litert"):
        assert isinstance(data["versions"][key], str), key
    assert data["versions"]["tensorflow"] == tf.__version__
    assert set(data["formats"]) == set(FORMATS)
    for result in data["formats"].values():
        assert set(result) >= {"format", "status", "checks", "findings", "error", "seconds"}
        for check in result["checks"].values():
            assert check["ok"] in (True, False, None)


def test_export_writes_every_artifact_with_a_dynamic_batch(exported):
    out, paths = exported
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.tflite", "saved_model"]
    assert set(paths) == set(FORMATS)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging litter"

    loaded = tf.saved_model.load(str(out / "saved_model"))
    serve = loaded.signatures["serve"]
    assert serve.structured_input_signature[1]["image"].shape.as_list() == [None, 16, 16, 3]
    assert serve(image=tf.zeros((5, 16, 16, 3)))["output_0"].shape == (5, 2)

    import onnx
    import onnxruntime as ort

    model = onnx.load(str(out / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim0.HasField("dim_value"), "batch axis must stay dynamic"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((7, 16, 16, 3), np.float32)})[0].shape == (7, 2)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(out / "model.tflite"))
    details = interpreter.get_signature_runner("serve").get_input_details()["image"]
    assert list(details["shape_signature"]) == [-1, 16, 16, 3]


def test_artifacts_from_export_inspect_clean(exported):
    out, _ = exported
    for name in ("saved_model", "model.tflite", "model.onnx"):
        assert inspect(out / name) == [], name


def test_multi_input_multi_output_dict_model():
    keras.utils.set_random_seed(1)
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((4,), name="meta")
    x = keras.layers.Conv2D(4, 3, padding="same")(image)
    x = tfdropblock.DropBlock2D(0.3, 3)(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    joined = keras.layers.Concatenate()([pooled, keras.layers.Dense(4)(meta)])
    model = keras.Model({"image": image, "meta": meta},
                        {"logits": keras.layers.Dense(3)(joined), "embedding": joined})
    report = verify(model)
    assert report.ok, str(report)
    assert sorted(report.model["outputs"]) == ["embedding", "logits"]
    assert sorted(i["name"] for i in report.model["inputs"]) == ["image", "meta"]
    outputs = {c["output"] for c in report.formats["tflite"].checks["parity"].details[
        "comparisons"]}
    assert outputs == {"embedding", "logits"}


class RenamedDropBlock(tfdropblock.DropBlock2D):
    """A subclass that changes nothing: it must be found and must fold away."""


def test_nested_models_list_io_and_subclassed_dropblock_are_found():
    keras.utils.set_random_seed(2)
    inner = keras.Sequential([keras.Input((16, 16, 4)), keras.layers.Conv2D(4, 3, padding="same"),
                              RenamedDropBlock(0.2, 3, name="inner_db")], name="inner")
    a, b = keras.Input((16, 16, 3), name="a"), keras.Input((16, 16, 1), name="b")
    x = keras.layers.Concatenate()([a, b])
    x = inner(tfdropblock.DropBlock2D(0.1, 5, name="outer_db")(x))
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model([a, b], [keras.layers.Dense(2)(pooled), pooled])
    report = verify(model, formats=("saved_model", "onnx"))
    assert report.ok, str(report)
    assert sorted(report.model["dropblock_layers"]) == ["inner_db", "outer_db"]
    assert report.model["outputs"] == ["output_0", "output_1"]


def test_model_without_dropblock_verifies_and_says_so(tiny_image_model):
    report = verify(tiny_image_model(None), formats=("saved_model", "tflite"))
    assert report.ok, str(report)
    assert report.model["has_dropblock"] is False
    assert any("no DropBlock layer" in note for note in report.notes)
    assert "no DropBlock layer" in str(report)


def test_user_inputs_set_the_batch_sizes(tiny_image_model):
    inputs = np.random.default_rng(3).standard_normal((4, 16, 16, 3)).astype("float32")
    report = verify(tiny_image_model(), formats=("onnx",), inputs=inputs)
    assert report.ok, str(report)
    assert report.formats["onnx"].checks["parity"].details["batch_sizes"] == [1, 4]
    assert report.settings["inputs"] == "user"
    with pytest.raises(InputError, match="shape"):
        verify(tiny_image_model(), formats=("onnx",), inputs=inputs[:, :8])


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.drop = tfdropblock.DropBlock2D(0.2, 3)
        self.head = keras.layers.Dense(2)

    def call(self, x, training=None):
        x = self.drop(self.conv(x), training=training)
        return self.head(keras.ops.mean(x, axis=(1, 2)))


def test_subclassed_model_needs_and_accepts_an_input_signature():
    model = SubclassedNet()
    model(np.zeros((1, 16, 16, 3), "float32"))
    with pytest.raises(InputError, match="input_signature"):
        verify(model, formats=("saved_model",))
    report = verify(model, formats=("saved_model", "tflite"), input_signature=[
        tf.TensorSpec((None, 16, 16, 3), tf.float32, name="pixels")])
    assert report.ok, str(report)
    assert report.model["dropblock_layers"] == [model.drop.name]


def test_identity_view_is_restored(tiny_image_model):
    model = tiny_image_model(rate=0.5)
    layer = tfdropblock.dropblock_layers(model)[0]
    x = np.ones((2, 16, 16, 4), "float32")
    with dropblocks_as_identity(model):
        assert np.array_equal(layer(x, training=True), x)
    assert not np.array_equal(layer(x, training=True), x)
    assert "call" not in vars(layer)


def test_assert_folds_away_passes_on_a_clean_model(tiny_image_model):
    report = assert_folds_away(tiny_image_model(), formats=("saved_model",))
    assert report.ok


@pytest.mark.parametrize("kwargs, match", [
    ({"formats": ("savedmodel",)}, "formats"),
    ({"formats": ()}, "formats"),
    ({"atol": -1.0}, "atol"),
    ({"rtol": float("nan")}, "rtol"),
    ({"opset": 19}, "opset"),
    ({"write": "sometimes"}, "write"),
])
def test_bad_arguments_name_the_argument(tiny_image_model, kwargs, match):
    with pytest.raises(InputError, match=match):
        verify(tiny_image_model(), **kwargs)
