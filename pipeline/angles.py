"""Trunk angles from sensor orientation and calibration (signs: docs/conventions.md).

R_world_trunk = R_world_sensor · R_sensor_trunk = Rz(ψ) · Ry(flexion) · Rx(lateral), the same
Z-Y-X decomposition the virtual sensor's truth uses. flexion and lateral depend only on where the
trunk's axes point relative to gravity, so VQF's arbitrary heading does not touch them; ψ carries
heading + axial rotation and goes to pipeline/axial.py.

The rotation matrix is worked out once per batch (`SensorAttitude`) and every stage takes what it
needs from it: at the gateway's batch sizes each numpy call costs more than its arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

# np.degrees and np.radians multiply by these (the doubles nearest 180/π and π/180), to the bit; a plain
# multiply is vectorised where they are not: a fifth of their time.
DEG_PER_RAD = 180.0 / np.pi
RAD_PER_DEG = np.pi / 180.0
HEADING_MIN_NORM = 1e-9  # a forward axis this close to vertical has no heading: keeps the division finite
# Up to this many samples the rotation matrix is one matmul over a table (few calls, the gateway's batches);
# beyond, the formulas' thirty calls cost less than the table's 144 multiply-adds a sample (a replay's minutes).
TABLE_MAX_SAMPLES = 1000


def _rotation_terms() -> np.ndarray:
    """(16, 9): R_world_sensor's entries (row-major) from the products q_i q_j (index 4 i + j) of [w, x, y, z]."""
    w, x, y, z = range(4)
    entries = [[(-2, y, y), (-2, z, z)], [(2, x, y), (-2, w, z)], [(2, x, z), (2, w, y)],
               [(2, x, y), (2, w, z)], [(-2, x, x), (-2, z, z)], [(2, y, z), (-2, w, x)],
               [(2, x, z), (-2, w, y)], [(2, y, z), (2, w, x)], [(-2, x, x), (-2, y, y)]]
    table = np.zeros((16, 9))
    for k, terms in enumerate(entries):
        for sign, i, j in terms:
            table[4 * i + j, k] = sign
    return table


_ROTATION_TERMS = _rotation_terms()
_IDENTITY = np.eye(3).ravel()


@dataclass(frozen=True)
class SensorAttitude:
    """Rows of R_world_sensor per sample (n × 3 each): row2 is world up in sensor axes."""

    row0: np.ndarray
    row1: np.ndarray
    row2: np.ndarray

    @staticmethod
    def of(quat_wxyz: np.ndarray) -> SensorAttitude:
        """From unit quaternions [w, x, y, z] (world ← sensor), n × 4."""
        n = len(quat_wxyz)
        if n > TABLE_MAX_SAMPLES:
            # The components as contiguous rows, each product once (every one is in two entries), and every
            # entry written straight into its column: the bits of 1 − 2 (a + b) and 2 (a ± b) as before.
            w, x, y, z = quat_wxyz.T.copy()
            xx, yy, zz, xy, xz, yz, wx, wy, wz = x * x, y * y, z * z, x * y, x * z, y * z, w * x, w * y, w * z
            rows = np.empty((3, n, 3))
            for (row, col), (a, b) in {(0, 0): (yy, zz), (1, 1): (xx, zz), (2, 2): (xx, yy)}.items():
                twice = np.add(a, b)
                twice *= 2
                np.subtract(1, twice, out=rows[row, :, col])
            for (row, col), (a, op, b) in {(0, 1): (xy, np.subtract, wz), (0, 2): (xz, np.add, wy),
                                           (1, 0): (xy, np.add, wz), (1, 2): (yz, np.subtract, wx),
                                           (2, 0): (xz, np.subtract, wy), (2, 1): (yz, np.add, wx)}.items():
                np.multiply(2, op(a, b), out=rows[row, :, col])
            return SensorAttitude(rows[0], rows[1], rows[2])
        # The same entries in three calls where the formulas take thirty: every entry is ±2 × a sum of two
        # products of components (plus 1 on the diagonal), so all products at once, their sums as one matmul
        # with a table of ±2 and 0 (a zero term adds nothing: each entry rounds as 2 (a ± b) does, to the bit),
        # then the diagonal's 1.
        products = (quat_wxyz[:, :, None] * quat_wxyz[:, None, :]).reshape(n, 16)
        r = products @ _ROTATION_TERMS
        r += _IDENTITY
        return SensorAttitude(r[:, 0:3], r[:, 3:6], r[:, 6:9])

    def __getitem__(self, sl: slice) -> SensorAttitude:
        return SensorAttitude(self.row0[sl], self.row1[sl], self.row2[sl])


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the dot product of two n × 3 arrays, summed (a₀b₀ + a₂b₂) + a₁b₁: the order np.einsum("ij,ij->i")
    sums in, so the bits are the ones it gave, in a third of its time (whole columns, no per-row loop)."""
    p = a * b
    out: np.ndarray = p[:, 0] + p[:, 2]
    out += p[:, 1]
    return out


def row_norm(v: np.ndarray) -> np.ndarray:
    """Per row, the length of an n × 3 array, summed (v₀² + v₁²) + v₂² as np.linalg.norm(v, axis=1) does: its
    bits, in a sixth of its time (its sum along rows of three is a slow reduction)."""
    s = v * v
    out: np.ndarray = s[:, 0] + s[:, 1]
    out += s[:, 2]
    np.sqrt(out, out=out)
    return out


def vertical(up_sensor: np.ndarray, acc_g: np.ndarray) -> np.ndarray:
    """Specific force along world up (≈ 1 g at rest)."""
    return row_dot(up_sensor, acc_g)


@dataclass(frozen=True)
class TrunkAngles:
    """Per sample: flexion (+ forward), lateral bend (+ right), yaw (+ turned right, wrapped to ±180°), all in
    degrees; up_z: the trunk's up axis along world up, cos(tilt) (lying only compares it, `tilted_beyond`, so no
    arccos is taken); forward_x, forward_y: the trunk's forward axis in world x, y (its heading)."""

    flexion_deg: np.ndarray
    lateral_deg: np.ndarray
    yaw_right_deg: np.ndarray
    up_z: np.ndarray  # the trunk's up axis along world up: cos(tilt)
    forward_x: np.ndarray
    forward_y: np.ndarray


def trunk_angles_of(att: SensorAttitude, r_sensor_trunk: np.ndarray) -> TrunkAngles:
    """Angles of R_world_trunk = R_world_sensor · R_sensor_trunk from the attitude's rows."""
    r2 = att.row2 @ r_sensor_trunk
    forward = r_sensor_trunk[:, 0]
    r00, r10 = att.row0 @ forward, att.row1 @ forward
    # Each angle worked out in one array, in place: the same operations, without a temporary per step.
    flexion = np.negative(r2[:, 0])
    np.multiply(np.arcsin(np.clip(flexion, -1.0, 1.0, out=flexion), out=flexion), DEG_PER_RAD, out=flexion)
    lateral = np.arctan2(r2[:, 1], r2[:, 2])
    lateral *= DEG_PER_RAD
    yaw_right = np.arctan2(r10, r00)
    yaw_right *= -DEG_PER_RAD  # −(x · 180/π): negating is exact, so the same bits either way round
    return TrunkAngles(flexion, lateral, yaw_right, r2[:, 2], r00, r10)


def tilted_beyond(up_z: np.ndarray, tilt_deg: float) -> np.ndarray:
    """The trunk's up axis more than tilt_deg from vertical, from its component along world up (no arccos)."""
    out: np.ndarray = np.clip(up_z, -1.0, 1.0) < np.cos(np.radians(tilt_deg))
    return out


Angle = TypeVar("Angle", float, np.ndarray)


def wrapped_deg(angle_deg: Angle) -> Angle:
    """An unwrapped angle (float or array) said in (−180°, 180°], as live states say rotation."""
    return 180.0 - (180.0 - angle_deg) % 360.0


def unwrap_from(previous_deg: float | None, yaw_deg: np.ndarray) -> np.ndarray:
    """Unwrap a batch of yaw so it continues the previous batch's last value."""
    rad = yaw_deg * RAD_PER_DEG
    # np.unwrap leaves a batch with no step of π or more as it is (most batches): skip its dozen calls then.
    jumps = len(rad) > 1 and np.abs(rad[1:] - rad[:-1]).max() >= np.pi
    out: np.ndarray = np.unwrap(rad) if jumps else rad
    out *= DEG_PER_RAD
    if previous_deg is not None and len(out) and (turns := round((previous_deg - float(out[0])) / 360.0)):
        out += 360.0 * turns
    return out


def horizontal_acc_in_heading(att: SensorAttitude, angles: TrunkAngles, acc_g: np.ndarray) -> np.ndarray:
    """Horizontal specific force along the trunk's forward heading (+ forward) and across it (+ left), g: rows of
    one 2 × n array, as the walking axis's band-pass takes both at once (no copy into one)."""
    norm = np.hypot(angles.forward_x, angles.forward_y)
    np.maximum(norm, HEADING_MIN_NORM, out=norm)
    fx, fy = angles.forward_x / norm, angles.forward_y / norm
    ax, ay = row_dot(att.row0, acc_g), row_dot(att.row1, acc_g)
    out = np.empty((2, len(norm)))
    np.multiply(ax, fx, out=out[0])
    out[0] += ay * fy
    np.multiply(ay, fx, out=out[1])
    out[1] -= ax * fy  # ay fx − ax fy: the bits of −ax fy + ay fx
    return out
