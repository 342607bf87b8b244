"""Synthetic per-sample signals for the pipeline's unit tests: sample grids, angle profiles, batching.

Sample k of a grid is at t0_s + k / rate_hz: k / rate_hz is exact at whole (and hundredth) seconds, so an
edge placed on a whole second falls on a sample and the expected times in a test are exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

EDGE_S = 1e-6  # edges are compared this loosely: t0_s + k / rate_hz is not always the float a test writes


def grid(duration_s: float, rate_hz: float = 100.0, t0_s: float = 0.0) -> np.ndarray:
    """Sample times from t0_s over duration_s (end excluded)."""
    return t0_s + np.arange(round(duration_s * rate_hz)) / rate_hz


def during(t_s: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """Samples in [start_s, end_s)."""
    return (t_s >= start_s - EDGE_S) & (t_s < end_s - EDGE_S)


def held(t_s: np.ndarray, *levels: tuple[float, float, float]) -> np.ndarray:
    """Zero, except value on [start_s, end_s) for each (start_s, end_s, value); later ones win where they overlap."""
    x = np.zeros(len(t_s))
    for start_s, end_s, value in levels:
        x[during(t_s, start_s, end_s)] = value
    return x


def ramps(t_s: np.ndarray, *knots: tuple[float, float]) -> np.ndarray:
    """Piecewise-linear through (time_s, value) knots (times increasing), flat outside them."""
    k = np.asarray(knots, float)
    assert np.all(np.diff(k[:, 0]) > 0), "knot times must increase"
    return np.interp(t_s, k[:, 0], k[:, 1])


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most size samples covering range(n)."""
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))
