"""The LiteRT interpreter without default delegates, and its runner."""

from __future__ import annotations

import numpy as np

from tfdropblock.export.formats.saved_model.conversion import ENDPOINT

# The TFLite calibrator runs the deprecated tf.lite.Interpreter internally: not ours to fix.
_INTERPRETER_WARNING = r".*tf\.lite\.Interpreter is deprecated.*"


def interpreter(model_content, preserve_all_tensors=False):
    """A LiteRT interpreter without the default XNNPACK delegate, which would replace ops;
    ``preserve_all_tensors`` keeps every intermediate tensor readable after a run (LiteRT
    otherwise reuses their memory)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_content=model_content, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
        experimental_preserve_all_tensors=preserve_all_tensors)


class TFLiteRunner:
    """Runs the ``serve`` signature with named inputs (any batch size); named numpy outputs."""

    def __init__(self, model_content, preserve_all_tensors=False):
        self.interpreter = interpreter(model_content, preserve_all_tensors)
        self.key = None
        signatures = self.interpreter.get_signature_list()
        key = ENDPOINT if ENDPOINT in signatures else next(iter(signatures), None)
        if key is None:
            raise ValueError("TFLite model has no signature.")
        self.key = key
        self.runner = self.interpreter.get_signature_runner(key)

    def __call__(self, named_inputs):
        outputs = self.runner(**named_inputs)
        return {k: np.array(v, copy=True) for k, v in outputs.items()}

    def io(self):
        """The signature's inputs and outputs; ``shape_signature`` (-1 for a dynamic dim), not
        ``shape``, which is whatever the last call resized the tensors to."""
        def describe(details):
            return [{"name": name, "dtype": np.dtype(d["dtype"]).name,
                     "shape": [None if int(x) < 0 else int(x)
                               for x in d.get("shape_signature", d["shape"])]}
                    for name, d in details.items()]

        return {"inputs": describe(self.runner.get_input_details()),
                "outputs": describe(self.runner.get_output_details())}
