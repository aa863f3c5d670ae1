"""Pictures of the masks DropBlock draws, next to plain dropout at the same rate."""

from __future__ import annotations

import os
import io

import numpy as np

from tfdropblock import validation
from tfdropblock._files import write_bytes
from tfdropblock.gamma import expected_drop_fraction, gamma_for

MAX_CHANNELS = 16


def render_masks(out_path, rate=0.1, block_size=7, size=(64, 64), share_channels=False, seed=0,
                 gamma_mode="paper", channels=3):
    """Write a PNG of the keep-masks a :class:`~tfdropblock.DropBlock2D` layer draws.

    One panel per channel (one panel in all when channels share a mask; black = dropped) for a
    single sample, then a ``keras.layers.Dropout`` mask at the same rate for comparison. Each
    panel's title gives its realised drop fraction; the figure title gives rate, block size,
    gamma mode, the exact expected drop fraction (blocks overlap, so it is a little below
    ``rate`` in the paper's mode) and whether channels share one mask. The masks come from the
    layer itself, in training mode, on an all-ones input, so the picture is what training sees.

    Args:
        out_path: path of the PNG to write (parent directories must exist). Written to a
            temporary file in the same directory and renamed, so a reader never sees half a file.
        rate: drop rate in [0, 1).
        block_size: int or ``(h, w)``; clamped to the map as the layer does.
        size: map size, int or ``(height, width)``.
        share_channels: one mask shared by all channels (else one per channel, the paper's way).
        seed: int seed of the DropBlock and Dropout layers.
        gamma_mode: ``"paper"`` or ``"exact"``.
        channels: channels to draw, 1 to 16.

    Returns:
        A dict: ``path``, ``rate``, ``block_size``, ``size``, ``gamma``, ``expected_drop``
        (exact expectation), ``drop_fraction`` (realised, over all channels drawn),
        ``channel_drop_fractions``, ``dropout_fraction``, ``share_channels``, ``gamma_mode``.

    Raises:
        ImportError: matplotlib is not installed (``pip install ".[viz]"`` in the clone).

    Example:
        >>> info = render_masks("masks.png", rate=0.1, block_size=7, size=(64, 64))
        >>> round(info["expected_drop"], 3)
        0.095
    """
    rate = validation.check_rate(rate)
    block = validation.check_block_size(block_size, 2)
    size = _check_size(size)
    gamma_mode = validation.check_gamma_mode(gamma_mode)
    if isinstance(channels, bool) or not isinstance(channels, int) or not (
            1 <= channels <= MAX_CHANNELS):
        raise ValueError(f"Invalid channels={channels!r}: expected an int from 1 to "
                         f"{MAX_CHANNELS}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Invalid seed={seed!r}: expected an int.")
    out_path = os.fspath(out_path)
    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Invalid out_path={out_path!r}: directory {directory!r} does "
                                "not exist.")
    figure_cls, canvas_cls = _matplotlib()

    import keras

    from tfdropblock.layers import DropBlock2D

    ones = np.ones((1, *size, channels), np.float32)
    layer = DropBlock2D(rate, block, seed=seed, data_format="channels_last",
                        share_channels=share_channels, gamma_mode=gamma_mode)
    keep = keras.ops.convert_to_numpy(layer(ones, training=True))[0] != 0
    dropout = keras.layers.Dropout(rate, seed=seed)
    dropout_keep = keras.ops.convert_to_numpy(dropout(ones[..., :1], training=True))[0, ..., 0] != 0

    clamped = tuple(min(b, s) for b, s in zip(block, size))
    gamma = gamma_for(rate, size, clamped, gamma_mode)
    info = {
        "path": out_path,
        "rate": rate,
        "block_size": clamped,
        "size": size,
        "gamma": gamma,
        "expected_drop": expected_drop_fraction(gamma, size, clamped),
        "drop_fraction": float(1.0 - keep.mean()),
        "channel_drop_fractions": [float(1.0 - keep[..., c].mean()) for c in range(channels)],
        "dropout_fraction": float(1.0 - dropout_keep.mean()),
        "share_channels": bool(share_channels),
        "gamma_mode": gamma_mode,
    }

    if share_channels:
        # Every channel holds the same mask: one panel says so without repeating it.
        panels = [(keep[..., 0], f"DropBlock2D, all {channels} channels\n"
                   f"dropped {info['drop_fraction']:.1%}")]
    else:
        panels = [(keep[..., c], f"DropBlock2D channel {c}\n"
                   f"dropped {info['channel_drop_fractions'][c]:.1%}") for c in range(channels)]
    panels.append((dropout_keep, f"Dropout (same rate)\ndropped {info['dropout_fraction']:.1%}"))
    columns = min(len(panels), 5)
    rows = -(-len(panels) // columns)
    # At least 7.5 in wide so that the three-line title fits above one or two panels.
    figure = figure_cls(figsize=(max(2.6 * columns, 7.5), 2.9 * rows + 1.1),
                        layout="constrained")
    canvas_cls(figure)
    masks = "one mask shared by all channels" if share_channels else "one mask per channel"
    figure.suptitle(
        f"DropBlock rate={rate:g}, block_size={clamped[0]}x{clamped[1]}, "
        f"map {size[0]}x{size[1]}\ngamma_mode={gamma_mode}, {masks}\n"
        f"expected drop {info['expected_drop']:.2%}, realised {info['drop_fraction']:.2%} "
        f"(seed {seed}; black = dropped)", fontsize=10)
    for index, (mask, title) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes.set_title(title, fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes(out_path, buffer.getvalue())  # beside the target, then one rename
    return info


def _check_size(size):
    sizes = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = ()
    if len(sizes) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                  for s in sizes):
        raise ValueError(f"Invalid size={size!r}: expected a positive int or a (height, width) "
                         "tuple of positive ints.")
    return sizes


def _matplotlib():
    """The Figure and Agg canvas classes; no pyplot, so no global state and no GUI backend."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        # tfdropblock is installed from a clone, not an index: "tfdropblock[viz]" would not
        # resolve, so name the clone's extra and the pinned matplotlib itself.
        raise ImportError(
            "show-masks / render_masks needs matplotlib, which is not installed: run "
            f"pip install \".[viz]\" in the clone, or pip install {_matplotlib_pin()}"
        ) from error
    return Figure, FigureCanvasAgg


def _matplotlib_pin():
    """The matplotlib requirement of the ``viz`` extra, as installed (pyproject.toml)."""
    from importlib import metadata

    try:
        requirements = metadata.requires("tfdropblock") or []
    except metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if spec.strip().startswith("matplotlib") and "viz" in marker:
            return spec.strip()
    return "matplotlib"
