"""Sensor → trunk alignment from an upright hold and an optional forward bend, and its upkeep.

The sensor sits on the upper back at any orientation. An upright hold gives the trunk's up axis
in the sensor frame. A forward bend then tips that axis toward the trunk's back, which fixes the
sagittal plane (trunk forward = the direction the up axis did *not* move). Without a bend the
sensor's −z is taken as forward (a sensor lying flat on the back, z out of the skin), which is
good to within the mounting error. A sensor worn face-in (z into the body) bends "backwards" from
that: the wearer is asked to bend again, and two bends that agree calibrate it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from scipy.signal import lfilter

from .angles import SensorAttitude, row_dot, row_norm
from .events import CALIBRATION_HOLD_S, CALIBRATION_MAX_AGE_S, calibration_moves
from .gyro_turns import turn_quaternion
from .running import MovingMean, RestLevel, exp_mean
from .runs import trailing_run

HOLD_TRIM_S = 0.3  # the end of a still run that is left out of the hold
Said = list[tuple[float, str, str, str]]  # refusals said to the wearer: (time, reason, ask, joint: events.asking)


class CalibrationError(ValueError):
    """A calibration attempt that cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class CalibrationSettings:
    hold_s: float = CALIBRATION_HOLD_S  # still, upright, before the bend
    still_gyro_dps: float = 4.0  # |gyro less the bias known so far| above this is movement
    still_acc_g: float = 0.03  # |acc| (smoothed) this far from the sensor's resting |acc| is movement
    still_smooth_s: float = 0.2  # smoothing of |acc| for the stillness test: noise is not movement
    still_tilt_deg: float = 2.0  # up-axis wander during the hold
    bend_min_deg: float = 8.0  # the app asks for 15°; a clean shallower bend still fixes the plane
    bend_max_deg: float = 70.0  # deeper is not a calibration bend (lying down, the sensor in a hand)
    bend_return_deg: float = 6.0  # … and come back within this of upright
    # … and not go on past it: for this long after, no more than bend_settle_deg beyond the hold the other way from the
    # bend (leaning back from it). A stand-up from a slouch that was still for 3 s passes back through the slouch on its
    # way to standing, which would make the slouch "upright"; a reach, a turn or a stand-up from upright does not.
    bend_settle_s: float = 1.5
    bend_settle_deg: float = 8.0
    bend_within_s: float = 5.0  # the bend starts this soon after the hold
    bend_max_s: float = 10.0  # out and back within this
    bend_straight_deg: float = 25.0  # direction half-way down vs at the deepest point
    bend_timeout_s: float = 12.0  # no bend by then → a provisional calibration from the hold alone
    # … if the hold can be upright: the sensor lies on the back, its z (out of the skin) near level. Upright, the
    # mounting tilt (≤ 30°), the upper back's slope and a hunch all tip z up (toward 40° and more); z pointing
    # down by this much is a wearer lying on the back (or reclined), up by this much one lying face down.
    hold_only_z_down_deg: float = 45.0
    hold_only_z_up_deg: float = 60.0
    refusal_every_s: float = 60.0  # say a refusal at most this often
    # Forward from a bend must be within this of where forward can be: the sensor lies on the back, so
    # its −z is forward give or take the mounting tilt (≤ 30°); when recalibrating, the old forward.
    bend_direction_deg: float = 60.0
    bend_again_deg: float = 15.0  # a recalibration asks for the full bend
    # A bend straight backwards from where the mount puts forward is a lean back, or a forward bend with the sensor
    # worn face-in (its top against the back, its z into the body): the wearer is asked, and the same bend again
    # this soon (its forward within face_in_agree_deg of the first's) is taken as face-in.
    face_in_confirm_s: float = 120.0
    face_in_agree_deg: float = 30.0
    # Recalibration check (CalibrationMonitor): averages over walking or sitting time only.
    drift_walk_lateral_deg: float = 4.0  # walking: |mean lateral bend| beyond this (people walk within ±2°)
    drift_walk_extension_deg: float = 2.0  # walking: mean flexion below −this (people walk inclined 0–10° forward)
    drift_walk_min_s: float = 20.0  # of walking for its means, and of unbroken steps read lying (a moved sensor)
    drift_sit_lateral_deg: float = 25.0  # sitting: |mean lateral bend| beyond this …
    drift_sit_extension_deg: float = 15.0  # … or mean flexion below −this
    drift_sit_min_s: float = 120.0
    # No data for this long (a link lost, the gateway down): the sensor may have been taken off and put on again, maybe
    # elsewhere on the back, and the calibration moves are asked for, as for a sensor picked up after lying off the body
    # (stream.py, _put_on_again). Out of the gateway's reach wearing it, in a meeting or at lunch (20 min to 1.5 h),
    # the wearer is not asked (the old calibration is most likely right, and a request brings refusals of everyday
    # moves: docs/alerts.md); switched off or charging for a night (6 h and more) or a day away, they are.
    away_recalibrate_s: float = 2 * 3600.0
    # A calibration the wearer made this long ago is asked for again (stream.py, _asks_at_age), at the first sample read
    # sitting (the moves are made seated; a sleeper is not asked), and the calibrator watches from there: the alert
    # service told "Calibration is 24 h old" and the moves it asked for, which the calibrator, not watching, ignored
    # (the nudge came again every 4 h). 0: never. Not asked of a calibration with no time it was made (taken_s None):
    # one given (`posture replay --axes-are-trunk`: the data's axes are the trunk's, no moves of the wearer's made it)
    # or restored from a file kept before the time was.
    max_age_s: float = CALIBRATION_MAX_AGE_S

    @property
    def instructions(self) -> str:
        """What the wearer is asked to do to calibrate."""
        return calibration_moves(self.hold_s)


@dataclass(frozen=True)
class Calibration:
    r_sensor_trunk: np.ndarray  # (3, 3): columns are the trunk's x (forward), y (left), z (up) in sensor axes
    with_bend: bool
    bend_deg: float = 0.0
    gyro_bias_dps: np.ndarray | None = None  # measured during the still hold
    # When the wearer made it (sensor time, Unix s: the moves' adoption); a correction from walking (turned) or a new
    # bias keeps it, and a restart restores it. None: not known (one kept before this was, or given, not made).
    taken_s: float | None = None

    @staticmethod
    def from_vectors(up_sensor: np.ndarray, bend_up_sensor: np.ndarray | None = None) -> Calibration:
        z = _unit(up_sensor)
        x: np.ndarray | None
        if bend_up_sensor is not None:
            tipped = bend_up_sensor - np.dot(bend_up_sensor, z) * z
            if np.linalg.norm(tipped) < np.sin(np.radians(5.0)):
                raise CalibrationError("the forward bend was too small to find the sagittal plane")
            # Bending forward moves the up axis toward the back: forward is the opposite way.
            x = -_unit(tipped)
            bend_deg = float(_between_deg(_unit(bend_up_sensor), z))
        else:
            x, bend_deg = _sensor_forward(z), 0.0
            if x is None:
                raise CalibrationError("sensor z is near vertical: a forward bend is needed to calibrate")
        y = np.cross(z, x)
        return Calibration(np.column_stack([x, y, z]), bend_up_sensor is not None, bend_deg)

    @staticmethod
    def sensor_axes_are_trunk_axes() -> Calibration:
        """For data whose sensor x, y, z already point forward, left and up (no calibration moves). Forward is
        given, as a bend gives it: not provisional, so a bend in the data does not recalibrate it away."""
        return Calibration(np.eye(3), with_bend=True)

    def to_dict(self) -> dict[str, Any]:
        return {"r_sensor_trunk": self.r_sensor_trunk.tolist(), "with_bend": self.with_bend,
                "bend_deg": self.bend_deg,
                "gyro_bias_dps": None if self.gyro_bias_dps is None else self.gyro_bias_dps.tolist(),
                "taken_s": self.taken_s}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Calibration:
        r = np.asarray(d["r_sensor_trunk"], dtype=float)
        if r.shape != (3, 3) or not np.allclose(r.T @ r, np.eye(3), atol=1e-6):
            raise CalibrationError("a stored calibration is not a rotation")
        bias, taken = d.get("gyro_bias_dps"), d.get("taken_s")
        return Calibration(r, bool(d["with_bend"]), float(d.get("bend_deg", 0.0)),
                           None if bias is None else np.asarray(bias, dtype=float),
                           None if taken is None else float(taken))

    @property
    def face_in(self) -> bool:
        """The sensor's top faces into the back: trunk forward has the sensor's +z in it (−z when worn face out)."""
        return bool(self.r_sensor_trunk[2, 0] > 0.0)

    def with_bias(self, gyro_bias_dps: np.ndarray | None) -> Calibration:
        return Calibration(self.r_sensor_trunk, self.with_bend, self.bend_deg, gyro_bias_dps, self.taken_s)

    def turned(self, azimuth_deg: float) -> Calibration:
        """The same up axis with forward turned by azimuth_deg toward the left: a measured sagittal plane."""
        c, s = np.cos(np.radians(azimuth_deg)), np.sin(np.radians(azimuth_deg))
        r = self.r_sensor_trunk @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return Calibration(r, True, self.bend_deg, self.gyro_bias_dps, self.taken_s)


@dataclass(frozen=True)
class CalibrationRequest:
    """The calibration moves asked for and not made yet: what PosturePipeline.request_calibration was given. Kept with
    the calibration (a gateway's `<device>.calibration.json`), so that a restarted pipeline watches for them again: a
    request told at 21:00, a restart at 21:05, and the moves made at 21:10 calibrated nothing, unanswered."""
    forward: Calibration | None = None  # the forward to judge the bend against (walking's); None: the calibration's
    moved: bool = False  # the sensor moved on the back: the bend judged as at a first calibration (mount's forward)

    def to_dict(self) -> dict[str, Any]:
        return {"forward": None if self.forward is None else self.forward.to_dict(), "moved": self.moved}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CalibrationRequest:
        forward, moved = d.get("forward"), d["moved"]
        if not isinstance(moved, bool):
            raise ValueError(f"a stored calibration request's moved is not true or false: {moved!r}")
        return CalibrationRequest(None if forward is None else Calibration.from_dict(forward), moved)


def _unit(v: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, v / np.linalg.norm(v))


def _between_deg(u: np.ndarray, v: np.ndarray) -> Any:
    """Angle (°) between unit vectors u and v (either may be a stack of them)."""
    return np.degrees(np.arccos(np.clip(u @ v, -1.0, 1.0)))


def hold_gyro_bias_dps(acc_g: np.ndarray, gyro_dps: np.ndarray, rate_hz: float) -> np.ndarray:
    """Gyro bias over a still hold: its mean rate, less the slow tilt that breathing still causes.

    Breathing sways the trunk by about a degree; over a few seconds that is a mean rate of a few
    tenths of °/s, as large as the bias. The accelerometer sees that tilt (not rotation about
    vertical), so its rate is taken out of the mean.
    """
    edge = max(1, len(acc_g) // 6)
    g0, g1 = acc_g[:edge].mean(axis=0), acc_g[-edge:].mean(axis=0)
    g0, g1 = g0 / np.linalg.norm(g0), g1 / np.linalg.norm(g1)
    span_s = (len(acc_g) - edge) / rate_hz
    # Gravity seen from the sensor turns opposite to the sensor: ω_tilt = g1 × g0 / Δt.
    tilt_rate_dps = np.degrees(np.cross(g1, g0)) / span_s
    return cast(np.ndarray, gyro_dps.mean(axis=0) - tilt_rate_dps)


class Stillness:
    """Per sample: is the sensor still? Robust to noise and to the accelerometer's own scale error.

    Still means the gyro is slow (|gyro| below `still_gyro_dps`: bias alone stays under it) and |acc|,
    averaged over `still_smooth_s` (so white noise does not count as movement), stays within
    `still_acc_g` of the sensor's own resting |acc| — learned from the gyro-still samples, so a
    sensor that reads 1.02 g at rest is still at 1.02 g.
    """

    def __init__(self, settings: CalibrationSettings, rate_hz: float):
        self.s = settings
        self._smooth = MovingMean(round(settings.still_smooth_s * rate_hz))
        # The resting |acc|: the first from a second of gyro-still samples (still until then), then followed.
        self._rest = RestLevel(round(rate_hz), 1.0 / (10.0 * rate_hz), settings.still_acc_g, round(rate_hz))

    def update(self, acc_g: np.ndarray, gyro_dps: np.ndarray) -> np.ndarray:
        return self._rest.at_rest(self._smooth.update(row_norm(acc_g)), row_norm(gyro_dps) < self.s.still_gyro_dps)

    def copy(self) -> Stillness:
        """A snapshot to go back to: a shallow copy of it and of its two running levels, whose state is only ever
        rebound (a deep copy, settings and all, cost 47-88 µs at every 1 s batch the calibrator watched; this 8-12)."""
        kept = copy.copy(self)
        kept._smooth, kept._rest = self._smooth.copy(), self._rest.copy()
        return kept


@dataclass
class _Settling:
    cal: Calibration  # judged from the bend, adopted if the trunk does not go on past the hold
    until_t_s: float
    doubt: tuple[float, Calibration] | None  # the question the bend answered (_confirmed): still open if refused
    hold_end_t_s: float


@dataclass
class _Hold:
    up: np.ndarray  # mean gravity direction over the hold, sensor frame
    bias_dps: np.ndarray
    end_t_s: float
    since_t_s: float  # when this still stretch first made a hold (the bend is due from then)


class Calibrator:
    """Finds the upright hold and the forward bend in the incoming stream.

    The hold is the last `hold_s` of stillness before the bend (a pause inside fidgeting that is
    followed by more fidgeting is forgotten); the bend must start within `bend_within_s` of it, tip
    the trunk by `bend_min_deg`–`bend_max_deg` along one direction, come back within
    `bend_return_deg` of the hold within `bend_max_s` and not go on past it (`bend_settle_deg` leaning
    back) for `bend_settle_s`. Anything else is refused with a one-line reason that says what to do.
    No bend within `bend_timeout_s` of a hold gives a provisional calibration (forward assumed from how
    the sensor sits), said as such; not while a bend that went straight back is unexplained (_confirmed).
    """

    def __init__(self, settings: CalibrationSettings = CalibrationSettings(), rate_hz: float = 100.0):
        self.s = settings
        self.rate_hz = rate_hz
        self.forward_hint: np.ndarray | None = None  # the current calibration's forward, when recalibrating
        # A bend straight back from forward may be a face-in sensor's forward bend (_confirmed): asked before any
        # calibration, and after a face-in one is flagged; not against a provisional one, which slouch alerts may
        # follow with an extension stretch (two leans back would turn a face-out wearer's right forward round).
        self.ask_face_in = True
        # A hold without a bend may calibrate (provisionally): not when recalibrating (expect), which asks for the full
        # bend (bend_again_deg), whatever forward it is judged against.
        self.hold_only = True
        # The last bend (when, and the calibration it makes) once one went straight back from the mount's forward: the
        # next must agree (_confirmed), and until a bend calibrates no provisional one guesses forward from the mount.
        self._doubt: tuple[float, Calibration] | None = None
        self._hold_n = round(settings.hold_s * rate_hz)
        self._still = Stillness(settings, rate_hz)
        self.refusals = 0
        self._last_refusal_t_s = -np.inf
        self._trim_n = round(HOLD_TRIM_S * rate_hz)
        self._run_acc = np.zeros((0, 3))  # the current still run's last hold_s (+ trim) of samples
        self._run_gyro = np.zeros((0, 3))
        self._run_t = np.zeros(0)
        self._run_n = 0
        self._run_held = False  # this still stretch has already made a hold
        self._hold_only_refused = False  # this still stretch's hold was refused as a hold only: not again till it ends
        self._hold: _Hold | None = None
        self._bend: list[tuple[float, np.ndarray]] = []  # (t_s, up) while bending
        self._settling: _Settling | None = None  # a bend judged good, while the trunk must not go on past the hold
        # Of the calibration last returned, for the stream's check and `not_seated`: where its hold ended and its
        # bend came back, the question its bend answered.
        self.hold_end_t_s = self.returned_t_s = -np.inf
        self._answered: tuple[float, Calibration] | None = None
        self._batch_still = np.zeros(0, bool)
        # The gyro of the last seconds, as long as a hold's end may lie before a bend's deepest point (_turned_up)
        self._gyro_keep_s = HOLD_TRIM_S + settings.bend_within_s + settings.bend_max_s + 1.0
        self._gyro_t, self._gyro = np.zeros(0), np.zeros((0, 3))
        self._still_before = self._still.copy()  # as it stood before this batch, for `rebias`

    def expect(self, current: Calibration | None, sign_in_doubt: bool = False) -> None:
        """Judge the moves against the calibration in use (None: against the mount's forward, as at a first
        calibration): only a bend (of the full depth) finishes or replaces it.
        sign_in_doubt: a bend straight back from its forward may be confirmed as forward (_confirmed)."""
        self.forward_hint = None if current is None else current.r_sensor_trunk[:, 0].copy()
        self.ask_face_in = sign_in_doubt
        self.hold_only = False

    def restart(self) -> None:
        """Look for a calibration from scratch (after a gap or a new request)."""
        self._run_acc, self._run_gyro, self._run_t, self._run_n = np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), 0
        self._run_held = False
        self._hold, self._bend, self._settling = None, [], None

    def update(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, up_sensor: np.ndarray,
               bias_dps: np.ndarray | None = None) -> tuple[Calibration | None, int, Said]:
        """(calibration or None, index where it starts to apply, refusals said). bias_dps: the gyro bias known at each
        sample ((n, 3), the orientation filter's as it stood there: one for the whole batch, its end's, moved the hold
        by a sample between batchings), taken off for the stillness test only: the hold measures its own."""
        self._still_before = self._still.copy()
        self._batch_still = self._still.update(acc_g, gyro_dps if bias_dps is None else gyro_dps - bias_dps)
        t, gyro = np.concatenate([self._gyro_t, t_s]), np.vstack([self._gyro, gyro_dps])
        # (before the batch's first sample: a bend judged anywhere in a long batch has its hold's end in reach)
        since = int(np.searchsorted(t, t_s[0] - self._gyro_keep_s)) if len(t_s) else 0
        self._gyro_t, self._gyro = t[since:], gyro[since:]
        return self.resume(t_s, acc_g, gyro_dps, up_sensor, 0)

    def rebias(self, acc_g: np.ndarray, gyro_dps: np.ndarray, bias_dps: np.ndarray) -> None:
        """The stillness of the batch `update` was given, again with this gyro bias per sample: the orientation
        filter's once a calibration adopted inside the batch handed it the hold's (the stream's _filter_again). Kept
        from the first pass, the samples after it were judged with the bias before it, where a batch cut there judges
        them with the new one (5 °/s: a hold refused in 1 s batches, "moved during the upright hold", and not in one
        batch). The samples before it have the same bias, and so the same stillness, as the calibrator saw them."""
        self._still = self._still_before.copy()
        self._batch_still = self._still.update(acc_g, gyro_dps - bias_dps)

    def resume(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, up_sensor: np.ndarray,
               k: int) -> tuple[Calibration | None, int, Said]:
        """As `update`, on the same batch from sample k on: after a calibration it returned was not taken."""
        still = self._batch_still
        messages: Said = []
        while k < len(t_s):
            if self._settling is not None:  # a bend came back, in this batch or an earlier one
                cal, k = self._settle(t_s, acc_g, gyro_dps, up_sensor, still, k, messages)
                if cal is not None or self._settling is not None:  # adopted, or not yet known
                    return cal, k, messages
            k, made = self._follow(t_s, acc_g, gyro_dps, up_sensor, still, k, messages)
            if made is not None:
                return made, k, messages
        return None, len(t_s), messages

    def _overdue(self, t_s: np.ndarray, since_t_s: float | None) -> int | None:
        """The first of these samples by which a bend is overdue, bend_timeout_s after a hold began at since_t_s (None:
        no hold a provisional calibration can be made of); None if none is."""
        if since_t_s is None:
            return None
        late = np.flatnonzero(t_s - since_t_s > self.s.bend_timeout_s)
        return int(late[0]) if len(late) else None

    def _may_take_hold_alone(self) -> bool:
        """A hold alone may make a provisional calibration: not when recalibrating (expect), nor with a bend under way
        or settling, nor when this still stretch's hold was refused as one, nor while a bend that went straight back
        is unexplained (_confirmed)."""
        return (self.hold_only and not self._bend and self._settling is None and not self._hold_only_refused
                and self._doubt is None)

    def _hold_only(self, t_s: float, messages: Said) -> Calibration | None:
        """The provisional calibration from the hold alone, its bend overdue at t_s; refused (said once for the still
        stretch: a night in bed is one) when the hold cannot be upright, and a bend may still follow it."""
        assert self._hold is not None  # due only with a hold
        try:
            up_z = self._hold.up[2]
            if not -np.sin(np.radians(self.s.hold_only_z_down_deg)) <= up_z <= np.sin(
                    np.radians(self.s.hold_only_z_up_deg)):
                raise CalibrationError("the sensor faces up or down, as lying does")
            cal = Calibration.from_vectors(self._hold.up).with_bias(self._hold.bias_dps)
        except CalibrationError as exc:
            self._refuse(t_s, str(exc), self.s.instructions, messages)
            self.restart()
            self._hold_only_refused = True
            return None
        self.hold_end_t_s = self.returned_t_s = self._hold.end_t_s
        self._answered = None
        self.restart()
        return cal

    def not_seated(self, t_s: float, why: str, always: bool) -> Said:
        """The calibration just returned was no seated moves (the stream's activity says so: the wearer sat down or
        stood up for the bend, or stood through the hold): refused with why, said at t_s (always: even soon after
        another line); the question its bend answered is open again. (Only a bend's calibration comes here: sitting
        and standing are known only under a calibration with a bend, and recalibrating from one takes no hold alone,
        `expect`.)"""
        messages: Said = []
        self._doubt = self._answered
        self._refuse(t_s, why, f"sitting, {self.s.instructions}", messages, always=always or self._doubt is not None)
        return messages

    def _follow(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, up_sensor: np.ndarray,
                still: np.ndarray, k: int, messages: Said) -> tuple[int, Calibration | None]:
        """The hold and the bend from sample k: up to the sample a bend judged good came back at, or the end."""
        for a, b, is_still in _runs(still[k:]):
            a, b = a + k, b + k
            if is_still:
                while a < b:  # (once more after a hold refused as one alone: the rest of the still run)
                    taken, due_here = self._extend_hold(t_s[a:b], acc_g[a:b], gyro_dps[a:b], messages)
                    a += taken
                    if due_here and (made := self._hold_only(float(t_s[a - 1]), messages)) is not None:
                        return a, made
                continue
            self._break_hold(float(t_s[a]), messages)
            hold = self._hold
            if (hold is not None and self._may_take_hold_alone()
                    and (due := self._overdue(t_s[a:b], hold.since_t_s)) is not None
                    and not (_between_deg(up_sensor[a:a + due + 1], hold.up) >= self.s.bend_min_deg).any()):
                # Moving about with the bend overdue and not begun by then: the hold alone (refused: it is gone).
                if (made := self._hold_only(float(t_s[a + due]), messages)) is not None:
                    return a + due + 1, made
            if (stop := self._follow_bend(t_s, up_sensor, a, b, messages)) is not None:
                return stop, None
        return len(t_s), None

    def _extend_hold(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray,
                     messages: Said) -> tuple[int, bool]:
        """Still samples: the hold as of each of them, as if each came alone, so that neither the hold nor when it began
        depends on how the stream is batched. Returns how many were taken (all, or up to the one a provisional
        calibration from the hold alone is due at) and whether it is due."""
        if self._bend:  # a pause at the bottom of a bend is part of the bend, but only for so long
            # Given up: the still samples after that one start the next hold (_follow goes on with them).
            late = self._give_up_late_bend(t_s, messages)
            return (len(t_s) if late is None else late + 1), False
        keep, h, n = self._hold_n + self._trim_n, self._hold_n, len(t_s)
        acc, gyro = np.vstack([self._run_acc, acc_g]), np.vstack([self._run_gyro, gyro_dps])
        times, m = np.concatenate([self._run_t, t_s]), len(self._run_acc)
        # After sample i the hold is the first hold_s of the run's last keep samples (the last moments before a
        # movement already move a little: the bend starts gently), if its up axis did not wander.
        first = max(0, keep - self._run_n - 1)
        starts = m + np.arange(first, n) - keep + 1  # in acc, of the hold after each sample from first on
        good = np.zeros(0, np.intp)
        if len(starts):
            sums = np.concatenate([np.zeros((1, 3)), np.cumsum(acc, axis=0)])
            head, tail = sums[starts + 20] - sums[starts], sums[starts + h] - sums[starts + h - 20]
            cos = row_dot(head, tail) / (row_norm(head) * row_norm(tail))
            good = np.flatnonzero(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) <= self.s.still_tilt_deg) + first
        # A provisional calibration is due at the first sample past the bend's timeout: from the hold there was until
        # this still stretch makes one, then from this stretch's first.
        may, held_at, since = self._may_take_hold_alone(), int(good[0]) if len(good) else n, 0.0
        if len(good):
            since = (self._hold.since_t_s if self._hold is not None and self._run_held
                     else float(times[starts[held_at - first] + h - 1]))
        due = self._overdue(t_s[:held_at], self._hold.since_t_s if may and self._hold is not None else None)
        if due is None and may and len(good) and (later := self._overdue(t_s[held_at:], since)) is not None:
            due = held_at + later
        taken = n if due is None else due + 1
        if len(good := good[good < taken]):
            w = int(starts[good[-1] - first])
            self._hold = _Hold(_unit(acc[w:w + h].mean(axis=0)), hold_gyro_bias_dps(acc[w:w + h], gyro[w:w + h],
                               self.rate_hz), float(times[w + h - 1]), since)
            self._run_held = True
        to = m + taken
        self._run_acc, self._run_gyro, self._run_t = acc[:to][-keep:], gyro[:to][-keep:], times[:to][-keep:]
        self._run_n += taken
        return taken, due is not None

    def _break_hold(self, t_s: float, messages: Said) -> None:
        self._hold_only_refused = False
        if self._hold is None and not self._bend and self._run_n >= self.rate_hz:
            self._refuse(t_s, f"moved during the upright hold after {self._run_n / self.rate_hz:.1f} s",
                         f"sit upright and keep still for {self.s.hold_s:g} s", messages)
        self._run_acc, self._run_gyro, self._run_t, self._run_n = np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), 0
        self._run_held = False

    def _follow_bend(self, t_s: np.ndarray, up_sensor: np.ndarray, a: int, b: int, messages: Said) -> int | None:
        """Follow the bend through samples a..b (moving); the sample it came back at if judged good (_settling)."""
        hold = self._hold
        if hold is None:
            return None
        dev = _between_deg(up_sensor[a:b], hold.up)
        if not self._bend:
            over = np.flatnonzero(dev >= self.s.bend_min_deg)
            if len(over) == 0:
                if t_s[b - 1] - hold.end_t_s > self.s.bend_within_s + self.s.bend_max_s:
                    self._hold = None  # moved about without bending: that was not the hold before a bend
                return None
            if t_s[a + over[0]] - hold.end_t_s > self.s.bend_within_s:
                self._hold = None
                return None
            a = a + int(over[0])
            dev = dev[over[0]:]
        back = np.flatnonzero(dev <= self.s.bend_return_deg)
        stop = a + (int(back[0]) if len(back) else len(dev))
        self._bend += list(zip(t_s[a:stop].tolist(), up_sensor[a:stop]))
        if not len(back):
            self._give_up_late_bend(t_s[a:b], messages)
            return None
        doubt = self._doubt
        cal = self._judge_bend(hold, float(t_s[stop]), messages)
        self._bend, self._hold = [], None
        if cal is None:
            return None
        self._settling = _Settling(cal, float(t_s[stop]) + self.s.bend_settle_s, doubt, hold.end_t_s)
        return stop

    def _settle(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, up_sensor: np.ndarray,
                still: np.ndarray, k: int, messages: Said) -> tuple[Calibration | None, int]:
        """From sample k: the calibration and where it applies once the trunk has not gone on past the hold for long
        enough; None while it may still (then _settling stays, and the batch is done) or once it did (then from
        where)."""
        settling = self._settling
        assert settling is not None  # called while settling
        # Past the hold in the bend's plane: the bend tipped the up axis toward the back (−forward); a lean back from
        # the hold, or a stand-up from a slouch held, tips it toward forward. A reach, a turn or a lean sideways not.
        forward, up = settling.cal.r_sensor_trunk[:, 0], settling.cal.r_sensor_trunk[:, 2]
        past_deg = np.degrees(np.arctan2(up_sensor[k:] @ forward, up_sensor[k:] @ up))
        done = np.flatnonzero(t_s[k:] >= settling.until_t_s)
        n = int(done[0]) + 1 if len(done) else len(past_deg)
        if len(far := np.flatnonzero(past_deg[:n] > self.s.bend_settle_deg)):
            self._settling, self._doubt = None, settling.doubt
            # Said even soon after another line when it answered a question: the wearer is waiting for the answer.
            self._refuse(float(t_s[k + far[0]]), "after the bend the trunk went on past where it was held (standing "
                                                 "up?), not back to it", f"{self.s.instructions} again", messages,
                         always=settling.doubt is not None)
            return None, k + int(far[0])
        self._still_run(t_s, acc_g, gyro_dps, still, k, k + n)
        if not len(done):
            return None, len(t_s)
        self._settling = None
        self.hold_end_t_s, self._answered = settling.hold_end_t_s, settling.doubt
        self.returned_t_s = settling.until_t_s - self.s.bend_settle_s
        return settling.cal, k + n

    def _still_run(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, still: np.ndarray, a: int,
                   b: int) -> None:
        """Samples a..b, settling: sitting still after the sit-up counts toward the next hold, in case the calibration
        is not taken (`not_seated`: the wearer sat down, and may do the moves at once). Movement starts the run
        again, unsaid: no hold was being made."""
        if len(moved := np.flatnonzero(~still[a:b])):
            self._run_acc, self._run_gyro, self._run_t, self._run_n = np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), 0
            self._run_held = False
            a += int(moved[-1]) + 1
        if b > a:
            self._extend_hold(t_s[a:b], acc_g[a:b], gyro_dps[a:b], [])

    def _give_up_late_bend(self, t_s: np.ndarray, messages: Said) -> int | None:
        """A bend not back within bend_max_s is a posture, not the calibration bend: start over (said at the sample it
        was over, however the stream is batched). Returns that sample's index (None: not over)."""
        if len(late := np.flatnonzero(t_s - self._bend[0][0] > self.s.bend_max_s)):
            self._refuse(float(t_s[late[0]]), f"the forward bend did not come back within {self.s.bend_max_s:g} s",
                         f"{self.s.instructions} again", messages)
            self.restart()
            return int(late[0])
        return None

    def _turned_up(self, hold: _Hold, deepest_t_s: float, filter_up: np.ndarray) -> np.ndarray:
        """Up (sensor axes) at the bend's deepest point: the hold's, turned by the gyro less the hold's own bias from
        the hold's end. Where the bend points is forward, and the gyro reads it however the trunk is carried: the
        filter's up axis drifts through the bend with whatever bias it has not learnt yet (5 °/s: forward 8° off),
        and the accelerometer, read there instead, took a chair rolled or turned while bent for a sideways bend (a
        10° swivel at 15 °/s: 2–4° off; a 5 cm roll on an 11° bend: 4–9°). filter_up if the gyro of the whole
        way is not kept (not expected: _gyro_keep_s)."""
        if not len(self._gyro_t) or self._gyro_t[0] > hold.end_t_s:
            return filter_up
        way = (self._gyro_t > hold.end_t_s) & (self._gyro_t <= deepest_t_s)
        turn = SensorAttitude.of(turn_quaternion(np.radians(self._gyro[way] - hold.bias_dps) / self.rate_hz)[None])
        return cast(np.ndarray, hold.up @ np.vstack([turn.row0, turn.row1, turn.row2]))  # R(turn)ᵀ up

    def _judge_bend(self, hold: _Hold, t_s: float, messages: Said) -> Calibration | None:
        if t_s - self._bend[0][0] > self.s.bend_max_s:
            return None  # out and back took too long: a posture, not the calibration bend
        times, ups = np.array([t for t, _ in self._bend]), np.array([u for _, u in self._bend])
        dev = _between_deg(ups, hold.up)
        k = int(np.argmax(dev))
        if dev[k] > self.s.bend_max_deg:
            self._refuse(t_s, f"the bend went to {dev[k]:.0f}°",
                         f"for calibration bend forward {self.s.bend_min_deg:g}–45° only, then sit up", messages)
            return None
        # One plane: the way down at half depth points where the deepest point does.
        half = int(np.argmax(dev >= dev[k] / 2))
        d_half, d_max = ups[half] - hold.up, ups[k] - hold.up
        d_half -= (d_half @ hold.up) * hold.up
        d_max -= (d_max @ hold.up) * hold.up
        if _between_deg(_unit(d_half), _unit(d_max)) > self.s.bend_straight_deg:
            self._refuse(t_s, "the bend was not one straight movement", "bend straight forward once and sit up",
                         messages)
            return None
        try:
            # Its direction is the gyro's, its depth the filter's (_turned_up).
            cal = replace(Calibration.from_vectors(hold.up, self._turned_up(hold, float(times[k]), ups[k])),
                          bend_deg=float(dev[k]))
        except CalibrationError as exc:
            self._refuse(t_s, str(exc), "bend forward at least 15° and sit up again", messages)
            return None
        if not self.hold_only and dev[k] < self.s.bend_again_deg:
            return None  # re-arming after a flag: only the move the wearer was asked for counts
        hint = self.forward_hint if self.forward_hint is not None else _sensor_forward(hold.up)
        if hint is None:
            self._refuse(t_s, "sensor z is near vertical while sitting upright: it does not lie on the back",
                         "tape it flat on the upper back and calibrate again", messages, joint="; ")
            return None
        off = _between_deg(cal.r_sensor_trunk[:, 0], hint)
        straight_back = off >= 180.0 - self.s.bend_direction_deg
        backwards = self.ask_face_in and straight_back
        if off > self.s.bend_direction_deg and not backwards:
            # (Short enough for a phone alert, at most 240 characters, with the rest of the message.)
            turned = ("; if you did bend forward, the sensor is worn the other way round: turn it over and calibrate "
                      "again" if straight_back else "")
            self._refuse(t_s, f"that bend went {off:.0f}° away from forward (backwards or sideways)",
                         f"sit upright and still, bend straight forward once and sit up{turned}", messages)
            return None
        if backwards or self._doubt is not None:
            return self._confirmed(cal.with_bias(hold.bias_dps), backwards, t_s, messages)
        return cal.with_bias(hold.bias_dps)

    def _confirmed(self, cal: Calibration, backwards: bool, t_s: float, messages: Said) -> Calibration | None:
        """One back sensor cannot tell a forward bend with the sensor worn face-in from a lean back with it worn face
        out. Once a bend has gone straight back from where the mount puts forward, the wearer is asked, and a bend
        calibrates only when the next one, soon after, goes the same way."""
        forward = cal.r_sensor_trunk[:, 0]
        last = self._doubt
        agrees = last is not None and _between_deg(forward, last[1].r_sensor_trunk[:, 0]) <= self.s.face_in_agree_deg
        if last is not None and agrees and t_s - last[0] <= self.s.face_in_confirm_s:
            self._doubt = None
            return cal
        self._doubt = (t_s, cal)
        once_more, joint = "sit upright and still and bend forward once more to confirm", ": "
        if backwards:
            turn_over = " (or turn the sensor over and bend forward twice)" if cal.face_in else ""
            why = ("that bend went straight backwards from the forward expected: if you bent forward, the sensor's "
                   f"top faces {'into' if cal.face_in else 'out of'} your back")
            ask, joint = f"{once_more} it{turn_over}", "; "
        elif agrees:
            why, ask = "that bend went the way the one before did, but minutes later", f"{once_more} it"
        else:
            why, ask = "that bend went the other way from the one before", f"{once_more} which way is forward"
        self._refuse(t_s, why, ask, messages, always=True, joint=joint)
        return None

    def _refuse(self, t_s: float, reason: str, ask: str, messages: Said, always: bool = False,
                joint: str = ": ") -> None:
        """Count a refusal; say it unless one was said within refusal_every_s (a fidgety hour is one line), or
        always (a question the wearer must answer). reason, ask, joint: events.asking's."""
        self.refusals += 1
        if always or t_s - self._last_refusal_t_s >= self.s.refusal_every_s:
            messages.append((t_s, reason, ask, joint))
            self._last_refusal_t_s = t_s


def _sensor_forward(up_sensor: np.ndarray) -> np.ndarray | None:
    """Forward as the mounting suggests (the sensor's −z, level), or None if z is too near vertical to say."""
    back = np.array([0.0, 0.0, 1.0])
    x = -(back - np.dot(back, up_sensor) * up_sensor)
    return None if np.linalg.norm(x) < 0.3 else _unit(x)


def _runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, value) of each run of equal values."""
    edges = np.concatenate([[0], np.flatnonzero(mask[1:] != mask[:-1]) + 1, [len(mask)]])
    return [(int(a), int(b), bool(mask[a])) for a, b in zip(edges[:-1], edges[1:])]


class CalibrationMonitor:
    """Reports "recalibrate" when angles stay where a body does not stay: a bad calibration or a moved sensor.

    Walking, the trunk is upright sideways (± a couple of degrees) and inclined forward, never back:
    a mean over walking time that leans sideways by `drift_walk_lateral_deg`, or reads extension
    beyond `drift_walk_extension_deg`, means the upright reference is off — the hold was hunched
    or sideways, or the sensor has moved. Nobody walks lying down: `drift_walk_min_s` of steps without a
    break (found from |acc| alone) all read lying mean the sensor was moved or turned on the back since it
    was calibrated (taped on anew under a calibration restored from the last run), and `moved` is set: its
    forward may be wrong too (turned over, it is reversed). (Those steps are labelled lying, so the walking
    means never see them. Unbroken, because a restless night gives a second or two of "steps" now and then,
    and a crawl or a walk bent beyond 60° seldom lasts that long.) Sitting, nobody stays bent sideways by 25°
    or leans back by 15° for minutes. (Standing still and the direction of slouches were tried as references
    too: people stand and slouch too differently for them to tell a bad calibration from a habit.)
    """

    def __init__(self, settings: CalibrationSettings = CalibrationSettings(), rate_hz: float = 100.0):
        self.s = settings
        self.dt_s = 1.0 / rate_hz
        self._walk_lateral = _SlowMean(settings.drift_walk_min_s, rate_hz)
        self._walk_flexion = _SlowMean(settings.drift_walk_min_s, rate_hz)

        self._sit_lateral = _SlowMean(settings.drift_sit_min_s, rate_hz)
        self._sit_flexion = _SlowMean(settings.drift_sit_min_s, rate_hz)
        self._steps_lying = 0  # samples of steps taken "lying", unbroken, up to the last one
        self._steps_lying_n = round(settings.drift_walk_min_s * rate_hz)
        self.reported = False
        self.moved = False  # reported as a sensor moved or turned on the back

    def update(self, flexion_deg: np.ndarray, lateral_deg: np.ndarray, walking: np.ndarray,
               sitting: np.ndarray, steps: np.ndarray, lying: np.ndarray) -> tuple[int, str] | None:
        """walking, sitting, lying: the activity per sample; steps: walking found from |acc| alone, lying or not. The
        first sample at which a check fails and why (once), judged after each sample as if it came alone: checked at
        the end of a batch only, a mean that crossed a limit for less than a batch was flagged in one-second batches
        and not in a replay's minutes (random day 5014: a walk's flexion mean at -2° for a few seconds)."""
        s, n = self.s, len(flexion_deg)
        if self.reported or n == 0:  # said once: a new calibration brings a new monitor
            return None
        # Each mean per sample only where the batch could take it past its limit (most batches: none can).
        walk_lat = self._walk_lateral.per_sample(lateral_deg, walking, s.drift_walk_lateral_deg)
        walk_flex = self._walk_flexion.per_sample(flexion_deg, walking, s.drift_walk_extension_deg, below_only=True)
        sit_lat = self._sit_lateral.per_sample(lateral_deg, sitting, s.drift_sit_lateral_deg)
        sit_flex = self._sit_flexion.per_sample(flexion_deg, sitting, s.drift_sit_extension_deg, below_only=True)
        both = steps & lying
        if both.any() or self._steps_lying:
            run = trailing_run(both, self._steps_lying)
            self._steps_lying = int(run[-1])
        else:
            run = np.zeros(n, np.int64)
        never = np.full(n, np.nan)
        walk_lat, walk_flex, sit_lat, sit_flex = (never if m is None else m for m in (walk_lat, walk_flex, sit_lat,
                                                                                       sit_flex))
        with np.errstate(invalid="ignore"):  # NaN: a mean not known yet (or not near its limit), which fails no check
            checks = [run >= self._steps_lying_n, walk_flex < -s.drift_walk_extension_deg,
                      np.abs(walk_lat) > s.drift_walk_lateral_deg, np.abs(sit_lat) > s.drift_sit_lateral_deg,
                      sit_flex < -s.drift_sit_extension_deg]
        failed = np.flatnonzero(np.logical_or.reduce(checks))
        if not len(failed):
            return None
        j = int(failed[0])
        if checks[0][j]:
            self.moved = True
            why = ("walking reads the trunk lying down: the sensor has been moved or turned on the back since it "
                   "was calibrated")
        elif checks[1][j]:
            why = (f"walking reads {walk_flex[j]:+.0f}° of flexion (leaning back): the upright hold was probably "
                   "hunched, or the sensor has moved; sit tall for the hold")
        elif checks[2][j]:
            why = f"walking reads {walk_lat[j]:+.0f}° of sideways bend: the sensor has probably moved on the back"
        elif checks[3][j]:
            why = f"sitting has read {sit_lat[j]:+.0f}° of sideways bend for minutes: the sensor has probably moved"
        else:
            # Under a hunched hold a recline reads the hunch deeper (day 7010: a 6° hunch and a 12° recline).
            why = (f"sitting has read {sit_flex[j]:+.0f}° of flexion (leaning back) for minutes: the upright hold was "
                   "probably hunched, or the sensor has moved; sit tall for the hold")
        self.reported = True
        return j, why

    def gap(self) -> None:
        """A lost link: steps on either side of it are not one unbroken walk."""
        self._steps_lying = 0


class _SlowMean:
    """Mean over the selected samples only: plain until tau_s of them, then exponential with time constant tau_s."""

    def __init__(self, tau_s: float, rate_hz: float):
        self._alpha = 1.0 / (tau_s * rate_hz)
        self._needed = tau_s * rate_hz
        self._count = 0
        self._mean = 0.0

    def per_sample(self, x: np.ndarray, selected: np.ndarray, limit: float,
                   below_only: bool = False) -> np.ndarray | None:
        """The mean as it stands after each sample (NaN while fewer than tau_s of them are in), taking in x where
        selected; None when it cannot pass −limit (or +limit, unless below_only) in this batch: a mean of the values
        and the mean before stays between their least and greatest (then only the mean is carried on)."""
        known = self._mean if self._count >= self._needed else np.nan
        v = x[selected]
        if not len(v):
            beyond = known < -limit or (not below_only and known > limit)  # (NaN: neither)
            return np.full(len(x), known) if beyond else None
        plain = min(len(v), max(0, int(np.ceil(self._needed - self._count))))  # still to come into the plain mean
        lo, hi = min(float(v.min()), self._mean), max(float(v.max()), self._mean)
        if lo >= -limit and (below_only or hi <= limit):
            if plain:
                self._mean = float((self._mean * self._count + v[:plain].sum()) / (self._count + plain))
            if plain < len(v):
                self._mean = exp_mean(self._mean, self._alpha, v[plain:])
            self._count += len(v)
            return None
        means = np.empty(len(v))
        if plain:
            counts = self._count + np.arange(1, plain + 1)
            means[:plain] = (self._mean * self._count + np.cumsum(v[:plain])) / counts
            means[:plain][counts < self._needed] = np.nan
            self._mean, self._count = float((self._mean * self._count + v[:plain].sum()) / counts[-1]), int(counts[-1])
        if plain < len(v):  # m ← (1 − α) m + α x, sample by sample
            decay = 1.0 - self._alpha
            means[plain:], _ = lfilter([self._alpha], [1.0, -decay], v[plain:], zi=[decay * self._mean])
            self._mean, self._count = float(means[-1]), self._count + len(v) - plain
        # Each sample carries the mean after the last selected sample up to it.
        taken = np.cumsum(selected) - 1
        return np.where(taken >= 0, means[np.maximum(taken, 0)], known)
