"""The sensor's turns from its gyro, as unit quaternions [w, x, y, z]: products of many per-sample turns in log₂ n
rounds of numpy calls (a Python loop over samples would cost a call each), for the calibration's bend and the
sit/stand integration's world up; as rotations, through SensorAttitude (angles.py). Pure: arrays in, arrays out."""

from __future__ import annotations

import numpy as np


def quaternions_of(rotvec_rad: np.ndarray) -> np.ndarray:
    """Unit quaternions (n × 4) of turns given as rotation vectors (n × 3, rad)."""
    angle = np.linalg.norm(rotvec_rad, axis=1, keepdims=True)
    # sin(a/2)/a, also at a = 0 (np.sinc(x) is sin(πx)/(πx))
    return np.hstack([np.cos(angle / 2.0), rotvec_rad * 0.5 * np.sinc(angle / (2.0 * np.pi))])


def multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row a ⊗ b (n × 4 each): turn a, then b in a's turned axes."""
    return np.column_stack([
        a[:, 0] * b[:, 0] - a[:, 1] * b[:, 1] - a[:, 2] * b[:, 2] - a[:, 3] * b[:, 3],
        a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0] + a[:, 2] * b[:, 3] - a[:, 3] * b[:, 2],
        a[:, 0] * b[:, 2] - a[:, 1] * b[:, 3] + a[:, 2] * b[:, 0] + a[:, 3] * b[:, 1],
        a[:, 0] * b[:, 3] + a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1] + a[:, 3] * b[:, 0]])


def turn_quaternion(rotvec_rad: np.ndarray) -> np.ndarray:
    """The sensor's turn over samples each turning it by rotvec_rad (n × 3, its own axes, in order): the product of
    their quaternions, multiplied pairwise in halving rounds."""
    q = quaternions_of(rotvec_rad)
    while len(q) > 1:
        if len(q) % 2:
            q = np.vstack([q, [1.0, 0.0, 0.0, 0.0]])
        q = multiply(q[0::2], q[1::2])
    return q[0] if len(q) else np.array([1.0, 0.0, 0.0, 0.0])


def turns_to_last(turn_rad: np.ndarray) -> np.ndarray:
    """The sensor's turn from each sample to the last (n × 4), from its turn from each sample to the next (n × 3,
    rad, its own axes; row i: from sample i − 1 to i, row 0 unused): all n products, doubling the span each round."""
    n = len(turn_rad)
    q = quaternions_of(np.vstack([turn_rad[1:], np.zeros((1, 3))]))  # row i: from i to i + 1; none after the last
    k = 1
    while k < n:  # q_i ← q_i ⊗ q_{i+k}: q_i is then the product of the 2k turns from i
        q[:n - k] = multiply(q[:n - k], q[k:])
        k *= 2
    return q
