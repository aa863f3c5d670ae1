"""The Fashion-MNIST loader (benchmarks/datasets.py): where it looks, in which order, that it
never lets Keras download, and its one-line error; on tiny IDX files written here."""

import gzip
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import datasets  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion-mnist")


def _write_set(folder, train=20, test=10, offset=0, files=datasets.FILES):
    """Four tiny IDX gz files; the first pixel of each image is its index + ``offset``, so a
    test can tell which folder was read."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(offset)
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = (np.arange(n) + offset) % 256
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, np.arange(n, dtype=np.uint8) % 10
    for key, name in files.items():
        datasets.write_idx(str(folder / name), arrays[key])
    return arrays


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No data in any default place: no variable, an empty Keras home, no Debian folder."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    (tmp_path / "keras_home").mkdir()
    # Keras reads KERAS_HOME when it is imported: once it is, its home moves only this way.
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "no_debian"))
    return tmp_path


def test_idx_round_trip_and_header_checks(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datasets.write_idx(str(tmp_path / "a.gz"), array)
    np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / "a.gz")), array)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\0\0\x0d\x01" + (3).to_bytes(4, "big") + b"abc")  # type 0x0d: float
    with pytest.raises(ValueError, match="bad.gz: not an unsigned-byte IDX file"):
        datasets.read_idx(str(tmp_path / "bad.gz"))
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(b"\0\0\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match=r"short.gz: header says shape \(5,\)"):
        datasets.read_idx(str(tmp_path / "short.gz"))


def test_given_folder_beats_the_variable_which_beats_the_defaults(nowhere, monkeypatch):
    given = _write_set(nowhere / "given", offset=0)
    env = _write_set(nowhere / "env", offset=100)
    debian = _write_set(nowhere / "debian", offset=200)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(nowhere / "debian"))
    assert datasets.find_folder()[0] == "debian"
    (x, _), _ = datasets.load_fashion_mnist()
    np.testing.assert_array_equal(x, debian["x_train"])
    monkeypatch.setenv(datasets.ENV_VAR, str(nowhere / "env"))
    (x, y), (xt, yt) = datasets.load_fashion_mnist()
    np.testing.assert_array_equal(x, env["x_train"])
    np.testing.assert_array_equal(xt, env["x_test"])
    np.testing.assert_array_equal(yt, env["y_test"])
    (x, _), _ = datasets.load_fashion_mnist(str(nowhere / "given"))
    np.testing.assert_array_equal(x, given["x_train"])


def test_keras_cache_is_read_through_keras_when_complete(nowhere, monkeypatch):
    import keras

    cache = nowhere / "keras_home" / "datasets" / "fashion-mnist"
    cached = _write_set(cache, offset=50)
    assert datasets.keras_cache_dir() == str(cache)
    calls = []
    real = keras.datasets.fashion_mnist.load_data
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data",
                        lambda: calls.append(1) or real())
    (x, _), (xt, _) = datasets.load_fashion_mnist()
    assert calls == [1]
    np.testing.assert_array_equal(x, cached["x_train"])
    np.testing.assert_array_equal(xt, cached["x_test"])


def test_incomplete_keras_cache_never_reaches_keras(nowhere, monkeypatch):
    """Keras would download the missing file (and hang offline): the loader must not call it."""
    import keras

    three = dict(list(datasets.FILES.items())[:3])
    _write_set(nowhere / "keras_home" / "datasets" / "fashion-mnist", files=three)

    def download(*args, **kwargs):
        raise AssertionError("keras load_data called with an incomplete cache")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", download)
    monkeypatch.setattr(keras.utils, "get_file", download)
    with pytest.raises(datasets.DataUnavailable):
        datasets.load_fashion_mnist()


def test_no_data_is_one_line_naming_both_ways(nowhere, capsys):
    with pytest.raises(datasets.DataUnavailable) as error:
        datasets.load_fashion_mnist()
    message = str(error.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert datasets.ENV_VAR in message and "--data" in message
    # The benchmarks' command line: exit 2, that one line on stderr, nothing else.
    assert datasets.main([str(nowhere / "subset"), "--train", "10", "--test", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err


def test_a_given_folder_missing_a_file_is_named(nowhere):
    _write_set(nowhere / "partial", files=dict(list(datasets.FILES.items())[1:]))
    with pytest.raises(datasets.DataUnavailable, match="not found in .*partial: install"):
        datasets.load_fashion_mnist(str(nowhere / "partial"))


def test_fixed_subset_is_balanced_and_reproducible():
    y = np.arange(200) % 10
    x = np.arange(200)
    xs, ys = datasets.fixed_subset(x, y, 50)
    assert np.bincount(ys).tolist() == [5] * 10
    np.testing.assert_array_equal(xs, datasets.fixed_subset(x, y, 50)[0])
    assert list(xs) == sorted(xs)
    with pytest.raises(ValueError, match="Invalid size=55: expected a multiple of 10"):
        datasets.fixed_subset(x, y, 55)


def test_shipped_subset_loads_with_its_licence():
    (x, y), (xt, yt) = datasets.load_fashion_mnist(SHIPPED)
    assert x.shape == (3000, 28, 28) and xt.shape == (1000, 28, 28)
    assert np.bincount(y).tolist() == [300] * 10 and np.bincount(yt).tolist() == [100] * 10
    # Real images, not noise: a clothing item on a dark background.
    assert x[:, 0, 0].mean() < 5 and 50 < x.mean() < 120
    with open(os.path.join(SHIPPED, "LICENSE")) as f:
        text = f.read()
    assert "Zalando SE" in text and "MIT License" in text
