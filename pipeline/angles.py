"""Trunk angles from sensor orientation and calibration (signs: docs/conventions.md).

R_world_trunk = R_world_sensor · R_sensor_trunk = Rz(ψ) · Ry(flexion) · Rx(lateral), the same
Z-Y-X decomposition the virtual sensor's truth uses. flexion and lateral depend only on where the
trunk's axes point relative to gravity, so VQF's arbitrary heading does not touch them; ψ carries
heading + axial rotation and goes to pipeline/axial.py.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def world_from_trunk(quat_wxyz: np.ndarray, r_sensor_trunk: np.ndarray) -> np.ndarray:
    """(n, 3, 3) trunk orientation in VQF's world frame."""
    r_world_sensor = Rotation.from_quat(quat_wxyz[:, [1, 2, 3, 0]]).as_matrix()
    return r_world_sensor @ r_sensor_trunk


def trunk_angles(r_world_trunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flexion_deg, lateral_deg, yaw_right_deg) per sample.

    flexion + forward, lateral + to the right, yaw_right + turned right (clockwise from above),
    unwrapped so it is continuous across ±180°.
    """
    flexion = np.degrees(np.arcsin(np.clip(-r_world_trunk[:, 2, 0], -1.0, 1.0)))
    lateral = np.degrees(np.arctan2(r_world_trunk[:, 2, 1], r_world_trunk[:, 2, 2]))
    yaw_left = np.arctan2(r_world_trunk[:, 1, 0], r_world_trunk[:, 0, 0])
    return flexion, lateral, -np.degrees(yaw_left)


def unwrap_from(previous_deg: float | None, yaw_deg: np.ndarray) -> np.ndarray:
    """Unwrap a batch of yaw so it continues the previous batch's last value."""
    out = np.degrees(np.unwrap(np.radians(yaw_deg)))
    if previous_deg is not None and len(out):
        out += 360.0 * np.round((previous_deg - out[0]) / 360.0)
    return out
