"""One device's day as the report shows it: the rows read from InfluxDB in, series and totals out (pure).

Rows are dicts of a measurement's columns (docs/influx.md) with `time_s` (Unix seconds): the
minute start for posture_minute, the episode / excursion / interval start for events, the bucket
start for the live stream's means.
Totals come from the per-minute rows, which cover the day without overlap; the events place
things in time (slouch shading) and show the spread behind a mean (rotation peaks). A slouch or lean
episode counts on each day it ran in, as its minutes do: one from 23:50 to 00:03 is a lean on both days,
each with its own minutes of it (counted by its start, the day after showed "lean left 2.7 min (0 leans)").
Values are taken as a minute or a trunk can hold them (bounded_minute, _angle): the totals count no minute
for more than its 60 s.

The angles are drawn from the live stream where it was kept (a point every few seconds), and from
the per-minute means in the minutes it does not cover: a mixed day is fine where it is fine. Neither draws an
angle while the wearer lay (live_buckets; the minute means are of the time not lying).
Slouching is shaded where an episode ended (its start and duration) and where the live stream says
slouching; an episode still going on (a point with only `confirmed_after_s`) is not counted, the
live stream shades it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date as Date
from datetime import tzinfo
from typing import Any

from contract.influx_schema import TAGS
from contract.messages import is_nudge
from contract.validation import MAX_PEAK_DEG, MAX_ROTATIONS_PER_MINUTE, MINUTE_MAX_S
from pipeline import summary
from pipeline.events import ACTIVITIES, LYING, SIDES, WALKING
from pipeline.summary import day_bounds

MINUTE_S = 60.0
LIVE_STEP_S = 10  # the live trace's resolution in the report, s: a day is 8640 points (the stream is about 1 s)
# What a value can be as read (bounded_minute, _angle): a point stored before the contract bounded a minute, or by
# another writer, may hold anything (a count of 2**63-1, a float 1e308); one such point crashed the drawing or made a
# day of years.
MAX_ANGLE_DEG = 180.0  # beyond, it is no trunk angle: left out
# A minute's seconds and rotations are read as the contract bounds them (contract/validation.py: MINUTE_MAX_S leaves
# room for a sensor clock running fast, 60 s would cut a true day): what the bridge stores, so the report counts what
# the dashboards sum.
ALERT_TAGS = ("kind", "alert_id")  # what tells two alerts of a device at one time apart
# Walking seconds that make a minute part of a walk in the activity strip, whatever else the minute held: a walk of
# a minute or two mostly splits across minutes that each sat longer than they walked, and was never drawn. Fewer are
# a step or two about the desk, not a walk.
WALK_MIN_S = 10.0


@dataclass(frozen=True)
class DayRows:
    """What query.py read for one device and day, one list of rows per measurement."""
    minutes: list[dict[str, Any]] = field(default_factory=list)  # posture_minute
    slouches: list[dict[str, Any]] = field(default_factory=list)  # posture_slouch
    rotations: list[dict[str, Any]] = field(default_factory=list)  # posture_rotation
    leans: list[dict[str, Any]] = field(default_factory=list)  # posture_lean
    calibrations: list[dict[str, Any]] = field(default_factory=list)  # posture_calibration
    alerts: list[dict[str, Any]] = field(default_factory=list)  # posture_alert
    live: list[dict[str, Any]] = field(default_factory=list)  # posture_live, in buckets (query.fetch_live)

    def empty(self) -> bool:
        return not any((self.minutes, self.slouches, self.rotations, self.leans, self.calibrations, self.alerts,
                        self.live))

    def of_day(self, day_start_s: float, day_end_s: float) -> DayRows:
        """The rows without the episodes read from before the day (query.DAY_SHIFT_MS) that ended before it: those
        that ran in the day (summary.ran_in: began on it, or ran into it past its midnight)."""
        def on_day(r: dict[str, Any]) -> bool:
            start_s: float = r["time_s"]
            return summary.ran_in(start_s, start_s + (_num(r.get("duration_s")) or 0.0), day_start_s, day_end_s)

        return replace(self, slouches=[r for r in self.slouches if on_day(r)],
                       leans=[r for r in self.leans if on_day(r)])


@dataclass(frozen=True)
class Minute:
    start_s: float
    flexion_mean_deg: float | None  # + forward
    lateral_mean_deg: float | None  # + right
    activity: str | None  # the one of ACTIVITIES with most seconds; None when not worn


@dataclass(frozen=True)
class LiveBucket:
    """A few seconds of the live stream: the means of the angles measured in it (None where the wearer lay)."""
    start_s: float
    flexion_deg: float | None  # + forward
    lateral_deg: float | None  # + right
    slouching: bool  # at least half of its samples were slouching
    activity: str | None = None  # the one of ACTIVITIES most of its states were in (walking on a tie); None: none said


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
    live: list[LiveBucket]  # the fine trace, where the live stream was kept
    live_step_s: float  # a live bucket's length
    trace_minutes: list[Minute]  # the minutes whose means are drawn: those the live trace does not cover
    strip_minutes: list[Minute]  # the minutes drawn as their main activity: those the live stream does not tell
    walk_spans: list[tuple[float, float]]  # (start_s, end_s) of the walks: where the live stream says, else walk_spans
    slouch_spans: list[tuple[float, float]]  # (start_s, end_s) shaded as slouching, merged, in time order
    slouches: list[Slouch]
    rotations: list[Rotation]
    leans: list[Lean]
    calibrations: list[Calibration]
    alerts: list[Alert]
    totals: Totals

    def alerts_said(self) -> str:
        """The day's alerts as counted everywhere (contract is_nudge: `alerts_sent`, the cap), and how many of the
        messages listed with them are not alerts (praise, the summary): "1 alert (and 2 not counted: …)"."""
        others = [a.kind for a in self.alerts if not is_nudge(a.kind)]
        said = f"{self.totals.alerts} alert{'' if self.totals.alerts == 1 else 's'}"
        return said + (f" (and {len(others)} not counted: {', '.join(sorted(set(others)))})" if others else "")


def build_day_report(device: str, day: Date, tz: tzinfo, rows: DayRows,
                     live_step_s: float = LIVE_STEP_S) -> DayReport:
    day_start_s, day_end_s = day_bounds(day, tz)
    rows = rows.of_day(day_start_s, day_end_s)
    minute_rows = [bounded_minute(r) for r in one_per_point(rows.minutes)]
    minutes = [Minute(r["time_s"], r["flexion_mean_deg"], r["lateral_mean_deg"], dominant_activity(r))
               for r in minute_rows]
    live = live_buckets(rows.live)

    def duration(r: dict[str, Any]) -> float | None:  # an event's, up to the day's end: drawn no further
        return _within(r.get("duration_s"), 0.0, max(day_end_s - r["time_s"], 0.0))

    # Episodes are counted by their end (duration_s): a start alone is one still going on, or never ended. One that
    # began the day before (of_day: it ran into this one) counts here too, as its minutes here do.
    slouches = [Slouch(r["time_s"], d, _angle(r.get("peak_flexion_deg")))
                for r in one_per_point(rows.slouches) if (d := duration(r)) is not None]
    rotations = [Rotation(r["time_s"], r["side"], peak) for r in one_per_point(rows.rotations, TAGS["rotation"])
                 if r.get("side") in SIDES and (peak := _angle(r.get("peak_deg"))) is not None]
    leans = [Lean(r["time_s"], r["side"], d, _angle(r.get("mean_lateral_deg")))
             for r in one_per_point(rows.leans, TAGS["lean"])
             if r.get("side") in SIDES and (d := duration(r)) is not None]
    calibrations = [Calibration(r["time_s"], _text(r.get("status")), _text(r.get("message")))
                    for r in one_per_point(rows.calibrations, TAGS["calibration"])]
    alerts = [Alert(r["time_s"], _text(r.get("kind")), _text(r.get("title")),
                    _text(r.get("text")) or ": ".join(x for x in (_text(r.get("title")), _text(r.get("message"))) if x))
              for r in one_per_point(rows.alerts, ALERT_TAGS)]
    # The axis spans what was recorded: a few minutes of data on a 24-hour axis would be a sliver.
    starts = [max(r["time_s"], day_start_s) for r in (*rows.minutes, *rows.slouches, *rows.rotations, *rows.leans,
                                                      *rows.calibrations, *rows.alerts, *rows.live)]
    ends = ([m.start_s + MINUTE_S for m in minutes] + [s.start_s + s.duration_s for s in slouches]
            + [b.start_s + live_step_s for b in live] + starts)
    data_start_s = min(starts, default=day_start_s)
    data_end_s = min(max(ends, default=day_end_s), day_end_s)
    covered = {_minute_of(b.start_s, day_start_s) for b in live}
    trace_minutes = [m for m in minutes if _minute_of(m.start_s, day_start_s) not in covered]
    # A minute's totals cannot say when in it a walk was (the demo's walk was drawn 30 s after it ended): where the
    # live stream said what the wearer did all through a minute's worn time, its buckets place the walks. Only all
    # through: the live stream is best effort (QoS 0, not queued while the bridge restarts), and a minute with one
    # bucket left of it lost the 40 s walk its totals held. Its worn time, not 60 s: the demo's last minute, 29 s
    # worn, drew its walk from its totals again.
    told_s = Counter(_minute_of(b.start_s, day_start_s) for b in live if b.activity is not None)
    worn_s = {_minute_of(r["time_s"], day_start_s): MINUTE_S if r["worn_s"] is None else min(r["worn_s"], MINUTE_S)
              for r in minute_rows}
    told = {m for m, n in told_s.items() if n * live_step_s >= worn_s.get(m, MINUTE_S)}
    walks = [(b.start_s, b.start_s + live_step_s) for b in live if b.activity == WALKING]
    walks += walk_spans([r for r in minute_rows if _minute_of(r["time_s"], day_start_s) not in told])
    spans = [(max(s.start_s, day_start_s), s.start_s + s.duration_s) for s in slouches]
    spans += [(b.start_s, b.start_s + live_step_s) for b in live if b.slouching]
    return DayReport(device, day, tz, day_start_s, day_end_s, data_start_s, max(data_end_s, data_start_s + MINUTE_S),
                     minutes, live, live_step_s, trace_minutes,
                     [m for m in minutes if _minute_of(m.start_s, day_start_s) not in told], merge_spans(walks),
                     merge_spans(spans), slouches, rotations, leans, calibrations, alerts,
                     day_totals(minute_rows, leans, sum(is_nudge(a.kind) for a in alerts)))


def live_buckets(rows: list[dict[str, Any]]) -> list[LiveBucket]:
    """The live rows with angles (query.fetch_live) as buckets; slouching when half or more of the samples were.
    A bucket in which the wearer lay at all has no angles: lying, trunk flexion and lean mean nothing (a nap drew
    −90° of flexion), and the minute means leave lying out the same way (pipeline metrics.upright_s). Its earlier
    states carry no activity, so which of its angles were lying is not known: the whole bucket is a gap."""
    out = []
    for r in _by_time(rows):
        samples = _num(r.get("samples")) or 0.0
        if samples <= 0:
            continue  # nothing measured (uncalibrated): no angle, no slouch either way
        slouching = (_num(r.get("slouching_samples")) or 0.0) >= samples / 2
        states = {a: n for a in ACTIVITIES if (n := _num(r.get(f"{a}_samples")) or 0.0) > 0}
        # A tie goes to walking: a 10 s walk split 5/5 over two buckets with standing was in neither, and not drawn.
        activity = max(states, key=lambda a: (states[a], a == WALKING)) if states else None
        if LYING in states:
            out.append(LiveBucket(r["time_s"], None, None, slouching, activity))
        else:
            out.append(LiveBucket(r["time_s"], _angle(r.get("flexion_deg")), _angle(r.get("lateral_deg")),
                                  slouching, activity))
    return out


def bounded_minute(row: dict[str, Any]) -> dict[str, Any]:
    """A posture_minute row as a minute can be, with the fields the report reads: seconds within the minute
    (slouch within the worn ones), rotations up to MAX_ROTATIONS_PER_MINUTE (their peaks summed up to MAX_PEAK_DEG
    each), angles (else None)."""
    bounded: dict[str, Any] = {"time_s": row["time_s"]}
    for name in ("worn_s", *(f"{a}_s" for a in ACTIVITIES), *(f"lean_{side}_s" for side in SIDES)):
        bounded[name] = _within(row.get(name), 0.0, MINUTE_MAX_S)
    worn_s = MINUTE_MAX_S if bounded["worn_s"] is None else bounded["worn_s"]
    bounded["slouch_s"] = _within(row.get("slouch_s"), 0.0, worn_s)
    for side in SIDES:
        count = _within(row.get(f"rotations_{side}"), 0.0, MAX_ROTATIONS_PER_MINUTE)
        bounded[f"rotations_{side}"] = None if count is None else int(count)
        bounded[f"rotation_{side}_cumulative_deg"] = _within(row.get(f"rotation_{side}_cumulative_deg"), 0.0,
                                                             (count or 0) * MAX_PEAK_DEG)
    for name in ("flexion_mean_deg", "lateral_mean_deg"):
        bounded[name] = _angle(row.get(name))
    return bounded


def walk_spans(minute_rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start_s, end_s) of the walks, from the minutes with WALK_MIN_S of walking: as long as they walked, not a minute
    each (a 20 s walk drew a whole minute of walking over 40 s of sitting). Where in its minute a walk was is not kept:
    one minute's sits in its middle; a walk over consecutive minutes ran from the end of its first to the start of
    its last, so it is drawn ending the first minute and beginning the last."""
    walked = sorted((r["time_s"], float(r[f"{WALKING}_s"] or 0.0)) for r in minute_rows
                    if (r[f"{WALKING}_s"] or 0.0) >= WALK_MIN_S)
    runs: list[list[tuple[float, float]]] = []
    for t_s, walk_s in walked:
        if runs and t_s - runs[-1][-1][0] <= MINUTE_S:
            runs[-1].append((t_s, walk_s))
        else:
            runs.append([(t_s, walk_s)])
    spans = []
    for run in runs:
        (first_s, first_walk_s), (last_s, last_walk_s) = run[0], run[-1]
        if len(run) == 1:
            middle_s = first_s + MINUTE_S / 2
            spans.append((middle_s - min(first_walk_s, MINUTE_S) / 2, middle_s + min(first_walk_s, MINUTE_S) / 2))
        else:
            spans.append((first_s + MINUTE_S - min(first_walk_s, MINUTE_S), last_s + min(last_walk_s, MINUTE_S)))
    return spans


def merge_spans(spans: list[tuple[float, float]], join_s: float = 1.0) -> list[tuple[float, float]]:
    """Overlapping spans (or ones less than join_s apart) as one, in time order."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + join_s:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _minute_of(t_s: float, day_start_s: float) -> int:
    """The minute of the day t_s falls in (minutes start on the minute, as local midnight does)."""
    return int((t_s - day_start_s) // MINUTE_S)


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


def one_per_point(rows: list[dict[str, Any]], tags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows in time order, one per time and identity tags (docs/influx.md): a point stored again under another
    tag set (a tag the schema does not have, such as a second bridge's) comes back as another row, and was drawn
    and counted again. Their fields are merged, the first row's first, as InfluxDB merges one point's."""
    points: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in _by_time(rows):
        point = points.setdefault((r["time_s"], *(repr(r.get(tag)) for tag in tags)), {})  # repr: any value keys
        point.update({name: value for name, value in r.items() if point.get(name) is None})
    return list(points.values())


def _by_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["time_s"])


def _num(value: Any) -> float | None:
    """A field's value as float; None when the point left it out (docs/influx.md: absent, not zero), and when it is
    no finite number (another type, an infinity, an integer beyond a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    """A text field as text: a writer may have stored it as a number or a boolean."""
    return "" if value is None else str(value)


def _within(value: Any, low: float, high: float) -> float | None:
    number = _num(value)
    return None if number is None else min(high, max(low, number))


def _angle(value: Any) -> float | None:
    number = _num(value)
    return number if number is not None and abs(number) <= MAX_ANGLE_DEG else None
