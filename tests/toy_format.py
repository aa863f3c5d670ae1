"""A format from outside the kit: a second SavedModel writer, registered on import.

``tests/test_toy_format.py`` runs it through ``verify``, the CLI (``--import``), the table and the
JSON report, which shows that adding a format takes a module and a ``register`` call only. Its
own option, ``toy_note`` (``--toy-note``), reaches it from the library and the CLI alike: the
note is written beside its ``saved_model.pb``.
"""

from tfdropblock.export import InputError
from tfdropblock.export.formats import Option, register
from tfdropblock.export.formats.saved_model.format import SavedModelFormat

NOTE = "NOTE.txt"


def check_note(value):
    if not isinstance(value, str):
        raise InputError(f"Invalid toy_note={value!r}: expected a str.")
    return value


class ToySavedModel(SavedModelFormat):
    name = "toy_saved_model"
    title = "toy SavedModel"
    artifact = "toy_saved_model"
    options = (Option("toy_note", "", check_note, flag="--toy-note", type=str,
                      help="a note the toy format writes beside its saved_model.pb"),)

    def convert(self, run, reference):
        path = super().convert(run, reference)
        note = run.settings.option("toy_note")
        if note:
            (path / NOTE).write_text(note)
        return path

    def sniff(self, path, head):
        return False  # a SavedModel directory on disk stays the kit's own saved_model


TOY = register(ToySavedModel())
