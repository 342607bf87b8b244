"""What the client knows about each sensor profile: UUIDs, decoder, configuration commands (data tables)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .codecs import DecodedPacket, native, thingy52, witmotion

BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
MODEL_NUMBER_UUID = "00002a24-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True)
class SensorProfile:
    name: str
    service_uuid: str
    data_uuid: str
    control_uuid: str
    decode: Callable[[bytes], DecodedPacket]
    # Set the sample rate: (current control value or None, rate_hz) → bytes to write, or ValueError.
    rate_command: Callable[[bytes | bytearray | None, float], bytes]
    reads_control: bool  # whether rate_command needs the current control value
    has_sensor_clock: bool  # sequence counter and sensor timestamps on the wire
    # Samples per notification for a rate: rate_hz → bytes to write, or None where the wire sends one each.
    packing_command: Callable[[float], bytes] | None = None
    # Written (and UNLOCK_SETTLE_S waited) before the rate command, where the sensor ignores register writes without.
    unlock_command: bytes | None = None


UNLOCK_SETTLE_S = 0.1
# WitMotion sensors ignore register writes unless unlocked first, silently: they go on at their own rate (10 Hz from
# the factory) while the client counts 9 of 10 samples lost. WitMotion's SDKs and users' code send this, then write.
WITMOTION_UNLOCK = bytes([0xFF, 0xAA, 0x69, 0x88, 0xB5])


# A lost notification takes its samples with it; the rotation rate inside cannot be filled in (a
# twist is out and back in half a second). At most this much motion per notification: 2 samples at
# 50 Hz, 5 at 100 and 200 Hz (docs/accuracy.md, case rotations-loss-50hz).
NOTIFICATION_MAX_S = 0.05
NATIVE_MAX_SAMPLES = 5  # fits the 73-byte MTU PROTOCOL.md asks for


def samples_per_notification(rate_hz: float) -> int:
    return max(1, min(NATIVE_MAX_SAMPLES, int(rate_hz * NOTIFICATION_MAX_S)))


def _native_packing(rate_hz: float) -> bytes:
    return bytes([0x04, samples_per_notification(rate_hz)])


def _native_rate(_: bytes | bytearray | None, rate_hz: float) -> bytes:
    return struct.pack("<BH", 0x03, round(rate_hz))


# WitMotion return-rate register codes (register 0x03).
WITMOTION_RATE_CODES = {0.2: 0x01, 0.5: 0x02, 1: 0x03, 2: 0x04, 5: 0x05, 10: 0x06, 20: 0x07, 50: 0x08,
                        100: 0x09, 200: 0x0B}


def _witmotion_rate(_: bytes | bytearray | None, rate_hz: float) -> bytes:
    code = WITMOTION_RATE_CODES.get(rate_hz)
    if code is None:
        raise ValueError(f"WT901BLE rates are {sorted(WITMOTION_RATE_CODES)} Hz, not {rate_hz}")
    return bytes([0xFF, 0xAA, 0x03, code, 0x00])


# Thingy:52 motion rates the sensor delivers as asked. The firmware takes 5–200 Hz (a write outside is refused:
# ATT "write not permitted") and hands it to the MPU-9250's DMP, whose FIFO rate is 200 Hz / (⌊200 / rate⌋): 150
# gives 200 Hz, 60 gives 66.7, 30 gives 33.3 — so only the divisors of 200 are what the timeline is told.
THINGY_RATES_HZ = (5, 8, 10, 20, 25, 40, 50, 100, 200)


def _thingy_rate(current: bytes | bytearray | None, rate_hz: float) -> bytes:
    if rate_hz not in THINGY_RATES_HZ:
        raise ValueError(f"Thingy:52 rates are {list(THINGY_RATES_HZ)} Hz (200 Hz divided by a whole number), "
                         f"not {rate_hz}")
    # Motion config: pedometer ms, temperature ms, compass ms, motion rate Hz, wake-on-motion.
    fields = list(struct.unpack("<HHHHB", current)) if current and len(current) == 9 else [1000, 1000, 1000, 0, 1]
    fields[3] = round(rate_hz)
    return struct.pack("<HHHHB", *fields)


def _thingy(short: int) -> str:
    return f"ef68{short:04x}-9b35-4933-9b10-52ffa9740042"


PROFILES: dict[str, SensorProfile] = {p.name: p for p in (
    SensorProfile("native", "d0a10001-5c3e-4b8e-9f2a-3c7e1b4d6a80", "d0a10002-5c3e-4b8e-9f2a-3c7e1b4d6a80",
                  "d0a10003-5c3e-4b8e-9f2a-3c7e1b4d6a80", native.decode, _native_rate, False, True, _native_packing),
    # WitMotion's UUID base is …-00805f9a34fb, one digit off the Bluetooth SIG base.
    SensorProfile("witmotion", "0000ffe5-0000-1000-8000-00805f9a34fb", "0000ffe4-0000-1000-8000-00805f9a34fb",
                  "0000ffe9-0000-1000-8000-00805f9a34fb", witmotion.decode, _witmotion_rate, False, False,
                  unlock_command=WITMOTION_UNLOCK),
    SensorProfile("thingy52", _thingy(0x0400), _thingy(0x0406), _thingy(0x0401), thingy52.decode, _thingy_rate,
                  True, False),
)}


def detect_profile(service_uuids: Iterable[str]) -> SensorProfile | None:
    """The profile whose service the device has (from advertised or resolved service UUIDs)."""
    uuids = {u.lower() for u in service_uuids}
    return next((p for p in PROFILES.values() if p.service_uuid in uuids), None)
