"""Cells of the keras.applications matrix (benchmarks/applications.py) run through the CLI.

Stock architectures the kit was not written for, with DropBlock inserted by ``add_dropblock``:
the whole matrix and its table are in docs/APPLICATIONS.md; these cells cover the failure modes
the matrix found (captured Normalization constants, constant outputs, an op tf2onnx lacks).
"""

from benchmarks.applications import build, late_block_outputs, run_cell, summarise
from conftest import exact_gelu_lowers_to_erfc


def _statuses(cell):
    assert cell["report"] is not None, cell["stderr"]
    return {fmt: r["status"] for fmt, r in cell["report"]["formats"].items()}


def test_matrix_inserts_dropblock_in_the_late_stages():
    model = build("ResNet50", 64, with_dropblock=False)
    picked = [layer.name for layer in late_block_outputs(model)]
    assert len(picked) == 3
    assert all(name.startswith(("conv4_", "conv5_")) for name in picked), picked


def test_stock_model_with_dropblock_passes_tflite_and_onnx(tmp_path):
    # EfficientNetB0: its Normalization and Rescaling constants are captured by the traced
    # function, which the converters must not turn into graph inputs (the failure mode this
    # cell guards; the matrix in docs/APPLICATIONS.md runs every format).
    cell = run_cell("EfficientNetB0", with_dropblock=True, formats=("tflite", "onnx"),
                    workdir=tmp_path)
    assert cell["dropblock"] == 3
    assert cell["exit"] == 0, (summarise(cell), cell["stderr"])
    assert _statuses(cell) == {"tflite": "passed", "onnx": "passed"}
    report = cell["report"]
    assert len(report["model"]["dropblock_layers"]) == 3
    # The calibrated stock model's outputs vary with the input: parity compared something.
    assert all(r["checks"]["parity"]["status"] == "ok" for r in report["formats"].values())
    # One graph input, as the Keras model has: captured constants must not become inputs.
    assert len(report["model"]["inputs"]) == 1


def test_op_tf2onnx_lacks_is_exit_3_naming_the_op(tmp_path):
    cell = run_cell("ConvNeXtTiny", with_dropblock=True, formats=("onnx",), side=32,
                    workdir=tmp_path)
    assert cell["exit"] == 3, (summarise(cell), cell["stderr"])
    assert _statuses(cell) == {"onnx": "error"}, summarise(cell)
    # TensorFlow 2.16 lowers gelu to Erf, which tf2onnx converts: the depthwise conv's
    # jit_compile call is the op it lacks there.
    lacked = "Erfc" if exact_gelu_lowers_to_erfc() else "StatefulPartitionedCall"
    assert lacked in cell["report"]["formats"]["onnx"]["error"]
