"""Activity context good enough to gate posture measures: sitting, standing, walking, lying.

- walking: the spread of |acc| over the last second (steps shake the trunk vertically by ±0.2 g or
  more; tilting or turning the trunk barely changes |acc|);
- lying: the trunk's up axis more than `lying_tilt_deg` from vertical;
- sitting vs standing: one IMU on the back cannot see the legs, so the change is found where it
  happens: rising from a chair lifts the back by ~0.4 m within a second or two, sitting down lowers
  it. Vertical acceleration (gravity removed) is integrated twice through a high-pass that forgets
  drift in `height_forget_s`; a rise or fall of `stand_rise_m` within `stand_window_s` flips the
  state. Walking means standing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

G_M_S2 = 9.80665
SITTING, STANDING, WALKING, LYING = "sitting", "standing", "walking", "lying"
ACTIVITIES = (SITTING, STANDING, WALKING, LYING)


@dataclass(frozen=True)
class ActivitySettings:
    rate_hz: float = 100.0
    walk_window_s: float = 1.0
    walk_acc_std_g: float = 0.08
    walk_hold_s: float = 1.5  # walking continues through pauses shorter than this
    lying_tilt_deg: float = 60.0
    stand_rise_m: float = 0.25
    stand_window_s: float = 2.0
    height_forget_s: float = 4.0
    refractory_s: float = 3.5  # after a sit/stand flip: the high-pass rebounds ~2 s later, ignore it


class ActivityClassifier:
    def __init__(self, settings: ActivitySettings = ActivitySettings(), start: str = SITTING):
        self.s = settings
        self._win = max(2, round(settings.walk_window_s * settings.rate_hz))
        self._tail = np.empty(0)  # last |acc| samples, for the rolling window across batches
        self._since_walk = np.inf  # samples since walking was last detected
        self._upright_state = start if start in (SITTING, STANDING) else SITTING
        pole = np.exp(-1.0 / (settings.height_forget_s * settings.rate_hz))
        self._leak = [1.0, -pole]  # leaky integrator: two in a row ≈ high-passed double integral
        self._zi_v = np.zeros(1)
        self._zi_h = np.zeros(1)
        self._lag = round(settings.stand_window_s * settings.rate_hz)
        self._h_tail = np.zeros(0)
        self._refractory = round(settings.refractory_s * settings.rate_hz)
        self._quiet_until = 0  # samples into the next batch during which flips are ignored
        self._was_walking = False

    def walking(self, acc_norm_g: np.ndarray) -> np.ndarray:
        """Walking per sample, from |acc| alone (needs no orientation)."""
        return self._walking(acc_norm_g)

    def update(self, walking: np.ndarray, acc_vertical_g: np.ndarray, tilt_deg: np.ndarray) -> np.ndarray:
        """Per-sample activity names for one batch.

        walking: from walking(); acc_vertical_g: specific force along world up (≈ 1 at rest);
        tilt_deg: angle between the trunk's up axis and vertical.
        """
        n = len(walking)
        rise = self._rise_m(acc_vertical_g)
        state = np.empty(n, dtype=object)
        # Sit/stand flips are rare: a loop over the candidate samples, not over every sample.
        onsets = walking & ~np.concatenate([[self._was_walking], walking[:-1]])
        self._was_walking = bool(walking[-1])
        candidates = np.flatnonzero((np.abs(rise) > self.s.stand_rise_m) | onsets)
        current, last, quiet_until = self._upright_state, 0, self._quiet_until
        for i in candidates:
            # Starting to walk means standing; otherwise the back going up or down decides.
            new = STANDING if (onsets[i] or rise[i] > 0) else SITTING
            if new == current or (i < quiet_until and not onsets[i]):
                continue
            state[last:i] = current
            current, last = new, i
            quiet_until = i + self._refractory
        state[last:] = current
        self._upright_state = current
        self._quiet_until = max(0, quiet_until - n)
        state[walking] = WALKING
        state[tilt_deg > self.s.lying_tilt_deg] = LYING
        return state.astype("<U8")

    def _walking(self, acc_norm_g: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._tail, acc_norm_g])
        k = self._win
        c1 = np.concatenate([[0.0], np.cumsum(x)])
        c2 = np.concatenate([[0.0], np.cumsum(x * x)])
        start = len(self._tail)
        idx = np.arange(start, len(x)) + 1
        lo = np.maximum(idx - k, 0)
        cnt = idx - lo
        mean = (c1[idx] - c1[lo]) / cnt
        var = np.maximum((c2[idx] - c2[lo]) / cnt - mean * mean, 0.0)
        shaking = np.sqrt(var) > self.s.walk_acc_std_g
        self._tail = x[-(k - 1):] if k > 1 else np.empty(0)
        # Hold: walking until walk_hold_s after the last shaking sample.
        hold = round(self.s.walk_hold_s * self.s.rate_hz)
        pos = np.arange(len(shaking))
        last = np.maximum.accumulate(np.where(shaking, pos, -1))
        since = np.where(last >= 0, pos - last, self._since_walk + pos + 1)
        self._since_walk = since[-1] if len(since) else self._since_walk
        return since <= hold

    def _rise_m(self, acc_vertical_g: np.ndarray) -> np.ndarray:
        """Height change over the last stand_window_s, from high-passed double integration."""
        a = (acc_vertical_g - 1.0) * G_M_S2 / self.s.rate_hz
        v, self._zi_v = lfilter([1.0], self._leak, a, zi=self._zi_v)
        h, self._zi_h = lfilter([1.0 / self.s.rate_hz], self._leak, v, zi=self._zi_h)
        both = np.concatenate([self._h_tail, h])
        past = np.concatenate([np.full(self._lag, both[0] if len(both) else 0.0), both])
        rise = both[len(self._h_tail):] - past[len(self._h_tail):len(self._h_tail) + len(h)]
        self._h_tail = both[-self._lag:]
        return rise
