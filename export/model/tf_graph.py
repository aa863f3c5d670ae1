"""The ops of a TensorFlow graph: :func:`walk_graph_def` reads a GraphDef from its outputs
backwards, into every function it calls, and :func:`traced_graph` reads the traced inference
function the formats are converted from (before any converter touches it)."""

from __future__ import annotations

import collections

from tfdropblock.export.model.graphs import Graph, is_tf_random


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
