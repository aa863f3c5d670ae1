"""render_masks: a valid PNG, plausible realised drop fractions, atomic write, clear errors."""

import os
import sys

import pytest

from tfdropblock.gamma import expected_drop_fraction, gamma_for
from tfdropblock.visualize import render_masks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_writes_a_png_with_plausible_fractions(tmp_path):
    out = tmp_path / "masks.png"
    info = render_masks(out, rate=0.1, block_size=7, size=(64, 64), channels=8, seed=0)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert os.listdir(tmp_path) == ["masks.png"]  # the temporary file was renamed away
    import matplotlib.image

    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 400
    expected = expected_drop_fraction(gamma_for(0.1, (64, 64), (7, 7)), (64, 64), (7, 7))
    assert info["expected_drop"] == pytest.approx(expected)
    assert info["expected_drop"] < 0.1  # blocks overlap: the paper's gamma under-drops a bit
    # 8 channels of 64x64, ~10 blocks each: the realised fraction is within a few points.
    assert abs(info["drop_fraction"] - expected) < 0.35 * expected
    assert len(info["channel_drop_fractions"]) == 8
    assert len(set(info["channel_drop_fractions"])) > 1  # a mask per channel
    assert 0.05 < info["dropout_fraction"] < 0.15
    assert info["block_size"] == (7, 7) and info["path"] == str(out)


def test_shared_masks_exact_gamma_and_overwrite(tmp_path):
    out = tmp_path / "shared.png"
    out.write_bytes(b"old")
    info = render_masks(str(out), rate=0.3, block_size=(5, 3), size=(32, 48),
                        share_channels=True, gamma_mode="exact", channels=4, seed=3)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert len(set(info["channel_drop_fractions"])) == 1
    assert info["expected_drop"] == pytest.approx(0.3, abs=1e-6)
    assert abs(info["drop_fraction"] - 0.3) < 0.15


def test_block_larger_than_map_is_clamped(tmp_path):
    info = render_masks(tmp_path / "small.png", rate=0.2, block_size=9, size=6, channels=1)
    assert info["block_size"] == (6, 6)
    assert info["drop_fraction"] in (0.0, 1.0)  # one block covers the whole map


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=0), "channels"),
    (dict(channels=17), "channels"),
    (dict(size=(0, 8)), "size"),
    (dict(rate=1.5), "rate"),
    (dict(block_size=(3, 3, 3)), "block_size"),
    (dict(gamma_mode="x"), "gamma_mode"),
    (dict(seed=1.5), "seed"),
])
def test_argument_errors(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        render_masks(tmp_path / "x.png", **kwargs)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_masks(tmp_path / "no" / "x.png")


def test_missing_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    # "tfdropblock[viz]" resolves nowhere (the package is on no index): the clone's extra and
    # the pinned matplotlib do.
    with pytest.raises(ImportError, match=r'pip install "\.\[viz\]".*pip install matplotlib==3\.'):
        render_masks(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_readme_picture_is_what_the_readme_command_draws(tmp_path):
    import re
    import shlex

    import matplotlib.image
    import numpy as np

    from tfdropblock import cli

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "README.md")) as f:
        commands = re.findall(r"`(tfdropblock show-masks --out docs/masks\.png[^`]*)`", f.read())
    assert len(commands) == 1, "the README must quote the command that drew docs/masks.png"
    argv = shlex.split(commands[0])[1:]
    argv[argv.index("docs/masks.png")] = str(tmp_path / "masks.png")
    assert cli.main(argv) == 0
    drawn = matplotlib.image.imread(tmp_path / "masks.png")
    shipped = matplotlib.image.imread(os.path.join(repo, "docs", "masks.png"))
    assert drawn.shape == shipped.shape and np.array_equal(drawn, shipped), (
        f"docs/masks.png is stale: regenerate it with `{commands[0]}` from the repository root")
