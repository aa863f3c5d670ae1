"""Quantized TFLite (float16, dynamic range, int8) and ONNX (dynamic, static QDQ int8): DropBlock
folds away before quantization, calibration never sees it active, and the metrics flag what
they must.

Every conversion, quantization and run is real (ExportArchive, the TFLite converter and its
calibrator, tf2onnx, onnxruntime.quantization, LiteRT, ONNX Runtime).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import tfdropblock
from tfdropblock._compat import write_out
from tfdropblock.export import InputError
from tfdropblock.export.core.errors import ConversionError
from tfdropblock.export.formats.onnx.conversion import _from_function, convert_onnx
from tfdropblock.export.formats.onnx.reader import onnx_graph
from tfdropblock.export.formats.saved_model.conversion import ENDPOINT, export_saved_model
from tfdropblock.export.formats.tflite.reader import tflite_graph
from tfdropblock.export.model.identity import dropblock_names, dropblocks_as_identity
from tfdropblock.export.checks.metrics import (THRESHOLDS, Thresholds, output_metrics,
                                        quality_check)
from tfdropblock.export import formats
from tfdropblock.export.formats.onnx.quantization import quantize_onnx
from tfdropblock.export.formats.quantized import check_mode, quantizer
from tfdropblock.export.pipeline.given import verify_quantized
from tfdropblock.export.formats.tflite.quantization import QuantizedTFLiteRunner, quantize_tflite
from tfdropblock.export.run.run import Run, keras_outputs
from tfdropblock.export.run.settings import Settings
from tfdropblock.export.model.signature import Signature


def quantize_model(model, fmt, mode, calibration):
    """``(artifact, twin)``: ``model`` and its identity twin, both exported and quantized as
    ``fmt:mode`` on the same ``calibration`` batches, as a verification run makes them (the
    twin always exported for real, so the comparison is not of one conversion with itself)."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        run = Run(model, work, Settings(reference="export"), calibration=(calibration, "given"))
        return run.get(f"{fmt}:{mode}"), run.get(f"{fmt}:{mode}", reference=True)


def compare_quantized(fmt, artifact, twin):
    return quantizer(fmt).twin_comparison(artifact, twin)


def small_cnn(dropblock_cls=tfdropblock.DropBlock2D, name="small_cnn"):
    """16x16x3 -> 10 logits; the second conv has 4608 weights, past the 1024 below which
    TFLite's dynamic-range mode leaves a tensor in float."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    if dropblock_cls is not None:
        x = dropblock_cls(0.2, 3, name="drop")(x)
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name=name)


def batches(count, rows, shape=(16, 16, 3), seed=0, name="image"):
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal((rows, *shape)).astype(np.float32)}
            for _ in range(count)]


class StatefulUniform(tfdropblock.DropBlock2D):
    """Drops at inference with the stateful tf.random.uniform: TFLite keeps it as the builtin
    RANDOM_UNIFORM and tf2onnx as RandomUniformLike, so both artifacts convert and calibrate
    with the mask active."""

    def call(self, inputs, training=None):
        noise = tf.random.uniform(tf.shape(inputs))
        return inputs * tf.cast(noise >= self.rate, inputs.dtype) / (1.0 - self.rate)


class ScalesAtInference(tfdropblock.DropBlock2D):
    """Multiplies by keep_prob at inference: TFLite folds the Mul into the next conv's
    weights, so the op multiset is the twin's and only the weights and scales tell."""

    def call(self, inputs, training=None):
        return inputs * (1.0 - self.rate)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The small CNN, its SavedModel and its identity twin's, calibration and evaluation
    batches and Keras's outputs on the latter."""
    model = small_cnn()
    signature = Signature.from_model(model)
    root = tmp_path_factory.mktemp("quant")
    saved = export_saved_model(model, root / "main", signature)
    with dropblocks_as_identity(model):
        twin = export_saved_model(model, root / "twin", signature)
    evaluation = batches(2, 16, seed=2)
    return {"model": model, "signature": signature, "saved": saved, "twin": twin,
            "calibration": batches(4, 8, seed=1), "inputs": evaluation,
            "expected": [keras_outputs(model, signature, b) for b in evaluation],
            "names": dropblock_names(model)}


def _tensor_types(content):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return [names[t.type] for g in model.subgraphs for t in g.tensors]


# -- TFLite ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, int8_io", [("float16", False), ("dynamic", False),
                                           ("int8", False), ("int8", True)])
def test_tflite_quantized_model_is_its_identity_twin(cnn, mode, int8_io):
    artifact = quantize_tflite(cnn["saved"], mode, cnn["calibration"], int8_io=int8_io)
    twin = quantize_tflite(cnn["twin"], mode, cnn["calibration"], int8_io=int8_io)
    result = verify_quantized("tflite", mode, artifact, twin, cnn["inputs"], cnn["expected"],
                              layer_names=cnn["names"])
    assert result.ok, str(result)
    checks = {"conversion", "structure", "validity", "twin", "quality", "determinism"}
    assert set(result.checks) == (checks | {"coverage"} if mode == "int8" else checks)
    details = result.checks["twin"].details
    assert details["identical"] and details["byte_identical"] and details["outputs_bit_identical"]
    assert details["compared"] > 10

    # Really quantized as asked, not a float model passing for one.
    types = _tensor_types(artifact)
    ops = tflite_graph(artifact).ops
    if mode == "float16":
        assert "FLOAT16" in types and "INT8" not in types and ops["DEQUANTIZE"] >= 1
    elif mode == "dynamic":
        assert "INT8" in types and "FLOAT16" not in types and ops["QUANTIZE"] == 0
    else:
        assert types.count("INT8") > types.count("FLOAT32")
        io = QuantizedTFLiteRunner(artifact).io()
        stored = io["inputs"][0]["stored_dtype"], io["outputs"][0]["stored_dtype"]
        assert stored == (("int8", "int8") if int8_io else ("float32", "float32"))
        assert io["inputs"][0]["dtype"] == "float32"
        assert (ops["QUANTIZE"] == 0) == int8_io
        assert result.checks["coverage"].ok is True, result.checks["coverage"].details

    quality = result.checks["quality"].details
    assert quality["status"] == "ok"
    assert quality["worst"]["snr_db"] >= THRESHOLDS[mode].snr_db
    assert quality["worst"]["top1_agreement"] is not None


def test_int8_io_runner_quantizes_inputs_and_dequantizes_outputs(cnn):
    float_io = quantize_tflite(cnn["saved"], "int8", cnn["calibration"])
    int8_io = quantize_tflite(cnn["saved"], "int8", cnn["calibration"], int8_io=True)
    runner = QuantizedTFLiteRunner(int8_io)
    x = cnn["inputs"][0]
    ours = runner(x)["output_0"]
    theirs = QuantizedTFLiteRunner(float_io)(x)["output_0"]
    scale, zero_point = runner.runner.get_output_details()["output_0"]["quantization"]
    assert ours.dtype == np.float32
    # The same integer graph inside: at most one output step apart (rounding of the I/O).
    assert np.max(np.abs(ours - theirs)) <= scale * 1.01
    raw = runner.raw({"image": np.zeros(x["image"].shape, np.int8)})["output_0"]
    assert raw.dtype == np.int8


def test_dynamic_range_leaves_small_weights_in_float(tiny_image_model, tmp_path):
    # Conv 3x3x3x4 and Dense 4x2: every weight tensor under 1024 elements.
    model = tiny_image_model()
    saved = export_saved_model(model, tmp_path / "sm", Signature.from_model(model))
    assert "INT8" not in _tensor_types(quantize_tflite(saved, "dynamic"))


def test_int8_reports_ops_left_in_float():
    """TFLite's quantizer has no int8 CONV_3D: with integer-only kernels asked for, it still
    converts and leaves the op in float, which the coverage check reports."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 8, 8, 3), name="volume")
    x = keras.layers.Conv3D(8, 3, padding="same")(inputs)
    x = tfdropblock.DropBlock3D(0.1, 3)(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    calibration = batches(2, 4, (4, 8, 8, 3), seed=1, name="volume")
    inputs = batches(1, 16, (4, 8, 8, 3), seed=2, name="volume")
    expected = [keras_outputs(model, Signature.from_model(model), b) for b in inputs]
    artifact, twin = quantize_model(model, "tflite", "int8", calibration)
    result = verify_quantized("tflite", "int8", artifact, twin, inputs, expected,
                              layer_names=dropblock_names(model))
    assert result.ok, str(result)
    coverage = result.checks["coverage"]
    assert coverage.ok is None and coverage.details["float_ops"] == {"CONV_3D": 1}
    assert any(w.check == "coverage" and "CONV_3D x1" in w.what for w in result.warnings)


def test_leak_active_during_calibration_differs_from_twin():
    """A DropBlock drawing its mask at inference is active while the calibrator runs the
    graph: the quantized model has the random op, and its scales are not the twin's."""
    model = small_cnn(StatefulUniform, name="leaky")
    calibration = batches(4, 8, seed=1)
    inputs = batches(1, 16, seed=2)
    signature = Signature.from_model(model)
    expected = [keras_outputs(model, signature, b) for b in inputs]
    for fmt in ("tflite", "onnx"):
        artifact, twin = quantize_model(model, fmt, "int8", calibration)
        result = verify_quantized(fmt, "int8", artifact, twin, inputs, expected,
                                  layer_names=dropblock_names(model))
        text = str(result)
        assert not result.ok
        assert result.checks["structure"].ok is False
        assert "random op" in text and ("RANDOM_UNIFORM" in text or "RandomUniformLike" in text)
        assert result.checks["twin"].ok is False
        assert result.checks["twin"].details["identical"] is False
        assert result.checks["determinism"].ok is False, text


def test_leak_folded_into_weights_is_caught_by_the_twin_only():
    """``x * keep_prob`` at inference: TFLite folds it into the next conv, so the op multiset
    equals the twin's, and only the tensor-by-tensor comparison sees the changed weights."""
    model = small_cnn(ScalesAtInference, name="scales")
    calibration = batches(4, 8, seed=1)
    inputs = batches(1, 16, seed=2)
    signature = Signature.from_model(model)
    expected = [keras_outputs(model, signature, b) for b in inputs]
    artifact, twin = quantize_model(model, "tflite", "int8", calibration)
    result = verify_quantized("tflite", "int8", artifact, twin, inputs, expected,
                              layer_names=dropblock_names(model))
    assert result.checks["structure"].ok, str(result)
    twin_check = result.checks["twin"]
    assert twin_check.ok is False and not twin_check.details["identical"]
    differences = " ".join(twin_check.details["differences"])
    assert "data differs" in differences or "quantization scale" in differences
    assert not twin_check.details["outputs_bit_identical"]


def test_calibrating_a_training_mode_export_is_refused(cnn, tmp_path):
    """A real DropBlock in training mode (an endpoint calling ``training=True``) leaves
    stateless random ops, which neither the int8 TFLite converter nor the ONNX quantizer
    accepts: a calibration with DropBlock active cannot produce an artifact."""
    import keras

    model, signature = cnn["model"], cnn["signature"]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(ENDPOINT, lambda x: model(x, training=True),
                         input_signature=[signature.struct])
    write_out(archive, tmp_path / "train")
    with pytest.raises(ConversionError, match="StatelessRandom"):
        quantize_tflite(tmp_path / "train", "int8", cnn["calibration"])

    fn = tf.function(lambda x: {"output_0": model(x, training=True)},
                     input_signature=list(signature.specs), autograph=False)
    proto = _from_function(fn, list(signature.specs), 17)
    with pytest.raises(ConversionError, match="unconverted ops.*StatelessRandom"):
        quantize_onnx(proto, "int8", cnn["calibration"])


# -- ONNX --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cnn_onnx(cnn):
    model, signature = cnn["model"], cnn["signature"]
    proto = convert_onnx(model, signature)
    with dropblocks_as_identity(model):
        twin = convert_onnx(model, signature)
    return proto, twin


@pytest.mark.parametrize("mode", ["int8", "dynamic"])
def test_onnx_quantized_model_is_its_identity_twin(cnn, cnn_onnx, mode):
    proto, twin_proto = cnn_onnx
    # tf2onnx's node-name counter runs on between conversions: the files differ by names.
    assert proto.SerializeToString() != twin_proto.SerializeToString()
    artifact = quantize_onnx(proto, mode, cnn["calibration"])
    twin = quantize_onnx(twin_proto, mode, cnn["calibration"])
    result = verify_quantized("onnx", mode, artifact, twin, cnn["inputs"], cnn["expected"],
                              layer_names=cnn["names"])
    assert result.ok, str(result)
    details = result.checks["twin"].details
    assert details["identical"] and details["outputs_bit_identical"], details
    assert not details["byte_identical"]
    ops = onnx_graph(artifact).ops
    if mode == "int8":
        assert ops["QuantizeLinear"] >= 2 and ops["DequantizeLinear"] >= 4
    else:
        assert ops["DynamicQuantizeLinear"] >= 2 and ops["ConvInteger"] == 2
    labels = {c["runtime"] for c in result.checks["quality"].details["comparisons"]}
    assert labels == {"onnxruntime (ORT_DISABLE_ALL)", "onnxruntime (default optimisations)"}


def test_one_changed_scale_is_a_twin_difference(cnn, cnn_onnx):
    """Calibrating the twin on other data moves activation scales only: the comparison names
    the scale initializers that differ, although ops and weights are the same."""
    proto, twin_proto = cnn_onnx
    artifact = quantize_onnx(proto, "int8", cnn["calibration"])
    other = quantize_onnx(twin_proto, "int8", [{"image": b["image"] * 1.5}
                                               for b in cnn["calibration"]])
    assert onnx_graph(artifact).ops == onnx_graph(other).ops
    comparison = compare_quantized("onnx", artifact, other)
    assert not comparison.identical
    assert any("scale" in d and "initializer" in d for d in comparison.differences), \
        comparison.differences
    same = compare_quantized("onnx", artifact, quantize_onnx(twin_proto, "int8",
                                                               cnn["calibration"]))
    assert same.identical, same.differences


def _normalise_batchnorm(model, x):
    """Moving statistics taken from the activations, as training leaves them. With
    seeded_weights' random statistics a MobileNetV2's output no longer depends on its input
    (each block shrinks the input's share ~10x: rows differ by 1e-7), so any quality
    comparison would be vacuous."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            a = np.asarray(keras.Model(model.input, layer.input)(x, training=False))
            axes = tuple(range(a.ndim - 1))
            layer.moving_mean.assign(a.mean(axes))
            layer.moving_variance.assign(a.var(axes))


def test_mobilenet_v2_int8_folds_away_in_tflite_and_onnx():
    from tfdropblock.models import mobilenet_v2_dropblock, seeded_weights

    model = seeded_weights(mobilenet_v2_dropblock(
        (32, 32, 3), num_classes=10, alpha=0.35, repeats=(1, 1, 1, 1, 1, 1, 1),
        classifier_activation=None, seed=0), 0)
    names = dropblock_names(model)
    assert len(names) >= 6
    calibration = batches(4, 8, (32, 32, 3), seed=1, name="input")
    _normalise_batchnorm(model, calibration[0]["input"])
    inputs = batches(1, 32, (32, 32, 3), seed=2, name="input")
    signature = Signature.from_model(model)
    expected = [keras_outputs(model, signature, b) for b in inputs]
    for fmt in ("tflite", "onnx"):
        artifact, twin = quantize_model(model, fmt, "int8", calibration)
        result = verify_quantized(fmt, "int8", artifact, twin, inputs, expected,
                                  layer_names=names)
        assert result.ok, str(result)
        assert result.checks["twin"].details["identical"]
        assert result.checks["quality"].details["status"] == "ok"


# -- Arguments ---------------------------------------------------------------------------------

def test_bad_arguments_name_the_argument_and_the_accepted_values(cnn, cnn_onnx):
    with pytest.raises(InputError, match=r"mode='int4' for tflite: expected one of "
                                         r"\('float16', 'dynamic', 'int8'\)"):
        quantize_tflite(cnn["saved"], "int4")
    with pytest.raises(InputError, match=r"mode='float16' for onnx: expected one of "
                                         r"\('dynamic', 'int8'\)"):
        quantize_onnx(cnn_onnx[0], "float16")
    with pytest.raises(InputError, match="format='coreml'"):
        check_mode("coreml", "int8")
    with pytest.raises(InputError, match="calibration=None: mode='int8' needs"):
        quantize_tflite(cnn["saved"], "int8")
    with pytest.raises(InputError, match="int8_io=True with mode='dynamic'"):
        quantize_tflite(cnn["saved"], "dynamic", int8_io=True)
    with pytest.raises(InputError, match=r"calibration\[0\]: inputs \['x'\]; the artifact's "
                                         r"are \['image'\]"):
        quantize_onnx(cnn_onnx[0], "int8", [{"x": np.zeros((1, 16, 16, 3), np.float32)}])
    with pytest.raises(InputError, match="NaN or infinite"):
        quantize_tflite(cnn["saved"], "int8", [{"image": np.full((1, 16, 16, 3), np.nan)}])
    with pytest.raises(InputError, match="no batch"):
        quantize_onnx(cnn_onnx[0], "int8", [])
    with pytest.raises(InputError, match="per_channel=1"):
        quantize_onnx(cnn_onnx[0], "dynamic", per_channel=1)
    with pytest.raises(InputError, match="thresholds='int4'"):
        quality_check({}, [], "int4")
    with pytest.raises(InputError, match="top1=1.5"):
        Thresholds(snr_db=20, cosine=0.99, top1=1.5)


# -- Metrics -----------------------------------------------------------------------------------

def test_metrics_values():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((64, 5))
    noise = rng.standard_normal((64, 5))
    noise *= math.sqrt(np.sum(ref ** 2) / np.sum(noise ** 2)) / 100  # 40 dB exactly
    m = output_metrics(ref + noise, ref)
    assert m["snr_db"] == pytest.approx(40.0, abs=1e-9)
    assert m["max_abs_error"] == pytest.approx(np.max(np.abs(noise)))
    cos = np.dot(ref.ravel(), (ref + noise).ravel()) / (
        np.linalg.norm(ref) * np.linalg.norm(ref + noise))
    assert m["cosine"] == pytest.approx(cos)
    assert m["min_row_cosine"] <= m["cosine"] + 1e-12
    assert m["degenerate"] is None and m["rows"] == 64

    assert output_metrics(ref, ref)["snr_db"] == math.inf
    assert output_metrics(-ref, ref)["cosine"] == pytest.approx(-1.0)
    # Top-1: row 0 picks class 2 over Keras's 0; row 1 picks one of two tied top classes.
    ref = np.array([[3.0, 1.0, 2.0], [5.0, 5.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = np.array([[2.0, 1.0, 3.0], [4.0, 6.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert output_metrics(out, ref)["top1_agreement"] == 0.75
    # Not a (batch, classes) output: no top-1.
    assert output_metrics(ref[:, :1], ref[:, :1] + 0.1)["top1_agreement"] is None
    assert output_metrics(ref[None], ref[None])["top1_agreement"] is None


def test_quality_thresholds_pass_and_fail():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((32, 10)).astype(np.float32)
    inputs = [{"x": rng.standard_normal((32, 4))}]
    close = ref + 0.001 * rng.standard_normal(ref.shape).astype(np.float32)   # ~60 dB
    far = ref + 0.5 * rng.standard_normal(ref.shape).astype(np.float32)       # ~6 dB
    check, findings, warnings = quality_check({"rt": [{"y": close}]}, [{"y": ref}], "float16",
                                              inputs)
    assert check.ok is True and not findings and not warnings
    assert check.details["status"] == "ok"
    check, findings, _ = quality_check({"rt": [{"y": far}]}, [{"y": ref}], "int8", inputs)
    assert check.ok is False and check.details["status"] == "failed"
    assert any("SNR" in f.what and "< 8 dB" in f.what for f in findings), findings
    bad = close.copy()
    bad[3, 4] = np.nan
    check, findings, _ = quality_check({"rt": [{"y": bad}]}, [{"y": ref}], "int8", inputs)
    assert check.ok is False and "NaN or infinite" in findings[0].what
    # Custom thresholds: the close output fails a 90 dB demand.
    check, findings, _ = quality_check({"rt": [{"y": close}]}, [{"y": ref}],
                                       Thresholds(90.0, 0.0, 0.0), inputs)
    assert check.ok is False and "< 90 dB" in findings[0].what


@pytest.mark.parametrize("ref, why", [
    (np.zeros((4, 3)), "constant 0"),
    (np.full((4, 3), 0.25), "constant 0.25"),
    (np.array([[1.0, np.inf, 0.0]] * 4), "NaN or infinite"),
    (np.tile(np.array([[0.1, 0.5, 0.4]]), (4, 1)), "same for all 4 rows"),
])
def test_degenerate_comparisons_are_flagged_not_passed(ref, why):
    inputs = [{"x": np.arange(8.0).reshape(4, 2)}]
    # The artifact returns Keras's values exactly, and still must not pass.
    check, findings, warnings = quality_check({"rt": [{"y": ref.copy()}]}, [{"y": ref}],
                                              "int8", inputs)
    assert check.ok is None and check.details["status"] == "vacuous"
    assert not findings
    assert len(warnings) == 1 and why in warnings[0].why and "proves nothing" in warnings[0].what


def test_one_degenerate_output_does_not_hide_another_that_fails():
    rng = np.random.default_rng(2)
    good = rng.standard_normal((4, 6))
    inputs = [{"x": rng.standard_normal((4, 2))}]
    expected = [{"flat": np.zeros((4, 3)), "logits": good}]
    actual = [{"flat": np.zeros((4, 3)), "logits": -good}]
    check, findings, warnings = quality_check({"rt": actual}, expected, "dynamic", inputs)
    assert check.ok is False and check.details["status"] == "failed"
    assert {f.what.split("'")[1] for f in findings} == {"logits"}
    assert [w.what.split("'")[1] for w in warnings] == ["flat"]
