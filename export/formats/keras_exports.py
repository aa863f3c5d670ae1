"""The artifacts Keras's own ``model.export`` makes, checked like the kit's (``exporter="keras"``).

A format Keras can export to registers a :class:`KerasExporter` beside it
(``registry.register_keras_exporter``): the ``model.export`` format it corresponds to and how
to read and run what Keras wrote. With ``exporter="keras"`` the run converts with it instead
of the format's ``convert``, and the check sequence loads the artifact through it. What Keras 3.15's exporters do,
which the checks then judge as they find it:

- ``tf_saved_model`` and ``onnx`` trace ``model(x)`` without ``training``: after a layer that
  defaults ``training=True`` (Resizing, CenterCrop) later layers run in training mode (see
  :mod:`.leaks`). The ONNX exporter runs tf2onnx with ``continue_on_error`` and reports
  success for a file ONNX Runtime refuses.
- ``litert`` calls ``model(x, training=False)`` but converts with Flex (select TF) ops allowed,
  so an op with no builtin kernel becomes a Flex op the standard interpreter lacks.

Keras names the artifacts' tensors its own way (ONNX outputs ``Identity:0``...):
:func:`renamed` feeds and reads them under the names the kit's reports use.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tfdropblock._compat import model_export
from tfdropblock._util import describe_error
from tfdropblock.export.core.errors import ConversionError


@dataclasses.dataclass(frozen=True)
class KerasExporter:
    """Keras's own exporter of one format (``model.export(format=keras_format)``).

    ``calls_inference``: whether it calls ``model(x, training=False)``, which a training-mode
    leak (see :mod:`..model.leaks`) does not reach (Keras 3.15's SavedModel and ONNX exporters
    do not); ``options``: run -> the keywords of the format's options it takes; ``read``: the
    path Keras wrote -> the artifact as the format's ``convert`` returns it; ``first``:
    ``(run, path)`` run before the format's runtimes, for the refusal a user of Keras's file
    meets first."""

    keras_format: str
    calls_inference: bool = False
    options: Callable[[Any], dict] = lambda run: {}
    read: Callable[[Any], Any] = lambda path: path
    first: Callable[[Any, Any], None] | None = None

    def convert(self, fmt, run, reference):
        """As ``fmt.convert``, through ``model.export``."""
        path = run.path(fmt.name, reference)
        keras_export(run.model, self.keras_format, path, **self.options(run))
        return self.read(path)

    def runtimes(self, fmt, run, artifact):
        """As ``fmt.runtimes`` for an artifact Keras made: its tensors fed and read under the
        kit's names (:func:`renamed`), and run once, since Keras reports success for files a
        runtime cannot run."""
        if self.first is not None:
            self.first(run, run.path(fmt.name))
        io, details, runners = fmt.runtimes(run, artifact)
        if io is not None:
            io, runners, names = renamed(io, runners, run.signature.names, list(run.expected[0]))
            if names:
                details = {**details, "renamed": names}
        if {t["name"] for t in (io or run.io)["inputs"]} == {t["name"] for t in run.io["inputs"]}:
            next(iter(runners.values()))(run.batches[0])
        return io, details, runners


def keras_export(model, keras_format, path, **kwargs):
    """``model.export(path, format=keras_format, **kwargs)``; ConversionError on failure."""
    try:
        model_export(model, path, keras_format, **kwargs)
    except Exception as e:
        raise ConversionError(f"Keras's model.export(format={keras_format!r}) failed: "
                              f"{describe_error(e, 500)}") from e
    return path


def renamed(io, runners, input_names, output_names):
    """``(io, runners, names)`` with the artifact's tensors under the kit's names.

    Names the artifact shares with the model are kept; otherwise, when the counts agree, the
    artifact's inputs and outputs map in their declared order to ``input_names`` and
    ``output_names`` (the order Keras flattens them in). ``names`` records each renaming
    (``{"inputs": {kit: artifact}, "outputs": {artifact: kit}}``), empty when none was needed;
    an artifact whose counts differ is left as it is, for the I/O check to report."""
    into = _mapping([t["name"] for t in io["inputs"]], list(input_names))
    outputs = _mapping([t["name"] for t in io["outputs"]], flat_order(output_names))
    if into is None or outputs is None or not (into or outputs):
        return io, runners, {}
    inputs = {kit: artifact for artifact, kit in into.items()}
    io = {"inputs": [{**t, "name": into.get(t["name"], t["name"])} for t in io["inputs"]],
          "outputs": [{**t, "name": outputs.get(t["name"], t["name"])} for t in io["outputs"]]}
    runners = {label: _Renamed(runner, inputs, outputs) for label, runner in runners.items()}
    return io, runners, {"inputs": inputs, "outputs": outputs}


def flat_order(output_names):
    """The model's output names in the order Keras's exporters flatten the outputs: as they
    are for ``output_0``, ``output_1``... (a list or a single tensor), sorted for the keys of
    a dict, which ``keras.tree`` flattens in key order."""
    names = list(output_names)
    if names == [f"output_{i}" for i in range(len(names))]:
        return names
    return sorted(names)


def _mapping(artifact, kit):
    """{from: to} renaming ``artifact`` names to ``kit`` ones ({} when they already agree);
    None when no renaming can be told (different counts)."""
    if sorted(artifact) == sorted(kit):
        return {}
    if len(artifact) != len(kit):
        return None
    return {a: k for a, k in zip(artifact, kit) if a != k}


class _Renamed:
    """A runner fed and read under the kit's names: ``inputs`` {kit: artifact name},
    ``outputs`` {artifact: kit name}."""

    def __init__(self, runner, inputs, outputs):
        self.runner, self.inputs, self.outputs = runner, inputs, outputs

    def __call__(self, named_inputs):
        fed = {self.inputs.get(name, name): value for name, value in named_inputs.items()}
        return {self.outputs.get(name, name): value
                for name, value in self.runner(fed).items()}
