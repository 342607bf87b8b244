"""Notifications → pipeline-sized batches.

A notification carries 1–15 samples; the pipeline's cost is mostly per call, so the gateway hands
it about `batch_s` of samples at a time. Pure: the caller says when to let go of what is held (the
gateway on a timer, so a quiet link never holds data back for long; the accuracy harness when the
stream pauses).
"""

from __future__ import annotations

import numpy as np

from .stream import ImuBatch


class BatchCollector:
    def __init__(self, batch_s: float, rate_hz: float):
        """rate_hz: the sample rate the sensor was asked for (the pipeline's), whose period each sample spans."""
        self.batch_s = batch_s
        self.period_s = 1.0 / rate_hz
        self._held: list[ImuBatch] = []

    @property
    def held(self) -> bool:
        return bool(self._held)

    def add(self, batch: ImuBatch) -> ImuBatch | None:
        """The collected batch once it spans batch_s (at once when batch_s is 0), else None.

        The span counts each sample's own period (last − first + one period): 100 samples at 100 Hz are
        1 s. From the first to the last time alone they are 0.99 s, so with 5-sample notifications a
        "1 s" batch held 105 samples, and what the gateway sends once a batch (the live state) came at 0.95 Hz.
        """
        self._held.append(batch)
        if batch.t_s[-1] - self._held[0].t_s[0] + self.period_s >= self.batch_s - 1e-9:
            return self.take()
        return None

    def take(self) -> ImuBatch | None:
        """Whatever is held, as one batch (None if nothing is)."""
        if not self._held:
            return None
        held, self._held = self._held, []
        if len(held) == 1:
            return held[0]
        return ImuBatch(held[0].device, np.concatenate([b.t_s for b in held]),
                        np.concatenate([b.t_sensor_s for b in held]), np.vstack([b.acc_g for b in held]),
                        np.vstack([b.gyro_dps for b in held]), sum(b.lost_before for b in held))
