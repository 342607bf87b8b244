"""Decoder for WitMotion WT901BLE notifications: 0x55 0x61 + 9 × int16 LE (acc, gyro, angles).

One notification may carry several 20-byte packets back to back: the sensor packs them when the rate is
high and the link has a larger MTU (WitMotion's own SDKs read the notifications as a byte stream, 20 bytes
a packet). A 0x55 0x71 packet among them is a register reply (to an FF AA 27 read), not a sample.
"""

from __future__ import annotations

import numpy as np

from . import DecodedPacket, PacketError

PACKET_BYTES = 20
HEADER = b"\x55\x61"
REGISTER_REPLY = b"\x55\x71"
ACC_FULL_SCALE_G = 16.0
GYRO_FULL_SCALE_DPS = 2000.0
ANGLE_FULL_SCALE_DEG = 180.0
_SCALE = np.repeat([ACC_FULL_SCALE_G, GYRO_FULL_SCALE_DPS, ANGLE_FULL_SCALE_DEG], 3) / 32768


def decode(data: bytes) -> DecodedPacket:
    if data[:2] not in (HEADER, REGISTER_REPLY):
        raise PacketError("header", f"WitMotion packet starts {data[:2].hex() or 'empty'}, expected 5561")
    if not data or len(data) % PACKET_BYTES:
        kind = "truncated" if len(data) < PACKET_BYTES else "length"
        raise PacketError(kind, f"WitMotion notification of {len(data)} bytes, not whole {PACKET_BYTES}-byte packets")
    words = np.frombuffer(data, dtype="<i2").reshape(-1, PACKET_BYTES // 2)
    heads = [data[i:i + 2] for i in range(0, len(data), PACKET_BYTES)]
    if any(h not in (HEADER, REGISTER_REPLY) for h in heads):
        bad = sorted({h.hex() for h in heads} - {HEADER.hex(), REGISTER_REPLY.hex()})
        raise PacketError("header", f"WitMotion notification with a packet starting {', '.join(bad)}")
    samples = words[[h == HEADER for h in heads], 1:] * _SCALE
    if not len(samples):
        raise PacketError("header", "WitMotion register reply (55 71), not a sample")
    return DecodedPacket(acc_g=samples[:, 0:3], gyro_dps=samples[:, 3:6], euler_deg=samples[:, 6:9])
