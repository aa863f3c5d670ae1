"""``verify`` / ``export --quantize``: each quantized variant is a format of its own in the
report (``tflite:int8``, ``onnx:int8``, ...), a DropBlock leak is caught in each of them, bad
modes are usage errors, and ``export`` writes the quantized artifacts. Real subprocesses, as
a user runs the command."""

import json
import textwrap

import pytest

from tfdropblock import cli
from tfdropblock.export.formats import quantized
from tfdropblock.export.formats.quantized import check_quantize
from tfdropblock.export import InputError
from conftest import write_and_import
from test_cli import leak_env, run_cli

LEAK_MODULE = textwrap.dedent('''
    import keras
    import tensorflow as tf
    import tfdropblock

    @keras.saving.register_keras_serializable(package="quant_leaks")
    class MasksAtInference(tfdropblock.DropBlock2D):
        """Applies a random mask at inference (stateful tf.random.uniform)."""
        def call(self, inputs, training=None):
            noise = tf.random.uniform(tf.shape(inputs))
            return inputs * tf.cast(noise >= self.rate, inputs.dtype) / (1.0 - self.rate)
''')


def small_cnn(dropblock_cls):
    """16x16x3 -> 10 logits with a ReLU conv and a second conv: enough signal for int8 to
    be judged (tiny_image_model's 4-channel average of noise is too close to constant)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = dropblock_cls(0.2, 3)(x)
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import tfdropblock

    root = tmp_path_factory.mktemp("quant_cli_models")
    leaks = write_and_import(root, "quant_leaks", LEAK_MODULE)
    small_cnn(tfdropblock.DropBlock2D).save(root / "clean.keras")
    small_cnn(leaks.MasksAtInference).save(root / "leaky.keras")
    return root


def test_modes_come_from_the_formats():
    from tfdropblock.export.formats.onnx.quantization import ONNX_MODES
    from tfdropblock.export.formats.tflite.quantization import TFLITE_MODES

    assert quantized.modes() == {"tflite": TFLITE_MODES, "onnx": ONNX_MODES}
    assert check_quantize("int8", ("tflite", "onnx")) == ("tflite:int8", "onnx:int8")
    assert check_quantize(("float16", "int8"), ("saved_model", "tflite", "onnx")) == (
        "tflite:float16", "tflite:int8", "onnx:int8")
    with pytest.raises(InputError, match="Invalid quantize='float16' for formats"):
        check_quantize("float16", ("onnx",))


def test_verify_quantize_int8_passes_with_quantized_rows(models):
    proc = run_cli("verify", models / "clean.keras", "--quantize", "int8", "--formats",
                   "tflite,onnx", "--json", "-", "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema_version"] == 5 and data["exit_code"] == 0
    assert list(data["formats"]) == ["tflite", "onnx", "tflite:int8", "onnx:int8"]
    for name in ("tflite:int8", "onnx:int8"):
        row = data["formats"][name]
        assert row["status"] == "passed", row
        for check in ("structure", "validity", "twin", "quality", "determinism"):
            assert row["checks"][check]["ok"] is True, (name, check, row["checks"][check])
        assert row["checks"]["twin"]["outputs_bit_identical"] is True
        assert row["quantization"]["mode"] == "int8"
        assert row["quantization"]["calibration"].startswith("generated")
        assert row["checks"]["quality"]["worst"]["snr_db"] is not None
    assert data["formats"]["tflite"]["quantization"] is None
    assert data["settings"]["quantize"] == ["tflite:int8", "onnx:int8"]
    print(f"cli verify --quantize int8 took {proc.seconds:.1f} s")


def test_planted_leak_is_caught_in_every_quantized_format(models):
    proc = run_cli("verify", models / "leaky.keras", "--import", "quant_leaks", "--quantize",
                   "float16,dynamic,int8", "--formats", "tflite,onnx", "--json", "-", "--quiet",
                   env=leak_env(models))
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    for name in ("tflite:float16", "tflite:dynamic", "tflite:int8", "onnx:dynamic",
                 "onnx:int8"):
        row = data["formats"][name]
        assert row["status"] == "failed", row
        assert any(f["check"] in ("structure", "twin") for f in row["findings"]), row


@pytest.mark.parametrize("argv, text", [
    (["--quantize", "int4"], "('float16', 'dynamic', 'int8')"),
    (["--quantize", "float16", "--formats", "onnx"], "float16 applies to tflite only"),
    (["--quantize", "int8", "--formats", "saved_model"], "applies to tflite and onnx"),
    (["--int8-io", "--quantize", "float16"], "--int8-io applies to TFLite int8 only"),
])
def test_bad_quantize_is_exit_2(models, argv, text, capsys):
    assert cli.main(["verify", str(models / "clean.keras"), *argv]) == 2
    err = capsys.readouterr().err
    assert "--quantize" in err and text in err, err
    assert "Traceback" not in err


def test_export_quantize_float16_writes_the_artifact(models, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("export", models / "clean.keras", "--out", out, "--formats", "tflite",
                   "--quantize", "float16", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.float16.tflite", "model.tflite"]
    assert (out / "model.float16.tflite").read_bytes()[4:8] == b"TFL3"
