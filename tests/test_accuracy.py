"""The pipeline against the virtual sensor's ground truth: the issue's accuracy targets, per case.

docs/accuracy.md holds the same table, from `python -m evaluation.accuracy --write`.
"""

from __future__ import annotations

import pytest

from evaluation.accuracy import CASES, failures, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_meets_targets(case):
    result = run_case(case)
    assert result.calibrated, "the pipeline never calibrated on this scenario"
    assert failures(result) == []
    if case.scenario == "walk-turns":
        assert result.excursions_while_walking == 0 and result.rotation_f1 is None, "whole-body turns counted"
    if case.scenario in ("rotations", "office-short", "office-day"):
        assert result.rotation_f1 is not None and result.si_error_points is not None
    if case.scenario in ("slouch", "office-short", "office-day"):
        assert result.slouch_truth_s > 0 and result.slouch_f1 is not None
