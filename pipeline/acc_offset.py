"""The accelerometer's offset along vertical as a function of the sensor's orientation, fitted over the day's rests.

An accelerometer reads G·a + b: a bias b (≤ 0.03 g an axis) and a gain G (within 2 % an axis). Along world up u (in
sensor axes) at rest that is an offset of b·u + Σ (Gᵢ − 1) uᵢ² on top of 1 g, which moves as the trunk tilts: 0.01 g
for a 30° sit-up, which a 5 s double integral turns into a quarter metre. Every rest of the day, at whatever tilt,
is an equation in those numbers (the multi-position calibration of accelerometers, e.g. Frosio et al. 2009, done
on the wearer's own rests), so the offset's change across a movement can be predicted from where the sensor pointed,
not only blended between the rests either side of it (activity.py). The gain's part moves by up to 0.016 g over 40° of
tilt, but as the square of the tilt: over the tilts the rests spanned, c + b·u across the mean up leaves 0.002 g of it,
fitted by least squares with a prior that b is within the sensor's specification, so a direction of tilt not yet seen
predicts little change. Tilting further along a direction seen does not: the straight line is extrapolated with the
certainty of its slope, and neither the gain's square nor the bias's part along the mean up is in that certainty.

Pure: rest samples (world up in sensor axes, measured offset) in, predicted offsets out.
"""

from __future__ import annotations

import numpy as np

BIAS_PRIOR_G = 0.03
CONSTANT_PRIOR_G = 0.1
SECOND_NOISE_G = 0.003  # a second of rest's mean offset: noise, sway and the orientation filter's error


def _features(up: np.ndarray) -> np.ndarray:
    """[1, u] per row of up (n × 3 → n × 4)."""
    return np.hstack([np.ones((len(up), 1)), up])


class AccOffset:
    """The fit, kept as its normal equations (sums: the same however the samples are batched, to rounding)."""

    def __init__(self, rate_hz: float) -> None:
        self._ftf = np.zeros((4, 4))  # Σ f fᵀ and Σ f·offset over rest samples, f = [1, u]
        self._fto = np.zeros(4)
        self._sample_s = 1.0 / rate_hz  # a second of samples is one observation: they are not independent

    def add(self, up: np.ndarray, offset_g: np.ndarray) -> None:
        """Rest samples: world up in sensor axes (n × 3) and the vertical reading less 1 g (n)."""
        f = _features(up)
        self._ftf += self._sample_s * (f.T @ f)
        self._fto += self._sample_s * (f.T @ offset_g)

    def change(self, up: np.ndarray, up0: np.ndarray) -> tuple[np.ndarray, float]:
        """The offset at each row of up less the one at up0, and how uncertain the most uncertain of them is (1σ, g).

        Only the bias across the rests' mean up is fitted: along it, u moves by the square of the tilt only, which
        cannot be told from a constant (tried: the fit then ran off along it and predicted 0.04 g at 36°)."""
        if self._ftf[0, 0] <= 0.0:
            return np.zeros(len(up)), np.inf
        r = self._ftf[0, 1:] / np.linalg.norm(self._ftf[0, 1:])
        e1 = np.cross(r, [1.0, 0.0, 0.0] if abs(r[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(r, e1)
        t = np.zeros((4, 3))
        t[0, 0], t[1:, 1], t[1:, 2] = 1.0, e1, e2
        prior = np.array([CONSTANT_PRIOR_G, BIAS_PRIOR_G, BIAS_PRIOR_G])
        cov = np.linalg.inv(t.T @ self._ftf @ t + np.diag((SECOND_NOISE_G / prior) ** 2))
        theta = cov @ (t.T @ self._fto)
        d = (up - up0) @ t[1:, 1:]  # the constant cancels
        var = np.einsum("ij,jk,ik->i", d, cov[1:, 1:], d)
        return d @ theta[1:], float(SECOND_NOISE_G * np.sqrt(max(0.0, float(var.max()))))
