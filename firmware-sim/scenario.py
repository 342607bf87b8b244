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
    """Virtual IMU settings (the scenario's [sensor] table). Typical consumer MEMS values in comments."""

    rate_hz: float = _num(100.0, 1.0, 2000.0)
    acc_noise_g: float = _num(0.003, 0.0, 1.0)  # white noise RMS per axis (0.002–0.01 g)
    gyro_noise_dps: float = _num(0.05, 0.0, 10.0)  # white noise RMS per axis (0.03–0.15 °/s)
    gyro_bias_dps: float = _num(0.3, 0.0, 10.0)  # initial bias magnitude, random direction (0–1.5 °/s)
    gyro_bias_walk_dps_per_sqrt_s: float = _num(0.002, 0.0, 1.0)
    clock_drift_ppm: float = _num(30.0, -1000.0, 1000.0)  # crystal tolerance (±50 ppm)
    mount_max_deg: float = _num(30.0, 0.0, 180.0)  # random mis-mount angle bound
    # Explicit mis-mount [roll, pitch, yaw] (intrinsic ZYX, as euler_deg); overrides mount_max_deg.
    mount_euler_deg: tuple[float, float, float] | None = None
    acc_bias_g: float = _num(0.0, 0.0, 0.5)  # offset magnitude, random direction (0–0.04 g after factory trim)
    acc_scale_error: float = _num(0.0, 0.0, 0.2)  # per-axis gain error bound, uniform ± (0–0.02)
    gyro_scale_error: float = _num(0.0, 0.0, 0.2)  # per-axis gain error bound, uniform ± (0–0.01)


# Per-activity parameters. Angles are magnitudes of the truth angles (see docs/conventions.md);
# `lean_deg` is signed (+ right) and `standing` puts a seated activity on its feet. The comment on
# each field gives the human range the random day generator (firmware-sim/randomday.py) draws from.
@dataclass(frozen=True)
class SitUpright:
    flexion_deg: float = _num(0.0, -30.0, 30.0)  # 0: the posture calibration refers to (hunched hold: 3–10)
    lean_deg: float = _num(0.0, -40.0, 40.0)  # held sideways bend, + right (sitting: |lean| ≤ 5)


@dataclass(frozen=True)
class Slouch:
    flexion_deg: float = _num(25.0, -30.0, 80.0)  # held flexion (slouching: 15–40; a calibration bend 8–40)
    ramp_s: float = _num(3.0, 0.0, 600.0)  # time to reach it from upright (1–5; creeping in: 30–120)
    lean_deg: float = _num(0.0, -40.0, 40.0)  # slouching while leaning (|lean| ≤ 15)
    standing: bool = False


@dataclass(frozen=True)
class Rotate:
    left_count: int = _num(3, 0, 1000)
    right_count: int = _num(3, 0, 1000)
    left_peak_deg: float = _num(30.0, 1.0, 120.0)  # axial trunk rotation: 15–45 (thoracolumbar range ~45)
    right_peak_deg: float = _num(30.0, 1.0, 120.0)
    speed_dps: float = _num(45.0, 1.0, 720.0)  # mean speed of each out or back leg (20–150)
    hold_s: float = _num(0.5, 0.0, 60.0)  # time held at the peak (0–12)
    pause_s: float = _num(1.5, 0.0, 600.0)  # neutral time before each excursion (and after the last)
    order: str = ""  # e.g. "LLRRR"; empty = alternate starting left, the remainder at the end
    flexion_deg: float = _num(2.0, -30.0, 80.0)  # rotating while slouched: 15–35
    lean_deg: float = _num(0.0, -40.0, 40.0)
    standing: bool = False


@dataclass(frozen=True)
class Lean:
    side: str = _choice("left", "left", "right")
    lateral_deg: float = _num(15.0, 0.0, 60.0)  # 6–20
    ramp_s: float = _num(2.0, 0.0, 60.0)
    flexion_deg: float = _num(2.0, -30.0, 80.0)
    standing: bool = False


@dataclass(frozen=True)
class Stand:
    flexion_deg: float = _num(0.0, -30.0, 80.0)  # standing upright: 0–5
    lean_deg: float = _num(0.0, -40.0, 40.0)


@dataclass(frozen=True)
class Walk:
    turn_every_s: float = _num(10.0, 1.0, 3600.0)
    turn_deg: float = _num(90.0, 0.0, 360.0)
    turn_side: str = _choice("alternate", "left", "right", "alternate")
    turn_s: float = _num(2.0, 0.2, 30.0)  # duration of one whole-body turn (1–3)
    step_hz: float = _num(1.8, 0.5, 4.0)  # 1.5–2.1
    speed_m_s: float = _num(1.2, 0.0, 3.0)  # 0.7–1.6
    bounce_m: float = _num(0.03, 0.0, 0.2)  # vertical pelvis bounce amplitude (0.015–0.035)
    flexion_deg: float = _num(3.0, -30.0, 80.0)  # trunk inclination walking: 0–8; walking slouched: 15–30
    lean_deg: float = _num(0.0, -40.0, 40.0)  # carrying a bag: |lean| ≤ 5


@dataclass(frozen=True)
class Fidget:
    amplitude_deg: float = _num(4.0, 0.0, 10.0)  # per axis bound of each small motion
    moves_per_min: float = _num(20.0, 0.0, 120.0)
    flexion_deg: float = _num(2.0, -30.0, 80.0)
    lean_deg: float = _num(0.0, -40.0, 40.0)
    standing: bool = False


@dataclass(frozen=True)
class Lie:
    position: str = _choice("supine", "supine", "prone", "left", "right")  # on the back, front, left or right side
    flexion_deg: float = _num(-90.0, -100.0, -60.0)  # supine only: −90 flat, −60 propped on pillows


@dataclass(frozen=True)
class Swivel:
    """Seated turns of a swivel chair: the whole body yaws, the trunk does not twist."""

    left_count: int = _num(1, 0, 1000)
    right_count: int = _num(1, 0, 1000)
    left_deg: float = _num(40.0, 1.0, 360.0)  # 10–180
    right_deg: float = _num(40.0, 1.0, 360.0)
    speed_dps: float = _num(60.0, 1.0, 720.0)  # 30–150
    hold_s: float = _num(2.0, 0.0, 600.0)  # time facing the side before turning back (out-and-back)
    pause_s: float = _num(2.0, 0.0, 600.0)
    order: str = ""
    stay: bool = False  # each turn stays (the chair now faces elsewhere) instead of coming back
    flexion_deg: float = _num(2.0, -30.0, 80.0)
    lean_deg: float = _num(0.0, -40.0, 40.0)


# How a sensor taken off lies, as [flexion, lateral] of the trunk it sat on (docs/conventions.md): on the back its
# face (+z) points backward, so lying face up is the back's pose bent forward 90°, face down the supine pose, on its
# edge (+y, the trunk's left, up) a 90° bend to the right; as worn, it stands upright as it sat on the back.
PLACED_POSES_DEG = {"flat": (90.0, 0.0), "face_down": (-90.0, 0.0), "on_edge": (0.0, 90.0), "as_worn": (0.0, 0.0)}
# Taking a sensor off the back, or putting it back on, takes a few seconds of handling (reach behind, unclip, put
# down): the transition into an off_body segment and out of it, unless the scenario sets transition_s (2–5).
HANDLING_S = 3.0
HANDLING_RANGE_S = (1.0, 10.0)


@dataclass(frozen=True)
class OffBody:
    """The sensor taken off and left lying still (on a desk, a chair's back, a shelf): no breathing, no sway.

    It is handled on the way off and on (the segment's and the next segment's transition_s, 2–5 s): it moves and
    turns. Put back on, it sits reseat_deg from where it was, about a random axis (the mount of [sensor] and any
    slip carry on under it).
    """

    placed: str = _choice("flat", *PLACED_POSES_DEG)  # flat: face up on a desk; as_worn: clipped to a chair's back
    tilt_deg: float = _num(0.0, -30.0, 30.0)  # + forward of the placed pose (a desk: |tilt| ≤ 2; a chair's back: −15–0)
    yaw_deg: float = _num(30.0, -180.0, 180.0)  # turned from the wearer's facing as it lies (any)
    reseat_deg: float = _num(2.0, 0.0, 45.0)  # put back on this far from where it sat (0–5)


ACTIVITY_PARAMS: dict[str, type] = {
    "sit_upright": SitUpright,
    "slouch": Slouch,
    "rotate": Rotate,
    "lean": Lean,
    "stand": Stand,
    "walk": Walk,
    "fidget": Fidget,
    "lie": Lie,
    "swivel": Swivel,
    "off_body": OffBody,
}
# What a body does in each activity: the truth of "activity" that the pipeline is scored against. OFF: the sensor is
# not on a body at all (taken off, and the handling on the way off and back on), so there is no posture to score.
SITTING, STANDING, WALKING, LYING, OFF = "sitting", "standing", "walking", "lying", "off"


def context_of(activity: str, params: Any) -> str:
    """sitting, standing, walking, lying or off for a segment."""
    if activity == "off_body":
        return OFF
    if activity == "walk":
        return WALKING
    if activity == "lie":
        return LYING
    if activity == "stand" or getattr(params, "standing", False):
        return STANDING
    return SITTING


@dataclass(frozen=True)
class Slip:
    """The sensor creeping on the back (a [[slip]] table): it turns by angle_deg over duration_s.

    Tape and clips let a sensor creep a few degrees over minutes (1–5°, over 1–15 min); a wearer who
    notices re-seats it (back where it was, within a degree or two, in about two seconds).
    """

    start_s: float = _num(0.0, 0.0, 1e6)
    duration_s: float = _num(300.0, 1.0, 1e5)
    angle_deg: float = _num(3.0, 0.0, 45.0)
    axis: str = _choice("random", "random", "forward", "left", "up")  # in the trunk frame
    reseat_after_s: float | None = field(default=None, metadata={"range": (0.0, 1e6)})  # after the slip ends


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
    slips: tuple[Slip, ...] = ()

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
    """Load a scenario by name (scenarios/NAME.toml), by file path, or a random day (random:SEED[:HOURS])."""
    from .randomday import parse_spec, random_day

    try:
        spec = parse_spec(str(name_or_path))
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    if spec is not None:
        return random_day(*spec)
    path = Path(name_or_path)
    if path.suffix != ".toml" and len(path.parts) == 1:
        path = SCENARIO_DIR / f"{path.name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        known = ", ".join(scenario_names())
        raise ScenarioError(f"cannot read scenario {str(name_or_path)!r} ({exc.strerror}); known: {known}, "
                            "or random:SEED[:HOURS]") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path.name}: invalid TOML: {exc}") from None
    return parse_scenario(data, default_name=path.stem, where=path.name)


def parse_scenario(data: dict[str, Any], default_name: str = "scenario", where: str = "") -> Scenario:
    where = where or default_name
    _reject_unknown(data, {"name", "description", "repeat", "sensor", "segment", "slip"}, where)
    sensor = _build(SensorSettings, data.get("sensor", {}), f"{where}: [sensor]")
    raw_segments = data.get("segment")
    if not isinstance(raw_segments, list) or not raw_segments:
        raise ScenarioError(f"{where}: needs at least one [[segment]] table")
    segments = [_parse_segment(raw, f"{where}: segment {i + 1}") for i, raw in enumerate(raw_segments)]
    repeat = data.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ScenarioError(f"{where}: 'repeat' must be an integer >= 1, got {repeat!r}")
    segments = segments * repeat
    _handling_transitions(raw_segments * repeat, segments, len(raw_segments), where)
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
    raw_slips = data.get("slip", [])
    if not isinstance(raw_slips, list):
        raise ScenarioError(f"{where}: 'slip' must be an array of tables ([[slip]])")
    slips = tuple(_build(Slip, raw, f"{where}: slip {i + 1}") for i, raw in enumerate(raw_slips))
    return Scenario(name=name, segments=tuple(segments), sensor=sensor, description=description, slips=slips)


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
    if isinstance(params, Rotate | Swivel):
        _check_turns(params, duration_s, where)
    return Segment(activity, float(duration_s), params, float(transition_s))


def _handling_transitions(raw_segments: list[Any], segments: list[Segment], n_listed: int, where: str) -> None:
    """Taking the sensor off and putting it back on is handling, not a posture change: the transitions into and out of
    an off_body segment default to HANDLING_S and must lie in HANDLING_RANGE_S (the segments are replaced in place)."""
    for i, seg in enumerate(segments):
        if i == 0 or "off_body" not in (seg.activity, segments[i - 1].activity):
            continue
        transition_s = raw_segments[i].get("transition_s", HANDLING_S)
        lo, hi = HANDLING_RANGE_S
        if not lo <= transition_s <= hi:
            raise ScenarioError(f"{where}: segment {i % n_listed + 1} ({seg.activity}): 'transition_s' = "
                                f"{transition_s} takes the sensor off or puts it on, and must lie in [{lo}, {hi}]")
        segments[i] = dataclasses.replace(seg, transition_s=float(transition_s))


def _check_turns(p: Rotate | Swivel, duration_s: float, where: str) -> None:
    if p.order:
        if set(p.order) - {"L", "R"} or p.order.count("L") != p.left_count or p.order.count("R") != p.right_count:
            raise ScenarioError(
                f"{where}: 'order' = {p.order!r} must use only L/R with left_count = {p.left_count} L "
                f"and right_count = {p.right_count} R"
            )
    left_deg, right_deg = turn_sizes_deg(p)
    if getattr(p, "stay", False):  # one leg each, all as long as the largest turn
        sizes = [d for d, count in ((left_deg, p.left_count), (right_deg, p.right_count)) if count]
        legs_s = (p.left_count + p.right_count) * max(sizes, default=0.0) / p.speed_dps
    else:
        legs_s = 2 * (p.left_count * left_deg + p.right_count * right_deg) / p.speed_dps
    needed_s = legs_s + (p.left_count + p.right_count) * (p.hold_s + p.pause_s) + p.pause_s
    if needed_s > duration_s:
        raise ScenarioError(f"{where}: the excursions need {needed_s:.1f} s but 'duration_s' = {duration_s}")


def turn_sizes_deg(p: Rotate | Swivel) -> tuple[float, float]:
    """(left, right) size of each out-and-back trunk rotation or chair turn."""
    return (p.left_peak_deg, p.right_peak_deg) if isinstance(p, Rotate) else (p.left_deg, p.right_deg)


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
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ScenarioError(f"{where}: {key!r} must be true or false, got {value!r}")
        elif "range" in meta:
            if isinstance(default, int) and not isinstance(value, int):
                raise ScenarioError(f"{where}: {key!r} must be an integer, got {value!r}")
            value = (float if default is None else type(default))(_check_number(key, value, meta["range"], where))
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
