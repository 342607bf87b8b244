"""Nordic Thingy:52 Motion Service: raw data notifications, one sample each (Thingy firmware v2 layout)."""

from __future__ import annotations

import struct

import numpy as np

from . import StreamSettings, quantize


def thingy_uuid(short: int) -> str:
    return f"ef68{short:04x}-9b35-4933-9b10-52ffa9740042"


SERVICE_UUID = thingy_uuid(0x0400)  # Motion Service
DATA_UUID = thingy_uuid(0x0406)  # Raw data
CONTROL_UUID = thingy_uuid(0x0401)  # Motion configuration

ACC_LSB_G = 1 / 1024  # Q6.10
# The firmware mounts the accelerometer with −I (drv_motion.c: "positive readings when axis is aligned with g
# (down)"): the wire carries gravity, the negative of the specific force the model gives.
ACC_WIRE_SIGN = -1.0
GYRO_LSB_DPS = 1 / 32  # Q11.5
COMPASS_LSB_UT = 1 / 16  # Q12.4
# pedometer interval ms, temperature interval ms, compass interval ms, motion rate Hz, wake on motion
CONFIG = struct.Struct("<HHHHB")
MIN_RATE_HZ, MAX_RATE_HZ = 5, 200
# A fixed field in the sensor frame: the simulator has no magnetometer model, the layout needs one.
COMPASS_UT = np.array([20.0, 0.0, -40.0])


def encode_packet(acc_g: np.ndarray, gyro_dps: np.ndarray, compass_ut: np.ndarray) -> bytes:
    values = np.concatenate([quantize(ACC_WIRE_SIGN * np.asarray(acc_g), ACC_LSB_G), quantize(gyro_dps, GYRO_LSB_DPS),
                             quantize(compass_ut, COMPASS_LSB_UT)])
    return values.astype("<i2").tobytes()


class Thingy52Profile:
    name = "thingy52"
    service_uuid = SERVICE_UUID
    data_uuid = DATA_UUID
    control_uuid = CONTROL_UUID
    # No header on the wire: a corrupted header would decode as plausible numbers, so only length faults.
    malformed_kinds = ("truncated", "length")
    control_flags = ["read", "write"]

    def samples_per_packet(self, settings: StreamSettings) -> int:
        return 1

    def encode(self, seq, t_sensor_us, acc_g, gyro_dps, euler_deg, settings) -> bytes:
        return encode_packet(acc_g[0], gyro_dps[0], COMPASS_UT)

    def encode_chunk(self, seq, t_sensor_us, acc_g, gyro_dps, euler_deg, settings) -> list[bytes]:
        compass = np.broadcast_to(quantize(COMPASS_UT, COMPASS_LSB_UT), (len(acc_g), 3))
        rows = np.hstack([quantize(ACC_WIRE_SIGN * np.asarray(acc_g), ACC_LSB_G), quantize(gyro_dps, GYRO_LSB_DPS),
                          compass]).astype("<i2")
        return [row.tobytes() for row in rows]

    def read_control(self, settings: StreamSettings) -> bytes:
        return CONFIG.pack(1000, 1000, 1000, round(settings.rate_hz), 1)

    def write_control(self, payload: bytes, settings: StreamSettings) -> None:
        if len(payload) != CONFIG.size:
            raise ValueError(f"motion config is {CONFIG.size} bytes, got {len(payload)}")
        rate_hz = CONFIG.unpack(payload)[3]
        if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"motion rate {rate_hz} Hz outside {MIN_RATE_HZ}..{MAX_RATE_HZ}")
        settings.rate_hz = float(rate_hz)


PROFILE = Thingy52Profile()
