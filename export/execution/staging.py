"""The one staging and commit flow of ``export``, ``verify`` and the isolated ``verify``.

Every run converts into a :func:`workspace` (a staging directory beside ``out_dir``, or a
private temporary directory when nothing is to be kept), one sub-directory per run, and
ends, when there is an ``out_dir``, with one :func:`commit` of the artifacts it keeps: all of
them for ``export``, those the write policy selects (:func:`select`) for ``verify``. See
:mod:`tfdropblock.export.execution.atomic` for what the renames guarantee.
"""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path

from tfdropblock.export import formats
from tfdropblock._files import held_signals
from tfdropblock.export.execution.atomic import commit_many, staging_dir, work_dir
from tfdropblock.export.core.errors import OutputError
from tfdropblock.export.core.results import PASSED
from tfdropblock.export.run import golden


@contextlib.contextmanager
def workspace(out_dir):
    """A staging directory on ``out_dir``'s filesystem, or a private temporary directory;
    either way with a UTF-8 path (see :mod:`tfdropblock.export.execution.atomic`)."""
    with (staging_dir(out_dir) if out_dir is not None else work_dir()) as path:
        yield path


def output_error(out_dir, error):
    """``error`` (a refused write) restated for the user: which destination, and that nothing
    in it changed."""
    where = (f"Cannot write to out_dir={str(Path(out_dir).absolute())!r}" if out_dir is not None
             else "Cannot write the work directory (tempfile.gettempdir(); set TMPDIR)")
    return OutputError(f"{where}: {error}; nothing was written.")


def destination(out_dir, fmt):
    return str(Path(out_dir).absolute() / formats.get(fmt).artifact)


def commit_plan(staged):
    """``staged``: format -> directory holding its artifact. Returns ``(items, remove)`` for
    :func:`~tfdropblock.export.execution.atomic.commit_many`: each artifact's companion files go in
    before the artifact that refers to them, and a companion the new artifact does not have is
    removed after it (an older ``model.onnx.data`` must not outlive its ``model.onnx``)."""
    items, remove = [], []
    for fmt, directory in staged.items():
        directory, spec = Path(directory), formats.get(fmt)
        for companion in spec.companions:
            if (directory / companion).exists():
                items.append((directory / companion, companion))
            else:
                remove.append(companion)
        items.append((directory / spec.artifact, spec.artifact))
    return items, remove


def select(report, staged_dirs, out_dir, write="passed"):
    """The staged directories of the artifacts to keep, by ``write``: ``"passed"`` each format
    that passed, ``"all_or_nothing"`` every format only if all passed, ``"converted"`` every
    format that produced an artifact. Sets each result's ``artifact`` to its destination, or
    None for one not kept (its directory is about to be deleted)."""
    everything_ok = report.ok
    kept = {}
    for fmt, result in report.formats.items():
        keep = bool(result.artifact) and out_dir is not None and (
            write == "converted" or (write == "passed" and result.status == PASSED)
            or (write == "all_or_nothing" and everything_ok))
        if keep:
            kept[fmt] = staged_dirs[fmt]
            result.artifact = destination(out_dir, fmt)
        else:
            result.artifact = None
    return kept


def commit(out_dir, staged, report=None):
    """Move the artifacts ``staged`` (format -> directory) into ``out_dir``, in one commit so
    that concurrent runs' sets do not interleave; with ``report``, a file staged by
    :func:`committed_with` goes in the same commit, after them. Returns the paths written."""
    if not staged:
        return []
    items, remove = commit_plan(staged)
    stage = _COMMITTED_WITH.get() if report is not None else None
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


def verified(out_dir, write, settings, produce):
    """The one flow of a verification, in-process or isolated: in a :func:`workspace`,
    ``produce(work)`` returns ``(report, {format: staged folder}, compared)``, ``compared``
    being the inputs and the outputs compared with (``(batches, expected)``, None when no
    format got that far); they go to ``settings.save_outputs`` when asked, then the formats
    ``write`` selects are committed to ``out_dir``. Returns the report."""
    with workspace(out_dir) as work:
        report, staged, compared = produce(work)
        if settings.save_outputs and compared is None:
            report.notes.append(f"save_outputs: {settings.save_outputs} not written: no format "
                                "was checked")
        elif settings.save_outputs:
            golden.save(settings.save_outputs, *compared)
        commit_passed(report, staged, out_dir, write)
    return report


def commit_passed(report, staged_dirs, out_dir, write="passed"):
    """:func:`select` then :func:`commit`: what ``verify`` does with its artifacts."""
    return commit(out_dir, select(report, staged_dirs, out_dir, write), report)


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
