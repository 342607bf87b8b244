"""Decoder for WitMotion WT901BLE notifications: 0x55 0x61 + 9 × int16 LE (acc, gyro, angles)."""

from __future__ import annotations

from . import DecodedPacket, PacketError, int16_le

PACKET_BYTES = 20
HEADER = b"\x55\x61"
ACC_FULL_SCALE_G = 16.0
GYRO_FULL_SCALE_DPS = 2000.0
ANGLE_FULL_SCALE_DEG = 180.0


def decode(data: bytes) -> DecodedPacket:
    if len(data) < 2 or data[:2] != HEADER:
        raise PacketError("header", f"WitMotion packet starts {data[:2].hex() or 'empty'}, expected 5561")
    if len(data) != PACKET_BYTES:
        kind = "truncated" if len(data) < PACKET_BYTES else "length"
        raise PacketError(kind, f"WitMotion packet of {len(data)} bytes, expected {PACKET_BYTES}")
    v = int16_le(data, 2, 9) / 32768
    return DecodedPacket(acc_g=(v[0:3] * ACC_FULL_SCALE_G).reshape(1, 3),
                         gyro_dps=(v[3:6] * GYRO_FULL_SCALE_DPS).reshape(1, 3),
                         euler_deg=(v[6:9] * ANGLE_FULL_SCALE_DEG).reshape(1, 3))
