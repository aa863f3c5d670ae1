"""The TFLite format: :class:`TFLiteFormat`, which the registry holds, put together from
the conversion, reader, runtime, probe and quantization modules beside it."""

from __future__ import annotations

from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock._files import write_bytes
from tfdropblock.export.core.errors import ConversionError
from tfdropblock.export.formats.base import Format
from tfdropblock.export.formats.keras_exports import KerasExporter
from tfdropblock.export.formats.quantized import register_quantizer
from tfdropblock.export.run.registry import Option, check_bool, register, register_keras_exporter
from tfdropblock.export.formats.tflite.conversion import convert_tflite
from tfdropblock.export.formats.tflite.probe import tflite_probe
from tfdropblock.export.formats.tflite.quantization import TFLiteQuantizer
from tfdropblock.export.formats.tflite.reader import is_tflite_random, tflite_graph
from tfdropblock.export.formats.tflite.runtime import TFLiteRunner


class TFLiteFormat(Format):
    """LiteRT flatbuffers, converted from the SavedModel."""

    name = "tflite"
    title = "TFLite"
    artifact = "model.tflite"
    converts_from = "saved_model"
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


TFLITE = register(TFLiteFormat())
register_quantizer(TFLITE, TFLiteQuantizer())
# Keras 3.15's LiteRT exporter passes training=False.
register_keras_exporter(TFLITE.name, KerasExporter(
    "litert", calls_inference=True, read=lambda path: Path(path).read_bytes()))
