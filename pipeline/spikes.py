"""Lone spikes: one sample far from both its neighbours, which agree with each other, in rotation rate or in
acceleration.

A bit flipped on the sensor's bus or a corrupt cell of a recording gives one, and so does a tap on the sensor's case
when it shows in one sample (BROAD's tapping trial: 16-17 g); a trunk does not. Integrated, one sample of
2,000 °/s at 100 Hz turns the orientation estimate by 20° at once: during the calibration bend it had the
calibration refused (a simulated day with no second bend measured no minute), elsewhere it moved sit/stand by
seconds. One sample of 6-16 g adds 0.5-1.5 m/s to the double integral sit/stand is told by: a seated wearer read
standing for 125 s (an attack on the first version, which looked at rotation rate only). The pipeline's door drops
such a sample (the gap it leaves is filled like a lost packet's).

The bound in rotation rate is an angle: a spike that would turn the estimate by more than SPIKE_DEG. A glitch of
400 °/s at 100 Hz (4°, which the accelerometer takes back) changed nothing measured, 700 °/s refused the calibration
(its bend must come back within 6° of upright); 500 °/s moved the calibration bend's depth by 4° and a rotation's
peak by 0.3°. And never within what real motion jumps in one sample step, which grows with the step: the largest jump
of a sample from both neighbours (that agree within half of it) in real recordings (BROAD's 7 trials, CC BY 4.0,
../shared/data/broad/README.md, at 286 Hz and thinned; x-io's, MIT, 62 °/s at 100 and 50 Hz; tapping on the sensor:
225 °/s at 286 Hz) is 260 °/s at 48 Hz, 330 at 41 Hz, 387 at 36 Hz, 507 at 29 Hz and 547 at 26 Hz (hand-held fast
rotation and translation, far beyond a trunk's). So SPIKE_DEG / dt, but at least REAL_JUMP_DPS_S × dt: 300 °/s at
50 Hz (6°), 500 °/s at 100 Hz, 1,000 °/s at 200 Hz, 600 °/s at 25 Hz (24°).

Acceleration: SPIKE_G at any rate. Real motion's largest lone jump is 1.97 g (BROAD thinned to 71 Hz; 1.5 g at
143 Hz; x-io's 1.0 g at 100 Hz); one sample of 4 g changed nothing measured where 5-6 g turned 110-125 s of sitting
into standing (office-short seed 8, 100 Hz). A tap's sample goes with its rotation rate, which was real: the tapping
trial's orientation, its lone taps filled, is 0.05° worse (0.61° → 0.65°). Most real taps ring over 2-5 samples
(BROAD: 39 of 63 lone at 286 Hz, 8 of 19 at 95 Hz) and pass: sit/stand's double integral bridges those
(impulses.py).

No sample of the simulator's named cases and three random hours, at 50, 100 and 200 Hz (14.3 M samples), is a lone
spike. Two bad samples in a row are not one and pass (an attack: two adjacent glitches of rotation rate still moved
sit/stand in 6 of 16 places).
"""

from __future__ import annotations

import numpy as np

from .angles import row_norm

SPIKE_DEG = 5.0  # a sample this far (vector length, times the sample step) from both neighbours, which agree within
# half of it: a glitch
REAL_JUMP_DPS_S = 15_000.0  # … but no nearer than this times the step (°/s per s): real motion jumps as far
SPIKE_G = 3.0  # acceleration this far from both neighbours (vector length), which agree within half of it
SQRT3 = 3.0 ** 0.5
NEIGHBOURS_WITHIN_STEPS = 3.5  # the neighbours at most this many sample steps apart (one lost sample between): a
# sample either side of a gap is no neighbour


def lone_spikes(t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, dt_s: float) -> np.ndarray:
    """Per sample (in time order): a lone spike. The first and last samples have one neighbour only, and are not."""
    spike = np.zeros(len(t_s), bool)
    if len(t_s) < 3:
        return spike
    spike[1:-1] = ((_lone(gyro_dps, spike_dps(dt_s)) | _lone(acc_g, SPIKE_G))
                   & (t_s[2:] - t_s[:-2] <= NEIGHBOURS_WITHIN_STEPS * dt_s))
    return spike


def _lone(x: np.ndarray, bound: float) -> np.ndarray:
    """Per interior row: farther than bound from both neighbours, which agree within half of that."""
    before, here, after = x[:-2], x[1:-1], x[2:]
    jump = np.minimum(row_norm(here - before), row_norm(here - after))
    lone: np.ndarray = (jump > bound) & (row_norm(after - before) < jump / 2)
    return lone


def spike_dps(dt_s: float) -> float:
    """How far in rotation rate from both neighbours a lone spike is, at a sample step of dt_s."""
    return max(SPIKE_DEG / dt_s, REAL_JUMP_DPS_S * dt_s)


def no_spike_possible(x: np.ndarray, dt_s: float) -> bool:
    """Samples in time order (acc_g and gyro_dps, six columns) none of which can be a lone spike, or jumped like one:
    no axis steps more than a spike's bound over √3 (a vector is at most √3 times its largest axis long). The test
    of almost every batch, in a handful of numpy calls (lone_spikes' two dozen were a tenth of a 5-sample update)."""
    step = np.abs(x[1:] - x[:-1])
    return bool(step[:, :3].max(initial=0.0) <= SPIKE_G / SQRT3
                and step[:, 3:].max(initial=0.0) <= spike_dps(dt_s) / SQRT3)


def may_be_spike(t_before_s: float, before: np.ndarray, t_s: float, sample: np.ndarray, dt_s: float) -> bool:
    """A last sample (acc_g and gyro_dps, six values) that jumped from the one before it by more than a spike's bound:
    a lone spike if the next sample comes back, which is not known yet (the pipeline holds it back until then)."""
    acc_jump, gyro_jump = sample[:3] - before[:3], sample[3:] - before[3:]
    return bool((float(gyro_jump @ gyro_jump) > spike_dps(dt_s) ** 2 or float(acc_jump @ acc_jump) > SPIKE_G ** 2)
                and t_s - t_before_s <= NEIGHBOURS_WITHIN_STEPS * dt_s)
