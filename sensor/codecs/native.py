"""Decoder for the project's native posture-IMU profile (firmware-sim/PROTOCOL.md)."""

from __future__ import annotations

import struct

from . import DecodedPacket, PacketError, int16_le

HEADER_BYTES = 10
SAMPLE_BYTES = 12
SUPPORTED_VERSION = 1
ACC_G_PER_LSB = 8.0 / 32768
GYRO_DPS_PER_LSB = 2000.0 / 32768


def decode(data: bytes) -> DecodedPacket:
    if len(data) < HEADER_BYTES:
        raise PacketError("truncated", f"native packet of {len(data)} bytes is shorter than its header")
    version, count = data[0] >> 4, data[0] & 0x0F
    if version != SUPPORTED_VERSION or count == 0:
        raise PacketError("header", f"native header byte 0x{data[0]:02x}: version {version}, {count} samples")
    expected = HEADER_BYTES + SAMPLE_BYTES * count
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "length"
        raise PacketError(kind, f"native packet announces {count} samples ({expected} bytes), got {len(data)}")
    seq, t0_us, period_us = struct.unpack_from("<HIH", data, 2)
    values = int16_le(data, HEADER_BYTES, 6 * count).reshape(count, 6)
    return DecodedPacket(acc_g=values[:, 0:3] * ACC_G_PER_LSB, gyro_dps=values[:, 3:6] * GYRO_DPS_PER_LSB,
                         seq=seq, t0_us=t0_us, period_us=period_us)
