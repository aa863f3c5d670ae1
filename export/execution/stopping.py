"""SIGINT and SIGTERM stop a run (exit 130 / 143) until its outcome is decided.

The outcome is decided from the moment artifacts start moving into place
(:func:`~tfdropblock.export.execution.atomic.commits_begun` grows: renames cannot be undone, and
a stop then would report 130 over a replaced output), or once the caller says so with
:func:`decided` (its report is being written, or it is returning). A stop before that raises
:class:`Interrupted` (a KeyboardInterrupt carrying the signal) in the main thread.
"""

from __future__ import annotations

import signal
import threading

from tfdropblock._files import STOP_SIGNALS
from tfdropblock.export.execution.atomic import commits_begun

_STATE = {"decided": False, "commits": 0}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum`` before its outcome was decided."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _on_stop(signum, frame):
    if _STATE["decided"] or commits_begun() > _STATE["commits"]:
        return
    raise Interrupted(signum)


def catch_stop_signals():
    """Make SIGINT and SIGTERM stop the run from now on; returns the previous handlers, for
    :func:`release_stop_signals` (none off the main thread, where handlers cannot change)."""
    _STATE.update(decided=False, commits=commits_begun())
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _on_stop) for signum in STOP_SIGNALS}


def decided():
    """The outcome is decided: a signal from now on no longer stops the run."""
    _STATE["decided"] = True


def release_stop_signals(previous, own_process):
    """The run is over: restore ``previous`` handlers, unless this process ends with the run
    (``own_process``), where a late signal must not turn the decided status into a
    traceback."""
    decided()
    if own_process:
        return
    for signum, handler in previous.items():
        if handler is not None:
            signal.signal(signum, handler)
