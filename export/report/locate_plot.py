"""The located layers drawn: each layer's error against its depth, one line per format.

The y axis is the tolerance ratio (:mod:`.locate`: the largest ``|got - keras|`` over
``atol + rtol * |keras|``; above 1 is beyond tolerance), on a log scale, so that the slow
growth of float32 drift and a sudden jump read apart; the first divergence is marked.
"""

from __future__ import annotations

import io

from tfdropblock._files import write_bytes

# Where a ratio of 0 (bit-identical) is drawn on the log axis.
_FLOOR = 1e-6


def require_matplotlib():
    """The Figure and Agg canvas classes; ImportError naming what to install otherwise."""
    from tfdropblock.visualize import _matplotlib_pin

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "--locate-plot needs matplotlib, which is not installed: run pip install "
            f"\".[viz]\" in the clone, or pip install {_matplotlib_pin()}") from error
    return Figure, FigureCanvasAgg


def located(report):
    """{format: parity details} of the formats whose parity holds located layers."""
    found = {}
    for name, result in report.formats.items():
        parity = result.checks.get("parity")
        if parity is not None and parity.details.get("layers"):
            found[name] = parity.details
    return found


def plot_layers(report, path):
    """Write the PNG of ``report``'s located layers to ``path`` (whole, by one rename).
    Returns the formats drawn (none: the figure says nothing was located)."""
    figure_cls, canvas_cls = require_matplotlib()
    found = located(report)
    figure = figure_cls(figsize=(10, 4.5), layout="constrained")
    canvas_cls(figure)
    axes = figure.add_subplot(1, 1, 1)
    for order, (name, details) in enumerate(found.items()):
        points = [(i, max(row["tolerance_ratio"], _FLOOR))
                  for i, row in enumerate(details["layers"]) if row["compared"]]
        if not points:
            continue
        xs, ys = zip(*points)
        runtime = details["locate_runtime"]
        line, = axes.plot(xs, ys, marker=".", linewidth=1,
                          label=runtime if runtime.startswith(f"{name} ") else f"{name}: {runtime}")
        first = details.get("first_divergence")
        if first:
            at = next(i for i, row in enumerate(details["layers"])
                      if row["layer"] == first["layer"])
            axes.axvline(at, color=line.get_color(), linestyle=":", linewidth=1)
            # Stacked, one row per format: formats often diverge at the same depth.
            axes.annotate(f"{name}: first divergence {first['layer']}",
                          (at, max(first["tolerance_ratio"], _FLOOR)), fontsize=8,
                          color=line.get_color(), xytext=(-6, 24 + 12 * order),
                          textcoords="offset points", ha="right")
    axes.axhline(1.0, color="grey", linewidth=1, label="tolerance (ratio 1)")
    axes.set_yscale("log")
    axes.set_xlabel("layer (index in model order)")
    axes.set_ylabel("max |artifact - Keras| / (atol + rtol |Keras|)")
    settings = report.settings or {}
    axes.set_title(f"model {report.model.get('name')!r}: each layer's error against Keras "
                   f"(atol={settings.get('atol')}, rtol={settings.get('rtol')})"
                   + ("" if found else ": no layer was located"), fontsize=10)
    if found:
        axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes(path, buffer.getvalue())
    return list(found)
