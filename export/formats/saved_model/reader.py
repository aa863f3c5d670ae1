"""The SavedModel graph reader: from the signature's outputs backwards into every function
it calls (``saved_model_cli scan`` stops at PartitionedCall; this does not)."""

from __future__ import annotations

from pathlib import Path

from tfdropblock._util import describe_error
from tfdropblock.export.core.errors import InputError
from tfdropblock.export.model.graphs import Graph
from tfdropblock.export.model.tf_graph import walk_graph_def


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
