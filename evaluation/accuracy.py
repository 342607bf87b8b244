"""The pipeline measured against the virtual sensor's ground truth, on named cases and random days.

Each case is a seeded scenario played through the virtual sensor's IMU model and fed to the
pipeline the way `posture run` feeds it (`evaluation/harness.py`); the truth is used only to score.
Named cases stress one thing each (listed in `docs/accuracy.md`); random days (`random:SEED:HOURS`,
seeds fixed below before any result was seen) mix everything a wearer does. `python -m
evaluation.accuracy --write` regenerates the tables in docs/accuracy.md; `tests/test_accuracy.py`
asserts the same targets. Exit code 1: worse than docs/accuracy.md says (regressions()); the known misses it
lists are no failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from contract.messages import payload
from contract.validation import Malformed, load_validators, parse
from firmware_sim.motion import (
    LEAN_TRUTH_EXIT_DEG,
    LEAN_TRUTH_MIN_S,
    LEAN_TRUTH_THRESHOLD_DEG,
    SLOUCH_TRUTH_EXIT_DEG,
    SLOUCH_TRUTH_MIN_S,
    SLOUCH_TRUTH_THRESHOLD_DEG,
)
from firmware_sim.scenario import OFF
from pipeline.detectors import RotationSettings
from pipeline.events import ACTIVITIES, SITTING, MinuteMetrics
from pipeline.symmetry import symmetry_angle, symmetry_index

from .doc_sections import write_section
from .harness import CALIBRATION_MOVES, CALIBRATIONS, Case, Run, load_case_scenario, run_case
from .live_feed import random_outages
from .scoring import (
    Interval,
    Matched,
    balanced_accuracy,
    confusion,
    covered,
    hysteresis_runs,
    intersect,
    match_transitions,
    match_with_dont_care,
    rotation_angle_deg,
    seen_intervals,
    sit_stand_transitions,
    within,
)

__all__ = ["CALIBRATION_MOVES", "CALIBRATIONS", "CASES", "Case", "load_case_scenario", "run_case", "failures",
           "score", "evaluate", "regressions"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "accuracy.md"
MAX_FILL_S = 1.0  # the pipeline's interpolation limit: longer gaps are unseen time
BORDER_DEG = 1.0  # truth this close to a threshold is "don't care"
BORDER_S = 0.5  # … and this close to a dwell or duration limit
TRANSITION_TOL_S = 5.0  # a sit/stand is recognised once the movement has settled (≤ ~4 s after its middle)
ACTIVITY_MARGIN_S = 2.5  # around a change of activity the truth is ambiguous (docs/accuracy.md)
CALIBRATION_TOL_DEG = 3.0
PROVISIONAL = "from the upright hold only"  # the pipeline's words for a calibration without a bend

TARGETS = {  # per case (and, for random days, the worst day where the issue says so)
    "flexion_rmse_deg": 1.0, "lateral_rmse_deg": 1.0, "slouch_duration_error_pct": 2.0, "slouch_f1": 0.98,
    "rotation_f1": 0.97, "rotation_peak_error_deg": 2.0, "si_error_points": 3.0,
    "sitting_error_pct": 5.0, "activity_balanced_accuracy": 0.95,
}
ON_BODY_UNMEASURED_MAX_S = 1.0  # a wearer is never judged off the body (a second for samples dropped otherwise)
DAY_TARGETS = {  # over the random days (issue 10)
    "median day flexion/lateral RMSE °": 1.0, "worst day flexion/lateral RMSE °": 1.5,
    "total slouch duration error %": 2.0, "worst day slouch duration error %": 5.0, "slouch F1": 0.98,
    "rotation F1": 0.97, "worst rotation peak error °": 2.0, "worst day SI error": 3.0,
    "sitting-time error %": 5.0, "activity balanced accuracy": 0.95,
    # Not asked by issue 10, which bounds the total: a missed sit-down on one day (day 1001 read a posture change
    # while seated as standing up, 10.6 % of its sitting) vanished in the total over thirty days. The named cases'
    # bound (≤ 5 % a case) holds each day.
    "worst day sitting-time error %": 5.0,
    "excursions from whole-body turns while walking": 0, "calibrations silently off": 0,
}

CASES = [
    # The first eleven: issue 3's cases, now fed live.
    Case("slouch-ideal", "slouch", 1, "no noise, no bias, no mis-mount: the method's own error",
         {"acc_noise_g": 0.0, "gyro_noise_dps": 0.0, "gyro_bias_dps": 0.0, "gyro_bias_walk_dps_per_sqrt_s": 0.0,
          "mount_max_deg": 0.0}),
    Case("slouch-noisy", "slouch", 2, "twice the default sensor noise", {"acc_noise_g": 0.006, "gyro_noise_dps": 0.1}),
    Case("rotations", "rotations", 3, "asymmetric trunk rotations (3 left at 30°, 5 right at 45°)"),
    Case("rotations-bias-1dps", "rotations", 4, "the same with 1 °/s gyro bias", {"gyro_bias_dps": 1.0}),
    Case("rotations-mount-30deg", "rotations", 5, "the same with the sensor mounted ~30° off",
         {"mount_euler_deg": [20.0, -15.0, 17.0]}),
    Case("lean", "lean", 6, "lateral lean left then right"),
    Case("walk-turns", "walk-turns", 7, "walking with whole-body 90° turns every 10 s: zero rotation excursions"),
    Case("office-short", "office-short", 8, "3.5 min of everything (1 °/s bias)"),
    Case("office-short-loss-5pct", "office-short", 9, "the same with 5 % of notifications lost", loss_p=0.05),
    Case("office-worst", "office-short", 10, "1 °/s bias, ~30° mis-mount and 5 % loss together",
         {"gyro_bias_dps": 1.0, "mount_euler_deg": [-25.0, 12.0, -14.0]}, loss_p=0.05),
    Case("office-day", "office-day", 11, "an hour of office work (0.5 °/s bias, 2 % loss)", {"gyro_bias_dps": 0.5},
         loss_p=0.02),
    # Issue 10: a person, not a test rig.
    Case("combined", "combined", 12, "slouching while leaning, rotating slouched and standing, walking slouched"),
    Case("swivel", "swivel", 13, "swivel-chair turns (whole body, no trunk twist) beside trunk rotations"),
    Case("lying-positions", "lying-positions", 14, "lying on the back, right side, front and left side"),
    Case("sit-stand", "sit-stand", 15, "sit-to-stand and back in 1.2–4 s, standing still, walking, sitting down"),
    Case("slip", "slip", 16, "the sensor creeps 4° on the back over 5 min, re-seated 2 min later"),
    Case("slouch-creep", "slouch-creep", 17, "sinking into a slouch over 60–90 s"),
    Case("rotations-brisk-held", "rotations-brisk-held", 18,
         "20° twists out and back in < 0.5 s; rotations held 9–12 s"),
    Case("long-fidget", "long-fidget", 19, "ten minutes of fidgeting, then rotations and a slouch"),
    Case("outage-mid-slouch", "slouch", 20, "a 20 s outage in the middle of a slouch", outages_s=((42.0, 20.0),)),
    Case("outages-office", "office-short", 21, "outages of 4 s, 45 s and 2 min, 2 % loss",
         outages_s=((40.0, 4.0), (75.0, 45.0), (150.0, 120.0)), loss_p=0.02),
    Case("cal-hunched", "office-short", 22, "calibrated 8° hunched", calibration="hunched"),
    Case("cal-shallow", "office-short", 23, "calibration bend of 11° only", calibration="shallow"),
    Case("cal-moving", "office-short", 24, "fidgeting through the start of the hold", calibration="moving"),
    Case("cal-sideways", "office-short", 25, "calibration bend 12° to the side", calibration="sideways"),
    Case("noise-3x", "office-short", 26, "three times the default noise (stillness test)",
         {"acc_noise_g": 0.009, "gyro_noise_dps": 0.15}),
    Case("rate-50hz", "office-short", 27, "50 Hz", {"rate_hz": 50.0}),
    Case("rate-200hz", "office-short", 28, "200 Hz", {"rate_hz": 200.0}),
    Case("witmotion", "office-short", 29, "WT901BLE profile: one sample per notification, no sensor clock",
         profile="witmotion", loss_p=0.02),
    Case("per-notification", "office-short", 30, "pipeline fed every notification on its own", batch_s=0.0),
    Case("rotations-loss-50hz", "rotations-brisk-held", 31,
         "brisk twists and held rotations at 50 Hz, 5 % of notifications lost", {"rate_hz": 50.0},
         loss_p=0.05),
    Case("thingy52", "office-short", 32, "Thingy:52 profile: one sample per notification, no sensor clock, 2 % loss",
         profile="thingy52", loss_p=0.02),
    Case("sit-settle", "sit-settle", 33, "sitting down and at once leaning back, slouching or leaning; standing up "
         "and at once bending"),
    Case("cal-then-up", "up-and-go", 34, "a calibration bend too shallow to count, then up at once: the "
         "sit-to-stand's own trunk bend completes the calibration", calibration="too-shallow"),
    Case("cal-after-bed", "wake-up", 35, "lying in bed with the sensor on, sitting up and calibrating on the bed's "
         "edge", calibration=None),
    Case("walk-to-chair", "walk-to-chair", 36, "walking up to a chair and sitting straight down in 1.2–2.5 s"),
    Case("face-in", "office-short", 37, "the sensor taped face-in (its top against the back): the first bend is "
         "asked about and the wearer bends again (the scenario's own calibration moves)",
         {"mount_euler_deg": [183.0, 9.0, -50.0]}),
    Case("rotations-bias-5dps", "rotations", 38, "the rotations with 5 °/s gyro bias (an MPU-9250's initial bias "
         "is specified to ±5 °/s; nothing on the sensor removes it)", {"gyro_bias_dps": 5.0}),
    Case("office-bias-5dps", "office-short", 39, "office-short with 5 °/s gyro bias", {"gyro_bias_dps": 5.0}),
    # Off the body: the product is judged on what the user sees of a sensor taken off and left streaming.
    Case("taken-off", "taken-off", 40, "office work, the sensor taken off for a 17 min lunch flat on the desk, put "
         "back on 3° from where it sat, the calibration moves done again, more office work"),
    Case("left-on-chair", "left-on-chair", 41, "the sensor left standing as worn on the chair's back (reclined 8°) "
         "for 10 min, still as a sitter (no breathing): measured as worn until the off-body test"),
    # Breaks out of the gateway's reach: the link is lost during the walk, and comes back later.
    Case("out-of-reach", "out-of-reach", 42, "breaks out of the link's reach: lost 15 s into the walk and back 30 s "
         "after sitting down at the desk; lost and back while still walking", outages_s=((94.5, 60.0), (263.5, 20.0))),
    Case("out-of-reach-standing", "out-of-reach", 43, "a break out of the link's reach that ends at a standing desk: "
         "the link back 30 s into three minutes on the feet", outages_s=((412.5, 45.0),)),
]

RANDOM_DAY_SEEDS = tuple(range(1001, 1031))  # fixed before any result was seen

# Targets a named case does not meet, and why (docs/accuracy.md prints these; tests hold them exact).
_HUNCH = ("an 8° hunched hold is the reference the wearer chose; the pipeline notices it at the first 20 s of "
          "walking (2.6 min in) and asks to recalibrate — until then every angle is 8° off")
_SIDEWAYS = ("the bend's sideways part turns forward by 20°; walking corrects it after 20 s (2.6 min in), until "
             "then flexion and sideways bend mix")
_LOST_TWIST = ("a notification lost inside a twist that is out and back in half a second takes 40 ms of it at 50 Hz "
               "(two samples; five, as before the client asked for 50 ms per notification, lost every rotation of "
               "the case): how far the trunk turned in them is not in the data, and one such loss moves a peak by "
               "3.6–4.0° and the symmetry index of ten rotations by 5–6 points")
_STANDING_DESK = ("where a walk out of the link's reach ended is not in the data: with no steps, sit-down or stand-up "
                  "in the 30 s after the link's return, the pipeline takes a seat, as office workers sit about five "
                  "times as long as they stand still; here the walk ended at a standing desk, and its 120 s from then "
                  "to the next steps read sitting (taken as sitting at the return, 150 s)")
_SEAT_UNSEEN = ("the wearer sat down at the desk while the link was out; with no steps, sit-down or stand-up in the "
                "30 s after its return they are taken to have sat down unseen, and those 30 s read standing: 9 % here, "
                "where the desk session after the break is 2.5 min (3 % of a 15-min one). Taken as sitting at the "
                "return (tried: 1.7 % here), a wearer back on the feet read sitting until they sat down or walked: "
                "thirty random days with the link lost in every walk lose 1.5–1.6 % of their sitting with the 30 s, "
                "2.5–2.6 % without, 5.7–28.8 % before either")
KNOWN_MISSES: dict[str, dict[str, str]] = {
    "slip": {"flexion_rmse_deg": "the sensor slipping 4° down the back shifts flexion by 4° and looks exactly like "
                                 "a change of posture to one back IMU; re-seating puts it right"},
    "cal-hunched": {"flexion_rmse_deg": _HUNCH, "slouch_duration_error_pct": _HUNCH},
    "cal-sideways": {"flexion_rmse_deg": _SIDEWAYS, "lateral_rmse_deg": _SIDEWAYS},
    "rotations-loss-50hz": {"rotation_peak_error_deg": _LOST_TWIST, "si_error_points": _LOST_TWIST},
    "out-of-reach": {"sitting_error_pct": _SEAT_UNSEEN},
    "out-of-reach-standing": {name: _STANDING_DESK for name in ("sitting_error_pct", "activity_balanced_accuracy")},
}
# Targets the random days do not meet, and why.
_NO_WALK = ("a hunched hold or a sideways calibration bend on a day without walking: nothing a back IMU sees tells "
            "it apart from the wearer's own posture (days 1004, 1022 hunched; 1008, 1017, 1021 sideways), seated all "
            "day (1004 but its last 10 min, standing 4.6° back, within how people stand): the sideways ones have no "
            "stand-up whose forward bend would show forward (docs/pipeline.md, Upkeep)")
DAY_KNOWN_MISSES: dict[str, str] = {
    "worst day flexion/lateral RMSE °": _NO_WALK,
    "total slouch duration error %": _NO_WALK + ": an 8° hunch moves a quarter of the slouching across the line",
    "worst day slouch duration error %": _NO_WALK,
    "worst day SI error": "day 1012: a sit-to-stand read as a 19° rotation to the left while the forward direction "
                          "was still 17° off (a sideways calibration bend, corrected at the first walk, 42 min in); "
                          "the day has eight rotations, so one more moves the index by 17 points. Rotation taken as "
                          "the twist about the trunk's long axis would not see a wrong forward direction (tried: SI "
                          "error 0.8 here) but differs from the heading-based rotation of docs/conventions.md by up "
                          "to 4° when slouching and leaning together: `combined` and days 1005, 1026, 1029 then missed",
    "calibrations silently off": _NO_WALK,
}


def random_day_case(seed: int) -> Case:
    """A random day and the link it is received over (loss, outages, profile), all from the seed."""
    rng = np.random.default_rng([seed, 0x11A7])
    hours = float(np.round(rng.uniform(0.5, 1.3), 2))
    outages = random_outages(rng, hours * 3600.0)
    return Case(f"day-{seed}", f"random:{seed}:{hours}", seed, "random day", loss_p=float(rng.uniform(0.0, 0.05)),
                outages_s=outages, profile="witmotion" if rng.random() < 0.15 else "native", calibration=None)


DAYS = [random_day_case(s) for s in RANDOM_DAY_SEEDS]


@dataclass
class CaseResult:
    case: Case
    duration_s: float
    unseen_pct: float
    flagged_pct: float  # measured time after a "recalibrate" that was not yet answered
    flexion_rmse_deg: float | None
    lateral_rmse_deg: float | None
    slouch_truth_s: float
    slouch_measured_s: float
    slouch_duration_error_pct: float | None
    slouch: Matched
    slouch_onset_s: list[float]
    # Lean intervals (sitting, |lateral bend| > 6°), both sides: scored and shown, no target (issue 10 sets none).
    lean_truth_s: float
    lean_measured_s: float
    lean_duration_error_pct: float | None
    lean: Matched
    rotation: Matched
    rotation_peak_error_deg: float | None
    si_truth: float | None
    si_measured: float | None
    si_error_points: float | None
    sa_truth: float | None
    sa_measured: float | None
    chair_turns_as_rotations: int  # out-and-back chair turns within trunk range, counted by design
    excursions_while_walking: int
    activity_counts: np.ndarray
    sitting_truth_s: float
    sitting_measured_s: float
    transitions: Matched
    minute_vs_events_s: float  # |per-minute slouch + lean seconds − event durations|
    # Worn time: the truth's seconds on the body in time that reached the pipeline (lost packets' between received
    # samples included) once it measured, against the minutes'
    # worn_s total (what the user's day says); and the seconds off the body it measured as worn (the detection delay).
    worn_truth_s: float = 0.0
    worn_measured_s: float = 0.0
    off_truth_s: float = 0.0  # seconds off the body (handling included) once measuring began, seen or not
    off_as_worn_s: float = 0.0
    # Seconds on the body, received once measuring began, that the pipeline did not measure: a wearer judged off the
    # body (or samples dropped). Shrinking the truth with the output, the other scores would not show them.
    on_body_unmeasured_s: float = 0.0
    calibrations: list[dict[str, Any]] = field(default_factory=list)
    # Why the contract (contract/validation.py, as the bridge and the alert service read) refuses each minute it refuses
    # of those the pipeline made: none may be, or the wearer's minute is lost.
    minutes_refused: list[str] = field(default_factory=list)

    @property
    def slouch_f1(self) -> float | None:
        return self.slouch.f1

    @property
    def lean_f1(self) -> float | None:
        return self.lean.f1

    @property
    def rotation_f1(self) -> float | None:
        return self.rotation.f1

    @property
    def activity_balanced_accuracy(self) -> float | None:
        return balanced_accuracy(self.activity_counts, min_count=round(10 / 0.01))

    @property
    def sitting_error_pct(self) -> float | None:
        if self.sitting_truth_s < 60.0:
            return None  # too little sitting for a percentage to mean anything
        return 100.0 * abs(self.sitting_measured_s - self.sitting_truth_s) / self.sitting_truth_s

    @property
    def worn_error_pct(self) -> float | None:
        if self.worn_truth_s <= 0.0:
            return None
        return 100.0 * abs(self.worn_measured_s - self.worn_truth_s) / self.worn_truth_s

    @property
    def silently_off(self) -> int:
        return sum(c["outcome"] == "silently off" for c in self.calibrations)

    @property
    def calibrated(self) -> bool:
        return any(c["status"] == "calibrated" for c in self.calibrations)


def score(run: Run) -> CaseResult:
    tr, dt = run.truth, run.dt_s
    t_all = tr["t_s"]
    seen = seen_intervals(t_all[run.received], MAX_FILL_S, dt)
    flagged = _flagged_intervals(run)
    t_out = t_all[run.out_index]
    ctx_out = tr["context"][run.out_index]
    in_flag = np.zeros(len(t_out), bool)
    for a, b in flagged:
        in_flag |= (t_out >= a) & (t_out < b)
    # Off the body (and while handled) the truth's angles are the sensor's pose on the desk, no one's posture.
    on_body_out = ctx_out != OFF
    angle_ok = (ctx_out != "lying") & on_body_out & ~in_flag
    err_f = run.out["flexion_deg"][angle_ok] - tr["flexion_deg"][run.out_index][angle_ok]
    err_l = run.out["lateral_deg"][angle_ok] - tr["lateral_deg"][run.out_index][angle_ok]
    calibrated_from = float(t_out[0]) if len(t_out) else np.inf

    slouch_res = _score_slouch(run, seen, calibrated_from, flagged)
    lean_res = score_lean(run, seen, calibrated_from, flagged)
    rot_res = _score_rotation(run, seen, calibrated_from)
    # A sit-to-stand takes 1–4 s and the truth puts its boundary in the middle: the samples around a
    # change of activity are neither, and are left out of the per-sample confusion (sitting time,
    # from the per-minute metrics, and the transition F1 still pay for any delay).
    steady = _away_from_changes(t_all, tr["context"], ACTIVITY_MARGIN_S)[run.out_index] & on_body_out
    counts = confusion(ctx_out[steady], run.out["activity"][steady], ACTIVITIES)
    truth_tr = sit_stand_transitions(t_out, ctx_out)
    found_tr = sit_stand_transitions(t_out, run.out["activity"])
    before_tr = [c for c in sit_stand_transitions(t_all, tr["context"]) if c[0] < calibrated_from]
    minutes_s = sum(m.slouch_s + m.lean_left_s + m.lean_right_s for m in run.metrics)
    events_s = sum(e.end_s - e.start_s for e in run.events if e.kind in ("slouch", "lean"))
    measuring = t_all >= calibrated_from  # nothing counts as worn before the first calibration
    off_truth = tr["context"] == OFF
    measured = np.zeros(len(t_all), bool)
    measured[run.out_index] = True
    # The minutes count the samples a lost packet took as the time they were: so do the truths, sitting over the time
    # measured (bridged between measured samples), worn over the time seen (between received ones), as the user's day
    # is in time, not in packets received.
    counted = within(t_all, seen_intervals(t_all[run.out_index], MAX_FILL_S, dt))
    seen_mask = within(t_all, seen)
    return CaseResult(
        case=run.case, duration_s=run.sim.duration_s,
        unseen_pct=100.0 * (1.0 - run.received.mean()),
        flagged_pct=100.0 * in_flag.mean() if len(in_flag) else 0.0,
        flexion_rmse_deg=float(np.sqrt(np.mean(err_f**2))) if len(err_f) else None,
        lateral_rmse_deg=float(np.sqrt(np.mean(err_l**2))) if len(err_l) else None,
        **slouch_res, **lean_res, **rot_res,
        activity_counts=counts,
        # A chair's back is no one sitting: the minutes' sitting_s pays for any time off read as sitting.
        sitting_truth_s=float(np.count_nonzero(counted & (tr["context"] == SITTING)) * dt),
        sitting_measured_s=float(sum(m.sitting_s for m in run.metrics)),
        # A change found where the truth changed just before measuring began (a stand-up that completed the
        # calibration) matches that change (a hit); that change unmatched is not a miss (it was not measured).
        transitions=match_transitions(truth_tr, found_tr, TRANSITION_TOL_S, also=before_tr),
        minute_vs_events_s=abs(minutes_s - events_s),
        worn_truth_s=float(np.count_nonzero(seen_mask & measuring & ~off_truth) * dt),
        worn_measured_s=float(sum(m.worn_s for m in run.metrics)),
        off_truth_s=float(np.count_nonzero(measuring & off_truth) * dt),
        off_as_worn_s=float(np.count_nonzero(~on_body_out) * dt),
        on_body_unmeasured_s=float(np.count_nonzero(run.received & measuring & ~off_truth & ~measured) * dt),
        calibrations=_score_calibrations(run),
        minutes_refused=refused_minutes(run.metrics),
    )


def refused_minutes(minutes: list[MinuteMetrics]) -> list[str]:
    """Why the contract refuses each of these minutes it refuses, as a receiver a minute after each minute ended."""
    validators = load_validators()
    refused = []
    for m in minutes:
        try:
            parse("metrics", json.dumps(payload("eval", m)).encode(), validators, now_s=m.minute_start_s + 120.0)
        except Malformed as exc:
            refused.append(f"{m.minute_start_s:.0f}: {exc}")
    return refused


def _away_from_changes(t_s: np.ndarray, labels: np.ndarray, margin_s: float) -> np.ndarray:
    """True for samples more than margin_s from any change of label."""
    change_t = t_s[1:][labels[1:] != labels[:-1]]
    if len(change_t) == 0:
        return np.ones(len(t_s), bool)
    k = np.searchsorted(change_t, t_s)
    before = np.abs(t_s - change_t[np.clip(k - 1, 0, len(change_t) - 1)])
    after = np.abs(change_t[np.clip(k, 0, len(change_t) - 1)] - t_s)
    return cast(np.ndarray, np.minimum(before, after) > margin_s)


def _flagged_intervals(run: Run) -> list[tuple[float, float]]:
    """From each "recalibrate" (or provisional calibration) to the next calibration: the pipeline has
    said not to trust its angles."""
    out, start = [], None
    for c in run.calibrations:
        if (c.status == "recalibrate" or PROVISIONAL in c.message) and start is None:
            start = c.t_s
        elif c.status == "calibrated" and start is not None:
            out.append((start, c.t_s))
            start = None
    if start is not None:
        out.append((start, np.inf))
    return out


def _score_slouch(run: Run, seen: list[Interval], calibrated_from: float, flagged: list[Interval]) -> dict[str, Any]:
    truth, dont_care = slouch_truth(run.truth, run.dt_s, seen, calibrated_from, flagged)
    m, found, truth_s, measured_s = _score_held(run, "slouch", truth, dont_care, flagged)
    onset = [found[j][0] - truth[i][0] for i, j in (m.pairs or [])]
    return {"slouch_truth_s": truth_s, "slouch_measured_s": measured_s,
            "slouch_duration_error_pct": 100.0 * abs(measured_s - truth_s) / truth_s if truth_s > 0 else None,
            "slouch": m, "slouch_onset_s": onset}


def score_lean(run: Run, seen: list[Interval], calibrated_from: float, flagged: list[Interval]) -> dict[str, Any]:
    """Leans as slouches are scored; a lean reported on the wrong side matches nothing (a miss and a false one). The
    duration is both sides' total: the side is in the F1, and many days lean to one side only."""
    truth, dont_care = lean_truth(run.truth, run.dt_s, seen, calibrated_from, flagged)
    m, _, truth_s, measured_s = _score_held(run, "lean", truth, dont_care, flagged)
    return {"lean_truth_s": truth_s, "lean_measured_s": measured_s,
            "lean_duration_error_pct": 100.0 * abs(measured_s - truth_s) / truth_s if truth_s > 0 else None,
            "lean": m}


def _score_held(run: Run, kind: str, truth: list[tuple[float, float, str]], dont_care: list[bool],
                flagged: list[Interval]) -> tuple[Matched, list[tuple[float, float, str]], float, float]:
    """The match of the pipeline's episodes of this kind (slouch, lean) outside flagged time to the truth, the
    episodes, and the true and measured seconds that count."""
    found = [(e.start_s, e.end_s, getattr(e, "side", "")) for e in run.events if e.kind == kind
             and not any(min(e.end_s, f1) > max(e.start_s, f0) for f0, f1 in flagged)]
    m = match_with_dont_care(truth, dont_care, found)
    truth_s = sum(b - a for (a, b, _), dc in zip(truth, dont_care) if not dc)
    measured_s = sum(found[j][1] - found[j][0] for j in counted_found(truth, dont_care, found, m))
    return m, found, truth_s, measured_s


def slouch_truth(tr: dict[str, np.ndarray], dt_s: float, seen: list[Interval], calibrated_from: float,
                 flagged: list[Interval]) -> tuple[list[tuple[float, float, str]], list[bool]]:
    """The true slouch episodes that were measurable, and which of them are borderline ("don't care")."""
    upright = np.isin(tr["context"], ("sitting", "standing"))  # not lying, and not off the body
    return held_truth(tr["t_s"], tr["flexion_deg"], None, (SLOUCH_TRUTH_THRESHOLD_DEG, SLOUCH_TRUTH_EXIT_DEG,
                      SLOUCH_TRUTH_MIN_S), upright, dt_s, seen, calibrated_from, flagged)


def lean_truth(tr: dict[str, np.ndarray], dt_s: float, seen: list[Interval], calibrated_from: float,
               flagged: list[Interval]) -> tuple[list[tuple[float, float, str]], list[bool]]:
    """The true lean intervals (labelled by side) that were measurable, and which of them are borderline."""
    sitting = tr["context"] == SITTING  # the pipeline measures leans while sitting only (docs/pipeline.md)
    return held_truth(tr["t_s"], np.abs(tr["lateral_deg"]), tr["lateral_deg"], (LEAN_TRUTH_THRESHOLD_DEG,
                      LEAN_TRUTH_EXIT_DEG, LEAN_TRUTH_MIN_S), sitting, dt_s, seen, calibrated_from, flagged)


def held_truth(t_s: np.ndarray, x: np.ndarray, signed: np.ndarray | None, limits: tuple[float, float, float],
               allowed: np.ndarray, dt_s: float, seen: list[Interval], calibrated_from: float,
               flagged: list[Interval]) -> tuple[list[tuple[float, float, str]], list[bool]]:
    """The true runs of x above a threshold until below an exit, at least a duration long (limits), where allowed,
    that were measurable, and which of them are borderline ("don't care"). With `signed`, each is labelled with the
    side of its mean ("left": negative), as the pipeline labels a lean."""
    threshold, leave, min_s = limits

    def side(a: float, b: float) -> str:
        if signed is None:
            return ""
        i, j = np.searchsorted(t_s, [a, b - dt_s / 2])
        return "right" if signed[i:j + 1].sum() > 0 else "left"

    episodes = hysteresis_runs(t_s, x, threshold, leave, allowed, min_s, dt_s)
    truth, dont_care = [], []
    for a, b, peak in episodes:
        if b <= calibrated_from or any(min(b, f1) > max(a, f0) for f0, f1 in flagged):
            continue
        for p0, p1 in intersect((max(a, calibrated_from), b), seen):
            if p1 - p0 >= min_s - BORDER_S:
                truth.append((p0, p1, side(a, b)))
                dont_care.append(peak < threshold + BORDER_DEG or p1 - p0 < min_s + BORDER_S)
    # The border's other side: a posture held within a degree below the threshold, which an angle
    # within the 1° target may report (as rotations within a degree below their minimum).
    near = hysteresis_runs(t_s, x, threshold - BORDER_DEG, leave, allowed, min_s - BORDER_S, dt_s)
    for a, b, peak in near:
        if peak <= threshold:
            truth.append((a, b, side(a, b)))
            dont_care.append(True)
    return truth, dont_care


def counted_found(truth: list[tuple[float, float, str]], dont_care: list[bool],
                  found: list[tuple[float, float, str]], m: Matched) -> list[int]:
    """Indices of the found events that count in totals: all but reports of borderline truth (one
    matched to scored truth counts, even if it also overlaps a borderline interval)."""
    scored_j = {j for _, j in (m.pairs or [])}
    return [j for j, f in enumerate(found) if j in scored_j
            or not any(dc and min(f[1], t[1]) > max(f[0], t[0]) for t, dc in zip(truth, dont_care))]


def _score_rotation(run: Run, seen: list[Interval], calibrated_from: float) -> dict[str, Any]:
    """Truth: what the pipeline promises to report (docs/pipeline.md): out-and-back turns of the upper
    trunk against the facing direction, ≥ min_peak_deg, within the trunk's range (max_peak_deg), at
    most max_s long — trunk rotations, and chair turns that come back, which one back IMU cannot tell
    apart. A chair turn beyond the trunk's range must not be reported."""
    s = RotationSettings()
    ev = run.sim.events()
    ctx, t_all = run.truth["context"], run.truth["t_s"]
    items = [(e.start_s, e.end_s, e.side, e.peak_deg, "trunk") for e in ev.rotation_excursions]
    items += [(e.start_s, e.end_s, e.side, e.turn_deg, "chair") for e in ev.swivel_turns if e.returns]
    truth, dont_care, kind, peaks, big = [], [], [], [], []
    for a, b, side, peak, what in sorted(items):
        if a < calibrated_from:
            continue
        if what == "chair" and peak > s.max_peak_deg + 5.0:
            big.append((a, b))
            continue
        if peak < s.min_peak_deg - BORDER_DEG or (b - a) > s.max_s + 2.0:
            continue
        sel = (t_all >= a) & (t_all < b)
        truth.append((a, b, side))
        peaks.append(peak)
        kind.append(what)
        dont_care.append(abs(peak - s.min_peak_deg) < BORDER_DEG or abs(peak - s.max_peak_deg) < 5.0
                         or abs((b - a) - s.max_s) < 2.0 or not covered((a, b), seen)
                         or bool(np.isin(ctx[sel], ("walking", "lying")).any()))
    found_ev = [e for e in run.events if e.kind == "rotation"]
    found = [(e.start_s, e.end_s, e.side) for e in found_ev]
    m = match_with_dont_care(truth, dont_care, found)
    m.fp += sum(any(min(b, f[1]) > max(a, f[0]) for f in found) for a, b in big)  # a big chair turn reported
    peak_err = [abs(found_ev[j].peak_deg - peaks[i]) for i, j in (m.pairs or [])]
    # Symmetry over what is scored: borderline truth, and reports of it, are left out of both sides.
    scored = [(side, p) for (_, _, side), p, dc in zip(truth, peaks, dont_care) if not dc]
    counted = [found_ev[j] for j in counted_found(truth, dont_care, found, m)]
    right_t = sum(p for side, p in scored if side == "right")
    left_t = sum(p for side, p in scored if side == "left")
    right_m = sum(e.peak_deg for e in counted if e.side == "right")
    left_m = sum(e.peak_deg for e in counted if e.side == "left")
    si_t, si_m = symmetry_index(right_t, left_t), symmetry_index(right_m, left_m)
    walking = [(iv.start_s, iv.end_s) for iv in ev.context_intervals if iv.activity == "walking"]
    during_walk = sum(any(a <= e.start_s <= b or a <= e.end_s <= b for a, b in walking) for e in found_ev)
    return {"rotation": m, "rotation_peak_error_deg": max(peak_err, default=None),
            "si_truth": si_t, "si_measured": si_m,
            "si_error_points": abs(si_m - si_t) if si_t is not None and si_m is not None else None,
            "sa_truth": symmetry_angle(right_t, left_t), "sa_measured": symmetry_angle(right_m, left_m),
            "chair_turns_as_rotations": sum(kind[i] == "chair" for i, _ in (m.pairs or [])),
            "excursions_while_walking": during_walk}


def _calibration_error_deg(run: Run, t_s: float, r_sensor_trunk: np.ndarray) -> float:
    """The angle between the pipeline's sensor → trunk rotation and the truth's at t_s."""
    true = run.sim.r_trunk_sensor_at(np.array([t_s]))[0].T
    return rotation_angle_deg(r_sensor_trunk, true)


def _score_calibrations(run: Run) -> list[dict[str, Any]]:
    """Each calibration outcome: refused (saying what to do), within 3°, flagged later, or silently off."""
    out = []
    for k, c in enumerate(run.calibrations):
        if c.status == "refused":
            out.append({"status": "refused", "t_s": c.t_s, "outcome": "refused", "message": c.message})
            continue
        if c.status != "calibrated" or c.r_sensor_trunk is None:
            continue
        err = _calibration_error_deg(run, c.t_s, c.r_sensor_trunk)
        later = run.calibrations[k + 1:]
        # A walking correction that leaves the calibration more than 3° off fixed nothing (it turns forward about the
        # up axis; a hunched hold's error is in the up axis): this calibration is judged past it, so a flag after it
        # still flags this one, and with none it was silently off. (Taken as "corrected", a 7.8° hunch read as such
        # on an unseen day, seed 948277, after a +3° turn that left it 4.4° off.)
        nxt = next((x for x in later if x.status == "calibrated" and not (
            "corrected" in x.message and x.r_sensor_trunk is not None
            and _calibration_error_deg(run, x.t_s, x.r_sensor_trunk) > CALIBRATION_TOL_DEG)), None)
        nxt_t = np.inf if nxt is None else nxt.t_s
        flag = next((x.t_s for x in later if x.status == "recalibrate" and x.t_s < nxt_t), None)
        if err <= CALIBRATION_TOL_DEG:
            outcome = "within 3°"
        elif PROVISIONAL in c.message:
            outcome = "provisional"  # it said so, and what would finish it; its angles count as flagged
        elif flag is not None:
            outcome = "flagged"
        elif nxt is not None and "corrected" in nxt.message:
            outcome, flag = "corrected", nxt.t_s  # the pipeline found the error itself and fixed it
        else:
            outcome = "silently off"
        out.append({"status": "calibrated", "t_s": c.t_s, "error_deg": err, "outcome": outcome,
                    "flag_after_s": None if flag is None else flag - c.t_s, "message": c.message})
    return out


def misses(r: CaseResult) -> dict[str, str]:
    """The targets the case misses: name → "value (target)". A value of None: not applicable here."""
    out = {}
    for name, limit in TARGETS.items():
        value = getattr(r, name)
        if value is None:
            continue
        higher_better = name.endswith("f1") or name.endswith("accuracy")
        if (value < limit) if higher_better else (value > limit):
            shown = "none (nothing to score)" if value is None else f"{value:.3g}"
            out[name] = f"{name} = {shown} (target {'≥' if higher_better else '≤'} {limit})"
    if r.on_body_unmeasured_s > ON_BODY_UNMEASURED_MAX_S:
        out["on_body_unmeasured_s"] = (f"on_body_unmeasured_s = {r.on_body_unmeasured_s:.3g} (target ≤ "
                                       f"{ON_BODY_UNMEASURED_MAX_S}: a wearer judged off the body)")
    if r.excursions_while_walking:
        out["excursions_while_walking"] = f"{r.excursions_while_walking} rotation excursions during walking (target 0)"
    if r.silently_off:
        out["silently_off"] = f"{r.silently_off} calibration(s) silently off"
    if not r.calibrated:
        out["calibrated"] = "never calibrated"
    return out


def failures(r: CaseResult) -> list[str]:
    return list(misses(r).values())


# A known miss is held to the figure docs/accuracy.md shows for it: further off its target than that by more than
# this share of how far off the page says it is, and it is a regression (runs are seeded: the slack is for another
# machine's floating point) …
KNOWN_MISS_SLACK = 0.05
PAGE_ROUNDING = 0.005  # … or than the page's rounding: three significant digits, half the last one at most
DAYS_WHERE = "random days"  # the known misses' and the figures' key for the random days' summary


def target_of(name: str) -> tuple[float, bool] | None:
    """A target's limit and whether higher is better (misses(), day_misses()); None for one without a figure."""
    if name in TARGETS:
        return TARGETS[name], name.endswith("f1") or name.endswith("accuracy")
    if name in DAY_TARGETS:
        return DAY_TARGETS[name], "F1" in name or "accuracy" in name
    return {"on_body_unmeasured_s": (ON_BODY_UNMEASURED_MAX_S, False), "excursions_while_walking": (0.0, False),
            "silently_off": (0.0, False)}.get(name)


def case_figures(r: CaseResult) -> dict[str, float | None]:
    """The measured figure of each target the case misses (None: never calibrated, no figure)."""
    return {name: None if target_of(name) is None else float(getattr(r, name)) for name in misses(r)}


def regressions(where: str, missed: dict[str, str], figures: dict[str, float | None], known: Collection[str],
                documented: dict[str, float]) -> list[str]:
    """Worse than docs/accuracy.md says, for one case or the random days (where): a target missed that is not a
    known miss, or a known one further off its target than the page's figure for it (documented) by more than
    KNOWN_MISS_SLACK of its distance. missed: misses() or day_misses(); figures: the measured values."""
    out = []
    for name, said in missed.items():
        if name not in known:
            out.append(f"{where}: {said} (not a known miss)")
            continue
        target, value, was = target_of(name), figures.get(name), documented.get(name)
        if target is None or value is None or was is None:  # nothing to hold it to: the miss is what is listed
            continue
        limit, higher_better = target
        off, was_off = (limit - value, limit - was) if higher_better else (value - limit, was - limit)
        if off > was_off + max(KNOWN_MISS_SLACK * was_off, PAGE_ROUNDING * abs(was)):
            out.append(f"{where}: {said}, worse than docs/accuracy.md's {was:g}")
    return out


_SECTION = r"<!-- {0} -->\n(.*?)\n<!-- end {0} -->"
_COUNTED = {"excursions_while_walking": r"(\d+) rotation excursions during walking",
            "silently_off": r"(\d+) calibration\(s\) silently off"}


def documented_figures(page: str) -> dict[str, dict[str, float]]:
    """The figures docs/accuracy.md shows for the targets missed (as `--write` wrote them): per named case, from the
    accuracy table's "meets targets" column; for the random days (DAYS_WHERE), every figure of their summary."""
    out: dict[str, dict[str, float]] = {}
    for section in re.findall(_SECTION.format("accuracy table"), page, re.S):
        for row in section.splitlines()[2:]:
            cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
            if not cells[-1].startswith("no: "):
                continue
            for said in cells[-1].removeprefix("no: ").split("; "):
                names = [n for n in [*TARGETS, "on_body_unmeasured_s"] if said.startswith(f"{n} = ")]
                if names and (m := re.match(r"[-+0-9.e]+", said.removeprefix(f"{names[0]} = "))):
                    out.setdefault(cells[0], {})[names[0]] = float(m.group())
                for name, pattern in _COUNTED.items():
                    if m := re.fullmatch(pattern, said):
                        out.setdefault(cells[0], {})[name] = float(m.group(1))
    for section in re.findall(_SECTION.format("random days summary"), page, re.S):
        for row in section.splitlines()[2:]:
            name, value, _ = [c.strip() for c in row.strip().strip("|").split(" | ")]
            if re.fullmatch(r"[-+0-9.e]+", value):
                out.setdefault(DAYS_WHERE, {})[name] = float(value)
    return out


def evaluate(cases: list[Case], workers: int | None = None) -> list[CaseResult]:
    """Score the cases, in parallel over the machine's cores (each case is independent)."""
    workers = workers or min(len(cases), os.cpu_count() or 1)
    if workers <= 1:
        return [_run_and_score(c) for c in cases]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_run_and_score, cases))


def _run_and_score(case: Case) -> CaseResult:
    return score(run_case(case))


def day_summary(days: list[CaseResult]) -> dict[str, float | None]:
    """The issue's figures over the random days."""
    # A day whose every angle was flagged (a provisional calibration all day) has no RMSE: it is left
    # out of the median and worst, and counted apart.
    # The lateral RMSE is None exactly when the flexion one is (score(): the same samples).
    rmse = [max(r.flexion_rmse_deg, cast(float, r.lateral_rmse_deg)) for r in days if r.flexion_rmse_deg is not None]
    truth_s = sum(r.slouch_truth_s for r in days)
    meas_s = sum(r.slouch_measured_s for r in days)
    lean_t, lean_m = sum(r.lean_truth_s for r in days), sum(r.lean_measured_s for r in days)
    slouch, lean, rot, trans = Matched(), Matched(), Matched(), Matched()
    for r in days:
        slouch += r.slouch
        lean += r.lean
        rot += r.rotation
        trans += r.transitions
    counts = cast(np.ndarray, sum(r.activity_counts for r in days))  # an array: max(rmse) below needs days anyway
    sit_t, sit_m = sum(r.sitting_truth_s for r in days), sum(r.sitting_measured_s for r in days)
    return {
        "days": len(days), "hours": sum(r.duration_s for r in days) / 3600.0,
        "days with flagged angles all day": len(days) - len(rmse),
        "median day flexion/lateral RMSE °": float(np.median(rmse)), "worst day flexion/lateral RMSE °": max(rmse),
        "total slouch duration error %": 100.0 * abs(meas_s - truth_s) / truth_s,
        "worst day slouch duration error %": max((r.slouch_duration_error_pct or 0.0) for r in days),
        "slouch F1": slouch.f1,
        "total lean duration error %": 100.0 * abs(lean_m - lean_t) / lean_t if lean_t > 0 else None,
        "worst day lean duration error %": max((r.lean_duration_error_pct or 0.0) for r in days),
        "lean F1": lean.f1,
        "rotation F1": rot.f1,
        "worst rotation peak error °": max((r.rotation_peak_error_deg or 0.0) for r in days),
        "worst day SI error": max((r.si_error_points or 0.0) for r in days),
        "sitting-time error %": 100.0 * abs(sit_m - sit_t) / sit_t,
        "worst day sitting-time error %": max((r.sitting_error_pct or 0.0) for r in days),
        "activity balanced accuracy": balanced_accuracy(counts),
        "sit/stand transition F1": trans.f1,
        "excursions from whole-body turns while walking": sum(r.excursions_while_walking for r in days),
        "calibrations silently off": sum(r.silently_off for r in days),
        "median slouch onset error s": float(np.median([x for r in days for x in r.slouch_onset_s] or [0.0])),
        "p95 slouch onset error s": float(np.percentile([x for r in days for x in r.slouch_onset_s] or [0.0], 95)),
        "worst minutes-vs-events s": max(r.minute_vs_events_s for r in days),
        "flagged time %": float(np.mean([r.flagged_pct for r in days])),
    }


def day_misses(summary: dict[str, float | None]) -> dict[str, str]:
    out = {}
    for name, limit in DAY_TARGETS.items():
        value = summary[name]
        higher_better = "F1" in name or "accuracy" in name
        if value is None or ((value < limit) if higher_better else (value > limit)):
            shown = "none (nothing to score)" if value is None else f"{value:.3g}"
            out[name] = f"{name} = {shown} (target {'≥' if higher_better else '≤'} {limit})"
    return out


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def case_table(results: list[CaseResult]) -> str:
    head = ("| case | what | min | unseen % | flexion RMSE ° | lateral RMSE ° | slouch s truth / measured "
            "| slouch error % | slouch F1 | onset s | lean s truth / measured | lean error % | lean F1 "
            "| rotation F1 | peak error ° | SI truth / measured "
            "| chair turns counted | sitting error % | activity bal. acc. | sit/stand F1 | calibration "
            "| worn s truth / measured (error %) | off s / counted worn | meets targets |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cal = ", ".join(c["outcome"] + (f" {c['error_deg']:.1f}°" if "error_deg" in c else "") for c in r.calibrations)
        onset = f"{np.median(r.slouch_onset_s):+.1f}" if r.slouch_onset_s else "–"
        miss = failures(r)
        worn = f"{r.worn_truth_s:.1f} / {r.worn_measured_s:.1f} ({_fmt(r.worn_error_pct)})"
        off = f"{r.off_truth_s:.1f} / {r.off_as_worn_s:.1f}" if r.off_truth_s else "–"
        rows.append(
            f"| {r.case.name} | {r.case.what} | {r.duration_s / 60:.1f} | {r.unseen_pct:.1f} "
            f"| {_fmt(r.flexion_rmse_deg)} | {_fmt(r.lateral_rmse_deg)} "
            f"| {r.slouch_truth_s:.1f} / {r.slouch_measured_s:.1f} | {_fmt(r.slouch_duration_error_pct)} "
            f"| {_fmt(r.slouch_f1, 3)} | {onset} | {r.lean_truth_s:.1f} / {r.lean_measured_s:.1f} "
            f"| {_fmt(r.lean_duration_error_pct)} | {_fmt(r.lean_f1, 3)} "
            f"| {_fmt(r.rotation_f1, 3)} | {_fmt(r.rotation_peak_error_deg)} "
            f"| {_fmt(r.si_truth, 1)} / {_fmt(r.si_measured, 1)} | {r.chair_turns_as_rotations} "
            f"| {_fmt(r.sitting_error_pct, 1)} | {_fmt(r.activity_balanced_accuracy, 3)} | {_fmt(r.transitions.f1, 2)} "
            f"| {cal or '–'} | {worn} | {off} | {'yes' if not miss else 'no: ' + '; '.join(miss)} |")
    return "\n".join(rows)


def summary_table(summary: dict[str, float | None]) -> str:
    rows = ["| over the random days | measured | target |", "|---|---|---|"]
    for name, value in summary.items():
        target = DAY_TARGETS.get(name)
        higher = "F1" in name or "accuracy" in name
        rows.append(f"| {name} | {_fmt(value, 3) if isinstance(value, float) else value} | "
                    f"{'–' if target is None else ('≥ ' if higher else '≤ ') + str(target)} |")
    return "\n".join(rows)


def known_misses_text() -> str:
    rows = ["| where | target not met | why |", "|---|---|---|"]
    for case, why in KNOWN_MISSES.items():
        for target, reason in why.items():
            rows.append(f"| {case} | {target} | {reason} |")
    for target, reason in DAY_KNOWN_MISSES.items():
        rows.append(f"| random days | {target} | {reason} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="Pipeline accuracy against the virtual sensor's ground truth")
    parser.add_argument("--write", action="store_true", help=f"write the tables into {DOC}")
    parser.add_argument("--case", action="append", help="only these named cases (or day-SEED)")
    parser.add_argument("--no-days", action="store_true", help="skip the random days")
    parser.add_argument("--workers", type=int, help="processes (default: one per core)")
    args = parser.parse_args()
    if args.write and (args.case or args.no_days):  # the tables are the whole run's: a few rows would replace them
        parser.error("--write writes the whole run's tables; run it without --case and --no-days")
    named = [c for c in CASES if not args.case or c.name in args.case]
    days = [] if args.no_days else [c for c in DAYS if not args.case or c.name in args.case]
    results = evaluate(named + days, args.workers)
    named_r, days_r = results[:len(named)], results[len(named):]
    print(case_table(named_r))
    if days_r:
        print(case_table(days_r))
        summary = day_summary(days_r)
        print(summary_table(summary))
    # Exit 1 only for worse than documented (read before --write rewrites the page): the known misses are what
    # docs/accuracy.md says, not a failure of this run.
    documented = documented_figures(DOC.read_text() if DOC.exists() else "")
    judged = [(r.case.name, misses(r), case_figures(r), KNOWN_MISSES.get(r.case.name, {})) for r in named_r]
    if len(days_r) == len(DAYS):  # the page's figures are the thirty days'; a few of them are no such summary
        summary = day_summary(days_r)
        judged.append((DAYS_WHERE, day_misses(summary), dict(summary), DAY_KNOWN_MISSES))
    elif days_r:
        print(f"{DAYS_WHERE}: {len(days_r)} of {len(DAYS)} run; their summary is held to the page only over all",
              file=sys.stderr)
    worse = []
    for where, missed, figures, known in judged:
        for name, said in missed.items():
            if name in known:
                was = documented.get(where, {}).get(name)
                print(f"known miss (docs/accuracy.md): {where}: {said}"
                      + (f" (listed at {was:g})" if was is not None else ""), file=sys.stderr)
        for name in known.keys() - missed.keys():
            print(f"{where}: {name} now met; take it out of evaluation.accuracy's known misses", file=sys.stderr)
        worse += regressions(where, missed, figures, known, documented.get(where, {}))
    for why in worse:
        print(f"regression: {why}", file=sys.stderr)
    if args.write:
        write_section(DOC, "known misses", known_misses_text())
        write_section(DOC, "accuracy table", case_table(named_r))
        if days_r:
            write_section(DOC, "random days summary", summary_table(day_summary(days_r)))
            write_section(DOC, "random days table", case_table(days_r))
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
