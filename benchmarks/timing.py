"""Interleaved timing: medians of repeated, alternating measurements, and their ratios."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    name: str
    seconds: list = field(default_factory=list)  # one entry per round: mean of `inner` calls
    inner: int = 1

    @property
    def median(self):
        return statistics.median(self.seconds)

    @property
    def spread(self):
        """Half the interquartile range, relative to the median (a noise indicator)."""
        if len(self.seconds) < 4:
            return float("nan")
        q1, _, q3 = statistics.quantiles(self.seconds, n=4)
        return (q3 - q1) / 2 / self.median


def measure(cases, rounds=15, warmup=2, target_s=0.02, max_inner=50):
    """Time ``cases`` (name -> zero-argument callable that blocks until done) side by side.

    Each case is warmed up (tracing, XLA compilation), then given an inner repeat count so that
    one sample lasts about ``target_s``. Each round times every case once, in an order rotated by
    one each round, so slow drifts of the machine load hit every case alike.
    """
    names = list(cases)
    results = {}
    for name in names:
        for _ in range(max(1, warmup)):  # the last warm-up call, timed, sizes the samples
            start = time.perf_counter()
            cases[name]()
            once = time.perf_counter() - start
        inner = max(1, min(max_inner, int(target_s / max(once, 1e-6))))
        results[name] = Result(name, inner=inner)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, inner = cases[name], results[name].inner
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            results[name].seconds.append((time.perf_counter() - start) / inner)
    return results


def ratio(results, name, baseline):
    """Median of ``name`` over median of ``baseline``."""
    return results[name].median / results[baseline].median
