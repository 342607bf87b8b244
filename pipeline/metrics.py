"""Per-minute metrics for one device, from per-sample context and detected intervals.

A minute is handed out `hold_s` after it ends, because a slouch or lean is confirmed only after
its dwell time and then counts from where it started: the hold lets that time land in the right
minute. After a lost link the minutes from the link's return wait longer (`wait_from`), until the
rotations found since are known. Only the minutes held or waiting are kept in memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from .activity import LYING_CODE, SITTING_CODE
from .events import (
    ACTIVITIES,
    LYING,
    MINUTE_S,
    SITTING,
    SITTING_GAP_S,
    STANDING,
    WALKING,
    MinuteMetrics,
    RotationExcursion,
)

_FIELD_OF = {SITTING: "sitting_s", STANDING: "standing_s", WALKING: "walking_s", LYING: "lying_s"}
_ACTIVITY_FIELDS = [_FIELD_OF[name] for name in ACTIVITIES]  # by activity code


class MinuteAggregator:
    def __init__(self, hold_s: float = 6.0, sitting_gap_s: float = SITTING_GAP_S):
        self.hold_s = hold_s
        self.sitting_gap_s = sitting_gap_s
        self._open: dict[int, MinuteMetrics] = {}
        self._sums: dict[int, dict[str, float]] = {}
        self._sitting_since_s: float | None = None
        self._last_t_s = -math.inf  # the last sample added
        # The minute flush() handed out unfinished (a lost link): more of it, if its samples come back, is handed
        # out merged with it, whole, as the newest record of a minute is the one kept downstream.
        self._handed: MinuteMetrics | None = None
        self._waiting_from_s = math.inf  # minutes after this wait (wait_from)

    def _minute(self, k: int) -> MinuteMetrics:
        if k not in self._open:
            self._open[k] = MinuteMetrics(minute_start_s=k * MINUTE_S)
            self._sums[k] = {"flexion": 0.0, "lateral": 0.0, "n": 0, "lean_left": 0.0, "lean_right": 0.0}
        return self._open[k]

    def add_samples(self, t_s: np.ndarray, flexion_deg: np.ndarray, lateral_deg: np.ndarray,
                    activity: np.ndarray, dt_s: float) -> None:
        """Per-sample angles and activity codes (pipeline/activity.py: indices into ACTIVITIES)."""
        if len(t_s) == 0:
            return
        first, last = math.floor(t_s[0] / MINUTE_S), math.floor(t_s[-1] / MINUTE_S)
        if first == last:  # most batches lie inside one minute: no per-minute selection
            self._add_minute(first, t_s, flexion_deg, lateral_deg, activity, dt_s)
            return
        minute = np.floor(t_s / MINUTE_S).astype(np.int64)
        for k in np.unique(minute).tolist():
            sel = minute == k
            self._add_minute(k, t_s[sel], flexion_deg[sel], lateral_deg[sel], activity[sel], dt_s)

    def _add_minute(self, k: int, t_s: np.ndarray, flexion_deg: np.ndarray, lateral_deg: np.ndarray,
                    activity: np.ndarray, dt_s: float) -> None:
        m, sums = self._minute(k), self._sums[k]
        m.worn_s += len(t_s) * dt_s
        counts = np.bincount(activity, minlength=len(ACTIVITIES)).tolist()
        for code, n in enumerate(counts):
            fld = _ACTIVITY_FIELDS[code]
            setattr(m, fld, getattr(m, fld) + n * dt_s)
        if counts[LYING_CODE]:
            # A body lying down has angles (flexion −90° face up) but no posture: a nap read as a minute bent back
            # 60°, and lateral bend is not even defined there (flexion ±90° is the angles' gimbal point: +77° read).
            upright = activity != LYING_CODE
            flexion_deg, lateral_deg = flexion_deg[upright], lateral_deg[upright]
        sums["flexion"] += float(flexion_deg.sum())
        sums["lateral"] += float(lateral_deg.sum())
        sums["n"] += len(flexion_deg)
        # The sitting stretch as it stands at this minute's last sample so far: the minute is
        # handed out hold_s later, when the wearer may have stood up (or sat down) already.
        self._sitting_since_s = _sitting_since(t_s, activity, self._sitting_since_s, self._last_t_s,
                                               self.sitting_gap_s)
        self._last_t_s = float(t_s[-1])
        m.sitting_since_s = self._sitting_since_s
        m.seen_until_s = min(self._last_t_s + dt_s, (k + 1) * MINUTE_S)

    def resume(self, sitting_since_s: float | None, last_t_s: float) -> None:
        """Go on from another run that ended at last_t_s (a gateway restarted): its sitting stretch, if any, goes on
        if the first samples here come within sitting_gap_s and sitting, as within one run."""
        self._sitting_since_s, self._last_t_s = sitting_since_s, last_t_s

    @property
    def sitting_since_s(self) -> float | None:
        """Start of the sitting stretch at the last sample added (None when it is not sitting)."""
        return self._sitting_since_s

    def add_interval(self, kind: str, start_s: float, end_s: float, mean_deg: float = 0.0) -> None:
        """Seconds of a slouch ("slouch") or lean ("lean_left"/"lean_right") spread over the minutes it covers."""
        k = math.floor(start_s / MINUTE_S)
        while k * MINUTE_S < end_s:
            lo, hi = max(start_s, k * MINUTE_S), min(end_s, (k + 1) * MINUTE_S)
            m = self._minute(k)
            setattr(m, f"{kind}_s", getattr(m, f"{kind}_s") + (hi - lo))
            if kind.startswith("lean"):
                self._sums[k][kind] += mean_deg * (hi - lo)
            k += 1

    def add_rotation(self, event: RotationExcursion) -> None:
        m = self._minute(math.floor(event.end_s / MINUTE_S))
        side = event.side
        setattr(m, f"rotations_{side}", getattr(m, f"rotations_{side}") + 1)
        cum = f"rotation_{side}_cumulative_deg"
        setattr(m, cum, getattr(m, cum) + event.peak_deg)
        peak = f"rotation_{side}_peak_max_deg"
        setattr(m, peak, max(getattr(m, peak) or 0.0, event.peak_deg))

    def add_lost(self, t_s: float, lost_samples: int, most: int) -> None:
        """Samples lost right before the sample at t_s, counted in its minute: up to `most` in a minute (with what a
        part of it handed out unfinished counted), the samples a minute holds at the rate asked. A link is reconnected
        when silent for 3 s (sensor/link.py, watchdog_s), so more is no loss of packets: it is an arrival-timed sensor's
        count over notifications that stopped for minutes within one connection (35 min at 50 Hz: 105,000), which a
        minute cannot have lost and the contract refuses (at most 120 s at the fastest rate): the status's
        lost_samples keeps the whole count."""
        if lost_samples:
            m = self._minute(math.floor(t_s / MINUTE_S))
            handed = self._handed
            before = handed.lost_samples if handed is not None and handed.minute_start_s == m.minute_start_s else 0
            m.lost_samples = min(m.lost_samples + lost_samples, max(m.lost_samples, most - before))

    def wait_from(self, t_s: float | None) -> None:
        """Events that end at t_s or later may still come for a while (rotations held after a lost link or a restart):
        the minutes after t_s wait, ended or not, until this is called with None."""
        self._waiting_from_s = math.inf if t_s is None else t_s

    def ready(self, now_s: float) -> list[MinuteMetrics]:
        """Minutes that ended more than hold_s before `now_s`, and that wait for nothing (wait_from)."""
        done = [k for k in sorted(self._open)
                if (k + 1) * MINUTE_S + self.hold_s <= now_s and (k + 1) * MINUTE_S <= self._waiting_from_s]
        return [self._finish(k) for k in done]

    def flush(self) -> list[MinuteMetrics]:
        """Every minute still open, the last one unfinished (the data ended, or stopped coming for now)."""
        out = [self._finish(k) for k in sorted(self._open)]
        if out:
            self._handed = out[-1]
        return out

    def ended(self, now_s: float) -> list[MinuteMetrics]:
        """Copies of the minutes that ended by `now_s` and are still held (hold_s), as ready() would hand them out
        now: what a crash of the process would lose whole, though it is over (the gateway keeps them on disk)."""
        out = []
        for k in sorted(self._open):
            if (k + 1) * MINUTE_S <= now_s:
                m = self._computed(dataclasses.replace(self._open[k]), self._sums[k])
                handed = self._handed
                out.append(merge_minutes(handed, m) if handed is not None and handed.minute_start_s == m.minute_start_s
                           else m)
        return out

    def _finish(self, k: int) -> MinuteMetrics:
        m = self._finished(k)
        handed, self._handed = self._handed, None
        if handed is not None and handed.minute_start_s == m.minute_start_s:
            return merge_minutes(handed, m)
        return m

    def _finished(self, k: int) -> MinuteMetrics:
        return self._computed(self._open.pop(k), self._sums.pop(k))

    @staticmethod
    def _computed(m: MinuteMetrics, sums: dict[str, float]) -> MinuteMetrics:
        """m with its means, from its sums, and its slouch and lean within its worn seconds."""
        if sums["n"]:
            m.flexion_mean_deg = sums["flexion"] / sums["n"]
            m.lateral_mean_deg = sums["lateral"] / sums["n"]
        if m.lean_left_s:
            m.lean_left_mean_deg = sums["lean_left"] / m.lean_left_s
        if m.lean_right_s:
            m.lean_right_mean_deg = sums["lean_right"] / m.lean_right_s
        # A minute's slouched and leaning seconds are seconds it was worn. Slouch and lean are counted as spans of time
        # and worn as samples × the period, which part at a minute's edge: the last sample before it counts its whole
        # period there, the span after the edge here (a minute cut short by a lost link sent 26.808 s of slouch in
        # 26.805 s worn at 200 Hz); and sample times the clock map slews (sensor/timeline.py) lie up to 5 % further
        # apart than the period.
        m.slouch_s = min(m.slouch_s, m.worn_s)
        if (leaning_s := m.lean_left_s + m.lean_right_s) > m.worn_s:  # one side at a time: both within worn
            share = m.worn_s / leaning_s
            m.lean_left_s, m.lean_right_s = m.lean_left_s * share, m.lean_right_s * share
        for side in ("left", "right"):
            if count := getattr(m, f"rotations_{side}"):
                setattr(m, f"rotation_{side}_peak_mean_deg", getattr(m, f"rotation_{side}_cumulative_deg") / count)
        return m


# How two records of one minute combine (merge_minutes); every field of MinuteMetrics is in exactly one of these.
SUMMED = ("worn_s", "sitting_s", "standing_s", "walking_s", "lying_s", "slouch_s", "lean_left_s", "lean_right_s",
          "rotations_left", "rotations_right", "rotation_left_cumulative_deg", "rotation_right_cumulative_deg",
          "lost_samples")


def upright_s(m: MinuteMetrics) -> float:
    """The seconds flexion_mean_deg and lateral_mean_deg are over: worn and not lying."""
    return m.worn_s - m.lying_s


MEAN_BY: dict[str, Callable[[MinuteMetrics], float]] = {  # a mean, and the seconds it is over
    "flexion_mean_deg": upright_s, "lateral_mean_deg": upright_s,
    "lean_left_mean_deg": lambda m: m.lean_left_s, "lean_right_mean_deg": lambda m: m.lean_right_s}
# … and where its data ends: the later of the two (a part that holds only an episode's seconds has none)
MAXED = ("rotation_left_peak_max_deg", "rotation_right_peak_max_deg", "seen_until_s")
PER_ROTATION = {"rotation_left_peak_mean_deg": ("rotation_left_cumulative_deg", "rotations_left"),
                "rotation_right_peak_mean_deg": ("rotation_right_cumulative_deg", "rotations_right")}
LATER = ("minute_start_s", "sitting_since_s", "kind")  # as the later record says: at the minute's last sample
SECONDS_IN_MINUTE = tuple(name for name in SUMMED if name.endswith("_s"))  # each at most the time the minute saw


def merge_minutes(earlier: MinuteMetrics, later: MinuteMetrics) -> MinuteMetrics:
    """One minute measured in two parts by two runs (a gateway stopped and started again within it), as one run
    would have counted it: seconds and counts added, means weighted by their seconds, maxima the larger; the
    sitting stretch as the later part has it (it goes on across the restart if the later run resumed it)."""
    if earlier.minute_start_s != later.minute_start_s:
        raise ValueError(f"not one minute: {earlier.minute_start_s} and {later.minute_start_s}")
    m = dataclasses.replace(later)
    for name in SUMMED:
        setattr(m, name, getattr(earlier, name) + getattr(later, name))
    for name, over in MEAN_BY.items():
        parts = [(getattr(r, name), over(r)) for r in (earlier, later) if getattr(r, name) is not None]
        weight = sum(w for _, w in parts)
        setattr(m, name, sum(v * w for v, w in parts) / weight if weight else None)
    for name in MAXED:
        setattr(m, name, max((v for r in (earlier, later) if (v := getattr(r, name)) is not None), default=None))
    for name, (cumulative, count) in PER_ROTATION.items():
        setattr(m, name, getattr(m, cumulative) / getattr(m, count) if getattr(m, count) else None)
    return m


def _sitting_since(t_s: np.ndarray, activity: np.ndarray, before_s: float | None, last_t_s: float,
                   gap_s: float) -> float | None:
    """Start of the sitting stretch at the last of these samples: from the first sitting sample after
    anything else or after more than gap_s unseen; before_s, the start as it stood before them, at last_t_s."""
    if activity[-1] != SITTING_CODE:  # the last sample is not sitting
        return None
    not_sitting = np.flatnonzero(activity != SITTING_CODE)
    start = int(not_sitting[-1]) + 1 if len(not_sitting) else 0
    # A stretch starts again at a sample more than gap_s after the one before it (or after last_t_s).
    first_unseen = bool(t_s[0] - last_t_s > gap_s)
    if t_s[-1] - t_s[0] > gap_s:  # only then can a step inside the batch be that long
        fresh = np.flatnonzero(t_s[1:] - t_s[:-1] > gap_s)
        if len(fresh):
            start = max(start, int(fresh[-1]) + 1)
    if start == 0 and not first_unseen and before_s is not None:  # the stretch goes on
        return before_s
    return float(t_s[start])
