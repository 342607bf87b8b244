"""When to send the live state: at most one per step of a 1/live_hz grid of sensor time; and the batch's earlier
states that one message carries (gateway.live_hz above one per pipeline batch)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from pipeline.angles import wrapped_deg
from pipeline.events import EarlierState, LiveState

# A message carries at most this many earlier states (contract/schemas/live.json): 10 a second over 10 s batches.
MAX_EARLIER = 100
MAX_EARLIER_AGE_S = 600.0  # … none older than this before the message's own state


class LiveClock:
    """Says when a live state is due: the first time t_s enters a new step of the 1/live_hz grid.

    Why a grid and not every batch: the live state is the batch's latest sample (so a nudge waits for
    nothing older than the batch), spaced by the grid so batches a little shorter than 1/live_hz never
    send two in one step. live_hz 0: never.
    """

    def __init__(self, live_hz: float, batch_s: float = 1.0):
        self.live_hz = live_hz  # live states per second of sensor time (0: none)
        # Earlier states ride along only when more than one a batch is asked for: at one a batch, a message carries
        # its own state alone (a first batch that starts mid-step would otherwise carry one, and a consumer from
        # before `earlier` existed refuses the whole message).
        self.carries_earlier = live_hz * batch_s > 1.0
        self._step: int | None = None  # the grid step of the last live state sent

    def due(self, t_s: float) -> bool:
        """True when t_s lies in a later grid step than the last time this said True (the first time: True)."""
        if self.live_hz <= 0:
            return False
        step = math.floor(t_s * self.live_hz)
        if self._step is not None and step <= self._step:
            return False
        self._step = step
        return True

    def take(self, t_s: np.ndarray, latest_t_s: float) -> np.ndarray | None:
        """A batch's live message: None when no state is due at latest_t_s (the batch's latest sample), else the
        indices into t_s (its samples, in time order) of the earlier states it carries — the first sample of each
        grid step after the last one said and before latest_t_s's — so a live stream above one state per batch goes
        out as one message per batch."""
        earlier = self._earlier(t_s, latest_t_s)  # before due() moves the last step said on
        return earlier if self.due(latest_t_s) else None

    def _earlier(self, t_s: np.ndarray, latest_t_s: float) -> np.ndarray:
        if not self.carries_earlier or not len(t_s):
            return np.empty(0, dtype=np.int64)
        steps = np.floor(t_s * self.live_hz).astype(np.int64)
        first = np.concatenate([[True], steps[1:] != steps[:-1]])
        after = steps > self._step if self._step is not None else np.ones(len(steps), dtype=bool)
        recent = t_s >= latest_t_s - MAX_EARLIER_AGE_S  # the contract's bound: older would void the whole message
        return np.flatnonzero(first & after & recent & (steps < math.floor(latest_t_s * self.live_hz)))[-MAX_EARLIER:]


def live_message(state: LiveState | None, clock: LiveClock, t_s: np.ndarray, flexion_deg: np.ndarray,
                 lateral_deg: np.ndarray, rotation_deg: np.ndarray) -> LiveState | None:
    """A batch's live message, as `posture run` publishes it: the pipeline's live state (PosturePipeline.live_state,
    after the batch) when the clock says one is due, with the batch's earlier states (its samples t_s and angles, as
    PipelineOutput holds them) that ride along; None when none is due."""
    if state is None or (earlier := clock.take(t_s, state.t_s)) is None:
        return None
    if len(earlier):
        state = replace(state, earlier=earlier_states(t_s, flexion_deg, lateral_deg, rotation_deg, earlier))
    return state


def earlier_states(t_s: np.ndarray, flexion_deg: np.ndarray, lateral_deg: np.ndarray, rotation_deg: np.ndarray,
                   index: np.ndarray) -> tuple[EarlierState, ...]:
    """The angles at those samples; rotation said in (−180°, 180°] as the live state says it. A sample without all
    three angles (not finite) is left out: JSON has no NaN."""
    rotation = wrapped_deg(rotation_deg[index])
    rows = np.column_stack([t_s[index], flexion_deg[index], lateral_deg[index], rotation])
    return tuple(EarlierState(*map(float, row)) for row in rows[np.isfinite(rows).all(axis=1)])
