"""Fault injection for the virtual sensor: lost packets, malformed packets, failed reads, lone spikes of rotation rate,
going out of range."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MALFORMED_KINDS = ("truncated", "header", "length")
SPIKE_DPS = 1500.0  # (±2000 °/s is the native and WitMotion full scale)


@dataclass
class FaultSettings:
    loss_p: float = 0.0  # probability a notification is dropped (its samples are never sent)
    corrupt_p: float = 0.0  # probability a malformed packet is sent before a good one
    # probability a sample is a failed read of the IMU (its bus glitched): acceleration zero on every axis, as some
    # drivers hand on a read that returned nothing
    failed_read_p: float = 0.0
    # probability a sample's rotation rate is a lone glitch (a bit flipped on the bus): SPIKE_DPS on one axis, within
    # every profile's range, where the samples either side read the motion
    gyro_spike_p: float = 0.0
    silences_s: list[tuple[float, float]] = field(default_factory=list)  # (start_s, duration_s)
    # (start_s, duration_s): in range and connectable, subscriptions taken, but no data sent (its IMU hung)
    mutes_s: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("loss_p", "corrupt_p", "failed_read_p", "gyro_spike_p"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for what, spans in (("silence", self.silences_s), ("mute", self.mutes_s)):
            for start_s, duration_s in spans:
                if start_s < 0 or duration_s <= 0:
                    raise ValueError(f"{what} {start_s}:{duration_s} needs start ≥ 0 and duration > 0")


class FaultInjector:
    """Decides, packet by packet, what goes wrong. Its own RNG stream, so faults don't change motion."""

    def __init__(self, settings: FaultSettings, seed: int, kinds: tuple[str, ...] = MALFORMED_KINDS):
        self.settings = settings
        self.kinds = kinds
        self.rng = np.random.default_rng([seed, 0xFA17])
        self.dropped_packets = 0
        self.malformed_sent: dict[str, int] = {kind: 0 for kind in MALFORMED_KINDS}

    def drop(self) -> bool:
        dropped = self.settings.loss_p > 0 and self.rng.random() < self.settings.loss_p
        self.dropped_packets += dropped
        return bool(dropped)

    def malformed(self, good: bytes) -> bytes | None:
        """A malformed variant of `good` to send before it, or None."""
        if not (self.settings.corrupt_p > 0 and self.rng.random() < self.settings.corrupt_p):
            return None
        kind = self.kinds[self.rng.integers(len(self.kinds))]
        self.malformed_sent[kind] += 1
        if kind == "truncated":
            return good[: max(1, len(good) // 2 - 1)]
        if kind == "header":
            # 0xEE is neither a native version nibble we speak nor WitMotion's 0x55 sync byte.
            return bytes([0xEE, 0xEE]) + good[2:]
        return good + b"\x00\x00\x00"

    def failed_reads(self, n: int) -> np.ndarray:
        """Which of n samples are failed reads (a mask); none drawn when there are none to draw."""
        if self.settings.failed_read_p <= 0:
            return np.zeros(n, bool)
        return self.rng.random(n) < self.settings.failed_read_p

    def gyro_spikes(self, gyro_dps: np.ndarray) -> tuple[np.ndarray, int]:
        """The rotation rates with lone spikes put in, and how many; none drawn when there are none to draw. Never two
        in a row within a notification (two are not a lone spike: pipeline/spikes.py)."""
        if self.settings.gyro_spike_p <= 0:
            return gyro_dps, 0
        at = self.rng.random(len(gyro_dps)) < self.settings.gyro_spike_p
        at[1:] &= ~at[:-1]
        out = gyro_dps.copy()
        k = np.flatnonzero(at)
        out[k, self.rng.integers(0, 3, len(k))] = SPIKE_DPS * self.rng.choice([-1.0, 1.0], len(k))
        return out, len(k)

    def silent_at(self, t_s: float) -> bool:
        return any(start <= t_s < start + dur for start, dur in self.settings.silences_s)

    def muted_at(self, t_s: float) -> bool:
        return any(start <= t_s < start + dur for start, dur in self.settings.mutes_s)
