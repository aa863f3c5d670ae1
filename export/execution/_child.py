"""One isolated child of the verifier, and the messages it sends its parent.

``python -m tfdropblock.export.execution._child JOB.pickle FD`` (a spawned child) or
:func:`child_main` (a forked one) loads the model, converts and checks its formats and reports
each on a pipe, as the message types below. The job file is written by the parent into its own
private work directory; it is not an input from anyone else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
from typing import Any

from tfdropblock._util import describe_error


@dataclasses.dataclass(frozen=True)
class Job:
    """What a child is to do: its formats of one model, in its own work directory."""

    model: str | None          # a .keras path; None: tfdropblock.models.default_model()
    formats: tuple
    settings: Any              # tfdropblock.export.run.settings.Settings
    safe_mode: bool
    work: str
    log: str
    imports: tuple = ()
    parent: int | None = None


@dataclasses.dataclass(frozen=True)
class Progress:
    format: str
    message: str


@dataclasses.dataclass(frozen=True)
class Done:
    """One format verified: its FormatResult as a dict, the model's info, its staged folder;
    and, when the run saves them (``save_outputs``), the inputs it checked on and the outputs
    it compared with, ``(batches, outputs)``."""

    format: str
    result: dict
    model: dict
    staged: str
    compared: Any = None


INPUT, OUTPUT, ERROR = "input_error", "output_error", "error"


@dataclasses.dataclass(frozen=True)
class Failed:
    """The child's remaining formats cannot be checked: ``kind`` is :data:`INPUT` (the model
    cannot be loaded or run: the run's usage error), :data:`OUTPUT` (a write was refused: the
    run's output error) or :data:`ERROR` (this child's formats' error)."""

    kind: str
    message: str


def child_main(conn, job):
    """Entry point of a child: load the model, convert and check its formats, report each."""
    # Stopping is the parent's decision: it ends the child's group (SIGINT from a terminal
    # reaches only the parent's group now), and the child dies with the parent even if that
    # is killed outright, so no converter outlives the run and writes into a removed folder.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _die_with_parent(job.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a forked copy of the CLI's handler
    # Converter chatter (MLIR diagnostics, absl logs) goes to a log file, quoted if we die.
    log = os.open(job.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # The converters' own temporary files (TensorFlow hands TMPDIR paths to C++, which takes
    # only UTF-8) go in the work directory, whose path is UTF-8 and which is removed with
    # the run even when this process is killed.
    tmp = os.path.join(job.work, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = tmp
    try:
        from tfdropblock.export.core.errors import InputError, OutputError
        from tfdropblock.export.pipeline.formatcheck import check_each
        from tfdropblock.export.model.loading import import_modules
        from tfdropblock.export.run.run import Run

        try:
            import_modules(job.imports)
            run = Run.start(job.model, job.work, job.settings, job.safe_mode)
        except InputError as e:
            conn.send(Failed(INPUT, str(e)))
            return
        except Exception as e:
            conn.send(Failed(INPUT, f"the model cannot run in Keras on its inputs: "
                                    f"{describe_error(e)}"))
            return
        say = lambda fmt, message: conn.send(Progress(fmt, message))  # noqa: E731
        try:
            compared = (run.batches, run.expected) if job.settings.save_outputs else None
            for fmt, result in check_each(run, job.formats, say):
                conn.send(Done(fmt, result.to_dict(), run.model_info(),
                               str(run.path(fmt).parent), compared))
                compared = None  # the parent needs them once
        except OutputError as e:
            conn.send(Failed(OUTPUT, str(e)))
            return
    except BaseException as e:  # anything else is this child's formats' error, not the parent's
        with contextlib.suppress(Exception):
            conn.send(Failed(ERROR, describe_error(e)))
    finally:
        conn.close()


def _die_with_parent(parent):
    """Linux: SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def main(argv):
    import pickle
    from multiprocessing.connection import Connection
    from pathlib import Path

    job = pickle.loads(Path(argv[1]).read_bytes())
    child_main(Connection(int(argv[2]), readable=False), job)


if __name__ == "__main__":
    # Through the importable module, so that the messages pickle as
    # tfdropblock.export.execution._child.Done, not __main__.Done, which the parent cannot load.
    from tfdropblock.export.execution._child import main as _main

    _main(sys.argv)
