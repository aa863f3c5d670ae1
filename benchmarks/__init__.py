"""Benchmarks for tfdropblock: ``python -m benchmarks.run [--quick] [--markdown FILE]``.

Every comparison is measured side by side in one process: the cases of a table are timed in
interleaved rounds (the order rotates each round) and reported as medians and as ratios to a
baseline of the same table, so that a noisy, shared machine skews all of them alike.
"""
