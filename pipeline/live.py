"""When to send the live state: at most one per step of a 1/live_hz grid of sensor time."""

from __future__ import annotations

import math


class LiveClock:
    """Says when a live state is due: the first time t_s enters a new step of the 1/live_hz grid.

    Why a grid and not every batch: the live state is the batch's latest sample (so a nudge waits for
    nothing older than the batch), spaced by the grid so batches a little shorter than 1/live_hz never
    send two in one step. live_hz 0: never.
    """

    def __init__(self, live_hz: float):
        self.live_hz = live_hz  # live states per second of sensor time (0: none)
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
