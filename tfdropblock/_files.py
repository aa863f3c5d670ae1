"""Files written whole or not at all, and SIGINT/SIGTERM held while that must not be cut.

Used by the export kit's commits and by anything else of the package that writes a file a
reader may open at any moment (the CLI's JSON report, ``show-masks``'s PNG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

# The signals that stop a run: Ctrl-C and what service managers, `timeout` and CI runners send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held_signals():
    """SIGINT and SIGTERM that arrive in the body take effect when it ends, not inside it.

    Yields the list of signals caught so far. On exit the previous handlers come back and the
    first caught signal is raised again, so it acts as it would have (KeyboardInterrupt, the
    caller's handler, or the default action). Python runs signal handlers in the main thread
    whichever thread the kernel picks, so swapping the Python-level handlers holds a signal
    even where ``pthread_sigmask`` would not (TensorFlow's threads leave it unblocked).
    Elsewhere than in the main thread (handlers cannot change there) the body runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    caught = []
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is None or handler is signal.SIG_IGN:  # not ours to hold
                continue
            signal.signal(signum, lambda signum, frame: caught.append(signum))
            previous[signum] = handler
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])




def write_bytes(path, data):
    """Write ``data`` to a temporary sibling of ``path``, then rename it over ``path``.

    Interrupted, it leaves ``path`` as it was and no temporary file.
    """
    target = os.path.realpath(path)
    tmp = None
    try:
        tmp = _write_temp(target, data)
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise


def stage_bytes(path, data):
    """Write ``data`` to a new temporary file beside ``path`` (beside its target, if ``path``
    is a symlink: the rename must stay on one filesystem) and return that file's path, for the
    caller to rename over ``path`` or delete. Interrupted, it leaves no file."""
    return Path(_write_temp(os.path.realpath(path), data))


def _write_temp(target, data):
    target = Path(target)
    tmp = None
    try:
        with held_signals():  # no interrupt between creating the file and knowing its name
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                       dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600 files; an artifact gets the permissions open() would give it.
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path):
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _umask():
    # Reading the umask with os.umask() sets it for a moment, for every thread: a file another
    # thread creates then gets umask 0. Linux shows it without changing it.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask
