"""Fashion-MNIST, offline: ``load_fashion_mnist(folder=None)``.

``python -m benchmarks.datasets OUT_DIR --train N --test M`` writes a fixed, class-balanced
subset in the same four-file layout (how ``tests/data/fashion-mnist/`` was made).

Where the four IDX files are looked for, first match wins:

1. ``folder``, when given (the benchmarks' ``--data DIR``);
2. the folder in the environment variable ``TFDROPBLOCK_FASHION_MNIST``;
3. Keras's cache (``$KERAS_HOME/datasets/fashion-mnist/``, else ``~/.keras/...``), read through
   ``keras.datasets.fashion_mnist.load_data()``;
4. the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``).

``keras.datasets.fashion_mnist.load_data()`` downloads any file missing from its cache, which
hangs on a machine without network, so it is called only when all four files are already there.
Nothing here touches the network. When no place has the files, :class:`DataUnavailable` says
in one line both ways to get them.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from tfdropblock._compat import keras_home

ENV_VAR = "TFDROPBLOCK_FASHION_MNIST"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES = len(CLASS_NAMES)
# IDX type code 0x08 = unsigned byte, the only type Fashion-MNIST uses.
_IDX_UBYTE = 0x08


class DataUnavailable(FileNotFoundError):
    """Fashion-MNIST is in none of the places looked at; the message says how to get it."""


def how_to_get_it(missing_from=None):
    where = f"not found in {missing_from}" if missing_from else "not found"
    return (f"Fashion-MNIST {where}: install it with `apt-get install dataset-fashion-mnist` "
            f"(files in {DEBIAN_DIR}), or set {ENV_VAR} (or pass --data) to a folder holding "
            f"{', '.join(FILES.values())}.")


def keras_cache_dir():
    """The folder ``keras.utils.get_file`` caches Fashion-MNIST in: Keras's own home once Keras
    is imported (it reads ``KERAS_HOME`` only then), else the rule it will apply on import
    (``KERAS_HOME``, or ``~/.keras``, and ``/tmp/.keras`` when that is not writable)."""
    base = keras_home()
    if base is None:
        base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
        if not os.access(base, os.W_OK):
            base = os.path.join("/tmp", ".keras")
    return os.path.join(os.path.expanduser(base), "datasets", "fashion-mnist")


def has_all_files(folder):
    return bool(folder) and all(os.path.isfile(os.path.join(folder, name))
                                for name in FILES.values())


def read_idx(path):
    """One IDX file (gzipped or not) as a uint8 array of the shape its header gives."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes) but "
                         f"the file holds {len(data) - header} bytes of data.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def write_idx(path, array):
    """Writes a uint8 array as a gzipped IDX file (the inverse of :func:`read_idx`)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same bytes on every run
        f.write(header + array.tobytes())


def read_folder(folder):
    """The four arrays from ``folder``, as ``((x_train, y_train), (x_test, y_test))``."""
    arrays = {key: read_idx(os.path.join(folder, name)) for key, name in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not "
                             f"fit (expected (N, 28, 28) and (N,)).")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def find_folder(folder=None):
    """Where the files will be read from: ``(kind, folder)``, kind one of ``"given"``,
    ``"environment"``, ``"keras"``, ``"debian"``. Raises :class:`DataUnavailable`."""
    if folder is not None:
        if not has_all_files(folder):
            raise DataUnavailable(how_to_get_it(folder))
        return "given", folder
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        if not has_all_files(from_env):
            raise DataUnavailable(how_to_get_it(f"{ENV_VAR}={from_env}"))
        return "environment", from_env
    if has_all_files(keras_cache_dir()):
        return "keras", keras_cache_dir()
    if has_all_files(DEBIAN_DIR):
        return "debian", DEBIAN_DIR
    raise DataUnavailable(how_to_get_it())


def load_fashion_mnist(folder=None):
    """Fashion-MNIST as uint8 arrays ``((x_train, y_train), (x_test, y_test))``, images
    (N, 28, 28), labels (N,), never downloading (see the module docstring for the order)."""
    kind, where = find_folder(folder)
    if kind == "keras":
        import keras

        return keras.datasets.fashion_mnist.load_data()
    return read_folder(where)


def fixed_subset(x, y, size, seed=0):
    """``size`` examples (a multiple of 10), ``size / 10`` per class, the first of each class
    in a fixed permutation, kept in their original order: the same subset on every run."""
    if size % NUM_CLASSES or not 0 < size <= len(y):
        raise ValueError(f"Invalid size={size!r}: expected a multiple of {NUM_CLASSES} in "
                         f"[{NUM_CLASSES}, {len(y)}].")
    order = np.random.default_rng(seed).permutation(len(y))
    per_class = size // NUM_CLASSES
    picked = np.concatenate([order[y[order] == c][:per_class] for c in range(NUM_CLASSES)])
    if len(picked) != size:
        raise ValueError(f"Invalid size={size!r}: some class has fewer than {per_class} "
                         "examples.")
    picked.sort()
    return x[picked], y[picked]


def write_subset(out, train_size, test_size, folder=None):
    """Writes a :func:`fixed_subset` of each split to ``out`` as the four IDX gz files."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(folder)
    os.makedirs(out, exist_ok=True)
    for split, (x, y), size in (("train", (x_train, y_train), train_size),
                                ("test", (x_test, y_test), test_size)):
        x, y = fixed_subset(x, y, size)
        write_idx(os.path.join(out, FILES[f"x_{split}"]), x)
        write_idx(os.path.join(out, FILES[f"y_{split}"]), y)


def main(argv=None):
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.datasets",
                                     description="Write a fixed Fashion-MNIST subset.")
    parser.add_argument("out", metavar="OUT_DIR")
    parser.add_argument("--train", type=int, required=True, help="training images (x10)")
    parser.add_argument("--test", type=int, required=True, help="test images (x10)")
    parser.add_argument("--data", metavar="DIR", default=None, help="source folder")
    args = parser.parse_args(argv)
    try:
        write_subset(args.out, args.train, args.test, args.data)
    except (DataUnavailable, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
