"""The accuracy study's summary (benchmarks/accuracy.py): means, spreads, the best block and
which differences to the unregularised network exceed two standard errors."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import accuracy  # noqa: E402


def _runs(config, tests, study="2d"):
    return [{"study": study, "config": config, "seed": seed, "seconds": 1.0,
             "test_accuracy": t, "train_accuracy": t + 0.05} for seed, t in enumerate(tests)]


def _results(runs):
    return {"command": "python -m benchmarks.accuracy", "machine": "test", "wall_seconds": 60.0,
            "plan": dict(accuracy.FULL), "runs": runs}


def test_summary_best_block_and_significance():
    runs = (_runs("none", [0.80, 0.81, 0.79]) + _runs("dropout", [0.80, 0.82, 0.79])
            + _runs("dropblock_b3", [0.83, 0.84, 0.82]) + _runs("dropblock_b7", [0.815, 0.80, 0.83])
            + _runs("none", [0.7, 0.72], study="1d"))
    summary = {(r["study"], r["config"]): r for r in accuracy.summarise(runs)}
    assert summary[("2d", "dropblock_b3")]["test_mean"] == pytest.approx(0.83)
    assert summary[("2d", "none")]["test_std"] == pytest.approx(0.01)
    assert summary[("1d", "none")]["n"] == 2
    assert accuracy.best_block(list(summary.values())) == 3
    text_2d, text_1d = accuracy.markdown(_results(runs)).split("**1D study**")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text_2d.splitlines()
            if line.startswith("| ")}
    # +3.00 points with s.e. 0.82: flagged; dropout's +0.33 with s.e. 1.0: not.
    assert "+3.00 ± 0.82 **(> 2 s.e.)**" in rows["dropblock_b3"]
    assert "+0.33" in rows["dropout"] and "2 s.e." not in rows["dropout"]
    assert "80.00 ± 1.00" in rows["none"] and "| none | 71.00 ± 1.41 |" in text_1d


def test_block_curve_is_written(tmp_path):
    runs = _runs("none", [0.8, 0.81]) + [r for b in accuracy.BLOCK_SIZES
                                          for r in _runs(f"dropblock_b{b}", [0.8, 0.82])]
    accuracy.plot_block_curve(_results(runs), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--studies", "3d"], "Invalid --studies='3d'"),
    (["--train-size", "15"], "Invalid --train-size=15: expected a positive int, a multiple"),
    (["--seeds", "0"], "Invalid --seeds=0"),
    (["--jobs", "0"], "Invalid --jobs=0: expected an int >= 1"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        accuracy.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_plan_runs_every_configuration_with_every_seed_seeds_outer():
    args = accuracy.parse_args(["--seeds", "2"])
    plan = accuracy.jobs(args)
    configs = [c for c, _, _ in accuracy.configurations_2d()] + \
        [c for c, _, _ in accuracy.configurations_1d(accuracy.SEQUENCE_BLOCK)]
    assert [(job[1], job[4]) for job in plan] == [(c, s) for s in (0, 1) for c in configs]
    exact = accuracy.exact(5, 2)
    assert [(job[1], job[3], job[4]) for job in exact] == [
        ("dropblock_exact_b5", {"block_size": 5, "gamma_mode": "exact"}, s) for s in (0, 1)]
