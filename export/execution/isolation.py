"""Run each format's conversion and checks in a child process, with a timeout.

A converter that raises, crashes (the TFLite converter is native code) or hangs then costs only
its own format: the parent reports it as that format's error and the other formats are still
checked. Children are forked when the parent has not yet run a TensorFlow op (the CLI's case:
importing TensorFlow starts no thread pool), which makes a child nearly free: no second
import of TensorFlow. Otherwise (a parent that already ran ops, where a forked child could
deadlock on thread pools that do not survive fork) each child is a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from tfdropblock._compat import tf_initialized
from tfdropblock.export import formats as registry
from tfdropblock.export.execution._child import (ERROR, INPUT, OUTPUT, Done, Failed, Job, Progress,
                                                 child_main)
from tfdropblock._files import held_signals
from tfdropblock.export.core.errors import InputError
from tfdropblock.export.report.report import build_report
from tfdropblock.export.model.loading import check_model_file
from tfdropblock.export.core.results import ERROR as ERROR_STATUS
from tfdropblock.export.core.results import FormatResult
from tfdropblock.export.run.settings import DEFAULT_TIMEOUT
from tfdropblock.export.execution import staging
from tfdropblock.export.execution.staging import output_error



def fork_is_safe():
    """True when no TensorFlow op has run in this process yet (so no thread pool exists)."""
    return sys.platform.startswith("linux") and not tf_initialized()


def verify_isolated(model_path, formats, settings, out_dir=None, safe_mode=True,
                    timeout=DEFAULT_TIMEOUT, jobs=None, progress=None, write="passed",
                    imports=(), start_method=None):
    """:func:`tfdropblock.export.verify` with each format in a child process (see
    :func:`tfdropblock.export.formats.groups`), a timeout per format, and a fresh child for
    what a dead one left: :func:`schedule`, then :func:`assemble`, then the commit."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InputError(f"Invalid timeout={timeout!r}: expected a number of seconds > 0.")
    if model_path is not None:
        model_path = str(check_model_file(model_path))
    jobs = jobs or min(len(registry.groups(formats)), os.cpu_count() or 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"Invalid jobs={jobs!r} (--jobs): expected an int >= 1.")
    method = start_method or ("fork" if fork_is_safe() else "spawn")
    if method not in ("fork", "spawn"):
        raise InputError(f"Invalid start_method={method!r}: expected 'fork' or 'spawn'.")

    def isolated(work):
        template = Job(model=model_path, formats=(), settings=settings, safe_mode=safe_mode,
                       work=str(work), log="", imports=tuple(imports), parent=os.getpid())
        outcomes = schedule(template, formats, method, timeout, jobs, progress)
        report, staged = assemble(formats, outcomes, model_path, settings, out_dir,
                                  isolation=method, timeout_s=timeout, jobs=jobs)
        compared = next((o.compared for o in outcomes.values()
                         if isinstance(o, Done) and o.compared is not None), None)
        return report, staged, compared

    return staging.verified(out_dir, write, settings, isolated)


class _Lost:
    """A child that died or ran past its timeout before reporting its current format."""

    def __init__(self, kind):
        self.kind = kind  # "died" or "timeout"


def schedule(template, formats, method, timeout, jobs, progress=None):
    """Run the format groups in at most ``jobs`` children at once: {format: Done or Failed}.

    Each child's current format has ``timeout`` seconds; a child that dies or runs past it is
    killed (its process group with it), that format is an ERROR, and the rest of its group
    gets a fresh child. Interrupted or not, no child outlives this call.
    """
    mp = multiprocessing.get_context("fork") if method == "fork" else None
    say = progress or (lambda fmt, message: None)
    pending = [list(group) for group in registry.groups(formats)]
    running = []  # [process, connection, formats still to report, start of the current one, job]
    outcomes = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                group = pending.pop(0)
                name = "+".join(group)
                job = dataclasses.replace(template, formats=tuple(group),
                                          work=str(Path(template.work) / name),
                                          log=str(Path(template.work) / f"{name}.log"))
                Path(job.work).mkdir(parents=True, exist_ok=True)
                process, receiver = _launch(mp, job)
                running.append([process, receiver, list(group), time.monotonic(), job])
            deadline = min(entry[3] + timeout for entry in running)
            ready = wait([entry[1] for entry in running],
                         timeout=max(0.0, deadline - time.monotonic()))
            for entry in list(running):
                process, receiver, left, start, job = entry
                fmt = left[0]
                if receiver in ready:
                    try:
                        message = receiver.recv()
                    except (EOFError, OSError):
                        message = None
                    if isinstance(message, Progress):
                        say(message.format, message.message)
                        continue
                    if isinstance(message, Done):
                        outcomes[message.format] = message
                        left.remove(message.format)
                        entry[3] = time.monotonic()  # the next format's clock starts now
                        if left:
                            continue
                    elif isinstance(message, Failed):
                        for name in left:
                            outcomes[name] = message
                        left.clear()
                    else:
                        outcomes[fmt] = _Lost("died")
                elif time.monotonic() - start >= timeout:
                    outcomes[fmt] = _Lost("timeout")
                else:
                    continue
                _finish(process, receiver)
                running.remove(entry)
                if isinstance(outcomes.get(fmt), _Lost) and fmt in left:
                    outcomes[fmt] = Failed(ERROR, _failure_message(
                        fmt, outcomes[fmt].kind, process, timeout, Path(job.log)))
                    say(fmt, f"error: {outcomes[fmt].message}")
                    left.remove(fmt)
                    if left:  # the rest of the group gets a fresh process
                        pending.insert(0, left)
    finally:
        # Interrupted or not, no converter may outlive this block: they write into the
        # staging folder that is removed next. A second Ctrl-C must not cut this short.
        with held_signals():
            for process, receiver, *_ in running:
                _finish(process, receiver)
    return outcomes


def assemble(formats, outcomes, model_path, settings, out_dir, **extra_settings):
    """The report of the children's ``outcomes``, and the staged folder of each format that
    converted: ``(report, {format: folder})``. A child that could not load or run the model,
    or whose write was refused, is the run's error (raised), as in-process."""
    failed = [o for o in outcomes.values() if isinstance(o, Failed)]
    for kind, error in ((INPUT, InputError), (OUTPUT, None)):
        first = next((o.message for o in failed if o.kind == kind), None)
        if first is not None:
            raise InputError(first) if error else output_error(out_dir, first)
    results, model_info, staged = {}, None, {}
    for fmt in formats:
        outcome = outcomes[fmt]
        if isinstance(outcome, Done):
            results[fmt] = FormatResult.from_dict(outcome.result)
            model_info = model_info or outcome.model
            staged[fmt] = outcome.staged
        else:
            results[fmt] = FormatResult(fmt, status=ERROR_STATUS, error=outcome.message,
                                        exporter=settings.exporter)
    model_info = model_info or {"name": None, "source": model_path}
    return build_report(model_info, results, settings, **extra_settings), staged


def _launch(mp, job):
    """Start a child for ``job``: (process handle, connection it reports on).

    ``fork`` goes through multiprocessing. ``spawn`` starts ``python -m
    tfdropblock.export.execution._child`` directly rather than through multiprocessing's spawn, which
    re-imports the caller's ``__main__`` (a script without a ``__name__`` guard, or pytest).
    """
    if mp is not None:
        receiver, sender = mp.Pipe(duplex=False)
        process = mp.Process(target=child_main, args=(sender, job),
                             name=f"tfdropblock-{'+'.join(job.formats)}", daemon=True)
        process.start()
        sender.close()
        # The child does this too; whichever runs first, the group exists before we may kill it.
        with contextlib.suppress(OSError):
            os.setpgid(process.pid, process.pid)
        return process, receiver
    job_path = Path(job.work) / "job.pickle"
    job_path.write_bytes(pickle.dumps(job))
    read_fd, write_fd = os.pipe()
    with open(job.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tfdropblock.export.execution._child", str(job_path),
             str(write_fd)],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
    os.close(write_fd)
    return _Subprocess(proc), Connection(read_fd, writable=False)


class _Subprocess:
    """The slice of multiprocessing.Process that the scheduler uses, for a Popen."""

    def __init__(self, proc):
        self.proc = proc

    def is_alive(self):
        return self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        self.proc.kill()

    def join(self, timeout=None):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    @property
    def exitcode(self):
        return self.proc.poll()


def _finish(process, receiver):
    # Each child leads its own process group, so that whatever it started goes with it. The
    # group is killed before the child is reaped (is_alive() reaps): until then its id cannot
    # be reused by another process.
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.is_alive():
        process.kill()
    process.join(5)
    receiver.close()


def _failure_message(fmt, kind, process, timeout, log_path):
    if kind == "timeout":
        message = f"the {fmt} converter did not finish within {timeout:g} s (killed)"
    else:
        code = process.exitcode
        how = f"exit status {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f"signal {signal.Signals(-code).name}"
        message = f"the {fmt} converter process died ({how})"
    tail = _last_line(log_path)
    return message + (f"; last output: {tail}" if tail else "")


def _last_line(path):
    try:
        data = Path(path).read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
