"""Test-only fault injection: make a format's converter raise, crash (SIGSEGV) or hang.

``TFDROPBLOCK_EXPORT_FAULT="FORMAT:KIND[,FORMAT:KIND]"`` (KIND ``raise``, ``crash`` or
``hang``) takes effect in every process where :func:`install` ran: the test process (from
``conftest.py``) and, through ``sitecustomize.py`` beside this file (on ``PYTHONPATH``, set by
``conftest.py``), every Python process a test starts with the variable set: the CLI and its
spawned converter children. Forked children inherit the patched registry.
"""

import os
import signal
import time

FAULT_ENV = "TFDROPBLOCK_EXPORT_FAULT"


def _fault(fmt):
    for item in os.environ.get(FAULT_ENV, "").split(","):
        target, _, kind = item.strip().partition(":")
        if target != fmt:
            continue
        if kind == "raise":
            raise RuntimeError(f"injected fault in the {fmt} converter ({FAULT_ENV})")
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "hang":
            while True:
                time.sleep(3600)


def install():
    """Wrap every registered format's ``convert`` so that it first honours FAULT_ENV (read at
    each call), for the model's own conversion (not the identity reference's)."""
    from tfdropblock.export import formats

    for name in formats.names():
        spec = formats.get(name)
        if getattr(spec.convert, "fault_hook", False):
            continue
        original = spec.convert

        def convert(session, reference, _original=original, _name=name):
            if not reference:
                _fault(_name)
            return _original(session, reference)

        convert.fault_hook = True
        spec.convert = convert  # an instance attribute: shadows the class's method
