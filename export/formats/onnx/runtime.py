"""ONNX Runtime: the runners parity and determinism call (optimisations disabled and at
the default level)."""

from __future__ import annotations

from pathlib import Path




def ort_runners(source):
    """ONNX Runtime (CPU) runners at both optimisation levels, from serialised bytes or a path:
    without optimisation the graph runs as written (QDQ pairs included); the default level
    removes Identity/Dropout, folds constants and fuses QDQ into integer kernels, which is what
    a deployment runs."""
    return {"onnxruntime (ORT_DISABLE_ALL)": OrtRunner(source, "disable_all"),
            "onnxruntime (default optimisations)": OrtRunner(source, "default")}


class OrtRunner:
    """ONNX Runtime session on CPU at ``level`` ("disable_all" or "default"), from serialised
    bytes or from a path (needed for a model whose weights are in external data)."""

    def __init__(self, model_bytes, level="default"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if level == "disable_all":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        source = str(model_bytes) if isinstance(model_bytes, (str, Path)) else model_bytes
        self.session = ort.InferenceSession(source, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, named_inputs):
        feed = {i.name: named_inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))
