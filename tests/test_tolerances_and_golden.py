"""Per-output parity tolerances (``atol``/``rtol`` by output name, ``--atol NAME=VALUE``) and
stored golden inputs and outputs (``save_outputs``/``load_outputs``).

The model has two named outputs: ``logits``, and ``scaled``, the same kind of head times 1e6,
so that the float error every runtime makes (ONNX Runtime's sums differ from TensorFlow's in
the last bits) becomes an absolute error of about 1e-2 there, far above the default atol, while
``logits`` stays within 1e-6. The library runs use ONNX only (converted in well under 1 s) and
``rtol=0``, so that the absolute tolerance decides.
"""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tfdropblock import cli
from tfdropblock.export import InputError, verify
from tfdropblock.export.run import golden
from tfdropblock.export.run import tolerance
from tfdropblock.export.run.run import Run
from tfdropblock.export.run.settings import Settings

from test_cli import assert_one_line_error, last_line, run_cli

FAST = {"formats": ("onnx",), "rtol": 0.0}
LOOSE = 1.0  # far above the scaled output's error, far below its values (about 1e5)


@pytest.fixture(scope="module")
def model():
    import keras

    import tfdropblock

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = tfdropblock.DropBlock2D(0.2, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(2, name="logits")(x)
    scaled = keras.layers.Rescaling(1e6, name="scaled")(keras.layers.Dense(2)(x))
    return keras.Model(inputs, {"logits": logits, "scaled": scaled}, name="two_outputs")


@pytest.fixture(scope="module")
def stored(model, tmp_path_factory):
    """A passing run that saved its inputs and Keras's outputs: (report, path)."""
    path = tmp_path_factory.mktemp("golden") / "golden.npz"
    report = verify(model, atol={"scaled": LOOSE}, save_outputs=path, **FAST)
    return report, path


def _parity(report):
    return report.formats["onnx"].checks["parity"]


def _failed_outputs(report):
    return {c["output"] for c in _parity(report).details["comparisons"] if not c["ok"]}


def test_default_atol_fails_the_scaled_output_only(model):
    report = verify(model, **FAST)
    assert report.exit_code == 1, str(report)
    assert _failed_outputs(report) == {"scaled"}
    finding = report.formats["onnx"].findings[0]
    assert "'scaled'" in finding.what and "atol=1e-05" in finding.why


def test_an_override_loosens_only_the_output_it_names(model, stored):
    report, _ = stored
    assert report.ok, str(report)
    parity = _parity(report)
    assert parity.details["tolerances"] == {"logits": {"atol": 1e-5, "rtol": 0.0},
                                            "scaled": {"atol": LOOSE, "rtol": 0.0}}
    used = {(c["output"], c["atol"]) for c in parity.details["comparisons"]}
    assert used == {("logits", 1e-5), ("scaled", LOOSE)}
    assert report.settings["atol"] == 1e-5 and report.settings["atol_outputs"] == {
        "scaled": LOOSE}
    # Loosening the other output leaves the scaled one failing: an override is per output.
    assert _failed_outputs(verify(model, atol={"logits": LOOSE}, **FAST)) == {"scaled"}


def test_the_default_of_a_dict_and_rtol_per_output(model):
    # "*" sets the default: 1e-9 would fail logits (errors about 1e-7) were it applied there.
    strict = verify(model, atol={"*": 1e-9, "scaled": LOOSE}, **FAST)
    assert _failed_outputs(strict) == {"logits"}
    # rtol alone: 1e-4 of values about 1e5 covers the scaled output's error.
    report = verify(model, formats=("onnx",), rtol={"*": 0.0, "scaled": 1e-4})
    assert report.ok, str(report)
    assert _parity(report).details["tolerances"]["scaled"] == {"atol": 1e-5, "rtol": 1e-4}


@pytest.mark.parametrize("value, text", [
    ({"probs": -1.0}, "Invalid atol['probs']=-1.0"),
    ({"probs": float("inf")}, "Invalid atol['probs']=inf"),
    ({"": 1.0}, "Invalid atol key ''"),
    ({"*": "big"}, "Invalid atol['*']='big'"),
])
def test_bad_tolerance_dicts_name_the_entry(value, text):
    with pytest.raises(InputError) as e:
        Settings(atol=value)
    assert str(e.value).startswith(text)


def test_tolerance_dicts_and_the_cli_form():
    assert Settings(atol={"*": 1e-3}).atol == 1e-3  # only a default: a plain float
    per_output = Settings(atol={"probs": 1e-3}).atol
    assert per_output["probs"] == 1e-3 and per_output["other"] == Settings.atol
    assert tolerance.parse("1e-4,probs=1e-3") == {"*": 1e-4, "probs": 1e-3}
    assert tolerance.parse("probs=1e-3") == {"probs": 1e-3}
    assert tolerance.parse("2e-5") == 2e-5


@pytest.mark.parametrize("name", ["atol", "rtol"])
def test_an_unknown_output_name_is_an_input_error_before_any_conversion(model, tmp_path, name):
    run = Run(model, tmp_path, Settings(**{name: {"probs": 1.0}}))
    with pytest.raises(InputError) as e:
        run.choose_inputs()  # what a run does before it converts anything
    assert f"--{name}" in str(e.value) and "'probs'" in str(e.value)
    assert "['logits', 'scaled']" in str(e.value)
    assert not any(tmp_path.iterdir()), "nothing converted"


def test_saved_outputs_round_trip(model, stored):
    _, path = stored
    with np.load(path) as data:
        keys = set(data.files)
        assert str(data["format"]) == golden.FORMAT and int(data["version"]) == golden.VERSION
    assert keys == {"format", "version", "input/0/image", "input/1/image", "output/0/logits",
                    "output/0/scaled", "output/1/logits", "output/1/scaled"}
    report = verify(model, atol={"scaled": LOOSE}, load_outputs=path, **FAST)
    assert report.ok, str(report)
    assert report.settings["inputs"] == "stored" and report.settings["load_outputs"] == str(path)


def _rewritten(path, tmp_path, change):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    out = tmp_path / "changed.npz"
    np.savez(out, **arrays)
    return out


def test_a_drifted_stored_output_fails_parity(model, stored, tmp_path):
    """As if Keras's outputs had moved since the file was saved: every artifact now differs
    from the stored outputs, although it still matches the Keras model it was exported from."""
    def drift(arrays):
        arrays["output/0/logits"] = arrays["output/0/logits"] + 1e-3

    report = verify(model, atol={"scaled": LOOSE}, load_outputs=_rewritten(
        stored[1], tmp_path, drift), **FAST)
    assert report.exit_code == 1, str(report)
    assert {(c["output"], c["batch_size"]) for c in _parity(report).details["comparisons"]
            if not c["ok"]} == {("logits", 1)}
    # The failed parity was located, with the per-output tolerance in force, and the layers
    # say whose outputs they were compared with.
    details = _parity(report).details
    assert details["locate_reason"] is None and details["layers"], details.get("locate_reason")
    assert "stored file holds the model's outputs only" in details["locate_runtime"]


def test_the_stored_inputs_are_the_ones_checked_on(model, stored, tmp_path):
    def other_image(arrays):
        arrays["input/1/image"] = arrays["input/1/image"][::-1].copy()

    report = verify(model, atol={"scaled": LOOSE}, load_outputs=_rewritten(
        stored[1], tmp_path, other_image), **FAST)
    assert report.exit_code == 1 and _failed_outputs(report) == {"logits", "scaled"}


MISFITS = {
    "missing input": (lambda a: a.pop("input/0/image"), "batches"),
    "extra input": (lambda a: a.update({"input/0/mask": a["input/0/image"]}), "extra ['mask']"),
    "wrong dtype": (lambda a: a.update({"input/0/image": a["input/0/image"].astype("float64")}),
                    "float64"),
    "wrong shape": (lambda a: a.update({"input/1/image": a["input/1/image"][:, :8]}),
                    "shape (3, 8, 16, 3)"),
    "missing output": (lambda a: a.pop("output/1/scaled"), "missing ['scaled']"),
    "output shape": (lambda a: a.update({"output/0/logits": a["output/0/logits"][:, :1]}),
                     "'logits' of batch 0"),
    "no marker": (lambda a: a.pop("format"), "no format="),
    "future version": (lambda a: a.update({"version": np.array(golden.VERSION + 1)}),
                       "version 2"),
}


@pytest.mark.parametrize("misfit", MISFITS)
def test_a_file_that_does_not_fit_the_model_is_an_input_error(model, stored, tmp_path, misfit):
    change, text = MISFITS[misfit]
    path = _rewritten(stored[1], tmp_path, change)
    with pytest.raises(InputError) as e:
        verify(model, load_outputs=path, **FAST)
    message = str(e.value)
    assert "--load-outputs" in message and text in message and "\n" not in message


@pytest.mark.parametrize("given", ["inputs", "labels"])
def test_load_outputs_excludes_inputs_and_labels(model, stored, given):
    value = np.zeros((2, 16, 16, 3), "float32") if given == "inputs" else np.array([0, 1])
    with pytest.raises(InputError, match=f"--load-outputs.*--{given}"):
        verify(model, load_outputs=stored[1], **{given: value}, **FAST)


# -- the CLI: usage errors in-process, one real run per outcome in a subprocess ---------------

@pytest.mark.parametrize("argv, text", [
    (["--atol", "1e-4,=3"], "--atol"),
    (["--rtol", "probs=x"], "--rtol"),
    (["--atol", "1e-4,2e-4"], "--atol"),
    (["--load-outputs", "{npz}", "--inputs", "{npz}"], "--load-outputs"),
    (["--load-outputs", "{bad}"], "--load-outputs"),
    (["--save-outputs", "{nowhere}/golden.npz"], "--save-outputs"),
    (["--junit", "{nowhere}/report.xml"], "--junit"),
])
def test_cli_usage_errors_are_exit_2_naming_the_option(argv, text, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    npz = tmp_path / "inputs.npz"
    np.savez(npz, image=np.zeros((1, 16, 16, 3), "float32"))
    argv = [a.format(bad=bad, npz=npz, nowhere=tmp_path / "nowhere") for a in argv]
    assert cli.main(["verify", str(tmp_path / "m.keras"), *argv]) == 2
    err = capsys.readouterr().err
    assert text in last_line(err) and "Traceback" not in err


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_two_outputs") / "two_outputs.keras"
    model.save(path)
    return path


def test_cli_tolerances_stored_outputs_and_junit_in_one_run(model_file, stored, tmp_path):
    """One real CLI run (isolated children): per-output --atol in its mixed form, outputs
    loaded from a file whose scaled output drifted at batch 3, saved again by the children's
    run, and the failure in the JSON and the JUnit report."""
    drifted = _rewritten(stored[1], tmp_path, lambda a: a.update(
        {"output/1/scaled": a["output/1/scaled"] + 10.0}))
    resaved, report, junit = (tmp_path / name for name in ("resaved.npz", "r.json", "r.xml"))
    proc = run_cli("verify", model_file, "--formats", "onnx", "--rtol", "0", "--atol",
                   f"1e-5,scaled={LOOSE}", "--load-outputs", drifted, "--save-outputs", resaved,
                   "--json", report, "--junit", junit, "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["schema_version"] == 5 and data["settings"]["inputs"] == "stored"
    assert data["settings"]["atol_outputs"] == {"scaled": LOOSE}
    parity = data["formats"]["onnx"]["checks"]["parity"]
    assert parity["tolerances"] == {"logits": {"atol": 1e-5, "rtol": 0.0},
                                    "scaled": {"atol": LOOSE, "rtol": 0.0}}
    assert {(c["output"], c["batch_size"]) for c in parity["comparisons"] if not c["ok"]} == {
        ("scaled", 3)}
    with np.load(drifted) as want, np.load(resaved) as got:  # what the run compared with
        assert sorted(got.files) == sorted(want.files)
        assert all(np.array_equal(got[k], want[k]) for k in want.files)
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    [failure] = root.iter("failure")
    assert "output 'scaled' differs from the stored outputs" in failure.get("message")


def test_cli_unknown_output_name_is_exit_2_listing_the_outputs(model_file):
    proc = run_cli("verify", model_file, "--formats", "onnx", "--atol", "probs=1e-3",
                   "--quiet")
    assert_one_line_error(proc, 2)
    line = last_line(proc.stderr)
    assert "--atol" in line and "'probs'" in line and "['logits', 'scaled']" in line
