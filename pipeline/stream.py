"""The posture pipeline for one device: batches of IMU samples in, trunk angles, events and metrics out.

One code path for live data and replay. Memory is O(batch + window): every stage carries a small
state between batches, never the history. Gaps up to `max_fill_s` (lost packets) are bridged by
interpolation so the orientation filter integrates the right time step; longer gaps (a lost link)
drop anything half-detected, so a gap never produces an event.

A slouch or lean is reported twice: an EpisodeStart when its dwell confirms it (the wearer is
slouching now) and the episode itself when it ends; `live_state()` is what the wearer is doing as of
the last sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any, cast

import numpy as np

from .activity import (
    ACTIVITY_NAMES,
    LYING_CODE,
    SITTING_CODE,
    WALKING_CODE,
    ActivityClassifier,
    ActivitySettings,
    ActivityState,
)
from .angles import (
    RAD_PER_DEG,
    SensorAttitude,
    TrunkAngles,
    horizontal_acc_in_heading,
    row_norm,
    tilted_beyond,
    trunk_angles_of,
    unwrap_from,
    vertical,
    wrapped_deg,
)
from .axial import AxialSettings, FacingBaseline
from .calibration import Calibration, CalibrationMonitor, CalibrationRequest, CalibrationSettings, Calibrator, Said
from .detectors import (
    LeanDetector,
    LeanSettings,
    RotationDetector,
    RotationSettings,
    SlouchDetector,
    SlouchSettings,
    feed_together,
)
from .events import (
    ACTIVITIES,
    MINUTE_S,
    NOT_WORN,
    RATE_HZ_DEFAULT,
    CalibrationEvent,
    Event,
    LeanInterval,
    LiveState,
    MinuteMetrics,
    RotationExcursion,
    SlouchEpisode,
    asking,
)
from .gaps import GAP_CONTEXT, GYRO_COLUMNS, fill_gaps
from .metrics import MinuteAggregator
from .orientation import GyroBias, OrientationFilter, OrientationSettings
from .spikes import lone_spikes, may_be_spike, no_spike_possible
from .walking_axis import WalkingAxis, WalkingAxisSettings
from .worn import WornDetector, WornSettings

# Beyond what any body-worn IMU measures (±16 g and ±2000 °/s are usual, ±4000 °/s the most): a value past these
# is a reading gone wrong (a corrupt cell of a recording, a caller's bug), not motion; the pipeline drops it.
MAX_ACC_G = 100.0
MAX_GYRO_DPS = 10_000.0
# The latest time a sample may have (2100-01-01, as the message contract's schemas): past it, not a time in seconds.
MAX_T_S = 4_102_444_800.0


def plausible(t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray) -> np.ndarray:
    """Per sample: a reading a body-worn IMU gives, its values within what one measures and its time before MAX_T_S
    (NaN is not within), and not a failed read: an accelerometer reading exactly zero on every axis (a worn sensor is
    never in free fall so still that its noise rounds to nothing; one such sample read 110 s of sitting as standing).
    The pipeline's door and replay's reader both drop what is not."""
    return cast(np.ndarray, (np.abs(acc_g) <= MAX_ACC_G).all(axis=1) & (np.abs(gyro_dps) <= MAX_GYRO_DPS).all(axis=1)
                & (t_s <= MAX_T_S) & acc_g.any(axis=1))


def _check_batch(t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, lost_samples: int,
                 quat_wxyz: np.ndarray | None) -> None:
    """A batch whose arrays are not of one length and shape, or a count of lost samples that is none, is a caller's
    bug: said in one line (numpy's own errors named none of the arguments)."""
    n = len(t_s) if t_s.ndim == 1 else -1
    if n < 0 or acc_g.shape != (n, 3) or gyro_dps.shape != (n, 3):
        raise ValueError(f"a batch is t_s (n,), acc_g (n, 3) and gyro_dps (n, 3); given {t_s.shape}, {acc_g.shape} "
                         f"and {gyro_dps.shape}")
    if quat_wxyz is not None and np.shape(quat_wxyz) != (n, 4):
        raise ValueError(f"quat_wxyz must be (n, 4) for a batch of {n} samples; given {np.shape(quat_wxyz)}")
    if isinstance(lost_samples, bool) or not isinstance(lost_samples, int | np.integer) or lost_samples < 0:
        raise ValueError(f"lost_samples must be a whole number 0 or more; given {lost_samples!r}")


@dataclass(frozen=True)
class PipelineSettings:
    rate_hz: float = RATE_HZ_DEFAULT
    max_fill_s: float = 1.0  # gaps up to this are interpolated; longer ones reset the detectors
    orientation: OrientationSettings = field(default_factory=OrientationSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    activity: ActivitySettings = field(default_factory=ActivitySettings)
    axial: AxialSettings = field(default_factory=AxialSettings)
    slouch: SlouchSettings = field(default_factory=SlouchSettings)
    lean: LeanSettings = field(default_factory=LeanSettings)
    rotation: RotationSettings = field(default_factory=RotationSettings)
    walking_axis: WalkingAxisSettings = field(default_factory=WalkingAxisSettings)
    worn: WornSettings = field(default_factory=WornSettings)

    @staticmethod
    def for_rate(rate_hz: float) -> PipelineSettings:
        """Defaults, with every stage told the sample rate."""
        stages: dict[str, Any] = {name: replace(cls(), rate_hz=rate_hz) for name, cls in (
            ("orientation", OrientationSettings), ("activity", ActivitySettings), ("axial", AxialSettings),
            ("slouch", SlouchSettings), ("lean", LeanSettings), ("rotation", RotationSettings),
            ("walking_axis", WalkingAxisSettings), ("worn", WornSettings))}
        return PipelineSettings(rate_hz=rate_hz, **stages)


@dataclass
class PipelineOutput:
    """One batch's results. Angle arrays cover the batch's calibrated, real (not gap-filled) samples.

    rotation_deg is continuous (unwrapped), as the rotation detector needs it: after a large turn (a swivel chair
    spun round) it passes ±180° until the facing direction catches up. Nothing publishes it per sample; the live
    state says it in (−180°, 180°]. After a lost link, and from a restart's first sample, it is provisional until the
    facing direction shows (the events are measured again then: pipeline/axial.py)."""

    t_s: np.ndarray
    flexion_deg: np.ndarray
    lateral_deg: np.ndarray
    rotation_deg: np.ndarray
    activity: np.ndarray
    events: list[Event] = field(default_factory=list)
    metrics: list[MinuteMetrics] = field(default_factory=list)


@dataclass
class _HeldRotations:
    """While the facing direction is unknown after a lost link or a restart (FacingBaseline.holding): the samples the
    rotation detector was fed since, with what excludes them bar the facing direction's jumps, and the excursions it
    found against the provisional facing direction."""

    t_s: list[np.ndarray] = field(default_factory=list)
    excluded: list[np.ndarray] = field(default_factory=list)  # walking or lying
    events: list[RotationExcursion] = field(default_factory=list)


def _refused(said: Said) -> list[CalibrationEvent]:
    """The calibrator's refusals said to the wearer, as events (why and what to do apart: events.asking)."""
    return [asking(t, "refused", reason, ask, joint) for t, reason, ask, joint in said]


def _empty_output() -> PipelineOutput:
    e = np.empty(0)
    return PipelineOutput(e, e, e, e, np.empty(0, dtype="<U8"))


def moves_forward(last_t_s: float, t_s: np.ndarray) -> np.ndarray:
    """Per sample: later than every sample before it (and than last_t_s)."""
    return t_s > np.maximum.accumulate(np.concatenate([[last_t_s], t_s[:-1]]))


_Samples = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]  # t_s, acc_g, gyro_dps, quat_wxyz


def _stacked(a: _Samples, b: _Samples) -> _Samples:
    return (np.concatenate([a[0], b[0]]), np.vstack([a[1], b[1]]), np.vstack([a[2], b[2]]),
            None if a[3] is None or b[3] is None else np.vstack([a[3], b[3]]))


def _sliced(x: _Samples, which: slice | np.ndarray) -> _Samples:
    return x[0][which], x[1][which], x[2][which], None if x[3] is None else np.asarray(x[3])[which]


def _copied(x: _Samples) -> _Samples:
    return x[0].copy(), x[1].copy(), x[2].copy(), None if x[3] is None else np.array(x[3])


def _joined(a: PipelineOutput, b: PipelineOutput) -> PipelineOutput:
    out = PipelineOutput(*(np.concatenate([getattr(a, k), getattr(b, k)])  # type: ignore[arg-type]  # array fields only
                           for k in ("t_s", "flexion_deg", "lateral_deg", "rotation_deg", "activity")))
    out.events, out.metrics = a.events + b.events, a.metrics + b.metrics
    return out


class PosturePipeline:
    def __init__(self, settings: PipelineSettings = PipelineSettings(), calibration: Calibration | None = None,
                 calibration_said: str = "calibration restored from the last run",
                 request: CalibrationRequest | None = None):
        """request: the moves the last run asked for with `calibration` and did not see made (`self.request`, kept
        with it): watched for again, and not asked for again (the wearer was told, or the alert service holds it)."""
        self.s = settings
        self.dt_s = 1.0 / settings.rate_hz
        self.orientation = OrientationFilter(settings.orientation)
        self.calibrator = Calibrator(settings.calibration, settings.rate_hz)
        self.monitor = CalibrationMonitor(settings.calibration, settings.rate_hz)
        self.calibration = calibration
        self.activity = ActivityClassifier(settings.activity)
        self.baseline = FacingBaseline(settings.axial)
        if calibration is not None:
            self.activity.trunk_axis(calibration.r_sensor_trunk[:, 2])
            # Measured from the first sample (a gateway restarted, its calibration restored), which may find the trunk
            # turned, as a link back may: the facing direction is held for, as after a lost link (pipeline/axial.py).
            self.baseline.reset(hold=True)
        self.slouch = SlouchDetector(settings.slouch)
        self.lean = LeanDetector(settings.lean)
        self.rotation = RotationDetector(settings.rotation)
        self._held: _HeldRotations | None = None  # rotations held while the facing direction is unknown
        self.minutes = MinuteAggregator()
        self.walking_axis = WalkingAxis(settings.walking_axis)
        self.worn = WornDetector(settings.worn)
        # Off the body since then (where its quiet stretch began, before the minute that found it); None while worn.
        self._off_since_s: float | None = None
        self._announce = calibration is not None  # a calibration restored from before (or given): say so once
        self._calibration_said = calibration_said
        # The calibration moves the monitor (or the wearer) asked for again, until they are made (_adopt).
        self.request: CalibrationRequest | None = None
        # Put back on after time off the body: whether the wearer sits or stands was not seen meanwhile (a wearer who
        # stood up, took it off and sat down again was read standing for the rest of the day).
        self._posture_unseen = False
        self._walk_index0 = 0
        # While recalibrating: the last sample read standing or walking, the last read sitting, and whether a hold read
        # standing was refused since (_not_seated).
        self._on_feet_t_s = self._seated_t_s = -np.inf
        self._standing_refused = False
        self._asked_at: int | None = None  # the sample of this batch the calibration check asked for the moves at
        self._resumed_from_s: float | None = None  # another run's last sample, until this one's first (resume_after)
        if calibration is not None and not calibration.with_bend:  # a restored provisional one: finish it
            self.calibrator.expect(calibration)
        if calibration is not None and calibration.gyro_bias_dps is not None:
            self.orientation.set_horizontal_bias_dps(calibration.gyro_bias_dps, calibration.r_sensor_trunk[:, 2])
        if calibration is not None and request is not None:
            self.request_calibration(request.forward, request.moved)
        self._last_t_s: float | None = None
        self._latest: tuple[float, float, float, str] | None = None  # the last measured real sample's angles, activity
        self._tail_t = np.empty(0)  # the last real samples (times, acc+gyro[+quaternion]), for gap filling
        self._tail_x = np.empty((0, 0))
        self._last_yaw: float | None = None
        self._added_until_s: dict[str, float] = {}
        self.gaps_filled = 0
        self.gaps_reset = 0
        self.samples_out_of_order = 0
        self.samples_not_finite = 0
        self.samples_out_of_range = 0  # past MAX_ACC_G, MAX_GYRO_DPS or MAX_T_S; no orientation; a failed read
        self.samples_spiked = 0  # lone spikes of rotation rate or acceleration (pipeline/spikes.py)
        # The last sample the spike test has seen (kept or not, not withheld): time, acc_g and gyro_dps (six values).
        self._door_last: tuple[float, np.ndarray] | None = None
        self._withheld: _Samples | None = None  # a last sample that may be a lone spike, until the next one shows
        self._lost_carried = 0  # samples lost before a batch none of whose samples went on (withheld, dropped)

    def update(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, lost_samples: int = 0,
               quat_wxyz: np.ndarray | None = None) -> PipelineOutput:
        """One batch. quat_wxyz: the sensor's orientation worked out elsewhere (VQF's offline estimate
        of a whole recording); None to run the live filter."""
        t_s = np.array(t_s, float)  # a copy: the outputs' times must not change when the caller reuses its buffer
        if t_s.shape == (0,):
            return _empty_output()
        acc_g, gyro_dps = np.asarray(acc_g, float), np.asarray(gyro_dps, float)
        _check_batch(t_s, acc_g, gyro_dps, lost_samples, quat_wxyz)
        # A sample that is not a number (a reading gone wrong) is dropped and counted: kept, one NaN made a stage's
        # running level NaN for good (sit/stand never judged again) or, in the resting levels, every sample "moving".
        finite = np.isfinite(t_s) & np.isfinite(acc_g).all(axis=1) & np.isfinite(gyro_dps).all(axis=1)
        if quat_wxyz is not None:
            finite &= np.isfinite(np.asarray(quat_wxyz, float)).all(axis=1)
        # So is one past what any IMU measures: one sample of 1e300 °/s made the orientation NaN and every batch after
        # it fail (300 of ten minutes' 600 batches raised); two of 1e20 g changed the activity of 38 % of ten minutes.
        # And one stamped past MAX_T_S (a time in ns, a corrupt cell): kept, every sample after it was "out of order"
        # and dropped; or given an orientation that is none (a zero quaternion made every batch after it raise); and
        # a failed read (plausible).
        in_range = plausible(t_s, acc_g, gyro_dps)
        if quat_wxyz is not None:
            norm = np.linalg.norm(np.asarray(quat_wxyz, float), axis=1)  # (row_norm is for three columns)
            in_range &= (norm > 0.5) & (norm < 2.0)  # (VQF's are unit quaternions)
        if not (finite & in_range).all():
            self.samples_not_finite += int((~finite).sum())
            self.samples_out_of_range += int((finite & ~in_range).sum())
            finite &= in_range
            t_s, acc_g, gyro_dps = t_s[finite], acc_g[finite], gyro_dps[finite]
            quat_wxyz = None if quat_wxyz is None else np.asarray(quat_wxyz)[finite]
            if len(t_s) == 0:
                self._lost_carried += lost_samples  # (the next batch's minute counts them: they were lost)
                return _empty_output()
        # Time must go forward: a sample at or before the last one (a clock that stepped back) is dropped.
        newest_s = self._last_t_s if self._withheld is None else float(self._withheld[0][0])
        if not (newest_s is None or t_s[0] > newest_s) or not (t_s[1:] > t_s[:-1]).all():
            ahead = moves_forward(-np.inf if newest_s is None else newest_s, t_s)
            self.samples_out_of_order += int((~ahead).sum())
            t_s, acc_g, gyro_dps = t_s[ahead], np.asarray(acc_g)[ahead], np.asarray(gyro_dps)[ahead]
            quat_wxyz = None if quat_wxyz is None else np.asarray(quat_wxyz)[ahead]
            if len(t_s) == 0:
                self._lost_carried += lost_samples
                return _empty_output()
        out, (t_s, acc_g, gyro_dps, quat_wxyz) = self._without_spikes(t_s, acc_g, gyro_dps, quat_wxyz)
        lost_samples, self._lost_carried = lost_samples + self._lost_carried, 0
        if not len(t_s):  # (the batch was one sample, withheld: its lost samples go with the next)
            self._lost_carried = lost_samples
            return _empty_output() if out is None else out
        admitted = self._admitted(t_s, acc_g, gyro_dps, lost_samples, quat_wxyz)
        return admitted if out is None else _joined(out, admitted)

    def _without_spikes(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, quat_wxyz: np.ndarray | None
                        ) -> tuple[PipelineOutput | None, _Samples]:
        """The batch without its lone spikes (pipeline/spikes.py), counted; the sample withheld from
        the batch before comes first, and a last sample that may be one is withheld until the next sample shows. And
        what the withheld sample gave when it had to go on its own (None: nothing)."""
        out = None
        batch: _Samples = (t_s, np.asarray(acc_g), np.asarray(gyro_dps), quat_wxyz)
        withheld, self._withheld = self._withheld, None
        if withheld is not None and (withheld[3] is None) == (quat_wxyz is None):
            batch = _stacked(withheld, batch)
        elif withheld is not None:  # (an orientation given to one and not the other: the withheld goes on its own)
            out = self._admit_withheld(withheld)
        t_s, x = batch[0], np.hstack([batch[1], batch[2]])  # acc_g, gyro_dps: six columns
        before = self._door_last
        seen = x if before is None else np.vstack([before[1], x])  # with the sample before, as lone_spikes judges
        if no_spike_possible(seen, self.dt_s):  # the usual batch
            self._door_last = (float(t_s[-1]), x[-1].copy())
            return out, batch
        seen_t = t_s if before is None else np.concatenate([[before[0]], t_s])
        spike = lone_spikes(seen_t, seen[:, :3], seen[:, 3:], self.dt_s)[len(seen) - len(x):]
        keep = ~spike
        last_before = (float(t_s[-2]), x[-2]) if len(t_s) > 1 else before
        # The next batch's first sample is judged against the sample before it as given (a spike or not), as
        # lone_spikes judges a whole stream: against the last one kept, the judgement depended on the batching.
        if last_before is not None and may_be_spike(last_before[0], last_before[1], float(t_s[-1]), x[-1], self.dt_s):
            self._withheld = _copied(_sliced(batch, slice(len(t_s) - 1, len(t_s))))  # (not the caller's buffer)
            keep[-1] = False
            door_last = last_before
        else:
            door_last = (float(t_s[-1]), x[-1])
        self._door_last = (door_last[0], np.array(door_last[1], copy=True))
        self.samples_spiked += int(spike.sum())
        if not keep.all():
            batch = _sliced(batch, keep)
        return out, batch

    def _admit_withheld(self, withheld: _Samples) -> PipelineOutput:
        """A withheld sample let through unjudged, with the loss carried to it; the next is judged against it."""
        out = self._admitted(*withheld[:3], self._lost_carried, withheld[3])
        self._lost_carried = 0
        self._door_last = (float(withheld[0][0]), np.concatenate([withheld[1][0], withheld[2][0]]))
        return out

    def _admitted(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, lost_samples: int,
                  quat_wxyz: np.ndarray | None) -> PipelineOutput:
        """Samples past the door: numbers, plausible, in time order, no lone spike."""
        step_s = t_s[1:] - t_s[:-1]
        # A lost link inside the batch: what came before it is measured before the gap is handled. The samples the
        # times show missing were lost where they are missing (the batch's loss counted in the minute of its first
        # sample was, after a gap past a minute's end, in the minute before): the loss no step shows was before the
        # batch, and goes with the part before the link with that part's own; the rest goes on with the link's, and
        # each later gap's, in time order (counted in one part, a second link's loss was at the batch's first sample).
        if len(step_s) and step_s.max() > self.s.max_fill_s:
            k = int(np.argmax(step_s > self.s.max_fill_s)) + 1
            missing = np.maximum(0, np.rint(step_s / self.dt_s) - 1)
            before = max(0, lost_samples - int(missing.sum()))
            in_first = before + min(lost_samples - before, int(missing[:k - 1].sum()))
            first = self._admitted(t_s[:k], acc_g[:k], gyro_dps[:k], in_first,
                                   None if quat_wxyz is None else quat_wxyz[:k])
            return _joined(first, self._admitted(t_s[k:], acc_g[k:], gyro_dps[k:], lost_samples - in_first,
                                                 None if quat_wxyz is None else quat_wxyz[k:]))
        acc_g, gyro_dps = np.asarray(acc_g), np.asarray(gyro_dps)
        worn = self.worn.update(t_s, gyro_dps)
        if self._off_since_s is None and worn.all():  # the usual batch
            return self._worn(t_s, step_s, acc_g, gyro_dps, lost_samples, quat_wxyz)
        out = _empty_output()
        put_down_s = self.worn.put_down_at_s
        edges = np.flatnonzero(worn[1:] != worn[:-1]) + 1
        for lo, hi in zip([0, *edges.tolist()], [*edges.tolist(), len(t_s)], strict=True):
            if not worn[lo]:
                self._off_body(t_s[lo:hi], float(put_down_s[lo]), out)
                continue
            if self._off_since_s is not None:
                self._back_on(float(t_s[lo]), out)
            run = self._worn(t_s[lo:hi], t_s[lo + 1:hi] - t_s[lo:hi - 1], acc_g[lo:hi], gyro_dps[lo:hi],
                             lost_samples if lo == 0 else 0, None if quat_wxyz is None else quat_wxyz[lo:hi])
            out = _joined(out, run)
        return out

    def _worn(self, t_s: np.ndarray, step_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, lost_samples: int,
              quat_wxyz: np.ndarray | None) -> PipelineOutput:
        """Samples of a sensor on the body, in time order, with no long gap."""
        columns = [np.asarray(acc_g, float), np.asarray(gyro_dps, float)]
        if quat_wxyz is not None:
            columns.append(np.asarray(quat_wxyz, float))
        if self._no_gap(t_s, step_s, columns):  # the usual batch: nothing to fill, nothing to rearrange
            acc_g, gyro_dps, real, unseen_s = columns[0], columns[1], None, 0.0
            quat_given = columns[-1] if quat_wxyz is not None else None
        else:
            t_s, x, real_mask, unseen_s = self._bridge_gaps(t_s, np.hstack(columns))
            acc_g, gyro_dps, real = x[:, :3], x[:, 3:6], real_mask
            quat_given = x[:, 6:] if quat_wxyz is not None else None
        out = _empty_output()
        if unseen_s:
            self._after_long_gap(out, unseen_s)
        away_s = unseen_s
        if self._resumed_from_s is not None:  # this run's first samples: unseen since the last run's last one
            away_s, self._resumed_from_s = float(t_s[0]) - self._resumed_from_s, None
        if self._announce:
            self._announce = False
            assert self.calibration is not None  # _announce is set only with a calibration
            out.events.append(CalibrationEvent(float(t_s[0]), "calibrated", self._calibration_said,
                                               self.calibration.with_bend, self.calibration.taken_s,
                                               request_pending=self._recalibrate))
        if away_s >= self.s.calibration.away_recalibrate_s:  # watched from here, as for a sensor picked up (_back_on)
            self._put_on_again(float(t_s[0]), f"no data for {away_s / 3600:.0f} h", out)
        self._walk_index0 = self.activity.samples_walked
        walking = self.activity.walking(row_norm(acc_g))
        before = self.orientation.snapshot() if self.armed and quat_wxyz is None else None
        if quat_given is None:
            quat, bias_dps = self.orientation.update_with_bias(gyro_dps, acc_g)
        else:
            quat = quat_given / np.linalg.norm(quat_given, axis=1, keepdims=True)  # interpolated ones renormalised
            bias_dps = np.broadcast_to(self.orientation.bias_dps(), gyro_dps.shape)  # not filtered: as last set
        att = SensorAttitude.of(quat)
        acc_vertical = vertical(att.row2, acc_g)
        cal, start, watching = None, len(t_s), self.armed
        if watching:
            cal, start, refusals = self.calibrator.update(t_s, acc_g, gyro_dps, att.row2, bias_dps)
            out.events += _refused(refusals)
        parts, k = [], 0
        adopted: list[tuple[int, Calibration]] = []  # in this batch, from which sample
        lost = lost_samples  # the minutes count them with the first part that has a real (not gap-filled) sample
        turn_rad = self._turn_rad(gyro_dps, bias_dps)
        while True:
            if self.calibration is not None:  # the current calibration measures up to where a new one applies
                parts.append(self._measure(slice(k, start), t_s, acc_g, turn_rad, walking, att, acc_vertical, real,
                                           lost, out))
                lost = lost if len(parts[-1].t_s) == 0 else 0
                if cal is not None and (not self.armed or self._asked_at is not None):
                    # The calibrator ran ahead of what the measuring changed before `start`: walking corrected a
                    # provisional calibration's forward (finished, it watches no more) or a check asked for the moves
                    # (restarted, it watches from the next sample, below). Batches cut there never found this one (a
                    # replay's 200 s chunks took a bend made after a walking correction that seconds ignored).
                    cal, k, start = None, start, len(t_s)
                    continue
            elif start > k:
                lost = 0  # no minutes before the first calibration
                # No angles before the first calibration, but sitting and standing need none (lying does): followed
                # from the first sample, a wearer who stands up as a calibration is adopted (a sit-to-stand's trunk
                # bend can be the bend that completes it) is seen standing up, where the classifier once began
                # mid-movement.
                self.activity.codes(walking[k:start], acc_vertical[k:start], np.zeros(start - k, bool),
                                    self._walk_index0 + k, att.row2[k:start], acc_g[k:start], turn_rad[k:start])
            if cal is None:
                break
            cal_t_s = float(t_s[start - 1] if start else t_s[0])
            k = start
            if (found := self._refused_if_not_seated(cal_t_s, t_s, acc_g, gyro_dps, att.row2, k, out)) is not None:
                cal, start = found
                continue
            self._adopt(cal, cal_t_s, out)
            adopted.append((k, cal))
            cal, start = None, len(t_s)
            if k == len(t_s):
                continue
            if before is not None:
                quat, bias_dps = self._filter_again(before, adopted, gyro_dps, acc_g, quat, bias_dps)
                att = SensorAttitude.of(quat)
                acc_vertical = vertical(att.row2, acc_g)
            elif quat_given is not None:  # not filtered: the bias as the calibration just set it (_adopt), from k
                bias_dps = np.concatenate([bias_dps[:k], np.broadcast_to(self.orientation.bias_dps(),
                                                                         (len(t_s) - k, 3))])
            turn_rad = self._turn_rad(gyro_dps, bias_dps)  # with the bias the samples from k now have
            if self.armed:  # a provisional calibration: the moves that finish it may follow in this batch
                if watching:  # judged still with the bias the samples from k have now, as a batch cut at k would
                    self.calibrator.rebias(acc_g, gyro_dps, bias_dps)
                cal, start, refusals = self.calibrator.resume(t_s, acc_g, gyro_dps, att.row2, k)
                out.events += _refused(refusals)
        # Asked for the moves inside this batch: the calibrator, restarted by the request, watches from the next sample
        # (it has seen the batch's stillness if it was watching already). Not if a calibration was taken since.
        if self._asked_at is not None and self.armed and self._asked_at + 1 < len(t_s):
            self._watch_from(self._asked_at + 1, t_s, acc_g, gyro_dps, att, bias_dps, out, fresh=not watching)
        self._asked_at = None
        if len(parts) == 1:  # the usual batch: one calibration throughout
            out.t_s, out.flexion_deg, out.lateral_deg = parts[0].t_s, parts[0].flexion_deg, parts[0].lateral_deg
            out.rotation_deg, out.activity = parts[0].rotation_deg, parts[0].activity
        elif parts:
            for name in ("t_s", "flexion_deg", "lateral_deg", "rotation_deg", "activity"):
                setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
        return out

    def _watch_from(self, k: int, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, att: SensorAttitude,
                    bias_dps: np.ndarray, out: PipelineOutput, fresh: bool) -> None:
        """Asked for the calibration moves at sample k − 1 of this batch: the calibrator watches from sample k, as with
        the batch cut there (a replay's 200 s batches missed moves made soon after the request). A calibration it finds
        here is said and taken at its sample, and measures from the next batch: the samples after it in this one were
        measured with the old calibration already. fresh: the calibrator has not seen this batch (else it has, up to
        a calibration it returned, and goes on from k)."""
        up = att.row2
        if fresh:
            t_s, acc_g, gyro_dps, up, bias_dps, k = t_s[k:], acc_g[k:], gyro_dps[k:], up[k:], bias_dps[k:], 0
            cal, start, refusals = self.calibrator.update(t_s, acc_g, gyro_dps, up, bias_dps)
        else:
            cal, start, refusals = self.calibrator.resume(t_s, acc_g, gyro_dps, up, k)
        out.events += _refused(refusals)
        while cal is not None:
            cal_t_s = float(t_s[start - 1] if start else t_s[0])
            if (found := self._refused_if_not_seated(cal_t_s, t_s, acc_g, gyro_dps, up, start, out)) is None:
                self._adopt(cal, cal_t_s, out)
                return
            cal, start = found

    def _refused_if_not_seated(self, cal_t_s: float, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray,
                               up: np.ndarray, k: int, out: PipelineOutput) -> tuple[Calibration | None, int] | None:
        """None if the calibration the calibrator just returned (at cal_t_s, ending before sample k) may be taken;
        else it is refused, for the activity up to its sample (known now, however the stream is batched) says the
        moves were not made seated, and the calibrator goes on from k: what it finds next, and where."""
        if not self._posture_known or (why := self._not_seated(cal_t_s)) is None:
            return None
        said = self.calibrator.not_seated(cal_t_s, *why)
        cal, start, refusals = self.calibrator.resume(t_s, acc_g, gyro_dps, up, k)
        out.events += _refused(said + refusals)
        return cal, start

    def _filter_again(self, before: dict[str, Any], adopted: list[tuple[int, Calibration]], gyro_dps: np.ndarray,
                      acc_g: np.ndarray, quat: np.ndarray, bias_dps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The orientation (and the gyro bias per sample) again from the batch's start, each calibration's gyro bias
        from the sample it was adopted at, not from the next batch (so batching does not change the result)."""
        self.orientation.restore(before)
        quat, bias_dps, k = quat.copy(), bias_dps.copy(), 0
        for start, cal in adopted:
            quat[k:start], bias_dps[k:start] = self.orientation.update_with_bias(gyro_dps[k:start], acc_g[k:start])
            if cal.gyro_bias_dps is not None:
                self.orientation.set_horizontal_bias_dps(cal.gyro_bias_dps, cal.r_sensor_trunk[:, 2])
            k = start
        quat[k:], bias_dps[k:] = self.orientation.update_with_bias(gyro_dps[k:], acc_g[k:])
        return quat, bias_dps

    @property
    def last_t_s(self) -> float | None:
        """The time of the last sample processed (None before any)."""
        return self._last_t_s

    @property
    def samples_discarded(self) -> int:
        """Samples dropped at the door: out of time order, not numbers, not plausible, or lone spikes (spikes.py). The
        gateway's status sends it: dropped unsaid, a sensor whose reads failed for a while showed less worn time, and
        no counter said why."""
        return self.samples_out_of_order + self.samples_not_finite + self.samples_out_of_range + self.samples_spiked

    @property
    def off_since_s(self) -> float | None:
        """Where the sensor was put down, while it is off the body (None while worn)."""
        return self._off_since_s

    def resume_off(self, put_down_s: float) -> None:
        """Go on from another run that ended with the sensor off the body: off until it is picked up, as within one
        run. Started afresh, a restarted gateway counted the sensor on the desk as worn for off_after_s (a minute of
        phantom wear, lying or sitting, at every restart while it lay there)."""
        self.worn.resume_off(put_down_s)
        self._off_since_s = put_down_s

    def resume_after(self, last_t_s: float) -> None:
        """Go on from another run whose last sample was at last_t_s (a restarted gateway's): the time unseen up to
        this run's first sample asks for the calibration moves as a lost link of that length within one run does
        (CalibrationSettings.away_recalibrate_s). Restored with its calibration, a gateway down for a night measured
        the new day with yesterday's, the sensor clipped on again elsewhere, and nothing said so."""
        self._resumed_from_s = last_t_s

    def activity_state(self) -> ActivityState | None:
        """The activity classifier's state as of the last sample, for a restarted gateway's pipeline to go on from
        (`self.activity.go_on`); None before any sample and while the sensor is off the body (picked up, it is
        unseen as after a gap)."""
        if self._last_t_s is None or self._off_since_s is not None:
            return None
        return self.activity.state()

    def gyro_bias(self) -> GyroBias | None:
        """The orientation filter's gyro bias estimate as of the last sample, for a restarted gateway's pipeline to go
        on from (`self.orientation.go_on`); None before any sample."""
        return None if self._last_t_s is None else self.orientation.bias()

    @property
    def _posture_known(self) -> bool:
        """Whether sitting and standing are known: not before a calibration, nor under an unchecked (provisional) one,
        whose lying may be wrong (getting up from bed reads as a rise), nor after time off the body, when the wearer
        may have sat down or stood up unseen. (A calibration's hold, done sitting, then says it.)"""
        return self.calibration is not None and self.calibration.with_bend and not self._posture_unseen

    @property
    def _recalibrate(self) -> bool:
        """The moves were asked for again (a calibration in use found off, too old, or the sensor put on again)."""
        return self.request is not None

    @property
    def armed(self) -> bool:
        """Watching for the calibration moves: never calibrated, provisional (no bend), or told to redo it."""
        return self.calibration is None or not self.calibration.with_bend or self._recalibrate

    def live_state(self) -> LiveState | None:
        """What the wearer is doing as of the last sample processed (None before any): its angles and activity
        (None until calibrated), the slouch and lean its dwell has confirmed and still going on (an
        EpisodeStart was sent for each, its end not yet), the sitting stretch."""
        if self._last_t_s is None:
            return None
        t_s = self._last_t_s
        calibration = ("uncalibrated" if self.calibration is None else "recalibrate" if self._recalibrate
                       else "provisional" if not self.calibration.with_bend else "calibrated")
        if self._off_since_s is not None:
            return LiveState(t_s, calibration, activity=NOT_WORN)
        if self.calibration is None or self._latest is None:
            return LiveState(t_s, calibration)
        flexion, lateral, rotation, activity = self._latest
        # The per-sample rotation is unwrapped (continuous for the rotation detector) and may pass ±180° until the
        # facing direction catches up with a large turn: an angle, it is said in (−180°, 180°].
        rotation = wrapped_deg(rotation)
        now_s = t_s + self.dt_s  # just after the last sample, as the minutes count it
        slouching, leaning = self.slouch.in_progress(now_s), self.lean.in_progress(now_s)
        return LiveState(t_s, calibration, flexion, lateral, rotation, activity,
                         slouching_since_s=None if slouching is None else slouching.start_s,
                         leaning_since_s=None if leaning is None else leaning.start_s,
                         lean_side=None if leaning is None else leaning.side,
                         sitting_since_s=self.minutes.sitting_since_s)

    def request_calibration(self, forward: Calibration | None = None, moved: bool = False) -> None:
        """A check found the calibration off and told the wearer to redo it: watch for the moves.

        Only the full moves count then (a hold and a forward bend of 15° or more, within 60° of
        forward as the current calibration has it, or `forward`'s, the walking that found it off):
        everyday movement must not replace a calibration. A provisional calibration's sign is the
        mount's guess (face out), and a face-in one's came from the wearer's answer (two bends that went
        backwards from that guess), which two leans back also give: flagged, either sign is in doubt
        again, and a bend straight back from it may be confirmed as forward, as at a first calibration.
        moved: the sensor was moved or turned on the back, so the calibration's forward may be wrong too (turned
        over, it is reversed): the bend is judged as at a first calibration, against the mount's forward.
        """
        self.request = CalibrationRequest(forward, moved)
        self._standing_refused = False
        self.calibrator.restart()
        if self.calibration is not None:
            self.calibrator.expect(None if moved else forward or self.calibration,
                                   sign_in_doubt=moved or self.calibration.face_in or self.calibration.bend_deg == 0.0)

    def _adopt(self, cal: Calibration, t_s: float, out: PipelineOutput, how: str | None = None) -> None:
        again = self.calibration is not None
        if how is None:  # the wearer's moves: a calibration made now (a correction from walking keeps its time)
            cal = replace(cal, taken_s=t_s)
        if how is None and not self._posture_known:
            self.activity.seated()
            self._posture_unseen = False
        if again:  # what was open was measured in the old frame: end it there
            self._close_episodes(out)
            self.baseline.reset()
            self._last_yaw = None
        self.calibration = cal
        self.activity.trunk_axis(cal.r_sensor_trunk[:, 2])
        self.request = None
        self.calibrator.expect(cal)
        self.monitor = CalibrationMonitor(self.s.calibration, self.s.rate_hz)
        self.walking_axis.reset()
        if how is None:  # a new hold: its gyro bias about horizontal axes is fresh (a refinement keeps VQF's)
            if cal.gyro_bias_dps is not None:
                self.orientation.set_horizontal_bias_dps(cal.gyro_bias_dps, cal.r_sensor_trunk[:, 2])
            how = (f"with a {cal.bend_deg:.0f}° forward bend{' (the sensor is worn face-in)' if cal.face_in else ''}"
                   if cal.with_bend else
                   "from the upright hold only, so forward is assumed from how the sensor sits: bend forward once "
                   "(15° or more) and sit up to finish")
        out.events.append(CalibrationEvent(t_s, "calibrated", f"{'re' if again else ''}calibrated {how}",
                                           cal.with_bend, cal.taken_s))

    def _turn_rad(self, gyro_dps: np.ndarray, bias_dps: np.ndarray) -> np.ndarray:
        """The sensor's turn to each sample from the one before (n × 3, rad, its own axes), the bias taken off."""
        turn_rad: np.ndarray = (gyro_dps - bias_dps) * RAD_PER_DEG * self.dt_s
        return turn_rad

    def _measure(self, sl: slice, t_s: np.ndarray, acc_g: np.ndarray, turn_rad: np.ndarray, steps: np.ndarray,
                 att: SensorAttitude,
                 acc_vertical: np.ndarray, real: np.ndarray | None, lost_samples: int,
                 out: PipelineOutput) -> PipelineOutput:
        """Angles, activity, detectors and minutes for the samples in sl; events go to out. steps: walking found
        from |acc| alone (ActivityClassifier.walking); real: which samples are real (not gap-filled), None when
        all are."""
        if sl.start or (sl.stop is not None and sl.stop < len(t_s)):  # part of the batch (a calibration inside)
            t_s, acc_g, steps, att, acc_vertical = t_s[sl], acc_g[sl], steps[sl], att[sl], acc_vertical[sl]
            turn_rad = turn_rad[sl]
            real = None if real is None else real[sl]
        if len(t_s) == 0:
            return _empty_output()
        assert self.calibration is not None  # measured only with a calibration (update, _adopt)
        n, first = len(t_s), sl.start or 0
        angles = trunk_angles_of(att, self.calibration.r_sensor_trunk)
        tilted = tilted_beyond(angles.up_z, self.s.activity.lying_tilt_deg)
        # For all of them at once: a correction from walking (below) turns the trunk frame about its long axis,
        # which leaves the tilt and the vertical, all that activity looks at, as they were.
        activity = self.activity.codes(steps, acc_vertical, tilted, self._walk_index0 + first, att.row2, acc_g,
                                       turn_rad)
        walking = activity == WALKING_CODE
        ap_ml_g = horizontal_acc_in_heading(att, angles, acc_g)
        parts, k = [], 0
        while True:
            # What walking says of forward acts from the sample after the one it was known at, however the stream is
            # batched: the samples up to it are measured first (judged once a batch, a replay's 200 s chunks measured
            # up to 200 s of walking more in a frame found off).
            found = self._walking_forward(ap_ml_g, walking, k)
            stop = n if found is None else found[0] + 1
            parts.append(self._stages(slice(k, stop), t_s, angles, activity, walking, steps, real, lost_samples, first,
                                      out))
            lost_samples = lost_samples if len(parts[-1].t_s) == 0 else 0  # counted with the first real sample
            turned = False
            if found is not None and not self._recalibrate:
                turned = self._walking_acts(*found, t_s, first, out)
            elif found is not None and self._asked_at == first + found[0] and not self.monitor.moved:
                # The check asked for the moves at the very sample walking found forward off (both take 20 s of
                # walking, and a forward far off reads as walking bent sideways): the bend is then judged against
                # walking's forward, not the one found off (90° off, every true forward bend was refused).
                assert self.calibration is not None
                self.request_calibration(self.calibration.turned(found[1]))
            # (Asked for before that sample, no correction: it would hide the request.)
            if stop == n:
                break
            if turned:  # the rest in the corrected frame
                assert self.calibration is not None
                new = trunk_angles_of(att[stop:], self.calibration.r_sensor_trunk)
                for name in ("flexion_deg", "lateral_deg", "yaw_right_deg", "forward_x", "forward_y"):
                    getattr(angles, name)[stop:] = getattr(new, name)
                ap_ml_g[:, stop:] = horizontal_acc_in_heading(att[stop:], new, acc_g[stop:])
            k = stop
        if len(parts) == 1:
            return parts[0]
        part = _empty_output()
        for name in ("t_s", "flexion_deg", "lateral_deg", "rotation_deg", "activity"):
            setattr(part, name, np.concatenate([getattr(p, name) for p in parts]))
        return part

    def _stages(self, sl: slice, t_s: np.ndarray, angles: TrunkAngles, activity: np.ndarray, walking: np.ndarray,
                steps: np.ndarray, real: np.ndarray | None, lost_samples: int, first: int,
                out: PipelineOutput) -> PipelineOutput:
        """Rotation, the calibration check, detectors and minutes for the samples sl of a _measure's part (from
        sample `first` of the batch), with its angles and activity."""
        flexion, lateral, yaw = angles.flexion_deg, angles.lateral_deg, angles.yaw_right_deg
        if sl.start or sl.stop < len(t_s):
            t_s, activity, walking, steps = t_s[sl], activity[sl], walking[sl], steps[sl]
            flexion, lateral, yaw = flexion[sl], lateral[sl], yaw[sl]
            real = None if real is None else real[sl]
        part = _empty_output()
        yaw_right = unwrap_from(self._last_yaw, yaw)
        self._last_yaw = float(yaw_right[-1])
        lying, sitting = activity == LYING_CODE, activity == SITTING_CODE
        rotation, jumped = self.baseline.update(yaw_right, walking)
        upright_context = ~(walking | lying)
        flagged = self.monitor.update(flexion, lateral, walking, sitting, steps, lying)
        # The age asks first if it comes first (the monitor asks again after it, as it would from a later batch); after
        # the monitor's request it asks nothing, the moves being asked for already.
        if (due := self._asks_at_age(t_s, sitting)) is not None and (flagged is None or due < flagged[0]):
            assert self.calibration is not None and self.calibration.taken_s is not None  # (_asks_at_age)
            age_h = (float(t_s[due]) - self.calibration.taken_s) / 3600
            out.events.append(asking(float(t_s[due]), "recalibrate", f"the calibration is {age_h:.0f} h old",
                                     self.s.calibration.instructions, "; "))
            self.request_calibration()
            self._asked_at = first + sl.start + due
        if flagged is not None:
            out.events.append(asking(float(t_s[flagged[0]]), "recalibrate", flagged[1], self.s.calibration.instructions,
                                     "; then "))
            self.request_calibration(moved=self.monitor.moved)
            self._asked_at = first + sl.start + flagged[0]
        if self._recalibrate:  # looking for a calibration where sitting and standing are known: see _worn
            self._follow_feet(t_s, ~(sitting | lying), sitting)
        slouches, leans, rotations = feed_together(t_s, self.slouch, flexion, upright_context, self.lean, lateral,
                                                   sitting, self.rotation, rotation, walking | lying | jumped)
        if self.baseline.holding or self.baseline.found is not None:  # after a lost link or a restart
            rotations = self._hold_rotations(t_s, rotation, walking | lying, jumped, rotations)
            if self.baseline.found is not None and self.baseline.found.shown_deg is not None:
                rotation = self.baseline.found.shown_deg  # provisional up to where the hold ended, as in any batching
        # A start goes before its own end (same start_s) when both fall in one batch: starts first, stable sort.
        events: list[Event] = [*self.slouch.starts, *self.lean.starts, *slouches, *leans, *rotations]
        if events:
            out.events += sorted(events, key=attrgetter("start_s"))
        shown = activity
        if real is None:
            part.t_s, part.flexion_deg, part.lateral_deg, part.rotation_deg = t_s, flexion, lateral, rotation
        else:
            part.t_s, part.flexion_deg, part.lateral_deg = t_s[real], flexion[real], lateral[real]
            part.rotation_deg, shown = rotation[real], activity[real]
        if len(part.t_s):
            self._latest = (float(part.flexion_deg[-1]), float(part.lateral_deg[-1]), float(part.rotation_deg[-1]),
                            ACTIVITIES[shown[-1]])
        now_s = float(t_s[-1]) + self.dt_s
        # The minutes count the samples a lost packet took (bridged, gaps up to max_fill_s) as the time they were: the
        # sensor was worn and the wearer sitting then, and the slouch and lean seconds, spans of time, include them.
        # Counted as received samples only, a 3 % loss took 3 % off every minute's worn and sitting seconds, and a
        # slouched minute read 60 s of slouch in 58 s worn.
        part.metrics = self._account(now_s, t_s, flexion, lateral, activity, slouches, leans, rotations,
                                     float(part.t_s[0]) if len(part.t_s) else None, lost_samples,
                                     None if real is None else t_s[~real])
        # Names go out; inside, small integer codes. np.take: a third of the time of indexing with the codes.
        part.activity = np.take(ACTIVITY_NAMES, shown)
        out.metrics += part.metrics
        return part

    def _hold_rotations(self, t_s: np.ndarray, rotation_deg: np.ndarray, walking_or_lying: np.ndarray,
                        jumped: np.ndarray, found: list[RotationExcursion]) -> list[RotationExcursion]:
        """After a lost link, until the facing direction shows (pipeline/axial.py): the rotations found against the
        provisional one are held, and the minutes they may land in wait; then they go out as found, or those found
        by measuring the held samples again against the facing direction shown (a trunk still turned when the link
        came back took for facing forward, read the way back as a rotation to the other side)."""
        held = self._held
        if held is None:
            held = self._held = _HeldRotations()
            self.minutes.wait_from(float(t_s[0]))
        ended = self.baseline.found
        if ended is None:
            held.t_s.append(t_s)
            held.excluded.append(walking_or_lying)
            held.events += found
            return []
        self._held = None
        self.minutes.wait_from(None)
        if ended.rotation_deg is None:  # the provisional measure stands
            return held.events + found
        assert ended.jumped is not None  # set with rotation_deg
        # A detector afresh, as after the gap, fed the held samples and these, measured from the facing direction found.
        self.rotation = RotationDetector(self.s.rotation)
        excluded = np.concatenate([*held.excluded, walking_or_lying]) | np.concatenate([ended.jumped, jumped])
        measured = np.concatenate([ended.rotation_deg, rotation_deg])
        return self.rotation.update(np.concatenate([*held.t_s, t_s]), measured, excluded)

    def _asks_at_age(self, t_s: np.ndarray, sitting: np.ndarray) -> int | None:
        """The first of these samples, read sitting, at which the calibration the wearer made has reached max_age_s
        (CalibrationSettings), unless the moves are asked for already; None if none is. Sitting: the moves are made
        seated (_not_seated), and a wearer lying asleep, asked, has their turning over refused all night."""
        cal, max_age_s = self.calibration, self.s.calibration.max_age_s
        if (self._recalibrate or not max_age_s or cal is None or cal.taken_s is None
                or t_s[-1] - cal.taken_s < max_age_s):
            return None
        due = np.flatnonzero(sitting & (t_s - cal.taken_s >= max_age_s))
        return int(due[0]) if len(due) else None

    def _follow_feet(self, t_s: np.ndarray, on_feet: np.ndarray, sitting: np.ndarray) -> None:
        """When the wearer was last read standing or walking, and last read sitting (for _not_seated)."""
        if on_feet.any():
            self._on_feet_t_s = float(t_s[np.flatnonzero(on_feet)[-1]])
        if sitting.any():
            self._seated_t_s = float(t_s[np.flatnonzero(sitting)[-1]])
            self._standing_refused = False

    def _not_seated(self, t_s: float) -> tuple[str, bool] | None:
        """Why the recalibration just found (at t_s, the activity's last sample) is no seated moves, and whether to say
        so even soon after another line; None when it is. The activity up to t_s is known here, however the stream is
        batched.

        - The bend was the wearer sitting down (or standing up): standing still passed for the hold, the sit-down's
          trunk bend for the bend and sitting upright for the return. So when read both sitting and standing (or
          walking) since the hold's end (the sit-down or stand-up judged), or when the movement under way since before
          the sit-up, judged now as if it ended here, is a fall of stand_rise_m (`falling_now`). Refused, said as
          other refusals are: the wearer was not calibrating.
        - Read standing through the hold, with no fall: the moves were done standing (a bend to pick something up
          looks like them), or seated after a sit-down the classifier missed. Refused once, said, until read sitting
          again: a seated wearer read standing does them again, and is taken (refused every time, such a wearer
          could never recalibrate)."""
        hold_end_t_s = self.calibrator.hold_end_t_s
        stood = self._on_feet_t_s >= hold_end_t_s
        if (stood and self._seated_t_s >= hold_end_t_s
                or self.activity.falling_now(round((t_s - self.calibrator.returned_t_s) / self.dt_s))):
            return "that was sitting down or standing up, not the calibration bend", False
        if stood and not self._standing_refused:
            self._standing_refused = True
            return "read standing during the upright hold (already sitting? then do the moves once more)", True
        return None

    def _walking_forward(self, ap_ml_g: np.ndarray, walking: np.ndarray, k: int) -> tuple[int, float] | None:
        """Walking shows where forward is (a sideways calibration bend, no bend at all, a sensor turned on the back put
        the sagittal plane off): from sample k of a _measure's part, the first sample at which walking has shown
        forward off by more than refine_deg, and by how much (+ to the left). Walking that confirms the calibration
        is let go and the walking after it looked at afresh. While the wearer is asked to recalibrate it is only
        filtered (the band-pass carries state)."""
        while k < len(walking):
            azimuth = self.walking_axis.update(ap_ml_g[:, k:], np.zeros(len(walking) - k, bool)
                                               if self._recalibrate else walking[k:])
            if azimuth is None:
                return None
            k += self.walking_axis.decided_at
            if abs(azimuth) > self.s.walking_axis.refine_deg:
                return k, azimuth
            self.walking_axis.reset()  # confirmed; keep checking with fresh walking
            k += 1
        return None

    def _walking_acts(self, j: int, azimuth: float, t_s: np.ndarray, first: int, out: PipelineOutput) -> bool:
        """Walking found forward `azimuth` off at sample j of a _measure's part (sample first + j of the batch):
        correct the calibration by it (True) or, if no calibration could mean that forward, ask for the moves."""
        assert self.calibration is not None  # called from _measure
        at_s = float(t_s[j])
        if abs(azimuth) > self.s.calibration.bend_direction_deg:
            out.events.append(asking(at_s, "recalibrate", f"walking goes {azimuth:+.0f}° off the calibrated forward",
                                     self.s.calibration.instructions, "; "))
            self.request_calibration(self.calibration.turned(azimuth))
            self._asked_at = first + j
            self.walking_axis.reset()
            return False
        self._adopt(self.calibration.turned(azimuth), at_s, out,
                    how=f"forward direction corrected by {azimuth:+.0f}° from walking")
        return True

    def _account(self, now_s: float, t_s: np.ndarray, flexion_deg: np.ndarray, lateral_deg: np.ndarray,
                 activity: np.ndarray, slouches: list[SlouchEpisode], leans: list[LeanInterval],
                 rotations: list[RotationExcursion], first_real_s: float | None,
                 lost_samples: int, bridged_t_s: np.ndarray | None) -> list[MinuteMetrics]:
        """The minutes ready by now_s, with these samples (bridged ones too, at bridged_t_s) and episodes in."""
        m = self.minutes
        m.add_samples(t_s, flexion_deg, lateral_deg, activity, self.dt_s)
        if first_real_s is not None:
            self._count_lost(first_real_s, lost_samples, bridged_t_s)
        for e in rotations:
            m.add_rotation(e)
        # Slouch and lean time counts once confirmed by the dwell, from where it started.
        for slouch in slouches:
            self._add_confirmed("slouch", slouch.start_s, slouch.end_s)
        for lean in leans:
            self._add_confirmed(f"lean_{lean.side}", lean.start_s, lean.end_s, lean.mean_lateral_deg)
        if (slouching := self.slouch.in_progress(now_s)) is not None:
            self._add_confirmed("slouch", slouching.start_s, now_s)
        if (leaning := self.lean.in_progress(now_s)) is not None:
            self._add_confirmed(f"lean_{leaning.side}", leaning.start_s, now_s, leaning.mean_lateral_deg)
        return m.ready(now_s)

    def _count_lost(self, first_real_s: float, lost_samples: int, bridged_t_s: np.ndarray | None) -> None:
        """The samples lost before these, each in the minute where the sample times show it missing: one a sample
        bridged for a lost notification, in time order; any more (lost before the part, where no sample was bridged)
        at its first real sample. A batch holds a second of notifications, and its loss is their sum (ImuBatch):
        counted at its first sample, a notification lost just after a minute's end was the minute before's."""
        most = math.ceil(self.s.rate_hz * MINUTE_S)
        if bridged_t_s is not None and len(bridged_t_s) and lost_samples:
            placed = bridged_t_s[:lost_samples]
            minutes, counts = np.unique(np.floor(placed / MINUTE_S), return_counts=True)
            for k, n in zip(minutes.tolist(), counts.tolist(), strict=True):
                self.minutes.add_lost(k * MINUTE_S, n, most)
            lost_samples -= len(placed)
        self.minutes.add_lost(first_real_s, lost_samples, most)

    def _add_confirmed(self, kind: str, start_s: float, end_s: float, mean_deg: float = 0.0) -> None:
        family = kind.split("_")[0]
        since = max(start_s, self._added_until_s.get(family, -np.inf))
        if end_s > since:
            self.minutes.add_interval(kind, since, end_s, mean_deg)
            self._added_until_s[family] = end_s

    def _off_body(self, t_s: np.ndarray, put_down_s: float, out: PipelineOutput) -> None:
        """Samples of a sensor taken off (put down at put_down_s): none is measured (unseen time, as in a gap); what was
        open ends at the last sample on the body, and the minutes before go out as time passes."""
        if self._off_since_s is None:
            self._off_since_s = put_down_s
            self._close_episodes(out)
        self._last_t_s = float(t_s[-1])
        out.metrics += self.minutes.ready(self._last_t_s + self.dt_s)

    def _back_on(self, t_s: float, out: PipelineOutput) -> None:
        """Picked up again: as after a lost link, nothing before carries on; and the sensor may sit elsewhere on the
        back now, so a calibration is asked for (the old one measures until it is done)."""
        assert self._off_since_s is not None  # called when off
        off_s, self._off_since_s = t_s - self._off_since_s, None
        self._tail_t, self._tail_x = np.empty(0), np.empty((0, 0))  # no filling across the time off
        self._resumed_from_s = None  # a restart's time unseen is in off_s
        self._after_long_gap(out, off_s)
        self._put_on_again(t_s, f"the sensor was off the body for {off_s / 60:.0f} min", out)

    def _put_on_again(self, t_s: float, why: str, out: PipelineOutput) -> None:
        """The sensor may have been put on again (picked up after lying off the body, or data back after a time away
        as long as a night): it may sit elsewhere on the back, so the calibration moves are asked for (the old
        calibration measures until they are done), and whether the wearer sits or stands was not seen."""
        if self.calibration is not None:
            out.events.append(asking(t_s, "recalibrate", why, self.s.calibration.instructions, "; "))
            self.request_calibration(moved=True)
            self._posture_unseen = True

    def finish(self) -> PipelineOutput:
        """The end of the data: episodes still open end at the last sample, and the last, incomplete minute."""
        out = _empty_output()
        if self._withheld is not None:  # no next sample to show it a spike: it was a reading (link_lost goes on)
            withheld, self._withheld = self._withheld, None
            out = self._admit_withheld(withheld)
        self._close_episodes(out)
        out.metrics = self.minutes.flush()
        return out

    def held_minutes(self) -> list[MinuteMetrics]:
        """The minutes that ended by the last sample and are held back (pipeline/metrics.py, hold_s, and after a lost
        link until the facing direction shows): not handed out yet, so lost whole if the process dies now; the gateway
        keeps them on disk for its next start."""
        if self._last_t_s is None:
            return []
        return self.minutes.ended(self._last_t_s + self.dt_s)

    def open_minute(self) -> MinuteMetrics | None:
        """A copy of the minute the last sample is in, as far as it was seen (episodes not yet confirmed left out):
        what a crash of the process would lose; the gateway keeps it on disk every few seconds."""
        if self._last_t_s is None:
            return None
        minutes = self.minutes.ended(math.inf)
        if not minutes or minutes[-1].minute_start_s + MINUTE_S <= self._last_t_s + self.dt_s:
            return None
        return minutes[-1]

    def link_lost(self) -> PipelineOutput:
        """The link is gone, known before a sample says so (a long gap is seen only at the next one, when the wearer
        is back): episodes still open end at the last sample, and the minutes seen are handed out, the last one
        unfinished; samples of it that still come are handed out with it, whole. As finish(), and it goes on."""
        return self.finish()

    def _close_episodes(self, out: PipelineOutput) -> None:
        """End what is open at the last sample seen: a slouch or lean as it was, a rotation dropped; rotations held
        since a lost link go out as found against the provisional facing direction (none came to show another)."""
        slouches, leans = self.slouch.close(), self.lean.close()
        self.rotation.close()
        self.baseline.let_go()
        if self._held is not None:
            for rotation in self._held.events:
                self.minutes.add_rotation(rotation)
            out.events += self._held.events
            self._held = None
            self.minutes.wait_from(None)
        for slouch in slouches:
            self._add_confirmed("slouch", slouch.start_s, slouch.end_s)
        for lean in leans:
            self._add_confirmed(f"lean_{lean.side}", lean.start_s, lean.end_s, lean.mean_lateral_deg)
        out.events += [*slouches, *leans]

    def _after_long_gap(self, out: PipelineOutput, unseen_s: float) -> None:
        """A lost link (unseen_s long): close what was open, and start the orientation and facing direction
        afresh."""
        self._close_episodes(out)
        self.baseline.reset(hold=True)
        self._last_yaw = None
        self.calibrator.restart()  # a hold before the gap is no hold (the sensor may have come off)
        self.activity.gap(unseen_s)
        self.monitor.gap()
        # Orientation before the gap says nothing about after it; VQF re-initialises from the next
        # sample's gravity at once. Its gyro bias estimate is still good: keep it.
        self.orientation.restart()

    def _no_gap(self, t_s: np.ndarray, step_s: np.ndarray, columns: list[np.ndarray]) -> bool:
        """No sample missing since the last batch (the usual case): keep the tail for the next gap, and say so.
        Otherwise `_bridge_gaps` is needed."""
        if len(t_s) < GAP_CONTEXT:
            return False
        biggest_s = float(step_s.max()) if len(step_s) else -np.inf
        if len(self._tail_t):
            biggest_s = max(biggest_s, float(t_s[0] - self._tail_t[-1]))
        if round(biggest_s / self.dt_s) > 1:  # as _bridge_gaps counts steps: the largest step decides
            return False
        self._tail_t = t_s[-GAP_CONTEXT:].copy()
        self._tail_x = np.hstack([c[-GAP_CONTEXT:] for c in columns])
        self._last_t_s = float(t_s[-1])
        return True

    def _bridge_gaps(self, t_s: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Insert samples into short gaps; report how long a long gap before was (0 for none).

        Acceleration (and a given orientation) is interpolated linearly; rotation rate by a cubic
        through two real samples either side. A lost packet at the end of a brisk twist, where the
        rate falls fast, drawn as a straight line, adds degrees of heading that never come back
        (`python -m evaluation.gap_fill`: the integrated angle's error over a lost packet inside a twist).
        """
        n_hist = len(self._tail_t)
        t_all = np.concatenate([self._tail_t, t_s])
        tail_x = self._tail_x
        if n_hist and tail_x.shape[1] != x.shape[1]:
            # An orientation given from this batch on, or no longer: the history takes the batch's columns (before the
            # first given orientation, that one), so a packet lost where it changed is filled like any other.
            tail_x = (tail_x[:, :x.shape[1]] if tail_x.shape[1] > x.shape[1]
                      else np.hstack([tail_x, np.repeat(x[:1, tail_x.shape[1]:], n_hist, axis=0)]))
        x_all = np.vstack([tail_x, x]) if n_hist else x
        real = np.ones(len(t_all), bool)
        steps = np.round(np.diff(t_all) / self.dt_s).astype(int)
        gaps = np.flatnonzero(steps > 1)
        gaps = gaps[gaps >= n_hist - 1]  # gaps between history samples were bridged last time
        gap_s = np.diff(t_all)[gaps]
        long_gap = gap_s > self.s.max_fill_s
        unseen_s = float(gap_s[long_gap].max()) if long_gap.any() else 0.0
        self.gaps_reset += int(long_gap.sum())
        fill = gaps[~long_gap]
        self.gaps_filled += len(fill)
        if len(fill):
            per_gap = steps[fill] - 1
            of_gap = np.repeat(np.arange(len(fill)), per_gap)
            k = np.arange(len(of_gap)) - np.repeat(np.cumsum(per_gap) - per_gap, per_gap) + 1  # 1.. within its gap
            t_new = t_all[fill[of_gap]] + self.dt_s * k
            x_new = fill_gaps(t_all, x_all, fill, t_new, of_gap, GYRO_COLUMNS, self.dt_s)
            order = np.argsort(np.concatenate([t_all, t_new]), kind="stable")
            t_all = np.concatenate([t_all, t_new])[order]
            x_all = np.vstack([x_all, x_new])[order]
            real = np.concatenate([real, np.zeros(len(t_all) - len(real), bool)])[order]
        keep = np.flatnonzero(real)[-GAP_CONTEXT:]
        self._tail_t, self._tail_x = t_all[keep], x_all[keep].copy()
        self._last_t_s = float(t_all[-1])
        return t_all[n_hist:], x_all[n_hist:], real[n_hist:], unseen_s
