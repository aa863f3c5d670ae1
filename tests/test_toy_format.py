"""A format registered from the tests folder goes through the library, the CLI, the table and
the JSON report like the kit's own, with no change to the kit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfdropblock.export import formats, verify

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
