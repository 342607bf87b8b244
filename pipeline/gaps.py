"""Values for samples lost in a short gap (a lost notification or two), from the real ones around it."""

from __future__ import annotations

import numpy as np

GAP_CONTEXT = 2  # real samples either side the cubic goes through
GYRO_COLUMNS = slice(3, 6)  # acc_g (3), gyro_dps (3)[, quaternion (4)]
CUBIC_MAX_S = 0.15  # two or three notifications; over a longer gap a cubic from four samples wanders


def fill_gap(t_s: np.ndarray, x: np.ndarray, i: int, t_fill_s: np.ndarray, cubic: slice,
             dt_s: float) -> np.ndarray:
    """Rows for times t_fill_s between real samples i and i + 1: linear, and for the `cubic` columns a
    cubic through GAP_CONTEXT real samples either side when the gap is short and they are there.

    Linear is right for a signal that changes slowly across the gap; a rotation rate falling fast at
    the end of a twist is not one, and a straight line adds to the integrated angle for good. The
    context must be consecutive samples: samples beyond another gap say little about this one. The
    right-hand context must be in the same batch (the gateway's batches are whole notifications, so
    it is, but for a gap at a batch's very end, which is then filled linearly).
    """
    out = np.column_stack([np.interp(t_fill_s, t_s[i:i + 2], x[i:i + 2, j]) for j in range(x.shape[1])])
    lo, hi = i + 1 - GAP_CONTEXT, i + 1 + GAP_CONTEXT
    if lo < 0 or hi > len(t_s) or t_s[i + 1] - t_s[i] - dt_s > CUBIC_MAX_S + dt_s / 4:  # time lost > limit
        return out
    steps = np.diff(t_s[lo:hi])
    if np.all(np.delete(steps, GAP_CONTEXT - 1) < 1.5 * dt_s):  # every step but the gap itself is one sample
        # Through four points a (not-a-knot) cubic spline is the one cubic through them: solved for
        # directly, about 7× quicker than scipy's CubicSpline, once per lost notification. Times from
        # the gap's start keep the Vandermonde matrix well conditioned (Unix seconds would not).
        t0 = t_s[i]
        coef = np.linalg.solve(np.vander(t_s[lo:hi] - t0, 4), x[lo:hi, cubic])
        out[:, cubic] = np.vander(t_fill_s - t0, 4) @ coef
    return out
