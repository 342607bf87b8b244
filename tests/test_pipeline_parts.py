"""Pipeline building blocks on their own: run finding across batches, symmetry measures, hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detectors import hysteresis
from pipeline.runs import RunFinder
from pipeline.symmetry import symmetry_angle, symmetry_index


def test_run_finder_gives_the_same_runs_however_the_stream_is_cut():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = np.repeat(rng.random(rng.integers(1, 300)) < 0.6, rng.integers(1, 4))
        finder, runs, i = RunFinder(), [], 0
        while i < len(mask):
            k = int(rng.integers(1, 20))
            runs += finder.feed(mask[i:i + k])
            i += k
        runs += finder.feed(np.zeros(1, bool))
        edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
        expected = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))
        assert [(r.start, r.end) for r in runs] == expected


def test_hysteresis_enters_above_and_leaves_below():
    x = np.array([0, 16, 14, 13, 11, 14, 16, 2], float)
    assert hysteresis(x, 15, 12, False).tolist() == [False, True, True, True, False, False, True, False]
    assert hysteresis(np.array([13.0, 13.0]), 15, 12, True).tolist() == [True, True]


def test_symmetry_index_and_angle_signs_and_guard():
    assert symmetry_index(150.0, 50.0) == pytest.approx(100.0)  # right-dominant is positive
    assert symmetry_index(50.0, 150.0) == pytest.approx(-100.0)
    assert symmetry_index(100.0, 100.0) == 0.0
    assert symmetry_index(20.0, 10.0) is None  # too little rotation to mean anything
    assert symmetry_angle(100.0, 0.0) == pytest.approx(50.0)
    assert symmetry_angle(0.0, 100.0) == pytest.approx(-50.0)
    assert symmetry_angle(100.0, 100.0) == pytest.approx(0.0)
