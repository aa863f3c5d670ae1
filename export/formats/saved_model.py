"""SavedModel: export through ``keras.export.ExportArchive``, its graph reader, its runner.

``model.export()`` traces ``model.__call__`` without ``training``; in Keras 3.15 a layer that
defaults ``training=True`` (Resizing, CenterCrop, Random*) then switches every later layer to
training mode. The endpoint here passes ``training=False`` explicitly, which removes that leak.

The graph reader walks from the signature's outputs backwards through the graph, into every
function-valued attribute (PartitionedCall ``f``, If/Case branches, While cond/body, ...),
recursively. ``saved_model_cli scan`` stops at (Stateful)PartitionedCall; this does not.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np

from tfdropblock._compat import write_out
from tfdropblock._util import describe_error
from tfdropblock.export.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format, register
from tfdropblock.export.graphs import Graph, is_tf_random

ENDPOINT = "serve"


def export_saved_model(model, path, signature, function=None):
    """Write ``model(inputs, training=False)`` as a SavedModel at ``path`` (which must not exist).

    ``function``: the traced inference function (:meth:`Signature.flat_function`) to serve, so
    that it is not traced again; default: ``signature``'s endpoint, traced here.
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    if function is not None:
        function.get_concrete_function()  # traced: ExportArchive takes it as it is
        archive.add_endpoint(ENDPOINT, function)
    else:
        fn, input_signature = signature.endpoint(model)
        archive.add_endpoint(ENDPOINT, fn, input_signature=input_signature)
    write_out(archive, path)
    return path


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
        raise InputError(f"{pb}: corrupted SavedModel ({describe_error(e, 300)}).") from None
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
    ops, names, sites = walk_graph_def(meta.graph_def, stack)
    return Graph("saved_model", ops, names, entry=", ".join(sorted(sigs)), sites=sites)


def walk_graph_def(graph_def, outputs=None):
    """(op Counter, (where, name) list, {random op: [site]}) of a GraphDef.

    From ``outputs`` (tensor or node names) backwards through the graph, or every node when
    None; then every function reachable through a function-valued attribute, or called as an op.
    """
    nodes = {n.name: n for n in graph_def.node}
    functions = {f.signature.name: f for f in graph_def.library.function}
    ops, names, sites = collections.Counter(), [], collections.defaultdict(list)
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
        if is_tf_random(node.op):
            sites[node.op].append(f"graph: node {node.name!r}")
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
            if is_tf_random(node.op):
                sites[node.op].append(f"function {fname}: node {node.name!r}")
            visit_attrs(node)
    return ops, names, dict(sites)


def traced_graph(function, called="model(x, training=False)"):
    """Ops of a traced inference function itself (a ``tf.function`` with an input signature,
    :meth:`Signature.flat_function`), before any converter touches it; ``called``: how it
    calls the model, for the findings."""
    concrete = function.get_concrete_function()
    ops, names, sites = walk_graph_def(concrete.graph.as_graph_def(add_shapes=False))
    return Graph("saved_model", ops, names, entry=f"traced {called}", sites=sites)



class SavedModelRunner:
    """Calls the reloaded ``serve`` signature with named inputs; returns named numpy outputs."""

    def __init__(self, path, endpoint=ENDPOINT):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(path))
        if endpoint not in self.loaded.signatures:
            raise ValueError(f"SavedModel has no signature {endpoint!r}; "
                             f"has {sorted(self.loaded.signatures)}.")
        self.fn = self.loaded.signatures[endpoint]

    def __call__(self, named_inputs):
        outputs = self.fn(**named_inputs)
        return {k: np.asarray(v) for k, v in outputs.items()}

    def io(self):
        """The signature's inputs and outputs (name, dtype, shape with None for unknown dims)."""
        import tensorflow as tf

        args, kwargs = self.fn.structured_input_signature
        inputs = {**{getattr(s, "name", None) or f"arg_{i}": s
                     for i, s in enumerate(tf.nest.flatten(args))}, **kwargs}
        return {"inputs": [_spec(name, s) for name, s in inputs.items()],
                "outputs": [_spec(name, s) for name, s in self.fn.structured_outputs.items()]}


# The reloaded serving function calls the traced one through a call op (a SavedModel saved
# again nests one more); inlined, the traced function's ops are named under them.
_CALL_SCOPES = re.compile(r"^((Stateful)?PartitionedCall(_\d+)?/)+")


def saved_model_probe(path, endpoint=ENDPOINT):
    """A :class:`~tfdropblock.export.locate.Probe` of the reloaded SavedModel's ``endpoint``:
    its graph as read back from the artifact, with the function it calls inlined and its
    variables frozen to the values saved (TensorFlow's own freezing, as tf2onnx does), every
    op output fetched; run by TensorFlow as the reloaded signature is."""
    import tensorflow as tf

    from tfdropblock._compat import freeze_concrete_function
    from tfdropblock.export.locate import Probe

    runner = SavedModelRunner(path, endpoint)  # held: its variables must outlive the freezing
    fn = runner.fn
    frozen = freeze_concrete_function(fn)
    graph_def = frozen.graph.as_graph_def()
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    # Each input by its placeholder's name, which is the signature's argument name; the order
    # of the frozen function's inputs need not be the signature's.
    _, kwargs = fn.structured_input_signature
    by_placeholder = {t.name.split(":")[0]: t.name for t in frozen.inputs}
    feeds = {name: graph.get_tensor_by_name(by_placeholder[spec.name or name])
             for name, spec in kwargs.items()}
    # A signature returns a dict, flattened in sorted key order.
    outputs = dict(zip(sorted(fn.structured_outputs), (t.name for t in frozen.outputs)))
    tensors = [(t.name, [_CALL_SCOPES.sub("", node.name)])
               for node in graph_def.node if node.op != "Const"  # weights: not outputs
               for t in graph.get_operation_by_name(node.name).outputs
               if t.dtype.is_floating or t.dtype.is_integer or t.dtype == tf.bool]
    readers = {}
    for node in graph_def.node:
        for name in node.input:
            if not name.startswith("^"):  # a control input reads no value
                key = name if ":" in name else f"{name}:0"
                readers.setdefault(key, []).append([_CALL_SCOPES.sub("", node.name)])
    fetch = [graph.get_tensor_by_name(key) for key, _ in tensors]
    pruned = wrapped.prune(list(feeds.values()), fetch)
    keys = [key for key, _ in tensors]

    def run(named_inputs):
        values = pruned(*(tf.constant(named_inputs[n]) for n in feeds))
        return {key: np.asarray(v) for key, v in zip(keys, values)}

    return Probe("saved_model (reloaded, variables frozen)", tensors, outputs, run, readers)


def _spec(name, spec):
    shape = None if spec.shape.rank is None else [
        None if d is None else int(d) for d in spec.shape.as_list()]
    return {"name": str(name), "dtype": spec.dtype.name, "shape": shape}


class SavedModelFormat(Format):
    name = "saved_model"
    title = "SavedModel"
    artifact = "saved_model"
    invalid_what = "the SavedModel does not reload"
    keras_format = "tf_saved_model"

    def convert(self, run, reference):
        path = run.path(self.name, reference)
        try:
            return export_saved_model(run.model, path, run.signature,
                                      run.function(reference))
        except Exception as e:
            raise ConversionError(f"SavedModel export failed: {describe_error(e)}") from e

    def read_graph(self, source, signature=None):
        return saved_model_graph(source, signature)

    def artifact_graph(self, artifact):
        return saved_model_graph(artifact, ENDPOINT)

    def is_random_op(self, op):
        return is_tf_random(op)

    def sniff(self, path, head):
        if path.is_dir():
            return True
        if path.name == "saved_model.pb":
            raise InputError(f"{path}: pass the SavedModel directory, not its saved_model.pb.")
        return False

    def runtimes(self, run, artifact):
        runner = SavedModelRunner(artifact)
        return runner.io(), {"reloaded": True}, {"saved_model (reloaded)": runner}

    def probe(self, run, artifact, runtime):
        return saved_model_probe(artifact)


SAVED_MODEL = register(SavedModelFormat())
