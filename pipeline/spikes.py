"""Lone spikes of rotation rate: one sample far from both its neighbours, which agree with each other.

A bit flipped on the sensor's bus or a corrupt cell of a recording gives one; a trunk does not. Integrated, one
sample of 2,000 °/s at 100 Hz turns the orientation estimate by 20° at once: during the calibration bend it had the
calibration refused (a simulated day with no second bend measured no minute), elsewhere it moved sit/stand by
seconds. The pipeline's door drops such a sample (the gap it leaves is filled like a lost packet's).

The bound is an angle: a spike that would turn the estimate by more than SPIKE_DEG. A glitch of 400 °/s at 100 Hz
(4°, which the accelerometer takes back) changed nothing measured, 700 °/s refused the calibration (its bend must come
back within 6° of upright); 500 °/s moved the calibration bend's depth by 4° and a rotation's peak by 0.3°. And never
within what real motion jumps in one sample step, which grows with the step: the largest jump of a sample from both
neighbours (that agree within half of it) in real recordings (BROAD's 7 trials, CC BY 4.0, ../shared/data/broad/
README.md, at 286 Hz and thinned; x-io's, MIT, 62 °/s at 100 and 50 Hz; tapping on the sensor: 225 °/s at 286 Hz) is
260 °/s at 48 Hz, 330 at 41 Hz, 387 at 36 Hz, 507 at 29 Hz and 547 at 26 Hz (hand-held fast rotation and translation,
far beyond a trunk's). So SPIKE_DEG / dt, but at least REAL_JUMP_DPS_S × dt: 300 °/s at 50 Hz (6°), 500 °/s at 100 Hz,
1,000 °/s at 200 Hz, 600 °/s at 25 Hz (24°). Two bad samples in a row are not a lone spike and pass.
"""

from __future__ import annotations

import numpy as np

from .angles import row_norm

SPIKE_DEG = 5.0  # a sample this far (vector length, times the sample step) from both neighbours, which agree within
# half of it: a glitch
REAL_JUMP_DPS_S = 15_000.0  # … but no nearer than this times the step (°/s per s): real motion jumps as far
NEIGHBOURS_WITHIN_STEPS = 3.5  # the neighbours at most this many sample steps apart (one lost sample between): a
# sample either side of a gap is no neighbour


def lone_spikes(t_s: np.ndarray, gyro_dps: np.ndarray, dt_s: float) -> np.ndarray:
    """Per sample (in time order): a lone spike. The first and last samples have one neighbour only, and are not."""
    spike = np.zeros(len(t_s), bool)
    if len(t_s) < 3:
        return spike
    before, here, after = gyro_dps[:-2], gyro_dps[1:-1], gyro_dps[2:]
    jump_dps = np.minimum(row_norm(here - before), row_norm(here - after))
    spike[1:-1] = ((jump_dps > spike_dps(dt_s)) & (row_norm(after - before) < jump_dps / 2)
                   & (t_s[2:] - t_s[:-2] <= NEIGHBOURS_WITHIN_STEPS * dt_s))
    return spike


def spike_dps(dt_s: float) -> float:
    """How far from both neighbours a lone spike is, at a sample step of dt_s."""
    return max(SPIKE_DEG / dt_s, REAL_JUMP_DPS_S * dt_s)


def may_be_spike(t_before_s: float, gyro_before_dps: np.ndarray, t_s: float, gyro_dps: np.ndarray,
                 dt_s: float) -> bool:
    """A last sample that jumped from the one before it by more than spike_dps: a lone spike if the next sample comes
    back, which is not known yet (the pipeline holds it back until then)."""
    jump = gyro_dps - gyro_before_dps
    return bool(float(jump @ jump) > spike_dps(dt_s) ** 2 and t_s - t_before_s <= NEIGHBOURS_WITHIN_STEPS * dt_s)
