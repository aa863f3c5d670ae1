"""The benchmark runner's exit status: a table it could not run fails the run."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import models, run  # noqa: E402


def test_a_table_that_cannot_run_makes_the_run_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(models, "available", lambda: "tfdropblock.models unavailable (test)")
    assert run.main(["--tables", "resnet"]) == 1
    out = capsys.readouterr().out
    assert "skipped: tfdropblock.models unavailable (test)" in out
    assert "FAILED: could not run table(s) resnet" in out
