"""Atomic writes: a failed or interrupted run never replaces an existing output or leaves
temporary files; faults in one format do not stop the others (in-process raise)."""

import pytest

from tfdropblock.export import ConversionError, export, verify
from tfdropblock.export.execution.atomic import commit_many, staging_dir
from fault_injection import FAULT_ENV


@pytest.fixture()
def existing_output(tiny_image_model, tmp_path):
    out = tmp_path / "out"
    export(tiny_image_model(), out, formats=("saved_model", "onnx"))
    snapshot = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return out, snapshot


def _unchanged(out, snapshot):
    now = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return now == snapshot


def _litter(root, out):
    return [p.name for p in root.iterdir() if p != out]


def test_failed_export_keeps_the_existing_output(existing_output, tiny_image_model, monkeypatch):
    out, snapshot = existing_output
    monkeypatch.setenv(FAULT_ENV, "onnx:raise")
    with pytest.raises(ConversionError, match="injected fault"):
        export(tiny_image_model(rate=0.4), out, formats=("saved_model", "onnx"))
    assert _unchanged(out, snapshot)
    assert _litter(out.parent, out) == []


def test_interrupted_export_keeps_the_existing_output(existing_output, tiny_image_model):
    out, snapshot = existing_output

    def interrupt(fmt, message):
        if fmt == "onnx" and message == "converting":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(tiny_image_model(rate=0.4), out, formats=("saved_model", "onnx"),
               progress=interrupt)
    assert _unchanged(out, snapshot)
    assert _litter(out.parent, out) == []


def test_successful_export_replaces_the_existing_output(existing_output, tiny_image_model):
    out, snapshot = existing_output
    export(tiny_image_model(rate=0.4), out, formats=("saved_model", "onnx"))
    assert not _unchanged(out, snapshot)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "saved_model"]
    assert _litter(out.parent, out) == []


def test_a_raising_converter_costs_only_its_format(tiny_image_model, monkeypatch, tmp_path):
    monkeypatch.setenv(FAULT_ENV, "tflite:raise")
    report = verify(tiny_image_model(), out_dir=tmp_path / "out")
    assert report.formats["tflite"].status == "error"
    assert "injected fault" in report.formats["tflite"].error
    assert report.formats["saved_model"].ok and report.formats["onnx"].ok
    assert report.exit_code == 3
    # verify --out keeps only what passed.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "saved_model"]


def test_isolated_children_survive_a_crash_when_spawned(tiny_image_model, monkeypatch,
                                                        tmp_path):
    # This process has run TensorFlow ops, so children are fresh interpreters, not forks.
    path = tmp_path / "model.keras"
    tiny_image_model().save(path)
    monkeypatch.setenv(FAULT_ENV, "onnx:crash")
    report = verify(path, formats=("saved_model", "onnx"), isolate=True, timeout=120)
    assert report.settings["isolation"] == "spawn"
    assert report.formats["saved_model"].status == "passed", str(report)
    assert report.formats["onnx"].status == "error"
    assert "SIGSEGV" in report.formats["onnx"].error
    assert report.exit_code == 3


def test_commit_replaces_files_and_directories(tmp_path):
    out = tmp_path / "out"
    (out / "saved_model").mkdir(parents=True)
    (out / "saved_model" / "old").write_text("old")
    (out / "model.onnx").write_text("old")
    with staging_dir(out) as stage:
        (stage / "saved_model").mkdir()
        (stage / "saved_model" / "new").write_text("new")
        (stage / "model.onnx").write_text("new")
        commit_many(out, [(stage / n, n) for n in ("saved_model", "model.onnx")])
    assert sorted(p.name for p in (out / "saved_model").iterdir()) == ["new"]
    assert (out / "model.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "saved_model"]
