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
    # Picked up: the RMS rises above this. Twice quiet_dps: white gyro noise whose 2 s RMS stays under quiet_dps for a
    # minute peaks at 0.16 °/s in an hour (its median at 0.1), and flickered the sensor on and off the body at 0.1
    # (a desk at 0.22 °/s of noise per axis at 100 Hz: 7 recalibrations in half an hour, half of it measured as lying);
    # breathing alone is 0.3 °/s and more, lifting or putting the sensor on tens of °/s.
    picked_up_dps: float = 0.2
    max_gap_s: float = 1.0  # unseen time longer than this (a lost link) is not counted as quiet


class WornDetector:
    """Per sample, worn or not, from the rotation rate; state carried from batch to batch."""

    def __init__(self, settings: WornSettings = WornSettings()):
        self.s = settings
        self._restart()
        self._quiet_since_s: float | None = None
        self._off = False  # the last sample was off the body
        self._last_t_s: float | None = None
        self.put_down_s: float | None = None  # where the last time off began: its quiet stretch's first sample
        # Per sample of the last batch: where the time off it is in began (NaN where worn). A batch may hold more than
        # one time off (a replay's 20,000 rows): each is said from its own start.
        self.put_down_at_s = np.empty(0)

    def resume_off(self, put_down_s: float) -> None:
        """Go on from another run that ended with the sensor off the body (put down at put_down_s): off until it is
        picked up, as across unseen time within one run."""
        self._off, self.put_down_s = True, put_down_s

    def _restart(self) -> None:
        """The filter and the RMS from the next sample, as at the start (after unseen time)."""
        self._band = Band(self.s.rate_hz, BREATHING_BAND_HZ, channels=3, settled=True)
        self._power = MovingMean(max(1, round(self.s.rms_window_s * self.s.rate_hz)))

    def update(self, t_s: np.ndarray, gyro_dps: np.ndarray) -> np.ndarray:
        """True where the sensor is worn."""
        t_s, gyro_dps = np.asarray(t_s, float), np.asarray(gyro_dps, float)
        if len(t_s) == 0:
            self.put_down_at_s = np.empty(0)
            return np.ones(0, bool)
        steps = t_s[1:] - t_s[:-1]
        if len(steps) and steps.max() > self.s.max_gap_s:  # a gap inside: each side on its own
            k = int(np.argmax(steps > self.s.max_gap_s)) + 1
            first = self.update(t_s[:k], gyro_dps[:k])
            down = self.put_down_at_s
            worn = np.concatenate([first, self.update(t_s[k:], gyro_dps[k:])])
            self.put_down_at_s = np.concatenate([down, self.put_down_at_s])
            return worn
        if self._last_t_s is not None and t_s[0] - self._last_t_s > self.s.max_gap_s:
            # Unseen time is no quiet time (a quiet stretch goes on only over samples seen), and the filter does not
            # ring over it; a sensor off the body before stays off until it is picked up.
            self._restart()
            self._quiet_since_s = None
        self._last_t_s = float(t_s[-1])
        band = self._band.update_all(gyro_dps.T)
        power = (band * band).sum(axis=0)
        mean_power = self._power.update(power)
        quiet = mean_power < self.s.quiet_dps ** 2
        n = len(t_s)
        index = np.arange(n)
        # Each sample's quiet run started at the sample after the last loud one (or before this batch).
        loud_at = np.maximum.accumulate(np.where(~quiet, index, -1))
        run_start_s = np.where(loud_at >= 0, t_s[np.minimum(loud_at + 1, n - 1)],
                               t_s[0] if self._quiet_since_s is None else self._quiet_since_s)
        long_quiet = quiet & (t_s - run_start_s >= self.s.off_after_s)
        self._quiet_since_s = float(run_start_s[-1]) if quiet[-1] else None
        # Off from a sample quiet for off_after_s until one above picked_up_dps: noise that dips under quiet_dps for a
        # minute does not rise to it, so a sensor on the desk is not picked up by its own noise.
        last_quiet = np.maximum(np.maximum.accumulate(np.where(long_quiet, index, -3)), -1 if self._off else -3)
        last_moved = np.maximum.accumulate(np.where(mean_power >= self.s.picked_up_dps ** 2, index, -2))
        off = last_quiet > last_moved
        began = off & ~np.concatenate([[self._off], off[:-1]])
        began_at = np.maximum.accumulate(np.where(began, index, -1))
        carried = np.nan if self.put_down_s is None or not self._off else self.put_down_s
        down = np.where(began_at >= 0, run_start_s[np.maximum(began_at, 0)], carried)
        self.put_down_at_s = np.where(off, down, np.nan)
        if off.any():
            self.put_down_s = float(self.put_down_at_s[off][-1])
        self._off = bool(off[-1])
        return ~off
