"""A format from outside the kit: a second SavedModel writer, registered on import.

``tests/test_toy_format.py`` runs it through ``verify``, the CLI (``--import``), the table and the
JSON report, which shows that adding a format takes a module and a ``register`` call only.
"""

from tfdropblock.export.formats import register
from tfdropblock.export.formats.saved_model.format import SavedModelFormat


class ToySavedModel(SavedModelFormat):
    name = "toy_saved_model"
    title = "toy SavedModel"
    artifact = "toy_saved_model"

    def sniff(self, path, head):
        return False  # a SavedModel directory on disk stays the kit's own saved_model


TOY = register(ToySavedModel())
