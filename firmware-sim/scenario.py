"""Scenario files: a timeline of activity segments plus the virtual sensor's settings.

A scenario is a TOML file (``scenarios/NAME.toml``)::

    name = "slouch"                # optional, defaults to the file stem
    description = "..."            # optional
    repeat = 1                     # optional: play the segment list this many times
    [sensor]                       # optional, see SensorSettings
    gyro_bias_dps = 0.5
    [[segment]]
    activity = "slouch"            # one of ACTIVITY_PARAMS
    duration_s = 30
    flexion_deg = 25               # activity parameters, see the dataclasses below
    transition_s = 1.0             # blend time from the previous segment (any activity)

Every problem raises ScenarioError with one line naming the file, the segment and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_TRANSITION_S = 1.0


class ScenarioError(ValueError):
    """A scenario file is missing, malformed or has an invalid value."""


def _num(default: float, lo: float, hi: float) -> Any:
    return field(default=default, metadata={"range": (lo, hi)})


def _choice(default: str, *allowed: str) -> Any:
    return field(default=default, metadata={"choices": allowed})


@dataclass(frozen=True)
class SensorSettings:
    """Virtual IMU settings (the scenario's [sensor] table)."""

    rate_hz: float = _num(100.0, 1.0, 2000.0)
    acc_noise_g: float = _num(0.003, 0.0, 1.0)  # white noise RMS per axis
    gyro_noise_dps: float = _num(0.05, 0.0, 10.0)  # white noise RMS per axis
    gyro_bias_dps: float = _num(0.3, 0.0, 10.0)  # initial bias magnitude, random direction
    gyro_bias_walk_dps_per_sqrt_s: float = _num(0.002, 0.0, 1.0)
    clock_drift_ppm: float = _num(30.0, -1000.0, 1000.0)
    mount_max_deg: float = _num(30.0, 0.0, 180.0)  # random mis-mount angle bound
    # Explicit mis-mount [roll, pitch, yaw] (intrinsic ZYX, as euler_deg); overrides mount_max_deg.
    mount_euler_deg: tuple[float, float, float] | None = None


# Per-activity parameters. Angles are magnitudes of the truth angles (see docs/conventions.md).
@dataclass(frozen=True)
class SitUpright:
    flexion_deg: float = _num(0.0, -30.0, 30.0)  # 0: this is the posture calibration refers to


@dataclass(frozen=True)
class Slouch:
    flexion_deg: float = _num(25.0, -30.0, 80.0)  # held flexion
    ramp_s: float = _num(3.0, 0.0, 60.0)  # time to reach it from upright


@dataclass(frozen=True)
class Rotate:
    left_count: int = _num(3, 0, 1000)
    right_count: int = _num(3, 0, 1000)
    left_peak_deg: float = _num(30.0, 1.0, 120.0)
    right_peak_deg: float = _num(30.0, 1.0, 120.0)
    speed_dps: float = _num(45.0, 1.0, 720.0)  # mean speed of each out or back leg
    hold_s: float = _num(0.5, 0.0, 60.0)  # time held at the peak
    pause_s: float = _num(1.5, 0.0, 600.0)  # neutral time before each excursion (and after the last)
    order: str = ""  # e.g. "LLRRR"; empty = alternate starting left, the remainder at the end


@dataclass(frozen=True)
class Lean:
    side: str = _choice("left", "left", "right")
    lateral_deg: float = _num(15.0, 0.0, 60.0)
    ramp_s: float = _num(2.0, 0.0, 60.0)


@dataclass(frozen=True)
class Stand:
    flexion_deg: float = _num(0.0, -30.0, 30.0)


@dataclass(frozen=True)
class Walk:
    turn_every_s: float = _num(10.0, 1.0, 3600.0)
    turn_deg: float = _num(90.0, 0.0, 360.0)
    turn_side: str = _choice("alternate", "left", "right", "alternate")
    turn_s: float = _num(2.0, 0.2, 30.0)  # duration of one whole-body turn
    step_hz: float = _num(1.8, 0.5, 4.0)
    speed_m_s: float = _num(1.2, 0.0, 3.0)
    bounce_m: float = _num(0.03, 0.0, 0.2)  # vertical pelvis bounce amplitude


@dataclass(frozen=True)
class Fidget:
    amplitude_deg: float = _num(4.0, 0.0, 10.0)  # per axis bound of each small motion
    moves_per_min: float = _num(20.0, 0.0, 120.0)


@dataclass(frozen=True)
class Lie:
    flexion_deg: float = _num(-90.0, -100.0, -60.0)  # supine


ACTIVITY_PARAMS: dict[str, type] = {
    "sit_upright": SitUpright,
    "slouch": Slouch,
    "rotate": Rotate,
    "lean": Lean,
    "stand": Stand,
    "walk": Walk,
    "fidget": Fidget,
    "lie": Lie,
}


@dataclass(frozen=True)
class Segment:
    activity: str
    duration_s: float
    params: Any  # the activity's dataclass from ACTIVITY_PARAMS
    transition_s: float = DEFAULT_TRANSITION_S


@dataclass(frozen=True)
class Scenario:
    name: str
    segments: tuple[Segment, ...]
    sensor: SensorSettings = SensorSettings()
    description: str = ""

    @property
    def duration_s(self) -> float:
        return float(sum(s.duration_s for s in self.segments))

    def truncated(self, duration_s: float) -> Scenario:
        """The first duration_s seconds (the last kept segment is shortened)."""
        kept, left_s = [], duration_s
        for seg in self.segments:
            if left_s <= 0:
                break
            kept.append(dataclasses.replace(seg, duration_s=min(seg.duration_s, left_s)))
            left_s -= seg.duration_s
        return dataclasses.replace(self, segments=tuple(kept))


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by name (scenarios/NAME.toml) or by file path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and len(path.parts) == 1:
        path = SCENARIO_DIR / f"{path.name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        known = ", ".join(scenario_names())
        raise ScenarioError(f"cannot read scenario {str(name_or_path)!r} ({exc.strerror}); known: {known}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path.name}: invalid TOML: {exc}") from None
    return parse_scenario(data, default_name=path.stem, where=path.name)


def parse_scenario(data: dict[str, Any], default_name: str = "scenario", where: str = "") -> Scenario:
    where = where or default_name
    _reject_unknown(data, {"name", "description", "repeat", "sensor", "segment"}, where)
    sensor = _build(SensorSettings, data.get("sensor", {}), f"{where}: [sensor]")
    raw_segments = data.get("segment")
    if not isinstance(raw_segments, list) or not raw_segments:
        raise ScenarioError(f"{where}: needs at least one [[segment]] table")
    segments = [_parse_segment(raw, f"{where}: segment {i + 1}") for i, raw in enumerate(raw_segments)]
    repeat = data.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ScenarioError(f"{where}: 'repeat' must be an integer >= 1, got {repeat!r}")
    segments = segments * repeat
    for i in range(1, len(segments)):
        shortest_s = min(segments[i - 1].duration_s, segments[i].duration_s)
        if segments[i].transition_s > shortest_s:
            raise ScenarioError(
                f"{where}: segment {i % len(raw_segments) + 1}: 'transition_s' = {segments[i].transition_s} "
                f"is longer than this or the previous segment ({shortest_s} s)"
            )
    name, description = data.get("name", default_name), data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ScenarioError(f"{where}: 'name' and 'description' must be strings")
    return Scenario(name=name, segments=tuple(segments), sensor=sensor, description=description)


def _parse_segment(raw: Any, where: str) -> Segment:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a table")
    activity = raw.get("activity")
    if activity not in ACTIVITY_PARAMS:
        raise ScenarioError(f"{where}: 'activity' must be one of {', '.join(ACTIVITY_PARAMS)}, got {activity!r}")
    where = f"{where} ({activity})"
    if "duration_s" not in raw:
        raise ScenarioError(f"{where}: missing 'duration_s'")
    common = {"activity", "duration_s", "transition_s"}
    duration_s = _check_number("duration_s", raw["duration_s"], (0.5, 1e6), where)
    transition_s = _check_number("transition_s", raw.get("transition_s", DEFAULT_TRANSITION_S), (0.0, 60.0), where)
    params = _build(ACTIVITY_PARAMS[activity], {k: v for k, v in raw.items() if k not in common}, where)
    if isinstance(params, Rotate):
        _check_rotate(params, duration_s, where)
    return Segment(activity, float(duration_s), params, float(transition_s))


def _check_rotate(p: Rotate, duration_s: float, where: str) -> None:
    if p.order:
        if set(p.order) - {"L", "R"} or p.order.count("L") != p.left_count or p.order.count("R") != p.right_count:
            raise ScenarioError(
                f"{where}: 'order' = {p.order!r} must use only L/R with left_count = {p.left_count} L "
                f"and right_count = {p.right_count} R"
            )
    legs_s = 2 * (p.left_count * p.left_peak_deg + p.right_count * p.right_peak_deg) / p.speed_dps
    needed_s = legs_s + (p.left_count + p.right_count) * (p.hold_s + p.pause_s) + p.pause_s
    if needed_s > duration_s:
        raise ScenarioError(f"{where}: the excursions need {needed_s:.1f} s but 'duration_s' = {duration_s}")


def _reject_unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    for key in raw:
        if key not in known:
            raise ScenarioError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(raw, set(fields), where)
    values = {}
    for key, value in raw.items():
        meta, default = fields[key].metadata, fields[key].default
        if "range" in meta:
            if isinstance(default, int) and not isinstance(value, int):
                raise ScenarioError(f"{where}: {key!r} must be an integer, got {value!r}")
            value = type(default)(_check_number(key, value, meta["range"], where))
        elif "choices" in meta and value not in meta["choices"]:
            raise ScenarioError(f"{where}: {key!r} must be one of {', '.join(meta['choices'])}, got {value!r}")
        elif key == "mount_euler_deg":
            if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)):
                raise ScenarioError(f"{where}: {key!r} must be a list of 3 numbers [roll, pitch, yaw], got {value!r}")
            value = tuple(float(v) for v in value)
        elif key == "order" and not isinstance(value, str):
            raise ScenarioError(f"{where}: {key!r} must be a string like \"LRLRR\", got {value!r}")
        values[key] = value
    return cls(**values)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(key: str, value: Any, bounds: tuple[float, float], where: str) -> Any:
    lo, hi = bounds
    if not _is_number(value):
        raise ScenarioError(f"{where}: {key!r} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key!r} = {value} is outside [{lo}, {hi}]")
    return value
