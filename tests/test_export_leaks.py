"""Planted leaks are flagged in each format they reach; the kit's own exports come out clean.

Every conversion is real (Keras ExportArchive, the TFLite converter, tf2onnx) and every run too
(TF, LiteRT, ONNX Runtime).
"""

import pytest
import tensorflow as tf

import tfdropblock
from conftest import needs_keras_export
from tfdropblock._compat import keras_export_missing, model_export
from tfdropblock.export import ConversionError, assert_folds_away, export, inspect, verify


class IgnoresTraining(tfdropblock.DropBlock2D):
    """Drops at inference too."""

    def call(self, inputs, training=None):
        return self._drop(inputs)


class DiscardedMask(tfdropblock.DropBlock2D):
    """Computes the mask and throws it away: outputs unchanged, only structure can tell."""

    def call(self, inputs, training=None):
        return tf.where(False, self._drop(inputs), inputs)


class StatefulUniform(tfdropblock.DropBlock2D):
    """A dropout mask from the stateful tf.random.uniform, regardless of training."""

    def call(self, inputs, training=None):
        noise = tf.random.uniform(tf.shape(inputs))
        return inputs * tf.cast(noise >= self.rate, inputs.dtype) / (1.0 - self.rate)


class CondOnTraining(tfdropblock.DropBlock2D):
    """Branches in the graph (tf.cond) instead of in Python: both branches get exported."""

    def call(self, inputs, training=None):
        return tf.cond(tf.constant(bool(training)), lambda: self._drop(inputs), lambda: inputs)


LEAKS = {"ignores_training": IgnoresTraining, "discarded_mask": DiscardedMask,
         "stateful_uniform": StatefulUniform, "cond_on_training": CondOnTraining}


# One test per leak, each checking every format: under pytest-xdist a module fixture shared by
# several tests would be converted again on every worker that runs one of them.

@pytest.fixture()
def leak_report(tiny_image_model):
    def report(name):
        result = verify(tiny_image_model(LEAKS[name]))
        assert not result.ok and result.exit_code == 1, str(result)
        # The traced graphs differ, so the identity reference was really exported.
        details = result.formats["saved_model"].checks["structure"].details
        assert details["reference"].startswith("exported"), details["reference"]
        return result
    return report


def _findings(report, fmt, check=None):
    return [str(f) for f in report.formats[fmt].findings if check in (None, f.check)]


def _has(report, fmt, text, check=None):
    return any(text in f for f in _findings(report, fmt, check))


def test_ignoring_training_is_flagged_in_every_format(leak_report):
    report = leak_report("ignores_training")
    for fmt in ("saved_model", "tflite", "onnx"):
        assert report.formats[fmt].status == "failed", (fmt, str(report))
        assert _has(report, fmt, "StatelessRandomUniform", "structure"), fmt
        assert _has(report, fmt, "ignores_training", "structure"), (fmt, "scoped names")
    sm = report.formats["saved_model"]
    assert sm.checks["parity"].ok is False and sm.checks["determinism"].ok is False
    onnx = report.formats["onnx"]
    assert onnx.checks["validity"].ok is False
    assert _has(report, "onnx", "unconverted op StatelessRandomUniform", "structure")
    assert onnx.artifact is None, "an ONNX model with unconverted ops is never kept"


def test_discarded_mask_is_seen_by_structure_only(leak_report):
    report = leak_report("discarded_mask")
    for fmt in ("saved_model", "tflite", "onnx"):
        result = report.formats[fmt]
        assert result.status == "failed", (fmt, str(report))
        assert result.checks["structure"].ok is False, fmt
        assert {f.check for f in result.findings} <= {"structure", "validity"}, fmt
        if fmt != "onnx":  # tf2onnx cannot convert the random op, so ORT cannot run it
            assert result.checks["parity"].ok is True, fmt
            assert result.checks["parity"].details["max_abs_error"] < 1e-5, fmt
            assert result.checks["determinism"].ok is True, fmt
    # The TFLite converter folds the random ops away but keeps the seed generator's variable
    # update, part of it in an init subgraph: all subgraphs must be walked.
    extra = report.formats["tflite"].checks["structure"].details["extra_ops"]
    assert {"VAR_HANDLE", "ASSIGN_VARIABLE"} <= set(extra), extra


def test_stateful_uniform_is_flagged_in_every_format(leak_report):
    report = leak_report("stateful_uniform")
    for fmt, op in (("saved_model", "RandomUniform"), ("tflite", "RANDOM_UNIFORM"),
                    ("onnx", "RandomUniformLike")):
        result = report.formats[fmt]
        assert result.status == "failed", (fmt, str(report))
        assert op in result.checks["structure"].details["random_ops"], fmt
        assert result.checks["determinism"].ok is False, fmt
        assert _has(report, fmt, "stateful_uniform", "structure"), fmt


def test_cond_on_training_is_flagged_where_it_reaches_the_artifact(leak_report):
    report = leak_report("cond_on_training")
    sm = report.formats["saved_model"]
    assert sm.status == "failed"
    extra = sm.checks["structure"].details["extra_ops"]
    assert "If" in extra or "StatelessIf" in extra
    # The random ops exist only in the If's branch functions: those must be walked too.
    assert any("StatelessRandom" in op for op in sm.checks["structure"].details["random_ops"])
    assert sm.checks["parity"].ok is True, "outputs are unchanged: only structure sees it"
    # tf2onnx refuses the branch: reported as the leak, not as a tool failure.
    assert report.formats["onnx"].status == "failed"
    assert _has(report, "onnx", "StatelessRandom", "structure")
    # The TFLite converter constant-folds the cond: the leak does not reach that artifact.
    assert report.formats["tflite"].status == "passed", str(report)


def test_assert_folds_away_lists_the_findings(tiny_image_model):
    with pytest.raises(AssertionError) as info:
        assert_folds_away(tiny_image_model(StatefulUniform), formats=("saved_model",))
    message = str(info.value)
    assert "RandomUniform" in message and "saved_model" in message


def test_export_rejects_onnx_with_unconverted_ops(tiny_image_model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="StatelessRandomUniform"):
        export(tiny_image_model(DiscardedMask), out, formats=("onnx",))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "no staging litter"


# -- Keras 3.15: model.export() traces without training, and Resizing switches DropBlock on ---

@pytest.fixture(scope="module")
def resizing_model(tiny_image_model, context_following_dropblock):
    return tiny_image_model(context_following_dropblock, resizing=True)


@pytest.fixture(scope="module")
def plain_exports(resizing_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    model_export(resizing_model, root / "saved_model", "tf_saved_model")
    if keras_export_missing("onnx") is None:
        model_export(resizing_model, root / "model.onnx", "onnx")
    return root


@pytest.mark.parametrize("name", ["saved_model", pytest.param(
    "model.onnx", marks=needs_keras_export("onnx"))])
def test_inspect_flags_the_resizing_leak_of_model_export(plain_exports, name):
    findings = [str(f) for f in inspect(plain_exports / name)]
    assert any("random op StatelessRandom" in f for f in findings), findings
    assert any("name 'functional" in f and "drop_block2d" in f for f in findings), findings


def test_the_same_model_exported_by_the_kit_is_clean(resizing_model, tmp_path):
    report = verify(resizing_model, out_dir=tmp_path / "out")
    assert report.ok, str(report)
    for name in ("saved_model", "model.tflite", "model.onnx"):
        assert inspect(tmp_path / "out" / name) == [], name
