"""Values for samples lost in a short gap (a lost notification or two), from the real ones around it."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

GAP_CONTEXT = 2  # real samples either side the cubic goes through
GYRO_COLUMNS = slice(3, 6)  # acc_g (3), gyro_dps (3)[, quaternion (4)]


def fill_gap(t_s: np.ndarray, x: np.ndarray, i: int, t_fill_s: np.ndarray, cubic: slice) -> np.ndarray:
    """Rows for times t_fill_s between real samples i and i + 1: linear, and for the `cubic` columns a
    cubic through GAP_CONTEXT real samples either side when they are there and close.

    Linear is right for a signal that changes slowly across the gap; a rotation rate falling fast at
    the end of a twist is not one, and a straight line adds to the integrated angle for good. The
    context must be near: samples beyond another gap say little about this one.
    """
    out = np.column_stack([np.interp(t_fill_s, t_s[i:i + 2], x[i:i + 2, j]) for j in range(x.shape[1])])
    lo, hi = i + 1 - GAP_CONTEXT, i + 1 + GAP_CONTEXT
    if lo >= 0 and hi <= len(t_s):
        dt_s = (t_fill_s[-1] - t_s[i]) / len(t_fill_s)
        if t_s[hi - 1] - t_s[lo] <= (t_s[i + 1] - t_s[i]) + 2 * (GAP_CONTEXT - 1) * dt_s * 1.5:
            out[:, cubic] = CubicSpline(t_s[lo:hi], x[lo:hi, cubic])(t_fill_s)
    return out
