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
        raise InputError(f"{pb}: corrupted SavedModel ({type(e).__name__}: {e}).") from None
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

def tflite_graph(path_or_bytes):
    """Ops of every subgraph of a .tflite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    buf = _read_bytes(path_or_bytes, "a TFLite model")
    where = path_or_bytes if isinstance(path_or_bytes, (str, Path)) else "<bytes>"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier).")
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = schema.Model.GetRootAs(buf, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == schema.BuiltinOperator.CUSTOM:
                custom = oc.CustomCode()
                codes.append(custom.decode("utf-8", "replace") if custom else "CUSTOM")
            else:
                codes.append(builtin_names.get(code, f"BUILTIN_{code}"))
        ops, names, flex = collections.Counter(), [], []
        for s in range(model.SubgraphsLength()):
            sub = model.Subgraphs(s)
            label = f"subgraph {s}" + (f" ({sub.Name().decode('utf-8', 'replace')})"
                                       if sub.Name() else "")
            for o in range(sub.OperatorsLength()):
                op = codes[sub.Operators(o).OpcodeIndex()]
                ops[op] += 1
                if op.startswith("Flex"):
                    flex.append(op)
            for t in range(sub.TensorsLength()):
                name = sub.Tensors(t).Name()
                if name:
                    names.append((label, name.decode("utf-8", "replace")))
    except InputError:
        raise
    except Exception as e:  # out-of-bounds reads of a truncated/corrupted buffer
        raise InputError(f"{where}: corrupted TFLite flatbuffer ({type(e).__name__}: {e}).") from None
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
    opset = {imp.domain or "": imp.version for imp in model.opset_import}

    def walk(graph, label):
        for init in graph.initializer:
            names.append((label, init.name))
        for node in graph.node:
            domain = node.domain or ""
            key = node.op_type if domain in ("", "ai.onnx") else f"{domain}:{node.op_type}"
            ops[key] += 1
            if domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type, ""):
                unsupported.append(node.op_type)
            names.append((label, node.name))
            names.extend((label, out) for out in node.output if out)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, f"{label}/{node.name}.{attr.name}")
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, g in enumerate(attr.graphs):
                        walk(g, f"{label}/{node.name}.{attr.name}[{i}]")

    walk(model.graph, "graph")
    graph = Graph("onnx", ops, names, unsupported_ops=sorted(set(unsupported)),
                  entry=f"graph (opset {opset.get('', '?')})")
    return graph


def graph_of(path, fmt=None, signature=None):
    """Dispatch on ``fmt`` (or on the path: a directory is a SavedModel)."""
    fmt = fmt or detect_format(path)
    if fmt == "saved_model":
        return saved_model_graph(path, signature)
    if fmt == "tflite":
        return tflite_graph(path)
    return onnx_graph(path)


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
