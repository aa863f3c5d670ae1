"""The ONNX graph reader: the graph, every subgraph in node attributes (If/Loop/Scan) and
every model-local function a node calls, as the converter wrote them; a Dropout whose
training_mode is not provably a constant False is a hazard. Also the model's inputs and
outputs as the validity check compares them."""

from __future__ import annotations

import collections
import dataclasses

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.formats.base import read_bytes
from tfdropblock.export.model.graphs import Graph, is_tf_random


def onnx_io(proto):
    """Graph inputs and outputs as ``{"inputs": [...], "outputs": [...]}`` of name, dtype and
    shape (None for a symbolic or unknown dim), the form :func:`checks.io_check` compares."""
    import onnx

    def describe(value):
        tensor = value.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except Exception:
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        shape = ([d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
                 if tensor.HasField("shape") else None)
        return {"name": value.name, "dtype": dtype, "shape": shape}

    initializers = {t.name for t in proto.graph.initializer}
    return {"inputs": [describe(v) for v in proto.graph.input if v.name not in initializers],
            "outputs": [describe(v) for v in proto.graph.output]}


def _graphs(graph):
    """``graph`` and every subgraph its nodes hold in attributes (If/Loop/Scan), recursively."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _nodes(graph):
    for g in _graphs(graph):
        yield from g.node


_ONNX_RANDOM = {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike",
                "Multinomial", "Bernoulli"}


def _is_random(op):
    """An ONNX random op, or a TensorFlow one tf2onnx left unconverted (``domain:op`` too)."""
    op_type = op.split(":")[-1]
    return op_type in _ONNX_RANDOM or is_tf_random(op_type)


def load_onnx(path_or_proto):
    """An ``onnx.ModelProto`` from a path or a proto; InputError if it is not an ONNX model."""
    import onnx

    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto
    data = read_bytes(path_or_proto, "an ONNX model")
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
                 sites=dict(reader.sites), hazards=reader.hazards, is_random=_is_random,
                 unsupported_finding=(
                     "unconverted op {op} in the default ONNX domain",
                     "tf2onnx could not lower it (continue_on_error): the model is invalid"))


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
                if _is_random(key):
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


def _text(value):
    """A proto string field as str: upb hands back bytes for a proto2 string that is not UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def onnx_inputs(proto):
    """``{input name: numpy dtype}`` of an ONNX graph (initializers are not inputs)."""
    import onnx

    initializers = {t.name for t in proto.graph.initializer}
    return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            for v in proto.graph.input if v.name not in initializers}
