"""The trunk's forward direction from walking, to check (and refine) the calibration's sagittal plane.

Walking accelerates the upper trunk forward and back once per step (the speed ripples by ~10 % at
step frequency) far more than sideways at that frequency (sideways sway is at half of it, the
stride frequency). So the principal axis of horizontal acceleration, band-passed around step
frequency, is the walking direction — the trunk's forward axis — whatever way the sensor sits
(as used for sensor-to-segment alignment of trunk accelerometers in gait analysis, e.g.
Moe-Nilssen 1998). Whole-body turns add centripetal acceleration too, but slowly, below the band.

Pure: batches of horizontal acceleration in the calibrated trunk's heading frame in, an azimuth
out once enough walking has been seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .running import Band


@dataclass(frozen=True)
class WalkingAxisSettings:
    rate_hz: float = 100.0
    min_walk_s: float = 20.0  # of walking before the axis is trusted
    min_ratio: float = 3.0  # forward/back variance at least this many times the sideways one
    refine_deg: float = 3.0  # a calibration off by more than this is corrected


class WalkingAxis:
    def __init__(self, settings: WalkingAxisSettings = WalkingAxisSettings()):
        self.s = settings
        self._band = Band(settings.rate_hz, channels=2)
        self._sums = np.zeros(3)  # Σ ap², Σ ml², Σ ap·ml over walking samples
        self._n = 0
        self.decided_at = -1  # where in its batch update() last knew the axis (read when it returns one)

    def update(self, ap_ml_g: np.ndarray, walking: np.ndarray) -> float | None:
        """The calibration's forward axis error (°, + when the true forward is to the left), when known.
        ap_ml_g: horizontal acceleration forward (row 0) and to the left (row 1), 2 × n.

        Known at the first walking sample with min_walk_s of walking in and the axis standing out, from the walking up
        to it, however the stream is batched (`decided_at`: its index in this batch; the samples after it are not taken
        in, not even by the band-pass: the caller gives them again, in the frame it then measures in). Judged once a
        batch, from all its walking, a replay's 200 s chunks gave another azimuth, later, than the gateway's seconds
        (a helper's day 6156: lateral minute means −0.71° against −1.84° for 40 minutes)."""
        before = self._band.state()
        band = self._band.update_all(ap_ml_g)  # filtered always: the band-pass carries state
        at = np.flatnonzero(walking)
        if not len(at):
            return None
        ap, ml = band[0][at], band[1][at]
        sums = np.cumsum([ap * ap, ml * ml, ap * ml], axis=1) + self._sums[:, None]
        n = self._n + np.arange(1, len(at) + 1)
        sxx, syy, sxy = sums
        # Principal axis of the 2 × 2 covariance, and how clearly it stands out.
        spread = np.hypot(0.5 * (sxx - syy), sxy)
        major, minor = 0.5 * (sxx + syy) + spread, 0.5 * (sxx + syy) - spread
        known = (n >= self.s.min_walk_s * self.s.rate_hz) & (minor > 0) & (major >= self.s.min_ratio * minor)
        j = int(np.argmax(known)) if known.any() else len(at) - 1
        self._sums, self._n = sums[:, j].copy(), int(n[j])
        if not known[j]:
            return None
        self.decided_at = int(at[j])
        if self.decided_at + 1 < ap_ml_g.shape[1]:  # the samples after it are the caller's to give again
            self._band.restore(before)
            self._band.update_all(ap_ml_g[:, :self.decided_at + 1])
        return float(0.5 * np.degrees(np.arctan2(2.0 * sxy[j], sxx[j] - syy[j])))

    def reset(self) -> None:
        self._sums[:] = 0.0
        self._n = 0
