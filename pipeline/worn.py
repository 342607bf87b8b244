"""Off the body: a sensor taken off and left streaming (on the desk, on the chair's back, in a bag).

It went on being measured as a wearer: lying for as long as it lay flat, sitting if it stood as worn, every minute
worn, so the day's slouch share was diluted by the time the sensor lay on the desk and the sitting alert counted a
chair's back. A sensor on the upper back is never still: breathing turns the thorax by a few tenths of a degree
(the simulator's 0.3–0.5° at 0.1–0.4 Hz, `firmware-sim/motion.py`) and posture sways, which is why breathing can be
measured from a trunk-worn IMU at all. A sensor lying on something is still to within its own noise. So: the rotation
rate in the band of breathing and sway (0.1–2 Hz: the gyro's bias, its drift and most of its white noise are outside
it), as an RMS over a few seconds; below `quiet_dps` for `off_after_s`, the sensor is off the body from there until
the rate rises again (it is picked up).

Non-wear methods for accelerometers (van Hees 2013: acceleration SD under 3 mg on two axes for 60 min) need long
windows because acceleration alone hardly tells a sleeper from a table; the gyroscope's breathing band does, so a
minute suffices here. What it cannot know: the first `off_after_s` are counted as worn, in whatever posture the
sensor lies (docs/pipeline.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .running import Band, MovingMean

BREATHING_BAND_HZ = (0.1, 2.0)
NOT_WORN = "not_worn"  # the live state's activity while the sensor is off the body


@dataclass(frozen=True)
class WornSettings:
    rate_hz: float = 100.0
    # Band RMS of the rotation rate (all three axes). Breathing alone gives a worn sensor 0.3 °/s and more; white gyro
    # noise of 0.15 °/s per axis at 100 Hz (three times the simulator's) leaves 0.05 °/s in the band.
    quiet_dps: float = 0.1
    # The RMS's window: after a move, quiet is judged this soon (an exponential mean of power took half a minute to
    # forget one). Shorter than a slow breath's cycle, so it dips between breaths: harmless, off takes a minute of it.
    rms_window_s: float = 2.0
    off_after_s: float = 60.0  # quiet this long: not worn


class WornDetector:
    """Per sample, worn or not, from the rotation rate; state carried from batch to batch."""

    def __init__(self, settings: WornSettings = WornSettings()):
        self.s = settings
        self._band = Band(settings.rate_hz, BREATHING_BAND_HZ, channels=3, settled=True)
        self._power = MovingMean(max(1, round(settings.rms_window_s * settings.rate_hz)))
        self._quiet_since_s: float | None = None
        self.put_down_s: float | None = None  # where the last time off began: its quiet stretch's first sample

    def update(self, t_s: np.ndarray, gyro_dps: np.ndarray) -> np.ndarray:
        """True where the sensor is worn."""
        band = self._band.update_all(np.asarray(gyro_dps, float).T)
        power = (band * band).sum(axis=0)
        quiet = self._power.update(power) < self.s.quiet_dps ** 2
        # Each sample's quiet run started at the sample after the last loud one (or before this batch).
        loud_at = np.maximum.accumulate(np.where(~quiet, np.arange(len(t_s)), -1))
        run_start_s = np.where(loud_at >= 0, t_s[np.minimum(loud_at + 1, len(t_s) - 1)],
                               t_s[0] if self._quiet_since_s is None else self._quiet_since_s)
        off = quiet & (t_s - run_start_s >= self.s.off_after_s)
        self._quiet_since_s = float(run_start_s[-1]) if quiet[-1] else None
        if off.any():
            self.put_down_s = float(run_start_s[off][-1])
        return ~off

