"""Wire profiles the virtual sensor can speak: how samples become notification bytes.

One module per profile; each exposes a `PROFILE` object with the same small interface
(`WireProfile`). Encoders here are the simulator's; the client's decoders in sensor/codecs/ are
written separately from the vendor layouts, and tests/golden/ pins both to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class StreamSettings:
    """What the central may change over the control characteristic."""

    rate_hz: float = 100.0
    samples_per_packet: int = 5
    streaming: bool = True
    unlocked: bool = False  # WitMotion: register writes are taken only after the unlock command


class WireProfile(Protocol):
    name: str
    service_uuid: str
    data_uuid: str
    control_uuid: str
    control_flags: list[str]
    malformed_kinds: tuple[str, ...]  # the faults a decoder can tell from good data

    def samples_per_packet(self, settings: StreamSettings) -> int: ...

    def encode(self, seq: int, t_sensor_us: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray,
               euler_deg: np.ndarray, settings: StreamSettings) -> bytes: ...

    def encode_chunk(self, seq: int, t_sensor_us: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray,
                     euler_deg: np.ndarray, settings: StreamSettings) -> list[bytes]:
        """Consecutive packets (samples_per_packet each, numbered from seq) for a run of samples, quantised once."""

    def read_control(self, settings: StreamSettings) -> bytes: ...

    def write_control(self, payload: bytes, settings: StreamSettings) -> None:
        """Apply a control write; raise ValueError for a malformed or unknown command."""


def quantize(values: np.ndarray, lsb: float) -> np.ndarray:
    """Round to the nearest LSB and saturate at the int16 range, as a sensor ADC would."""
    return np.clip(np.rint(np.asarray(values) / lsb), -32768, 32767).astype("<i2")


def quantize_wrapped(values: np.ndarray, lsb: float) -> np.ndarray:
    """Round to the nearest LSB and wrap modulo 2^16 (angles: +180° is the same as −180°)."""
    return (np.rint(np.asarray(values) / lsb).astype(np.int64) & 0xFFFF).astype("<u2").view("<i2")


def get_profile(name: str) -> WireProfile:
    from . import native, thingy52, witmotion

    profiles = {p.name: p for p in (native.PROFILE, witmotion.PROFILE, thingy52.PROFILE)}
    try:
        return profiles[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(profiles)}") from None


PROFILE_NAMES = ("native", "witmotion", "thingy52")
