"""Axial trunk rotation from one IMU: trunk heading against a slowly adapting facing direction.

One IMU on the upper back sees the trunk's heading (yaw), which is facing direction (pelvis,
chair, walking direction) plus axial trunk rotation. The facing direction is estimated as a
baseline that
- follows slowly (`follow_tau_s`) while the trunk is near it — gyro drift (tracked as a rate, so
  excursions are measured against where the facing direction has drifted to) and small chair turns;
- freezes while the trunk is away from it by more than `near_deg` — an excursion is measured
  against the facing direction it left from, and comes back;
- jumps to the new heading after it has stayed away, steady, for `settle_s` (the longest a trunk
  rotation is held, 15 s) — a chair turned or a whole-body turn: those do not come back, so they
  are not excursions; beyond the trunk's own range (`trunk_range_deg`) it cannot be a trunk
  rotation, and the jump comes after `settle_far_s`;
- follows fast (`walk_tau_s`) while walking: walking turns are whole-body turns.
rotation = trunk heading − baseline, + to the right (docs/conventions.md).

The baseline moves in blocks of `block_s`, a Python step per block (4 per second), not per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np


@dataclass(frozen=True)
class AxialSettings:
    rate_hz: float = 100.0
    block_s: float = 0.25
    near_deg: float = 8.0
    follow_tau_s: float = 20.0
    max_drift_dps: float = 2.0  # the drift left about vertical once VQF has learnt the bias at a rest
    walk_tau_s: float = 0.5
    settle_s: float = 15.0  # = RotationSettings.max_s: a rotation held up to this long is still measured
    settle_far_s: float = 2.0
    trunk_range_deg: float = 60.0  # = RotationSettings.max_peak_deg
    settle_spread_deg: float = 4.0  # "steady": block headings within this of each other


class FacingBaseline:
    def __init__(self, settings: AxialSettings = AxialSettings()):
        self.s = settings
        self._block = max(1, round(settings.block_s * settings.rate_hz))
        self._baseline: float | None = None
        self._drift_dps = 0.0
        self._away_blocks: list[float] = []  # recent block headings while away, for settling
        self._pending = np.empty(0)  # samples of an unfinished block
        self._pending_walk = np.empty(0, dtype=bool)

    def reset(self) -> None:
        """After a long gap the heading before it means nothing: start again from the next sample."""
        self._baseline = None
        self._drift_dps = 0.0
        self._away_blocks.clear()
        self._pending = np.empty(0)
        self._pending_walk = np.empty(0, dtype=bool)

    def update(self, yaw_right_deg: np.ndarray, walking: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Axial rotation (°, + right) per sample, and where the facing direction jumped."""
        if self._baseline is None and len(yaw_right_deg):
            self._baseline = float(yaw_right_deg[0])
        yaw = np.concatenate([self._pending, yaw_right_deg])
        walk = np.concatenate([self._pending_walk, walking])
        n_done = len(yaw) // self._block * self._block
        # Block statistics in one go; the loop in _steps only steps the baseline (plain floats).
        means = yaw[:n_done].reshape(-1, self._block).mean(axis=1).tolist()
        walks = cast(list[bool], walk[:n_done].reshape(-1, self._block).any(axis=1).tolist())
        bases, jumps = self._steps(means, walks)
        # Each sample is measured against the baseline as it stood at the start of its block (causal).
        base = np.empty(len(yaw))
        base[:n_done].reshape(-1, self._block)[:] = np.array(bases)[:, None]
        base[n_done:] = self._baseline
        self._pending, self._pending_walk = yaw[n_done:], walk[n_done:]
        new = slice(len(yaw) - len(yaw_right_deg), None)
        if not jumps:
            return (yaw - base)[new], np.zeros(len(yaw_right_deg), bool)
        jumped = np.zeros(len(yaw), bool)
        jumped[np.array(jumps, dtype=np.intp) * self._block + self._block - 1] = True
        # A jump found in a block that began in the previous batch marks this batch's first sample.
        jumped_new = jumped[new].copy()
        jumped_new[:1] |= jumped[:new.start].any()
        return (yaw - base)[new], jumped_new

    def _steps(self, means: list[float], walks: list[bool]) -> tuple[list[float], list[int]]:
        """Move the baseline block by block: the baseline each block is measured against, and the blocks after
        which it jumped to a new facing direction. State in locals: this loop runs four times a second of data."""
        s = self.s
        assert self._baseline is not None  # update() sets it before there are samples to step over
        baseline, drift, away_blocks = self._baseline, self._drift_dps, self._away_blocks
        block_s, near_deg, follow_tau_s, max_drift = s.block_s, s.near_deg, s.follow_tau_s, s.max_drift_dps
        walk_gain, settle_n = min(1.0, s.block_s / s.walk_tau_s), round(s.settle_s / s.block_s)
        settle_far_n = round(s.settle_far_s / s.block_s)
        follow_tau2 = follow_tau_s**2
        bases: list[float] = []
        jumps: list[int] = []
        for k, (heading, walking) in enumerate(zip(means, walks)):
            bases.append(baseline)
            # The gyro's leftover bias about vertical turns the heading steadily: the baseline follows that
            # drift as a rate (a second-order tracker), so it neither lags behind it nor stops for excursions.
            baseline += drift * block_s
            away = heading - baseline
            if walking:
                baseline += away * walk_gain
                away_blocks.clear()
            elif -near_deg <= away <= near_deg:
                baseline += away * 2.0 * block_s / follow_tau_s  # critically damped, time constant τ
                # Clamped to ±max_drift by comparisons (min and max calls cost more, four times a second of data).
                drift += away * block_s / follow_tau2
                if drift < -max_drift:
                    drift = -max_drift
                elif drift > max_drift:
                    drift = max_drift
                if away_blocks:
                    away_blocks.clear()
            else:
                away_blocks.append(heading)
                del away_blocks[:-settle_n]  # only the longest settle is looked at
                settle = settle_far_n if abs(away) > s.trunk_range_deg else settle_n
                recent = away_blocks[-settle:]
                if len(recent) == settle and max(recent) - min(recent) < s.settle_spread_deg:
                    baseline = float(np.mean(recent))
                    away_blocks.clear()
                    jumps.append(k)
        self._baseline, self._drift_dps = baseline, drift
        return bases, jumps
