"""The ONNX format: :class:`OnnxFormat`, which the registry holds, put together from the
conversion, reader, runtime, probe and quantization modules beside it."""

from __future__ import annotations

from tfdropblock.export.core.errors import ConversionError
from tfdropblock.export.formats.base import Format
from tfdropblock.export.formats.keras_exports import KerasExporter
from tfdropblock.export.formats.quantized import register_quantizer
from tfdropblock.export.run.registry import Option, register, register_keras_exporter
from tfdropblock.export.formats.onnx.conversion import (DEFAULT_OPSET, MAX_OPSET, MIN_OPSET,
                                                        ONNX_DATA, blocked_by, check_external_data,
                                                        check_opset, convert_onnx, save_onnx)
from tfdropblock.export.formats.onnx.probe import onnx_probe
from tfdropblock.export.formats.onnx.quantization import OnnxQuantizer
from tfdropblock.export.formats.onnx.reader import _is_random, load_onnx, onnx_graph, onnx_io
from tfdropblock.export.formats.onnx.runtime import ort_runners


class OnnxFormat(Format):
    """ONNX through tf2onnx."""

    name = "onnx"
    title = "ONNX"
    artifact = "model.onnx"
    companions = (ONNX_DATA,)
    options = (
        Option("opset", DEFAULT_OPSET, lambda value: check_opset(value), flag="--opset",
               type=int, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} ({DEFAULT_OPSET})"),
        Option("onnx_external_data", None, lambda value: check_external_data(value),
               flag="--onnx-external-data",
               help="write the ONNX weights to model.onnx.data beside model.onnx (default: only "
                    "for a model over the 2 GiB protobuf limit)"),
    )
    refused_by = "tf2onnx"
    invalid_what = "onnx.checker (full_check) or ONNX Runtime rejects the model"
    def convert(self, run, reference):
        """The raw ModelProto; written to disk only when it holds no unconverted op."""
        settings = run.settings
        proto = convert_onnx(run.model, run.signature, settings.option("opset"),
                             function=run.function(reference))
        if not onnx_graph(proto).unsupported_ops:
            save_onnx(proto, run.path(self.name, reference), settings.option("onnx_external_data"))
        return proto

    def read_graph(self, source, signature=None):
        return onnx_graph(source)

    def is_random_op(self, op):
        return _is_random(op)

    def sniff(self, path, head):
        return path.suffix.lower() == ".onnx"

    def conversion(self, artifact, graph, run):
        """Ops tf2onnx left unconverted fail the conversion; those that are not random ops (a
        converter limit, not a leak) block the format."""
        left = graph.unsupported_ops
        return ({"opset": run.settings.option("opset"), "unconverted_ops": left},
                [op for op in left if not self.is_random_op(op)])

    def blocked_by(self, artifact, ops):
        return blocked_by(artifact, ops)

    def runtimes(self, run, artifact):
        import onnx

        path = run.path(self.name)
        details = {"checker": "full_check", "external_data": (path.parent / ONNX_DATA).exists()}
        io = onnx_io(artifact)
        # What was written is what is checked: by path, which is also the only way the checker
        # and ORT read a model whose weights are in external data.
        source = path if path.exists() else artifact.SerializeToString()
        onnx.checker.check_model(str(path) if path.exists() else artifact, full_check=True)
        return io, details, ort_runners(source)

    def probe(self, run, artifact, runtime):
        level = "disable_all" if "DISABLE_ALL" in runtime else "default"
        return onnx_probe(artifact, level, runtime)

    def exportable(self, run, artifact):
        left = onnx_graph(artifact).unsupported_ops
        if left:
            raise ConversionError(blocked_by(artifact, left))
        # A graph input the model lacks (a captured constant made an input) cannot be fed.
        inputs = [t["name"] for t in onnx_io(artifact)["inputs"]]
        if sorted(inputs) != sorted(run.signature.names):
            raise ConversionError(f"tf2onnx made graph inputs {inputs}, not the model's "
                                  f"{run.signature.names}")


ONNX = register(OnnxFormat())
register_quantizer(ONNX, OnnxQuantizer())
# ONNX Runtime loads Keras's file first: its refusal is what a user of that file meets (Keras
# reported success), and what the validity finding should say.
register_keras_exporter(ONNX.name, KerasExporter(
    "onnx", options=lambda run: {"opset_version": run.settings.option("opset")},
    read=load_onnx, first=lambda run, path: ort_runners(path)))
