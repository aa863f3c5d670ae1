"""The formats' registry and their options: what a run may ask for.

A format module registers its :class:`~tfdropblock.export.formats.base.Format` here
(:func:`register`); the run, the pipeline, ``inspect`` and the isolated runner's grouping read
it (:func:`get`, :func:`names`, :func:`groups`). Each format declares its options once, as
:class:`Option` (its ``verify``/``export`` keyword, default, check and CLI flag);
:class:`~tfdropblock.export.run.settings.Settings` validates them and the CLI makes an argument
group of them. The built-in formats register when ``tfdropblock.export.formats`` is imported,
which every entry point (``verify``, ``export``, ``inspect``, the CLI) does first.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Callable

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.model.loading import check_regular_file

# The built-in formats, in the order they are converted and reported.
FORMATS = ("saved_model", "tflite", "onnx")

_REGISTRY = {}
_KERAS_EXPORTERS = {}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a format, as polygraphy gives each backend its argument group.

    ``name`` is the keyword of ``verify``/``export`` and the key in ``Settings.options`` and in
    the report's ``settings``; ``check`` returns the value validated (InputError naming it)
    and normalised; ``flag`` is the CLI flag (None: library only), a switch when
    ``default`` is a bool or None, else typed by ``type``."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str = ""
    flag: str | None = None
    type: Callable[[str], Any] | None = None
    quantized_only: bool = False  # an option of the quantized variants: reported when quantizing
    # The variant ("tflite:int8") the option means something for: set otherwise, an InputError.
    applies_to: str | None = None


def check_bool(name):
    """The ``check`` of a True/False option ``name``."""
    def check(value):
        if not isinstance(value, bool):
            raise InputError(f"Invalid {name}={value!r}: expected True or False.")
        return value

    return check


def accept(caller, given, own, named=()):
    """The keyword options ``given`` to ``caller`` (``"verify"``, ``"export"``), with ``own``'s
    defaults ({name: default}: the caller's declared options) filled in: InputError for a name
    that is neither the caller's nor a registered format's option, naming the closest one
    (among them and the caller's ``named`` parameters)."""
    known = [*own, *options()]
    unknown = [name for name in given if name not in known]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, [*named, *known], n=1)
        raise InputError(f"Invalid option {name}={given[name]!r} of {caller}()"
                         + (f": did you mean {close[0]}=?" if close else "")
                         + f" Its options are {', '.join(known)}.")
    return {**own, **given}


def options():
    """{name: Option} of every registered format's options, in registration order."""
    return {option.name: option for name in names() for option in _REGISTRY[name].options}


def register(fmt):
    """Add ``fmt`` (a :class:`Format` instance) to the registry, replacing one of its name."""
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister(name):
    """Remove format ``name`` (and its Keras exporter, nothing else) from the registry."""
    _REGISTRY.pop(name, None)
    _KERAS_EXPORTERS.pop(name, None)


def register_keras_exporter(name, exporter):
    """Make ``exporter`` (a :class:`~tfdropblock.export.formats.keras_exports.KerasExporter`)
    what ``exporter="keras"`` converts format ``name`` with."""
    _KERAS_EXPORTERS[name] = exporter
    return exporter


def keras_exporter(name):
    """The Keras exporter registered for format ``name``, or None when Keras has none."""
    return _KERAS_EXPORTERS.get(name)


def get(name):
    """The registered format ``name``; InputError for an unknown one."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"Invalid format={name!r}: expected one of {names()}.") from None


def names():
    """The registered formats' names: the float formats in registration order, then the
    quantized variants in theirs."""
    return tuple(sorted(_REGISTRY, key=lambda name: _REGISTRY[name].mode is not None))


def check_formats(formats):
    """Normalise ``formats`` (a name, comma-separated names, or an iterable) to a tuple of
    registered format names."""
    items = [formats] if isinstance(formats, str) else formats
    try:
        asked = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    except TypeError:
        asked = None
    if not asked or any(n not in _REGISTRY for n in asked):
        raise InputError(f"Invalid formats={formats!r}: expected one or more of "
                         f"{names()}.")
    return tuple(dict.fromkeys(asked))


def detect(path):
    """The format of the artifact at ``path`` (InputError if none recognises it)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory.")
    directory = path.is_dir()
    head = b""
    for fmt in _REGISTRY.values():  # by name first: reading a file may block (a FIFO)
        if fmt.sniff(path, head):
            return fmt.name
    if not directory:
        check_regular_file(path, "a SavedModel directory, a .tflite or an .onnx file")
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror}).") from None
        for fmt in _REGISTRY.values():
            if fmt.sniff(path, head):
                return fmt.name
    raise InputError(f"{path}: unknown artifact type: expected a SavedModel directory, a .tflite "
                     "or an .onnx file.")


def groups(formats):
    """Formats grouped per child process: a format converted from another's artifact (TFLite
    from the SavedModel) shares that format's process, and its conversion, when both are asked
    for. Shared groups come first (they take longest), each in the order asked. Each format
    still reports on its own, and if a child dies the rest of its group restarts in a fresh
    one."""
    formats = list(formats)

    def root(name):
        while get(name).converts_from in formats:
            name = get(name).converts_from
        return name

    by_root = {}
    for name in formats:
        by_root.setdefault(root(name), []).append(name)
    return sorted(by_root.values(), key=lambda group: len(group) == 1)
