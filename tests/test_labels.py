"""Labelled evaluation (``verify(labels=...)``, ``--labels``): an accuracy check in every
format's check sequence, against top-1 the tests compute themselves; ``max_accuracy_drop``; bad
labels are usage errors naming ``--labels``."""

import json

import numpy as np
import pytest

from tfdropblock import cli
from tfdropblock.export import formats, verify
from tfdropblock.export.run.settings import QUANTIZED_ACCURACY_DROP

ROWS, SMALL_BATCH = 41, 7  # 41 = 5 full batches of 7 and one of 6
CLI_BATCH = 8

# A format whose runtime swaps the two class scores on every other row: a broken artifact
# whose top-1 drops, with outputs within a loose parity tolerance.
BROKEN = '''
from tfdropblock.export.formats import register
from tfdropblock.export.formats.saved_model.format import SavedModelFormat


class Swapped(SavedModelFormat):
    name = "swapped_saved_model"
    artifact = "swapped_saved_model"

    def sniff(self, path, head):
        return False

    def runtimes(self, run, artifact):
        io, details, runners = super().runtimes(run, artifact)

        def swapped(runner):
            def run_(named):
                out = {k: v.numpy().copy() if hasattr(v, "numpy") else v.copy()
                       for k, v in runner(named).items()}
                for v in out.values():
                    v[::2] = v[::2, ::-1]
                return out
            return run_

        return io, details, {label: swapped(r) for label, r in runners.items()}


SWAPPED = register(Swapped())
'''


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"image": rng.standard_normal((ROWS, 16, 16, 3)).astype("float32"),
            "y": rng.integers(0, 2, ROWS)}


@pytest.fixture(scope="module")
def model(tiny_image_model):
    return tiny_image_model()


@pytest.fixture(scope="module")
def keras_top(model, data):
    return np.argmax(model.predict(data["image"], verbose=0), axis=1)


@pytest.fixture(scope="module")
def labelled(model, data):
    """Every kit format, the toy one and TFLite int8, with labels by name, in batches of 7."""
    import toy_format

    formats.register(toy_format.TOY)
    try:
        return verify(model, formats=("saved_model", "tflite", "onnx", toy_format.TOY.name),
                      quantize="int8", inputs=data, labels="y", batch_size=SMALL_BATCH)
    finally:
        formats.unregister(toy_format.TOY.name)


def test_every_format_carries_the_accuracy_the_test_computes(labelled, data, keras_top):
    keras_top1 = float(np.mean(keras_top == data["y"]))
    assert set(labelled.formats) >= {"saved_model", "tflite", "onnx", "toy_saved_model",
                                     "tflite:int8", "onnx:int8"}
    for name, result in labelled.formats.items():
        accuracy = result.checks["accuracy"].details
        assert accuracy["rows"] == ROWS, name
        assert accuracy["keras_top1"] == pytest.approx(keras_top1), name
        # top-1 cannot differ from Keras's by more than the rows on which they disagree
        assert abs(accuracy["top1"] - keras_top1) <= 1 - accuracy["agreement"] + 1e-9, name
        if result.quantization is None:  # float: parity passed, so the same predictions
            assert accuracy["agreement"] == 1.0 and accuracy["top1"] == pytest.approx(
                keras_top1), name
            assert result.checks["accuracy"].ok is None and accuracy["max_drop"] is None
        else:  # quantized: judged by the default drop
            assert accuracy["max_drop"] == QUANTIZED_ACCURACY_DROP, name
            assert result.checks["accuracy"].ok is (keras_top1 - accuracy["top1"]
                                                    <= QUANTIZED_ACCURACY_DROP + 1e-12)
    data_ = json.loads(labelled.to_json())
    assert data_["schema_version"] == 5 and data_["settings"]["labels"] == ROWS
    assert set(data_["formats"]["tflite:int8"]["checks"]["accuracy"]) >= {
        "ok", "top1", "keras_top1", "agreement", "rows"}
    header = str(labelled).splitlines()[1].split()
    assert "accuracy" in header
    row = next(line for line in str(labelled).splitlines() if line.startswith("saved_model "))
    assert f" {100 * keras_top1:.1f}% " in row, row


def test_batch_size_does_not_change_the_numbers(labelled, model, data):
    whole = verify(model, formats=("saved_model",), inputs={"image": data["image"]},
                   labels=data["y"], batch_size=1000)
    assert whole.formats["saved_model"].checks["accuracy"].details == \
        labelled.formats["saved_model"].checks["accuracy"].details


def test_a_planted_drop_fails_beyond_max_accuracy_drop(model, data, keras_top, tmp_path):
    from conftest import write_and_import

    broken = write_and_import(tmp_path, "swapped_format", BROKEN).SWAPPED
    try:
        kwargs = dict(formats=(broken.name,), inputs={"image": data["image"]},
                      labels=keras_top, atol=1e3)
        reported = verify(model, **kwargs)
        judged = verify(model, max_accuracy_drop=0.1, **kwargs)
    finally:
        formats.unregister(broken.name)
    right = np.mean(np.arange(ROWS) % 2 == 1)  # the rows it did not swap (one batch)
    accuracy = reported.formats[broken.name].checks["accuracy"]
    assert accuracy.ok is None and reported.exit_code == 0, str(reported)
    assert accuracy.details["top1"] == pytest.approx(right)
    assert accuracy.details["keras_top1"] == 1.0
    result = judged.formats[broken.name]
    assert result.checks["parity"].ok is not False, str(judged)  # loose atol: passes
    assert result.checks["accuracy"].ok is False and judged.exit_code == 1, str(judged)
    assert [f.check for f in result.findings] == ["accuracy"], str(judged)


@pytest.fixture(scope="module")
def files(model, data, tmp_path_factory):
    """The model and a one-score model as .keras files, and NPZ files of good and bad labels."""
    import keras

    folder = tmp_path_factory.mktemp("labels")
    model.save(folder / "model.keras")
    inputs = keras.Input((16, 16, 3), name="image")
    score = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, score).save(folder / "one_score.keras")
    images = data["image"]
    np.savez(folder / "good.npz", image=images, y=data["y"])
    np.savez(folder / "short.npz", image=images, y=data["y"][:-1])
    np.savez(folder / "float.npz", image=images, y=data["y"].astype("float32"))
    np.savez(folder / "column.npz", image=images, y=data["y"][:, None])
    return folder


@pytest.mark.parametrize("npz, name, what", [
    ("short.npz", "y", "shape (40,); expected (41,)"),
    ("column.npz", "y", "shape (41, 1); expected (41,)"),
    ("float.npz", "y", "dtype float32; expected integer"),
    ("good.npz", "labels", "no such array in the inputs; they hold ['image', 'y']"),
])
def test_bad_labels_are_exit_2_naming_the_option(files, npz, name, what, capsys):
    code = cli.main(["verify", str(files / "model.keras"), "--formats", "saved_model",
                     "--inputs", str(files / npz), "--labels", name])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--labels" in err[0] and what in err[0], err


def test_labels_need_inputs_and_max_accuracy_drop_needs_labels(files, capsys):
    model = str(files / "model.keras")
    assert cli.main(["verify", model, "--labels", "y"]) == 2
    assert "--labels" in capsys.readouterr().err
    assert cli.main(["verify", model, "--inputs", str(files / "good.npz"),
                     "--max-accuracy-drop", "0.1"]) == 2
    assert "--labels" in capsys.readouterr().err
    assert cli.main(["verify", model, "--inputs", str(files / "good.npz"), "--labels", "y",
                     "--max-accuracy-drop", "2"]) == 2
    assert "--max-accuracy-drop" in capsys.readouterr().err
    assert cli.main(["verify", model, "--inputs", str(files / "good.npz"), "--labels", "y",
                     "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_a_model_without_class_scores_is_exit_2(files, capsys):
    code = cli.main(["verify", str(files / "one_score.keras"), "--formats", "saved_model",
                     "--inputs", str(files / "good.npz"), "--labels", "y", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--labels" in err[0] and "class score vector" in err[0], err


def test_cli_planted_drop_is_exit_1_and_in_the_json(files, keras_top, data, tmp_path, capsys):
    (tmp_path / "swapped_cli_format.py").write_text(BROKEN)  # not the module above
    np.savez(tmp_path / "planted.npz", image=data["image"], y=keras_top)
    out = tmp_path / "report.json"
    code = cli.main(["verify", str(files / "model.keras"), "--formats", "swapped_saved_model",
                     "--import", str(tmp_path / "swapped_cli_format.py"), "--atol", "1000",
                     "--inputs", str(tmp_path / "planted.npz"), "--labels", "y",
                     "--max-accuracy-drop", "0.1", "--batch-size", str(CLI_BATCH),
                     "--json", str(out)])
    formats.unregister("swapped_saved_model")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    accuracy = json.loads(out.read_text())["formats"]["swapped_saved_model"]["checks"]["accuracy"]
    right = np.mean(np.arange(ROWS) % CLI_BATCH % 2 == 1)  # swapped: even rows of a batch
    assert accuracy["ok"] is False and accuracy["keras_top1"] == 1.0
    assert accuracy["top1"] == pytest.approx(right) and accuracy["rows"] == ROWS
    assert "labelled rows" in captured.err  # the progress line


def test_labels_out_of_the_models_classes_are_an_input_error(model, data):
    from tfdropblock.export import InputError

    with pytest.raises(InputError, match=r"--labels.*classes 0\.\.2; .* scores 2 classes"):
        verify(model, formats=("saved_model",), inputs={"image": data["image"]},
               labels=np.where(data["y"] == 1, 2, 0))


def test_given_calibration_reaches_each_int8_quantizer(model, data, labelled):
    """Calibrated on a batch of zeros, int8 must lose what calibration on the inputs keeps:
    the rows given are what the quantizers measured the activation ranges on."""
    zeros = {"image": np.zeros((10, 16, 16, 3), "float32")}
    report = verify(model, formats=("tflite", "onnx"), quantize="int8", inputs=data,
                    labels="y", batch_size=4, calibration=zeros)
    for fmt in ("tflite:int8", "onnx:int8"):
        result = report.formats[fmt]
        assert result.quantization["calibration"] == "given: 10 rows", result.quantization
        worst = result.checks["quality"].details["worst"]["snr_db"]
        assert worst < 8.0, (fmt, worst)  # below the int8 floor: the zeros were used
    calibrated = labelled.formats["tflite:int8"].checks["quality"].details["worst"]["snr_db"]
    assert calibrated > 20.0, calibrated


@pytest.mark.parametrize("array, what", [
    (np.zeros((5, 8, 8, 3), "float32"), "'image' has shape (5, 8, 8, 3)"),
    (np.zeros((0, 16, 16, 3), "float32"), "at least one"),
])
def test_bad_calibration_is_exit_2_naming_the_option(files, tmp_path, array, what, capsys):
    np.savez(tmp_path / "calibration.npz", image=array)
    code = cli.main(["verify", str(files / "model.keras"), "--formats", "tflite",
                     "--quantize", "int8", "--calibration", str(tmp_path / "calibration.npz"),
                     "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--calibration" in err[0] and what in err[0], err


def test_calibration_needs_an_int8_variant(files, capsys):
    code = cli.main(["verify", str(files / "model.keras"), "--formats", "tflite",
                     "--quantize", "dynamic", "--calibration", str(files / "good.npz"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--calibration" in err[0], err
