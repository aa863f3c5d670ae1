"""What DropBlock does to accuracy on real data: ``python -m benchmarks.accuracy [--quick]``.

Two studies on Fashion-MNIST (networks and training in :mod:`benchmarks.fmnist`), each on a
reduced, fixed, class-balanced training subset, so that the network overfits and a
regulariser has something to do; test accuracy on the full 10,000-image test set (the last
epoch's model: no early stopping, nothing chosen on the test set but the best block size):

- ``2d``: the residual CNN on 28x28 images: no regulariser, Dropout, SpatialDropout2D,
  DropBlock2D at block 1, 3, 5 and 7 (rate 0.1 = keep_prob 0.9, paper gamma), then exact gamma
  (``gamma_mode="exact"``) at the block size with the best mean;
- ``1d``: the 1-D CNN on each image as 28 rows of 28 features: no regulariser, Dropout,
  DropBlock1D.

Every configuration runs with each seed (weights, shuffling, masks; the subset stays fixed);
seeds are the outer loop, so that a slow spell of a shared machine falls on every
configuration alike. Writes, under ``--out`` (default ``out/accuracy``): ``results.json``
(rewritten after every run, so an interrupted study keeps what it finished), ``results.md``
(the tables, ready to paste), ``block_size.png`` (test accuracy against block size) and
``models/*.keras`` (each DropBlock configuration's first-seed model, for the deployment study).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BLOCK_SIZES = (1, 3, 5, 7)
RATE = 0.1
# --quick is a smoke run of every configuration. The full plan: 600 images for 28 epochs of
# batch 32 (532 steps) at width 16 reach 94 % train accuracy against 77 % test without a
# regulariser (a gap to close), at ~100 CPU-seconds per 2-D training; 1,000 images for 24
# epochs at width 8 stopped at 85 % train accuracy (underfitting: nothing to regularise).
FULL = {"train_size": 600, "epochs": 28, "batch_size": 32, "learning_rate": 3e-3, "seeds": 3,
        "test_size": 10000}
QUICK = {"train_size": 500, "epochs": 4, "batch_size": 32, "learning_rate": 3e-3, "seeds": 1,
         "test_size": 2000}
SEQUENCE_BLOCK = 5


def configurations_2d():
    base = [("none", "none", {}), ("dropout", "dropout", {}), ("spatial", "spatial", {})]
    return base + [(f"dropblock_b{b}", "dropblock", {"block_size": b}) for b in BLOCK_SIZES]


def configurations_1d(block_size):
    return [("none", "none", {}), ("dropout", "dropout", {}),
            (f"dropblock_b{block_size}", "dropblock", {"block_size": block_size})]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK} instead of {FULL}")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="folder with the four Fashion-MNIST IDX files (default: "
                             "$TFDROPBLOCK_FASHION_MNIST, Keras's cache, the Debian package)")
    parser.add_argument("--out", metavar="DIR", default=os.path.join("out", "accuracy"))
    parser.add_argument("--studies", default="2d,1d",
                        help="comma-separated, of 2d and 1d (default both)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images, a multiple of 10 (class-balanced)")
    parser.add_argument("--width", type=int, default=16, help="channels of group 1")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="trainings at once, each on one thread (default: up to 2, one "
                             "per core)")
    parser.add_argument("--exact-block", type=int, default=None, choices=BLOCK_SIZES,
                        help="block size of the exact-gamma runs (default: the best paper-gamma "
                             "block of this run)")
    parser.add_argument("--only", metavar="NAME[,NAME]", default=None,
                        help="run only these configurations (names as in the tables, e.g. "
                             "dropblock_exact_b7); exact-gamma runs then need --exact-block")
    parser.add_argument("--render", metavar="RESULTS.json", default=None,
                        help="only rewrite results.md and block_size.png beside an earlier "
                             "run's results.json")
    args = parser.parse_args(argv)
    studies = tuple(s for s in args.studies.split(",") if s)
    if not studies or any(s not in ("2d", "1d") for s in studies):
        parser.error(f"Invalid --studies={args.studies!r}: expected a comma-separated list "
                     "of '2d' and '1d'.")
    args.studies = studies
    plan = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "epochs", "train_size"):
        value = getattr(args, key)
        if value is not None:
            if value < 1 or (key == "train_size" and value % 10):
                parser.error(f"Invalid --{key.replace('_', '-')}={value}: expected a positive "
                             "int" + (", a multiple of 10." if key == "train_size" else "."))
            plan[key] = value
    args.plan = plan
    if args.jobs < 1:
        parser.error(f"Invalid --jobs={args.jobs}: expected an int >= 1.")
    args.only = set(args.only.split(",")) if args.only else None
    if args.only and args.exact_block is None and any("exact" in name for name in args.only):
        parser.error("Invalid --only with an exact-gamma configuration: --exact-block is "
                     f"required (one of {BLOCK_SIZES}).")
    return args


def summarise(runs):
    """Per configuration (in first-run order): n, mean and sample std of test and train
    accuracy."""
    rows = {}
    for run in runs:
        rows.setdefault((run["study"], run["config"]), []).append(run)
    out = []
    for (study, config), group in rows.items():
        test = [r["test_accuracy"] for r in group]
        train = [r["train_accuracy"] for r in group]
        out.append({"study": study, "config": config, "n": len(group),
                    "test_mean": statistics.fmean(test),
                    "test_std": statistics.stdev(test) if len(test) > 1 else float("nan"),
                    "train_mean": statistics.fmean(train),
                    "seconds_mean": statistics.fmean(r["seconds"] for r in group)})
    return out


def best_block(summary):
    blocks = [row for row in summary if row["study"] == "2d"
              and row["config"] in {f"dropblock_b{b}" for b in BLOCK_SIZES}]
    best = max(blocks, key=lambda row: row["test_mean"])
    return int(best["config"].rsplit("b", 1)[1])


def difference_to_baseline(row, baseline):
    """Mean difference to the baseline and its standard error (Welch); None with one seed."""
    if row["n"] < 2 or baseline["n"] < 2:
        return None
    se = math.sqrt(row["test_std"] ** 2 / row["n"] + baseline["test_std"] ** 2 / baseline["n"])
    return row["test_mean"] - baseline["test_mean"], se


def markdown(results):
    plan = results["plan"]
    lines = [f"Command: `{results['command']}`; wall time {results['wall_seconds'] / 60:.1f} min "
             f"on {results['machine']}.",
             f"Training subset {plan['train_size']} images (class-balanced, fixed), "
             f"{plan['epochs']} epochs of batch {plan['batch_size']} (Adam, learning rate "
             f"{plan['learning_rate']:g}, cosine decay), {plan['seeds']} seed(s) per "
             f"configuration, width {results.get('width')}; test accuracy on "
             f"{plan['test_size']} test images; "
             + (f"{results['jobs']} trainings at once, one thread each." if
                results.get("jobs", 1) > 1 else "one training at a time."), ""]
    summary = summarise(results["runs"])
    for study in ("2d", "1d"):
        rows = [row for row in summary if row["study"] == study]
        if not rows:
            continue
        baseline = next((row for row in rows if row["config"] == "none"), None)
        lines += [f"**{study.upper()} study**", "",
                  "| configuration | test accuracy (mean ± std) | vs none (± s.e.) | "
                  "train accuracy | seeds |", "|---|---|---|---|---|"]
        for row in rows:
            diff = difference_to_baseline(row, baseline) if baseline else None
            vs = "" if diff is None or row is baseline else (
                f"{100 * diff[0]:+.2f} ± {100 * diff[1]:.2f}"
                + (" **(> 2 s.e.)**" if abs(diff[0]) > 2 * diff[1] else ""))
            std = "" if math.isnan(row["test_std"]) else f" ± {100 * row['test_std']:.2f}"
            lines.append(f"| {row['config']} | {100 * row['test_mean']:.2f}{std} | {vs} | "
                         f"{100 * row['train_mean']:.2f} | {row['n']} |")
        lines.append("")
    return "\n".join(lines)


def plot_block_curve(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {row["config"]: row for row in summarise(results["runs"]) if row["study"] == "2d"}
    blocks = [b for b in BLOCK_SIZES if f"dropblock_b{b}" in summary]
    if not blocks:
        return
    std = lambda row: 0.0 if math.isnan(row["test_std"]) else 100 * row["test_std"]  # noqa: E731
    fig, ax = plt.subplots(figsize=(8.5, 4))
    ax.errorbar(blocks, [100 * summary[f"dropblock_b{b}"]["test_mean"] for b in blocks],
                yerr=[std(summary[f"dropblock_b{b}"]) for b in blocks], marker="o", capsize=4,
                label="DropBlock2D (paper gamma), mean ± std")
    exact = [c for c in summary if c.startswith("dropblock_exact_b")]
    for config in exact:
        b = int(config.rsplit("b", 1)[1])
        ax.errorbar([b + 0.15], [100 * summary[config]["test_mean"]],
                    yerr=[std(summary[config])], marker="s", capsize=4, linestyle="none",
                    label=f"DropBlock2D exact gamma, block {b}")
    for config, color, linestyle in (("none", "k", "--"), ("dropout", "C2", ":"),
                                     ("spatial", "C3", "-.")):
        if config in summary:
            ax.axhline(100 * summary[config]["test_mean"], color=color, linestyle=linestyle,
                       label=f"{config} (mean)")
    ax.set_xlabel("block size (groups 2 and 3, 14x14 maps)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(list(BLOCK_SIZES))
    plan = results["plan"]
    ax.set_title(f"Fashion-MNIST, {plan['train_size']} training images, "
                 f"{plan['seeds']} seed(s)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine():
    from benchmarks.run import machine as run_machine

    info = run_machine()
    return f"{info['cpu']}; {info['versions']}; load at start {info['load']}"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        write(results, os.path.dirname(os.path.abspath(args.render)))
        print(markdown(results))
        return 0
    from benchmarks import datasets

    try:
        datasets.load_fashion_mnist(args.data)  # fail here, with one line, not in a worker
    except datasets.DataUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    results = {"command": "python -m benchmarks.accuracy " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "machine": machine(), "plan": args.plan, "rate": RATE, "width": args.width,
               "jobs": args.jobs, "sequence_block": SEQUENCE_BLOCK, "runs": [],
               "wall_seconds": 0.0}
    start = time.perf_counter()
    setup = (args.data, args.plan, args.width, args.out, args.jobs > 1)

    def record(run):
        results["runs"].append(run)
        results["wall_seconds"] = time.perf_counter() - start
        print(f"[{results['wall_seconds'] / 60:5.1f} min] {run['study']} {run['config']:22s} "
              f"seed {run['seed']}: test {run['test_accuracy']:.4f} train "
              f"{run['train_accuracy']:.4f} ({run['seconds']:.0f} s)", file=sys.stderr,
              flush=True)
        write(results, args.out)

    wanted = lambda job: args.only is None or job[1] in args.only  # noqa: E731
    first = [job for job in jobs(args) if wanted(job)]

    def exact_jobs():
        if "2d" not in args.studies or (args.only is not None
                                        and not any("exact" in n for n in args.only)):
            return []
        block = args.exact_block
        if block is None:
            block = results["best_block"] = best_block(summarise(results["runs"]))
        return [job for job in exact(block, args.plan["seeds"]) if wanted(job)]

    if args.jobs == 1:
        _setup_worker(*setup)
        for job in first:
            record(train_one(job))
        for job in exact_jobs():
            record(train_one(job))
    else:
        # One single-threaded TensorFlow per core: these small convolutions leave a second
        # intra-op thread mostly idle, two trainings at once keep both cores busy.
        import concurrent.futures as futures
        import multiprocessing

        with futures.ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn"),
                                         initializer=_setup_worker, initargs=setup) as pool:
            # The exact-gamma runs wait for the best paper-gamma block, unless it is given.
            paper_blocks = sum(job[0] == "2d" and job[2] == "dropblock" for job in first)
            later = first + exact_jobs() if args.exact_block is not None else first
            pending = {pool.submit(train_one, job): job for job in later}
            exact_sent = args.exact_block is not None
            while pending:
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    record(future.result())
                    paper_blocks -= job[0] == "2d" and job[1].startswith("dropblock_b")
                if not exact_sent and paper_blocks == 0:
                    exact_sent = True
                    pending.update({pool.submit(train_one, job): job for job in exact_jobs()})
    results["wall_seconds"] = time.perf_counter() - start
    write(results, args.out)
    print(markdown(results))
    return 0


def jobs(args):
    """The runs before the exact-gamma ones: seeds outer, so that a slow spell of a shared
    machine falls on every configuration alike. A job is (study, config, regulariser,
    options, seed)."""
    plan = {"2d": configurations_2d(), "1d": configurations_1d(SEQUENCE_BLOCK)}
    return [(study, config, regulariser, options, seed) for seed in range(args.plan["seeds"])
            for study in args.studies for config, regulariser, options in plan[study]]


def exact(block, seeds):
    return [("2d", f"dropblock_exact_b{block}", "dropblock",
             {"block_size": block, "gamma_mode": "exact"}, seed) for seed in range(seeds)]


_WORKER = {}


def _setup_worker(data, plan, width, out, single_thread):
    """Loads the data once per process (and, in a pool, pins TensorFlow to one thread)."""
    if single_thread:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from benchmarks import datasets

    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(data)
    x_sub, y_sub = datasets.fixed_subset(x_train, y_train, plan["train_size"])
    _WORKER.update(plan=plan, width=width, out=out, train=(x_sub, y_sub),
                   test=(x_test[:plan["test_size"]], y_test[:plan["test_size"]]))


def train_one(job):
    """One training of one configuration with one seed: its record for ``results["runs"]``
    (the first seed's DropBlock models are saved for the deployment study)."""
    import keras

    from benchmarks import fmnist  # TensorFlow: only in the process that trains

    study, config, regulariser, options, seed = job
    cpu = time.process_time()
    build, prepare = {"2d": (fmnist.image_net, fmnist.as_images),
                      "1d": (fmnist.sequence_net, fmnist.as_sequences)}[study]
    plan, (x_sub, y_sub), (x_test, y_test) = _WORKER["plan"], _WORKER["train"], _WORKER["test"]
    keras.utils.set_random_seed(seed)
    model = build(regulariser, rate=RATE, width=_WORKER["width"], seed=1000 * seed, **options)
    seconds = fmnist.train(model, prepare(x_sub), y_sub, plan["epochs"], plan["batch_size"],
                          plan["learning_rate"], seed=seed)
    if regulariser == "dropblock" and seed == 0:
        model.save(os.path.join(_WORKER["out"], "models", f"{study}_{config}.keras"))
    return {"study": study, "config": config, "seed": seed, "seconds": seconds,
            "test_accuracy": fmnist.accuracy(model, prepare(x_test), y_test),
            "train_accuracy": fmnist.accuracy(model, prepare(x_sub), y_sub),
            # This process's CPU time, the whole job: what a loaded machine does not inflate.
            "cpu_seconds": time.process_time() - cpu, **options}


def write(results, out):
    path = os.path.join(out, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results) + "\n")
    plot_block_curve(results, os.path.join(out, "block_size.png"))


if __name__ == "__main__":
    sys.exit(main())
