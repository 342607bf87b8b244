"""Values for samples lost in a short gap (a lost notification or two), from the real ones around it."""

from __future__ import annotations

import numpy as np

GAP_CONTEXT = 2  # real samples either side the cubic goes through
GYRO_COLUMNS = slice(3, 6)  # acc_g (3), gyro_dps (3)[, quaternion (4)]
CUBIC_MAX_S = 0.15  # two or three notifications; over a longer gap a cubic from four samples wanders


def fill_gap(t_s: np.ndarray, x: np.ndarray, i: int, t_fill_s: np.ndarray, cubic: slice,
             dt_s: float) -> np.ndarray:
    """Rows for times t_fill_s between real samples i and i + 1 (fill_gaps for one gap)."""
    return fill_gaps(t_s, x, np.array([i]), t_fill_s, np.zeros(len(t_fill_s), np.intp), cubic, dt_s)


def fill_gaps(t_s: np.ndarray, x: np.ndarray, gap_at: np.ndarray, t_fill_s: np.ndarray, of_gap: np.ndarray,
              cubic: slice, dt_s: float) -> np.ndarray:
    """Rows for times t_fill_s, each inside gap of_gap[k], which lies between real samples gap_at[g] and
    gap_at[g] + 1: linear, and for the `cubic` columns a cubic through GAP_CONTEXT real samples either
    side when the gap is short and they are there. All gaps of a batch at once: a lossy link has one
    per lost notification, and one numpy pass per gap cost more than the rest of the pipeline.

    Linear is right for a signal that changes slowly across the gap; a rotation rate falling fast at
    the end of a twist is not one, and a straight line adds to the integrated angle for good. The
    context must be consecutive samples: samples beyond another gap say little about this one. The
    right-hand context must be in the same batch (the gateway's batches are whole notifications, so
    it is, but for a gap at a batch's very end, which is then filled linearly).
    """
    left, span_s = gap_at[of_gap], t_s[gap_at + 1] - t_s[gap_at]
    # np.interp's own arithmetic, so one gap filled here equals np.interp to the last bit.
    slope = (x[gap_at + 1] - x[gap_at]) / span_s[:, None]
    out: np.ndarray = slope[of_gap] * (t_fill_s - t_s[left])[:, None] + x[left]
    n = len(t_s)
    ok = (gap_at + 1 - GAP_CONTEXT >= 0) & (gap_at + 1 + GAP_CONTEXT <= n) & (span_s - dt_s <= CUBIC_MAX_S + dt_s / 4)
    context = gap_at[:, None] + np.arange(1 - GAP_CONTEXT, 1 + GAP_CONTEXT)  # (gaps, 4) sample indices
    steps = np.diff(t_s[np.clip(context, 0, n - 1)], axis=1)
    ok &= (np.delete(steps, GAP_CONTEXT - 1, axis=1) < 1.5 * dt_s).all(axis=1)  # every step but the gap is one sample
    if ok.any():
        # Through four points a (not-a-knot) cubic spline is the one cubic through them: solved for
        # directly (batched), about 7× quicker than scipy's CubicSpline. Times from each gap's start
        # keep the Vandermonde matrix well conditioned (Unix seconds would not).
        g = np.flatnonzero(ok)
        t0 = t_s[gap_at[g]]
        coef = np.linalg.solve(_vander3(t_s[context[g]] - t0[:, None]), x[context[g], cubic])  # (G, 4, cols)
        rows = np.flatnonzero(ok[of_gap])
        which = np.searchsorted(g, of_gap[rows])
        powers = _vander3(t_fill_s[rows] - t0[which])  # (rows, 4)
        out[rows, cubic] = np.einsum("rk,rkc->rc", powers, coef[which])
    return out


def _vander3(t: np.ndarray) -> np.ndarray:
    """np.vander(t, 4) along the last axis, for any leading shape: t³, t², t, 1."""
    powers: np.ndarray = t[..., None] ** np.arange(3, -1, -1)
    return powers
