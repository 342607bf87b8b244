"""The posture pipeline for one device: batches of IMU samples in, trunk angles, events and metrics out.

One code path for live data and replay. Memory is O(batch + window): every stage carries a small
state between batches, never the history. Gaps up to `max_fill_s` (lost packets) are bridged by
interpolation so the orientation filter integrates the right time step; longer gaps (a lost link)
drop anything half-detected, so a gap never produces an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .activity import LYING, SITTING, WALKING, ActivityClassifier, ActivitySettings
from .angles import trunk_angles, unwrap_from, up_axis_and_vertical
from .axial import AxialSettings, FacingBaseline
from .calibration import Calibration, CalibrationMonitor, CalibrationSettings, Calibrator
from .detectors import (LeanDetector, LeanSettings, RotationDetector, RotationSettings, SlouchDetector,
                        SlouchSettings)
from .events import CalibrationEvent, MinuteMetrics
from .metrics import MinuteAggregator
from .orientation import OrientationFilter, OrientationSettings


@dataclass(frozen=True)
class PipelineSettings:
    rate_hz: float = 100.0
    max_fill_s: float = 1.0  # gaps up to this are interpolated; longer ones reset the detectors
    orientation: OrientationSettings = field(default_factory=OrientationSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    activity: ActivitySettings = field(default_factory=ActivitySettings)
    axial: AxialSettings = field(default_factory=AxialSettings)
    slouch: SlouchSettings = field(default_factory=SlouchSettings)
    lean: LeanSettings = field(default_factory=LeanSettings)
    rotation: RotationSettings = field(default_factory=RotationSettings)

    @staticmethod
    def for_rate(rate_hz: float) -> PipelineSettings:
        """Defaults, with every stage told the sample rate."""
        stages = {name: replace(cls(), rate_hz=rate_hz) for name, cls in (
            ("orientation", OrientationSettings), ("activity", ActivitySettings), ("axial", AxialSettings),
            ("slouch", SlouchSettings), ("lean", LeanSettings), ("rotation", RotationSettings))}
        return PipelineSettings(rate_hz=rate_hz, **stages)


@dataclass
class PipelineOutput:
    """One batch's results. Angle arrays cover the batch's calibrated, real (not gap-filled) samples."""

    t_s: np.ndarray
    flexion_deg: np.ndarray
    lateral_deg: np.ndarray
    rotation_deg: np.ndarray
    activity: np.ndarray
    events: list = field(default_factory=list)
    metrics: list[MinuteMetrics] = field(default_factory=list)


def _empty_output() -> PipelineOutput:
    e = np.empty(0)
    return PipelineOutput(e, e, e, e, np.empty(0, dtype="<U8"))


class PosturePipeline:
    def __init__(self, settings: PipelineSettings = PipelineSettings(), calibration: Calibration | None = None):
        self.s = settings
        self.dt_s = 1.0 / settings.rate_hz
        self.orientation = OrientationFilter(settings.orientation)
        self.calibrator = Calibrator(settings.calibration, settings.rate_hz)
        self.monitor = CalibrationMonitor(settings.calibration, settings.rate_hz)
        self.calibration = calibration
        self.activity = ActivityClassifier(settings.activity)
        self.baseline = FacingBaseline(settings.axial)
        self.slouch = SlouchDetector(settings.slouch)
        self.lean = LeanDetector(settings.lean)
        self.rotation = RotationDetector(settings.rotation)
        self.minutes = MinuteAggregator()
        self._announce = calibration is not None  # a calibration restored from before: say so once
        if calibration is not None and calibration.gyro_bias_dps is not None:
            self.orientation.set_horizontal_bias_dps(calibration.gyro_bias_dps, calibration.r_sensor_trunk[:, 2])
        self._last_t_s: float | None = None
        self._last_sample: np.ndarray | None = None  # acc+gyro of the previous batch's last sample
        self._last_yaw: float | None = None
        self._added_until_s: dict[str, float] = {}
        self.gaps_filled = 0
        self.gaps_reset = 0

    def update(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, lost_samples: int = 0) -> PipelineOutput:
        if len(t_s) == 0:
            return _empty_output()
        t_s, acc_g, gyro_dps, real, reset = self._bridge_gaps(np.asarray(t_s, float), np.asarray(acc_g, float),
                                                              np.asarray(gyro_dps, float))
        if reset:
            self._reset_detectors()
        walking = self.activity.walking(np.linalg.norm(acc_g, axis=1))
        quat = self.orientation.update(gyro_dps, acc_g)
        up, acc_vertical = up_axis_and_vertical(quat, acc_g)
        out = _empty_output()
        start = 0
        if self._announce:
            self._announce = False
            out.events.append(CalibrationEvent(float(t_s[0]), "calibrated", "calibration restored from the last run",
                                               self.calibration.with_bend))
        if self.calibration is None:
            cal, start, refusals = self.calibrator.update(t_s, acc_g, gyro_dps, up)
            out.events += [CalibrationEvent(float(t_s[min(start, len(t_s) - 1)]), "refused", m) for m in refusals]
            if cal is None:
                return out
            self.calibration = cal
            if cal.gyro_bias_dps is not None:
                self.orientation.set_horizontal_bias_dps(cal.gyro_bias_dps, cal.r_sensor_trunk[:, 2])
            how = f"with a {cal.bend_deg:.0f}° forward bend" if cal.with_bend else "from the upright hold (no bend)"
            out.events.append(CalibrationEvent(float(t_s[start - 1] if start else t_s[0]), "calibrated",
                                               f"calibrated {how}", cal.with_bend))
        sl = slice(start, None)
        return self._measure(t_s[sl], walking[sl], quat[sl], acc_vertical[sl], real[sl], lost_samples, out)

    def _measure(self, t_s, walking, quat, acc_vertical, real, lost_samples, out) -> PipelineOutput:
        if len(t_s) == 0:  # calibration completed on the batch's last sample
            return out
        flexion, lateral, tilt, yaw_right = trunk_angles(quat, self.calibration.r_sensor_trunk)
        yaw_right = unwrap_from(self._last_yaw, yaw_right)
        if len(yaw_right):
            self._last_yaw = float(yaw_right[-1])
        activity = self.activity.update(walking, acc_vertical, tilt)
        walking, lying = activity == WALKING, activity == LYING
        rotation, jumped = self.baseline.update(yaw_right, walking)
        upright_context = ~(walking | lying)
        if (why := self.monitor.update(flexion, lateral, walking, activity == SITTING)) is not None:
            out.events.append(CalibrationEvent(float(t_s[-1]), "recalibrate", why))
        slouches = self.slouch.update(t_s, flexion, upright_context)
        leans = self.lean.update(t_s, lateral, activity == SITTING)
        rotations = self.rotation.update(t_s, rotation, walking | lying | jumped)
        out.events += sorted([*slouches, *leans, *rotations], key=lambda e: e.start_s)
        keep = real
        out.t_s, out.flexion_deg, out.lateral_deg = t_s[keep], flexion[keep], lateral[keep]
        out.rotation_deg, out.activity = rotation[keep], activity[keep]
        now_s = float(t_s[-1]) + self.dt_s if len(t_s) else 0.0
        self._account(now_s, out, slouches, leans, rotations, lost_samples)
        return out

    def _account(self, now_s, out, slouches, leans, rotations, lost_samples) -> None:
        m = self.minutes
        m.add_samples(out.t_s, out.flexion_deg, out.lateral_deg, out.activity, self.dt_s)
        if len(out.t_s):
            m.add_lost(float(out.t_s[0]), lost_samples)
        for e in rotations:
            m.add_rotation(e)
        # Slouch and lean time counts once confirmed by the dwell, from where it started.
        for e in slouches:
            self._add_confirmed("slouch", e.start_s, e.end_s)
        for e in leans:
            self._add_confirmed(f"lean_{e.side}", e.start_s, e.end_s, e.mean_lateral_deg)
        if (o := self.slouch.confirmed_open(now_s, self.s.slouch.dwell_s)) is not None:
            self._add_confirmed("slouch", o.start_t_s, now_s)
        if (o := self.lean.confirmed_open(now_s, self.s.lean.dwell_s)) is not None:
            mean = o.total / o.count
            self._add_confirmed("lean_right" if mean > 0 else "lean_left", o.start_t_s, now_s, mean)
        out.metrics = m.ready(now_s)

    def _add_confirmed(self, kind: str, start_s: float, end_s: float, mean_deg: float = 0.0) -> None:
        family = kind.split("_")[0]
        since = max(start_s, self._added_until_s.get(family, -np.inf))
        if end_s > since:
            self.minutes.add_interval(kind, since, end_s, mean_deg)
            self._added_until_s[family] = end_s

    def finish(self) -> list[MinuteMetrics]:
        """The last, incomplete minute (end of a replay)."""
        return self.minutes.flush()

    def _reset_detectors(self) -> None:
        for detector in (self.slouch, self.lean, self.rotation):
            detector.reset()
        self.baseline.reset()

    def _bridge_gaps(self, t_s, acc_g, gyro_dps):
        """Insert interpolated samples into short gaps; report whether a long gap came before."""
        reset = False
        if self._last_t_s is not None:
            t_all = np.concatenate([[self._last_t_s], t_s])
            x_all = np.vstack([self._last_sample, np.hstack([acc_g, gyro_dps])])
        else:
            t_all, x_all = t_s, np.hstack([acc_g, gyro_dps])
        steps = np.round(np.diff(t_all) / self.dt_s).astype(int)
        real = np.ones(len(t_all), bool)
        if np.any(steps > 1):
            long_gap = np.diff(t_all) > self.s.max_fill_s
            reset = bool(long_gap.any())
            self.gaps_reset += int(long_gap.sum())
            fill = (steps > 1) & ~long_gap
            self.gaps_filled += int(fill.sum())
            if fill.any():
                # New sample times on the nominal grid inside each short gap; values linearly interpolated.
                extra = np.concatenate([t_all[i] + self.dt_s * np.arange(1, steps[i]) for i in np.flatnonzero(fill)])
                t_new = np.concatenate([t_all, extra])
                order = np.argsort(t_new, kind="stable")
                x_new = np.column_stack([np.interp(t_new[order], t_all, x_all[:, j]) for j in range(6)])
                real = np.concatenate([real, np.zeros(len(extra), bool)])[order]
                t_all, x_all = t_new[order], x_new
        if self._last_t_s is not None:
            t_all, x_all, real = t_all[1:], x_all[1:], real[1:]
        self._last_t_s, self._last_sample = float(t_all[-1]), x_all[-1].copy()
        return t_all, x_all[:, :3], x_all[:, 3:], real, reset
