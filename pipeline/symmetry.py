"""Left/right symmetry of trunk rotation. Sign: + = right-dominant, − = left-dominant."""

from __future__ import annotations

import math

MIN_TOTAL_DEG = 60.0  # below this much rotation (both sides together) the ratio is noise


def symmetry_index(right: float, left: float, min_total: float = MIN_TOTAL_DEG) -> float | None:
    """SI = (R − L) / (0.5 (R + L)) × 100, in [−200, 200]; None when R + L is too small to mean anything."""
    total = right + left
    if total < min_total:
        return None
    return (right - left) / (0.5 * total) * 100.0


def symmetry_angle(right: float, left: float, min_total: float = MIN_TOTAL_DEG) -> float | None:
    """Zifchock et al. (2008): SA = (45° − atan(L / R)) / 90° × 100, in [−50, 50].

    Bounded and linear in the angle, so one side near zero does not blow it up as SI does.
    """
    if right + left < min_total:
        return None
    return (45.0 - math.degrees(math.atan2(left, right))) / 90.0 * 100.0
