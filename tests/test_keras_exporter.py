"""``verify(exporter="keras")`` checks what Keras's own ``model.export`` makes, and every verify
lists the layers that run in training mode under ``model(x)`` (``report.training_mode_leaks``).

The leak is planted as in test_training_context.py: a context-following DropBlock after
Resizing, which Keras 3.15's SavedModel and ONNX exporters then run in training mode."""

import json

import keras
import numpy as np
import pytest

from conftest import keras_formats, needs_keras_export, training_on_by_default
from tfdropblock import _compat, cli
from tfdropblock.export import FORMATS, InputError, verify
from tfdropblock.export import formats as registry
from tfdropblock.export.model.leaks import training_mode_leaks
from tfdropblock.export.core.results import FormatResult

IMAGES = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def leaky_model(tiny_image_model, context_following_dropblock):
    return tiny_image_model(context_following_dropblock, resizing=True)


@pytest.fixture(scope="module")
def leak(leaky_model):
    """The planted layer's name (Keras numbers it after the models built before it)."""
    [name] = [layer.name for layer in leaky_model.layers if "drop_block" in layer.name]
    return name


@pytest.fixture(scope="module")
def keras_leak_report(leaky_model):
    return verify(leaky_model, exporter="keras", formats=keras_formats())


def test_keras_exporter_on_a_clean_model_passes_every_format(tiny_image_model, tmp_path):
    # Every format the installed Keras exports (saved_model alone before Keras 3.8).
    report = verify(tiny_image_model(resizing=True), exporter="keras", out_dir=tmp_path,
                    formats=keras_formats())
    assert report.exit_code == 0, str(report)
    data = json.loads(report.to_json())
    assert data["settings"]["exporter"] == "keras"
    assert {name: r["exporter"] for name, r in data["formats"].items()} == dict.fromkeys(
        keras_formats(), "keras")
    # As an isolated child sends it to the parent.
    assert FormatResult.from_dict(data["formats"]["saved_model"]).exporter == "keras"
    assert data["model"]["training_mode_leaks"] == []
    for r in data["formats"].values():
        assert r["checks"]["training_mode"]["ok"] is True
    # Keras's artifacts, not the kit's: its SavedModel also serves serving_default, and its
    # ONNX output is tf2onnx's Identity:0, read under the model's output name.
    import tensorflow as tf

    assert "serving_default" in tf.saved_model.load(str(tmp_path / "saved_model")).signatures
    if "onnx" in data["formats"]:
        renamed = data["formats"]["onnx"]["checks"]["validity"]["renamed"]
        assert renamed["outputs"] == {"Identity:0": "output_0"}


def test_a_leak_fails_each_format_keras_exports_it_to(keras_leak_report, leak):
    report = keras_leak_report
    assert report.exit_code == 1
    # Keras 3.15's LiteRT exporter passes training=False; Keras before 3.8 exports SavedModel
    # alone.
    reached = [name for name in ("saved_model", "onnx") if name in report.formats]
    for name in reached:
        result = report.formats[name]
        assert result.status == "failed"
        [finding] = [f for f in result.findings if f.check == "training_mode"]
        assert f"layer {leak!r} runs in training mode" in finding.what
        assert "training=" in finding.why
        structure = [str(f) for f in result.findings if f.check == "structure"]
        assert any("random op StatelessRandomUniform" in f and f"in layer {leak!r}" in f
                   for f in structure), structure
        assert any(leak in f and "name scope" in f for f in structure), structure
    if "onnx" in report.formats:
        [invalid] = [f for f in report.formats["onnx"].findings if f.check == "validity"]
        assert "ONNXRuntimeError" in invalid.why  # Keras reported success for this file
    if "tflite" in report.formats:
        tflite = report.formats["tflite"]
        assert tflite.status == "passed", str(report)
        assert tflite.checks["training_mode"].details["reached"] is False


def test_training_mode_leaks_names_the_first_changed_layer_only(keras_leak_report, leak):
    # Conv2D before it is unchanged; pooling and Dense after it change too, and are not blamed.
    assert keras_leak_report.training_mode_leaks == [leak]
    assert json.loads(keras_leak_report.to_json())["model"]["training_mode_leaks"] == [leak]


def test_with_the_kits_exporter_a_leak_is_a_warning(leaky_model, leak):
    report = verify(leaky_model, formats=("saved_model",))
    assert report.exit_code == 0, str(report)
    assert report.training_mode_leaks == [leak]
    assert f"warning: layer {leak!r} runs in training mode when the model is called " \
           "without training=, as Keras's exporters call it" in str(report)
    assert report.formats["saved_model"].exporter == "tfdropblock"
    assert "training_mode" not in report.formats["saved_model"].checks


class Noisy(keras.layers.Layer):
    """Draws noise whatever the mode: Keras's LiteRT exporter, which allows Flex ops, writes it
    as Flex ops that LiteRT's builtin runtime cannot run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seeds = keras.random.SeedGenerator(1)

    def call(self, x):
        return x * keras.random.uniform(keras.ops.shape(x), seed=self.seeds)


@needs_keras_export("litert")
def test_keras_litert_flex_op_is_a_finding_naming_op_and_layer():
    inputs = keras.Input((16, 16, 3), name="image")
    x = Noisy(name="noisy")(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    report = verify(model, formats=("tflite",), exporter="keras")
    assert report.exit_code == 1
    findings = [str(f) for f in report.formats["tflite"].findings]
    assert "[structure] Flex op FlexStatelessRandomUniformV2 in layer 'noisy'" in "\n".join(
        findings), findings
    assert any(f.startswith("[validity]") and "Flex delegate" in f for f in findings), findings
    # Noise in every mode is no training-mode leak: the structure check is its judge.
    assert report.training_mode_leaks == []


def batch_norm_model(style, resizing=True):
    layers = [training_on_by_default(16)] if resizing else []
    layers += [keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(name="bn"),
               keras.layers.Flatten(), keras.layers.Dense(2)]
    if style == "sequential":
        return keras.Sequential([keras.Input((16, 16, 3)), *layers])
    inputs = x = keras.Input((16, 16, 3))
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("style", ["functional", "sequential"])
def test_leak_rule_blames_batch_normalization_not_its_successors(style):
    model = batch_norm_model(style)
    model(IMAGES, training=False)
    before = [np.array(v) for v in model.non_trainable_variables]
    assert training_mode_leaks(model, IMAGES) == ["bn"]
    # Its training-mode call must not move the moving statistics the exports are made from.
    assert all(np.array_equal(a, v) for a, v in zip(before, model.non_trainable_variables))
    assert training_mode_leaks(batch_norm_model(style, resizing=False), IMAGES) == []


class Preprocessed(keras.Model):
    """Subclassed, so without a layer graph: judged as a whole."""

    def __init__(self):
        super().__init__(name="preprocessed")
        self.resize = training_on_by_default(16)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.bn(self.resize(x))


def test_a_subclassed_model_is_judged_whole():
    assert training_mode_leaks(Preprocessed(), IMAGES) == ["preprocessed"]


def test_keras_exporter_cannot_quantize():
    with pytest.raises(InputError, match=r"exporter='keras' \(--exporter keras\) with quantize"):
        verify(None, exporter="keras", quantize="int8")
    with pytest.raises(InputError, match=r"Invalid exporter='kit': expected one of"):
        verify(None, exporter="kit")


def test_bad_exporter_is_exit_2(capsys):
    assert cli.main(["verify", "--exporter", "kit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--exporter" in err and "'tfdropblock'" in err and "'keras'" in err, err


@pytest.mark.parametrize("flags, named", [(["--quantize", "int8"], "--quantize"),
                                          (["--locate"], "--locate")])
def test_exporter_keras_with_what_it_cannot_do_is_exit_2(capsys, flags, named):
    assert cli.main(["verify", "--exporter", "keras", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--exporter keras" in err and named in err, err


NO_KERAS_FORMAT = """
from tfdropblock.export.formats import register
from tfdropblock.export.formats.saved_model.format import SavedModelFormat


class NoKerasExporter(SavedModelFormat):  # registers no KerasExporter
    name = "no_keras_exporter"


register(NoKerasExporter())
"""


def test_cli_passes_the_exporter_to_verify(tmp_path, capsys):
    # A format Keras has no exporter of is refused by verify itself, before any conversion:
    # only an --exporter that reached it can say so.
    from tfdropblock.export.formats import unregister

    (tmp_path / "no_keras_exporter.py").write_text(NO_KERAS_FORMAT)
    try:
        code = cli.main(["verify", str(tmp_path / "m.keras"), "--exporter", "keras",
                         "--import", str(tmp_path / "no_keras_exporter.py"),
                         "--formats", "no_keras_exporter"])
    finally:
        unregister("no_keras_exporter")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "exporter='keras'" in err and "no_keras_exporter" in err, err


# -- A Keras exporter the installed Keras lacks ------------------------------------------------

MISSING = {name: _compat.keras_export_missing(registry.keras_exporter(name).keras_format)
           for name in FORMATS}
MISSING = {name: why for name, why in MISSING.items() if why}


@pytest.mark.parametrize("name", list(MISSING) or [pytest.param("tflite", marks=pytest.mark.skip(
    reason=f"Keras {keras.__version__} has the exporter of every format (this test is for "
           "Keras before 3.13; the next one asserts the same answer on any Keras)"))])
def test_a_keras_exporter_the_installed_keras_lacks_is_exit_2_naming_both_versions(name, capsys):
    assert cli.main(["verify", "--exporter", "keras", "--formats", name]) == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()[-1]
    since = _compat.KERAS_EXPORT_SINCE[{"tflite": "litert"}.get(name, name)]
    assert f"installed Keras {keras.__version__} has no model.export" in err, err
    assert f"it arrived in Keras {since}" in err and "--exporter keras" in err, err
    assert "Traceback" not in out.err + out.out
    with pytest.raises(InputError, match=f"installed Keras {keras.__version__}"):
        verify(None, formats=(name,), exporter="keras")


def test_a_keras_older_than_the_exporter_is_refused_before_any_conversion(monkeypatch, capsys):
    # On any stack: as the installed Keras 3.5 answers (the test above asserts it there).
    monkeypatch.setattr(_compat, "keras_version", lambda: "3.5.0")
    assert cli.main(["verify", "--exporter", "keras"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("tfdropblock: error: Invalid formats=['tflite', 'onnx'] (--formats) with "
                   "exporter='keras' (--exporter keras): the installed Keras 3.5.0 has no "
                   "model.export(format='litert'); it arrived in Keras 3.13.0; the installed "
                   "Keras 3.5.0 has no model.export(format='onnx'); it arrived in Keras 3.8.0; "
                   "exporter='tfdropblock' (the default) converts them."), err
    # SavedModel has Keras's exporter on every supported Keras: no refusal before the run.
    from tfdropblock.export.run.settings import Settings
    from tfdropblock.export.execution.verifier import check_keras_formats

    check_keras_formats(Settings(exporter="keras"), ("saved_model",))
