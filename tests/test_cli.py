"""The ``tfdropblock`` command: exit statuses, JSON report, atomic export, fault isolation and
untrusted inputs. Commands that convert run as real subprocesses (the CLI forks one child per
format); argument and input errors that stop before any conversion run in-process."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import keras
import pytest

from tfdropblock import cli
from tfdropblock._compat import model_export
from conftest import write_and_import
from fault_injection import FAULT_ENV

LEAK_MODULE = textwrap.dedent('''
    import keras
    import tfdropblock

    @keras.saving.register_keras_serializable(package="cli_leaks")
    class IgnoresTraining(tfdropblock.DropBlock2D):
        def call(self, inputs, training=None):
            return self._drop(inputs)
''')


def run_cli(*args, env=None, timeout=240):
    script = Path(sys.executable).with_name("tfdropblock")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tfdropblock.cli"]
    full_env = {**os.environ, **(env or {})}
    start = time.monotonic()
    proc = subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    proc.seconds = time.monotonic() - start
    return proc


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line_error(proc, code):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert last_line(proc.stderr).startswith("tfdropblock: error:"), proc.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_image_model):
    root = tmp_path_factory.mktemp("cli_models")
    leaks = write_and_import(root, "cli_leaks", LEAK_MODULE)
    tiny_image_model().save(root / "clean.keras")
    tiny_image_model(leaks.IgnoresTraining).save(root / "leaky.keras")
    inputs = keras.Input((16, 16, 3), name="image")
    lam = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    keras.Model(inputs, keras.layers.Dense(2)(lam)).save(root / "lambda.keras")
    return root


def leak_env(models):
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(models),
                                                         os.environ.get("PYTHONPATH")]))}


def test_verify_clean_model_exit_0_with_json_table_and_progress(models, tmp_path):
    report_path = tmp_path / "report.json"
    proc = run_cli("verify", models / "clean.keras", "--json", report_path)
    assert proc.returncode == 0, proc.stderr
    assert "saved_model" in proc.stdout and "PASSED" in proc.stdout
    assert proc.stdout.rstrip().endswith("OK")
    for fmt in ("saved_model", "tflite", "onnx"):
        assert f"[tfdropblock] {fmt}: passed" in proc.stderr
    data = json.loads(report_path.read_text())
    assert data["schema_version"] == 5 and data["ok"] is True and data["exit_code"] == 0
    assert {k: v["status"] for k, v in data["formats"].items()} == {
        "saved_model": "passed", "tflite": "passed", "onnx": "passed"}
    assert data["settings"]["isolation"] in ("fork", "spawn")
    assert data["versions"]["onnxruntime"] and data["versions"]["litert"]
    print(f"cli verify (3 formats) took {proc.seconds:.1f} s")


def test_verify_leaky_model_exit_1(models):
    proc = run_cli("verify", models / "leaky.keras", "--import", "cli_leaks", "--json", "-",
                   "--quiet", env=leak_env(models))
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 1
    assert all(r["status"] == "failed" for r in data["formats"].values())
    structure = [f for f in data["formats"]["saved_model"]["findings"]
                 if f["check"] == "structure"]
    assert any("StatelessRandomUniform" in f["what"] for f in structure)
    assert "[tfdropblock]" not in proc.stderr, "--quiet silences progress"


def test_crashing_and_hanging_converters_cost_only_their_format(models):
    proc = run_cli("verify", models / "clean.keras", "--timeout", "8", "--json", "-",
                   env={FAULT_ENV: "tflite:crash,onnx:hang"})
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    statuses = {k: v["status"] for k, v in data["formats"].items()}
    assert statuses == {"saved_model": "passed", "tflite": "error", "onnx": "error"}
    assert "SIGSEGV" in data["formats"]["tflite"]["error"]
    assert "did not finish within 8 s" in data["formats"]["onnx"]["error"]


def test_export_writes_only_after_verification(models, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("export", models / "clean.keras", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.tflite", "saved_model"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # One format that fails is enough to stop the whole export.
    proc = run_cli("export", models / "leaky.keras", "--out", out, "--import", "cli_leaks",
                   "--formats", "saved_model", "--quiet", env=leak_env(models))
    assert proc.returncode == 1
    assert "nothing written" in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging litter"


def test_ctrl_c_keeps_the_existing_output_and_leaves_no_litter(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous")
    script = Path(sys.executable).with_name("tfdropblock")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tfdropblock.cli"]
    proc = subprocess.Popen([*command, "export", str(models / "clean.keras"), "--out", str(out),
                             "--formats", "saved_model,onnx"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, FAULT_ENV: "onnx:hang"})
    try:
        for line in proc.stderr:  # wait until the run is well under way
            if "saved_model: passed" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
        proc.wait()
    assert "interrupted" in rest and "Traceback" not in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging litter"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert (out / "model.onnx").read_bytes() == b"previous"


def test_export_force_writes_what_converted(models, tmp_path):
    out = tmp_path / "forced"
    proc = run_cli("export", models / "leaky.keras", "--out", out, "--force", "--formats",
                   "saved_model,onnx", "--import", "cli_leaks", "--quiet", env=leak_env(models))
    assert proc.returncode == 1
    # The SavedModel converted (with the leak); the ONNX model had unconverted ops: not written.
    assert sorted(p.name for p in out.iterdir()) == ["saved_model"]


def test_safe_mode_refuses_lambda_unless_unsafe(models):
    proc = run_cli("verify", models / "lambda.keras", "--formats", "saved_model", "--quiet")
    assert_one_line_error(proc, 2)
    assert "--unsafe" in last_line(proc.stderr)
    proc = run_cli("verify", models / "lambda.keras", "--formats", "saved_model", "--unsafe",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_unloadable_model_is_exit_2_without_traceback(models, tmp_path):
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("config.json", '{"class_name": "NoSuchLayer", "config": {}}')
        z.writestr("metadata.json", "{}")
    proc = run_cli("verify", broken, "--quiet")
    assert_one_line_error(proc, 2)
    assert "broken.keras" in last_line(proc.stderr)


def test_inspect_untrusted_files_exit_2_and_still_reports_the_rest(tmp_path, tiny_image_model):
    from tfdropblock.export import export

    good = tmp_path / "good"
    export(tiny_image_model(), good, formats=("onnx",))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    truncated = tmp_path / "trunc.tflite"
    truncated.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 10)
    proc = run_cli("inspect", good / "model.onnx", empty, truncated, tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{good / 'model.onnx'} [onnx" in proc.stdout and "clean" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 3, proc.stderr


# -- in-process: nothing here converts, so no child process is started -------------------------

@pytest.mark.parametrize("argv, text", [
    ([], "COMMAND"),
    (["verify", "m.keras", "--formats", "pb"], "formats"),
    (["verify", "m.keras", "--atol", "-1"], "atol"),
    (["verify", "m.keras", "--timeout", "0"], "timeout"),
    (["export", "m.keras"], "--out"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_usage_is_exit_2(argv, text, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err


def _bad_model_files(tmp_path):
    png = tmp_path / "image.keras"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    zipped = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("weights.h5", "x")
    return [tmp_path / "missing.keras", tmp_path, png, empty, zipped]


def test_unreadable_models_are_exit_2_one_line(tmp_path, capsys):
    for path in _bad_model_files(tmp_path):
        for argv in (["verify", str(path)], ["export", str(path), "--out", str(tmp_path / "o")]):
            assert cli.main(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and err.startswith("tfdropblock: error:"), err
            assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_inputs_file_is_exit_2(models, tmp_path, capsys):
    bad = tmp_path / "inputs.npz"
    bad.write_bytes(b"not a zip")
    assert cli.main(["verify", str(models / "clean.keras"), "--inputs", str(bad)]) == 2
    assert "--inputs" in capsys.readouterr().err


def test_inspect_exit_codes(models, tmp_path, capsys, tiny_image_model,
                            context_following_dropblock):
    leaky = tiny_image_model(context_following_dropblock, resizing=True)
    model_export(leaky, tmp_path / "plain", "tf_saved_model")
    assert cli.main(["inspect", str(tmp_path / "plain"), "--json", str(tmp_path / "i.json")]) == 1
    out = capsys.readouterr().out
    assert "random op StatelessRandom" in out and "drop_block2d" in out
    data = json.loads((tmp_path / "i.json").read_text())
    assert data["exit_code"] == 1 and data["artifacts"][0]["format"] == "saved_model"

    from tfdropblock.export import export

    export(leaky, tmp_path / "kit", formats=("saved_model",))
    assert cli.main(["inspect", str(tmp_path / "kit" / "saved_model")]) == 0
    assert "clean" in capsys.readouterr().out


@pytest.mark.parametrize("block", ["3", "5,3"])
def test_show_masks(tmp_path, block):
    out = tmp_path / "masks.png"
    code = cli.main(["show-masks", "--out", str(out), "--rate", "0.2", "--block-size", block])
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("block", ["0", "a", "3,3,3"])
def test_show_masks_bad_block_size_is_exit_2(tmp_path, block, capsys):
    code = cli.main(["show-masks", "--out", str(tmp_path / "m.png"), "--block-size", block])
    assert code == 2 and "--block-size" in capsys.readouterr().err


def test_verify_without_model_uses_the_default_model(capsys):
    proc = run_cli("verify", "--formats", "onnx", "--json", "-", "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"]["source"] == "tfdropblock.models.default_model()"
    assert data["model"]["has_dropblock"] is True
