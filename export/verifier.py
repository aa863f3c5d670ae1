"""``verify``: export, then prove DropBlock folded away in each format; ``assert_folds_away``."""

from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path

from tfdropblock.export.atomic import commit_many, held_signals, staging_dir, work_dir
from tfdropblock.export.errors import InputError, OutputError
from tfdropblock.export.onnx_export import DEFAULT_OPSET, check_external_data, check_opset
from tfdropblock.export.checks import degenerate_outputs
from tfdropblock.export.formatcheck import Context, keras_outputs, run_format
from tfdropblock.export.loading import check_formats, check_tolerance, load_model
from tfdropblock.export.pipeline import ARTIFACTS, REFERENCE_MODES, Session, commit_plan
from tfdropblock.export.report import FORMATS, PASSED, Report
from tfdropblock.export.signature import Signature

NO_DROPBLOCK_NOTE = ("the model has no DropBlock layer: its structure is compared with itself; "
                     "the random-op, Flex, name, parity and determinism checks still apply")


def verify(model, formats=FORMATS, inputs=None, atol=1e-5, rtol=1e-4, *, input_signature=None,
           opset=DEFAULT_OPSET, out_dir=None, safe_mode=True, isolate=False, timeout=600,
           jobs=None, seed=0, tflite_select_tf_ops=False, onnx_external_data=None,
           write="passed", imports=(), reference="auto", progress=None):
    """Export ``model`` and check, per format, that DropBlock folds away.

    For each format: **structure** (the op multiset reachable from the inference entry point of
    the raw artifact equals that of the same export with every DropBlock replaced by identity;
    no random op, no Flex op, no name in a DropBlock layer's scope), **validity**
    (``onnx.checker`` full check; the TFLite model loads and runs in LiteRT without default
    delegates; the SavedModel reloads), **parity** with Keras ``training=False`` (SavedModel
    reloaded, LiteRT, ONNX Runtime with ``ORT_DISABLE_ALL`` and default optimisations) at two
    batch sizes, and **determinism** (two runs are bit-identical).

    Args:
        model: a ``keras.Model``, or the path of a ``.keras`` file (loaded with ``safe_mode``).
        formats: any of ``"saved_model"``, ``"tflite"``, ``"onnx"``.
        inputs: example inputs (array, list or dict, with a batch axis); default: generated.
        atol, rtol: parity tolerance, ``|got - keras| <= atol + rtol * |keras|``.
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
        progress: optional callable ``progress(format, message)``.
    Returns:
        :class:`Report`.
    Raises:
        InputError: bad arguments or an unloadable model.
        OutputError (an InputError): ``out_dir`` or the work directory cannot be written, or
            the filesystem refused a write (disk full, quota, file-size limit).
    """
    formats = check_formats(formats)
    atol, rtol = check_tolerance("atol", atol), check_tolerance("rtol", rtol)
    check_opset(opset)
    check_external_data(onnx_external_data)
    if write not in WRITE_POLICIES:
        raise InputError(f"Invalid write={write!r}: expected one of {WRITE_POLICIES}.")
    if reference not in REFERENCE_MODES:
        raise InputError(f"Invalid reference={reference!r}: expected one of {REFERENCE_MODES}.")
    options = dict(inputs=inputs, atol=atol, rtol=rtol, input_signature=input_signature,
                   opset=opset, seed=seed, tflite_select_tf_ops=tflite_select_tf_ops,
                   reference=reference, onnx_external_data=onnx_external_data)
    if isolate:
        from tfdropblock.export.isolation import verify_isolated

        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise InputError("isolate=True needs the model as the path of a .keras file "
                             "(a child process loads it).")
        return verify_isolated(model, formats, options, out_dir=out_dir, safe_mode=safe_mode,
                               timeout=timeout, jobs=jobs, progress=progress, write=write,
                               imports=imports)
    import_modules(imports)
    source = str(model) if isinstance(model, (str, os.PathLike)) else None
    model = load_model(model, safe_mode)
    ctx = make_context(model, options, source)
    with _workdir(out_dir) as work:
        session = Session(model, ctx.signature, work, opset, tflite_select_tf_ops, reference,
                          onnx_external_data)
        try:
            results = {fmt: run_format(ctx, session, fmt, progress) for fmt in formats}
        except OutputError as e:
            raise output_error(out_dir, e) from None
        report = build_report(ctx.model_info(), results, options)
        commit_passed(report, {fmt: work / "main" for fmt in formats}, out_dir, write)
    return report


def output_error(out_dir, error):
    """``error`` (a refused write) restated for the user: which destination, and that nothing
    in it changed."""
    where = (f"Cannot write to out_dir={str(Path(out_dir).absolute())!r}" if out_dir is not None
             else "Cannot write the work directory (tempfile.gettempdir(); set TMPDIR)")
    return OutputError(f"{where}: {error}; nothing was written.")


def import_modules(names):
    import importlib

    for name in names or ():
        try:
            importlib.import_module(name)
        except Exception as e:
            raise InputError(f"Cannot import module {name!r}: {type(e).__name__}: {e}") from None


def make_context(model, options, source=None):
    signature = Signature.from_model(model, options.get("input_signature"), options.get("inputs"))
    atol, rtol, seed = options["atol"], options["rtol"], options.get("seed", 0)
    if options.get("inputs") is not None:
        batches = signature.batches(options["inputs"], seed)
        return Context(model, signature, batches, atol, rtol, source)

    # Generated inputs must exercise the model, or parity compares nothing: the first
    # distribution on which no output's comparison is degenerate is used.
    def judge(batches):
        expected = [keras_outputs(model, signature, b) for b in batches]
        return len(degenerate_outputs(batches, expected, atol, rtol)), expected

    batches, distribution, expected = signature.generated_batches(seed, judge)
    return Context(model, signature, batches, atol, rtol, source, expected=expected,
                   generated=distribution)


def build_report(model_info, results, options):
    settings = {k: options[k] for k in ("atol", "rtol", "opset", "seed", "tflite_select_tf_ops",
                                        "reference", "onnx_external_data") if k in options}
    settings["inputs"] = "user" if options.get("inputs") is not None else "generated"
    notes = [] if model_info.get("has_dropblock", True) else [NO_DROPBLOCK_NOTE]
    return Report(model=model_info, formats=results, settings=settings, notes=notes)


WRITE_POLICIES = ("passed", "all_or_nothing", "converted")


def commit_passed(report, staged_dirs, out_dir, write="passed"):
    """Move artifacts to ``out_dir`` according to ``write``.

    ``"passed"``: each format that passed; ``"all_or_nothing"``: every format, only if all
    passed; ``"converted"``: every format that produced an artifact, passed or not.
    ``staged_dirs``: format -> directory holding that format's artifact. Artifacts not kept get
    ``artifact = None`` in the report (their directory is about to be deleted).
    """
    everything_ok = report.ok
    kept = {}
    for fmt, result in report.formats.items():
        keep = bool(result.artifact) and out_dir is not None and (
            write == "converted" or (write == "passed" and result.status == PASSED)
            or (write == "all_or_nothing" and everything_ok))
        if keep:
            kept[fmt] = staged_dirs[fmt]
            result.artifact = str(Path(out_dir).absolute() / ARTIFACTS[fmt])
        else:
            result.artifact = None
    if not kept:
        return []
    # One commit for every format, so that concurrent runs' sets do not interleave.
    items, remove = commit_plan(kept)
    stage = _COMMITTED_WITH.get()
    also = []
    try:
        if stage is not None:
            with held_signals():  # the staged file is either listed here or not made
                also.append(stage(report))
        return commit_many(out_dir, items, remove, also=also)
    except BaseException:
        for tmp, _ in also:
            Path(tmp).unlink(missing_ok=True)
        raise


_COMMITTED_WITH = contextvars.ContextVar("tfdropblock_committed_with", default=None)


@contextlib.contextmanager
def committed_with(stage):
    """Within the body, a ``verify`` that moves artifacts into ``out_dir`` first calls
    ``stage(report)`` (the final report: artifact paths set), which writes a file beside its
    destination and returns ``(temporary, destination)``; that file is renamed into place in
    the same commit as the artifacts, after them. The CLI's ``--json`` report goes this way: a
    report that cannot be written stops the run before any artifact moves, and a run stopped
    before the commit leaves neither. Yields a list that holds ``stage``'s results once used."""
    used = []

    def record(report):
        used.append(stage(report))
        return used[-1]

    token = _COMMITTED_WITH.set(record)
    try:
        yield used
    finally:
        _COMMITTED_WITH.reset(token)


class _workdir:
    """A staging directory on ``out_dir``'s filesystem, or a private temporary directory;
    either way with a UTF-8 path (see :mod:`tfdropblock.export.atomic`)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def __enter__(self):
        self._cm = staging_dir(self.out_dir) if self.out_dir is not None else work_dir()
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


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
