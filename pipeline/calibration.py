"""Sensor → trunk alignment from an upright hold and an optional forward bend, and its upkeep.

The sensor sits on the upper back at any orientation. An upright hold gives the trunk's up axis
in the sensor frame. A forward bend then tips that axis toward the trunk's back, which fixes the
sagittal plane (trunk forward = the direction the up axis did *not* move). Without a bend the
sensor's −z is taken as forward (a sensor lying flat on the back, z out of the skin), which is
good to within the mounting error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CalibrationError(ValueError):
    """A calibration attempt that cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class CalibrationSettings:
    hold_s: float = 3.0  # still, upright, before the bend
    still_gyro_dps: float = 4.0  # |gyro| above this is movement (gyro bias can reach ~1 °/s)
    still_acc_g: float = 0.03  # | |acc| − 1 g | above this is movement
    still_tilt_deg: float = 2.0  # up-axis wander during the hold
    bend_min_deg: float = 15.0  # a forward bend must tip the trunk at least this far
    bend_return_deg: float = 6.0  # … and come back within this of upright
    bend_timeout_s: float = 12.0  # no bend by then → calibrate from the hold alone
    # Recalibration check (CalibrationMonitor): averages over walking or sitting time only.
    drift_walk_tilt_deg: float = 10.0  # walking: |mean lateral bend| beyond this
    drift_walk_min_s: float = 20.0
    drift_sit_lateral_deg: float = 25.0  # sitting: |mean lateral bend| beyond this …
    drift_sit_extension_deg: float = 15.0  # … or mean flexion below −this
    drift_sit_min_s: float = 120.0


@dataclass(frozen=True)
class Calibration:
    r_sensor_trunk: np.ndarray  # (3, 3): columns are the trunk's x (forward), y (left), z (up) in sensor axes
    with_bend: bool
    bend_deg: float = 0.0
    gyro_bias_dps: np.ndarray | None = None  # measured during the still hold

    @staticmethod
    def from_vectors(up_sensor: np.ndarray, bend_up_sensor: np.ndarray | None = None) -> Calibration:
        z = _unit(up_sensor)
        if bend_up_sensor is not None:
            tipped = bend_up_sensor - np.dot(bend_up_sensor, z) * z
            if np.linalg.norm(tipped) < np.sin(np.radians(5.0)):
                raise CalibrationError("the forward bend was too small to find the sagittal plane")
            # Bending forward moves the up axis toward the back: forward is the opposite way.
            x = -_unit(tipped)
            bend_deg = float(np.degrees(np.arccos(np.clip(np.dot(_unit(bend_up_sensor), z), -1, 1))))
        else:
            back = np.array([0.0, 0.0, 1.0])
            x = -(back - np.dot(back, z) * z)
            if np.linalg.norm(x) < 0.3:
                raise CalibrationError("sensor z is near vertical: a forward bend is needed to calibrate")
            x, bend_deg = _unit(x), 0.0
        y = np.cross(z, x)
        return Calibration(np.column_stack([x, y, z]), bend_up_sensor is not None, bend_deg)

    @staticmethod
    def sensor_axes_are_trunk_axes() -> Calibration:
        """For data whose sensor x, y, z already point forward, left and up (no calibration moves)."""
        return Calibration(np.eye(3), with_bend=False)

    def to_dict(self) -> dict:
        return {"r_sensor_trunk": self.r_sensor_trunk.tolist(), "with_bend": self.with_bend,
                "bend_deg": self.bend_deg,
                "gyro_bias_dps": None if self.gyro_bias_dps is None else self.gyro_bias_dps.tolist()}

    @staticmethod
    def from_dict(d: dict) -> Calibration:
        r = np.asarray(d["r_sensor_trunk"], dtype=float)
        if r.shape != (3, 3) or not np.allclose(r.T @ r, np.eye(3), atol=1e-6):
            raise CalibrationError("a stored calibration is not a rotation")
        bias = d.get("gyro_bias_dps")
        return Calibration(r, bool(d["with_bend"]), float(d.get("bend_deg", 0.0)),
                           None if bias is None else np.asarray(bias, dtype=float))

    def with_bias(self, gyro_bias_dps: np.ndarray | None) -> Calibration:
        return Calibration(self.r_sensor_trunk, self.with_bend, self.bend_deg, gyro_bias_dps)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def hold_gyro_bias_dps(acc_g: np.ndarray, gyro_dps: np.ndarray, rate_hz: float) -> np.ndarray:
    """Gyro bias over a still hold: its mean rate, less the slow tilt that breathing still causes.

    Breathing sways the trunk by about a degree; over a few seconds that is a mean rate of a few
    tenths of °/s, as large as the bias. The accelerometer sees that tilt (not rotation about
    vertical), so its rate is taken out of the mean.
    """
    edge = max(1, len(acc_g) // 6)
    g0, g1 = acc_g[:edge].mean(axis=0), acc_g[-edge:].mean(axis=0)
    g0, g1 = g0 / np.linalg.norm(g0), g1 / np.linalg.norm(g1)
    span_s = (len(acc_g) - edge) / rate_hz
    # Gravity seen from the sensor turns opposite to the sensor: ω_tilt = g1 × g0 / Δt.
    tilt_rate_dps = np.degrees(np.cross(g1, g0)) / span_s
    return gyro_dps.mean(axis=0) - tilt_rate_dps


def still_mask(gyro_dps: np.ndarray, acc_g: np.ndarray, settings: CalibrationSettings) -> np.ndarray:
    return ((np.linalg.norm(gyro_dps, axis=1) < settings.still_gyro_dps)
            & (np.abs(np.linalg.norm(acc_g, axis=1) - 1.0) < settings.still_acc_g))


class Calibrator:
    """Finds the upright hold and the forward bend in the incoming stream.

    Feed it batches of sample times, the accelerometer, the gyro and VQF's up axis in sensor
    coordinates. It reports refusals (movement during the hold) and, once done, the calibration and
    the index in the batch from which it applies.
    """

    def __init__(self, settings: CalibrationSettings = CalibrationSettings(), rate_hz: float = 100.0):
        self.s = settings
        self.rate_hz = rate_hz
        self._hold_n = round(settings.hold_s * rate_hz)
        self.refusals = 0
        self._restart()

    def _restart(self) -> None:
        self._still_run = 0  # consecutive still samples so far
        self._still_acc: list[np.ndarray] = []  # the current hold's samples (≤ hold_s of them)
        self._still_gyro: list[np.ndarray] = []
        self._bias_dps: np.ndarray | None = None
        self._up0: np.ndarray | None = None
        self._bend_best: tuple[float, np.ndarray] = (0.0, np.zeros(3))
        self._in_bend = False
        self._bend_deadline_s = np.inf

    def update(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray,
               up_sensor: np.ndarray) -> tuple[Calibration | None, int, list[str]]:
        """(calibration or None, index where it starts to apply, refusal messages)."""
        try:
            return self._update(t_s, acc_g, gyro_dps, up_sensor)
        except CalibrationError as exc:
            # Start over from the next hold; the stream goes on.
            self.refusals += 1
            self._restart()
            return None, len(t_s), [str(exc)]

    def _update(self, t_s, acc_g, gyro_dps, up_sensor) -> tuple[Calibration | None, int, list[str]]:
        messages: list[str] = []
        start = 0
        if self._up0 is None:
            start, messages = self._find_hold(acc_g, gyro_dps)
            if self._up0 is None:
                return None, len(t_s), messages
            self._bend_deadline_s = t_s[min(start, len(t_s) - 1)] + self.s.bend_timeout_s
        # The first bend after the hold: past bend_min_deg, then back within bend_return_deg.
        dev_deg = np.degrees(np.arccos(np.clip(up_sensor[start:] @ self._up0, -1.0, 1.0)))
        late = np.flatnonzero(t_s[start:] > self._bend_deadline_s)
        horizon = int(late[0]) if len(late) else len(dev_deg)
        if not self._in_bend:
            over = np.flatnonzero(dev_deg[:horizon] >= self.s.bend_min_deg)
            if len(over) == 0:
                if len(late):
                    return Calibration.from_vectors(self._up0).with_bias(self._bias_dps), start + horizon, messages
                return None, len(t_s), messages
            self._in_bend, begin = True, int(over[0])
        else:
            begin = 0
        back = np.flatnonzero(dev_deg[begin:] <= self.s.bend_return_deg)
        end = begin + int(back[0]) if len(back) else len(dev_deg)
        if end > begin:
            k = begin + int(np.argmax(dev_deg[begin:end]))
            if dev_deg[k] > self._bend_best[0]:
                self._bend_best = (float(dev_deg[k]), up_sensor[start + k].copy())
        if len(back):
            cal = Calibration.from_vectors(self._up0, self._bend_best[1]).with_bias(self._bias_dps)
            return cal, start + end, messages
        return None, len(t_s), messages

    def _find_hold(self, acc_g: np.ndarray, gyro_dps: np.ndarray) -> tuple[int, list[str]]:
        still = still_mask(gyro_dps, acc_g, self.s)
        messages = []
        # Walk the runs of stillness (few per batch): a hold needs hold_s of them in a row.
        edges = np.flatnonzero(np.diff(np.concatenate([[True], still, [False]]).astype(np.int8)))
        i = 0
        while i < len(still):
            if still[i]:
                stop = int(edges[edges > i][0]) if np.any(edges > i) else len(still)
                need = self._hold_n - self._still_run
                take = min(need, stop - i)
                self._still_acc.append(acc_g[i:i + take])
                self._still_gyro.append(gyro_dps[i:i + take])
                self._still_run += take
                if take == need:
                    acc, gyro = np.vstack(self._still_acc), np.vstack(self._still_gyro)
                    self._up0 = acc.mean(axis=0) / np.linalg.norm(acc.mean(axis=0))
                    self._bias_dps = hold_gyro_bias_dps(acc, gyro, self.rate_hz)
                    self._still_acc, self._still_gyro = [], []
                    return i + need, messages
                i = stop
            else:
                if self._still_run >= self.rate_hz:  # more than a second of hold thrown away
                    self.refusals += 1
                    messages.append(f"moved during the upright hold after {self._still_run / self.rate_hz:.1f} s: "
                                    f"sit upright and keep still for {self.s.hold_s:g} s")
                self._still_run, self._still_acc, self._still_gyro = 0, [], []
                nxt = np.flatnonzero(still[i:])
                i = i + int(nxt[0]) if len(nxt) else len(still)
        return len(still), messages


class CalibrationMonitor:
    """Reports "recalibrate" when angles stay where a body does not stay: the sensor has moved.

    While walking the trunk is close to upright sideways; sitting, nobody stays bent sideways by
    25° or leans back by 15° for minutes. A slow average over those samples only (walking, or
    sitting) that settles beyond the limits means the calibration no longer fits.
    """

    def __init__(self, settings: CalibrationSettings = CalibrationSettings(), rate_hz: float = 100.0):
        self.s = settings
        self.dt_s = 1.0 / rate_hz
        self._walk = _SlowMean(settings.drift_walk_min_s, rate_hz)
        self._sit_lateral = _SlowMean(settings.drift_sit_min_s, rate_hz)
        self._sit_flexion = _SlowMean(settings.drift_sit_min_s, rate_hz)
        self.reported = False

    def update(self, flexion_deg: np.ndarray, lateral_deg: np.ndarray, walking: np.ndarray,
               sitting: np.ndarray) -> str | None:
        s = self.s
        walk = self._walk.update(lateral_deg[walking])
        sit_lat = self._sit_lateral.update(lateral_deg[sitting])
        sit_flex = self._sit_flexion.update(flexion_deg[sitting])
        if self.reported:
            return None
        why = None
        if walk is not None and abs(walk) > s.drift_walk_tilt_deg:
            why = f"walking reads {walk:+.0f}° of sideways bend"
        elif sit_lat is not None and abs(sit_lat) > s.drift_sit_lateral_deg:
            why = f"sitting has read {sit_lat:+.0f}° of sideways bend for minutes"
        elif sit_flex is not None and sit_flex < -s.drift_sit_extension_deg:
            why = f"sitting has read {sit_flex:+.0f}° of flexion (leaning back) for minutes"
        if why:
            self.reported = True
            return f"recalibrate: {why}; the sensor has probably moved on the back"
        return None


class _SlowMean:
    """Exponential mean over the selected samples only, with a time constant in selected seconds."""

    def __init__(self, tau_s: float, rate_hz: float):
        self._alpha = 1.0 / (tau_s * rate_hz)
        self._needed = tau_s * rate_hz
        self._count = 0
        self._mean = 0.0

    def update(self, x: np.ndarray) -> float | None:
        if len(x):
            # Closed form of n exponential steps: weights (1-α)^(n-1-i) on x[i].
            decay = (1.0 - self._alpha) ** np.arange(len(x) - 1, -1, -1)
            self._mean = self._mean * (1.0 - self._alpha) ** len(x) + self._alpha * float(decay @ x)
            self._count += len(x)
        return self._mean if self._count >= self._needed else None
