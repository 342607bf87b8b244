"""Trunk kinematics -> IMU readings (accelerometer, gyroscope, Euler angles) in the sensor frame.

Frames and signs: docs/conventions.md. Each chunk is computed from the analytic kinematics
with a one-sample margin on both sides, so finite differences need no state and chunk edges
are invisible; the only state carried between chunks is the noise generators and the gyro
bias random walk, both consumed strictly in sample order.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
from scipy.spatial.transform import Rotation

from .motion import Kinematics, MotionModel, TruthEvents
from .scenario import OFF, Scenario, SensorSettings

G_M_S2 = 9.80665
SENSOR_ABOVE_PIVOT_M = 0.45  # sensor height above the trunk pivot, along trunk up
BOOT_OFFSET_S = (1.0, 1000.0)  # sensor clock at the first sample, uniform in this range
FD_MARGIN = 1  # extra samples each side for central differences
# Columns are the sensor axes in the trunk frame: x = trunk up, y = trunk left, z = trunk backward.
R_TRUNK_SENSOR_NOMINAL = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
# Independent generator streams (spawned from the seed) so no stream's draws depend on another's.
STREAM_MOTION, STREAM_DEVICE, STREAM_ACC, STREAM_GYRO, STREAM_BIAS_WALK, STREAM_ERRORS = range(6)
RESEAT_S = 2.0  # putting a slipped sensor back takes a couple of seconds
TRUNK_AXES = {"forward": np.array([1.0, 0.0, 0.0]), "left": np.array([0.0, 1.0, 0.0]), "up": np.array([0.0, 0.0, 1.0])}


@dataclass(frozen=True)
class SimChunk:
    index: np.ndarray  # int64 sample indices
    t_s: np.ndarray  # true time since start
    t_sensor_us: np.ndarray  # int64 sensor clock (boot offset + drift), not wrapped
    acc_g: np.ndarray  # (n, 3) specific force, sensor frame
    gyro_dps: np.ndarray  # (n, 3) angular velocity, sensor frame
    euler_deg: np.ndarray  # (n, 3) roll, pitch, yaw of the sensor in the world
    flexion_deg: np.ndarray
    lateral_deg: np.ndarray
    rotation_deg: np.ndarray
    heading_deg: np.ndarray
    activity: np.ndarray  # str: the scenario segment's activity
    context: np.ndarray  # str: sitting, standing, walking or lying (what the pipeline is scored on)

    def __len__(self) -> int:
        return int(self.index.size)


def world_from_trunk(
    flexion_deg: np.ndarray, lateral_deg: np.ndarray, rotation_deg: np.ndarray, heading_deg: np.ndarray
) -> np.ndarray:
    """R_world_trunk = Rz(-(heading + rotation)) Ry(flexion) Rx(lateral), shape (n, 3, 3)."""
    yaw = np.radians(-(np.asarray(heading_deg) + rotation_deg))
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(np.radians(flexion_deg)), np.sin(np.radians(flexion_deg))
    cx, sx = np.cos(np.radians(lateral_deg)), np.sin(np.radians(lateral_deg))
    r = np.empty(np.shape(yaw) + (3, 3))
    r[..., 0, 0], r[..., 0, 1], r[..., 0, 2] = cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx
    r[..., 1, 0], r[..., 1, 1], r[..., 1, 2] = sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx
    r[..., 2, 0], r[..., 2, 1], r[..., 2, 2] = -sy, cy * sx, cy * cx
    return r


def rotvec_from_matrix(r: np.ndarray) -> np.ndarray:
    """Log map of rotations below 180 deg, (n, 3, 3) -> (n, 3) rad; atan2 keeps small angles exact."""
    v = 0.5 * np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], axis=1)
    sin_angle = np.linalg.norm(v, axis=1)
    angle = np.arctan2(sin_angle, 0.5 * (r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2] - 1.0))
    scale = np.divide(angle, sin_angle, out=np.ones_like(angle), where=sin_angle > 1e-300)
    return v * scale[:, None]


def mismount_rotation(settings: SensorSettings, rng: np.random.Generator) -> Rotation:
    """Explicit mount_euler_deg, else a random axis turned by up to mount_max_deg."""
    axis = rng.normal(size=3)
    angle_deg = rng.uniform(0.0, settings.mount_max_deg)
    if settings.mount_euler_deg is not None:
        roll, pitch, yaw = settings.mount_euler_deg
        return Rotation.from_euler("ZYX", [yaw, pitch, roll], degrees=True)
    return Rotation.from_rotvec(np.radians(angle_deg) * axis / np.linalg.norm(axis))


@dataclass(frozen=True)
class PlannedSlip:
    """A slip of the sensor on the back: rotation (trunk frame) growing from start_s to end_s, undone at reseat_s."""

    axis: np.ndarray  # unit, trunk frame
    angle_deg: float
    start_s: float
    end_s: float
    reseat_s: float  # inf: never re-seated

    def profile(self, t_s: np.ndarray) -> np.ndarray:
        from .motion import smoothstep

        grow = smoothstep((t_s - self.start_s) / (self.end_s - self.start_s))
        return grow - smoothstep((t_s - self.reseat_s) / RESEAT_S) if np.isfinite(self.reseat_s) else grow


def plan_reseats(motion: MotionModel, rng: np.random.Generator) -> list[PlannedSlip]:
    """A sensor taken off is put back on a little off where it sat: turned by reseat_deg about a random axis, for good.
    The turn happens while it lies off the body (where the mount does not show), so it is a slip over that time."""
    out = []
    for k in motion.off_segments:
        seg = motion.segments[k]
        axis = rng.normal(size=3)
        out.append(PlannedSlip(axis / np.linalg.norm(axis), seg.params.reseat_deg, seg.start_s, seg.end_s, np.inf))
    return out


def plan_slips(scenario: Scenario, rng: np.random.Generator) -> list[PlannedSlip]:
    out = []
    for slip in scenario.slips:
        axis = TRUNK_AXES.get(slip.axis)
        if axis is None:
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
        end_s = slip.start_s + slip.duration_s
        reseat_s = np.inf if slip.reseat_after_s is None else end_s + slip.reseat_after_s
        out.append(PlannedSlip(axis, slip.angle_deg, slip.start_s, end_s, reseat_s))
    return out


class SensorSimulation:
    """A virtual back-worn IMU playing a scenario; see the module docstring."""

    def __init__(self, scenario: Scenario, seed: int = 1, rate_hz: float | None = None, **sensor_overrides: Any):
        overrides = {k: v for k, v in sensor_overrides.items() if v is not None}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(SensorSettings)}
        if unknown:
            raise TypeError(f"unknown sensor setting(s): {', '.join(sorted(unknown))}")
        if "mount_max_deg" in overrides and "mount_euler_deg" not in overrides:
            overrides["mount_euler_deg"] = None  # an explicit bound replaces the scenario's fixed mount
        if overrides.get("mount_euler_deg") is not None:
            overrides["mount_euler_deg"] = tuple(float(v) for v in overrides["mount_euler_deg"])
        self.scenario = scenario
        self.seed = seed
        self.settings = dataclasses.replace(scenario.sensor, **overrides)
        self.rate_hz = float(rate_hz if rate_hz is not None else self.settings.rate_hz)
        self._streams = np.random.SeedSequence(seed).spawn(6)
        self.motion = MotionModel(scenario, np.random.default_rng(self._streams[STREAM_MOTION]), self.rate_hz)
        device = np.random.default_rng(self._streams[STREAM_DEVICE])
        self.mismount = mismount_rotation(self.settings, device)
        self.r_trunk_sensor = R_TRUNK_SENSOR_NOMINAL @ self.mismount.as_matrix()
        self.boot_offset_us = int(round(device.uniform(*BOOT_OFFSET_S) * 1e6))
        bias_dir = device.normal(size=3)
        self.gyro_bias0_dps = self.settings.gyro_bias_dps * bias_dir / np.linalg.norm(bias_dir)
        errors = np.random.default_rng(self._streams[STREAM_ERRORS])
        acc_dir = errors.normal(size=3)
        self.acc_bias_g = self.settings.acc_bias_g * acc_dir / np.linalg.norm(acc_dir)
        self.acc_gain = 1.0 + errors.uniform(-1, 1, size=3) * self.settings.acc_scale_error
        self.gyro_gain = 1.0 + errors.uniform(-1, 1, size=3) * self.settings.gyro_scale_error
        self.slips = plan_slips(scenario, errors)
        self.reseats = plan_reseats(self.motion, errors)  # drawn last: a scenario without off_body draws nothing more

    @property
    def n_samples(self) -> int:
        return self.motion.n_samples

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate_hz

    @cached_property
    def _events(self) -> TruthEvents:
        return self.motion.events()

    def events(self) -> TruthEvents:
        return self._events

    def meta(self) -> dict[str, Any]:
        """Run description for the truth file (JSON-ready)."""
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "rate_hz": self.rate_hz,
            "n_samples": self.n_samples,
            "duration_s": self.duration_s,
            "mount_quat_xyzw": Rotation.from_matrix(self.r_trunk_sensor).as_quat().tolist(),
            "mismount_quat_xyzw": self.mismount.as_quat().tolist(),
            "gyro_bias0_dps": self.gyro_bias0_dps.tolist(),
            "acc_bias_g": self.acc_bias_g.tolist(),
            "acc_gain": self.acc_gain.tolist(),
            "gyro_gain": self.gyro_gain.tolist(),
            "slips": [{"axis_trunk": s.axis.tolist(), "angle_deg": s.angle_deg, "start_s": s.start_s, "end_s": s.end_s,
                       "reseat_s": s.reseat_s if np.isfinite(s.reseat_s) else None} for s in self.slips],
            "reseats": [{"axis_trunk": s.axis.tolist(), "angle_deg": s.angle_deg, "off_s": s.start_s, "on_s": s.end_s}
                        for s in self.reseats],
            "boot_offset_us": self.boot_offset_us,
            "sensor": dataclasses.asdict(self.settings),
        }

    def r_trunk_sensor_at(self, t_s: np.ndarray) -> np.ndarray:
        """How the sensor sits on the trunk at each time, (n, 3, 3): the mount, turned by any slip, and as it was put
        back on after each time off the body."""
        t_s = np.atleast_1d(np.asarray(t_s, dtype=float))
        r = np.broadcast_to(self.r_trunk_sensor, (t_s.size, 3, 3)).copy()
        for slip in self.slips + self.reseats:
            angle = np.radians(slip.angle_deg) * slip.profile(t_s)
            if np.any(angle):
                r = Rotation.from_rotvec(angle[:, None] * slip.axis).as_matrix() @ r
        return r

    def chunks(self, max_samples: int = 500) -> Iterator[SimChunk]:
        """All samples in order, max_samples at a time; each call replays the same run."""
        acc_rng, gyro_rng, walk_rng = (
            np.random.default_rng(self._streams[s]) for s in (STREAM_ACC, STREAM_GYRO, STREAM_BIAS_WALK)
        )
        bias_dps = self.gyro_bias0_dps.copy()
        walk_step_dps = self.settings.gyro_bias_walk_dps_per_sqrt_s / np.sqrt(self.rate_hz)
        for i0 in range(0, self.n_samples, max_samples):
            i1 = min(i0 + max_samples, self.n_samples)
            kin = self.motion.kinematics(i0 - FD_MARGIN, i1 + FD_MARGIN)
            acc_g, gyro_dps, euler_deg = self._ideal_imu(kin)
            n = i1 - i0
            acc_g = (acc_g * self.acc_gain + self.acc_bias_g
                     + self.settings.acc_noise_g * acc_rng.standard_normal((n, 3)))
            # Carrying the last bias as the first cumsum term keeps chunked sums bit-identical.
            steps = np.vstack([bias_dps, walk_step_dps * walk_rng.standard_normal((n, 3))])
            bias = np.cumsum(steps, axis=0)[1:]
            bias_dps = bias[-1]
            gyro_dps = (gyro_dps * self.gyro_gain + bias
                        + self.settings.gyro_noise_dps * gyro_rng.standard_normal((n, 3)))
            inner = slice(FD_MARGIN, FD_MARGIN + n)
            t_s = kin.t_s[inner]
            activity = self.motion.activity_names[kin.segment[inner]]
            context = self.motion.context_names[kin.segment[inner]]
            if self.motion.off_segments:  # handled on the way off and back on: already off the body
                handled = kin.off_weight[inner] > 0
                activity, context = np.where(handled, "off_body", activity), np.where(handled, OFF, context)
            drift = 1.0 + self.settings.clock_drift_ppm * 1e-6
            yield SimChunk(
                index=np.arange(i0, i1, dtype=np.int64),
                t_s=t_s,
                t_sensor_us=self.boot_offset_us + np.round(t_s * drift * 1e6).astype(np.int64),
                acc_g=acc_g,
                gyro_dps=gyro_dps,
                euler_deg=euler_deg,
                flexion_deg=kin.flexion_deg[inner],
                lateral_deg=kin.lateral_deg[inner],
                rotation_deg=kin.rotation_deg[inner],
                heading_deg=kin.heading_deg[inner],
                activity=activity,
                context=context,
            )

    def _ideal_imu(self, kin: Kinematics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noise-free acc (g), gyro (deg/s), Euler (deg) for the window without its margins."""
        dt = 1.0 / self.rate_hz
        r_wt = world_from_trunk(kin.flexion_deg, kin.lateral_deg, kin.rotation_deg, kin.heading_deg)
        if self.motion.off_segments:
            r_ws = r_wt @ self._r_trunk_sensor_handled(kin)
        else:
            r_ws = r_wt @ (self.r_trunk_sensor_at(kin.t_s) if self.slips else self.r_trunk_sensor)
        pos_m = SENSOR_ABOVE_PIVOT_M * r_wt[:, :, 2]
        pos_m[:, 2] += kin.pelvis_z_m
        acc_m_s2 = (pos_m[2:] - 2.0 * pos_m[1:-1] + pos_m[:-2]) / dt**2
        # The pelvis horizontal position is the integral of the walking velocity: differentiate once.
        acc_m_s2 += (kin.pelvis_vel_m_s[2:] - kin.pelvis_vel_m_s[:-2]) / (2.0 * dt)
        specific_force_g = acc_m_s2 / G_M_S2
        specific_force_g[:, 2] += 1.0
        r_mid = r_ws[1:-1]
        acc_g = np.einsum("nji,nj->ni", r_mid, specific_force_g)
        rel = np.einsum("nji,njk->nik", r_ws[:-2], r_ws[2:])  # R_{k-1}^T R_{k+1}
        gyro_dps = np.degrees(rotvec_from_matrix(rel)) / (2.0 * dt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # gimbal lock: nominal mount has pitch -90
            euler_deg = Rotation.from_matrix(r_mid).as_euler("ZYX", degrees=True)[:, ::-1].copy()
        return acc_g, gyro_dps, euler_deg

    def _r_trunk_sensor_handled(self, kin: Kinematics) -> np.ndarray:
        """The sensor on the trunk's pose while worn; put down, the pose is the placed one itself (a sensor lying on a
        desk lies flat on its housing, whatever its mount on the back was): the mount fades out as it is taken off
        and back in as it is put on."""
        r_ts = self.r_trunk_sensor_at(kin.t_s)
        mount = Rotation.from_matrix(np.einsum("ji,njk->nik", R_TRUNK_SENSOR_NOMINAL, r_ts))
        faded = Rotation.from_rotvec(mount.as_rotvec() * (1.0 - kin.off_weight)[:, None])
        return cast(np.ndarray, R_TRUNK_SENSOR_NOMINAL @ faded.as_matrix())
