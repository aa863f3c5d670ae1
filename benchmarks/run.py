"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--markdown FILE] [--tables ...]``.

Exits 1 when a table could not run (its dependencies are missing), else 0.

Prints, per table, the median time of each case and its ratios to the elementwise floor (same
mode), to Keras ``Dropout`` in graph mode and to Keras ``Dropout`` in the same mode, then the
performance targets of the 2-D DropBlock layer. ``--markdown FILE`` writes the same as Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (label, numerator case, denominator case, limit); cases are (layer, mode) of the 2-D table.
TARGETS = [
    ("DropBlock2D per-channel, XLA <= 0.6x Keras Dropout in graph mode",
     ("DropBlock2D per-channel", "xla"), ("keras Dropout", "graph"), 0.6),
    ("DropBlock2D per-channel, XLA <= 0.02x Keras Dropout under XLA",
     ("DropBlock2D per-channel", "xla"), ("keras Dropout", "xla"), 0.02),
    ("DropBlock2D per-channel, graph <= 1.0x Keras Dropout in graph mode",
     ("DropBlock2D per-channel", "graph"), ("keras Dropout", "graph"), 1.0),
    ("DropBlock2D shared-channel, XLA <= 2x the elementwise floor under XLA",
     ("DropBlock2D shared-channel", "xla"), ("floor (x * c)", "xla"), 2.0),
    ("DropBlock2D per-channel, graph <= 1.5x the elementwise floor in graph mode",
     ("DropBlock2D per-channel", "graph"), ("floor (x * c)", "graph"), 1.5),
]
# The JAX table's target: (label, numerator, denominator, limit), cases of the jax table.
JAX_TARGET = ("DropBlock2D per-channel, jax.jit <= 1.5x Keras Dropout on JAX",
              "DropBlock2D per-channel", "keras Dropout", 1.5)
RESNET_LIMIT = 1.03  # DropBlock adds at most 3% to a ResNet-50 training step
VERIFY_LIMIT = 1.5  # verify costs at most 1.5x the bare conversions it wraps
TABLES = ("2d", "1d", "3d", "jax", "resnet", "export")


def machine():
    import keras
    import numpy as np
    import tensorflow as tf

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs (nproc)",
        "versions": f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
                    f"Keras {keras.__version__}, NumPy {np.__version__}",
        "load": _load(),
    }


def _load():
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def layer_table(name, rounds, warmup):
    from benchmarks import layers, timing

    cases, meta = layers.layer_cases(name)
    results = timing.measure(cases, rounds=rounds, warmup=warmup)
    rows = []
    for (label, mode), r in results.items():
        floor = results[("floor (x * c)", mode)]
        rows.append({
            "case": label, "mode": mode, "ms": r.median * 1e3, "spread": r.spread,
            "x floor": r.median / floor.median,
            # Median of per-round ratios: cancels most of a shared machine's load swings.
            "x floor paired": paired_ratio(r, floor),
            "x Dropout graph": r.median / results[("keras Dropout", "graph")].median,
            "x Dropout same mode": r.median / results[("keras Dropout", mode)].median,
        })
    shape = "x".join(map(str, meta["shape"]))
    title = (f"{name.upper()}: {shape} float32, block {meta['block']}, rate {meta['rate']}, "
             "forward + backward")
    return title, rows, results


def jax_table(rounds, warmup):
    """The 2-D cases on Keras's JAX backend, timed in a process of their own (Keras fixes its
    backend at import): ``python -m benchmarks.layers --jax`` with ``KERAS_BACKEND=jax``."""
    import json
    import subprocess

    from benchmarks import timing

    title = "JAX (2D, jax.jit on CPU)"
    try:
        import jax  # noqa: F401
    except ImportError:
        return title, [], "jax is not installed (pip install -e '.[jax]')", []
    env = dict(os.environ, KERAS_BACKEND="jax")
    done = subprocess.run([sys.executable, "-m", "benchmarks.layers", "--jax", "--rounds",
                           str(rounds), "--warmup", str(warmup)], capture_output=True, text=True,
                          env=env, timeout=1800)
    if done.returncode != 0:
        return title, [], f"the JAX run failed: {done.stderr.strip().splitlines()[-1:]}", []
    data = json.loads(done.stdout)
    results = {label: timing.Result(label, seconds) for label, _, seconds in data["seconds"]}
    floor, dropout = results["floor (x * c)"], results["keras Dropout"]
    rows = [{"case": label, "mode": "jax.jit", "ms": r.median * 1e3, "spread": r.spread,
             "x floor": r.median / floor.median, "x floor paired": paired_ratio(r, floor),
             "x Dropout (JAX)": r.median / dropout.median,
             "x Dropout paired": paired_ratio(r, dropout)} for label, r in results.items()]
    meta = data["meta"]
    title = (f"JAX: {'x'.join(map(str, meta['shape']))} float32, block {meta['block']}, rate "
             f"{meta['rate']}, forward + backward under jax.jit ({data['versions']})")
    label, num, den, limit = JAX_TARGET
    return title, rows, None, [(label, results[num].median / results[den].median, limit)]


def paired_ratio(a, b):
    """Median of per-round ratios: one round times every case within seconds, so the load
    drifts of a shared machine (spreads of ±25% per case) mostly cancel out of the ratio."""
    return statistics.median(x / y for x, y in zip(a.seconds, b.seconds))


def resnet_table(rounds, quick):
    from benchmarks import models, timing

    why = models.available()
    if why:
        return "ResNet-50 training step", [], why, []
    width = 16 if quick else 64
    cases, meta = models.resnet_cases(width=width)
    results = timing.measure(cases, rounds=rounds, warmup=1, target_s=0.0)
    base = "ResNet-50 without DropBlock"

    rows = [{"case": label, "mode": mode, "ms": r.median * 1e3, "spread": r.spread,
             "x without DropBlock": paired_ratio(r, results[(base, mode)]),
             "x graph mode": paired_ratio(r, results[(label, "graph")])}
            for (label, mode), r in results.items()]
    title = (f"ResNet-50 training step (SGD), input {'x'.join(map(str, meta['input']))}, "
             f"width {meta['width']}, {meta['classes']} classes (ratios: medians of per-round "
             "ratios)")
    targets = [(f"ResNet-50 step with DropBlock, {row['mode']} <= {RESNET_LIMIT}x without",
                row["x without DropBlock"], RESNET_LIMIT) for row in rows if row["case"] != base]
    return title, rows, None, targets


def export_table(rounds):
    from benchmarks import export

    why = export.available()
    if why:
        return "Export kit", [], why, []
    rows, total = export.export_rows(rounds)
    rows = [{"case": k, "s": s, "x bare sum": s / total} for k, s in rows]
    targets = [(f"verify <= {VERIFY_LIMIT}x the bare conversions", row["x bare sum"],
                VERIFY_LIMIT) for row in rows if row["case"].startswith("verify")]
    return ("Export kit: verify(default_model()) against the bare conversions (seconds)",
            rows, None, targets)


def format_rows(rows, markdown):
    if not rows:
        return []
    keys = list(rows[0])
    cells = [[_cell(row[k], k) for k in keys] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        return lines + ["| " + " | ".join(c) + " |" for c in cells]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    return lines + ["  ".join(c.ljust(w) for c, w in zip(cs, widths)) for cs in cells]


def _cell(value, key):
    if isinstance(value, str):
        return value
    if key == "spread":
        return "n/a" if math.isnan(value) else f"±{value * 100:.0f}%"
    if key == "ms":
        return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
    if key == "s":
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def layer_targets(results):
    return [(label, results[num].median / results[den].median, limit)
            for label, num, den, limit in TARGETS]


def target_lines(targets, markdown):
    lines = []
    if markdown:
        lines += ["| target | measured | limit | met |", "|---|---|---|---|"]
    for label, value, limit in targets:
        met = "yes" if value <= limit else "**no**" if markdown else "NO"
        lines.append(f"| {label} | {value:.3f}x | {limit}x | {met} |" if markdown
                     else f"{'met ' if value <= limit else 'MISS'}  {value:7.3f}x (limit {limit}x)  "
                          f"{label}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 rounds, a narrow ResNet, no export table (about 3.5 minutes)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=None,
                        help="tables to run (default: all; --quick skips export)")
    args = parser.parse_args(argv)
    tables = args.tables or [t for t in TABLES if not (args.quick and t == "export")]
    rounds = 4 if args.quick else 15

    started = time.perf_counter()
    info = machine()
    out = {False: [], True: []}  # plain text, markdown

    def emit(text_lines, md_lines):
        for line in text_lines:
            print(line, flush=True)
        out[False].extend(text_lines)
        out[True].extend(md_lines)

    command = "python -m benchmarks.run" + (" --quick" if args.quick else "") + (
        f" --tables {' '.join(args.tables)}" if args.tables else "")
    emit([f"# {command}", *(f"{k}: {v}" for k, v in info.items()), ""],
         [f"Command: `{command}`", "", *(f"- {k}: {v}" for k, v in info.items()), ""])
    targets, skipped = [], []
    for table in tables:
        why = None
        if table in ("2d", "1d", "3d"):
            title, rows, results = layer_table(table, rounds, 1 if args.quick else 2)
            if table == "2d":
                targets += layer_targets(results)
        elif table == "jax":
            title, rows, why, found = jax_table(rounds, 1 if args.quick else 2)
            targets += found
        elif table == "resnet":
            title, rows, why, found = resnet_table(max(4, rounds // 2), args.quick)
            targets += found
        else:
            title, rows, why, found = export_table(1 if args.quick else 2)
            targets += found
        body = [f"skipped: {why}"] if why else []
        if why:
            skipped.append(table)
        emit([title, *body, *format_rows(rows, False), ""],
             [f"### {title}", "", *body, *format_rows(rows, True), ""])
    if targets:
        emit(["Targets (same run):", *target_lines(targets, False), ""],
             ["### Targets (same run)", "", *target_lines(targets, True), ""])
    footer = f"total {time.perf_counter() - started:.0f} s, load average after: {_load()}"
    emit([footer], [f"_{footer}_"])
    if skipped:
        # A run that silently lacks a table would pass for a complete one in CI and in the docs.
        emit([f"FAILED: could not run table(s) {', '.join(skipped)}"],
             [f"**FAILED: could not run table(s) {', '.join(skipped)}**"])
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out[True]) + "\n")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
