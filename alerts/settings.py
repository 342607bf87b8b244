"""The alert rules' thresholds: defaults here, documented in rules.toml; a user's TOML overrides any of them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import time as TimeOfDay
from pathlib import Path
from typing import cast

from service_io.config import ConfigError, build_section, read_toml


@dataclass(frozen=True)
class SlouchRule:
    enabled: bool = True
    window_min: int = 30
    share_pct: float = 30.0
    min_worn_min: float = 20.0
    episode_min: float = 5.0
    cooldown_min: float = 30.0


@dataclass(frozen=True)
class SlouchNowRule:
    """The real-time nudge on the live state: slouching this long *now* (sensor time) before the phone hears of it."""

    enabled: bool = True
    # Seconds slouched now before a nudge, as Upright GO and Lumo Lift let the wearer set it. A phone ping is
    # louder than their buzz on the back, so a minute: reaching, reading or a sip of coffee do not trigger it,
    # a slouch that has become the posture does — four minutes before the minute-based unbroken rule would.
    delay_s: float = 60.0
    cooldown_min: float = 15.0  # no live nudge sooner than this after a slouch nudge of either kind
    recovered: bool = True  # a follow-up, once, when the nudged slouch is over


@dataclass(frozen=True)
class RotationRule:
    enabled: bool = True
    min_excursions: int = 20
    si_pct: float = 25.0
    cooldown_min: float = 120.0


@dataclass(frozen=True)
class LeanRule:
    enabled: bool = True
    min_lean_min: float = 10.0
    side_share_pct: float = 70.0
    cooldown_min: float = 120.0


@dataclass(frozen=True)
class SittingRule:
    enabled: bool = True
    max_sitting_min: float = 45.0
    cooldown_min: float = 30.0


@dataclass(frozen=True)
class CalibrationRule:
    """The pipeline's calibration requests and the refusals of the moves (docs/alerts.md). The calibration's age is the
    pipeline's to ask about, where the moves are watched for (pipeline.calibration_max_age_h; RETIRED below)."""

    enabled: bool = True
    cooldown_min: float = 240.0


# Keys this file no longer reads, with the value they had by default (a copy of rules.toml holds it, and starts as
# before) and where the setting went: another value was meant, and is refused naming its new place.
RETIRED = {("calibration", "max_age_h"): (24.0, "the gateway asks for the moves at the calibration's age now, where "
                                                "they are watched for: set pipeline.calibration_max_age_h in its "
                                                "config (docs/pipeline.md), and remove this key")}


@dataclass(frozen=True)
class RecoveryRule:
    enabled: bool = True
    upright_min: int = 5
    max_slouch_pct: float = 10.0
    within_min: float = 30.0


@dataclass(frozen=True)
class Limits:
    daily_cap: int = 8
    pace: bool = True  # the cap spread over the waking day (policy.paced)
    quiet_hours: str = "22:00-07:00"
    expiry_s: int = 600
    max_delay_s: int = 600
    # A nudge about what the wearer does *now* (rules.NOW_KINDS) is held as late when its data is older than this by
    # the gateway's clock as its live states show it (policy.late_s): a gateway's minute goes out 6 s after its end,
    # up to 2 min after a lost link's return (docs/pipeline.md, the rotation hold); past that it is a backlog.
    max_late_s: int = 180

    def quiet_span(self) -> tuple[TimeOfDay, TimeOfDay] | None:
        if not self.quiet_hours:
            return None
        start, _, end = self.quiet_hours.partition("-")
        return parse_time_of_day("limits.quiet_hours", start), parse_time_of_day("limits.quiet_hours", end)


@dataclass(frozen=True)
class Habit:
    goal_slouch_pct: float = 20.0
    min_worn_min: float = 60.0
    program_days: int = 31
    summary_time: str = "18:00"

    def summary_at(self) -> TimeOfDay | None:
        if not self.summary_time:
            return None
        at = parse_time_of_day("habit.summary_time", self.summary_time)
        if at == TimeOfDay(0):  # the day up to its first minute: nothing in it, so none was ever sent
            raise ConfigError('habit.summary_time: 00:00 would be about a day not begun; a time in the evening '
                              '(it must fall, with limits.max_delay_s after it, before midnight), "" for no summary')
        return at


@dataclass(frozen=True)
class Rules:
    slouch: SlouchRule = field(default_factory=SlouchRule)
    slouch_now: SlouchNowRule = field(default_factory=SlouchNowRule)
    rotation: RotationRule = field(default_factory=RotationRule)
    lean: LeanRule = field(default_factory=LeanRule)
    sitting: SittingRule = field(default_factory=SittingRule)
    calibration: CalibrationRule = field(default_factory=CalibrationRule)
    recovery: RecoveryRule = field(default_factory=RecoveryRule)
    limits: Limits = field(default_factory=Limits)
    habit: Habit = field(default_factory=Habit)


def parse_time_of_day(key: str, text: str) -> TimeOfDay:
    try:
        hours, minutes = (int(part) for part in text.strip().split(":"))
        return TimeOfDay(hours, minutes)
    except ValueError:
        raise ConfigError(f"{key}: expected HH:MM, got {text!r}") from None


def load_rules(path: Path | None = None) -> Rules:
    """The defaults, with what `path` (a TOML file like rules.toml) sets instead; one error line naming the key."""
    raw = read_toml(path, "rules file") if path is not None else {}
    known = {f.name: cast(type, f.default_factory) for f in fields(Rules)}  # each section's class
    if unknown := set(raw) - set(known):
        raise ConfigError(f"unknown section [{sorted(unknown)[0]}] in {path}; known: {', '.join(known)}")
    sections = {}
    for name, cls in known.items():
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"[{name}] must be a table")
        given = dict(raw.get(name, {}))
        for (section, key), (default, moved) in RETIRED.items():
            if section == name and key in given and given.pop(key) != default:
                raise ConfigError(f"{section}.{key}: {moved}")
        sections[name] = build_section(name, cls, given)
    rules = Rules(**sections)
    rules.limits.quiet_span(), rules.habit.summary_at()  # refuse a bad time of day now, not at 18:00
    _check_ranges(rules)
    return rules


# Values that would divide by zero, fire on nothing or never: refused when the file is read.
POSITIVE = {("slouch", "window_min"), ("slouch", "episode_min"), ("lean", "min_lean_min"),
            ("sitting", "max_sitting_min"), ("recovery", "upright_min"), ("limits", "expiry_s"),
            ("limits", "max_late_s"),
            ("habit", "program_days")}
PERCENT = {"share_pct", "si_pct", "side_share_pct", "max_slouch_pct", "goal_slouch_pct"}


def _check_ranges(rules: Rules) -> None:
    for section in fields(Rules):
        values = getattr(rules, section.name)
        for f in fields(values):
            value, key = getattr(values, f.name), f"{section.name}.{f.name}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value < 0 or ((section.name, f.name) in POSITIVE and value == 0):
                raise ConfigError(f"{key}: must be {'above' if (section.name, f.name) in POSITIVE else 'at least'} 0, "
                                  f"got {value}")
            if f.name in PERCENT and value > 100:
                raise ConfigError(f"{key}: a percentage, at most 100, got {value}")
