"""What stock architectures taught the kit (issue 9): captured constants must not become ONNX
inputs, every artifact's inputs and outputs must be the Keras model's, a parity comparison that
cannot fail must say so, and an op tf2onnx lacks is an error that names it, not a structure
failure. Models are tiny stand-ins with the same feature (a Normalization layer, a constant
output, gelu's Erfc), so each conversion takes about a second.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdropblock
from conftest import exact_gelu_lowers_to_erfc
from tfdropblock.export import ConversionError, InputError, assert_folds_away, export, verify
from tfdropblock.export.checks import rules as checks
from tfdropblock.export.run.inputs import degenerate_outputs
from tfdropblock.export.formats.onnx import conversion as onnx_export
from tfdropblock.export.model.signature import Signature
from tfdropblock.models import add_dropblock


def _with_dropblock(body, input_shape=(16, 16, 3), outputs=None, name="real"):
    """``body(x) -> y`` after an input named image; a DropBlock goes after the layer "conv"."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape, name="image")
    y = body(inputs)
    base = keras.Model(inputs, y, name=name)
    return add_dropblock(base, after="conv", rate=0.2, block_size=3, seed=0)


def _normalization_model():
    def body(x):
        x = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0])(x)
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
        return keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return _with_dropblock(body)


def _head(x, **dense):
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    return keras.layers.Dense(2, **dense)(keras.layers.GlobalAveragePooling2D()(x))


# -- 1. captured constants, and artifact inputs/outputs against the Keras model's -------------

def test_normalization_constants_stay_constants_in_onnx(tmp_path):
    model = _normalization_model()
    report = verify(model, formats=("onnx",))
    assert report.ok and report.exit_code == 0, str(report)
    io = report.formats["onnx"].checks["validity"].details["io"]
    assert [t["name"] for t in io["inputs"]] == ["image"]
    parity = report.formats["onnx"].checks["parity"].details
    assert parity["status"] == "ok" and not parity["degenerate"]
    for c in parity["comparisons"]:  # the error is also given against the output's own scale
        assert c["max_scaled_error"] == pytest.approx(c["max_abs_error"] / c["max_abs_expected"])

    import onnx

    export(model, tmp_path, formats=("onnx",))
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"]
    for value in (*graph.input, *graph.output):  # not tf2onnx's unk__N
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value


def _old_from_function(fn, specs, opset):
    """tf2onnx's own from_function, which makes captured constants graph inputs."""
    import tf2onnx

    return tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset)[0]


def test_onnx_inputs_the_model_lacks_fail_validity_and_export(monkeypatch, tmp_path):
    monkeypatch.setattr(onnx_export, "_from_function", _old_from_function)
    model = _normalization_model()
    report = verify(model, formats=("onnx",))
    onnx_result = report.formats["onnx"]
    assert onnx_result.status == "failed" and report.exit_code == 1, str(report)
    assert onnx_result.checks["validity"].ok is False
    [finding] = [f for f in onnx_result.findings if f.check == "validity"]
    assert "3 inputs where the Keras model has 1" in finding.what
    assert "normalization" in finding.what and "Sub/y:0" in finding.what, finding
    with pytest.raises(ConversionError, match="graph inputs"):
        export(model, tmp_path / "out", formats=("onnx",))
    assert not (tmp_path / "out").exists()


def test_a_fixed_batch_axis_fails_validity_in_saved_model_and_tflite(monkeypatch,
                                                                    tiny_image_model):
    original = Signature.endpoint

    def fixed_batch(self, model):
        fn, specs = original(self, model)
        return fn, [tf.TensorSpec((1, *s.shape[1:]), s.dtype, name=s.name) for s in specs]

    monkeypatch.setattr(Signature, "endpoint", fixed_batch)
    report = verify(tiny_image_model(), formats=("saved_model", "tflite"))
    assert report.exit_code == 1, str(report)
    for fmt in ("saved_model", "tflite"):
        result = report.formats[fmt]
        assert result.status == "failed", (fmt, str(report))
        assert result.checks["validity"].ok is False, fmt
        texts = [f.what for f in result.findings if f.check == "validity"]
        assert "input 'image' has a fixed batch axis of 1" in texts, (fmt, texts)
        assert "output 'output_0' has a fixed batch axis of 1" in texts, (fmt, texts)


def test_io_check_compares_names_dtypes_ranks_and_dims():
    expected = {"inputs": [{"name": "image", "dtype": "float32", "shape": [None, 8, 8, 3],
                            "batched": True}],
                "outputs": [{"name": "a", "dtype": "float32", "shape": [None, 2],
                             "batched": True},
                            {"name": "b", "dtype": "float32", "shape": [None, 4],
                             "batched": True}]}
    same = {side: [{k: v for k, v in t.items() if k != "batched"} for t in tensors]
            for side, tensors in expected.items()}
    assert checks.io_check(expected, same, "x") == []
    actual = {"inputs": [{"name": "image", "dtype": "float16", "shape": [None, 8, 8]}],
              "outputs": [{"name": "a", "dtype": "float32", "shape": [None, 3]}]}
    found = [f.what for f in checks.io_check(expected, actual, "x")]
    assert found == ["input 'image' is float16, Keras's is float32",
                     "input 'image' has rank 3 [None, 8, 8], Keras's has rank 4 "
                     "[None, 8, 8, 3]",
                     "output 'b' of the Keras model missing; has 'a'",
                     "output 'a' has shape [None, 3], Keras's is [None, 2]"], found


# -- 2. parity that proves nothing ----------------------------------------------------------

def test_constant_output_is_vacuous_parity_not_ok():
    model = _with_dropblock(lambda x: _head(x, kernel_initializer="zeros",
                                            bias_initializer="ones"))
    report = verify(model, formats=("onnx",))
    result = report.formats["onnx"]
    parity = result.checks["parity"]
    assert parity.ok is None and parity.details["status"] == "vacuous", str(report)
    # A warning, not a failure: structure and determinism still prove the folding.
    assert report.ok and report.exit_code == 0
    assert "vacuous" in str(report).splitlines()[3]
    assert "same for all 3 rows" in str(report)
    data = json.loads(report.to_json())
    assert data["schema_version"] == 5
    assert data["formats"]["onnx"]["checks"]["parity"]["status"] == "vacuous"
    assert "ignores its input" in data["formats"]["onnx"]["warnings"][0]["why"]
    # No generated distribution makes a constant vary: the first one is kept.
    assert data["model"]["generated_inputs"] == "standard normal"
    from tfdropblock.export.execution.verifier import VacuousCheckWarning

    with pytest.warns(VacuousCheckWarning, match="proves nothing"):
        assert_folds_away(model, formats=("onnx",))


def test_outputs_below_atol_are_vacuous():
    model = _with_dropblock(lambda x: _head(x, kernel_initializer=keras.initializers.Constant(
        1e-9)))
    parity = verify(model, formats=("onnx",)).formats["onnx"].checks["parity"]
    assert parity.details["status"] == "vacuous", parity.details
    assert "within atol=1e-05 of 0" in parity.details["degenerate"][0]["why"]


def test_one_constant_output_among_informative_ones_is_a_warning():
    def body(x):
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
        pooled = keras.layers.GlobalAveragePooling2D()(x)
        return {"logits": keras.layers.Dense(2)(pooled),
                "anchors": keras.layers.Dense(2, kernel_initializer="zeros",
                                              bias_initializer="ones")(pooled)}
    report = verify(_with_dropblock(body), formats=("onnx",))
    result = report.formats["onnx"]
    assert result.status == "passed" and result.checks["parity"].details["status"] == "ok"
    assert [w.what for w in result.warnings] == [
        "the comparison of output 'anchors' with Keras proves nothing"]


def test_generated_inputs_are_drawn_where_the_model_varies():
    # Nothing above 10 survives the ReLU: standard normal inputs give a constant output.
    def body(x):
        x = keras.layers.ReLU()(keras.layers.Rescaling(1.0, offset=-10.0)(x))
        return _head(x)
    report = verify(_with_dropblock(body), formats=("onnx",))
    assert report.model["generated_inputs"] == "uniform [0, 255]", report.model
    result = report.formats["onnx"]
    assert result.checks["parity"].details["status"] == "ok" and not result.warnings


def test_all_nan_user_inputs_are_an_input_error(tiny_image_model):
    nan = np.full((2, 16, 16, 3), np.nan, np.float32)
    with pytest.raises(InputError, match="no finite value"):
        verify(tiny_image_model(), formats=("onnx",), inputs=nan)


def test_degenerate_outputs_rules():
    rows = {"x": np.arange(6, dtype=np.float32).reshape(3, 2)}
    same_rows = {"y": np.ones((3, 2))}
    assert degenerate_outputs([rows], [{"y": np.arange(6.0).reshape(3, 2)}],
                                     1e-5, 1e-4) == {}
    [(size, why)] = degenerate_outputs([rows], [same_rows], 1e-5, 1e-4)["y"]
    assert size == 3 and "ignores its input" in why
    # Inputs identical across the batch (a user's single row tiled): nothing to conclude.
    tiled = {"x": np.ones((3, 2), np.float32)}
    assert degenerate_outputs([tiled], [same_rows], 1e-5, 1e-4) == {}
    small = {"y": np.arange(6.0).reshape(3, 2) * 1e-7}
    assert "within atol" in degenerate_outputs([rows], [small], 1e-5, 1e-4)["y"][0][1]
    nan = {"y": np.array([[np.nan, 1.0], [2.0, 3.0], [4.0, 5.0]])}
    assert "1 of 6 Keras value(s) are NaN" in degenerate_outputs(
        [rows], [nan], 1e-5, 1e-4)["y"][0][1]


def test_non_finite_mismatches_are_explained():
    keras_out = {"y": np.array([np.nan, np.inf, 1.0, 2.0])}
    artifact = {"y": np.array([0.0, 0.0, np.nan, 2.0])}
    problem = checks.compare_outputs(artifact, keras_out, 1e-5, 1e-4)["y"]["problem"]
    assert "Keras output has 2 non-finite value(s) where the artifact has finite ones" in problem
    assert "the artifact output has 1 non-finite value(s) where Keras has finite ones" in problem


# -- 6. an op tf2onnx lacks: an error naming it, the structure column not FAIL ---------------

def _gelu_body(x):
    # Keras's exact gelu lowers to Erfc, which tf2onnx 1.17 lacks (as in ConvNeXt); a grouped
    # conv on CPU is a jit_compile function call, which it does not inline.
    x = keras.layers.Conv2D(4, 3, padding="same", groups=4, name="conv")(x)
    x = keras.layers.Activation("gelu")(x)
    return keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))


def test_op_tf2onnx_lacks_is_an_error_not_a_structure_failure():
    report = verify(_with_dropblock(_gelu_body, input_shape=(8, 8, 4)), formats=("onnx",))
    result = report.formats["onnx"]
    assert result.status == "error" and report.exit_code == 3, str(report)
    assert result.checks["structure"].ok is None and not result.findings
    if exact_gelu_lowers_to_erfc():
        assert "tf2onnx 1.17.0 cannot convert op Erfc" in result.error, result.error
    else:  # TensorFlow 2.16's gelu is Erf, which tf2onnx converts: the conv's call is left
        assert "tf2onnx 1.17.0 cannot convert StatefulPartitionedCall" in result.error
    if "StatefulPartitionedCall" in result.error:
        assert "jit_compile=True function" in result.error
    row = next(line for line in str(report).splitlines() if line.startswith("onnx "))
    assert "FAIL" not in row and row.split()[-1] == "ERROR", row
    assert result.to_dict()["checks"]["structure"]["not_checked"] == result.error


class ExtraOps(tfdropblock.DropBlock2D):
    """Adds ops at inference that compute the identity: a leak tf2onnx converts."""

    def call(self, inputs, training=None):
        return tf.nn.relu(inputs) - tf.nn.relu(-inputs)


def test_a_real_leak_beside_an_op_tf2onnx_lacks_is_a_failure():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", groups=4, name="conv")(inputs)
    x = ExtraOps(0.2, 3)(x)
    x = keras.layers.Activation("gelu")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    report = verify(model, formats=("onnx",))
    result = report.formats["onnx"]
    # README: a check failure takes precedence over a format that could not be checked.
    assert result.status == "failed" and report.exit_code == 1, str(report)
    assert result.checks["structure"].ok is False
    lacked = "op Erfc" if exact_gelu_lowers_to_erfc() else "StatefulPartitionedCall"
    assert f"cannot convert {lacked}" in result.error
