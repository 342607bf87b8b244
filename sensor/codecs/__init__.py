"""Decoders: notification bytes → samples in SI-named units. One module per sensor profile.

Written from the vendor layouts, independently of the simulator's encoders; tests/golden/ pins
both to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class PacketError(ValueError):
    """Bytes that are not a valid packet. `kind` is one of KINDS, for counting."""

    KINDS = ("length", "header", "truncated")

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedPacket:
    acc_g: np.ndarray  # (n, 3)
    gyro_dps: np.ndarray  # (n, 3)
    seq: int | None = None  # packet counter, where the profile has one (wraps at 2^16)
    t0_us: int | None = None  # sensor clock of sample 0, where the profile has one (wraps at 2^32)
    period_us: int | None = None
    euler_deg: np.ndarray | None = None  # sensor's own roll, pitch, yaw (WitMotion)
    mag_ut: np.ndarray | None = None  # magnetometer (Thingy:52)

    @property
    def n(self) -> int:
        return len(self.acc_g)


def int16_le(data: bytes, offset: int, count: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2", count=count, offset=offset).astype(np.float64)
