"""Totals over many minutes (a replay, a day): folded minute by minute, so memory stays flat."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import date as Date
from datetime import time as TimeOfDay
from typing import Any

from .events import ACTIVITIES, SIDES, MinuteMetrics
from .symmetry import symmetry_angle, symmetry_index


def ran_in(start_s: float, end_s: float, period_start_s: float, period_end_s: float) -> bool:
    """Whether an episode (a slouch, a lean) counts in a period (an hour, a day): the one rule, that it counts in each
    period it ran in, as its minutes do. One from 23:50 to 00:03 counts on both days; one that ends on the stroke of
    midnight, the day before only; a zero-length one, where it starts."""
    return start_s < period_end_s and (end_s > period_start_s or start_s >= period_start_s)


HOUR_S = 3600.0
DAY_S = 86400.0


def day_bounds(day: Date, tz: tzinfo) -> tuple[float, float]:
    """Unix seconds of local midnight at the start of `day` and of the day after: the one definition of a wearer's
    day (23 or 25 hours where the clocks change), which the report and the replay's summaries count, as the alert
    service counts its days."""
    start = datetime.combine(day, TimeOfDay(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), TimeOfDay(0), tzinfo=tz)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class LocalPeriods:
    """A wearer's days in their zone (day_bounds: local midnight to local midnight, 23 or 25 hours where the clocks
    change), or the hours of those days counted from their midnight (in a +05:30 zone they start at :00 local, and a
    25-hour day has 25; a day of 23.5 hours ends on a half hour). A period is named by the Unix second it starts at
    (local midnights fall on whole seconds). UTC gives the UTC hours and days."""

    tz: tzinfo
    hourly: bool = False

    def index(self, t_s: float) -> int:
        day_start_s, _ = self._day(t_s)
        start_s = day_start_s + (t_s - day_start_s) // HOUR_S * HOUR_S if self.hourly else day_start_s
        return round(start_s)

    def bounds(self, k: int) -> tuple[float, float]:
        _, day_end_s = self._day(k)
        return float(k), (min(k + HOUR_S, day_end_s) if self.hourly else day_end_s)

    def _day(self, t_s: float) -> tuple[float, float]:
        try:
            day = datetime.fromtimestamp(t_s, self.tz).date()
            start_s, end_s = day_bounds(day, self.tz)
            # Where the clocks go back over midnight, the time after it that reads as the day before again is the new
            # day's (day_bounds: from the first midnight), as the report has it.
            while t_s >= end_s:
                day += timedelta(days=1)
                start_s, end_s = day_bounds(day, self.tz)
            while t_s < start_s:
                day -= timedelta(days=1)
                start_s, end_s = day_bounds(day, self.tz)
        except (OverflowError, OSError, ValueError):
            # A time no calendar holds (a recording stamped past the year 9999, or before year 1): UTC days, as before
            # the wearer's, rather than stopping the replay there.
            start_s = math.floor(t_s / DAY_S) * DAY_S
            return start_s, start_s + DAY_S
        return start_s, end_s


def periods_ran_in(start_s: float, end_s: float, periods: LocalPeriods) -> list[int]:
    """The periods the episode ran in (ran_in), in order."""
    ran = [periods.index(start_s)]
    while (next_s := periods.bounds(ran[-1])[1]) < end_s:
        ran.append(periods.index(next_s))
    return ran


@dataclass
class DayTotals:
    """Sums over minutes, folded one minute at a time: the one definition of a day's (or an hour's, or a
    recording's) totals. The replay's summaries, the alert service's daily summary and Home Assistant
    sensors, the report and the demo all fold their minutes here, whatever form the minutes come in."""

    minutes: int = 0
    worn_s: float = 0.0
    activity_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ACTIVITIES, 0.0))
    slouch_s: float = 0.0
    lean_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SIDES, 0.0))
    rotations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIDES, 0))
    rotation_cumulative_deg: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SIDES, 0.0))
    lost_samples: int = 0

    def add(self, minute: Mapping[str, Any]) -> None:
        """One minute as the metrics payload names its values: the payload, an InfluxDB row or
        asdict(MinuteMetrics). A value left out (None) adds nothing."""
        def value(name: str) -> float:
            v = minute.get(name)
            return 0.0 if v is None or isinstance(v, bool) else float(v)

        self.minutes += 1
        self.worn_s += value("worn_s")
        for name in ACTIVITIES:
            self.activity_s[name] += value(f"{name}_s")
        self.slouch_s += value("slouch_s")
        for side in SIDES:
            self.lean_s[side] += value(f"lean_{side}_s")
            self.rotations[side] += int(value(f"rotations_{side}"))
            self.rotation_cumulative_deg[side] += value(f"rotation_{side}_cumulative_deg")
        self.lost_samples += int(value("lost_samples"))

    @property
    def slouch_pct_of_worn(self) -> float | None:
        return 100.0 * self.slouch_s / self.worn_s if self.worn_s > 0 else None

    def rotation_peak_mean_deg(self, side: str) -> float | None:
        """The mean peak of the side's excursions: the cumulative rotation is the sum of their peaks."""
        n = self.rotations[side]
        return self.rotation_cumulative_deg[side] / n if n else None

    @property
    def rotation_symmetry_index(self) -> float | None:
        return symmetry_index(self.rotation_cumulative_deg["right"], self.rotation_cumulative_deg["left"])

    @property
    def rotation_symmetry_angle(self) -> float | None:
        return symmetry_angle(self.rotation_cumulative_deg["right"], self.rotation_cumulative_deg["left"])


def day_totals(minutes: Iterable[Mapping[str, Any]]) -> DayTotals:
    totals = DayTotals()
    for minute in minutes:
        totals.add(minute)
    return totals


@dataclass
class Summary:
    """A replay's (or a period's) summary: the day totals of its minutes, and what its events add."""

    totals: DayTotals = field(default_factory=DayTotals)
    slouch_episodes: int = 0
    calibration: str = "not calibrated"

    def add_minute(self, m: MinuteMetrics) -> None:
        self.totals.add(vars(m))  # its fields by name, not copied as asdict would

    def add_event(self, event: Any) -> None:  # an Event, told apart by its kind
        # A slouch is counted at its end ("slouch"); its EpisodeStart ("episode_start") only said it was under way.
        if event.kind == "slouch":
            self.slouch_episodes += 1
        elif event.kind == "calibration" and event.status in ("calibrated", "recalibrate"):
            self.calibration = event.message

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "worn_min": round(t.worn_s / 60, 2),
            "activity_min": {k: round(v / 60, 2) for k, v in t.activity_s.items()},
            "slouch_min": round(t.slouch_s / 60, 2),
            "slouch_pct_of_worn": _round(t.slouch_pct_of_worn),
            "slouch_episodes": self.slouch_episodes,
            "lean_min": {k: round(v / 60, 2) for k, v in t.lean_s.items()},
            "rotations": dict(t.rotations),
            "rotation_cumulative_deg": {k: round(v, 1) for k, v in t.rotation_cumulative_deg.items()},
            "rotation_symmetry_index": _round(t.rotation_symmetry_index),
            "rotation_symmetry_angle": _round(t.rotation_symmetry_angle),
            "lost_samples": t.lost_samples,
            "calibration": self.calibration,
        }


class Rollups:
    """Hour and day summaries, handed out as each period ends, from the minutes as they come. The days are the
    wearer's in `tz` (LocalPeriods: as the report and the alert service count them), the hours those of the day.

    An event goes to the period its time falls in, not to the one open when it arrives: a replay hands the pipeline
    20,000 rows at a time (200 s at 100 Hz, 13 min at 25 Hz), whose events all come before its minutes, and a slouch
    that ended after midnight was counted the day before. A slouch episode (counted once it ended, never by its
    start) counts in each period it ran in (ran_in), as its minutes do and as `posture report` counts a day's: counted
    by its end alone, the hour or day it began in showed its slouch minutes and none of its episodes. So a period an
    episode under way ran in (its EpisodeStart came, its end not yet) is held, summed up, until the episode ends, and
    handed out with the first minute handed in after its end. A period's calibration is the one in force: a day
    without a calibration event was "not calibrated".
    """

    def __init__(self, tz: tzinfo = UTC) -> None:
        self.periods = {"hour": LocalPeriods(tz, hourly=True), "day": LocalPeriods(tz)}
        self._open: dict[str, tuple[int, Summary]] = {}
        # Events whose periods have not opened yet, per period: (the first and last index of those, whether a period
        # before counted it, the event).
        self._pending: dict[str, list[tuple[int, int, bool, Any]]] = {p: [] for p in self.periods}
        self._calibration = {p: "not calibrated" for p in self.periods}
        self._held: list[tuple[str, int, Summary]] = []  # ended periods a slouch under way ran in, in order
        self._slouch_since_s: float | None = None  # the start of the slouch under way

    def add_minute(self, m: MinuteMetrics) -> list[dict[str, Any]]:
        for period, periods in self.periods.items():
            k = periods.index(m.minute_start_s)
            if period in self._open and self._open[period][0] != k:
                self._held.append(self._close(period))
            if period not in self._open:
                summary = Summary(calibration=self._calibration[period])
                self._open[period] = (k, summary)
                # Events before this period's first minute (those before the first minute of all, that no period
                # counted, included) are its; an episode that runs on past it waits for the periods after.
                pending = []
                for first, last, counted, event in self._pending[period]:
                    if first <= k and (last >= k or not counted):
                        summary.add_event(event)
                        counted = True
                    if last > k:
                        pending.append((max(first, k + 1), last, counted, event))
                self._pending[period] = pending
            self._open[period][1].add_minute(m)
        return self._release()

    def add_event(self, event: Any) -> None:
        """An event, counted as Summary.add_event counts it: an episode once it ended, in each period it ran in."""
        if event.kind == "episode_start" and event.episode == "slouch":
            self._slouch_since_s = float(event.start_s)
        elif event.kind == "slouch":
            self._slouch_since_s = None
        t_s = float(next((v for v in (getattr(event, a, None) for a in ("end_s", "t_s", "start_s")) if v is not None),
                         0.0))
        for period, periods in self.periods.items():
            ran = (periods_ran_in(float(event.start_s), float(event.end_s), periods) if event.kind == "slouch"
                   else [periods.index(t_s)])
            counted = False
            if event.kind == "slouch":
                for held_period, k, summary in self._held:
                    if held_period == period and k in ran:
                        summary.add_event(event)
                        counted = True
            if period not in self._open:
                self._pending[period].append((ran[0], ran[-1], counted, event))
                continue
            k = self._open[period][0]
            if k in ran or (ran[-1] < k and not counted):  # its period, or (late) one already handed out
                self._open[period][1].add_event(event)
                counted = True
            if ran[-1] > k:
                self._pending[period].append((max(ran[0], k + 1), ran[-1], counted, event))

    def flush(self) -> list[dict[str, Any]]:
        self._slouch_since_s = None  # the pipeline's finish() ended any episode under way: nothing more to wait for
        for period, pending in self._pending.items():  # events after the last minute: the last period's
            if period in self._open:
                for _, _, counted, event in pending:
                    if not counted:
                        self._open[period][1].add_event(event)
                pending.clear()
        self._held += [self._close(p) for p in list(self._open)]
        return self._release()

    def _close(self, period: str) -> tuple[str, int, Summary]:
        k, summary = self._open.pop(period)
        self._calibration[period] = summary.calibration
        return period, k, summary

    def _release(self) -> list[dict[str, Any]]:
        """The ended periods, in order, up to the first one the slouch under way ran in."""
        done = []
        while self._held:
            period, k, summary = self._held[0]
            start_s, end_s = self.periods[period].bounds(k)
            if self._slouch_since_s is not None and self._slouch_since_s < end_s:
                break
            self._held.pop(0)
            done.append({"kind": "summary", "period": period, "start_s": start_s,
                         **summary.as_dict()})
        return done


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
