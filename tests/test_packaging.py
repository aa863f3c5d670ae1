"""How the package imports: from a clone's root, for Keras's loader, and light for the CLI.

Each case runs in a fresh interpreter, since what it checks is what an import leaves behind.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Leaves sys.meta_path as a normal (non-editable) install has it: setuptools' editable finder
# maps tfdropblock.export and tfdropblock.models by itself and would hide the problem.
WITHOUT_EDITABLE_FINDER = textwrap.dedent("""
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not getattr(f, "__module__", "").startswith("__editable__")]
""")


def python(code, cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_clone_root_shadowing_the_install_still_has_export_and_models():
    # From the clone's root, ./tfdropblock/ comes first on sys.path, even after a normal
    # `pip install .`, and holds neither subpackage (they are ./export and ./models).
    proc = python(WITHOUT_EDITABLE_FINDER + textwrap.dedent("""
        import importlib.util
        import tfdropblock
        from tfdropblock.export import verify
        import tfdropblock.models
        print(tfdropblock.__file__)
        print(sys.modules["tfdropblock.export"].__file__)
        print(tfdropblock.models.__file__)
        print(verify.__module__)
        print(importlib.util.find_spec("tfdropblock.benchmarks"))
    """), REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        str(REPO / "tfdropblock" / "__init__.py"), str(REPO / "export" / "__init__.py"),
        str(REPO / "models" / "__init__.py"), "tfdropblock.export.execution.verifier",
        "None"], proc.stdout  # only the two subpackages are mapped, not every folder


@pytest.fixture(scope="module")
def saved_model_path(tmp_path_factory, tiny_image_model):
    path = tmp_path_factory.mktemp("packaging") / "model.keras"
    tiny_image_model().save(path)
    return path


@pytest.mark.parametrize("imports", [
    "import tfdropblock; import keras",
    "import keras; import tfdropblock",
    "import tfdropblock; import tensorflow as tf; keras = tf.keras",
])
def test_import_tfdropblock_is_all_load_model_needs(saved_model_path, imports):
    proc = python(textwrap.dedent(f"""
        import sys
        {imports}
        model = keras.models.load_model(sys.argv[1])
        print(*sorted({{type(layer).__module__ for layer in model.layers
                        if "DropBlock" in type(layer).__name__}}))
    """), saved_model_path.parent, saved_model_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["tfdropblock.layers"]


def test_import_tfdropblock_alone_does_not_import_tensorflow():
    proc = python("import sys, tfdropblock; print('tensorflow' in sys.modules, "
                  "'keras' in sys.modules)", REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0), (["--version"], 0), (["show-masks", "--help"], 0),
    (["verify", "m.keras", "--atol", "-1"], 2), ([], 2),
])
def test_help_version_and_usage_errors_do_not_import_tensorflow(argv, code):
    proc = python("import sys; from tfdropblock.cli import main; code = main(sys.argv[1:]); "
                  "print(code, 'tensorflow' in sys.modules)", REPO, *argv)
    assert proc.stdout.split()[-2:] == [str(code), "False"], (proc.stdout, proc.stderr)


def test_python_dash_m_tfdropblock_is_the_command():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    version = subprocess.run([sys.executable, "-m", "tfdropblock", "--version"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("tfdropblock 0.1.0 ("), version.stdout
    assert "tensorflow 2." in version.stdout and "keras 3." in version.stdout
    usage = subprocess.run([sys.executable, "-m", "tfdropblock", "frobnicate"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: tfdropblock" in usage.stderr


def test_every_package_folder_is_installed():
    """A subpackage missing from pyproject's list works in an editable install and is absent
    from a wheel: compare the list with the folders that hold an ``__init__.py``."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *parts)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}"


def test_installing_the_kit_beside_a_supported_stack_keeps_it(tmp_path):
    """The project's ranges take the TensorFlow and Keras already installed (on the oldest
    stack, TensorFlow 2.16 and Keras 3.5): pip's dry run of ``pip install ".[export]"`` into
    this environment installs neither, nor numpy or protobuf."""
    import json
    from importlib import metadata

    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-input",
         "--report", str(report), f"{REPO}[export]"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    would = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
             for item in json.loads(report.read_text())["install"]}
    kept = {name: metadata.version(name)
            for name in ("tensorflow", "keras", "numpy", "protobuf", "ml-dtypes")}
    assert not set(would) & set(kept), f"would install {would} beside {kept}"
    assert set(would) <= {"tfdropblock"}, f"would install {would} beside {kept}"
