"""Argument checks and model loading: everything that decides "bad usage or unreadable
input" (CLI exit status 2) before any conversion starts."""

from __future__ import annotations

import importlib
import json
import os
import stat
import zipfile
from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock.export.errors import InputError

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

