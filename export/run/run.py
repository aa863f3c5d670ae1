"""One export or verification run of one model: the run object every format works on.

A :class:`Run` holds the model, its signature and settings and the work directory, converts
the model (and its identity reference, see :mod:`.identity`) to each format lazily, once, and
caches each artifact, so formats share work: a format converted from another's artifact
(TFLite from the SavedModel) reuses it, the traced inference function is traced once (the
identity-reference test, the ONNX conversion and the leak classification all read it), and the
reference is exported the same way as the model, or not at all when its traced graph is the
model's. A verification first calls :meth:`Run.choose_inputs`: the inputs every format is
checked on and Keras's outputs on them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfdropblock._util import describe_error
from tfdropblock.export.core.errors import InputError
from tfdropblock.export.model.loading import load_model
from tfdropblock.export.run import inputs
from tfdropblock.export.run import tolerance
from tfdropblock.export.run.calibration import of_run as choose_calibration
from tfdropblock.export.run import registry
from tfdropblock.export.model.tf_graph import traced_graph
from tfdropblock.export.model.identity import dropblock_names, dropblocks_as_identity
from tfdropblock.export.model.leaks import training_mode_leaks
from tfdropblock.export.run.settings import Settings
from tfdropblock.export.model.signature import Signature, named_outputs


class Run:
    """One model's run under ``settings`` in ``workdir``: a
    :class:`~tfdropblock.export.run.view.FormatRun`, what every format is given.

    ``calibration``: int8 calibration batches and how they were made, ``(batches, how)``; None
    makes them when first needed (see :func:`.calibration.of_run`).
    """

    @classmethod
    def start(cls, model, workdir, settings, safe_mode=True, source=None):
        """The one way a verification builds its run, in-process and in every isolated child:
        ``model`` (a ``keras.Model``, the path of a ``.keras`` file, or None for
        ``tfdropblock.models.default_model()``) loaded, then :meth:`choose_inputs`. ``source``:
        where a ``keras.Model`` came from, for the report."""
        if model is None:
            source, model = DEFAULT_MODEL, default_model()
        else:
            source = str(model) if isinstance(model, (str, os.PathLike)) else source
            model = load_model(model, safe_mode)
        return cls(model, workdir, settings, source=source).choose_inputs()

    def __init__(self, model, workdir, settings=None, *, source=None, calibration=None):
        self.model = model
        self.settings = settings if settings is not None else Settings()
        # Who makes the artifacts, decided once: Keras's model.export, or the kit's paths.
        self.keras_exporter = self.settings.exporter == "keras"
        self.workdir = Path(workdir)
        self.source = source
        self.signature = Signature.from_model(model, self.settings.input_signature,
                                              self.settings.inputs)
        self.layer_names = dropblock_names(model)
        self.calibration = calibration
        # Set by choose_inputs: the inputs, Keras's outputs on them, their I/O description,
        # and the distribution of generated inputs (None for the user's).
        self.batches = self.expected = self.io = self.generated = None
        # Set by choose_inputs when labels are given: the labelled rows in batches, the name
        # of the class score output and Keras's top class per row.
        self.label_batches = self.scores = self.keras_top = None
        # Set by choose_inputs: the layers that run in training mode under model(x).
        self.training_mode_leaks = self.leak_check_error = None
        self._cache = {}
        self._functions = {}
        self._graphs = {}
        self._reference_is_main = None
        self.reference_how = None

    @property
    def atol(self):
        return self.settings.atol

    @property
    def rtol(self):
        return self.settings.rtol

    @property
    def compared_with(self):
        """What the artifacts' outputs are compared with, as findings name it."""
        if self.settings.golden is not None:
            return f"the stored outputs ({self.settings.golden.path})"
        return "Keras (training=False)"

    # -- what verification compares with -------------------------------------------------------

    def choose_inputs(self):
        """Pick the inputs every format is checked on and compute Keras's outputs on them.

        The user's inputs when given; the stored ones with their stored outputs, in place of
        Keras's, with ``load_outputs`` (:mod:`.golden`); else generated ones, from the first
        distribution on which no output's comparison is degenerate (or parity would compare
        nothing). Tolerances that name an output the model lacks are an InputError here,
        before any conversion.
        """
        settings, signature = self.settings, self.signature
        if settings.labels is not None:
            # Every labelled row is run, batch by batch; the comparisons with Keras use the
            # first batch (and its first row), as they use a user's inputs.
            named, size = signature.name_inputs(settings.inputs), settings.batch_size
            self.label_batches = [{k: a[i:i + size] for k, a in named.items()}
                                  for i in range(0, len(settings.labels), size)]
            self.batches = signature.batches(self.label_batches[0], settings.seed)
            self.expected = [self.keras(b) for b in self.batches]
            self.scores = inputs.class_scores(self.expected[0], settings.labels)
            self.keras_top = self.top_classes(self.keras)
        elif settings.inputs is not None:
            self.batches = signature.batches(settings.inputs, settings.seed)
            self.expected = [self.keras(b) for b in self.batches]
        elif settings.golden is not None:
            self.batches, self.expected = settings.golden.fitted(signature, self.keras)
        else:
            def judge(batches):
                expected = [self.keras(b) for b in batches]
                return len(inputs.degenerate_outputs(batches, expected, settings.atol,
                                                     settings.rtol)), expected

            self.batches, self.generated, self.expected = signature.generated_batches(
                settings.seed, judge)
        for name in ("atol", "rtol"):
            tolerance.check_names(name, getattr(settings, name), list(self.expected[0]))
        self.io = inputs.keras_io(signature, self.batches, self.expected)
        if settings.calibration is not None:
            # Checked here, before any conversion, so that a file that does not fit is bad
            # usage, not an int8 variant's error.
            choose_calibration(self)
        first = self.batches[0]
        try:
            self.training_mode_leaks = training_mode_leaks(
                self.model, signature.pack([first[n] for n in signature.names]))
        except Exception as e:  # a model that runs only with training=False is not a failure
            self.leak_check_error = describe_error(e)
        return self

    def top_classes(self, runner):
        """The top class per labelled row of ``runner`` (named inputs to named outputs), run
        one batch at a time."""
        return np.concatenate([inputs.top_classes(runner(b)[self.scores])
                               for b in self.label_batches])

    def keras(self, named):
        return keras_outputs(self.model, self.signature, named)

    def model_info(self):
        return {"name": self.model.name, "source": self.source,
                "dropblock_layers": self.layer_names,
                "has_dropblock": bool(self.layer_names),
                "inputs": self.signature.describe(),
                "outputs": list(self.expected[0]),
                "batch_sizes": [len(next(iter(b.values()))) for b in self.batches],
                "generated_inputs": self.generated,
                "training_mode_leaks": self.training_mode_leaks,
                **({"training_mode_leak_check_error": self.leak_check_error}
                   if self.leak_check_error else {})}

    # -- conversions, each once ----------------------------------------------------------------

    @property
    def has_dropblock(self):
        return bool(self.layer_names)

    def function(self, reference=False):
        """The traced inference function (a ``tf.function`` of the flat inputs), one per side.
        The reference's is traced with the DropBlocks as identities. With Keras's exporter it
        calls the model without ``training``, as ``model.export`` traces it, so that the
        reference test and the leak classification see what Keras exports."""
        if reference not in self._functions:
            self._functions[reference] = self.signature.flat_function(
                self.model, training=None if self.keras_exporter else False)
        return self._functions[reference]

    def traced_graph(self, reference=False):
        """The ops of :meth:`function`, before any converter touches it."""
        if reference not in self._graphs:
            if reference:
                with dropblocks_as_identity(self.model):
                    self._graphs[reference] = traced_graph(self.function(True), self._called)
            else:
                self._graphs[reference] = traced_graph(self.function(False), self._called)
        return self._graphs[reference]

    @property
    def _called(self):
        return "model(x)" if self.keras_exporter else "model(x, training=False)"

    def reference_is_main(self):
        """Whether the identity reference's exports are, by construction, the model's own.

        Without DropBlock layers they trivially are. In ``"auto"`` mode the two inference
        functions are traced (cheap) and their op multisets compared, functions included: when
        equal, the converters receive the same graph and the reference export is the model's
        export, so converting it again would only double the cost. When they differ (a leak),
        the reference is exported for real. ``"export"`` mode always exports it.
        """
        if self._reference_is_main is None:
            if not self.has_dropblock:
                self._reference_is_main, self.reference_how = True, "model has no DropBlock"
            elif self.settings.reference == "export":
                self._reference_is_main, self.reference_how = False, "exported"
            else:
                same = self.traced_graph(False).ops == self.traced_graph(True).ops
                self._reference_is_main = same
                self.reference_how = ("traced inference graphs identical: the model's export "
                                      "is the reference's" if same else
                                      "exported (traced inference graphs differ)")
        return self._reference_is_main

    def path(self, fmt, reference=False):
        directory = self.workdir / ("reference" if reference else "main")
        directory.mkdir(parents=True, exist_ok=True)
        return directory / registry.get(fmt).artifact

    def get(self, fmt, reference=False):
        """Format ``fmt``'s artifact (as its :meth:`Format.convert` returns it), converted once;
        ``reference``: the identity reference's (the model's own when they are the same)."""
        if reference and self.reference_is_main():
            reference = False
        key = (fmt, reference)
        if key not in self._cache:
            spec = registry.get(fmt)
            if self.keras_exporter:
                exporter = registry.keras_exporter(fmt)

                def convert(run, reference):
                    return exporter.convert(spec, run, reference)
            else:
                convert = spec.convert
            if reference:
                with dropblocks_as_identity(self.model):
                    self._cache[key] = convert(self, True)
            else:
                self._cache[key] = convert(self, False)
        return self._cache[key]

    def artifact(self, fmt):
        """Convert ``fmt`` for export: ConversionError if it cannot make a valid artifact."""
        registry.get(fmt).exportable(self, self.get(fmt))
        return self.path(fmt)


DEFAULT_MODEL = "tfdropblock.models.default_model()"


def default_model():
    """``tfdropblock.models.default_model()``, imported only when needed."""
    try:
        from tfdropblock.models import default_model as build
    except ImportError:
        raise InputError("No model given and tfdropblock.models.default_model() is not "
                         "available: pass a MODEL.keras path.") from None
    return build()


def keras_outputs(model, signature, named):
    """Keras's outputs (``training=False``) on named inputs, named as the artifacts' are."""
    outputs = model(signature.pack([named[n] for n in signature.names]), training=False)
    return {k: np.asarray(v) for k, v in named_outputs(outputs).items()}
