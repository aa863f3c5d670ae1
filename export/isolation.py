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
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from tfdropblock.export.atomic import held_signals
from tfdropblock.export.errors import InputError, OutputError
from tfdropblock.export.loading import check_model_file, load_model
from tfdropblock.export.report import ERROR, FormatResult

DEFAULT_TIMEOUT = 600


def fork_is_safe():
    """True when no TensorFlow op has run in this process yet (so no thread pool exists)."""
    if not sys.platform.startswith("linux"):
        return False
    if "tensorflow" not in sys.modules:
        return True
    try:
        from tensorflow.python.eager import context

        return not context.context()._initialized
    except Exception:
        return False


def verify_isolated(model_path, formats, options, out_dir=None, safe_mode=True,
                    timeout=DEFAULT_TIMEOUT, jobs=None, progress=None, write="passed",
                    imports=(), start_method=None):
    """:func:`tfdropblock.export.verify` with each format in a child process (see
    :func:`format_groups`), a timeout per format, and a fresh child for what a dead one left."""
    from tfdropblock.export.verifier import _workdir, build_report, commit_passed, import_modules

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InputError(f"Invalid timeout={timeout!r}: expected a number of seconds > 0.")
    if model_path is not None:
        model_path = str(check_model_file(model_path))
    jobs = jobs or min(len(format_groups(formats)), os.cpu_count() or 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"Invalid jobs={jobs!r}: expected an int >= 1.")
    import_modules(imports)
    method = start_method or ("fork" if fork_is_safe() else "spawn")
    if method not in ("fork", "spawn"):
        raise InputError(f"Invalid start_method={method!r}: expected 'fork' or 'spawn'.")
    mp = multiprocessing.get_context("fork") if method == "fork" else None
    say = progress or (lambda fmt, message: None)

    with _workdir(out_dir) as work:
        pending = list(format_groups(formats))
        running = []  # [process, connection, formats still to report, start of the current one]
        outcomes = {}
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    group = pending.pop(0)
                    job = {"model": model_path, "formats": group, "options": options,
                           "safe_mode": safe_mode, "work": str(work / "+".join(group)),
                           "log": str(work / f"{'+'.join(group)}.log"),
                           "imports": list(imports), "parent": os.getpid()}
                    Path(job["work"]).mkdir(parents=True, exist_ok=True)
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
                            message = ("died",)
                        if message[0] == "progress":
                            say(message[1], message[2])
                            continue
                        if message[0] == "result":
                            outcomes[message[1]] = ("result", message[2])
                            left.remove(message[1])
                            entry[3] = time.monotonic()  # the next format's clock starts now
                            if left:
                                continue
                        elif message[0] in ("input_error", "output_error", ERROR):
                            for name in left:
                                outcomes[name] = (message[0], message[1])
                            left.clear()
                        else:
                            outcomes[fmt] = ("died", None)
                    elif time.monotonic() - start >= timeout:
                        outcomes[fmt] = ("timeout", None)
                    else:
                        continue
                    _finish(process, receiver)
                    running.remove(entry)
                    if outcomes.get(fmt, ("",))[0] in ("died", "timeout") and fmt in left:
                        outcomes[fmt] = (ERROR, _failure_message(
                            fmt, outcomes[fmt][0], process, timeout, Path(job["log"])))
                        say(fmt, f"error: {outcomes[fmt][1]}")
                        left.remove(fmt)
                        if left:  # the rest of the group gets a fresh process
                            pending.insert(0, left)
        finally:
            # Interrupted or not, no converter may outlive this block: they write into the
            # staging folder that is removed next. A second Ctrl-C must not cut this short.
            with held_signals():
                for process, receiver, *_ in running:
                    _finish(process, receiver)

        input_errors = [p for k, p in outcomes.values() if k == "input_error"]
        if input_errors:
            raise InputError(input_errors[0])
        output_errors = [p for k, p in outcomes.values() if k == "output_error"]
        if output_errors:
            from tfdropblock.export.verifier import output_error

            raise output_error(out_dir, output_errors[0])
        results, model_info, staged = {}, None, {}
        for fmt in formats:
            kind, payload = outcomes[fmt]
            if kind == "result":
                results[fmt] = FormatResult.from_dict(payload["result"])
                model_info = model_info or payload["model"]
                staged[fmt] = payload["staged"]
            else:
                results[fmt] = FormatResult(fmt, status=ERROR, error=payload)
        model_info = model_info or {"name": None, "source": model_path}
        report = build_report(model_info, results, options)
        report.settings.update({"isolation": method, "timeout_s": timeout, "jobs": jobs})
        commit_passed(report, staged, out_dir, write)
    return report


def format_groups(formats):
    """Formats grouped per child process: TFLite converts from the SavedModel, so the two share
    a process (and the SavedModel export) when both are asked for. Each format still reports
    on its own, and if a child dies the rest of its group restarts in a fresh one."""
    formats = list(formats)
    if "saved_model" in formats and "tflite" in formats:
        first = [f for f in formats if f in ("saved_model", "tflite")]
        return [first] + [[f] for f in formats if f not in first]
    return [[f] for f in formats]


def _launch(mp, job):
    """Start a child for ``job``: (process handle, connection it reports on).

    ``fork`` goes through multiprocessing. ``spawn`` starts ``python -m
    tfdropblock.export._child`` directly rather than through multiprocessing's spawn, which
    re-imports the caller's ``__main__`` (a script without a ``__name__`` guard, or pytest).
    """
    if mp is not None:
        receiver, sender = mp.Pipe(duplex=False)
        process = mp.Process(target=child_main, args=(sender, job),
                             name=f"tfdropblock-{'+'.join(job['formats'])}", daemon=True)
        process.start()
        sender.close()
        # The child does this too; whichever runs first, the group exists before we may kill it.
        with contextlib.suppress(OSError):
            os.setpgid(process.pid, process.pid)
        return process, receiver
    job_path = Path(job["work"]) / "job.pickle"
    job_path.write_bytes(pickle.dumps(job))
    read_fd, write_fd = os.pipe()
    with open(job["log"], "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tfdropblock.export._child", str(job_path), str(write_fd)],
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
        how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
               and -code in signal.Signals._value2member_map_ else f"exit status {code}")
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


def child_main(conn, job):
    """Entry point of a child: load the model, convert and check its formats, report each."""
    # Stopping is the parent's decision: it ends the child's group (SIGINT from a terminal
    # reaches only the parent's group now), and the child dies with the parent even if that
    # is killed outright, so no converter outlives the run and writes into a removed folder.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _die_with_parent(job.get("parent"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a forked copy of the CLI's handler
    # Converter chatter (MLIR diagnostics, absl logs) goes to a log file, quoted if we die.
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # The converters' own temporary files (TensorFlow hands TMPDIR paths to C++, which takes
    # only UTF-8) go in the work directory, whose path is UTF-8 and which is removed with
    # the run even when this process is killed.
    tmp = os.path.join(job["work"], "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = tmp
    try:
        from tfdropblock.export.formatcheck import run_format
        from tfdropblock.export.pipeline import Session
        from tfdropblock.export.verifier import import_modules, make_context

        try:
            import_modules(job["imports"])
            model = default_model() if job["model"] is None else load_model(
                job["model"], job["safe_mode"])
            ctx = make_context(model, job["options"], job["model"] or "tfdropblock.models."
                                                                  "default_model()")
        except InputError as e:
            conn.send(("input_error", str(e)))
            return
        except Exception as e:
            conn.send(("input_error", f"the model cannot run in Keras on its inputs: "
                                      f"{type(e).__name__}: {_first_line(e)}"))
            return
        options = job["options"]
        session = Session(model, ctx.signature, job["work"], options["opset"],
                          options.get("tflite_select_tf_ops", False),
                          options.get("reference", "auto"), options.get("onnx_external_data"))
        for fmt in job["formats"]:
            try:
                result = run_format(ctx, session, fmt, progress=lambda f, message: conn.send(
                    ("progress", f, message)))
            except OutputError as e:
                conn.send(("output_error", str(e)))
                return
            conn.send(("result", fmt, {"result": result.to_dict(), "model": ctx.model_info(),
                                       "staged": str(session.path(fmt).parent)}))
    except BaseException as e:  # anything else is this child's formats' error, not the parent's
        try:
            conn.send((ERROR, f"{type(e).__name__}: {_first_line(e)}"))
        except Exception:
            pass
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


def default_model():
    """``tfdropblock.models.default_model()``, imported only when needed."""
    try:
        from tfdropblock.models import default_model as build
    except ImportError:
        raise InputError("No model given and tfdropblock.models.default_model() is not "
                         "available: pass a MODEL.keras path.") from None
    return build()


def _first_line(e):
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:400] if lines else ""
