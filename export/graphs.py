"""What each artifact actually contains: the op multiset reachable from its inference entry
point, and the node/tensor names, read from the raw file (never from a runtime, which
optimises ops away and would hide a leak).

* SavedModel: from the signature's outputs backwards through the graph, into every
  function-valued attribute (PartitionedCall ``f``, If/Case branches, While cond/body, ...),
  recursively. ``saved_model_cli scan`` stops at (Stateful)PartitionedCall; this does not.
* TFLite: the flatbuffer, every subgraph (init subgraphs included); opcode =
  max(builtin_code, deprecated_builtin_code), Flex and other custom ops by their custom code.
* ONNX: the graph, every subgraph held in node attributes (If/Loop/Scan) and every model-local
  function (FunctionProto) a node calls, as written by the converter; Dropout nodes whose
  training_mode is not provably a constant False are hazards.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
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
# Name scopes are "/"-separated; TFLite joins fused ops' names with ";", tensors end in ":0".
_SCOPE_SEPARATORS = re.compile(r"[/;:,]")


@dataclasses.dataclass
class Graph:
    """Ops and names of one artifact. ``ops`` counts op types; ``names`` is (where, name) pairs."""

    format: str
    ops: collections.Counter
    names: list
    flex_ops: list = dataclasses.field(default_factory=list)
    unsupported_ops: list = dataclasses.field(default_factory=list)
    entry: str = ""
    # {op: ["where: node 'name'", ...]} where a reader can say which nodes hold an op: a random
    # op deep in an ONNX local function is useless to a reader told only "somewhere in graph".
    sites: dict = dataclasses.field(default_factory=dict)
    # (what, where, why) of hazards a reader found that are no op type of their own, such as an
    # ONNX Dropout whose training_mode is not a constant False.
    hazards: list = dataclasses.field(default_factory=list)

    def random_ops(self):
        return sorted(op for op in self.ops if is_random_op(self.format, op))

    def where(self, op, limit=3):
        """The entry point, plus the first ``limit`` nodes holding ``op`` when known."""
        sites = self.sites.get(op, [])
        if not sites:
            return self.entry
        more = f" and {len(sites) - limit} more" if len(sites) > limit else ""
        return f"{self.entry}: {'; '.join(sites[:limit])}{more}"


def is_random_op(fmt, op):
    if fmt == "tflite":
        return op in _TFLITE_RANDOM or (op.startswith("Flex") and bool(_TF_RANDOM.search(op[4:])))
    if fmt == "onnx":
        op_type = op.split(":")[-1]
        return op_type in _ONNX_RANDOM or bool(_TF_RANDOM.search(op_type))
    return bool(_TF_RANDOM.search(op))


def scope_matcher(layer_names=None, other_layers=None):
    """Predicate: does a node/tensor name carry one of ``layer_names`` as a name-scope component?

    A layer's scope is one ``/``-separated component of a name, its layer name plus the ``_N``
    suffixes TensorFlow appends when a scope is entered twice in one graph: a DropBlock named
    ``drop`` leaks as ``functional_1/drop_1/mul`` in a SavedModel traced by ExportArchive, so the
    suffix cannot be dropped from the match. It is ambiguous only against other layers whose
    names look like suffixed ones (a Conv2D named ``drop_1`` is ``functional_1/drop_1_2/...``):
    with ``other_layers``, the names of every other layer in the model, a component belongs to
    the longest layer name it extends, and only components that belong to a DropBlock match.

    ``layer_names`` entries are layer names or ``parent/name`` paths (the parent, when given,
    settles two layers sharing a name); :func:`~tfdropblock.export.identity.dropblock_names`
    returns a list that also carries ``dropblock_scopes`` and ``other_scopes``, used when
    ``other_layers`` is not given. With no layer names (an artifact made elsewhere), Keras's
    default DropBlock layer names (``drop_block2d``, ``drop_block2d_3``...) are looked for.
    """
    if not layer_names:
        def matches_default(name):
            return any(DEFAULT_NAME_PATTERN.fullmatch(part)
                       for part in _SCOPE_SEPARATORS.split(name) if part)
        return matches_default

    dropblocks = getattr(layer_names, "dropblock_scopes", None) or [
        _split_scope(n) for n in layer_names]
    if other_layers is None:
        other_layers = getattr(layer_names, "other_scopes", ())
    others = [_split_scope(n) if isinstance(n, str) else tuple(n) for n in other_layers]
    owners = collections.defaultdict(list)  # layer name -> [(parent or None, is DropBlock)]
    for parent, name in dropblocks:
        owners[name].append((parent, True))
    for parent, name in others:
        owners[name].append((parent, False))

    @functools.lru_cache(maxsize=65536)
    def owners_of(component):
        """The layers a component may be a scope of: those of the longest layer name it
        extends, the component itself first, then with one _N suffix less at a time."""
        owner = next((base for base in _scope_bases(component) if base in owners), None)
        return tuple(owners[owner]) if owner is not None else ()

    def is_dropblock(parts, i):
        candidates = owners_of(parts[i])
        if len({kind for _, kind in candidates}) > 1:
            # A DropBlock and another layer share the name (in different sub-models): the
            # enclosing scope tells them apart when it is in the name.
            before = parts[i - 1] if i else None
            candidates = [(p, kind) for p, kind in candidates
                          if p is None or before is None or p in _scope_bases(before)]
        # Still both: the name cannot tell, and the op checks decide instead of a guess.
        return bool(candidates) and all(kind for _, kind in candidates)

    def matches(name):
        parts = [part for part in _SCOPE_SEPARATORS.split(name) if part]
        return any(is_dropblock(parts, i) for i in range(len(parts)))

    return matches


@functools.lru_cache(maxsize=65536)
def _scope_bases(component):
    """``"drop_1_2"`` -> ``("drop_1_2", "drop_1", "drop")``: layer names it may be a scope of."""
    bases = [component]
    while True:
        shorter = re.sub(r"_\d+$", "", bases[-1])
        if shorter == bases[-1] or not shorter:
            return tuple(bases)
        bases.append(shorter)


def _split_scope(path):
    """``"a/b/db"`` -> ``("b", "db")``; a bare name has no known parent."""
    parts = [p for p in str(path).split("/") if p]
    return (parts[-2] if len(parts) > 1 else None), (parts[-1] if parts else str(path))


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
    """Ops of the graph, of every subgraph held in node attributes and of every model-local
    function a node calls (and the functions and subgraphs those hold), as written."""
    model = load_onnx(path_or_proto)
    reader = _OnnxReader(model)
    reader.walk_graph(model.graph, "graph", {}, reader.opset)
    return Graph("onnx", reader.ops, reader.names,
                 unsupported_ops=sorted(set(reader.unsupported)),
                 entry=f"graph (opset {reader.opset.get('', '?')})",
                 sites=dict(reader.sites), hazards=reader.hazards)


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a value comes from, as far as the training-mode check needs: a constant boolean
    scalar (``value``), or anything else, described for the finding."""

    text: str
    value: object = None

    @property
    def key(self):
        return self.value if isinstance(self.value, bool) else "not constant"


_ABSENT = _Source("absent", False)  # an optional input left empty: training_mode defaults False
_DROPOUT_WHY = ("ONNX Dropout draws a random mask unless training_mode is False: inference is "
                "not deterministic (and runtimes fold it only when they can prove it False)")


class _OnnxReader:
    """One pass over an ONNX model: op counts, names, random-op sites, training-mode hazards.

    Each local function's ops and names are counted once (as SavedModel functions are), but
    its body is checked again for each distinct binding of its inputs to constants, since a
    Dropout inside it is in training mode or not depending on what the caller passes.
    """

    def __init__(self, model):
        self.functions = {(_text(f.domain), _text(f.name), _text(f.overload)): f
                          for f in model.functions}
        self.opset = {_text(imp.domain): imp.version for imp in model.opset_import}
        self.ops, self.names, self.unsupported = collections.Counter(), [], []
        self.sites = collections.defaultdict(list)
        self.hazards = []
        self._hazards_seen = set()
        self._counted, self._checked, self._active = set(), set(), set()

    def walk_graph(self, graph, label, outer, opset, count=True):
        # Subgraphs see the names of the graphs that hold them (ONNX outer scope).
        scope = collections.ChainMap({}, outer)
        for init in graph.initializer:
            name = _text(init.name)
            if count:
                self.names.append((label, name))
            scope[name] = _Source(f"initializer {name!r}", _bool_scalar(init))
        for value in graph.input:
            # Also an initializer's name: then the initializer is a default the caller can
            # override, not a constant.
            name = _text(value.name)
            scope[name] = _Source(f"graph input {name!r}" if label == "graph"
                                  else f"input {name!r} of subgraph {label}")
        self.walk_nodes(graph.node, label, scope, opset, count)

    def walk_nodes(self, nodes, label, scope, opset, count):
        import onnx

        for node in nodes:
            domain, op_type, name = _text(node.domain), _text(node.op_type), _text(node.name)
            standard = domain in ("", "ai.onnx")
            key = op_type if standard else f"{domain}:{op_type}"
            function = self.functions.get((domain, op_type, _text(node.overload)))
            if count:
                self.ops[key] += 1
                if standard and function is None and not onnx.defs.has(op_type, ""):
                    self.unsupported.append(op_type)
                self.names.append((label, name))
                self.names.extend((label, _text(out)) for out in node.output if out)
                if is_random_op("onnx", key):
                    self.sites[key].append(f"{label}: node {name!r}")
            if standard and op_type == "Dropout" and function is None:
                self.check_dropout(node, label, scope, opset.get("", opset.get("ai.onnx", 0)))
            for out in node.output:
                if out:
                    scope[_text(out)] = self.output_source(node, standard, op_type, scope)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self.walk_graph(attr.g, f"{label}/{name}.{_text(attr.name)}", scope, opset,
                                    count)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, g in enumerate(attr.graphs):
                        self.walk_graph(g, f"{label}/{name}.{_text(attr.name)}[{i}]", scope,
                                        opset, count)
            if function is not None:
                self.walk_function(function, node, label, scope)

    def walk_function(self, function, node, label, scope):
        fid = (_text(function.domain), _text(function.name), _text(function.overload))
        if fid in self._active:  # a function calling itself: invalid ONNX, and endless
            return
        inputs = [_text(i) for i in node.input]
        binding = {}
        for i, formal in enumerate(function.input):
            actual = inputs[i] if i < len(inputs) else ""
            binding[_text(formal)] = (
                scope.get(actual, _Source(f"{actual!r}, defined nowhere in the caller's scope"))
                if actual else _ABSENT)
        check_key = (fid, tuple(binding[f].key for f in sorted(binding)))
        count = fid not in self._counted
        if not count and check_key in self._checked:
            return
        self._counted.add(fid)
        self._checked.add(check_key)
        own = {_text(imp.domain): imp.version for imp in function.opset_import}
        opset = {**self.opset, **own}
        # The call path: "graph, node 'a' -> function local:F, node 'b' -> function local:G".
        flabel = (f"{label}, node {_text(node.name)!r} -> function {fid[0]}:{fid[1]}"
                  + (f" (overload {fid[2]})" if fid[2] else ""))
        self._active.add(fid)
        try:
            # A function body sees its inputs and nothing of the caller's scope.
            self.walk_nodes(function.node, flabel, dict(binding), opset, count)
        finally:
            self._active.discard(fid)

    @staticmethod
    def output_source(node, standard, op_type, scope):
        name = _text(node.name)
        if standard and op_type == "Constant":
            value = next((a.t for a in node.attribute if _text(a.name) == "value"), None)
            return _Source(f"Constant node {name!r}",
                           None if value is None else _bool_scalar(value))
        if standard and op_type == "Identity" and node.input:
            return scope.get(_text(node.input[0]), _Source(f"output of node {name!r} (Identity)"))
        return _Source(f"output of node {name!r} ({op_type})")

    def check_dropout(self, node, label, scope, version):
        name = _text(node.name)
        if version and version < 7:
            # Dropout-1 and -6 run in training mode unless is_test is set.
            is_test = next((a.i for a in node.attribute if _text(a.name) == "is_test"), 0)
            if not is_test:
                self.add_hazard(node, f"Dropout node {name!r} runs in training mode (opset "
                                      f"{version}, is_test not set)", label)
            return
        mode = _text(node.input[2]) if len(node.input) > 2 else ""
        source = scope.get(mode, _Source(f"{mode!r}, defined nowhere in scope")) if mode \
            else _ABSENT
        if source.value is False:
            return
        shown = f"{source.text} = True" if source.value is True else source.text
        self.add_hazard(node, f"Dropout node {name!r} may run in training mode: training_mode "
                              f"is {shown}, not a constant False", label)

    def add_hazard(self, node, what, where):
        if (id(node), what) not in self._hazards_seen:
            self._hazards_seen.add((id(node), what))
            self.hazards.append((what, where, _DROPOUT_WHY))


def _bool_scalar(tensor):
    """True/False for a one-element BOOL tensor stored in the file, else None (not decoded:
    anything else, external data included, is no constant boolean to this check)."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_type != onnx.TensorProto.BOOL or tensor.data_location == \
            onnx.TensorProto.EXTERNAL:
        return None
    size = 1
    for d in tensor.dims:
        size *= d
    if size != 1:
        return None
    try:
        return bool(numpy_helper.to_array(tensor).reshape(-1)[0])
    except Exception:  # a malformed tensor: not provably False, so flagged
        return None


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
    from tfdropblock.export.loading import check_regular_file

    check_regular_file(path, "a SavedModel directory, a .tflite or an .onnx file")
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
    from tfdropblock.export.loading import check_regular_file

    check_regular_file(path, f"{kind} file")
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
