"""One device's day as the report shows it: the rows read from InfluxDB in, series and totals out (pure).

Rows are dicts of a measurement's columns (docs/influx.md) with `time_s` (Unix seconds): the
minute start for posture_minute, the episode / excursion / interval start for events.
Totals come from the per-minute rows, which cover the day without overlap; the events place
things in time (slouch shading) and show the spread behind a mean (rotation peaks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta, tzinfo
from datetime import time as TimeOfDay
from typing import Any

from pipeline import summary
from pipeline.activity import ACTIVITIES
from pipeline.summary import SIDES

MINUTE_S = 60.0


@dataclass(frozen=True)
class DayRows:
    """What query.py read for one device and day, one list of rows per measurement."""
    minutes: list[dict[str, Any]] = field(default_factory=list)  # posture_minute
    slouches: list[dict[str, Any]] = field(default_factory=list)  # posture_slouch
    rotations: list[dict[str, Any]] = field(default_factory=list)  # posture_rotation
    leans: list[dict[str, Any]] = field(default_factory=list)  # posture_lean
    calibrations: list[dict[str, Any]] = field(default_factory=list)  # posture_calibration
    alerts: list[dict[str, Any]] = field(default_factory=list)  # posture_alert

    def empty(self) -> bool:
        return not any((self.minutes, self.slouches, self.rotations, self.leans, self.calibrations, self.alerts))


@dataclass(frozen=True)
class Minute:
    start_s: float
    flexion_mean_deg: float | None  # + forward
    lateral_mean_deg: float | None  # + right
    activity: str | None  # the one of ACTIVITIES with most seconds; None when not worn


@dataclass(frozen=True)
class Slouch:
    start_s: float
    duration_s: float
    peak_flexion_deg: float | None


@dataclass(frozen=True)
class Rotation:
    start_s: float
    side: str
    peak_deg: float


@dataclass(frozen=True)
class Lean:
    start_s: float
    side: str
    duration_s: float
    mean_lateral_deg: float | None  # + right


@dataclass(frozen=True)
class Calibration:
    time_s: float
    status: str
    message: str


@dataclass(frozen=True)
class Alert:
    time_s: float
    kind: str
    title: str
    text: str


@dataclass(frozen=True)
class Totals:
    worn_s: float
    activity_s: dict[str, float]  # per ACTIVITIES
    slouch_s: float
    slouch_pct_of_worn: float | None  # None when not worn at all
    lean_s: dict[str, float]  # per side
    leans: dict[str, int]  # lean intervals per side
    rotations: dict[str, int]  # excursions per side
    rotation_cumulative_deg: dict[str, float]  # sum of excursion peaks per side
    rotation_peak_mean_deg: dict[str, float | None]
    rotation_symmetry_index: float | None  # (R − L) / ((R + L) / 2) · 100 of cumulative rotation; + right-dominant
    alerts: int


@dataclass(frozen=True)
class DayReport:
    device: str
    day: Date
    tz: tzinfo
    day_start_s: float  # local midnight
    day_end_s: float  # the next local midnight (23 or 25 h later on a DST change)
    data_start_s: float  # the span anything was recorded in, for the time axis
    data_end_s: float
    minutes: list[Minute]
    slouches: list[Slouch]
    rotations: list[Rotation]
    leans: list[Lean]
    calibrations: list[Calibration]
    alerts: list[Alert]
    totals: Totals


def day_bounds(day: Date, tz: tzinfo) -> tuple[float, float]:
    """Unix seconds of local midnight at the start of `day` and of the day after."""
    start = datetime.combine(day, TimeOfDay(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), TimeOfDay(0), tzinfo=tz)
    return start.timestamp(), end.timestamp()


def build_day_report(device: str, day: Date, tz: tzinfo, rows: DayRows) -> DayReport:
    day_start_s, day_end_s = day_bounds(day, tz)
    minutes = [Minute(r["time_s"], _num(r.get("flexion_mean_deg")), _num(r.get("lateral_mean_deg")),
                      dominant_activity(r)) for r in _by_time(rows.minutes)]
    slouches = [Slouch(r["time_s"], _num(r.get("duration_s")) or 0.0, _num(r.get("peak_flexion_deg")))
                for r in _by_time(rows.slouches)]
    rotations = [Rotation(r["time_s"], r["side"], float(r["peak_deg"])) for r in _by_time(rows.rotations)
                 if r.get("side") in SIDES and _num(r.get("peak_deg")) is not None]
    leans = [Lean(r["time_s"], r["side"], _num(r.get("duration_s")) or 0.0, _num(r.get("mean_lateral_deg")))
             for r in _by_time(rows.leans) if r.get("side") in SIDES]
    calibrations = [Calibration(r["time_s"], r.get("status") or "", r.get("message") or "")
                    for r in _by_time(rows.calibrations)]
    alerts = [Alert(r["time_s"], r.get("kind") or "", r.get("title") or "",
                    r.get("text") or ": ".join(x for x in (r.get("title"), r.get("message")) if x))
              for r in _by_time(rows.alerts)]
    # The axis spans what was recorded: a few minutes of data on a 24-hour axis would be a sliver.
    starts = [r["time_s"] for r in (*rows.minutes, *rows.slouches, *rows.rotations, *rows.leans,
                                    *rows.calibrations, *rows.alerts)]
    ends = [m.start_s + MINUTE_S for m in minutes] + [s.start_s + s.duration_s for s in slouches] + starts
    data_start_s = min(starts, default=day_start_s)
    data_end_s = min(max(ends, default=day_end_s), day_end_s)
    return DayReport(device, day, tz, day_start_s, day_end_s, data_start_s, max(data_end_s, data_start_s + MINUTE_S),
                     minutes, slouches, rotations, leans, calibrations, alerts,
                     day_totals(rows.minutes, leans, len(alerts)))


def day_totals(minute_rows: list[dict[str, Any]], leans: list[Lean], alerts: int) -> Totals:
    t = summary.day_totals(minute_rows)
    return Totals(
        worn_s=t.worn_s,
        activity_s=dict(t.activity_s),
        slouch_s=t.slouch_s,
        slouch_pct_of_worn=t.slouch_pct_of_worn,
        lean_s=dict(t.lean_s),
        leans={side: sum(1 for lean in leans if lean.side == side) for side in SIDES},
        rotations=dict(t.rotations),
        rotation_cumulative_deg=dict(t.rotation_cumulative_deg),
        rotation_peak_mean_deg={side: t.rotation_peak_mean_deg(side) for side in SIDES},
        rotation_symmetry_index=t.rotation_symmetry_index,
        alerts=alerts,
    )


def dominant_activity(row: dict[str, Any]) -> str | None:
    seconds = {a: _num(row.get(f"{a}_s")) or 0.0 for a in ACTIVITIES}
    best = max(ACTIVITIES, key=seconds.__getitem__)
    return best if seconds[best] > 0 else None


def _by_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["time_s"])


def _num(value: Any) -> float | None:
    """A field's value as float; None when the point left it out (docs/influx.md: absent, not zero)."""
    if value is None or isinstance(value, bool):
        return None
    return float(value)
