"""The format registry: one object per format that the session, the checks, inspect's
reading and detection and the isolated runner's grouping all read; the validated settings."""

import pytest

from tfdropblock.export import InputError, export, verify
from tfdropblock.export import formats
from tfdropblock.export.run import registry
from tfdropblock.export.formats.tflite.format import TFLiteFormat
from tfdropblock.export.run.settings import Settings


def test_builtin_formats_are_registered_in_order():
    assert formats.names()[:3] == ("saved_model", "tflite", "onnx")
    assert formats.get("tflite").converts_from == "saved_model"
    assert formats.get("onnx").companions == ("model.onnx.data",)
    with pytest.raises(InputError, match="Invalid format='nope'"):
        formats.get("nope")


def test_groups_follow_what_each_format_converts_from():
    assert formats.groups(["saved_model", "tflite", "onnx"]) == [["saved_model", "tflite"],
                                                                 ["onnx"]]
    assert formats.groups(["onnx", "tflite", "saved_model"]) == [["tflite", "saved_model"],
                                                                 ["onnx"]]
    assert formats.groups(["tflite", "onnx"]) == [["tflite"], ["onnx"]]


def test_detect_by_name_then_by_content(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.bin").write_bytes(b"1234TFL3rest")
    (tmp_path / "junk.bin").write_bytes(b"12345678")
    assert formats.detect(tmp_path / "sm") == "saved_model"
    assert formats.detect(tmp_path / "m.onnx") == "onnx"
    assert formats.detect(tmp_path / "m.bin") == "tflite"
    with pytest.raises(InputError, match="unknown artifact type"):
        formats.detect(tmp_path / "junk.bin")


@pytest.mark.parametrize("field, value", [("atol", -1), ("rtol", float("nan")), ("opset", 12),
                                          ("reference", "sometimes"), ("seed", -1),
                                          ("seed", 1.5), ("onnx_external_data", "yes")])
def test_settings_refuse_bad_values(field, value):
    with pytest.raises(InputError, match=f"Invalid {field}="):
        Settings.make(**{field: value})


def test_settings_report():
    assert Settings(atol=1, seed=3).report() == {
        "atol": 1.0, "rtol": 1e-4, "atol_outputs": {}, "rtol_outputs": {}, "opset": 17,
        "seed": 3, "tflite_select_tf_ops": False,
        "reference": "auto", "exporter": "tfdropblock", "locate": False, "onnx_external_data": None, "inputs": "generated"}


class _CopyTFLite(TFLiteFormat):
    """A variant of a format (as a quantized TFLite would be): a name, an artifact, and only
    what differs."""

    name = "tflite_copy"
    artifact = "copy.tflite"


def test_a_registered_variant_is_verified_exported_and_grouped(monkeypatch, tmp_path,
                                                               tiny_image_model):
    monkeypatch.setitem(registry._REGISTRY, _CopyTFLite.name, _CopyTFLite())
    assert formats.groups(["saved_model", "tflite_copy", "onnx"]) == [
        ["saved_model", "tflite_copy"], ["onnx"]]
    model = tiny_image_model()
    report = verify(model, formats=("saved_model", "tflite_copy"), out_dir=tmp_path / "v")
    assert report.ok, str(report)
    assert report.formats["tflite_copy"].artifact == str(tmp_path / "v" / "copy.tflite")
    written = export(model, tmp_path / "e", formats=("tflite_copy",))
    assert written == {"tflite_copy": str(tmp_path / "e" / "copy.tflite")}
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["copy.tflite"]


def test_a_run_and_the_given_slice_are_the_one_format_run(tiny_image_model, tmp_path):
    from tfdropblock.export.pipeline.given import GivenArtifacts
    from tfdropblock.export.run.run import Run
    from tfdropblock.export.run.view import FormatRun

    assert isinstance(Run(tiny_image_model(), tmp_path, Settings()), FormatRun)
    assert isinstance(GivenArtifacts(None, None, [], [], None), FormatRun)
