"""Loaded at start-up by every Python process the tests start (``conftest.py`` puts this
folder on PYTHONPATH): installs the test-only converter faults when a test asked for one."""

import os

if os.environ.get("TFDROPBLOCK_EXPORT_FAULT"):
    import fault_injection

    fault_injection.install()
