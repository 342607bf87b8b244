"""A plausible day of a wearer, from a seed: `posture sim --scenario random:SEED[:HOURS]`.

The day starts with the calibration the app asks for, done as people do it (often imperfectly),
then alternates desk work, breaks, standing work and the odd lie-down until it is HOURS long
(default 1). Within each, postures mix as they do in life: slouching while leaning, creeping into a
slouch over a minute, rotating while slouched or standing, walking slouched, chair turns, fidgeting.
The sensor itself is drawn too (noise, biases, gain errors, mounting, clock drift, rate) and may
slip a few degrees on the back and be re-seated. Every range below is a human (or consumer MEMS)
range, stated where it is drawn; the same seed always gives the same day.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scenario import Scenario, parse_scenario

PREFIX = "random:"
DEFAULT_HOURS = 1.0

# The sensor: consumer MEMS IMUs after factory trim (BMI270/ICM-42688/LSM6DSO datasheet classes).
SENSOR_RANGES = {
    "acc_noise_g": (0.002, 0.008),
    "gyro_noise_dps": (0.03, 0.15),
    "gyro_bias_dps": (0.0, 1.5),
    "gyro_bias_walk_dps_per_sqrt_s": (0.0005, 0.004),
    "clock_drift_ppm": (-50.0, 50.0),
    "mount_max_deg": (0.0, 30.0),  # taped on the upper back, any way up
    "acc_bias_g": (0.0, 0.03),
    "acc_scale_error": (0.0, 0.02),
    "gyro_scale_error": (0.0, 0.01),
}
RATES_HZ = (50.0, 100.0, 200.0)

# How people do the calibration (sit upright and still, bend forward once, sit up) — each variant's
# share of days, and its range.
CALIBRATION_VARIANTS = {"good": 0.4, "hunched": 0.15, "shallow": 0.15, "moving": 0.15, "sideways": 0.15}
HUNCHED_HOLD_DEG = (3.0, 10.0)  # "upright" that is not
GOOD_BEND_DEG = (18.0, 40.0)
SHALLOW_BEND_DEG = (6.0, 14.0)  # below the 15° the app asks for
SIDEWAYS_BEND_DEG = (5.0, 15.0)  # sideways part of a bend that is not straight forward

# Blocks of a day and their shares.
BLOCKS = {"desk": 0.62, "walk_break": 0.24, "standing_work": 0.08, "lie": 0.03, "recalibrate": 0.03}
DESK_BLOCK_S = (300.0, 1800.0)
SIT_STAND_S = (1.2, 4.0)  # duration of a sit-to-stand or stand-to-sit (healthy adults 1–4 s)
SLOUCH_DEG = (10.0, 40.0)  # some stay below the 15° threshold: not every forward lean is a slouch
SLOUCH_HOLD_S = (8.0, 300.0)
SLOUCH_CREEP_S = (30.0, 120.0)  # sinking into a slouch over a minute or two
RECLINE_DEG = (-15.0, -4.0)  # leaning back against the backrest
LEAN_DEG = (6.0, 20.0)
ROTATION_PEAK_DEG = (12.0, 45.0)  # seated axial trunk rotation reaches ~45° per side
ROTATION_SPEED_DPS = (20.0, 150.0)  # brisk twists under 0.5 s out and back reach the top of this
ROTATION_HOLD_S = (0.0, 8.0)  # looking at something to the side
SWIVEL_DEG = (10.0, 120.0)
SWIVEL_STAY_DEG = (20.0, 180.0)
SWIVEL_SPEED_DPS = (30.0, 150.0)
WALK_S = (15.0, 300.0)
WALK_SPEED_M_S = (0.7, 1.6)
STEP_HZ = (1.5, 2.1)
BOUNCE_M = (0.015, 0.035)
WALK_FLEXION_DEG = (0.0, 8.0)
WALK_SLOUCHED_DEG = (15.0, 25.0)
TURN_DEG = (45.0, 180.0)
TURN_EVERY_S = (5.0, 30.0)
STAND_FLEXION_DEG = (0.0, 5.0)
LIE_S = (30.0, 600.0)
SLIP_P = 0.3  # share of days on which the sensor creeps
SLIP_DEG = (1.0, 5.0)
SLIP_S = (60.0, 900.0)
RESEAT_P = 0.7
RESEAT_AFTER_S = (60.0, 1800.0)


def parse_spec(text: str) -> tuple[int, float] | None:
    """'random:SEED[:HOURS]' → (seed, hours); None for any other scenario name."""
    if not text.startswith(PREFIX):
        return None
    parts = text[len(PREFIX):].split(":")
    try:
        seed = int(parts[0])
    except ValueError:
        raise ValueError(f"expected random:SEED[:HOURS] with an integer SEED, got {text!r}") from None
    try:
        hours = float(parts[1]) if len(parts) > 1 else DEFAULT_HOURS
    except ValueError:
        raise ValueError(f"expected random:SEED[:HOURS] with HOURS a number (e.g. 1.5), got {text!r}") from None
    if len(parts) > 2 or seed < 0 or not 0.01 <= hours <= 24 * 7:
        raise ValueError(f"expected random:SEED[:HOURS] with SEED ≥ 0 and 0.01 ≤ HOURS ≤ 168, got {text!r}")
    return seed, hours


def random_day(seed: int, hours: float = DEFAULT_HOURS) -> Scenario:
    rng = np.random.default_rng([seed, 0xDA7])
    day = _Day(rng)
    calibration = day.calibration()
    while day.t_s < hours * 3600.0:
        block = rng.choice(list(BLOCKS), p=list(BLOCKS.values()))
        getattr(day, block)()
    segments = _truncate(day.segments, hours * 3600.0)
    sensor = {k: float(rng.uniform(*r)) for k, r in SENSOR_RANGES.items()}
    sensor["rate_hz"] = float(rng.choice(RATES_HZ))
    data: dict[str, Any] = {
        "name": f"random:{seed}:{hours:g}",
        "description": f"random day {seed}, {hours:g} h, calibration {calibration}",
        "sensor": sensor, "segment": segments,
    }
    if rng.random() < SLIP_P:
        slip = {"start_s": float(rng.uniform(0.1, 0.8) * hours * 3600.0), "duration_s": float(rng.uniform(*SLIP_S)),
                "angle_deg": float(rng.uniform(*SLIP_DEG)), "axis": str(rng.choice(["forward", "left"]))}
        if rng.random() < RESEAT_P:
            slip["reseat_after_s"] = float(rng.uniform(*RESEAT_AFTER_S))
        data["slip"] = [slip]
    return parse_scenario(data, default_name=data["name"], where=data["name"])


def calibration_variant(seed: int) -> str:
    """Which way the day's wearer calibrates (the scenario's description says it too)."""
    return random_day(seed, 0.01).description.rsplit(" ", 1)[-1]


class _Day:
    """Appends segments (as scenario dicts) and keeps track of whether the wearer sits."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.segments: list[dict[str, Any]] = []
        self.t_s = 0.0
        self.sitting = True

    def u(self, lo_hi: tuple[float, float]) -> float:
        return float(self.rng.uniform(*lo_hi))

    def add(self, activity: str, duration_s: float, transition_s: float | None = None, **params: Any) -> None:
        seg = {"activity": activity, "duration_s": round(float(duration_s), 3), **params}
        if self.segments:
            # A transition never outlasts either neighbour (the scenario rule).
            want = self.u((0.5, 1.5)) if transition_s is None else transition_s
            seg["transition_s"] = round(min(want, duration_s, self.segments[-1]["duration_s"]), 3)
        self.segments.append(seg)
        self.t_s += duration_s

    # ---- calibration -------------------------------------------------------------------

    def calibration(self) -> str:
        variant = str(self.rng.choice(list(CALIBRATION_VARIANTS), p=list(CALIBRATION_VARIANTS.values())))
        hold = {"flexion_deg": round(self.u(HUNCHED_HOLD_DEG), 2)} if variant == "hunched" else {}
        if variant == "moving":
            self.add("sit_upright", self.u((1.0, 2.5)))
            self.add("fidget", self.u((3.0, 8.0)), amplitude_deg=self.u((2.0, 5.0)), moves_per_min=self.u((30, 60)))
        self.add("sit_upright", self.u((4.0, 8.0)), **hold)
        bend = self.u(SHALLOW_BEND_DEG if variant == "shallow" else GOOD_BEND_DEG)
        sideways = self.u(SIDEWAYS_BEND_DEG) * self.rng.choice([-1, 1]) if variant == "sideways" else 0.0
        self.add("slouch", self.u((2.0, 3.5)), transition_s=self.u((0.5, 1.0)), flexion_deg=round(bend, 2),
                 ramp_s=self.u((0.6, 1.2)), lean_deg=round(sideways, 2))
        self.add("sit_upright", self.u((4.0, 10.0)), transition_s=self.u((0.5, 1.0)), **hold)
        return variant

    def recalibrate(self) -> None:
        """The wearer calibrates again (after a break, or when the app asked)."""
        self._sit_down()
        self.calibration()

    # ---- blocks ------------------------------------------------------------------------

    def desk(self) -> None:
        self._sit_down()
        end_s = self.t_s + self.u(DESK_BLOCK_S)
        while self.t_s < end_s:
            kind = self.rng.choice(["upright", "slouch", "recline", "lean", "rotate", "fidget", "swivel"],
                                   p=[0.28, 0.24, 0.08, 0.1, 0.14, 0.1, 0.06])
            getattr(self, f"_{kind}")(standing=False)

    def walk_break(self) -> None:
        self._stand_up()
        self.add("stand", self.u((3.0, 40.0)), flexion_deg=self.u(STAND_FLEXION_DEG))
        self._walk()
        self.add("stand", self.u((3.0, 30.0)), flexion_deg=self.u(STAND_FLEXION_DEG))
        self._sit_down()

    def standing_work(self) -> None:
        self._stand_up()
        end_s = self.t_s + self.u((120.0, 900.0))
        while self.t_s < end_s:
            kind = self.rng.choice(["upright", "slouch", "rotate", "fidget", "walk"], p=[0.45, 0.2, 0.15, 0.1, 0.1])
            getattr(self, f"_{kind}")(standing=True)
        self._sit_down()

    def lie(self) -> None:
        self._sit_down()
        self.add("lie", self.u(LIE_S), transition_s=self.u((2.0, 4.0)),
                 position=str(self.rng.choice(["supine", "prone", "left", "right"])))
        self.add("sit_upright", self.u((10.0, 60.0)), transition_s=self.u((2.0, 4.0)))

    # ---- postures ----------------------------------------------------------------------

    def _upright(self, standing: bool) -> None:
        if standing:
            self.add("stand", self.u((10.0, 180.0)), flexion_deg=self.u(STAND_FLEXION_DEG))
        else:
            self.add("sit_upright", self.u((20.0, 300.0)), flexion_deg=self.u((-2.0, 4.0)),
                     lean_deg=self.u((-3.0, 3.0)))

    def _slouch(self, standing: bool) -> None:
        creep = self.rng.random() < 0.25
        ramp_s = self.u(SLOUCH_CREEP_S) if creep else self.u((1.0, 5.0))
        lean = self.u((-12.0, 12.0)) if self.rng.random() < 0.3 else 0.0
        self.add("slouch", ramp_s + self.u(SLOUCH_HOLD_S), transition_s=self.u((0.5, 2.0)),
                 flexion_deg=round(self.u(SLOUCH_DEG), 2), ramp_s=round(ramp_s, 2), lean_deg=round(lean, 2),
                 standing=standing)

    def _recline(self, standing: bool) -> None:
        self.add("sit_upright", self.u((30.0, 300.0)), transition_s=self.u((1.0, 3.0)),
                 flexion_deg=self.u(RECLINE_DEG))

    def _lean(self, standing: bool) -> None:
        self.add("lean", self.u((10.0, 120.0)), side=str(self.rng.choice(["left", "right"])),
                 lateral_deg=round(self.u(LEAN_DEG), 2), flexion_deg=self.u((0.0, 10.0)))

    def _rotate(self, standing: bool) -> None:
        n = int(self.rng.integers(1, 5))
        order = "".join(self.rng.choice(["L", "R"], size=n))
        left, right = self.u(ROTATION_PEAK_DEG), self.u(ROTATION_PEAK_DEG)
        speed, hold, pause = self.u(ROTATION_SPEED_DPS), self.u(ROTATION_HOLD_S), self.u((1.0, 6.0))
        needed_s = sum(2 * (left if c == "L" else right) / speed + hold + pause for c in order) + pause
        flexion = self.u((15.0, 35.0)) if self.rng.random() < 0.2 else self.u((0.0, 4.0))
        self.add("rotate", needed_s + self.u((0.5, 3.0)), left_count=order.count("L"), right_count=order.count("R"),
                 order=order, left_peak_deg=round(left, 2), right_peak_deg=round(right, 2), speed_dps=round(speed, 2),
                 hold_s=round(hold, 2), pause_s=round(pause, 2), flexion_deg=round(flexion, 2), standing=standing)

    def _fidget(self, standing: bool) -> None:
        self.add("fidget", self.u((10.0, 90.0)), amplitude_deg=self.u((2.0, 6.0)),
                 moves_per_min=self.u((10.0, 40.0)), standing=standing)

    def _swivel(self, standing: bool) -> None:
        stay = self.rng.random() < 0.4
        side = str(self.rng.choice(["L", "R"]))
        size = self.u(SWIVEL_STAY_DEG if stay else SWIVEL_DEG)
        speed, hold, pause = self.u(SWIVEL_SPEED_DPS), self.u((1.0, 8.0)), self.u((1.0, 4.0))
        needed_s = (1 if stay else 2) * size / speed + hold + 2 * pause
        self.add("swivel", needed_s + self.u((0.5, 2.0)), left_count=int(side == "L"), right_count=int(side == "R"),
                 left_deg=round(size, 2), right_deg=round(size, 2), speed_dps=round(speed, 2), hold_s=round(hold, 2),
                 pause_s=round(pause, 2), stay=stay)

    def _walk(self, standing: bool = True) -> None:
        slouched = self.rng.random() < 0.1
        self.add("walk", self.u(WALK_S), transition_s=self.u((0.5, 1.5)),
                 speed_m_s=self.u(WALK_SPEED_M_S), step_hz=self.u(STEP_HZ), bounce_m=self.u(BOUNCE_M),
                 flexion_deg=self.u(WALK_SLOUCHED_DEG if slouched else WALK_FLEXION_DEG),
                 turn_every_s=self.u(TURN_EVERY_S), turn_deg=self.u(TURN_DEG), turn_s=self.u((1.0, 3.0)),
                 turn_side=str(self.rng.choice(["left", "right", "alternate"])))

    def _stand_up(self) -> None:
        if self.sitting:
            self.add("stand", self.u((3.0, 10.0)), transition_s=self.u(SIT_STAND_S),
                     flexion_deg=self.u(STAND_FLEXION_DEG))
            self.sitting = False

    def _sit_down(self) -> None:
        if not self.sitting:
            self.add("sit_upright", self.u((5.0, 30.0)), transition_s=self.u(SIT_STAND_S))
            self.sitting = True


def _truncate(segments: list[dict[str, Any]], duration_s: float) -> list[dict[str, Any]]:
    """Keep the day to its length; a segment cut short becomes plain sitting or standing (never below 1 s)."""
    out, t_s = [], 0.0
    for seg in segments:
        if t_s >= duration_s - 1.0:
            break
        if t_s + seg["duration_s"] > duration_s:
            on_feet = seg["activity"] in ("stand", "walk") or seg.get("standing", False)
            # The transition is bounded by the duration as rounded, or it can exceed it by 1e-13 (a refused day).
            cut_s = round(max(duration_s - t_s, 1.0), 3)
            seg = {"activity": "stand" if on_feet else "sit_upright", "duration_s": cut_s,
                   **({"transition_s": min(seg["transition_s"], cut_s)} if "transition_s" in seg else {})}
        out.append(seg)
        t_s += seg["duration_s"]
    return out
