"""Sensor orientation from accelerometer + gyroscope with VQF (a kept fusion library, not a hand-written AHRS).

VQF's 6D mode gives the sensor's attitude in a world frame whose z is up and whose heading is
arbitrary and slowly drifting; trunk tilt needs only the z axis, axial rotation only heading
changes (pipeline/axial.py). Its rest detection and gyro-bias estimation handle bias up to
`bias_clip_dps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from vqf import VQF, offlineVQF

G_M_S2 = 9.80665


@dataclass(frozen=True)
class OrientationSettings:
    rate_hz: float = 100.0
    tau_acc_s: float = 3.0  # accelerometer correction time constant (VQF default)
    # The largest gyro bias VQF will estimate, and the largest steady rate its rest detection takes for bias: an
    # MPU-9250's initial bias is specified to ±5 °/s. At VQF's 2 °/s a sensor with 3 °/s ran on a clipped estimate
    # (rotations missed, calibration silently off), with 5 °/s never calibrated (docs/pipeline.md).
    bias_clip_dps: float = 6.0
    # VQF estimates the gyro bias when it sees the sensor at rest for restMinT (default 1.5 s). A trunk
    # is not at rest in the pauses of fidgeting (≤ 1.5 s), and taking them as rest teaches VQF a wrong
    # bias about vertical (axial rotation drifts by degrees a minute): rest must last as long as the
    # calibration hold.
    rest_min_s: float = 3.0
    bias_sigma_rest_dps: float = 0.05

    def vqf_params(self) -> dict[str, float]:
        return {"tauAcc": self.tau_acc_s, "biasClip": self.bias_clip_dps, "restMinT": self.rest_min_s,
                "biasSigmaRest": self.bias_sigma_rest_dps}


def offline_quaternions(gyro_dps: np.ndarray, acc_g: np.ndarray,
                        settings: OrientationSettings = OrientationSettings()) -> np.ndarray:
    """VQF's offline estimate of a whole uniformly sampled recording (acausal: accuracy over latency)."""
    out = offlineVQF(np.ascontiguousarray(np.deg2rad(gyro_dps), dtype=float),
                     np.ascontiguousarray(acc_g * G_M_S2, dtype=float), None, 1.0 / settings.rate_hz,
                     settings.vqf_params())
    return cast(np.ndarray, out["quat6D"])


@dataclass(frozen=True)
class GyroBias:
    """VQF's gyro bias estimate (°/s, sensor axes) and its uncertainty (°/s): what a restarted gateway's filter starts
    from (gateway/service.py keeps it), as the filter of one run keeps it across a lost link (`restart`). Started at
    zero instead, the bias about vertical, which only a rest of `rest_min_s` teaches VQF, turned the heading at its
    full rate until then (a chaos run: a sensor's 1.15 °/s about vertical, a 14.6° twist 3 s after a restart read as a
    30° rotation lasting 4.6 s)."""

    bias_dps: tuple[float, float, float]
    sigma_dps: float

    def to_dict(self) -> dict[str, Any]:
        return {"bias_dps": list(self.bias_dps), "sigma_dps": self.sigma_dps}

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> GyroBias:
        """ValueError (or KeyError, TypeError) if doc is not one: a damaged or hand-edited file."""
        bias, sigma = doc["bias_dps"], doc["sigma_dps"]
        if not (isinstance(bias, list) and len(bias) == 3
                and all(isinstance(b, int | float) and math.isfinite(b) for b in bias)
                and isinstance(sigma, int | float) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"not a gyro bias: {doc!r}")
        return GyroBias((float(bias[0]), float(bias[1]), float(bias[2])), float(sigma))


class OrientationFilter:
    """Batches of gyro (°/s) and acc (g) in, unit quaternions [w, x, y, z] (world ← sensor) out."""

    def __init__(self, settings: OrientationSettings = OrientationSettings()):
        self.settings = settings
        self._vqf = VQF(1.0 / settings.rate_hz, **settings.vqf_params())  # VQF takes bias parameters in °/s

    def update(self, gyro_dps: np.ndarray, acc_g: np.ndarray) -> np.ndarray:
        """Unit quaternions (n, 4), one per sample."""
        return self.update_with_bias(gyro_dps, acc_g)[0]

    def update_with_bias(self, gyro_dps: np.ndarray, acc_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit quaternions (n, 4) and the gyro bias estimate (n, 3) in °/s, each as it stood after its sample: the
        same however the samples are batched, where `bias_dps` after a batch is only its last row."""
        out = self._vqf.updateBatch(np.ascontiguousarray(np.deg2rad(gyro_dps), dtype=float),
                                    np.ascontiguousarray(acc_g * G_M_S2, dtype=float))
        return cast(np.ndarray, out["quat6D"]), cast(np.ndarray, np.rad2deg(out["bias"]))

    def snapshot(self) -> dict[str, Any]:
        return {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in self._vqf.state.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self._vqf.state = state

    def restart(self) -> None:
        """Forget the orientation (after a long gap), keep the gyro bias estimate."""
        bias, sigma = self._vqf.getBiasEstimate()
        self._vqf.resetState()
        self._vqf.setBiasEstimate(bias, sigma)

    def bias(self) -> GyroBias:
        """The gyro bias estimate and its uncertainty, for another filter to go on from (`go_on`)."""
        bias, sigma = self._vqf.getBiasEstimate()
        return GyroBias(cast(tuple[float, float, float], tuple(np.rad2deg(bias).tolist())), math.degrees(sigma))

    def go_on(self, kept: GyroBias) -> None:
        """Start from another filter's gyro bias estimate (a restarted gateway's last run), as `restart` keeps this
        one's across a lost link; trusted no more than a fresh filter's zero (VQF's biasSigmaInit).

        The kept estimate is where this filter begins, not a certainty: the run it comes from may have ended hours or
        days ago, the sensor switched off and on since (a MEMS gyro's bias differs from one power-up to the next) or
        warmer or colder. Begun with that run's own uncertainty (about 0.05 °/s after a rest), VQF took a bias 1 °/s
        off for a measurement's noise: after 10 s at rest 0.7 °/s of it was still to learn, where begun as uncertain
        as at zero 0.1 °/s is (tests/test_gateway_restart.py), and the heading turned at the difference meanwhile.
        The bias about vertical, which no movement teaches, is still the kept one until the first rest."""
        sigma_dps = max(kept.sigma_dps, float(self._vqf.params["biasSigmaInit"]))
        self._vqf.setBiasEstimate(np.deg2rad(np.asarray(kept.bias_dps, float)), math.radians(sigma_dps))

    def set_horizontal_bias_dps(self, bias_dps: np.ndarray, up_sensor: np.ndarray) -> None:
        """Take the bias about horizontal axes from elsewhere (a still hold); keep VQF's own about vertical.

        Bias about horizontal axes tilts the inclination (flexion, lateral bend) until the
        accelerometer pulls it back; a hold measures it well. About vertical, breathing and sway
        in the hold are invisible to the accelerometer, and VQF's slower estimate is better.
        """
        up = up_sensor / np.linalg.norm(up_sensor)
        own = self.bias_dps()
        merged = own + (bias_dps - own) - np.dot(bias_dps - own, up) * up
        self._vqf.setBiasEstimate(np.deg2rad(merged))

    def bias_dps(self) -> np.ndarray:
        bias, _ = self._vqf.getBiasEstimate()
        return cast(np.ndarray, np.rad2deg(bias))
