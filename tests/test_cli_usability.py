"""The CLI's usability: inspecting an export folder, finding custom-layer modules, the hint for
a missing class, show-masks options, and help for every option."""

import argparse
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tfdropblock import cli

CUSTOM_MODULE = textwrap.dedent('''
    import keras

    @keras.saving.register_keras_serializable(package="usability")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return x * 2.0
''')


def run_script(*args, cwd):
    """The console script, as users run it: its sys.path starts with its bin folder, not cwd."""
    script = Path(sys.executable).with_name("tfdropblock")
    command = [str(script)] if script.exists() else [
        sys.executable, "-P", "-c", "import sys; from tfdropblock.cli import main; "
                                    "sys.exit(main())"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A model with a layer class from ``usability_layers.py``, saved in a fresh process so that
    this one never registers the class (the hint is about classes Keras does not know)."""
    root = tmp_path_factory.mktemp("usability")
    (root / "usability_layers.py").write_text(CUSTOM_MODULE)
    save = textwrap.dedent("""
        import keras, usability_layers
        inputs = keras.Input((8, 8, 3), name="image")
        x = keras.layers.Conv2D(2, 3)(usability_layers.Twice()(inputs))
        keras.Model(inputs, x).save("custom.keras")
    """)
    proc = subprocess.run([sys.executable, "-c", save], cwd=root, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return root


def test_missing_class_names_it_and_suggests_import(custom_model, tmp_path):
    proc = run_script("verify", custom_model / "custom.keras", "--formats", "onnx", "-q",
                      cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("tfdropblock: error:") and "Traceback" not in proc.stderr
    assert "'Twice' (module 'usability_layers')" in error, error
    assert "--import usability_layers" in error, error


def test_import_finds_a_module_in_the_current_folder(custom_model):
    proc = run_script("verify", "custom.keras", "--formats", "onnx", "-q",
                      "--import", "usability_layers", cwd=custom_model)
    assert proc.returncode == 0, proc.stderr


def test_import_accepts_a_path_to_a_py_file(custom_model, tmp_path):
    proc = run_script("verify", custom_model / "custom.keras", "--formats", "onnx", "-q",
                      "--import", custom_model / "usability_layers.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("value, text", [
    ("nowhere/usability_layers.py", "no such .py file"),
    ("os.py", "taken by"),  # a file named like a loaded module would import the other one
])
def test_import_of_a_bad_file_is_exit_2(tmp_path, monkeypatch, capsys, value, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "os.py").write_text("")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(os.environ, "PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    assert cli.main(["verify", "m.keras", "--import", value]) == 2
    err = capsys.readouterr().err
    assert f"--import {value}" in err and text in err, err


def test_inspect_an_export_folder_inspects_each_artifact(tmp_path, tiny_image_model, capsys):
    from tfdropblock.export import export

    export(tiny_image_model(), tmp_path / "art")
    assert cli.main(["inspect", str(tmp_path / "art")]) == 0
    out = capsys.readouterr().out
    for name, fmt in [("saved_model", "saved_model"), ("model.tflite", "tflite"),
                      ("model.onnx", "onnx")]:
        assert f"{tmp_path / 'art' / name} [{fmt}, " in out and "clean" in out, out


def test_inspect_a_folder_with_nothing_inside_is_still_exit_2(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "saved_model.pb" in capsys.readouterr().err


def test_show_masks_size_option(tmp_path):
    out = tmp_path / "masks.png"
    assert cli.main(["show-masks", "--out", str(out), "--size", "20,30", "--block-size", "5",
                     "--rate", "0.2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("size", ["0", "a", "3,3,3"])
def test_show_masks_bad_size_is_exit_2(tmp_path, size, capsys):
    assert cli.main(["show-masks", "--out", str(tmp_path / "m.png"), "--size", size]) == 2
    assert "--size" in capsys.readouterr().err


def test_show_masks_without_matplotlib_is_exit_2_with_a_hint_that_works_from_a_clone(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert cli.main(["show-masks", "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tfdropblock: error:"), err
    assert 'pip install ".[viz]"' in err and "pip install matplotlib==" in err, err
    assert not list(tmp_path.iterdir())


def test_every_option_of_every_command_has_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.dest}" for name, sub in commands.choices.items()
               for action in sub._actions if not action.help]
    assert not missing


def test_version_is_quick_and_names_the_stack(capsys):
    start = time.monotonic()
    assert cli.main(["--version"]) == 0
    assert time.monotonic() - start < 5
    out = capsys.readouterr().out.strip()
    assert out.startswith("tfdropblock 0.1.0 (Python ") and "tensorflow" in out, out


def test_ship_is_the_command_that_writes_and_export_its_alias(capsys):
    from tfdropblock.cli import main

    assert main(["--help"]) == 0
    assert "ship (export)" in capsys.readouterr().out
    for command in ("ship", "export"):
        assert main([command, "--help"]) == 0
        assert "--force" in capsys.readouterr().out
