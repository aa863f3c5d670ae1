"""``verify``: export, then prove DropBlock folded away in each format; ``assert_folds_away``."""

from __future__ import annotations

import os

from tfdropblock._compat import keras_export_missing
from tfdropblock.export.run import golden
from tfdropblock.export.execution.atomic import check_output_file
from tfdropblock.export.core.errors import InputError, OutputError
from tfdropblock.export.report.report import build_report
from tfdropblock.export.pipeline.formatcheck import check_each
from tfdropblock.export.formats.quantized import check_quantize
from tfdropblock.export.formats import check_formats
from tfdropblock.export.model.loading import import_modules, load_model
from tfdropblock.export.run.run import Run
from tfdropblock.export.run.registry import FORMATS, accept
from tfdropblock.export.run.settings import (DEFAULT_TIMEOUT, WRITE_POLICIES, Settings,
                                             check_choice, labelled)
from tfdropblock.export.execution import staging
from tfdropblock.export.execution.staging import output_error


# verify's own options, beyond the Settings fields (Settings.keywords) and the formats'
# options (registry.options): {keyword: default}.
OPTIONS = {"out_dir": None, "safe_mode": True, "isolate": False, "timeout": DEFAULT_TIMEOUT,
           "jobs": None, "write": "passed", "imports": (), "load_outputs": None,
           "progress": None}


def verify(model, formats=FORMATS, inputs=None, atol=1e-5, rtol=1e-4, **options):
    """Export ``model`` and check, per format, that DropBlock folds away.

    For each format: **structure** (the op multiset reachable from the inference entry point of
    the raw artifact equals that of the same export with every DropBlock replaced by identity;
    no random op, no Flex op, no name in a DropBlock layer's scope), **validity**
    (``onnx.checker`` full check; the TFLite model loads and runs in LiteRT without default
    delegates; the SavedModel reloads), **parity** with Keras ``training=False`` (SavedModel
    reloaded, LiteRT, ONNX Runtime with ``ORT_DISABLE_ALL`` and default optimisations) at two
    batch sizes, and **determinism** (two runs are bit-identical). Every run also lists the
    model's **training-mode leaks** (``report.training_mode_leaks``, see :mod:`.leaks`):
    layers whose output differs between ``model(x)`` and ``model(x, training=False)``. The
    kit's exports pass ``training=False``, so there they are warnings.

    Every option is a keyword, declared once: :data:`OPTIONS` (how the run is executed), the
    fields of :class:`~tfdropblock.export.run.settings.Settings` (what it checks), and each
    registered format's :class:`~tfdropblock.export.run.registry.Option` (``opset``,
    ``onnx_external_data``, ``tflite_select_tf_ops``, ``int8_io``, and a plugin format's own);
    any other name is an InputError naming the closest one.

    Args:
        model: a ``keras.Model``, or the path of a ``.keras`` file (loaded with ``safe_mode``).
        formats: any of ``"saved_model"``, ``"tflite"``, ``"onnx"``.
        inputs: example inputs (array, list or dict, with a batch axis); default: generated.
        atol, rtol: parity tolerance, ``|got - keras| <= atol + rtol * |keras|``: a float
            for every output, or a dict {output name: float} for those it names, the others
            keeping the default (1e-5, 1e-4) or the dict's ``"*"`` entry
            (``{"*": 1e-4, "probs": 1e-3}``). A name that is not one of the model's outputs
            (as the report's ``model.outputs`` names them) is an InputError.
        input_signature: TensorSpecs, for models whose inputs Keras cannot tell.
        opset: ONNX opset, 13 to 18.
        onnx_external_data: ONNX weights in ``model.onnx.data`` beside ``model.onnx``:
            ``None`` only above the 2 GiB protobuf limit, ``True`` always, ``False`` never.
            Validity and parity then load the model by path, as a user has to.
        out_dir: if given, artifacts are moved there atomically, as ``write`` says:
            ``"passed"`` (each format that passed), ``"all_or_nothing"`` (all, only if every
            format passed) or ``"converted"`` (whatever converted, even if a check failed).
        isolate: run each format in its own process, with ``timeout`` seconds, so that a
            converter crash or hang is that format's error; needs ``model`` to be a path.
        jobs: concurrent processes when isolated (default: one per format, up to the CPUs).
        seed: seed of the generated inputs.
        reference: ``"auto"`` exports the identity reference only when its traced inference
            graph differs from the model's (otherwise the two exports are the same conversion
            of the same graph); ``"export"`` always converts it.
        imports: modules to import first (in the child processes too), e.g. the module that
            registers the model's custom layers.
        quantize: None, or modes (``"float16"``, ``"dynamic"``, ``"int8"``; a tuple or a
            comma-separated string) to also quantize each requested TFLite / ONNX export in:
            each becomes a format of its own (``"tflite:int8"``, artifact
            ``model.int8.tflite``) checked for structure and bit-identity against the identity
            twin quantized the same way, validity, quality (SNR, cosine, top-1 against Keras,
            :data:`~tfdropblock.export.checks.metrics.THRESHOLDS`) and determinism. A mode goes to
            every requested format that has it (TFLite: float16, dynamic, int8; ONNX: dynamic,
            int8); one that none has is an InputError. int8 is calibrated on ``calibration``
            when given, else on ``inputs`` when given, else on generated batches (see
            :mod:`.formats.quantized`).
        int8_io: TFLite int8 with integer inputs and outputs (default: float at the edges).
        labels: an integer class per row of ``inputs`` (an array), or the name of the array
            of ``inputs`` (a dict, as an NPZ loads) that holds them, the others staying the
            model's inputs. Every format, float and quantized, then gets an **accuracy** check
            (``top1``, ``keras_top1``, ``agreement``, ``rows``) over every row, run
            ``batch_size`` rows at a time; the comparisons with Keras and int8 calibration use
            the first batch. The model's output must be class scores (batch, classes).
        max_accuracy_drop: a top-1 more than this (a fraction: 0.02 is two points) below
            Keras's fails the format. Default: quantized variants fail beyond
            :data:`~tfdropblock.export.run.settings.QUANTIZED_ACCURACY_DROP`, float formats'
            accuracy is reported, not judged.
        calibration: int8 calibration inputs, as ``inputs`` takes them (real training
            images, say: never the rows the accuracy is measured on), run ``batch_size`` rows
            at a time; needs an int8 variant in ``quantize``.
        load_outputs: the path of an NPZ that ``save_outputs`` wrote: the run checks on its
            inputs and compares every artifact with its outputs instead of Keras's (see
            :mod:`.golden`). Not with ``inputs`` or ``labels``; a file that does not fit the
            model (input or output names, shapes, dtypes) is an InputError.
        save_outputs: the path to write the inputs the run checked on and the outputs
            compared with (Keras's, or the loaded ones) to, as an NPZ, whole.
        exporter: ``"tfdropblock"`` (the kit's conversion paths) or ``"keras"``: each artifact
            is Keras's own ``model.export(path, format="tf_saved_model" | "litert" | "onnx")``
            (:mod:`.keras_exports`), put through the same checks, plus **training_mode**: a
            training-mode leak fails each format whose Keras exporter calls ``model(x)``
            without ``training`` (SavedModel and ONNX in Keras 3.15). Keras makes float
            artifacts only: with ``quantize`` or ``onnx_external_data=True`` it is an
            InputError; ``opset`` is passed to its ONNX exporter.
        locate: compare every Keras layer's output with the artifact's (see
            :mod:`.locate`) even when parity passes; it is done anyway for a float format
            whose parity fails. The parity check then holds ``layers`` and
            ``first_divergence``.
        progress: optional callable ``progress(format, message)``.
    Returns:
        :class:`Report`.
    Raises:
        InputError: bad arguments or an unloadable model.
        OutputError (an InputError): ``out_dir`` or the work directory cannot be written, or
            the filesystem refused a write (disk full, quota, file-size limit).
    """
    import_modules(options.get("imports", ()))  # first: a module may register a format
    given = accept("verify", options, {**OPTIONS, **Settings.keywords()},
                   named=("formats", "inputs", "atol", "rtol"))
    out_dir, safe_mode, isolate, timeout, jobs, write, imports, load_outputs, progress = (
        given.pop(name) for name in OPTIONS)
    formats = check_formats(formats)
    quantize = given.pop("quantize")  # modes here; Settings.quantize holds the variants
    variants = check_quantize(None if quantize == () else quantize, formats,
                              arg="quantize (--quantize)")
    formats = tuple(dict.fromkeys(formats + variants))
    if load_outputs is not None:
        golden.check_alone(inputs, given["labels"])
    inputs, labels = labelled(inputs, given.pop("labels"), arg="labels (--labels)")
    stored = golden.load(load_outputs) if load_outputs is not None else None
    save_outputs = given.pop("save_outputs")
    if save_outputs is not None:  # fail before converting for minutes, not after
        check_output_file(save_outputs, "save_outputs (--save-outputs)")
        save_outputs = str(save_outputs)
    settings = Settings.make(inputs=inputs, labels=labels, atol=atol, rtol=rtol, golden=stored,
                             save_outputs=save_outputs, quantize=variants, **given)
    check_choice("write", write, WRITE_POLICIES)
    check_keras_formats(settings, formats)
    if isolate:
        from tfdropblock.export.execution.isolation import verify_isolated

        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise InputError("isolate=True needs the model as the path of a .keras file "
                             "(a child process loads it).")
        return verify_isolated(model, formats, settings, out_dir=out_dir, safe_mode=safe_mode,
                               timeout=timeout, jobs=jobs, progress=progress, write=write,
                               imports=imports)
    source = str(model) if isinstance(model, (str, os.PathLike)) else None
    model = load_model(model, safe_mode)  # before any work directory

    def in_process(work):
        run = Run.start(model, work, settings, source=source)
        try:
            results = dict(check_each(run, formats, progress))
        except OutputError as e:
            raise output_error(out_dir, e) from None
        return (build_report(run.model_info(), results, settings),
                {fmt: work / "main" for fmt in formats}, (run.batches, run.expected))

    return staging.verified(out_dir, write, settings, in_process)


def check_keras_formats(settings, formats):
    """InputError for a format Keras has no exporter of, with exporter="keras"."""
    from tfdropblock.export import formats as registry

    if settings.exporter != "keras":
        return
    without = [name for name in formats if registry.keras_exporter(name) is None]
    if without:
        offered = tuple(n for n in registry.names() if registry.keras_exporter(n))
        raise InputError(f"Invalid formats={list(without)} (--formats) with exporter='keras' "
                         f"(--exporter keras): Keras's "
                         f"model.export makes {offered} only.")
    missing = {name: keras_export_missing(registry.keras_exporter(name).keras_format)
               for name in formats}
    missing = {name: why for name, why in missing.items() if why}
    if missing:
        raise InputError(f"Invalid formats={list(missing)} (--formats) with exporter='keras' "
                         f"(--exporter keras): {'; '.join(missing.values())}; "
                         "exporter='tfdropblock' (the default) converts "
                         f"{'them' if len(missing) > 1 else 'it'}.")


def assert_folds_away(model, formats=FORMATS, inputs=None, atol=1e-5, rtol=1e-4, **kwargs):
    """For a pytest suite: raise AssertionError listing every finding unless ``verify`` passes.

    Example:
        >>> def test_model_exports_cleanly():
        ...     assert_folds_away(build_model(), formats=("tflite", "onnx"))
    """
    report = verify(model, formats, inputs, atol, rtol, **kwargs)
    warned = [f"  {fmt}: warning: {w}" for fmt, result in report.formats.items()
              for w in result.warnings]
    if not report.ok:
        lines = [f"DropBlock does not fold away cleanly in {report.model.get('name')!r}:"]
        for fmt, result in report.formats.items():
            if result.error:
                lines.append(f"  {fmt}: error: {result.error}")
            lines.extend(f"  {fmt}: {finding}" for finding in result.findings)
        raise AssertionError("\n".join(lines + warned))
    if warned:
        import warnings

        # Passing, but a check proved nothing (parity on outputs that cannot differ): pytest
        # shows the warning, so the suite does not read the pass as evidence of parity.
        warnings.warn("\n".join([f"verify of {report.model.get('name')!r} passed, but:"]
                                 + warned), VacuousCheckWarning, stacklevel=2)
    return report


class VacuousCheckWarning(UserWarning):
    """``assert_folds_away`` passed, but a check could not have failed on these inputs."""
