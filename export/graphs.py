"""What each artifact actually contains: the op multiset reachable from its inference entry
point, and the node/tensor names, read from the raw file (never from a runtime, which
optimises ops away and would hide a leak).

* SavedModel: from the signature's outputs backwards through the graph, into every
  function-valued attribute (PartitionedCall ``f``, If/Case branches, While cond/body, ...),
  recursively. ``saved_model_cli scan`` stops at (Stateful)PartitionedCall; this does not.
* TFLite: the flatbuffer, every subgraph (init subgraphs included); opcode =
  max(builtin_code, deprecated_builtin_code), Flex and other custom ops by their custom code.
* ONNX: the graph and every subgraph held in node attributes (If/Loop/Scan), as written by the
  converter.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path

from tfdropblock.export.errors import InputError

# Stateful and stateless TensorFlow random ops, and the RNG state ops they come with.
_TF_RANDOM = re.compile(
    r"Random|^Stateless(TruncatedNormal|Multinomial|ParameterizedTruncatedNormal|Shuffle)"
    r"|^Stateful(Uniform|StandardNormal|TruncatedNormal)|^Rng|Multinomial$"
    r"|^(TruncatedNormal|ParameterizedTruncatedNormal)$")
_TFLITE_RANDOM = {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"}
_ONNX_RANDOM = {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike",
                "Multinomial", "Bernoulli"}

# Without the model only Keras's default DropBlock names can be told apart (drop_block2d,
# drop_block2d_1, plus the _N that tracing appends): a looser pattern also matches model scopes
# such as "resnet50_dropblock_1". Custom layer names are passed explicitly.
DEFAULT_NAME_PATTERN = re.compile(r"drop_block[123]d(_\d+)*", re.IGNORECASE)


@dataclasses.dataclass
class Graph:
    """Ops and names of one artifact. ``ops`` counts op types; ``names`` is (where, name) pairs."""

    format: str
    ops: collections.Counter
    names: list
    flex_ops: list = dataclasses.field(default_factory=list)
    unsupported_ops: list = dataclasses.field(default_factory=list)
    entry: str = ""

    def random_ops(self):
        return sorted(op for op in self.ops if is_random_op(self.format, op))


def is_random_op(fmt, op):
    if fmt == "tflite":
        return op in _TFLITE_RANDOM or (op.startswith("Flex") and bool(_TF_RANDOM.search(op[4:])))
    if fmt == "onnx":
        op_type = op.split(":")[-1]
        return op_type in _ONNX_RANDOM or bool(_TF_RANDOM.search(op_type))
    return bool(_TF_RANDOM.search(op))


def scope_matcher(layer_names=None):
    """Predicate: does a node/tensor name carry one of ``layer_names`` as a name-scope component?

    With no layer names (an artifact made elsewhere), Keras's default DropBlock layer names
    (``drop_block2d``, ``drop_block2d_3``...) are looked for.
    """
    if layer_names:
        alternatives = "|".join(re.escape(n) for n in sorted(set(layer_names), key=len, reverse=True))
        pattern = re.compile(rf"(?:{alternatives})(?:_\d+)*")
    else:
        pattern = DEFAULT_NAME_PATTERN

    def matches(name):
        return any(pattern.fullmatch(part) for part in re.split(r"[/;:,]", name) if part)

    return matches


# -- SavedModel --------------------------------------------------------------------------------

def read_saved_model(path):
    """Parse ``saved_model.pb``; raises InputError for anything that is not a usable SavedModel."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a SavedModel directory.")
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise InputError(f"{path}: not a SavedModel directory (no saved_model.pb).")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception as e:  # protobuf raises DecodeError, or RuntimeWarning-ish errors
        raise InputError(f"{pb}: corrupted SavedModel ({type(e).__name__}: "
                         f"{_one_line(e)}).") from None
    if not proto.meta_graphs:
        raise InputError(f"{pb}: corrupted or empty SavedModel (no meta graph).")
    meta = proto.meta_graphs[0]
    has_vars = any(node.WhichOneof("kind") == "variable"
                   for node in meta.object_graph_def.nodes)
    if has_vars and not (path / "variables" / "variables.index").is_file():
        raise InputError(f"{path}: SavedModel is missing its variables "
                         "(variables/variables.index not found).")
    return meta


def saved_model_graph(path, signature=None):
    """Ops reachable from ``signature`` (default: every signature) of a SavedModel."""
    meta = read_saved_model(path)
    sigs = dict(meta.signature_def)
    if signature is not None:
        if signature not in sigs:
            raise InputError(f"{path}: no signature {signature!r}; has {sorted(sigs)}.")
        sigs = {signature: sigs[signature]}
    if not sigs:
        raise InputError(f"{path}: SavedModel has no serving signature.")
    stack = [t.name for s in sigs.values() for t in s.outputs.values()]
    ops, names = walk_graph_def(meta.graph_def, stack)
    return Graph("saved_model", ops, names, entry=", ".join(sorted(sigs)))


def walk_graph_def(graph_def, outputs=None):
    """(op Counter, (where, name) list) of a GraphDef.

    From ``outputs`` (tensor or node names) backwards through the graph, or every node when
    None; then every function reachable through a function-valued attribute, or called as an op.
    """
    nodes = {n.name: n for n in graph_def.node}
    functions = {f.signature.name: f for f in graph_def.library.function}
    ops, names = collections.Counter(), []
    seen_nodes, seen_funcs = set(), set()
    pending_funcs = []

    def visit_attrs(node):
        if node.op in functions:
            pending_funcs.append(node.op)
        for attr in node.attr.values():
            if attr.HasField("func"):
                pending_funcs.append(attr.func.name)
            if attr.HasField("list"):
                pending_funcs.extend(f.name for f in attr.list.func)

    stack = list(nodes) if outputs is None else list(outputs)
    while stack:
        name = stack.pop().lstrip("^").split(":")[0]
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        ops[node.op] += 1
        names.append(("graph", node.name))
        visit_attrs(node)
        stack.extend(node.input)
    while pending_funcs:
        fname = pending_funcs.pop()
        if fname in seen_funcs or fname not in functions:
            continue
        seen_funcs.add(fname)
        for node in functions[fname].node_def:
            ops[node.op] += 1
            names.append((f"function {fname}", node.name))
            visit_attrs(node)
    return ops, names


def traced_graph(model, signature):
    """Ops of the traced inference function itself, before any converter touches it."""
    concrete = signature.flat_function(model).get_concrete_function()
    ops, names = walk_graph_def(concrete.graph.as_graph_def(add_shapes=False))
    return Graph("saved_model", ops, names, entry="traced model(x, training=False)")


# -- TFLite ------------------------------------------------------------------------------------

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

    buf = _read_bytes(path_or_bytes, "a TFLite model")
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
    return Graph("tflite", ops, names, flex_ops=sorted(set(flex)), entry="all subgraphs")


# -- ONNX --------------------------------------------------------------------------------------

def load_onnx(path_or_proto):
    """An ``onnx.ModelProto`` from a path or a proto; InputError if it is not an ONNX model."""
    import onnx

    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto
    data = _read_bytes(path_or_proto, "an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise InputError(f"{path_or_proto}: corrupted ONNX model ({type(e).__name__}).") from None
    if not model.ir_version or not model.HasField("graph"):
        raise InputError(f"{path_or_proto}: not an ONNX model (no IR version or graph).")
    return model


def onnx_graph(path_or_proto):
    """Ops of the graph and of every subgraph held in node attributes, as written."""
    import onnx

    model = load_onnx(path_or_proto)
    ops, names, unsupported = collections.Counter(), [], []
    opset = {_text(imp.domain): imp.version for imp in model.opset_import}

    def walk(graph, label):
        for init in graph.initializer:
            names.append((label, _text(init.name)))
        for node in graph.node:
            domain, op_type, name = _text(node.domain), _text(node.op_type), _text(node.name)
            key = op_type if domain in ("", "ai.onnx") else f"{domain}:{op_type}"
            ops[key] += 1
            if domain in ("", "ai.onnx") and not onnx.defs.has(op_type, ""):
                unsupported.append(op_type)
            names.append((label, name))
            names.extend((label, _text(out)) for out in node.output if out)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, f"{label}/{name}.{_text(attr.name)}")
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, g in enumerate(attr.graphs):
                        walk(g, f"{label}/{name}.{_text(attr.name)}[{i}]")

    walk(model.graph, "graph")
    graph = Graph("onnx", ops, names, unsupported_ops=sorted(set(unsupported)),
                  entry=f"graph (opset {opset.get('', '?')})")
    return graph


def graph_of(path, fmt=None, signature=None):
    """Dispatch on ``fmt`` (or on the path: a directory is a SavedModel).

    The boundary of the parsers for files from elsewhere: whatever a corrupted file makes a
    parser raise is that file's InputError, never another exception.
    """
    fmt = fmt or detect_format(path)
    try:
        if fmt == "saved_model":
            return saved_model_graph(path, signature)
        if fmt == "tflite":
            return tflite_graph(path)
        if fmt == "onnx":
            return onnx_graph(path)
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"{path}: cannot parse this {fmt} artifact (nested too deeply).") \
            from None
    except MemoryError:
        raise InputError(f"{path}: cannot parse this {fmt} artifact (sizes beyond memory).") \
            from None
    except Exception as e:  # a parser gap: still this file's error, with what went wrong
        raise InputError(f"{path}: cannot parse this {fmt} artifact ({type(e).__name__}: "
                         f"{_one_line(e)}).") from None
    raise InputError(f"Invalid format={fmt!r}: expected one of 'saved_model', 'tflite', 'onnx'.")


def detect_format(path):
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory.")
    if path.is_dir():
        return "saved_model"
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pb" and path.name == "saved_model.pb":
        raise InputError(f"{path}: pass the SavedModel directory, not its saved_model.pb.")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if head[4:8] == b"TFL3":
        return "tflite"
    raise InputError(f"{path}: unknown artifact type: expected a SavedModel directory, a .tflite "
                     "or an .onnx file.")


def _read_bytes(path_or_bytes, kind):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    path = Path(path_or_bytes)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {kind} file.")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if not data:
        raise InputError(f"{path}: empty file, expected {kind}.")
    return data


def _text(value):
    """A proto string field as str: upb hands back bytes for a proto2 string that is not UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _one_line(e):
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else ""
