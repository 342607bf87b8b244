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

After a lost link (`reset(hold=True)`) the heading before it says nothing of the facing direction, and the first
heading after it may be a trunk still turned: the baseline then starts there provisionally, but the samples are kept
until the facing direction is known again — the trunk held one heading, steady within `near_deg`, for `settle_s`
(longer than any rotation is held) — and then measured again against that heading, as if the baseline had started
there (`found`). If the wearer walks first, or no such heading comes within `hold_max_s`, the provisional measure
stands. A restart (a pipeline given a kept calibration, pipeline/stream.py) starts the same way: its first
heading may be a trunk turned too.

The baseline moves in blocks of `block_s`, a Python step per block (4 per second), not per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


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
    # After a lost link: samples are held at most this long for the facing direction to show (a heading held
    # settle_s within near_deg); the per-minute records after the link's return wait as long.
    hold_max_s: float = 120.0


@dataclass(frozen=True)
class Found:
    """How a hold after a lost link ended, in the update that ended it. rotation_deg, jumped: the held samples before
    that update's, measured again against the facing direction found (that update's own samples are returned
    measured the same way); shown_deg: that update's rotation as the output shows it, provisional up to where the
    hold ended (so the per-sample output does not depend on the batching). All None when the provisional measure
    stands (walking came first, or hold_max_s passed)."""

    rotation_deg: np.ndarray | None = None
    jumped: np.ndarray | None = None
    shown_deg: np.ndarray | None = None


class FacingBaseline:
    def __init__(self, settings: AxialSettings = AxialSettings()):
        self.s = settings
        self._block = max(1, round(settings.block_s * settings.rate_hz))
        self._baseline: float | None = None
        self._drift_dps = 0.0
        self._away_blocks: list[float] = []  # recent block headings while away, for settling
        self._pending = np.empty(0)  # samples of an unfinished block
        self._pending_walk = np.empty(0, dtype=bool)
        self._restarted = False  # the next sample is the first after a reset: the facing direction starts there
        # While the facing direction is unknown after a lost link: the headings since (samples, and the full blocks'
        # means and walking); None otherwise.
        self._held: list[np.ndarray] | None = None
        self._held_means = np.empty(0)
        self._held_walks = np.empty(0, dtype=bool)
        self.found: Found | None = None  # set by the update() that ended a hold

    def reset(self, hold: bool = False) -> None:
        """After a long gap the heading before it means nothing: start again from the next sample. hold: a lost link,
        which may end with the trunk turned: hold the samples until the facing direction shows (module docstring)."""
        self._baseline = None
        self._drift_dps = 0.0
        self._away_blocks.clear()
        self._pending = np.empty(0)
        self._pending_walk = np.empty(0, dtype=bool)
        self._restarted = True
        self._held = [] if hold else None
        self._held_means = np.empty(0)
        self._held_walks = np.empty(0, dtype=bool)

    @property
    def holding(self) -> bool:
        """Samples are held: the facing direction has not shown since a lost link."""
        return self._held is not None

    def let_go(self) -> None:
        """End a hold with the provisional measure standing (what was open is closed: another gap, the end)."""
        self._held = None

    def update(self, yaw_right_deg: np.ndarray, walking: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Axial rotation (°, + right) per sample, and where the facing direction jumped (or started afresh). While
        holding, provisional; `found` says how a hold ended, in the update that ended it."""
        self.found = None
        if self._baseline is None and len(yaw_right_deg):
            self._baseline = float(yaw_right_deg[0])
        yaw = np.concatenate([self._pending, yaw_right_deg])
        walk = np.concatenate([self._pending_walk, walking])
        n_done = len(yaw) // self._block * self._block
        # Block statistics in one go; the loop in _steps only steps the baseline (plain floats).
        means = yaw[:n_done].reshape(-1, self._block).mean(axis=1)
        walks = cast(np.ndarray, walk[:n_done].reshape(-1, self._block).any(axis=1))
        if self._held is not None:
            ended_at, facing = self._facing_shown(means, walks)
            if ended_at is not None and facing is not None:
                # Shown provisional up to the end of the block that ended the hold, as in any batching.
                provisional, _ = self._measure(yaw, cast(list[float], means.tolist()), cast(list[bool], walks.tolist()),
                                               len(self._pending))
                shown_to = (ended_at + 1) * self._block - len(self._pending)
                self._pending, self._pending_walk = yaw[n_done:], walk[n_done:]
                return self._measured_again(facing, yaw_right_deg, means, walks, provisional[:shown_to])
            if ended_at is not None:  # the provisional measure stands
                self._held = None
                self.found = Found()
            else:
                self._held.append(np.asarray(yaw_right_deg, float))
                self._held_means = np.concatenate([self._held_means, means])
                self._held_walks = np.concatenate([self._held_walks, walks])
        rotation, jumped = self._measure(yaw, cast(list[float], means.tolist()), cast(list[bool], walks.tolist()),
                                         len(self._pending))
        self._pending, self._pending_walk = yaw[n_done:], walk[n_done:]
        return rotation, jumped

    def _measured_again(self, facing: float, yaw_right_deg: np.ndarray, means: np.ndarray, walks: np.ndarray,
                        shown_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End the hold: the baseline stepped again from `facing` over the held blocks and this update's, as if it had
        started there after the gap. The held samples' rotation and jumps go in `found`, with this update's shown
        (shown_deg, provisional, then as measured now); this update's are returned."""
        held = cast(list[np.ndarray], self._held)
        before = sum(len(h) for h in held)
        self._held = None
        self._baseline, self._drift_dps = facing, 0.0
        self._away_blocks.clear()
        self._restarted = True  # an excursion already out at the first sample after the gap was not seen whole
        rotation, jumped = self._measure(np.concatenate([*held, yaw_right_deg]),
                                         cast(list[float], np.concatenate([self._held_means, means]).tolist()),
                                         cast(list[bool], np.concatenate([self._held_walks, walks]).tolist()), 0)
        self.found = Found(rotation[:before], jumped[:before],
                           np.concatenate([shown_deg, rotation[before + len(shown_deg):]]))
        return rotation[before:], jumped[before:]

    def _measure(self, yaw: np.ndarray, means: list[float], walks: list[bool], new_from: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Step the baseline over the blocks of yaw (means, walks): the rotation and jumps of yaw[new_from:]."""
        n_done = len(means) * self._block
        bases, jumps = self._steps(means, walks)
        # Each sample is measured against the baseline as it stood at the start of its block (causal).
        base = np.empty(len(yaw))
        base[:n_done].reshape(-1, self._block)[:] = np.array(bases)[:, None]
        base[n_done:] = self._baseline
        new = slice(new_from, None)
        if not jumps and not self._restarted:  # the usual batch
            return (yaw - base)[new], np.zeros(len(yaw) - new_from, bool)
        jumped = np.zeros(len(yaw), bool)
        if jumps:
            jumped[np.array(jumps, dtype=np.intp) * self._block + self._block - 1] = True
        jumped_new = jumped[new].copy()
        # A jump found in a block that began in the previous batch marks this batch's first sample.
        jumped_new[:1] |= jumped[:new.start].any()
        if self._restarted and len(jumped_new):
            jumped_new[0] = True  # the facing direction starts afresh here (a rotation already out was not seen)
            self._restarted = False
        return (yaw - base)[new], jumped_new

    def _facing_shown(self, means: np.ndarray, walks: np.ndarray) -> tuple[int | None, float | None]:
        """Which of this update's blocks (means, walks) ends the hold (None: none does), and the facing direction found
        (None: the provisional measure stands). The first of: the trunk has held one heading, steady within near_deg,
        for settle_s (a heading held longer than any rotation is held is the facing direction); walking (which shows the
        facing direction from then on, not where it was before); hold_max_s."""
        s = self.s
        n_held, settle_n = len(self._held_means), round(s.settle_s / s.block_s)
        never = len(means)
        steady_at, facing = never, None
        # The windows of settle_n blocks that end in this update's blocks (those ending before were looked at).
        recent = np.concatenate([self._held_means[max(0, n_held - settle_n + 1):], means])
        if len(recent) >= settle_n:
            windows = sliding_window_view(recent, settle_n)
            steady = np.flatnonzero(windows.max(axis=1) - windows.min(axis=1) < s.near_deg)
            if len(steady):
                steady_at = int(steady[0]) + settle_n - 1 - (len(recent) - len(means))
                facing = float(windows[steady[0]].mean())
        walk_at = int(np.argmax(walks)) if walks.any() else never
        bound_at = round(s.hold_max_s / s.block_s) - 1 - n_held
        if steady_at < min(walk_at, bound_at + 1):
            return steady_at, facing
        ended_at = min(walk_at, bound_at)
        return (ended_at if ended_at < never else None), None

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
