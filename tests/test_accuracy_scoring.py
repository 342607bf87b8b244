"""The accuracy scores' own rules, on hand-made truth: what counts for and against the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.accuracy import counted_found, day_summary, lean_truth, score_lean, slouch_truth
from evaluation.scoring import match_with_dont_care

DT_S = 0.01


def held(*segments: tuple[float, float]) -> dict[str, np.ndarray]:
    """Truth of a seated wearer holding each (flexion_deg, seconds) in turn."""
    flexion = np.concatenate([np.full(round(s / DT_S), f) for f, s in segments])
    return {"t_s": np.arange(len(flexion)) * DT_S, "flexion_deg": flexion,
            "context": np.full(len(flexion), "sitting")}


def score(tr: dict[str, np.ndarray], found: list[tuple[float, float, str]]):
    truth, dont_care = slouch_truth(tr, DT_S, [(0.0, float(tr["t_s"][-1]) + DT_S)], 0.0, [])
    m = match_with_dont_care(truth, dont_care, found)
    return truth, dont_care, m, [found[j] for j in counted_found(truth, dont_care, found, m)]


@pytest.mark.parametrize("flexion_deg", [14.2, 14.9, 15.4])
def test_a_posture_held_within_a_degree_of_the_threshold_counts_neither_way(flexion_deg):
    tr = held((2.0, 30.0), (flexion_deg, 120.0), (2.0, 30.0))
    for found in ([], [(30.0, 150.0, "")]):
        _, dont_care, m, counted = score(tr, found)
        assert dont_care == [True]
        assert (m.tp, m.fp, m.fn) == (0, 0, 0) and counted == []


def test_a_slouch_below_the_border_reported_is_a_false_positive():
    _, _, m, counted = score(held((2.0, 30.0), (13.8, 120.0), (2.0, 30.0)), [(30.0, 150.0, "")])
    assert (m.tp, m.fp, m.fn) == (0, 1, 0) and counted == [(30.0, 150.0, "")]


def test_a_report_spanning_a_slouch_and_a_near_one_counts_in_full():
    # 20° for 60 s, down to 12.5° (above the exit: one truth episode), 2° (ends it), then 14.5° held.
    tr = held((2.0, 30.0), (20.0, 60.0), (2.0, 30.0), (14.5, 60.0), (2.0, 30.0))
    truth, dont_care, m, counted = score(tr, [(30.0, 90.0, "")])
    assert sorted(zip(truth, dont_care)) == [((30.0, 90.0, ""), False), ((120.0, 180.0, ""), True)]
    assert (m.tp, m.fp, m.fn) == (1, 0, 0) and counted == [(30.0, 90.0, "")]
    # One report over both (the measured angle stayed above the exit between them): matched, counted.
    _, _, m, counted = score(tr, [(30.0, 180.0, "")])
    assert m.tp + m.fp == 1 and counted == [(30.0, 180.0, "")]


def test_a_sensor_lying_face_up_off_the_body_is_no_slouch_and_a_report_there_is_a_false_positive():
    # Face up on a desk the truth's flexion is 90° (the sensor's pose in the trunk's angles): no one slouches there.
    tr = held((2.0, 30.0), (90.0, 120.0), (2.0, 30.0))
    tr["context"][(tr["t_s"] >= 30.0) & (tr["t_s"] < 150.0)] = "off"
    truth, _, m, counted = score(tr, [])
    assert truth == [] and (m.tp, m.fp, m.fn) == (0, 0, 0)
    _, _, m, counted = score(tr, [(40.0, 90.0, "")])  # what the user would see, while it lay there
    assert (m.tp, m.fp, m.fn) == (0, 1, 0) and counted == [(40.0, 90.0, "")]


def test_a_wearer_judged_off_the_body_misses_a_target(monkeypatch):
    """Time the pipeline judged off the body leaves the output, and with it the truth the other scores compare: a still
    sitter judged off for most of the case met every target (a reviewer's probe with a detector made far too eager)."""
    import functools

    import pipeline.stream as stream
    from evaluation.accuracy import CASES, misses
    from evaluation.accuracy import score as score_case
    from evaluation.harness import run_case

    case = next(c for c in CASES if c.name == "office-short")
    assert "on_body_unmeasured_s" not in misses(score_case(run_case(case)))
    monkeypatch.setattr(stream, "WornSettings", functools.partial(stream.WornSettings, quiet_dps=20.0,
                                                                  picked_up_dps=40.0, off_after_s=10.0))
    eager = score_case(run_case(case))
    assert eager.on_body_unmeasured_s > 10.0 and "on_body_unmeasured_s" in misses(eager)


def outcomes(*calibrations: tuple[float, str, str, float | None]) -> list[str]:
    """Each calibration's scored outcome, for (t_s, status, message, error in degrees about the trunk's left axis)."""
    from types import SimpleNamespace

    from scipy.spatial.transform import Rotation

    from evaluation.accuracy import _score_calibrations
    from evaluation.harness import Calibrated

    def rotation(err_deg: float | None) -> np.ndarray | None:
        return None if err_deg is None else Rotation.from_euler("y", err_deg, degrees=True).as_matrix()

    sim = SimpleNamespace(r_trunk_sensor_at=lambda t: np.repeat(np.eye(3)[None], len(t), axis=0))  # truth: identity
    run = SimpleNamespace(sim=sim, calibrations=[Calibrated(t, status, message, rotation(err))
                                                 for t, status, message, err in calibrations])
    return [c["outcome"] for c in _score_calibrations(run)]  # type: ignore[arg-type]  # only the fields it reads


HUNCH = (10.0, "calibrated", "calibrated with a 12° forward bend", 7.8)
CORRECTION = "recalibrated forward direction corrected by +3° from walking"


def test_a_walking_correction_that_leaves_the_calibration_off_did_not_correct_it():
    """Walking turns forward about the up axis; a hunched hold's error is in the up axis, so a correction can leave it
    as far off as it was (unseen day 948277: 7.8° off, "corrected" by +3° to 4.4° off). Judged past the correction: a
    later flag flags the hunch, and with none the hunch was silently off."""
    left_off = (1850.0, "calibrated", CORRECTION, 4.4)
    flag = (2160.0, "recalibrate", "recalibrate: walking reads -2° of flexion (leaning back)", None)
    assert outcomes(HUNCH, left_off, flag) == ["flagged", "flagged"]
    assert outcomes(HUNCH, left_off) == ["silently off", "silently off"]
    # A correction that does fix it still counts as one.
    assert outcomes(HUNCH, (1850.0, "calibrated", CORRECTION, 1.2)) == ["corrected", "within 3°"]


def leaning(*segments: tuple[float, float], context: str = "sitting") -> dict[str, np.ndarray]:
    """Truth of a wearer holding each (lateral_deg, seconds) in turn, in one context."""
    lateral = np.concatenate([np.full(round(s / DT_S), x) for x, s in segments])
    return {"t_s": np.arange(len(lateral)) * DT_S, "lateral_deg": lateral, "context": np.full(len(lateral), context)}


def score_leans(tr: dict[str, np.ndarray], found: list[tuple[float, float, str]]) -> dict:
    from types import SimpleNamespace

    events = [SimpleNamespace(kind="lean", start_s=a, end_s=b, side=side) for a, b, side in found]
    run = SimpleNamespace(truth=tr, dt_s=DT_S, events=events)
    return score_lean(run, [(0.0, float(tr["t_s"][-1]) + DT_S)], 0.0, [])  # type: ignore[arg-type]


def test_a_lean_is_truth_by_side_while_sitting_only():
    tr = leaning((0.0, 30.0), (-10.0, 60.0), (0.0, 30.0), (12.0, 40.0), (0.0, 30.0))
    truth, dont_care = lean_truth(tr, DT_S, [(0.0, 190.0)], 0.0, [])
    assert list(zip(truth, dont_care)) == [((30.0, 90.0, "left"), False), ((120.0, 160.0, "right"), False)]
    standing = leaning((0.0, 30.0), (-10.0, 60.0), (0.0, 30.0), context="standing")
    assert lean_truth(standing, DT_S, [(0.0, 120.0)], 0.0, []) == ([], [])


def test_leans_are_scored_by_side_and_total_duration():
    tr = leaning((0.0, 30.0), (-10.0, 60.0), (0.0, 30.0), (12.0, 40.0), (0.0, 30.0))
    res = score_leans(tr, [(31.0, 90.0, "left"), (120.0, 160.0, "right")])
    assert (res["lean"].tp, res["lean"].fp, res["lean"].fn) == (2, 0, 0)
    assert res["lean_truth_s"] == pytest.approx(100.0) and res["lean_measured_s"] == pytest.approx(99.0)
    assert res["lean_duration_error_pct"] == pytest.approx(1.0)
    # The right length on the wrong side: a miss and a false lean; a report while upright: a false one.
    res = score_leans(tr, [(30.0, 90.0, "right"), (120.0, 160.0, "right"), (170.0, 180.0, "left")])
    assert (res["lean"].tp, res["lean"].fp, res["lean"].fn) == (1, 2, 1)
    # A lean within a degree of the threshold counts neither way.
    res = score_leans(leaning((0.0, 30.0), (6.4, 60.0), (0.0, 30.0)), [(30.0, 90.0, "right")])
    assert (res["lean"].tp, res["lean"].fp, res["lean"].fn) == (0, 0, 0) and res["lean_duration_error_pct"] is None


def test_the_random_days_summary_scores_leans_without_a_target():
    from types import SimpleNamespace

    from evaluation.accuracy import DAY_TARGETS
    from evaluation.scoring import Matched

    def day(truth_s: float, measured_s: float, lean: Matched) -> SimpleNamespace:
        return SimpleNamespace(
            flexion_rmse_deg=0.5, lateral_rmse_deg=0.5, slouch_truth_s=10.0, slouch_measured_s=10.0, slouch=Matched(1),
            slouch_duration_error_pct=0.0, lean_truth_s=truth_s, lean_measured_s=measured_s, lean=lean,
            lean_duration_error_pct=100.0 * abs(measured_s - truth_s) / truth_s if truth_s else None,
            rotation=Matched(), transitions=Matched(), activity_counts=np.eye(4, dtype=np.int64), sitting_truth_s=60.0,
            sitting_measured_s=60.0, duration_s=3600.0, rotation_peak_error_deg=None, si_error_points=None,
            sitting_error_pct=0.0, excursions_while_walking=0, silently_off=0, slouch_onset_s=[],
            minute_vs_events_s=0.0, flagged_pct=0.0)

    summary = day_summary([day(100.0, 90.0, Matched(3, 1, 0)), day(0.0, 5.0, Matched(0, 1, 0))])  # type: ignore[list-item]
    assert summary["total lean duration error %"] == pytest.approx(5.0)
    assert summary["worst day lean duration error %"] == pytest.approx(10.0)
    assert summary["lean F1"] == pytest.approx(6 / 8)
    assert not any("lean" in name for name in DAY_TARGETS)
