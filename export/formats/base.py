"""What a format is: :class:`Format`, the small description a format gives of itself.

A format says what the kit needs to know of one artifact format and nothing of how it is
checked: its file name and companion files, how a run converts to it (and from which other
format's artifact), how its graph is read from the raw artifact, which of its ops are random,
how files of it are recognised, how its runtimes load and run it, and optionally a probe of
its intermediate tensors (``locate``) and extra checks of its own. What else a format offers is
its own small object, registered beside it: its quantized modes (a
:class:`~tfdropblock.export.formats.quantized.Quantizer`) and its Keras exporter (a
:class:`~tfdropblock.export.formats.keras_exports.KerasExporter`). The check sequence every
format goes through is the pipeline's (:mod:`tfdropblock.export.pipeline.sequence`). Formats
register in :mod:`tfdropblock.export.run.registry`.
"""

from __future__ import annotations

from pathlib import Path

from tfdropblock.export.core.errors import InputError
from tfdropblock.export.model.loading import check_regular_file


def read_bytes(path_or_bytes, kind):
    """The bytes of an in-memory artifact, or of the regular file at a path; InputError for a
    directory, a non-regular file, a missing, unreadable or empty one."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    path = Path(path_or_bytes)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {kind} file.")
    check_regular_file(path, f"{kind} file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if not data:
        raise InputError(f"{path}: empty file, expected {kind}.")
    return data


class Format:
    """One artifact format. Subclasses set the class attributes and implement the four methods
    that raise NotImplementedError (``convert``, ``read_graph``, ``is_random_op``,
    ``runtimes``); the others have defaults that suit a plain format."""

    name: str = ""
    title: str = ""             # how messages name it ("TFLite"); default: its name
    artifact: str = ""          # file (or directory) name the artifact is written as
    companions: tuple = ()      # files that belong to the artifact when present (written first)
    converts_from: str | None = None  # the format whose artifact this one is converted from
    mode: str | None = None     # a quantized variant's mode (formats.quantized); None: float
    options: tuple = ()  # its Option group: what its conversion can be asked
    # Label of a converter that refuses a random op: a conversion failure is then a caught
    # leak when the traced inference function holds random ops. None: never classified so.
    refused_by: str | None = None
    invalid_what: str = "the artifact does not load"  # the validity finding when runtimes fail
    # Checks of its own, run after the common ones: each a FormatCheck (``name``, and a call
    # ``(run, artifact, runners)`` -> ``(CheckResult, findings, warnings)``).
    checks: tuple = ()

    def convert(self, run, reference):
        """Convert ``run.model`` (the identity reference when ``reference``; the run
        has already swapped it in) and write the artifact to ``run.path(name,
        reference)``. Returns the artifact as the other methods take it (a path, bytes, a
        proto). Raises ConversionError for a converter failure."""
        raise NotImplementedError

    def read_graph(self, source, signature=None):
        """The :class:`~tfdropblock.export.model.graphs.Graph` of a raw artifact: a path, or what
        :meth:`convert` returned. InputError when it is not one of this format."""
        raise NotImplementedError

    def is_random_op(self, op):
        """Whether ``op`` (an op type as :meth:`read_graph` counts it) draws random numbers."""
        raise NotImplementedError

    def runtimes(self, run, artifact):
        """Load the artifact: ``(io, details, {label: runner})``. ``io`` is its inputs and
        outputs (``{"inputs": [...], "outputs": [...]}`` of name, dtype, shape), ``details`` the
        validity check's details, each runner a callable from named inputs to named outputs.
        Any exception is the validity finding :attr:`invalid_what`."""
        raise NotImplementedError

    def sniff(self, path, head):
        """Whether ``path`` is an artifact of this format: called with ``head`` empty (decide by
        name, or directory), then with the file's first 8 bytes."""
        return False

    def artifact_graph(self, artifact):
        """The graph the structure check compares: what the inference entry point reaches."""
        return self.read_graph(artifact)

    def conversion(self, artifact, graph, run):
        """``(details, blocked)``: the conversion check's details, and the ops the converter
        left that make the artifact invalid (a converter limit, not a leak). A format whose
        graph has ``unsupported_ops`` fails the conversion check."""
        return {}, []

    def blocked_by(self, artifact, ops):
        """Why the converter left ``ops`` unconverted, one sentence."""
        return f"the {self.name} converter cannot convert {', '.join(ops)}"

    def exportable(self, run, artifact):
        """For ``export``: raise ConversionError unless the artifact can be shipped."""

    def probe(self, run, artifact, runtime):
        """A :class:`~tfdropblock.export.checks.locate.Probe` of the artifact's intermediate tensors
        run as ``runtime`` (a label of :meth:`runtimes`) runs it, for locating the first
        divergent layer; None when the format cannot expose them."""
        return None
