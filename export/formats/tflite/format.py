"""The TFLite format: :class:`TFLiteFormat`, which the registry holds, put together from
the conversion, reader, runtime, probe and quantization modules beside it."""

from __future__ import annotations

from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock._files import write_bytes
from tfdropblock.export.core.errors import ConversionError
from tfdropblock.export.formats.base import Format
from tfdropblock.export.run.registry import Option, check_bool, register
from tfdropblock.export.formats.quantized import register_variants
from tfdropblock.export.core.results import CheckResult, Finding
from tfdropblock.export.formats.tflite.conversion import convert_tflite
from tfdropblock.export.formats.tflite.probe import tflite_probe
from tfdropblock.export.formats.tflite.quantization import (QuantizedTFLiteRunner, TFLITE_MODES,
                                                            _tflite_bytes, compare_tflite,
                                                            float_ops, quantize_tflite)
from tfdropblock.export.formats.tflite.reader import is_tflite_random, tflite_graph
from tfdropblock.export.formats.tflite.runtime import TFLiteRunner


class TFLiteFormat(Format):
    """LiteRT flatbuffers, converted from the SavedModel; quantized as :data:`TFLITE_MODES`."""

    name = "tflite"
    title = "TFLite"
    artifact = "model.tflite"
    converts_from = "saved_model"
    modes = TFLITE_MODES
    options = (
        Option("tflite_select_tf_ops", False, check_bool("tflite_select_tf_ops"),
               help="allow TensorFlow (Flex) ops, which the standard LiteRT runtime refuses"),
        Option("int8_io", False, check_bool("int8_io"), flag="--int8-io", quantized_only=True,
               applies_to="tflite:int8",
               help="TFLite int8 with integer inputs and outputs (default: float)"),
    )
    refused_by = "TFLite converter (builtin ops only)"
    invalid_what = ("the model does not load and run in the LiteRT interpreter (builtin ops, "
                    "no default delegate)")
    keras_format = "litert"
    keras_calls_inference = True  # Keras 3.15's LiteRT exporter passes training=False

    def keras_artifact(self, path):
        return Path(path).read_bytes()

    def convert(self, run, reference):
        saved = run.get(self.converts_from, reference)
        try:
            content = convert_tflite(saved, run.settings.option("tflite_select_tf_ops"))
        except ConversionError:
            raise
        except Exception as e:
            raise ConversionError(f"TFLite conversion failed: {describe_error(e)}") from e
        write_bytes(run.path(self.name, reference), content)
        return content

    def read_graph(self, source, signature=None):
        return tflite_graph(source)

    def is_random_op(self, op):
        return is_tflite_random(op)

    def sniff(self, path, head):
        return path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3"

    def conversion(self, artifact, graph, run):
        return {"bytes": len(artifact)}, []

    def runtimes(self, run, artifact):
        runner = TFLiteRunner(artifact)
        io = runner.io()
        if {t["name"] for t in io["inputs"]} == {t["name"] for t in run.io["inputs"]}:
            runner(run.batches[0])  # loads is not enough: it must run
        return io, {"interpreter": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}, {"litert": runner}

    def probe(self, run, artifact, runtime):
        return tflite_probe(artifact)


    # -- quantized variants ----------------------------------------------------------------

    def quantize(self, run, mode, reference, calibration):
        data = quantize_tflite(run.get("saved_model", reference), mode, calibration,
                               int8_io=run.settings.option("int8_io"))
        write_bytes(run.path(f"{self.name}:{mode}", reference), data)
        return data

    def quantized_runtimes(self, artifact):
        return {"litert": QuantizedTFLiteRunner(artifact)}

    def twin_comparison(self, artifact, twin):
        return compare_tflite(_tflite_bytes(artifact), _tflite_bytes(twin))

    def quantized_checks(self, mode, artifact):
        """int8 only: ``coverage``, the ops still computing in float (a warning when any)."""
        if mode != "int8":
            return {}, []
        floating = float_ops(artifact)
        check = CheckResult(True if not floating else None, {
            "float_ops": floating, "status": "integer" if not floating else "partial"})
        warnings_ = [Finding(
            "coverage", "ops still computing in float: " + ", ".join(
                f"{op} x{n}" for op, n in sorted(floating.items())), self.name,
            "the TFLite quantizer has no int8 version of them; an integer-only "
            "accelerator cannot run this model")] if floating else []
        return {"coverage": check}, warnings_

    def quantization_info(self, run, mode):
        return {"int8_io": run.settings.option("int8_io") if mode == "int8" else None}


TFLITE = register(TFLiteFormat())
register_variants(TFLITE)
