"""Totals over many minutes (a replay, a day): folded minute by minute, so memory stays flat."""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import MinuteMetrics
from .symmetry import symmetry_angle, symmetry_index


@dataclass
class Summary:
    minutes: int = 0
    worn_s: float = 0.0
    activity_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("sitting", "standing", "walking", "lying"), 0.0))
    slouch_s: float = 0.0
    slouch_episodes: int = 0
    lean_s: dict[str, float] = field(default_factory=lambda: {"left": 0.0, "right": 0.0})
    rotations: dict[str, int] = field(default_factory=lambda: {"left": 0, "right": 0})
    rotation_cumulative_deg: dict[str, float] = field(default_factory=lambda: {"left": 0.0, "right": 0.0})
    lost_samples: int = 0
    calibration: str = "not calibrated"

    def add_minute(self, m: MinuteMetrics) -> None:
        self.minutes += 1
        self.worn_s += m.worn_s
        for name in self.activity_s:
            self.activity_s[name] += getattr(m, f"{name}_s")
        self.slouch_s += m.slouch_s
        for side in ("left", "right"):
            self.lean_s[side] += getattr(m, f"lean_{side}_s")
            self.rotations[side] += getattr(m, f"rotations_{side}")
            self.rotation_cumulative_deg[side] += getattr(m, f"rotation_{side}_cumulative_deg")
        self.lost_samples += m.lost_samples

    def add_event(self, event) -> None:
        if event.kind == "slouch":
            self.slouch_episodes += 1
        elif event.kind == "calibration" and event.status in ("calibrated", "recalibrate"):
            self.calibration = event.message

    def as_dict(self) -> dict:
        right, left = self.rotation_cumulative_deg["right"], self.rotation_cumulative_deg["left"]
        return {
            "worn_min": round(self.worn_s / 60, 2),
            "activity_min": {k: round(v / 60, 2) for k, v in self.activity_s.items()},
            "slouch_min": round(self.slouch_s / 60, 2),
            "slouch_pct_of_worn": round(100 * self.slouch_s / self.worn_s, 1) if self.worn_s else None,
            "slouch_episodes": self.slouch_episodes,
            "lean_min": {k: round(v / 60, 2) for k, v in self.lean_s.items()},
            "rotations": dict(self.rotations),
            "rotation_cumulative_deg": {k: round(v, 1) for k, v in self.rotation_cumulative_deg.items()},
            "rotation_symmetry_index": _round(symmetry_index(right, left)),
            "rotation_symmetry_angle": _round(symmetry_angle(right, left)),
            "lost_samples": self.lost_samples,
            "calibration": self.calibration,
        }


class Rollups:
    """Hour and day summaries, handed out as each period ends (UTC), from the minutes as they come."""

    PERIODS = {"hour": 3600.0, "day": 86400.0}

    def __init__(self) -> None:
        self._open: dict[str, tuple[int, Summary]] = {}

    def add_minute(self, m: MinuteMetrics) -> list[dict]:
        done = []
        for period, length in self.PERIODS.items():
            k = int(m.minute_start_s // length)
            if period in self._open and self._open[period][0] != k:
                done.append(self._close(period))
            if period not in self._open:
                self._open[period] = (k, Summary())
            self._open[period][1].add_minute(m)
        return done

    def add_event(self, event) -> None:
        for _, summary in self._open.values():
            summary.add_event(event)

    def flush(self) -> list[dict]:
        return [self._close(p) for p in list(self._open)]

    def _close(self, period: str) -> dict:
        k, summary = self._open.pop(period)
        return {"kind": "summary", "period": period, "start_s": k * self.PERIODS[period], **summary.as_dict()}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
