"""Scenario -> trunk kinematics per sample, and the ground-truth events.

Every quantity is an analytic function of time, planned once from the scenario and the seeded
generator. Any window of samples can therefore be evaluated on its own: chunking never changes a
value, and a long day never has to be held in memory. Angles follow docs/conventions.md.

Segments are blended with a partition of unity: segment k has weight
``rise_k(t) - rise_{k+1}(t)``, where ``rise_k`` is a quintic smoothstep over the transition
centred on the boundary. Each segment extrapolates its own motion (clamped local time), so the
blended angles, heading, pelvis height and speed are smooth through every transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scenario import OFF, PLACED_POSES_DEG, SITTING, STANDING, Scenario, context_of, turn_sizes_deg

# Truth definition of a slouch episode, independent of any scenario, the same as the product's
# (docs/pipeline.md): TRUE flexion above the threshold, until it falls below the exit, for at least
# SLOUCH_TRUTH_MIN_S. Breathing and fidgeting (< 5 deg around an upright posture) never reach it;
# only held forward flexion does, and breathing near the line does not split an episode.
SLOUCH_TRUTH_THRESHOLD_DEG = 15.0
SLOUCH_TRUTH_EXIT_DEG = 12.0
SLOUCH_TRUTH_MIN_S = 5.0
# Truth definition of a lean interval, likewise the product's (docs/pipeline.md, "Lean"): |TRUE lateral bend| above
# the threshold, until it falls below the exit, for at least LEAN_TRUTH_MIN_S, while sitting (the context of the
# segment; off the body excluded, as for a slouch). Whatever the segment: a slouch or a rotation while leaning leans.
LEAN_TRUTH_THRESHOLD_DEG = 6.0
LEAN_TRUTH_EXIT_DEG = 4.0
LEAN_TRUTH_MIN_S = 5.0

BREATH_HZ = 0.25
BREATH_HZ_SPREAD = 0.1  # relative, per simulation
BREATH_AMPLITUDE_DEG = (0.3, 0.5)  # flexion sway range, per simulation
POSTURAL_NOISE_TERMS = 4  # sinusoids per angle: smooth, so it differentiates cleanly into acc/gyro
POSTURAL_NOISE_DEG = 0.08  # amplitude of each term
POSTURAL_NOISE_HZ = (0.05, 0.5)
SITTING_FLEXION_DEG = 2.0  # base posture of lean, rotate and fidget segments
PELVIS_STANDING_M = 0.45  # pelvis rise from sitting to standing
WALK_FLEXION_DEG = 3.0
WALK_FLEXION_BOB_DEG = 1.0  # at step frequency
WALK_LATERAL_SWAY_DEG = 1.5  # at stride frequency (half the step frequency)
WALK_SPEED_MODULATION = 0.1  # relative forward speed ripple at step frequency
WALK_TURN_JITTER = 0.1  # relative jitter of the turn interval
WALK_TURN_MARGIN_S = 0.5  # no turn may still be running this close to the segment end
FIDGET_MOVE_S = (0.4, 1.2)  # out and back leg durations
FIDGET_HOLD_S = (0.0, 1.5)
FIDGET_GAP_MIN_S = 0.3
EVENTS_WINDOW_SAMPLES = 100_000
# Sit-to-stand and stand-to-sit (Schenkman et al. 1990; Kerr et al. 1997): the trunk flexes forward
# 20–45° to bring the body over the feet, then extends while the pelvis rises (sit-to-stand, peak
# flexion about a third of the way in), or flexes while the pelvis lowers and sits back up after
# seat contact (stand-to-sit, peak about two thirds in). The whole movement takes 1–4 s.
SIT_STAND_FLEXION_DEG = (20.0, 40.0)
SIT_TO_STAND_PEAK_AT = 0.35  # fraction of the transition
STAND_TO_SIT_PEAK_AT = 0.65
SIT_TO_STAND_RISE = (0.3, 1.0)  # part of the transition over which the pelvis rises
STAND_TO_SIT_FALL = (0.0, 0.75)
GAIT_STOP_S = 0.6  # the last (first) step next to a sit/stand fades out (in) over this
LIE_ANGLES_DEG = {"prone": (90.0, 0.0), "left": (0.0, -90.0), "right": (0.0, 90.0)}  # flexion, lateral
# Taking a sensor off the back and putting it down (or back on) turns it in the hand beyond the path between the two
# poses: a bump of up to this much on each of flexion, lateral bend and rotation, over the handling transition.
HANDLING_TURN_DEG = 40.0


@dataclass(frozen=True)
class SlouchEpisode:
    start_s: float
    end_s: float
    peak_flexion_deg: float


@dataclass(frozen=True)
class RotationExcursion:
    start_s: float
    end_s: float
    side: str  # "left" | "right"
    peak_deg: float  # absolute peak of rotation_deg within the excursion


@dataclass(frozen=True)
class LeanInterval:
    start_s: float
    end_s: float
    side: str
    mean_lateral_deg: float


@dataclass(frozen=True)
class SwivelTurn:
    start_s: float
    end_s: float
    side: str
    turn_deg: float  # size of the chair turn (heading change at its widest)
    returns: bool  # out and back, or the chair stays facing elsewhere


@dataclass(frozen=True)
class ActivityInterval:
    start_s: float
    end_s: float
    activity: str


@dataclass
class TruthEvents:
    slouch_episodes: list[SlouchEpisode] = field(default_factory=list)
    rotation_excursions: list[RotationExcursion] = field(default_factory=list)
    lean_intervals: list[LeanInterval] = field(default_factory=list)
    activity_intervals: list[ActivityInterval] = field(default_factory=list)
    swivel_turns: list[SwivelTurn] = field(default_factory=list)
    context_intervals: list[ActivityInterval] = field(default_factory=list)  # sitting/standing/walking/lying


@dataclass(frozen=True)
class Kinematics:
    """Truth for a window of samples; pelvis velocity/height feed the accelerometer."""

    t_s: np.ndarray
    flexion_deg: np.ndarray
    lateral_deg: np.ndarray
    rotation_deg: np.ndarray
    heading_deg: np.ndarray
    pelvis_vel_m_s: np.ndarray  # (n, 3) world frame, horizontal walking velocity
    pelvis_z_m: np.ndarray  # height above the seated pelvis, walking bounce included
    segment: np.ndarray  # index of the segment each sample lies in
    # How far off the body the sensor is: 0 worn, 1 lying where it was put (off_body), between while handled.
    off_weight: np.ndarray


@dataclass(frozen=True)
class Bumps:
    """Smooth out-and-back excursions (rise, hold, fall) of [flexion, lateral, rotation, heading]."""

    start_s: np.ndarray
    rise_s: np.ndarray
    hold_s: np.ndarray
    fall_s: np.ndarray
    amplitude_deg: np.ndarray  # (m, 4)

    @property
    def end_s(self) -> np.ndarray:
        return self.start_s + self.rise_s + self.hold_s + self.fall_s


@dataclass(frozen=True)
class SegmentPlan:
    activity: str
    start_s: float
    end_s: float
    half_in_s: float  # half the transition into this segment
    half_out_s: float
    heading_start_deg: float
    params: Any
    context: str = SITTING  # sitting, standing, walking, lying or off
    heading_change_deg: float = 0.0
    bumps: Bumps | None = None  # rotate, fidget, swivel out and back
    turn_start_s: np.ndarray | None = None  # walk, swivel that stays: heading steps
    turn_deg: np.ndarray | None = None
    turn_s: float = 0.0


def smoothstep(u: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile 0 -> 1 on u in [0, 1], clamped outside."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


@dataclass(frozen=True)
class SitStand:
    """A sit-to-stand (rising) or stand-to-sit between two segments: trunk flexion bump + pelvis path."""

    start_s: float
    end_s: float
    rising: bool
    peak_flexion_deg: float


class MotionModel:
    """Plans a scenario once; evaluates truth kinematics on any sample window."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator, rate_hz: float):
        self.scenario = scenario
        self.rate_hz = float(rate_hz)
        self.duration_s = scenario.duration_s
        self.n_samples = int(round(self.duration_s * self.rate_hz))
        self.segments = self._plan_segments(rng)
        self.activity_names = np.array([s.activity for s in self.segments])
        self.context_names = np.array([s.context for s in self.segments])
        self._starts_s = np.array([s.start_s for s in self.segments])
        # Where each segment's weight is non-zero; the first and last extend forever.
        self._support_lo_s = np.array([s.start_s - s.half_in_s for s in self.segments])
        self._support_hi_s = np.array([s.end_s + s.half_out_s for s in self.segments])
        self._support_lo_s[0], self._support_hi_s[-1] = -np.inf, np.inf
        self.breath_hz = BREATH_HZ * rng.uniform(1 - BREATH_HZ_SPREAD, 1 + BREATH_HZ_SPREAD)
        self.breath_deg = rng.uniform(*BREATH_AMPLITUDE_DEG)
        self.breath_phase = rng.uniform(0, 2 * np.pi)
        self.noise_hz = rng.uniform(*POSTURAL_NOISE_HZ, size=(3, POSTURAL_NOISE_TERMS))
        self.noise_phase = rng.uniform(0, 2 * np.pi, size=(3, POSTURAL_NOISE_TERMS))
        self.sit_stands = self._plan_sit_stands(rng)
        self.off_segments = [k for k, s in enumerate(self.segments) if s.context == OFF]

    def _plan_segments(self, rng: np.random.Generator) -> list[SegmentPlan]:
        plans: list[SegmentPlan] = []
        start_s, heading_deg = 0.0, 0.0
        segs = self.scenario.segments
        for k, seg in enumerate(segs):
            end_s = start_s + seg.duration_s
            half_in = 0.0 if k == 0 else _half_transition(segs[k - 1], seg)
            half_out = 0.0 if k == len(segs) - 1 else _half_transition(seg, segs[k + 1])
            extra: dict[str, Any] = {"context": context_of(seg.activity, seg.params)}
            if seg.activity == "rotate":
                extra["bumps"] = _plan_turn_bumps(seg.params, start_s, column=2)
            elif seg.activity == "swivel" and not seg.params.stay:
                extra["bumps"] = _plan_turn_bumps(seg.params, start_s, column=3)
            elif seg.activity == "swivel":
                extra["turn_start_s"], extra["turn_deg"], extra["turn_s"] = _plan_swivel_steps(seg.params, start_s)
                extra["heading_change_deg"] = float(extra["turn_deg"].sum())
            elif seg.activity == "fidget":
                extra["bumps"] = _plan_fidget(seg.params, start_s, end_s, rng)
            elif seg.activity == "off_body":
                extra["bumps"] = _plan_handling(start_s, end_s, half_in, half_out, rng)
            elif seg.activity == "walk":
                extra["turn_start_s"], extra["turn_deg"] = _plan_turns(seg.params, start_s, end_s, rng)
                extra["turn_s"] = seg.params.turn_s
                extra["heading_change_deg"] = float(extra["turn_deg"].sum())
            plan = SegmentPlan(seg.activity, start_s, end_s, half_in, half_out, heading_deg, params=seg.params, **extra)
            plans.append(plan)
            start_s, heading_deg = end_s, heading_deg + plan.heading_change_deg
        return plans

    def _plan_sit_stands(self, rng: np.random.Generator) -> list[SitStand]:
        """Every boundary between sitting and being on one's feet gets the shape of a real sit/stand."""
        out = []
        on_feet = {STANDING: True, "walking": True, SITTING: False}
        for prev, nxt in zip(self.segments[:-1], self.segments[1:]):
            a, b = on_feet.get(prev.context), on_feet.get(nxt.context)
            if a is None or b is None or a == b or nxt.half_in_s <= 0:
                continue
            peak = rng.uniform(*SIT_STAND_FLEXION_DEG)
            out.append(SitStand(nxt.start_s - nxt.half_in_s, nxt.start_s + nxt.half_in_s, b, float(peak)))
        return out

    def kinematics(self, i0: int, i1: int) -> Kinematics:
        """Truth for sample indices i0..i1-1 (indices outside [0, n) extrapolate smoothly)."""
        t = np.arange(i0, i1, dtype=np.float64) / self.rate_hz
        out = np.zeros((6, t.size))  # flexion, lateral, rotation, heading, speed, pelvis z
        off_weight = np.zeros(t.size)
        if t.size:
            lo = int(np.searchsorted(self._support_hi_s, t[0], "left"))
            hi = int(np.searchsorted(self._support_lo_s, t[-1], "right"))
            for k in range(lo, hi):
                # Only the segment's own support: the cost stays linear in the window length.
                a, z = np.searchsorted(t, [self._support_lo_s[k], self._support_hi_s[k]])
                if z > a:
                    weight = self._weight(k, t[a:z])
                    out[:, a:z] += weight * self._segment_values(self.segments[k], t[a:z])
                    if self.segments[k].context == OFF:
                        off_weight[a:z] += weight
            self._add_sit_stands(t, out)
        flexion, lateral, rotation, heading, speed, pelvis_z = out
        breath = self.breath_deg * np.sin(2 * np.pi * self.breath_hz * t + self.breath_phase)
        sway = [np.zeros_like(t) for _ in range(3)]
        for axis in range(3):
            for hz, phase in zip(self.noise_hz[axis], self.noise_phase[axis]):
                sway[axis] += POSTURAL_NOISE_DEG * np.sin(2 * np.pi * hz * t + phase)
        if self.off_segments:  # a sensor put down neither breathes nor sways: only the body it left does
            on_body = 1.0 - off_weight
            breath, sway = breath * on_body, [s * on_body for s in sway]
        flexion = flexion + breath
        heading_rad = np.radians(heading)
        # Heading + is clockwise from above, so the facing direction is Rz(-heading) x.
        vel = np.stack([speed * np.cos(heading_rad), -speed * np.sin(heading_rad), np.zeros_like(t)], axis=1)
        segment = np.clip(np.searchsorted(self._starts_s, t, "right") - 1, 0, len(self.segments) - 1)
        return Kinematics(
            t, flexion + sway[0], lateral + sway[1], rotation + sway[2], heading, vel, pelvis_z, segment, off_weight
        )

    def _add_sit_stands(self, t: np.ndarray, out: np.ndarray) -> None:
        """Replace the plain blend at sit/stand boundaries by the movement people make."""
        for ss in self.sit_stands:
            if ss.end_s <= t[0] or ss.start_s >= t[-1]:
                continue
            a, z = np.searchsorted(t, [ss.start_s, ss.end_s])
            u = (t[a:z] - ss.start_s) / (ss.end_s - ss.start_s)
            peak_at = SIT_TO_STAND_PEAK_AT if ss.rising else STAND_TO_SIT_PEAK_AT
            out[0, a:z] += ss.peak_flexion_deg * _bell(u, peak_at)
            # The blend moved the pelvis along smoothstep(u); it really moves in part of the window.
            lo, hi = SIT_TO_STAND_RISE if ss.rising else STAND_TO_SIT_FALL
            shaped = smoothstep((u - lo) / (hi - lo))
            out[5, a:z] += (PELVIS_STANDING_M if ss.rising else -PELVIS_STANDING_M) * (shaped - smoothstep(u))

    def _weight(self, k: int, t: np.ndarray) -> np.ndarray:
        seg = self.segments[k]
        rise = _rise(t, seg.start_s, seg.half_in_s) if k > 0 else np.ones_like(t)
        if k == len(self.segments) - 1:
            return rise
        return rise - _rise(t, seg.end_s, seg.half_out_s)

    def _segment_values(self, seg: SegmentPlan, t: np.ndarray) -> np.ndarray:
        """Rows: flexion, lateral, rotation, heading, speed, pelvis z — this segment alone."""
        p, n = seg.params, t.size
        tau = np.clip(t - seg.start_s, 0.0, seg.end_s - seg.start_s)
        v = np.zeros((6, n))
        v[0] = getattr(p, "flexion_deg", SITTING_FLEXION_DEG)
        v[1] = getattr(p, "lean_deg", 0.0)
        v[3] = seg.heading_start_deg
        if seg.activity == "slouch":
            v[0] = SITTING_FLEXION_DEG + (p.flexion_deg - SITTING_FLEXION_DEG) * _ramp(tau, p.ramp_s)
            v[1] = p.lean_deg * _ramp(tau, p.ramp_s)
        elif seg.activity == "lean":
            v[1] = (1.0 if p.side == "right" else -1.0) * p.lateral_deg * _ramp(tau, p.ramp_s)
        elif seg.activity == "lie" and p.position != "supine":
            v[0], v[1] = LIE_ANGLES_DEG[p.position]
        elif seg.activity == "off_body":  # the sensor's pose where it lies, in the angles of the trunk it sat on
            flexion_deg, v[1] = PLACED_POSES_DEG[p.placed]
            v[0] = flexion_deg + p.tilt_deg
            v[3] += p.yaw_deg
        if seg.bumps is not None:
            v[:4] += _bump_values(seg.bumps, t).T
        if seg.turn_start_s is not None:
            v[3] += _turn_values(seg, t)
        if seg.activity == "walk":
            step = 2 * np.pi * p.step_hz * t
            gait = self._gait_envelope(seg, t)
            v[0] += gait * WALK_FLEXION_BOB_DEG * np.sin(step)
            v[1] += gait * WALK_LATERAL_SWAY_DEG * np.sin(step / 2)
            v[4] = gait * p.speed_m_s * (1.0 + WALK_SPEED_MODULATION * np.sin(step))
            v[5] = PELVIS_STANDING_M + gait * p.bounce_m * np.sin(step)
        elif seg.context == STANDING:
            v[5] = PELVIS_STANDING_M
        return v

    def _gait_envelope(self, seg: SegmentPlan, t: np.ndarray) -> np.ndarray:
        """People stop walking before they sit down and stand up before they walk: next to a sitting
        segment, the steps stop (start) just before (after) the sit/stand movement."""
        env = np.ones_like(t)
        k = self.segments.index(seg)
        if k + 1 < len(self.segments) and self.segments[k + 1].context == SITTING:
            stop_s = seg.end_s - seg.half_out_s
            env *= 1.0 - smoothstep((t - (stop_s - GAIT_STOP_S)) / GAIT_STOP_S)
        if k > 0 and self.segments[k - 1].context == SITTING:
            go_s = seg.start_s + seg.half_in_s
            env *= smoothstep((t - go_s) / GAIT_STOP_S)
        return env

    # ---- ground truth -------------------------------------------------------------------

    def events(self) -> TruthEvents:
        slouches, leans = self._held_postures()
        ev = TruthEvents(slouch_episodes=slouches, lean_intervals=leans)
        for k, seg in enumerate(self.segments):
            if seg.activity == "rotate":
                for start_s, end_s, amp in zip(seg.bumps.start_s, seg.bumps.end_s, seg.bumps.amplitude_deg):
                    peak_deg = float(np.abs(self._window(start_s, end_s).rotation_deg).max())
                    side = "right" if amp[2] > 0 else "left"
                    ev.rotation_excursions.append(RotationExcursion(float(start_s), float(end_s), side, peak_deg))
            elif seg.activity == "swivel":
                ev.swivel_turns += _swivel_turns(seg)
            start_s, end_s = self._truth_bounds_s(k)
            _extend(ev.activity_intervals, start_s, end_s, seg.activity)
            _extend(ev.context_intervals, start_s, end_s, seg.context)
        return ev

    def _truth_bounds_s(self, k: int) -> tuple[float, float]:
        """Where segment k's activity is the truth: from boundary to boundary, but the sensor is off the body from the
        moment it is handled to the moment it is back on (the whole transitions into and out of an off_body segment)."""
        seg = self.segments[k]
        start_s, end_s = seg.start_s, seg.end_s
        if seg.context == OFF:
            return start_s - seg.half_in_s, end_s + seg.half_out_s
        if k > 0 and self.segments[k - 1].context == OFF:
            start_s += seg.half_in_s
        if k + 1 < len(self.segments) and self.segments[k + 1].context == OFF:
            end_s -= seg.half_out_s
        return start_s, end_s

    def _window(self, start_s: float, end_s: float) -> Kinematics:
        i0 = int(np.ceil(start_s * self.rate_hz - 1e-9))
        return self.kinematics(i0, max(int(np.floor(end_s * self.rate_hz + 1e-9)) + 1, i0 + 1))

    def _held_postures(self) -> tuple[list[SlouchEpisode], list[LeanInterval]]:
        """The slouch episodes and lean intervals of the whole run, from the kinematics (one pass over the day)."""
        slouch = _TruthRuns(SLOUCH_TRUTH_THRESHOLD_DEG, SLOUCH_TRUTH_EXIT_DEG)
        lean = _TruthRuns(LEAN_TRUTH_THRESHOLD_DEG, LEAN_TRUTH_EXIT_DEG)
        sitting = self.context_names == SITTING
        for i0 in range(0, self.n_samples, EVENTS_WINDOW_SAMPLES):
            kin = self.kinematics(i0, min(i0 + EVENTS_WINDOW_SAMPLES, self.n_samples))
            # A sensor lying face up reads as a trunk bent 90° forward: no one is slouching (or leaning) there.
            worn = kin.off_weight == 0
            slouch.feed(i0, np.where(worn, kin.flexion_deg, -np.inf), kin.flexion_deg)
            lean.feed(i0, np.where(worn & sitting[kin.segment], np.abs(kin.lateral_deg), -np.inf), kin.lateral_deg)
        rate = self.rate_hz
        episodes = [SlouchEpisode(float(a / rate), float(b / rate), r.peak) for a, b, r in slouch.close(self.n_samples)
                    if b / rate - a / rate >= SLOUCH_TRUTH_MIN_S]
        intervals = [LeanInterval(float(a / rate), float(b / rate), "right" if r.total > 0 else "left",
                                  float(r.total / (b - a)))
                     for a, b, r in lean.close(self.n_samples) if b / rate - a / rate >= LEAN_TRUTH_MIN_S]
        return episodes, intervals


@dataclass
class _RunStats:
    peak: float = -np.inf  # of the magnitude
    total: float = 0.0  # sum of the signed value


class _TruthRuns:
    """Hysteresis runs over a stream fed window by window: high from above `enter` until below `exit_` (a magnitude
    of -inf where the run may not be, which ends it). Runs as (start index, end index, stats), end exclusive."""

    def __init__(self, enter: float, exit_: float):
        self.enter, self.exit = enter, exit_
        self.runs: list[tuple[int, int, _RunStats]] = []
        self._start: int | None = None
        self._stats = _RunStats()
        self._high = False

    def feed(self, i0: int, magnitude: np.ndarray, value: np.ndarray) -> None:
        state = np.where(magnitude > self.enter, 1, np.where(magnitude < self.exit, 0, -1))
        last = np.maximum.accumulate(np.where(state >= 0, np.arange(state.size), -1))
        above = np.where(last >= 0, state[np.maximum(last, 0)] == 1, self._high)
        self._high = bool(above[-1])
        bounds = np.concatenate([[0], np.flatnonzero(above[1:] != above[:-1]) + 1, [above.size]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            if above[a]:
                self._start = i0 + a if self._start is None else self._start
                self._stats.peak = max(self._stats.peak, float(magnitude[a:b].max()))
                self._stats.total += float(value[a:b].sum())
            elif self._start is not None:
                self._end(i0 + a)

    def close(self, n: int) -> list[tuple[int, int, _RunStats]]:
        if self._start is not None:
            self._end(n)
        return self.runs

    def _end(self, end: int) -> None:
        assert self._start is not None
        self.runs.append((self._start, end, self._stats))
        self._start, self._stats = None, _RunStats()


def _half_transition(prev: Any, nxt: Any) -> float:
    # Never wider than half of either neighbour, so at most two segments overlap at any time.
    return min(nxt.transition_s, prev.duration_s, nxt.duration_s) / 2.0


def _rise(t: np.ndarray, centre_s: float, half_s: float) -> np.ndarray:
    if half_s <= 0.0:
        return (t >= centre_s).astype(np.float64)
    return smoothstep((t - (centre_s - half_s)) / (2.0 * half_s))


def _ramp(tau: np.ndarray, ramp_s: float) -> np.ndarray:
    return smoothstep(tau / ramp_s) if ramp_s > 0 else np.ones_like(tau)


def _bell(u: np.ndarray, peak_at: float) -> np.ndarray:
    """0 → 1 at u = peak_at → 0 at u = 1, minimum-jerk on both sides."""
    return np.where(u < peak_at, smoothstep(u / peak_at), 1.0 - smoothstep((u - peak_at) / (1.0 - peak_at)))


def _extend(intervals: list[ActivityInterval], start_s: float, end_s: float, activity: str) -> None:
    """Append, merging with the previous interval when the activity is the same."""
    if intervals and intervals[-1].activity == activity:
        intervals[-1] = ActivityInterval(intervals[-1].start_s, end_s, activity)
    else:
        intervals.append(ActivityInterval(start_s, end_s, activity))


def _bump_values(b: Bumps, t: np.ndarray) -> np.ndarray:
    out = np.zeros((t.size, 4))
    # Loop over the few bumps that touch the window, each on its own sample range, in a fixed
    # order, so a sample's value never depends on the window it is evaluated in.
    for j in np.flatnonzero((b.end_s > t[0]) & (b.start_s < t[-1])):
        a, z = np.searchsorted(t, [b.start_s[j], b.end_s[j]])
        u = t[a:z] - b.start_s[j]
        profile = smoothstep(u / b.rise_s[j]) - smoothstep((u - b.rise_s[j] - b.hold_s[j]) / b.fall_s[j])
        out[a:z] += profile[:, None] * b.amplitude_deg[j]
    return out


def _turn_values(seg: SegmentPlan, t: np.ndarray) -> np.ndarray:
    turn_s = seg.turn_s
    done_deg = np.concatenate([[0.0], np.cumsum(seg.turn_deg)])
    out = done_deg[np.searchsorted(seg.turn_start_s + turn_s, t, "right")]
    for j in np.flatnonzero((seg.turn_start_s + turn_s > t[0]) & (seg.turn_start_s < t[-1])):
        a, z = np.searchsorted(t, [seg.turn_start_s[j], seg.turn_start_s[j] + turn_s])
        out[a:z] += seg.turn_deg[j] * smoothstep((t[a:z] - seg.turn_start_s[j]) / turn_s)
    return out


def _turn_plan(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Signed size (+ right) and out-leg duration of each rotation or chair turn, in order."""
    order = p.order or _alternating(p.left_count, p.right_count)
    left_deg, right_deg = turn_sizes_deg(p)
    size_deg = np.array([-left_deg if c == "L" else right_deg for c in order])
    return size_deg, np.abs(size_deg) / p.speed_dps


def _plan_turn_bumps(p: Any, start_s: float, column: int) -> Bumps:
    """Out-and-back trunk rotations (column 2) or chair turns (column 3, heading)."""
    size_deg, leg_s = _turn_plan(p)
    hold_s = np.full(len(size_deg), p.hold_s)
    durations_s = 2 * leg_s + hold_s + p.pause_s
    starts_s = start_s + p.pause_s + np.cumsum(durations_s) - durations_s
    amplitude = np.zeros((len(size_deg), 4))
    amplitude[:, column] = size_deg
    return Bumps(starts_s, leg_s, hold_s, leg_s.copy(), amplitude)


def _plan_swivel_steps(p: Any, start_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Chair turns that stay: heading steps, each taking its size / speed (one duration for all)."""
    size_deg, leg_s = _turn_plan(p)
    turn_s = float(leg_s.max()) if len(leg_s) else 1.0
    durations_s = turn_s + p.hold_s + p.pause_s
    starts_s = start_s + p.pause_s + durations_s * np.arange(len(size_deg))
    return starts_s, size_deg, turn_s


def _swivel_turns(seg: SegmentPlan) -> list[SwivelTurn]:
    if seg.bumps is not None:
        b = seg.bumps
        return [SwivelTurn(float(a), float(z), "right" if amp[3] > 0 else "left", float(abs(amp[3])), True)
                for a, z, amp in zip(b.start_s, b.end_s, b.amplitude_deg)]
    return [SwivelTurn(float(a), float(a + seg.turn_s), "right" if d > 0 else "left", float(abs(d)), False)
            for a, d in zip(seg.turn_start_s, seg.turn_deg)]


def _alternating(left: int, right: int) -> str:
    pairs = min(left, right)
    return "LR" * pairs + "L" * (left - pairs) + "R" * (right - pairs)


def _plan_fidget(p: Any, start_s: float, end_s: float, rng: np.random.Generator) -> Bumps:
    m = int(np.ceil((end_s - start_s) * p.moves_per_min / 60.0))
    rise, fall = rng.uniform(*FIDGET_MOVE_S, size=(2, m))
    hold = rng.uniform(*FIDGET_HOLD_S, size=m)
    mean_gap_s = max(60.0 / max(p.moves_per_min, 1e-9) - np.mean(FIDGET_MOVE_S) * 2 - np.mean(FIDGET_HOLD_S), 0.0)
    gap = FIDGET_GAP_MIN_S + rng.exponential(mean_gap_s + 1e-9, size=m)
    amplitude = np.zeros((m, 4))
    amplitude[:, :3] = rng.uniform(-p.amplitude_deg, p.amplitude_deg, size=(m, 3))
    starts = start_s + np.cumsum(gap + rise + hold + fall) - (rise + hold + fall)
    keep = starts + rise + hold + fall <= end_s - FIDGET_GAP_MIN_S
    return Bumps(starts[keep], rise[keep], hold[keep], fall[keep], amplitude[keep])


def _plan_handling(start_s: float, end_s: float, half_in_s: float, half_out_s: float,
                   rng: np.random.Generator) -> Bumps:
    """The sensor turned in the hand while it is taken off (around start_s) and put back on (around end_s)."""
    centres_s, halves_s = np.array([start_s, end_s]), np.array([half_in_s, half_out_s])
    amplitude = np.zeros((2, 4))
    amplitude[:, :3] = rng.uniform(-HANDLING_TURN_DEG, HANDLING_TURN_DEG, size=(2, 3))
    keep = halves_s > 0  # none at the start or end of the scenario
    half = halves_s[keep]
    return Bumps(centres_s[keep] - half, half, np.zeros_like(half), half.copy(), amplitude[keep])


def _plan_turns(p: Any, start_s: float, end_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m = int((end_s - start_s) // p.turn_every_s)
    jitter = rng.uniform(-WALK_TURN_JITTER, WALK_TURN_JITTER, size=m) * p.turn_every_s
    starts = start_s + p.turn_every_s * np.arange(1, m + 1) + jitter
    keep = starts + p.turn_s <= end_s - WALK_TURN_MARGIN_S
    starts = starts[keep]
    if p.turn_side == "alternate":
        sign = np.where(np.arange(starts.size) % 2 == 0, 1.0, -1.0)
    else:
        sign = np.full(starts.size, 1.0 if p.turn_side == "right" else -1.0)
    return starts, sign * p.turn_deg
