"""Decoder for Nordic Thingy:52 Motion raw data (EF680406): 9 × int16 LE fixed point.

The firmware (v2, drv_motion.c) mounts the accelerometer with the matrix −I, "to get positive readings when
axis is aligned with g (down)": the wire carries gravity, the negative of the specific force that the other
profiles (and the pipeline, and the gyro's own frame) use; at rest face up it reads z = −1 g. The decoder
turns it back, so acc_g is specific force (+1 g along up at rest) in the gyro's frame.
"""

from __future__ import annotations

from . import DecodedPacket, PacketError, int16_le

PACKET_BYTES = 18
Q6_10, Q11_5, Q12_4 = 2.0**-10, 2.0**-5, 2.0**-4  # accel g, gyro °/s, compass µT
ACC_SIGN = -1.0  # the wire's accelerometer is gravity (down), not specific force


def decode(data: bytes) -> DecodedPacket:
    # The raw-data characteristic has no header; its length is the only check it allows.
    if len(data) != PACKET_BYTES:
        kind = "truncated" if len(data) < PACKET_BYTES else "length"
        raise PacketError(kind, f"Thingy:52 raw packet of {len(data)} bytes, expected {PACKET_BYTES}")
    v = int16_le(data, 0, 9)
    return DecodedPacket(acc_g=(v[0:3] * (ACC_SIGN * Q6_10)).reshape(1, 3), gyro_dps=(v[3:6] * Q11_5).reshape(1, 3),
                         mag_ut=(v[6:9] * Q12_4).reshape(1, 3))
