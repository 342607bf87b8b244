"""Trunk angles from sensor orientation and calibration (signs: docs/conventions.md).

R_world_trunk = R_world_sensor · R_sensor_trunk = Rz(ψ) · Ry(flexion) · Rx(lateral), the same
Z-Y-X decomposition the virtual sensor's truth uses. flexion and lateral depend only on where the
trunk's axes point relative to gravity, so VQF's arbitrary heading does not touch them; ψ carries
heading + axial rotation and goes to pipeline/axial.py.
"""

from __future__ import annotations

import numpy as np


def up_axis_and_vertical(quat_wxyz: np.ndarray, acc_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World up in sensor axes (row 3 of R_world_sensor), and acc along world up."""
    w, x, y, z = quat_wxyz.T
    up = np.column_stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])
    return up, np.einsum("ij,ij->i", up, acc_g)


def trunk_axes_in_world(quat_wxyz: np.ndarray, r_sensor_trunk: np.ndarray) -> tuple[np.ndarray, ...]:
    """The entries of R_world_trunk = R_world_sensor · R_sensor_trunk the angles need.

    Returns (r20, r21, r22, r00, r10): row 3 (how each trunk axis points up or down) and the
    trunk's forward axis in the horizontal plane (heading).
    """
    w, x, y, z = quat_wxyz.T
    row0 = np.column_stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)])
    row1 = np.column_stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)])
    row2 = np.column_stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])
    r2 = row2 @ r_sensor_trunk
    forward = r_sensor_trunk[:, 0]
    return r2[:, 0], r2[:, 1], r2[:, 2], row0 @ forward, row1 @ forward


def trunk_angles(quat_wxyz: np.ndarray, r_sensor_trunk: np.ndarray) -> tuple[np.ndarray, ...]:
    """(flexion_deg, lateral_deg, tilt_deg, yaw_right_deg) per sample.

    flexion + forward, lateral + to the right, tilt = the trunk's up axis from vertical,
    yaw_right + turned right (clockwise from above), wrapped to ±180°.
    """
    r20, r21, r22, r00, r10 = trunk_axes_in_world(quat_wxyz, r_sensor_trunk)
    flexion = np.degrees(np.arcsin(np.clip(-r20, -1.0, 1.0)))
    lateral = np.degrees(np.arctan2(r21, r22))
    tilt = np.degrees(np.arccos(np.clip(r22, -1.0, 1.0)))
    return flexion, lateral, tilt, -np.degrees(np.arctan2(r10, r00))


def unwrap_from(previous_deg: float | None, yaw_deg: np.ndarray) -> np.ndarray:
    """Unwrap a batch of yaw so it continues the previous batch's last value."""
    out: np.ndarray = np.degrees(np.unwrap(np.radians(yaw_deg)))
    if previous_deg is not None and len(out):
        out += 360.0 * np.round((previous_deg - out[0]) / 360.0)
    return out


def horizontal_acc_in_heading(quat_wxyz: np.ndarray, r_sensor_trunk: np.ndarray,
                              acc_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal specific force along the trunk's forward heading (+ forward) and across it (+ left), g."""
    w, x, y, z = quat_wxyz.T
    row0 = np.column_stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)])
    row1 = np.column_stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)])
    fx, fy = row0 @ r_sensor_trunk[:, 0], row1 @ r_sensor_trunk[:, 0]
    norm = np.maximum(np.hypot(fx, fy), 1e-9)
    fx, fy = fx / norm, fy / norm
    ax, ay = np.einsum("ij,ij->i", row0, acc_g), np.einsum("ij,ij->i", row1, acc_g)
    return ax * fx + ay * fy, -ax * fy + ay * fx
