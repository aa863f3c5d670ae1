"""Argument checks and model loading: everything that decides "bad usage or unreadable
input" (CLI exit status 2) before any conversion starts."""

from __future__ import annotations

import importlib
import json
import os
import stat
import sys
import zipfile
from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock.export.core.errors import InputError

MAX_CONFIG_BYTES = 64 * 2**20


def import_modules(names):
    """Import each module of ``names`` (e.g. the one registering a model's custom layers)."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except Exception as e:
            raise InputError(f"Cannot import module {name!r}: {type(e).__name__}: {e}") from None


def load_model(model, safe_mode=True):
    """A Keras model, or a path to a ``.keras`` file loaded with ``safe_mode``; else InputError."""
    if not isinstance(model, (str, os.PathLike)):
        import keras

        if not isinstance(model, keras.Model):
            raise InputError(f"Invalid model={model!r}: expected a keras.Model or a path to a "
                             ".keras file.")
        return model
    path = check_model_file(model)
    import keras

    try:
        return keras.saving.load_model(str(path), safe_mode=safe_mode, compile=False)
    except Exception as e:
        hint = " (it needs safe_mode=False / --unsafe, if you trust the file)" if (
            "safe_mode" in str(e)) else ""
        raise InputError(f"{path}: cannot load the model{hint}: "
                         f"{describe_error(e)}") from None


_NOT_REGULAR = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a named pipe (FIFO)"),
                (stat.S_ISSOCK, "is a socket"), (stat.S_ISCHR, "is a character device"),
                (stat.S_ISBLK, "is a block device"))


def check_regular_file(path, expected):
    """InputError unless ``path`` is (a symlink to) a regular file; returns its ``os.stat``.

    Decided from ``os.stat`` alone, before anything opens the path: opening a FIFO blocks until
    a writer comes, and a device such as ``/dev/zero`` reads forever. ``expected`` completes
    "expected ..." in the message (``"a .keras model file"``).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if not stat.S_ISREG(info.st_mode):
        what = next((text for test, text in _NOT_REGULAR if test(info.st_mode)),
                    "is not a regular file")
        raise InputError(f"{path}: {what}, expected {expected}.")
    return info


def read_npz(path, what):
    """The arrays of the NPZ file at ``path`` as a dict; InputError starting with ``what``
    (the option that named it) for a path that is not a readable regular .npz file."""
    import numpy as np

    try:
        check_regular_file(path, "an .npz file")  # a FIFO would block np.load forever
    except InputError as e:
        raise InputError(f"{what} {e}") from None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{what} {path}: no such file.") from None
    except Exception as e:
        raise InputError(f"{what} {path}: not a readable .npz file "
                         f"({type(e).__name__}).") from None


def check_model_file(path):
    """Cheap checks of a model path that need no TensorFlow: InputError with one clear line."""
    path = Path(path)
    size = check_regular_file(path, "a .keras model file").st_size
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if size == 0:
        raise InputError(f"{path}: empty file, expected a .keras model file.")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return path
    if suffix != ".keras":
        # Keras 3 loads only these; saying so here beats its error from a child process.
        raise InputError(f"{path}: expected a .keras model file (or a legacy .h5), not "
                         f"{suffix or 'a file without extension'!r}.")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a .keras model (not a zip archive; truncated or another "
                         "kind of file?).")
    try:
        with zipfile.ZipFile(path) as z:
            if "config.json" not in z.namelist():
                raise InputError(f"{path}: not a .keras model (no config.json inside).")
            if z.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise InputError(f"{path}: not a .keras model (config.json over "
                                 f"{MAX_CONFIG_BYTES // 2**20} MiB).")
            try:
                config = json.loads(z.read("config.json"))
            except ValueError:
                config = None
            if not isinstance(config, dict):
                raise InputError(f"{path}: not a .keras model (config.json is not a JSON "
                                 "object).")
            bad = z.testzip()
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: corrupted .keras archive ("
                         f"{describe_error(e)}).") from None
    if bad is not None:
        raise InputError(f"{path}: corrupted .keras archive (bad CRC in {bad!r}).")
    return path


# -- --import, and what a model that fails to load lacks --------------------------------------

def importable(names):
    """``--import`` values as module names that this process and its children can import.

    The console script's ``sys.path`` starts with its own bin folder, not the current folder,
    so a module next to the user's model was not found: the current folder goes at the end of
    ``sys.path``, where it cannot shadow an installed module. A path to a ``.py`` file names
    that file: its folder goes first on ``sys.path``, and on ``PYTHONPATH`` for the children
    (spawned ones start a fresh interpreter; forked ones inherit ``sys.path``).
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    modules = []
    for name in names:
        if not (name.endswith(".py") or os.sep in name):
            modules.append(name)
            continue
        path = os.path.abspath(name)
        folder, module = os.path.dirname(path), os.path.basename(path)[:-len(".py")]
        if not os.path.isfile(path) or not name.endswith(".py"):
            raise InputError(f"--import {name}: no such .py file (or give a module name).")
        loaded = getattr(sys.modules.get(module), "__file__", None)
        if not module.isidentifier() or (loaded and os.path.abspath(loaded) != path):
            raise InputError(f"--import {name}: cannot import it as module {module!r} "
                             f"({'taken by ' + loaded if loaded else 'not a valid name'}); "
                             "rename the file.")
        sys.path.insert(0, folder)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [folder, os.environ.get("PYTHONPATH")]))
        modules.append(module)
    return modules


def with_import_hint(error, model):
    """A model that failed to load because Keras lacks one of its classes: which, and the
    ``--import`` that registers it (Keras's own message names only the outer model)."""
    missing = unregistered_classes(model) if "cannot load the model" in str(error) else []
    if not missing:
        return str(error)
    classes = ", ".join(f"{name!r} (module {module!r})" for name, module in missing)
    modules = sorted({module for _, module in missing if module != "__main__"})
    how = " ".join(f"--import {m}" for m in modules) or "--import FILE.py"
    return (f"{model}: cannot load the model: Keras does not know its "
            f"class{'es' if len(missing) > 1 else ''} {classes}: pass {how} (a module in the "
            "current folder or on PYTHONPATH, or a .py file) to register "
            f"{'them' if len(missing) > 1 else 'it'}.")


def unregistered_classes(model):
    """``[(class_name, module)]`` of the custom classes in a ``.keras`` file's config that no
    module imported so far registered with Keras (Keras itself imports only its own)."""
    import keras

    try:
        with zipfile.ZipFile(model) as z:
            config = json.loads(z.read("config.json"))
    except Exception:  # not a readable .keras: the loading error stands as it is
        return []
    found, stack = [], [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            name, module = item.get("class_name"), item.get("module")
            if isinstance(name, str) and isinstance(module, str) and module.split(".")[0] not in (
                    "keras", "keras_hub", "keras_cv", "keras_nlp", "builtins"):
                key = item.get("registered_name") or name
                if keras.saving.get_registered_object(key) is None and (name, module) not in found:
                    found.append((name, module))
    return found
