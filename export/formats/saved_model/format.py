"""The SavedModel format: :class:`SavedModelFormat`, which the registry holds, put
together from the conversion, reader, runtime and probe modules beside it."""

from __future__ import annotations

from tfdropblock._util import describe_error
from tfdropblock.export.core.errors import ConversionError, InputError
from tfdropblock.export.formats.base import Format
from tfdropblock.export.formats.keras_exports import KerasExporter
from tfdropblock.export.run.registry import register, register_keras_exporter
from tfdropblock.export.model.graphs import is_tf_random
from tfdropblock.export.formats.saved_model.conversion import ENDPOINT, export_saved_model
from tfdropblock.export.formats.saved_model.probe import saved_model_probe
from tfdropblock.export.formats.saved_model.reader import saved_model_graph
from tfdropblock.export.formats.saved_model.runtime import SavedModelRunner


class SavedModelFormat(Format):
    name = "saved_model"
    title = "SavedModel"
    artifact = "saved_model"
    invalid_what = "the SavedModel does not reload"

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
register_keras_exporter(SAVED_MODEL.name, KerasExporter("tf_saved_model"))
