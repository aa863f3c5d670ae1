"""The ONNX probe for ``locate``: every node output made a graph output."""

from __future__ import annotations
from tfdropblock.export.formats.onnx.runtime import OrtRunner





def onnx_probe(proto, level, label):
    """A :class:`~tfdropblock.export.checks.locate.Probe` of the main graph: a copy of the model
    with every node output made a graph output (typed by ONNX shape inference where it can), run
    by ONNX Runtime at ``level``. Extra outputs keep ONNX Runtime from fusing the nodes that make
    them, so at the default level the probe can differ from the deployed graph's kernels."""
    import onnx

    from tfdropblock.export.checks.locate import Probe

    probed = onnx.ModelProto()
    probed.CopyFrom(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(probed).graph.value_info
    except Exception:  # shapes only type the extra outputs; ORT infers the rest itself
        inferred = []
    types = {v.name: v for v in inferred}
    present = {o.name for o in probed.graph.output}
    tensors, readers = [], {}
    for node in probed.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append([node.name])
        for out in node.output:
            if not out:
                continue
            tensors.append((out, [node.name]))
            if out not in present:
                probed.graph.output.append(types.get(out) or onnx.ValueInfoProto(name=out))
                present.add(out)
    runner = OrtRunner(probed.SerializeToString(), level)
    return Probe(label, tensors, {o.name: o.name for o in proto.graph.output}, runner, readers)
