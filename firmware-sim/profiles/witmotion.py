"""WitMotion WT901BLE: 20-byte 0x55 0x61 packets, one sample each (vendor protocol, BLE 5.0 version)."""

from __future__ import annotations

import numpy as np

from . import StreamSettings, quantize, quantize_wrapped

# WitMotion's UUIDs use a non-standard base (…-00805f9a34fb, not the SIG's …-00805f9b34fb).
SERVICE_UUID = "0000ffe5-0000-1000-8000-00805f9a34fb"
DATA_UUID = "0000ffe4-0000-1000-8000-00805f9a34fb"
CONTROL_UUID = "0000ffe9-0000-1000-8000-00805f9a34fb"

ACC_LSB_G = 16 / 32768
GYRO_LSB_DPS = 2000 / 32768
ANGLE_LSB_DEG = 180 / 32768
# Return-rate register 0x03: code → Hz.
RATE_CODES_HZ = {0x01: 0.2, 0x02: 0.5, 0x03: 1.0, 0x04: 2.0, 0x05: 5.0, 0x06: 10.0, 0x07: 20.0,
                 0x08: 50.0, 0x09: 100.0, 0x0B: 200.0}
REG_RATE, REG_SAVE, REG_UNLOCK = 0x03, 0x00, 0x69


def encode_packet(acc_g: np.ndarray, gyro_dps: np.ndarray, euler_deg: np.ndarray) -> bytes:
    values = np.concatenate([quantize(acc_g, ACC_LSB_G), quantize(gyro_dps, GYRO_LSB_DPS),
                             quantize_wrapped(euler_deg, ANGLE_LSB_DEG)])
    return b"\x55\x61" + values.astype("<i2").tobytes()


class WitMotionProfile:
    name = "witmotion"
    service_uuid = SERVICE_UUID
    data_uuid = DATA_UUID
    control_uuid = CONTROL_UUID
    malformed_kinds = ("truncated", "header", "length")
    control_flags = ["write", "write-without-response"]

    def samples_per_packet(self, settings: StreamSettings) -> int:
        return 1

    def encode(self, seq, t_sensor_us, acc_g, gyro_dps, euler_deg, settings) -> bytes:
        return encode_packet(acc_g[0], gyro_dps[0], euler_deg[0])

    def encode_chunk(self, seq, t_sensor_us, acc_g, gyro_dps, euler_deg, settings) -> list[bytes]:
        rows = np.hstack([quantize(acc_g, ACC_LSB_G), quantize(gyro_dps, GYRO_LSB_DPS),
                          quantize_wrapped(euler_deg, ANGLE_LSB_DEG)]).astype("<i2")
        return [b"\x55\x61" + row.tobytes() for row in rows]

    def read_control(self, settings: StreamSettings) -> bytes:
        raise ValueError("the WT901BLE write characteristic is not readable")

    def write_control(self, payload: bytes, settings: StreamSettings) -> None:
        # Register writes are FF AA <reg> <dataL> <dataH>.
        if len(payload) != 5 or payload[:2] != b"\xff\xaa":
            raise ValueError(f"not a WitMotion register write: {payload.hex()}")
        reg, value = payload[2], payload[3]
        if reg == REG_UNLOCK:
            settings.unlocked = payload[3:] == b"\x88\xb5"
        elif not settings.unlocked:
            return  # as the device does: a register write without the unlock is ignored, silently
        elif reg == REG_RATE:
            if value not in RATE_CODES_HZ:
                raise ValueError(f"unknown WitMotion rate code 0x{value:02x}")
            settings.rate_hz = RATE_CODES_HZ[value]
        elif reg != REG_SAVE:
            raise ValueError(f"register 0x{reg:02x} is not simulated")


PROFILE = WitMotionProfile()
