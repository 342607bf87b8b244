"""Impulses: a tap on the sensor's case as the accelerometer samples it, which sit/stand's double integral must not
take for motion.

A tap shakes the case for a few milliseconds; the body it is strapped to gains no speed from it. Sampled without an
anti-alias filter, its ringing leaves a few samples of 3-17 g whose sum is no longer zero, and the double integral
turns that into a rise or a fall: most real taps ring over 2-5 samples and pass the door's lone-spike test
(spikes.py). Added to a seated stretch (office-short seed 8, 100 Hz, in the calibration's sit-up), 14 of 33 of
BROAD's taps that ring (its tapping trial thinned to 95 Hz, CC BY 4.0: ../shared/data/broad/README.md) read 110 s of
sitting as standing. The tap need not point along vertical: one across the back with 0.9 g of it along vertical
moved the integral by 0.19 m. So impulses are found in all three axes, and bridged in the vertical acceleration the
integral takes.

An impulse: a sample whose acceleration lies more than SPIKE_G (3 g, spikes.py: real motion never jumps that far)
from the median of the IMPULSE_HALF_S either side, and the sample on each side of such a sample (a tap's ringing fades
through 1-3 g there: without them 8 of the 33 still read standing). Real motion never comes that far from that
median: 1.80 g at most in BROAD's hand-held fast rotation and translation, at 286 Hz and thinned to 26 Hz (2.29 g
thinned from another first sample, an attack's; x-io's recording: 0.91 g). A sit-down's landing is slower: a 100 ms
half-sine of 1.5 g lies 0.6 g from its median at 50-200 Hz (1.4 g at 25 Hz). A harder one, stopped in 30-80 ms, is
found like a tap, but unlike a tap it stops the fall before it: `landings_kept` puts it back.

Not mended: the test of whether the trunk moves (activity.py, `_moving`) still sees a tap, as it sees it, at once; only
the judging, seconds later, has the samples either side to tell it by. A tap 1.5-3.5 s before a stand-up made one
movement of the two, begun inside the slouch the wearer sat up from before: no rest before it, not judged, the
stand-up missed (a review's probe, office-short seed 8: 695 standing samples read sitting, 9431957 too); taps every
1.2 s after a sit-down held the movement open past move_core_max_s (walk-to-chair seed 8: the 30 s bout read
standing). One tap in the 1.6 s after a sit/stand delays its flip by up to 2.2 s.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .angles import row_norm
from .runs import runs_of
from .spikes import SPIKE_G, SQRT3

# A tap rings for up to ~50 ms (5 samples at 95 Hz): a median of 0.06 s either side of a sample is the body's motion.
IMPULSE_HALF_S = 0.06


def impulses(acc_g: np.ndarray, rate_hz: float) -> np.ndarray:
    """Per sample of acceleration (g, three axes, evenly sampled at rate_hz): part of an impulse. The median's window
    is cut at the ends of acc_g (their samples are repeated), so the answer depends on acc_g alone."""
    n, k = len(acc_g), max(1, round(IMPULSE_HALF_S * rate_hz))
    found = np.zeros(n, bool)
    # No sample steps more than SPIKE_G / (k √3) in any axis: none can lie SPIKE_G from a median k steps away at most.
    if n < 2 * k + 1 or k * SQRT3 * float(np.abs(acc_g[1:] - acc_g[:-1]).max()) <= SPIKE_G:
        return found
    window = sliding_window_view(np.pad(acc_g, ((k, k), (0, 0)), mode="edge"), 2 * k + 1, axis=0)
    far = row_norm(acc_g - np.median(window, axis=-1)) > SPIKE_G
    found[:-1] |= far[1:]
    found[1:] |= far[:-1]
    return found | far


def bridged(x: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """x with the samples marked gone replaced by a straight line between the kept samples either side (the first or
    last kept value beyond them), as a lost packet's are filled."""
    if not gone.any() or gone.all():
        return x
    i = np.arange(len(x))
    filled: np.ndarray = np.where(gone, np.interp(i, i[~gone], x[~gone]), x)
    return filled


def landings_kept(acc_m_s2: np.ndarray, removed_m_s2: np.ndarray, v0_m_s: float, dt_s: float) -> np.ndarray:
    """acc_m_s2 (impulses bridged, as integrated from velocity v0_m_s) with each bridged run put back whose samples
    (removed_m_s2: what the bridging took off) stop a fall, bringing the downward velocity there was just before it
    nearer zero: a landing's impact is what ends the fall before it, and bridged, the fall never stopped (a sit-down
    stopped in 30-80 ms read as a rise of 0.8-1.75 m, an attack's). A tap seldom comes in a fall, and its ringing's sum
    stays bridged. Nearer zero, not "most of it": sampled at 25 Hz, a 0.3 m fall's 80 ms stop summed to 3.1 m/s against
    the 1.9 it stopped. Any velocity, not a fall's: two taps in the calibration's sit-up were put back (2 of 33 read
    standing). By the velocity at the window's end: a tap that cancelled a drift of 0.12 m/s there was put back (227 s
    of standing read sitting)."""
    runs = runs_of(removed_m_s2 != 0)
    if not runs:
        return acc_m_s2
    kept, v_m_s, added_m_s = acc_m_s2.copy(), v0_m_s + np.cumsum(acc_m_s2) * dt_s, 0.0
    for a, b in runs:
        before_m_s = (v_m_s[a - 1] if a else v0_m_s) + added_m_s
        dv_m_s = float(removed_m_s2[a:b].sum()) * dt_s
        if before_m_s < 0.0 < dv_m_s and abs(before_m_s + dv_m_s) < abs(before_m_s):  # (a fall, stopped)
            kept[a:b] += removed_m_s2[a:b]
            added_m_s += dv_m_s
    return kept
