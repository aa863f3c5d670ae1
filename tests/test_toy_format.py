"""A format registered from the tests folder goes through the library, the CLI, the table and
the JSON report like the kit's own, with no change to the kit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfdropblock.export import InputError, export, formats, verify

TOY = Path(__file__).with_name("toy_format.py")


@pytest.fixture(scope="module")
def toy():
    """The toy format, registered for this module's tests only."""
    import toy_format

    yield formats.register(toy_format.TOY)  # again: an earlier module may have removed it
    formats.unregister(toy_format.TOY.name)


def test_library_verifies_exports_and_reports_a_registered_format(toy, tiny_image_model,
                                                                  tmp_path):
    report = verify(tiny_image_model(), formats=("saved_model", toy.name), out_dir=tmp_path)
    result = report.formats[toy.name]
    assert result.ok, str(report)
    assert list(result.checks) == ["conversion", "structure", "validity", "parity",
                                   "determinism"]
    assert result.checks["parity"].details["max_abs_error"] < 1e-5
    assert (tmp_path / "toy_saved_model" / "saved_model.pb").is_file()
    assert result.artifact == str(tmp_path.absolute() / "toy_saved_model")
    rows = [line.split() for line in str(report).splitlines()]
    row = next(row for row in rows if row and row[0] == toy.name)
    assert row[-1] == "PASSED" and row.count("ok") == 4, row
    data = json.loads(report.to_json())
    assert data["formats"][toy.name]["status"] == "passed"
    assert data["formats"][toy.name]["artifact"] == result.artifact


def test_its_checks_catch_a_leak(toy, tiny_image_model):
    import keras
    import tensorflow as tf

    import tfdropblock

    class Leaky(tfdropblock.DropBlock2D):
        def call(self, inputs, training=None):
            noise = tf.random.uniform(tf.shape(inputs))
            return inputs * tf.cast(noise >= self.rate, inputs.dtype)

    keras.utils.set_random_seed(0)
    report = verify(tiny_image_model(Leaky), formats=(toy.name,))
    result = report.formats[toy.name]
    assert result.status == "failed" and report.exit_code == 1
    assert result.checks["structure"].ok is False
    assert any("random op" in f.what for f in result.findings), str(report)


def test_cli_verifies_a_format_that_an_imported_module_registers(tiny_image_model, tmp_path):
    model = tmp_path / "tiny.keras"
    tiny_image_model().save(model)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tfdropblock.cli", "verify", str(model), "--import", str(TOY),
         "--formats", "toy_saved_model,saved_model", "--json", str(report), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = [line.split() for line in proc.stdout.splitlines()]
    assert ["toy_saved_model", "PASSED"] == [[row[0], row[-1]] for row in table
                                             if row and row[0] == "toy_saved_model"][0]
    data = json.loads(report.read_text())
    assert list(data["formats"]) == ["toy_saved_model", "saved_model"]
    assert data["formats"]["toy_saved_model"]["checks"]["parity"]["ok"] is True


def test_cli_without_the_import_names_the_registered_formats(tiny_image_model, tmp_path):
    model = tmp_path / "tiny.keras"
    tiny_image_model().save(model)
    proc = subprocess.run(
        [sys.executable, "-m", "tfdropblock.cli", "verify", str(model), "--formats",
         "toy_saved_model", "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Invalid formats='toy_saved_model'" in proc.stderr and "'saved_model'" in proc.stderr


def test_its_own_option_reaches_it_from_the_library(toy, tiny_image_model, tmp_path):
    import toy_format

    report = verify(tiny_image_model(), formats=(toy.name,), out_dir=tmp_path, toy_note="hi")
    assert report.ok, str(report)
    assert (tmp_path / "toy_saved_model" / toy_format.NOTE).read_text() == "hi"
    assert report.settings["toy_note"] == "hi"
    with pytest.raises(InputError, match=r"Invalid toy_note=3: expected a str"):
        verify(tiny_image_model(), formats=(toy.name,), toy_note=3)


def test_a_misspelt_option_names_the_close_one(toy, tiny_image_model, tmp_path):
    with pytest.raises(InputError, match=r"Invalid option toy_nte='hi' of verify\(\): did you "
                                         r"mean toy_note="):
        verify(tiny_image_model(), formats=(toy.name,), toy_nte="hi")
    with pytest.raises(InputError, match=r"of verify\(\): did you mean atol="):
        verify(tiny_image_model(), atoll=1e-3)
    with pytest.raises(InputError, match=r"Invalid option seed=1 of export\(\)"):
        export(tiny_image_model(), tmp_path / "out", seed=1)  # a verify option, not export's
    with pytest.raises(InputError, match=r"of export\(\): did you mean toy_note="):
        export(tiny_image_model(), tmp_path / "out", formats=(toy.name,), toy_notes="hi")
    written = export(tiny_image_model(), tmp_path / "out", formats=(toy.name,), toy_note="x")
    assert (Path(written[toy.name]) / "NOTE.txt").read_text() == "x"


def test_its_own_option_reaches_it_from_the_cli(tiny_image_model, tmp_path):
    model = tmp_path / "tiny.keras"
    tiny_image_model().save(model)
    report, out = tmp_path / "report.json", tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "tfdropblock.cli", "verify", str(model), "--import", str(TOY),
         "--formats", "toy_saved_model", "--toy-note", "from the CLI", "--out", str(out),
         "--json", str(report), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(report.read_text())["settings"]["toy_note"] == "from the CLI"
    assert (out / "toy_saved_model" / "NOTE.txt").read_text() == "from the CLI"
    helped = subprocess.run(
        [sys.executable, "-m", "tfdropblock.cli", "verify", "--import", str(TOY), "--help"],
        capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "--toy-note" in helped.stdout, helped.stdout
