"""TFLite (LiteRT): conversion from the exported SavedModel, the flatbuffer reader, a runner.

Converting from the SavedModel (not from concrete functions) is what freezes Keras 3 variables.
Builtin ops only by default: a random op that leaks into the inference graph then fails the
conversion instead of turning silently into Flex ops that most runtimes cannot run.

The reader reads every subgraph (init subgraphs included); opcode =
max(builtin_code, deprecated_builtin_code), Flex and other custom ops by their custom code.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np

from tfdropblock._util import describe_error, one_line
from tfdropblock._files import write_bytes
from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format, read_bytes, register
from tfdropblock.export.formats.saved_model import ENDPOINT
from tfdropblock.export.graphs import Graph, is_tf_random

_UNSUPPORTED = re.compile(r"'tf\.(\w+)' op")
_TFLITE_RANDOM = {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"}


def convert_tflite(saved_model_dir, select_tf_ops=False):
    """Flatbuffer bytes of the SavedModel's ``serve`` signature; ConversionError on failure."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                         signature_keys=[ENDPOINT])
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    try:
        return converter.convert()
    except Exception as e:
        unsupported = sorted(set(_UNSUPPORTED.findall(str(e))))
        if unsupported:
            summary = f"ops not supported by the builtin runtime: {', '.join(unsupported)}"
        else:
            summary = one_line(e) or type(e).__name__
        raise ConversionError(f"TFLite conversion failed: {summary}", format="tflite",
                              unsupported_ops=unsupported) from e


def interpreter(model_content):
    """A LiteRT interpreter without the default XNNPACK delegate, which would replace ops."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_content=model_content, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


class TFLiteRunner:
    """Runs the ``serve`` signature with named inputs (any batch size); named numpy outputs."""

    def __init__(self, model_content):
        self.interpreter = interpreter(model_content)
        signatures = self.interpreter.get_signature_list()
        key = ENDPOINT if ENDPOINT in signatures else next(iter(signatures), None)
        if key is None:
            raise ValueError("TFLite model has no signature.")
        self.runner = self.interpreter.get_signature_runner(key)

    def __call__(self, named_inputs):
        outputs = self.runner(**named_inputs)
        return {k: np.array(v, copy=True) for k, v in outputs.items()}

    def io(self):
        """The signature's inputs and outputs; ``shape_signature`` (-1 for a dynamic dim), not
        ``shape``, which is whatever the last call resized the tensors to."""
        def describe(details):
            return [{"name": name, "dtype": np.dtype(d["dtype"]).name,
                     "shape": [None if int(x) < 0 else int(x)
                               for x in d.get("shape_signature", d["shape"])]}
                    for name, d in details.items()]

        return {"inputs": describe(self.runner.get_input_details()),
                "outputs": describe(self.runner.get_output_details())}


class _Corrupt(Exception):
    """A flatbuffer offset, length or size that the buffer cannot hold."""


class _FlatBuffer:
    """Bounds-checked reads of the few TFLite schema fields that ``tflite_graph`` needs.

    The generated ``schema_py_generated`` reader trusts every offset: Python's ``unpack_from``
    accepts negative offsets (a corrupted vtable then reads from the end of the file), string
    slices past the end are silently truncated, and a corrupted vector length makes the reader
    iterate up to 2**32 elements, each of which may alias the same large string: time and memory
    quadratic in the file size. Here every read is checked against the buffer, and the total of
    vector elements and string bytes read is capped by what a file of this size can hold without
    aliasing (a converter never shares tensors or names between entries).
    """

    # (vtable slot byte offset) of each field read; see tensorflow/compiler/mlir/lite/schema.
    MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS = 6, 8
    OPCODE_DEPRECATED_BUILTIN, OPCODE_CUSTOM, OPCODE_BUILTIN = 4, 6, 10
    SUBGRAPH_TENSORS, SUBGRAPH_OPERATORS, SUBGRAPH_NAME = 4, 10, 12
    TENSOR_NAME = 10
    OPERATOR_OPCODE_INDEX = 4

    def __init__(self, buf):
        import struct

        self.buf = buf
        self.size = len(buf)
        self._struct = struct
        self.elements_left = self.size // 4
        self.string_bytes_left = self.size

    def _unpack(self, fmt, pos, width):
        if pos < 0 or pos + width > self.size:
            raise _Corrupt(f"offset {pos} outside the {self.size}-byte buffer")
        return self._struct.unpack_from(fmt, self.buf, pos)[0]

    def u32(self, pos):
        return self._unpack("<I", pos, 4)

    def _field(self, table, slot):
        """Absolute position of a table field, or None when absent."""
        vtable = table - self._unpack("<i", table, 4)
        vtable_size = self._unpack("<H", vtable, 2)
        if slot + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + slot, 2)
        return table + offset if offset else None

    def root(self):
        return self.u32(0)

    def scalar(self, table, slot, fmt, width, default=0):
        pos = self._field(table, slot)
        return default if pos is None else self._unpack(fmt, pos, width)

    def _target(self, table, slot):
        pos = self._field(table, slot)
        return None if pos is None else pos + self.u32(pos)

    def tables(self, table, slot):
        """Positions of the tables of a vector-of-tables field (empty if absent)."""
        vector = self._target(table, slot)
        if vector is None:
            return []
        length = self.u32(vector)
        if length > (self.size - vector - 4) // 4:
            raise _Corrupt(f"vector of {length} elements at offset {vector} runs past the end")
        if length > self.elements_left:
            raise _Corrupt(f"more table entries than {self.size} bytes can hold (aliased "
                           "entries?)")
        self.elements_left -= length
        return [vector + 4 + 4 * i + self.u32(vector + 4 + 4 * i) for i in range(length)]

    def string(self, table, slot):
        start = self._target(table, slot)
        if start is None:
            return None
        length = self.u32(start)
        if start + 4 + length > self.size:
            raise _Corrupt(f"string of {length} bytes at offset {start} runs past the end")
        if length > self.string_bytes_left:
            raise _Corrupt(f"names total more bytes than the {self.size}-byte file holds "
                           "(aliased strings?)")
        self.string_bytes_left -= length
        return self.buf[start + 4:start + 4 + length].decode("utf-8", "replace")


def tflite_graph(path_or_bytes):
    """Ops of every subgraph of a .tflite flatbuffer; InputError if it is not a valid one."""
    from ai_edge_litert import schema_py_generated as schema

    buf = read_bytes(path_or_bytes, "a TFLite model")
    where = path_or_bytes if isinstance(path_or_bytes, (str, Path)) else "<bytes>"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier).")
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    fb = _FlatBuffer(buf)
    try:
        model = fb.root()
        codes = []
        for oc in fb.tables(model, fb.MODEL_OPERATOR_CODES):
            code = max(fb.scalar(oc, fb.OPCODE_BUILTIN, "<i", 4),
                       fb.scalar(oc, fb.OPCODE_DEPRECATED_BUILTIN, "<b", 1))
            if code == schema.BuiltinOperator.CUSTOM:
                codes.append(fb.string(oc, fb.OPCODE_CUSTOM) or "CUSTOM")
            else:
                codes.append(builtin_names.get(code, f"BUILTIN_{code}"))
        ops, names, flex = collections.Counter(), [], []
        for s, sub in enumerate(fb.tables(model, fb.MODEL_SUBGRAPHS)):
            name = fb.string(sub, fb.SUBGRAPH_NAME)
            label = f"subgraph {s}" + (f" ({name})" if name else "")
            for op_table in fb.tables(sub, fb.SUBGRAPH_OPERATORS):
                index = fb.scalar(op_table, fb.OPERATOR_OPCODE_INDEX, "<I", 4)
                if index >= len(codes):
                    raise _Corrupt(f"operator code index {index} of {len(codes)}")
                op = codes[index]
                ops[op] += 1
                if op.startswith("Flex"):
                    flex.append(op)
            for tensor in fb.tables(sub, fb.SUBGRAPH_TENSORS):
                name = fb.string(tensor, fb.TENSOR_NAME)
                if name:
                    names.append((label, name))
    except _Corrupt as e:
        raise InputError(f"{where}: corrupted TFLite flatbuffer ({e}).") from None
    return Graph("tflite", ops, names, flex_ops=sorted(set(flex)), entry="all subgraphs",
                 is_random=is_tflite_random)


def is_tflite_random(op):
    """A TFLite random builtin, or a Flex op wrapping a TensorFlow random op."""
    return op in _TFLITE_RANDOM or (op.startswith("Flex") and is_tf_random(op[4:]))



class TFLiteFormat(Format):
    name = "tflite"
    artifact = "model.tflite"
    converts_from = "saved_model"
    refused_by = "TFLite converter (builtin ops only)"
    invalid_what = ("the model does not load and run in the LiteRT interpreter (builtin ops, "
                    "no default delegate)")

    def convert(self, session, reference):
        saved = session.get(self.converts_from, reference)
        try:
            content = convert_tflite(saved, session.settings.tflite_select_tf_ops)
        except ConversionError:
            raise
        except Exception as e:
            raise ConversionError(f"TFLite conversion failed: {describe_error(e)}",
                                  format=self.name) from e
        write_bytes(session.path(self.name, reference), content)
        return content

    def read_graph(self, source, signature=None):
        return tflite_graph(source)

    def is_random_op(self, op):
        return is_tflite_random(op)

    def sniff(self, path, head):
        return path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3"

    def conversion(self, artifact, graph, session):
        return {"bytes": len(artifact)}, []

    def runtimes(self, ctx, session, artifact):
        runner = TFLiteRunner(artifact)
        io = runner.io()
        if {t["name"] for t in io["inputs"]} == {t["name"] for t in ctx.io["inputs"]}:
            runner(ctx.batches[0])  # loads is not enough: it must run
        return io, {"interpreter": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}, {"litert": runner}


TFLITE = register(TFLiteFormat())
