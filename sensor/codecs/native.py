"""Decoder for the project's native posture-IMU profile (firmware-sim/PROTOCOL.md)."""

from __future__ import annotations

import struct

import numpy as np

from . import DecodedPacket, PacketError

HEADER_BYTES = 10
SAMPLE_BYTES = 12
SUPPORTED_VERSION = 1
ACC_G_PER_LSB = 8.0 / 32768
GYRO_DPS_PER_LSB = 2000.0 / 32768
# Scales for values viewed as (acc | gyro, sample, axis): one multiply per packet gives both arrays, each contiguous.
_SCALE = np.array([ACC_G_PER_LSB, GYRO_DPS_PER_LSB])[:, None, None]


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
    raw = np.frombuffer(data, dtype="<i2", count=6 * count, offset=HEADER_BYTES).reshape(count, 2, 3)
    acc_g, gyro_dps = np.multiply(raw.transpose(1, 0, 2), _SCALE, order="C")
    return DecodedPacket(acc_g=acc_g, gyro_dps=gyro_dps, seq=seq, t0_us=t0_us, period_us=period_us)
