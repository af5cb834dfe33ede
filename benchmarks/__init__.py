"""Runnable comparisons that print tables; never part of the test run.

Run them from the repository root, e.g. ``python -m benchmarks.features``.
"""
