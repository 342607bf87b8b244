"""The project's own open "posture IMU" profile (firmware-sim/PROTOCOL.md is the specification)."""

from __future__ import annotations

import struct

import numpy as np

from . import StreamSettings, quantize

SERVICE_UUID = "d0a10001-5c3e-4b8e-9f2a-3c7e1b4d6a80"
DATA_UUID = "d0a10002-5c3e-4b8e-9f2a-3c7e1b4d6a80"
CONTROL_UUID = "d0a10003-5c3e-4b8e-9f2a-3c7e1b4d6a80"

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHIH")  # version|count, flags, seq, t0_us, period_us
ACC_LSB_G = 1 / 4096  # ±8 g full scale
GYRO_LSB_DPS = 2000 / 32768  # ±2000 °/s full scale
MAX_SAMPLES_PER_PACKET = 15
MIN_RATE_HZ, MAX_RATE_HZ = 1, 400

CMD_START, CMD_STOP, CMD_SET_RATE, CMD_SET_SAMPLES = 0x01, 0x02, 0x03, 0x04
CONTROL_READ = struct.Struct("<BBHBBH")  # version, streaming, rate_hz, samples/packet, acc range g, gyro range dps


def encode_packet(seq: int, t0_us: int, period_us: int, acc_g: np.ndarray,
                  gyro_dps: np.ndarray) -> bytes:
    n = len(acc_g)
    if not 1 <= n <= MAX_SAMPLES_PER_PACKET:
        raise ValueError(f"a packet carries 1..{MAX_SAMPLES_PER_PACKET} samples, not {n}")
    header = HEADER.pack(PROTOCOL_VERSION << 4 | n, 0, seq & 0xFFFF, t0_us & 0xFFFFFFFF, period_us)
    body = np.hstack([quantize(acc_g, ACC_LSB_G), quantize(gyro_dps, GYRO_LSB_DPS)])
    return header + body.astype("<i2").tobytes()


class NativeProfile:
    name = "native"
    service_uuid = SERVICE_UUID
    data_uuid = DATA_UUID
    control_uuid = CONTROL_UUID
    malformed_kinds = ("truncated", "header", "length")
    control_flags = ["read", "write"]

    def samples_per_packet(self, settings: StreamSettings) -> int:
        return settings.samples_per_packet

    def encode(self, seq, t_sensor_us, acc_g, gyro_dps, euler_deg, settings) -> bytes:
        return encode_packet(seq, int(t_sensor_us[0]), round(1e6 / settings.rate_hz), acc_g, gyro_dps)

    def encode_chunk(self, seq, t_sensor_us, acc_g, gyro_dps, euler_deg, settings) -> list[bytes]:
        per, period_us = settings.samples_per_packet, round(1e6 / settings.rate_hz)
        body = np.hstack([quantize(acc_g, ACC_LSB_G), quantize(gyro_dps, GYRO_LSB_DPS)]).astype("<i2")
        out = []
        for k, a in enumerate(range(0, len(acc_g), per)):
            n = min(per, len(acc_g) - a)
            header = HEADER.pack(PROTOCOL_VERSION << 4 | n, 0, (seq + k) & 0xFFFF, int(t_sensor_us[a]) & 0xFFFFFFFF,
                                 period_us)
            out.append(header + body[a:a + n].tobytes())
        return out

    def read_control(self, settings: StreamSettings) -> bytes:
        return CONTROL_READ.pack(PROTOCOL_VERSION, int(settings.streaming), round(settings.rate_hz),
                                 settings.samples_per_packet, 8, 2000)

    def write_control(self, payload: bytes, settings: StreamSettings) -> None:
        if not payload:
            raise ValueError("empty control write")
        op, args = payload[0], payload[1:]
        if op in (CMD_START, CMD_STOP) and not args:
            settings.streaming = op == CMD_START
        elif op == CMD_SET_RATE and len(args) == 2:
            rate_hz = struct.unpack("<H", args)[0]
            if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
                raise ValueError(f"rate {rate_hz} Hz outside {MIN_RATE_HZ}..{MAX_RATE_HZ}")
            settings.rate_hz = float(rate_hz)
        elif op == CMD_SET_SAMPLES and len(args) == 1:
            if not 1 <= args[0] <= MAX_SAMPLES_PER_PACKET:
                raise ValueError(f"samples per packet {args[0]} outside 1..{MAX_SAMPLES_PER_PACKET}")
            settings.samples_per_packet = args[0]
        else:
            raise ValueError(f"unknown control command {payload.hex()}")


PROFILE = NativeProfile()
