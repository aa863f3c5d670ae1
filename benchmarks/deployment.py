"""A trained DropBlock model through export and quantization, judged on real Fashion-MNIST.

    python -m benchmarks.deployment data DIR            # labelled.npz, calibration.npz
    tfdropblock verify MODEL.keras --quantize float16,dynamic,int8 \\
        --inputs DIR/labelled.npz --labels labels --calibration DIR/calibration.npz \\
        --out DIR/artifacts --json DIR/verify.json
    python -m benchmarks.deployment report DIR/verify.json     # per-format numbers
    python -m benchmarks.deployment breakage MODEL.keras --npz DIR

``verify --labels`` runs the 10,000 test images through Keras and every artifact (its own
runtime, batch by batch) and reports each one's top-1, Keras's and their agreement
(``checks.accuracy``); ``report`` makes the table of it, with the artifact sizes.

``breakage``: what the quantized quality floors (``tfdropblock.export.checks.metrics.THRESHOLDS``)
let through on this trained model: int8 calibrated as it should be (on ``calibration.npz``,
training images the study did not train on) and in three wrong ways, and a float model with
one convolution's weights perturbed, each judged by the current floors and by
:data:`PROPOSED` on the real test images, through the kit's own quantizers and runtimes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LABELLED, CALIBRATION = "labelled.npz", "calibration.npz"
LABELS = "labels"  # the array of LABELLED that --labels names
INPUT_NAME = "image"  # the networks of benchmarks.fmnist name their input so
CALIBRATION_ROWS = 500
BATCH = 500
# Floors these measurements support for a trained classifier (see docs/ACCURACY.md).
PROPOSED = {"float16": (30.0, 0.999, 0.99), "dynamic": (15.0, 0.99, 0.9),
            "int8": (15.0, 0.99, 0.9)}


def write_npz(out, folder=None, calibration_rows=CALIBRATION_ROWS):
    """The full real test set (images and, apart, integer labels) and a calibration set of
    training images that the accuracy study did not train on."""
    from benchmarks import datasets, fmnist
    from benchmarks.accuracy import FULL

    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(folder)
    studied, _ = datasets.fixed_subset(np.arange(len(y_train)), y_train, FULL["train_size"])
    unseen = np.setdiff1d(np.arange(len(y_train)), studied)
    picked = np.random.default_rng(1).choice(unseen, calibration_rows, replace=False)
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, LABELLED), **{INPUT_NAME: fmnist.as_images(x_test),
                                             LABELS: y_test.astype(np.int64)})
    np.savez(os.path.join(out, CALIBRATION), **{INPUT_NAME: fmnist.as_images(x_train[picked])})


def _batched(run, x):
    return np.concatenate([np.asarray(run(x[i:i + BATCH])) for i in range(0, len(x), BATCH)])


def keras_runner(model):
    return lambda x: model.predict(x, batch_size=BATCH, verbose=0)


def kit_runner(fmt, artifact):
    """The kit's own first runtime of a quantized ``fmt`` artifact (TFLite flatbuffer bytes,
    ONNX proto), as a function of the images to the class scores."""
    from tfdropblock.export.formats.quantized import quantizer

    runner = next(iter(quantizer(fmt).runtimes(artifact).values()))
    return lambda x: next(iter(runner({INPUT_NAME: x}).values()))


def size_bytes(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _calibration_batches(x, rows=100):
    return [{INPUT_NAME: x[i:i + rows]} for i in range(0, len(x), rows)]


def breakage_table(model_path, images, labels, calibration):
    """Per case: SNR, cosine, top-1 agreement with Keras and top-1 on the labels, and whether
    the current default floor and :data:`PROPOSED` fail it."""
    import keras

    import tfdropblock  # noqa: F401
    from tfdropblock.export import export
    from tfdropblock.export.checks.metrics import output_metrics
    from tfdropblock.export.formats.onnx.quantization import quantize_onnx
    from tfdropblock.export.formats.tflite.quantization import quantize_tflite

    model = keras.models.load_model(model_path)
    expected = _batched(keras_runner(model), images)
    cases = {}
    with tempfile.TemporaryDirectory(prefix="deployment-") as tmp:
        export(model, tmp, formats=("saved_model", "onnx"))
        saved, onnx_path = os.path.join(tmp, "saved_model"), os.path.join(tmp, "model.onnx")
        calibrations = {
            "real training images (as it should be)": calibration,
            "raw 0..255 pixels (ranges 255x too wide)": calibration * 255.0,
            "images 10x too dark (ranges clipped)": calibration / 10.0,
            "one constant grey image": np.full_like(calibration[:100], 0.5),
        }
        for what, data in calibrations.items():
            batches = _calibration_batches(data)
            cases[f"TFLite int8, calibrated on {what}"] = (
                "int8", _batched(kit_runner("tflite", quantize_tflite(saved, "int8", batches)),
                                 images))
            cases[f"ONNX int8, calibrated on {what}"] = (
                "int8", _batched(kit_runner("onnx", quantize_onnx(onnx_path, "int8", batches)),
                                 images))
        for what in ("float16", "dynamic"):
            cases[f"TFLite {what} (as it should be)"] = (
                what, _batched(kit_runner("tflite", quantize_tflite(saved, what)), images))
    for scale in (0.2, 1.0):
        cases[f"float, last conv's kernel + {scale:.0%} noise"] = (
            "int8", _batched(keras_runner(_perturbed(model, scale)), images))
    rows = []
    for what, (mode, logits) in cases.items():
        m = output_metrics(logits, expected)
        rows.append({"case": what, "mode": mode, "snr_db": m["snr_db"], "cosine": m["cosine"],
                     "agreement": m["top1_agreement"],
                     "top1": float(np.mean(np.argmax(logits, 1) == labels)),
                     "keras_top1": float(np.mean(np.argmax(expected, 1) == labels))})
    return rows


def fails(row, floors):
    """Whether ``row`` (a :func:`breakage_table` row) misses ``floors`` (SNR, cosine, top-1)."""
    snr_db, cosine, top1 = floors
    return row["snr_db"] < snr_db or row["cosine"] < cosine or row["agreement"] < top1


def _perturbed(model, scale, seed=0):
    """A copy of ``model`` whose last convolution's kernel has Gaussian noise of ``scale``
    times the kernel's standard deviation added: a corrupted weight, as a bad conversion
    would leave it."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    conv = [layer for layer in clone.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    kernel = conv.kernel.numpy()
    noise = np.random.default_rng(seed).standard_normal(kernel.shape) * kernel.std() * scale
    conv.kernel.assign(kernel + noise.astype(kernel.dtype))
    return clone


def markdown_verify(report):
    """Per format of a ``tfdropblock verify --labels ... --json`` report: status, size,
    parity (max abs and scaled error, or vacuous), for quantized variants SNR, cosine and
    top-1 agreement on the checked batch, and the accuracy check on every labelled row."""
    lines = ["| format | status | size (KiB) | parity max abs error (scaled) | SNR (dB) | cosine "
             "| top-1 agreement | floors (SNR, cosine, top-1) | top-1 (Keras) | agreement with "
             "Keras, all rows |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in report["formats"].items():
        parity = result["checks"].get("parity", {})
        quality = result["checks"].get("quality", {})
        accuracy = result["checks"].get("accuracy", {})
        cells = [result["status"]] + [""] * 9
        size = (result.get("quantization") or {}).get("bytes")
        if size is None and result.get("artifact") and os.path.exists(result["artifact"]):
            size = size_bytes(result["artifact"])
        cells[1] = "" if size is None else f"{size / 1024:.0f}"
        if parity.get("status") == "vacuous":
            cells[2] = "vacuous"
        elif parity.get("max_abs_error") is not None:
            cells[2] = f"{parity['max_abs_error']:.2g} ({parity['max_scaled_error']:.2g})"
        worst = quality.get("worst") or {}
        if worst.get("snr_db") is not None:
            limits = quality["thresholds"]
            cells[3:7] = [f"{worst['snr_db']:.1f}", f"{worst['cosine']:.5f}",
                          f"{100 * worst['top1_agreement']:.2f} %",
                          f"{limits['snr_db']:g}, {limits['cosine']:g}, {limits['top1']:g}"]
        if accuracy.get("top1") is not None:
            cells[7:] = [f"{100 * accuracy['top1']:.2f} ({100 * accuracy['keras_top1']:.2f})",
                         f"{100 * accuracy['agreement']:.2f} %"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_breakage(rows):
    """The breakage table, each row judged by the kit's current default floors, by
    :data:`PROPOSED`, and by the accuracy limit ``verify --labels`` applies to a quantized
    variant by default."""
    import dataclasses

    from tfdropblock.export.checks.metrics import THRESHOLDS
    from tfdropblock.export.run.settings import QUANTIZED_ACCURACY_DROP

    current = {mode: tuple(dataclasses.astuple(t)) for mode, t in THRESHOLDS.items()}

    def judge(row, floors):
        return "**fails**" if fails(row, floors[row["mode"]]) else "passes"

    def limit(row):
        drop = row["keras_top1"] - row["top1"]
        return "**fails**" if drop > QUANTIZED_ACCURACY_DROP + 1e-12 else "passes"

    lines = ["| case | judged as | SNR (dB) | cosine | top-1 agreement | top-1 (Keras) | "
             "current floor | proposed floor | with labels: "
             f"{100 * QUANTIZED_ACCURACY_DROP:g}-point limit |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['mode']} | {r['snr_db']:.1f} | {r['cosine']:.5f} | "
              f"{100 * r['agreement']:.2f} | {100 * r['top1']:.2f} ({100 * r['keras_top1']:.2f})"
              f" | {judge(r, current)} | {judge(r, PROPOSED)} | {limit(r)} |"
              for r in rows]
    return "\n".join(lines)


def _load_npz(folder):
    with np.load(os.path.join(folder, LABELLED)) as f:
        images, labels = f[INPUT_NAME], f[LABELS]
    with np.load(os.path.join(folder, CALIBRATION)) as f:
        calibration = f[INPUT_NAME]
    return images, labels, calibration


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deployment",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="write the NPZ files")
    data.add_argument("out", metavar="DIR")
    data.add_argument("--data", metavar="DIR", default=None, help="Fashion-MNIST folder")
    report = sub.add_parser("report", help="per-format numbers of a verify JSON report")
    report.add_argument("json_report", metavar="VERIFY.json")
    breakage = sub.add_parser("breakage", help="planted breakages against the quality floors")
    breakage.add_argument("model", metavar="MODEL.keras")
    breakage.add_argument("--from", dest="from_json", metavar="FILE", default=None,
                          help="re-judge the rows of an earlier --json instead of measuring")
    breakage.add_argument("--npz", metavar="DIR", default=None,
                          help="folder of `data`'s files")
    breakage.add_argument("--json", metavar="FILE", default=None)
    args = parser.parse_args(argv)
    if args.command == "data":
        from benchmarks.datasets import DataUnavailable

        try:
            write_npz(args.out, args.data)
        except DataUnavailable as error:
            print(error, file=sys.stderr)
            return 2
        return 0
    if args.command == "report":
        with open(args.json_report) as f:
            print(markdown_verify(json.load(f)))
        return 0
    if args.command == "breakage" and args.from_json:
        with open(args.from_json) as f:
            print(markdown_breakage(json.load(f)))
        return 0
    if args.npz is None:
        parser.error(f"{args.command}: --npz DIR is required (the folder `data` wrote)")
    images, labels, calibration = _load_npz(args.npz)
    rows = breakage_table(args.model, images, labels, calibration)
    print(markdown_breakage(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
