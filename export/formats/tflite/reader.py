"""The TFLite graph reader: a bounds-checked walk of the flatbuffer, every subgraph, and
which of its ops are random."""

from __future__ import annotations

import collections
import functools
from pathlib import Path

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.formats.base import read_bytes
from tfdropblock.export.model.graphs import Graph, is_tf_random

_TFLITE_RANDOM = {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"}


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
    OPERATOR_OPCODE_INDEX, OPERATOR_OUTPUTS = 4, 8

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

    def ints(self, table, slot):
        """The values of a vector-of-int32 field (empty if absent)."""
        vector = self._target(table, slot)
        if vector is None:
            return []
        length = self.u32(vector)
        if length > (self.size - vector - 4) // 4 or length > self.elements_left:
            raise _Corrupt(f"vector of {length} ints at offset {vector} runs past the end")
        self.elements_left -= length
        return [self._unpack("<i", vector + 4 + 4 * i, 4) for i in range(length)]

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


@functools.cache
def _builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def builtin_name(code):
    """The name of a TFLite builtin operator code (``BUILTIN_<n>`` for one the schema lacks)."""
    return _builtin_names().get(code, f"BUILTIN_{code}")


def tflite_graph(path_or_bytes):
    """Ops of every subgraph of a .tflite flatbuffer; InputError if it is not a valid one."""
    from ai_edge_litert import schema_py_generated as schema

    buf = read_bytes(path_or_bytes, "a TFLite model")
    where = path_or_bytes if isinstance(path_or_bytes, (str, Path)) else "<bytes>"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier).")
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
                codes.append(builtin_name(code))
        ops, names, flex = collections.Counter(), [], []
        sites = collections.defaultdict(list)
        for s, sub in enumerate(fb.tables(model, fb.MODEL_SUBGRAPHS)):
            name = fb.string(sub, fb.SUBGRAPH_NAME)
            label = f"subgraph {s}" + (f" ({name})" if name else "")
            tensor_names = [fb.string(t, fb.TENSOR_NAME)
                            for t in fb.tables(sub, fb.SUBGRAPH_TENSORS)]
            names.extend((label, name) for name in tensor_names if name)
            for op_table in fb.tables(sub, fb.SUBGRAPH_OPERATORS):
                index = fb.scalar(op_table, fb.OPERATOR_OPCODE_INDEX, "<I", 4)
                if index >= len(codes):
                    raise _Corrupt(f"operator code index {index} of {len(codes)}")
                op = codes[index]
                ops[op] += 1
                if op.startswith("Flex"):
                    flex.append(op)
                if op.startswith("Flex") or is_tflite_random(op):
                    # An operator has no name of its own: its output tensors' carry the scope.
                    outputs = [tensor_names[i] for i in fb.ints(op_table, fb.OPERATOR_OUTPUTS)
                               if 0 <= i < len(tensor_names) and tensor_names[i]]
                    sites[op].append(f"{label}: output {outputs[0]!r}" if outputs else label)
    except _Corrupt as e:
        raise InputError(f"{where}: corrupted TFLite flatbuffer ({e}).") from None
    return Graph("tflite", ops, names, flex_ops=sorted(set(flex)), entry="all subgraphs",
                 sites=dict(sites),
                 is_random=is_tflite_random, flex_finding=(
                     "Flex op {op}", "needs the TensorFlow Flex delegate, which LiteRT's builtin "
                                     "runtime lacks"))


def is_tflite_random(op):
    """A TFLite random builtin, or a Flex op wrapping a TensorFlow random op."""
    return op in _TFLITE_RANDOM or (op.startswith("Flex") and is_tf_random(op[4:]))


def _tflite_model(buf):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)


def _ints(values):
    return () if values is None else (int(v) for v in values)


def _name(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""
