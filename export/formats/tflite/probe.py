"""The TFLite probe for ``locate``: LiteRT's intermediate tensors preserved."""

from __future__ import annotations

import numpy as np
from tfdropblock.export.formats.tflite.reader import _ints, _name, _tflite_model
from tfdropblock.export.formats.tflite.runtime import TFLiteRunner



def tflite_probe(model_content):
    """A :class:`~tfdropblock.export.checks.locate.Probe` of the ``serve`` signature: LiteRT (same
    resolver as the parity runner) with every intermediate tensor preserved, each operator's
    outputs in execution order, named by the ops the converter fused into them (``;``)."""
    from tfdropblock.export.checks.locate import Probe

    runner = TFLiteRunner(model_content, preserve_all_tensors=True)
    model = _tflite_model(model_content)
    index = next((int(s.subgraphIndex) for s in model.signatureDefs or []
                  if _name(s.signatureKey) == runner.key), 0)
    graph = model.subgraphs[index]
    tensors = [(int(t), _name(graph.tensors[t].name).split(";"))
               for op in graph.operators for t in _ints(op.outputs) if t >= 0]
    readers = {}
    for op in graph.operators:  # an operator is named by the tensors it writes
        names = [n for t in _ints(op.outputs) if t >= 0
                 for n in _name(graph.tensors[t].name).split(";")]
        for t in _ints(op.inputs):
            readers.setdefault(int(t), []).append(names)
    outputs = {name: int(d["index"]) for name, d in runner.runner.get_output_details().items()}
    keys = [key for key, _ in tensors]

    def run(named_inputs):
        runner(named_inputs)
        return {key: np.array(runner.interpreter.get_tensor(key, index), copy=True)
                for key in keys}

    return Probe("litert (all tensors preserved)", tensors, outputs, run, readers)
