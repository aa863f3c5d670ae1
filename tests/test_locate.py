"""Locating the first divergent layer (export/locate.py) on artifacts with a planted fault.

One small model is converted once (session fixture); each planted test perturbs one weight of
``conv_b`` in the converted artifact itself (an ONNX initializer, a TFLite buffer, a variable
of the reloaded SavedModel saved again) and runs the
format's check sequence on that artifact: parity fails, and the kit must blame ``conv_b``, not
the layer before it, nor the one after it, whose output diverges too.
"""

import copy

import numpy as np
import pytest

from tfdropblock.export.pipeline.formatcheck import run_format
from tfdropblock.export.run.run import Run
from tfdropblock.export.run.settings import Settings


@pytest.fixture(scope="session")
def located_run(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_b")(x)
    x = keras.layers.Activation("swish", name="swish_b")(x)  # an IdentityN in TF
    x = keras.layers.Dropout(0.5, name="drop")(x)  # identity at inference: nothing to map
    x = keras.layers.Conv2D(4, 1, name="conv_c")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))
    run = Run(model, tmp_path_factory.mktemp("locate"), Settings(locate=True))
    run.choose_inputs()
    for fmt in ("onnx", "tflite"):
        run.get(fmt)
    return run


def _checked(run, fmt, artifact, workdir):
    """``fmt`` checked on ``artifact`` in place of the run's own conversion (a copy of the run,
    in an empty folder, so that the runtimes load the artifact given, not the file written)."""
    planted = copy.copy(run)
    planted._cache = {**run._cache, (fmt, False): artifact}
    planted.workdir = workdir
    return run_format(planted, fmt)


def _perturbed_onnx(proto, layer):
    import onnx
    from onnx import numpy_helper

    proto = copy.deepcopy(proto)
    conv = next(n for n in proto.graph.node if n.op_type == "Conv" and f"/{layer}" in n.name)
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.checker.check_model(proto)
    return proto


def _perturbed_tflite(content, layer):
    """The flatbuffer with one float of ``layer``'s CONV_2D filter changed in place (same
    size, so every offset stays valid)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    conv_code = [i for i, c in enumerate(model.operatorCodes)
                 if max(c.builtinCode, c.deprecatedBuiltinCode)
                 == schema.BuiltinOperator.CONV_2D]
    op = next(o for o in graph.operators if o.opcodeIndex in conv_code
              and f"/{layer}" in graph.tensors[o.outputs[0]].name.decode())
    data = np.asarray(model.buffers[graph.tensors[op.inputs[1]].buffer].data,
                      np.uint8).tobytes()
    at = content.find(data)
    assert at > 0 and content.find(data, at + 1) < 0, "filter bytes not unique in the file"
    weights = np.frombuffer(data, np.float32).copy()
    weights[0] += 1.0
    return content[:at] + weights.tobytes() + content[at + len(data):]


def _perturbed_saved_model(path, layer, out):
    """The SavedModel reloaded, one float of ``layer``'s kernel changed, saved again to
    ``out`` with its serving signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    kernel = next(v for v in loaded.variables if v.name == f"{layer}/kernel:0")
    kernel.assign_add(np.eye(1, int(np.prod(kernel.shape)), dtype="float32")
                      .reshape(kernel.shape))
    tf.saved_model.save(loaded, str(out), signatures={"serve": loaded.signatures["serve"]})
    return out


def _rows(result):
    return {row["layer"]: row for row in result.checks["parity"].details["layers"]}


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "saved_model"])
def test_a_planted_weight_is_blamed_on_its_layer_not_a_neighbour(located_run, tmp_path, fmt):
    if fmt == "saved_model":
        artifact = _perturbed_saved_model(located_run.get(fmt), "conv_b", tmp_path / "sm")
    else:
        perturb = _perturbed_onnx if fmt == "onnx" else _perturbed_tflite
        artifact = perturb(located_run.get(fmt), "conv_b")
    result = _checked(located_run, fmt, artifact, tmp_path / "run")
    parity = result.checks["parity"]
    assert parity.ok is False, parity.details
    first = parity.details["first_divergence"]
    assert first is not None and first["layer"] == "conv_b", first
    rows = _rows(result)
    # The successor diverges as well (blaming it would be wrong, not vacuous) and the layers
    # before it are within tolerance.
    assert rows["swish_b"]["compared"] and not rows["swish_b"]["within_tolerance"]
    assert rows["relu_a"]["compared"] and rows["relu_a"]["within_tolerance"]
    assert first["tolerance_ratio"] > 1 and first["max_abs_error"] == rows["conv_b"][
        "max_abs_error"]
    assert first["diverging_layers"] >= 4  # conv_b, swish_b, conv_c, gap, dense
    from tfdropblock.export.report.table import divergence_lines

    lines = divergence_lines(fmt, parity)
    assert "first divergence: 'conv_b'" in lines[0], lines
    assert [line.split()[2] for line in lines if line.startswith(f"{fmt}: >")] == ["conv_b"]


def test_the_reloaded_saved_model_matches_keras_layer_by_layer(located_run, tmp_path):
    result = _checked(located_run, "saved_model", located_run.get("saved_model"), tmp_path)
    details = result.checks["parity"].details
    assert details["locate_runtime"] == "saved_model (reloaded, variables frozen)"
    assert details["first_divergence"] is None
    rows = _rows(result)
    assert [name for name, row in rows.items() if not row["compared"]] == ["drop"]
    assert rows["dense"]["tensor"] == "Identity:0"  # the graph output, mapped to its layer


def test_a_clean_artifact_has_no_divergence_and_most_layers_compared(located_run, tmp_path):
    result = _checked(located_run, "onnx", located_run.get("onnx"), tmp_path)
    details = result.checks["parity"].details
    assert result.checks["parity"].ok is True
    assert details["first_divergence"] is None
    assert details["locate_runtime"] == "onnxruntime (ORT_DISABLE_ALL)"
    rows = _rows(result)
    assert list(rows) == ["conv_a", "relu_a", "conv_b", "swish_b", "drop", "conv_c", "gap",
                          "dense"]
    compared = [name for name, row in rows.items() if row["compared"]]
    assert len(compared) >= 6, rows
    assert all(rows[name]["tolerance_ratio"] <= 1 for name in compared)
    # tf2onnx computes the convolutions in NCHW: compared after transposing back.
    assert rows["conv_b"]["transposed"]


def test_a_layer_without_a_tensor_is_not_compared_and_says_why(located_run, tmp_path):
    rows = _rows(_checked(located_run, "tflite", located_run.get("tflite"), tmp_path))
    assert rows["drop"]["compared"] is False
    assert "no tensor of the artifact is named after it" in rows["drop"]["reason"]
    assert rows["drop"]["max_abs_error"] is None
    # TFLite fuses the ReLU into conv_a's CONV_2D: the tensor holds relu_a's output.
    assert rows["conv_a"]["compared"] is False and "relu_a" in rows["conv_a"]["reason"]
    assert rows["relu_a"]["compared"] is True


def test_locate_plot_writes_a_png_and_the_table_shows_the_layers(tmp_path, capsys,
                                                                tiny_image_model):
    from tfdropblock.cli import main

    model, built = tmp_path / "tiny.keras", tiny_image_model(None)
    built.save(model)
    # Keras numbers auto-generated layer names per process: read them off the model.
    names = [layer.name for layer in built.layers if layer.__class__.__name__ != "InputLayer"]
    plot, report = tmp_path / "layers.png", tmp_path / "report.json"
    code = main(["verify", str(model), "--formats", "onnx", "--locate-plot", str(plot),
                 "--json", str(report), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "onnx: layers (onnxruntime (ORT_DISABLE_ALL)): 3 of 3 compared, every one within " \
           "tolerance" in out
    import json

    data = json.loads(report.read_text())
    assert data["schema_version"] == 5 and data["settings"]["locate"] is True
    parity = data["formats"]["onnx"]["checks"]["parity"]
    assert parity["first_divergence"] is None
    assert [r["layer"] for r in parity["layers"]] == names and len(names) == 3, names


def test_locate_plot_without_matplotlib_is_exit_2_before_any_work(tmp_path, capsys,
                                                                  monkeypatch):
    import sys

    from tfdropblock.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code = main(["verify", str(tmp_path / "missing.keras"), "--locate-plot",
                 str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--locate-plot needs matplotlib" in err and "pip install matplotlib==" in err, err


def test_locate_must_be_a_bool():
    from tfdropblock.export.core.errors import InputError

    with pytest.raises(InputError, match=r"Invalid locate='yes': expected True or False"):
        Settings(locate="yes")


def test_each_input_of_a_two_input_saved_model_is_fed_by_name(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    a, b = keras.Input((6, 6, 3), name="a"), keras.Input((6, 6, 3), name="b")
    x = keras.layers.Concatenate(name="cat")([keras.layers.Conv2D(2, 3, name="ca")(a),
                                              keras.layers.Conv2D(2, 3, name="cb")(b)])
    model = keras.Model({"b": b, "a": a}, keras.layers.GlobalAveragePooling2D(name="gap")(x))
    run = Run(model, tmp_path, Settings(locate=True)).choose_inputs()
    details = run_format(run, "saved_model").checks["parity"].details
    assert details["first_divergence"] is None, details["first_divergence"]
    assert [row["layer"] for row in details["layers"] if row["compared"]] == ["ca", "cb", "cat",
                                                                               "gap"]
