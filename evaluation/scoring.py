"""Scores of a pipeline run against the virtual sensor's truth: pure functions over arrays and intervals.

Times here are simulation seconds. "Seen" time is what reached the pipeline: received samples, with
gaps up to the pipeline's interpolation limit bridged; a longer outage is unseen and is scored as
neither slouch nor upright. Borderline truth (within a degree of a threshold, half a second of a
dwell) is "don't care": an event matching it counts neither for nor against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .matching import match_intervals

Interval = tuple[float, float]


def seen_intervals(t_s: np.ndarray, max_gap_s: float, dt_s: float) -> list[Interval]:
    """Received sample times → the stretches of time the pipeline saw (gaps ≤ max_gap_s bridged)."""
    if len(t_s) == 0:
        return []
    breaks = np.flatnonzero(np.diff(t_s) > max_gap_s)
    starts = np.concatenate([[t_s[0]], t_s[breaks + 1]])
    ends = np.concatenate([t_s[breaks], [t_s[-1]]]) + dt_s
    return list(zip(starts.tolist(), ends.tolist()))


def within(t_s: np.ndarray, intervals: list[Interval]) -> np.ndarray:
    """Which of the sorted times t_s lie in one of the [start, end) intervals (sorted, apart)."""
    inside = np.zeros(len(t_s), bool)
    if intervals:
        starts, ends = np.array(intervals).T
        k = np.searchsorted(starts, t_s, side="right") - 1
        inside = (k >= 0) & (t_s < ends[np.maximum(k, 0)] - 1e-9)
    return inside


def intersect(a: Interval, seen: list[Interval]) -> list[Interval]:
    return [(max(a[0], s0), min(a[1], s1)) for s0, s1 in seen if min(a[1], s1) > max(a[0], s0)]


def covered(a: Interval, seen: list[Interval], tol_s: float = 0.05) -> bool:
    """Whether all of a lies in seen time."""
    return sum(b - a_ for a_, b in intersect(a, seen)) >= (a[1] - a[0]) - tol_s


def hysteresis_runs(t_s: np.ndarray, x: np.ndarray, enter: float, leave: float, allowed: np.ndarray,
                    min_s: float, dt_s: float) -> list[tuple[float, float, float]]:
    """(start, end, peak) of runs that go above `enter` and last until below `leave`, ≥ min_s long."""
    state = np.where(x > enter, 1, np.where(x < leave, 0, -1))
    idx = np.where(state >= 0, np.arange(len(x)), -1)
    last = np.maximum.accumulate(idx)
    high = np.where(last >= 0, state[np.maximum(last, 0)] == 1, False) & allowed
    edges = np.diff(np.concatenate([[0], high.astype(np.int8), [0]]))
    out = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        start, end = float(t_s[a]), float(t_s[b - 1] + dt_s)
        if end - start >= min_s:
            out.append((start, end, float(x[a:b].max())))
    return out


@dataclass
class Matched:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    pairs: list[tuple[int, int]] | None = None  # (truth index, found index) of scored matches

    @property
    def f1(self) -> float | None:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else None

    def __iadd__(self, other: Matched) -> Matched:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        return self


def match_with_dont_care(truth: list[tuple[float, float, str]], dont_care: list[bool],
                         found: list[tuple[float, float, str]], min_iou: float = 0.3) -> Matched:
    """One-to-one matching of the scored truth; don't-care truth counts neither for nor against.

    A found event overlapping a don't-care truth interval at all, and matched to no scored truth, is
    not a false positive (it may be the borderline event, cut differently). Scored truth is matched
    alone, so a report that also covers a borderline interval still matches the event it found.
    """
    keep = [i for i, dc in enumerate(dont_care) if not dc]
    sub, _ = match_intervals([truth[i] for i in keep], found, min_iou)
    scored = [(keep[i], j) for i, j in sub]
    matched_f = {j for _, j in scored}
    fn = len(keep) - len(scored)
    fp = 0
    for j, (b0, b1, _) in enumerate(found):
        if j in matched_f:
            continue
        near_dc = any(dc and min(a1, b1) > max(a0, b0) for (a0, a1, _), dc in zip(truth, dont_care))
        fp += not near_dc
    return Matched(len(scored), fp, fn, scored)


def confusion(truth: np.ndarray, found: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """counts[i, j]: samples whose truth is labels[i] and which were reported as labels[j]."""
    counts = np.zeros((len(labels), len(labels)), np.int64)
    for i, a in enumerate(labels):
        is_a = truth == a
        for j, b in enumerate(labels):
            counts[i, j] = np.count_nonzero(is_a & (found == b))
    return counts


def balanced_accuracy(counts: np.ndarray, min_count: int = 1) -> float | None:
    """Mean recall over the classes that occur (at least min_count samples of truth)."""
    rows = counts.sum(axis=1)
    present = rows >= max(min_count, 1)
    if not present.any():
        return None
    return float(np.mean(np.diag(counts)[present] / rows[present]))


def sit_stand_transitions(t_s: np.ndarray, labels: np.ndarray, min_hold_s: float = 0.0) -> list[tuple[float, str]]:
    """(time, "up"|"down") where a sequence goes from sitting to on its feet (standing/walking) or back.

    Lying in between breaks the chain (getting up from a bed is not a sit-to-stand). A state must
    last min_hold_s to count, so a flicker is one transition out and one back, not none.
    """
    if not len(labels):  # nothing measured (never calibrated): no transition found
        return []
    feet = np.where(labels == "sitting", 0, np.where(np.isin(labels, ("standing", "walking")), 1, -1))
    change = np.flatnonzero(np.diff(feet) != 0) + 1
    bounds = np.concatenate([[0], change, [len(feet)]])
    runs = [(int(feet[a]), float(t_s[a]), float(t_s[b - 1])) for a, b in zip(bounds[:-1], bounds[1:])]
    runs = [r for r in runs if r[2] - r[1] >= min_hold_s or r[0] == -1]
    out = []
    for (s0, _, _), (s1, t1, _) in zip(runs[:-1], runs[1:]):
        if s0 >= 0 and s1 >= 0 and s0 != s1:
            out.append((t1, "up" if s1 == 1 else "down"))
    return out


def match_transitions(truth: list[tuple[float, str]], found: list[tuple[float, str]], tol_s: float,
                      also: Sequence[tuple[float, str]] = ()) -> Matched:
    """Found changes matched one to one with the truth's within tol_s (the nearest first). `also`: the truth's
    changes before measuring began, which a found one may match (a hit) but a miss of which is not counted."""
    used: set[int] = set()

    def matched(t: float, kind: str) -> bool:
        best = None
        for j, (u, k) in enumerate(found):
            if (j not in used and k == kind and abs(u - t) <= tol_s
                    and (best is None or abs(u - t) < abs(found[best][0] - t))):
                best = j
        if best is not None:
            used.add(best)
        return best is not None

    tp = sum(matched(t, kind) for t, kind in truth)
    early = sum(matched(t, kind) for t, kind in also)
    return Matched(tp + early, len(found) - tp - early, len(truth) - tp)


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Angle of the rotation taking frame a to frame b (3×3 each)."""
    c = (np.trace(r_a.T @ r_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
