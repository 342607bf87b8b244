"""Activity context good enough to gate posture measures and count sitting time: sitting, standing,
walking, lying — from one IMU on the upper back.

- walking: steps shake the trunk vertically at 1.5–2.5 Hz, regularly; |acc| band-passed around step
  frequency with enough RMS and a regular rhythm over the last two seconds (a sit-to-stand shakes
  the trunk as hard, but once, and must not count as walking);
- lying: the trunk's up axis more than `lying_tilt_deg` from vertical, any side;
- sitting vs standing: one back IMU cannot see the legs, so the change is found where it happens
  (Najafi et al. 2002, chest-worn sensor): rising from a chair lifts the upper back by 0.3–0.5 m in
  1–4 s, sitting down lowers it. Each movement of the trunk (vertical acceleration away from its
  resting value, bounded by quiet on both sides) is integrated twice with zero vertical velocity at
  both ends, which cancels any constant accelerometer offset; a net rise or fall of `stand_rise_m`
  flips the state. The accelerometer's offset along vertical moves with the sensor's orientation,
  so the resting value is blended from before to after as the orientation moved, or, once the day's rests have shown
  the offset at the tilts the movement passed (acc_offset.py), taken where the sensor pointed; and a movement is not
  over while the trunk still tilts (sitting down and at once leaning back), though a fall is judged 8 s into the
  tilting that holds it open (sitting down straight into fidgeting may never settle); a movement cut by a lost link
  is not judged. A rise whose rest before lies inside a forward bend is not judged either: sitting up from a
  short bend (a calibration's, a reach to the floor) begins the movement at the sit-up, the rest 2.5 s before falls
  in the bend, and its accelerations and the offset across the bend integrate to a false rise. A stand-up straight
  from a bend is lost with it, but walking soon corrects a missed stand-up, where a false one read a seated wearer
  standing for the whole sitting bout. Once calibrated, the trunk's own part of a rise (the upper back rising as the
  trunk straightens about the hips, `trunk_axis`) is taken off it, down to no rise. A fall is judged whole: taken
  off falls too, it cost sit-downs into a slouch, each a whole sitting bout read standing. Context decides the rest:
  walking means standing; getting up from lying means sitting first. The rests either side of a movement are taken
  over as long as they were seen to last: a noisy sensor's half second is good to 1.6 mg, which a 6 s window turns
  into 7 cm. A tap on the sensor's case is no motion of the body, and its samples are bridged before integrating
  (impulses.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .acc_offset import AccOffset
from .angles import DEG_PER_RAD, SensorAttitude, row_dot
from .events import ACTIVITIES, SITTING, STANDING
from .gyro_turns import turns_to_last
from .impulses import bridged, impulses, landings_kept
from .running import Band, MovingMean, RestLevel, trailing_mean
from .runs import runs_of, trailing_run

G_M_S2 = 9.80665
MOVE_AFTER_S = 1.5  # integration goes on this long after the last moving (or tilting) sample
REST_EDGE_S = 0.5  # the resting value before and after a movement is the mean over this much, at least
# ... and over this much where the rest was seen to last: a 0.5 s mean of a noisy sensor (0.008 g at 50 Hz) is good to
# 1.6 mg, and the rise a 6 s window integrates moves by 4.5 cm a milligram of difference between the rests (unseen
# random day 3628689: rests 7 mg off, a sit-up from a slouch integrated to a 0.33 m "rise"). Before the movement the
# rest is extended back out of the window, over samples as settled as its edge; after it, over the tail that neither
# moved nor tilted (MOVE_AFTER_S), less its first half second, where a movement's last sway fades.
REST_BEFORE_S = 2.0
REST_AFTER_S = 1.0
# The gyro's mean over the rest after a walk's movement is taken as the bias VQF has not learnt (`_up_both_ways`):
# off by up to 2 °/s after tight turns (2.6 °/s in tests/test_sit_down_after_turns.py). Faster is no bias but the
# wearer turning (a trunk twist or a swivel in the second after the stop), which, taken off over the walk's seconds,
# tilted the gyro's up by 20-40° (a 60° twist at 60 °/s, 2.5 s after a walk at 15-25° of flexion: a 0.2-0.6 m fall,
# the wearer read sitting while standing).
TAIL_BIAS_MAX_DPS = 4.0
TAIL_SPREAD_MAX_DPS = 1.0  # ... and only where the gyro there is steady (its noise: 0.1-0.2 °/s)
# ... and carried back at most this far: the bias the rest's mean gets wrong (0.5-1 °/s after tight turns) then
# outgrows the filter's error (a standing fidget after a walk made a 13.5 s window, the gyro's up 9° off at its start
# and a false sit-down; sit-downs straight from a walk made windows of 4.6-9.3 s over 80 walks of turns).
GYRO_BACK_MAX_S = 10.0
# ... and not where it lies further than 15° from the filter's: after the tight turns the filter's was off by up to 4°,
# and the two lay within 8° of each other over 40 such walks; a turn or sway in the rest after taken as bias put the
# gyro's 23–38° away.
GYRO_UP_AGREE = math.cos(math.radians(15.0))
ORIENTATION_CHANGE = np.sin(np.radians(2.0))  # less than this between the rests: the offset did not move
OFFSET_PER_UP_G = 0.08  # |offset| ≤ 0.03 g a axis (0.052 g in all) plus a 2 % gain error, per unit of Δup
# Over the half second of rest after a movement, world up moving less than this in sensor axes means the trunk has
# settled: breathing sways it by at most 0.4° in that time, and a posture change still going on moves it more.
SETTLED_UP = np.sin(np.radians(1.5))
# Sitting up from a slouch raises the upper back by lever × Δcos(trunk inclination): 0.06 m from 36° to 20° for a
# trunk pivoting at the hips (0.45–0.5 m below the sensor), a third of that for a spine curling along its length.
# Counted as a rise, it took a 0.15 m error over the threshold (unseen random day 7004: 66 % of its sitting read
# standing). Between the two: from a curling spine it takes 0.13 m × Δcos of a real rise, which a high seat's
# 0.22–0.25 m stand-up out of a deep slouch cannot spare (docs/pipeline.md, "Sitting vs standing").
TRUNK_LEVER_M = 0.3
# A fall whose vertical movement has been quiet for move_quiet_s, but which the trunk's tilting holds open HELD_OPEN_S
# longer (a sit-down straight into fidgeting may settle for no second in a minute), is judged then on the samples to
# that quiet. 8 s: a crouch swaying 1.8-6 s (the upper back down 0.25-0.45 m, as a sit-down's) is up again by then; a
# second read 68 of 100 such crouches sitting while down, and one stayed sitting (tests/test_activity.py).
HELD_OPEN_S = 8.0
# With no rest after to measure the accelerometer's offset where the trunk went, such a fall must outdo what this much
# offset along the trunk's way from its posture before could fake through the double integral: a standing bend of
# 45-60° held 3 s, then fidgeting on the feet, with 0.05 g of offset, read a fall in 16 of 60 (none with ≥ 0.015 g);
# walks into fidgeting, whose sit-down bends the trunk too, were missed from 0.026 g (1 of 16).
FIDGET_OFFSET_G = 0.02
# After such a fall, the posture fallen into stands for the settled one a rise is told from a bend by (`_in_a_bend`):
# within 10°, a fidget about the seat.
FIDGET_COS = math.cos(math.radians(10.0))
# A rise whose rest before lies in a tilt this far from the last settled posture (a forward bend being sat up from) is
# not judged; fidgets and weight shifts (2–6°) mostly stay within it.
BEND_UP = np.sin(np.radians(5.0))
REST_NOISE_G = 0.004  # a 0.5 s mean of noise and leftover sway
# The offset fitted over the day's rests (acc_offset.py) stands in for the blend once it knows the change across a
# movement to this (1σ) and predicts the change between the rests either side within MODEL_AGREE_G. Within that, the
# fit overrules the rest after: 0.004 g left at the end of a 7 s window integrates to up to a quarter metre, so the
# fit must be better than that rest (a fidget's) to be used; its σ counts noise only, not a drifting bias or the gain.
MODEL_SD_G = 0.002
MODEL_AGREE_G = 0.004
# The fit's samples: not walking or lying, and calm — the 0.3 s mean of vertical acceleration within CALM_G of its
# 2 s mean. A rule of the samples alone, so the same ones however the stream is batched (the quiet ones, judged
# against a resting value taken once a batch, were not), and it leaves out most of a slow posture change or a fidget,
# whose accelerations bias the fit by 1–2 mg at a sit-up's tilt on a day of short rests.
CALM_G = 0.005
CALM_S = 2.0
# The first resting value is the median over this much (not walking or lying): the first samples of a stream may
# be the sensor being put on, or the wearer still sitting up from a calibration bend.
REST_FIRST_S = 2.0
# Sitting straight down after walking is integrated from a step at least this long before the walking verdict
# ended (it lags the last step by up to walk_window_s), in rhythm with the two before it (within STEP_RHYTHM).
ANCHOR_BACK_S = 2.5
STEP_RHYTHM = 0.25
# Step peaks kept from before a batch: an anchor and the two steps before it lie within walk_window_s + ANCHOR_BACK_S
# + two steps (6.6 s) of the walk's end.
PEAKS_KEPT_S = 8.0
QUIET_MARGIN = 0.999  # step-band samples all below this × walk_rms_g: no window's RMS can reach walk_rms_g
# Inside the pipeline an activity is its index in ACTIVITIES (int8): comparing and counting small integers
# is one cheap numpy call where strings cost a pass each. Names go out in PipelineOutput and LiveState.
SITTING_CODE, STANDING_CODE, WALKING_CODE, LYING_CODE = range(len(ACTIVITIES))
ACTIVITY_NAMES = np.array(ACTIVITIES)  # code → name, by indexing


def activity_codes(names: np.ndarray) -> np.ndarray:
    """Codes of activity names (the inverse of ACTIVITY_NAMES[codes]); a name not in ACTIVITIES is an error."""
    codes = np.full(len(names), -1, np.int8)
    for code, name in enumerate(ACTIVITIES):
        codes[np.asarray(names) == name] = code
    if (codes < 0).any():
        raise ValueError(f"not an activity: {np.asarray(names)[codes < 0][0]!r}")
    return codes


@dataclass(frozen=True)
class ActivitySettings:
    rate_hz: float = 100.0
    walk_window_s: float = 2.5  # four to five steps
    walk_rms_g: float = 0.04  # slow walking reaches ~0.08 g; sitting, standing, fidgeting < 0.01 g
    walk_regularity: float = 0.4  # autocorrelation at one step's lag (regular walking ≥ 0.6)
    step_s: tuple[float, float] = (0.3, 0.8)  # one step takes this long (1.25–3.3 steps/s)
    block_s: float = 0.25
    lying_tilt_deg: float = 60.0
    lying_min_s: float = 2.0
    move_acc_g: float = 0.03  # vertical acceleration this far from rest marks a movement (fidgeting: < 0.03 g)
    move_smooth_s: float = 0.3
    move_quiet_s: float = 1.6  # a movement ends after this long at rest (≥ MOVE_AFTER_S: the data is there)
    # Integration starts this much before the movement and ends after it: a slow sit-down (3–4 s)
    # crosses move_acc_g only near its middle.
    move_margin_s: float = 2.5
    move_max_s: float = 8.0  # longer movements are not a sit-to-stand (walking, fidgeting)
    # A sit/stand moves for at most ~4 s; a longer one (a held turn, reaching about) changes how the
    # accelerometer's errors project for long enough to fake a rise.
    move_core_max_s: float = 5.0
    # A movement is not over while the trunk still tilts faster than this (smoothed over move_smooth_s): sitting
    # down and at once leaning back or slouching is judged once the trunk settles, not in the middle of it.
    move_tilt_dps: float = 3.0
    stand_rise_m: float = 0.2  # net rise (fall) of the upper back that means standing up (sitting down)
    after_lying_s: float = 4.0  # getting up from lying: movements this soon after are not sit/stand
    # A link lost this long went out of reach (BLE's supervision timeout and a reconnect alone take about 10 s); a
    # shorter loss while walking is the body shadowing the radio, and the walk goes on through it (gap()).
    walk_lost_s: float = 10.0
    # After a walk the link was lost in: no steps, sit-down or stand-up seen this long from its return means the
    # wearer sat down unseen (gap()). Back at the coffee machine and then sitting down at the desk is seen sooner.
    seat_unseen_s: float = 30.0
    # A link lost this soon after the walking verdict ended, the wearer still standing, is lost in the walk's
    # arrival: the verdict ends up to walk_window_s after the last step, and the seat is reached seconds later (a cup
    # put down, a chair pulled out). Still standing longer than this after a walk is more often standing on (random
    # days 94225, 6014, 3014 sat down in a loss 7, 10 and 17 s after the walk; 6001, 20029 stood on at 30 and 49 s).
    walk_ended_s: float = 20.0
    # A restarted gateway's classifier goes on from the state its last run kept (go_on) if it starts within this of
    # the last sample kept (a kill and a systemd restart, a reconnect, an upgrade): started knowing nothing, a wearer
    # standing read sitting until they walked or sat down (chaos runs: 199 s read sitting of 22 s, and 103 of 36).
    # After longer the usual start, sitting: a sit-down in the outage is likelier, and unseen (docs/pipeline.md).
    resume_max_s: float = 120.0
    # Standing kept across unseen time of standing_lost_s or more (a lost link, or a restart's outage: go_on) ends in a
    # seat after standing_seat_s with no steps, sit-down or stand-up seen: a sit-down in the unseen time is not seen,
    # and kept for good it read the rest of a desk session standing (random day 6002, a restart down 20 s: 2880 s of
    # sitting). A wearer who stands on still for longer reads sitting after it. After a shorter loss, standing goes on
    # until something is seen: a sit-down hides in a few seconds too seldom to pay for that. From 200 random days'
    # truth (docs/pipeline.md, "Standing through a lost link"), seconds misread per loss begun standing still, kept for
    # good against the seat: 11 against 69 lost 1.5 s, 36 against 69 at 10 s, 186 against 71 at 60 s; they cross at
    # about 22 s, and over the random days' losses (2 s to 5 min) any bound from 10 s to 30 s does about as well (58 s a
    # loss; 201 kept for good, 75 with the seat after any loss); 15 s keeps a 20 s restart's seat (day 6002).
    standing_lost_s: float = 15.0
    standing_seat_s: float = 300.0


@dataclass(frozen=True)
class ActivityState:
    """What a classifier knew at a sample that a new one cannot see again (the gateway keeps it for its next start,
    ActivityClassifier.go_on): the sitting or standing between walks (lying: sitting, as getting up from lying reads),
    whether it read walking, and how long before it last read walking (None: not in that run)."""

    upright: str  # SITTING or STANDING
    walking: bool
    walked_ago_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"upright": self.upright, "walking": self.walking, "walked_ago_s": self.walked_ago_s}

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> ActivityState:
        """ValueError (or KeyError, TypeError) if doc is not one: a damaged or hand-edited file."""
        upright, walking, walked = doc["upright"], doc["walking"], doc["walked_ago_s"]
        if upright not in (SITTING, STANDING) or not isinstance(walking, bool):
            raise ValueError(f"not an activity state: {doc!r}")
        if walked is not None and not (isinstance(walked, int | float) and math.isfinite(walked) and walked >= 0):
            raise ValueError(f"walked_ago_s {walked!r}")
        return ActivityState(upright, walking, None if walked is None else float(walked))


class ActivityClassifier:
    def __init__(self, settings: ActivitySettings = ActivitySettings(), start: str = SITTING):
        s = self.s = settings
        self.dt_s = 1.0 / s.rate_hz
        self._step_band = Band(s.rate_hz)
        self._walk_n = max(4, round(s.walk_window_s * s.rate_hz))
        self._block = max(1, round(s.block_s * s.rate_hz))
        self._lags = (max(1, round(s.step_s[0] * s.rate_hz)), min(self._walk_n - 2, round(s.step_s[1] * s.rate_hz)))
        self._hist = np.zeros(0)  # the last walk_window_s of step-band |acc|
        self._n_walk = 0
        self._walking_now = False
        self._walk_last: int | None = None  # walking()'s index of the last sample it read walking (None: none yet)
        self._peaks: list[int] = []  # walking()'s indices of the recent step-band peaks (steps, or jolts)
        self._step_n = 0  # samples from the step before the anchor of an after-walk movement to the anchor
        self._walked_to_end = False  # the last batch ended walking
        self._upright = STANDING_CODE if start == STANDING else SITTING_CODE
        self._was_lying = False
        self._tilted_run = 0
        self._since_lying = np.inf
        # Sit/stand: a smoothed vertical acceleration, its resting value, the recent samples to integrate.
        self._smooth = MovingMean(round(s.move_smooth_s * s.rate_hz))
        # Its first resting value is the median over the first REST_FIRST_S of samples free to move: the first batch
        # alone may be a few samples of the calibration's sit-up (-0.04 g), which made all rest after it a "movement"
        # until move_max_s dropped it, and a stand-up inside with it.
        self._rest = RestLevel(round(REST_FIRST_S * s.rate_hz), 1.0 / (5.0 * s.rate_hz), s.move_acc_g, round(s.rate_hz))
        self._buf = np.zeros(0)  # recent vertical acceleration (g, gravity removed), for integration
        self._up_buf = np.zeros((0, 3))  # world up in sensor axes for the same samples
        self._acc_buf = np.zeros((0, 3))  # the accelerometer (g, sensor axes) for the same samples
        self._turn_buf = np.zeros((0, 3))  # the sensor's turn to each sample from the one before (rad, its own axes)
        self._buf_start = 0  # absolute index of _buf[0]
        self._n = 0  # absolute index of the next sample
        self._move_start: int | None = None  # absolute index where the current movement began
        self._move_last = 0  # last absolute index that moved
        # Last absolute index of a tilting run (set at the run's start, to its end in this batch): a movement goes on
        # while the trunk tilts after it, however the tilt began (the trunk bends as one sits down).
        self._tilt_last = -1
        self._held_n = round(HELD_OPEN_S * s.rate_hz)
        self._max_n = max(1, round(s.move_max_s * s.rate_hz))  # a movement longer is no sit/stand (at least a sample)
        self._after_lying_n = round(s.after_lying_s * s.rate_hz)
        self._fall_judged = -1  # the _move_last whose fall the tilting held open has been looked at
        # The last fall judged while the trunk still tilted: its last moving sample, and world up over the quiet after
        # it (a crouch's or a seat's posture); a rise from near that posture, the trunk never settled since, is no
        # sit-up from a bend (`_in_a_bend`).
        self._fidget_from: tuple[int, np.ndarray] | None = None
        self._tilt_window = max(1, round(s.move_smooth_s * s.rate_hz))
        self._move_from: int | None = None  # where to integrate from, when not just before the movement
        self._walk_offset = 0
        self._seat_at: int | None = None  # absolute index from which a walk lost in a gap is taken to end seated
        self._trunk_up: np.ndarray | None = None  # the trunk's long axis in sensor axes, once calibrated (trunk_axis)
        self._offset = AccOffset(s.rate_hz)
        # This batch's rest samples for the fit: (its first absolute index, the first not yet added, their indices in
        # the batch, world up, vertical acceleration); added up to each judgement's own sample, not the batch's end.
        self._rests: tuple[int, int, np.ndarray, np.ndarray, np.ndarray] = (0, 0, np.zeros(0, np.intp),
                                                                              np.zeros((0, 3)), np.zeros(0))
        self._calm = MovingMean(round(CALM_S * s.rate_hz))

    def gap(self, unseen_s: float = 0.0) -> None:
        """The link was lost for unseen_s: a movement cut by the gap cannot be judged (the rest after it was not
        seen, and samples either side of the gap are not one movement). The resting value is kept:
        it is the accelerometer's, and the first samples after a gap may be walking.

        Lost for walk_lost_s or more during a walk, the wearer walked out of the gateway's reach, and where the walk
        ended was not seen: most often in a seat (the link comes back seconds to a minute after the wearer is in range
        again, by which time they have sat down at the desk the gateway is at). Kept standing, a day of such breaks
        read standing from each one on (office-day with every walk out of reach: 89 % of sitting lost). Lost within
        walk_ended_s of the walking verdict's end with the wearer still standing (the walk's arrival), for any length
        the pipeline does not bridge, the sit-down that usually ends an arrival may be in the loss the same way: a loss
        cuts a sit-down under way, or takes the rest before one that begins within move_margin_s of the return, and
        1.2–4 s hold a whole one (random day 94225, lost 7 s after a walk as the wearer began to sit down: 23 % of its
        sitting read standing; day 20011, a 5 s loss 11 s after a walk with the whole sit-down inside it: 97 %). So
        unless steps, a sit-down or a stand-up come within seat_unseen_s of the return, the wearer sat down unseen:
        sitting from then on. Taken as sitting at once, a wearer back at the coffee machine, or walking on, read
        sitting until they sat down or the walking window filled. Standing otherwise (still, or a walk going on through
        a shorter loss), a loss of standing_lost_s or more ends in a seat the same way but after standing_seat_s: a
        sit-down inside it is not seen either, and kept standing for good, a wearer who sat down in it read the rest of
        the desk session standing; a shorter loss keeps standing. After walk_lost_s the walking test starts afresh:
        windows across the gap would carry the walk before it into the samples after; a shorter loss mid-walk (the
        body shadowing the radio) keeps the walk, and its windows."""
        arriving = (self._upright == STANDING_CODE and not self._was_lying and not self._walking_now
                    and self._walk_last is not None
                    and self._n_walk - 1 - self._walk_last <= round(self.s.walk_ended_s * self.s.rate_hz))
        self._move_start = self._move_from = None
        self._walked_to_end, self._peaks = False, []
        self._buf, self._up_buf, self._buf_start = np.zeros(0), np.zeros((0, 3)), self._n
        self._acc_buf, self._turn_buf = np.zeros((0, 3)), np.zeros((0, 3))
        if arriving or (self._walking_now and unseen_s >= self.s.walk_lost_s):
            self._seat_at = self._n + round(self.s.seat_unseen_s * self.s.rate_hz)
        elif (self._upright == STANDING_CODE and not self._was_lying and unseen_s >= self.s.standing_lost_s
              and self._seat_at is None):  # a seat already due since an earlier loss stays due
            self._seat_at = self._n + round(self.s.standing_seat_s * self.s.rate_hz)
        if unseen_s >= self.s.walk_lost_s:
            self._walking_now, self._hist, self._step_band = False, np.zeros(0), Band(self.s.rate_hz)

    def state(self) -> ActivityState:
        """What this classifier knows as of the last sample it saw, for another to go on from (go_on)."""
        walked_ago_s = None if self._walk_last is None else (self._n_walk - 1 - self._walk_last) / self.s.rate_hz
        return ActivityState(SITTING if self._was_lying or self._upright == SITTING_CODE else STANDING,
                             self._walking_now, walked_ago_s)

    def go_on(self, state: ActivityState, unseen_s: float) -> None:
        """Before the first sample: go on from another classifier's state (a restarted gateway's last run), unseen_s
        before this one's first sample, as across a lost link of that length within one run (gap(): a walk lost for
        walk_lost_s, or its arrival, ends in a seat unless something is seen, and standing after standing_lost_s too,
        later). Not after resume_max_s, nor with time gone back (a host clock set back): then the usual start,
        sitting."""
        if not 0.0 <= unseen_s <= self.s.resume_max_s:
            return
        self._upright = STANDING_CODE if state.upright == STANDING else SITTING_CODE
        self._walking_now = state.walking
        if state.walked_ago_s is not None:  # the count of samples walked goes on from 0 here: the last one before it
            self._walk_last = self._n_walk - 1 - round(state.walked_ago_s * self.s.rate_hz)
        self.gap(unseen_s)
        # No window of steps came across: a walk going on is found afresh (walking means standing meanwhile).
        self._walking_now = False

    def trunk_axis(self, up_sensor: np.ndarray) -> None:
        """The trunk's long axis in sensor axes (a calibration's): from then on a rise is measured less the height the
        upper back gains by the trunk straightening (TRUNK_LEVER_M), which is no stand-up."""
        self._trunk_up = np.asarray(up_sensor, float) / np.linalg.norm(up_sensor)

    def seated(self) -> None:
        """The wearer sits (a calibration hold is done sitting): sitting from here on, whatever came before (with no
        calibration, or one not yet checked, lying is not known, and getting up from bed reads as a rise); a
        movement under way is still judged when it ends."""
        self._upright = SITTING_CODE

    @property
    def samples_walked(self) -> int:
        """How many samples walking() has seen."""
        return self._n_walk

    def walking(self, acc_norm_g: np.ndarray) -> np.ndarray:
        """Walking per sample, from |acc| alone (needs no orientation).

        Every `block_s` the last `walk_window_s` of step-band |acc| is tested for steps: enough RMS
        and a regular rhythm (normalised autocorrelation ≥ `walk_regularity` at a lag of one step,
        0.3–0.8 s; Moe-Nilssen & Helbostad 2004). A sit-to-stand shakes the trunk as hard, but once.
        Each sample carries the verdict of the last block finished before it (causal, and the same
        however the stream is batched).
        """
        y = self._step_band.update(acc_norm_g - 1.0)
        # Each step's peak of |acc| lies near the bottom of the body's bounce (_after_walk integrates from one). A
        # sample is judged once both its neighbours are in: the last batch's last one now (batching must not matter).
        head = self._hist[-2:]
        z = np.concatenate([head, y])
        if len(z) > 2 and z[1:].max() > self.s.walk_rms_g:  # a peak must pass walk_rms_g: none in a quiet batch
            mid = z[1:-1]
            peaks = np.flatnonzero((mid > z[:-2]) & (mid >= z[2:]) & (mid > self.s.walk_rms_g)) + 1
            if len(peaks):
                oldest = self._n_walk - round(PEAKS_KEPT_S * self.s.rate_hz)
                self._peaks = [p for p in self._peaks if p >= oldest] + (self._n_walk - len(head) + peaks).tolist()
        hist = np.concatenate([self._hist, y])
        first, n, b, w = self._n_walk, len(y), self._block, self._walk_n
        # The verdicts of the blocks ending in this batch, all at once; verdicts[0] is the one before them.
        ends = np.arange((first // b + 1) * b, first + n + 1, b) - first + len(self._hist)  # in hist, exclusive
        verdicts = np.zeros(len(ends) + 1, bool)
        verdicts[0] = self._walking_now
        whole = ends >= w  # a block end with a whole window behind it (else: not walking)
        # No window can reach walk_rms_g when no sample does (most of a day: sitting, standing): skip the tests.
        # The margin covers the rounding of a window's sum of squares.
        if whole.any() and max(hist.max(), -hist.min()) >= QUIET_MARGIN * self.s.walk_rms_g:
            # The windows end a block apart: a strided view of hist, no copy (the same values, row by row).
            windows = np.lib.stride_tricks.sliding_window_view(hist, w)[ends[whole][0] - w::b]
            verdicts[1:][whole] = self._steps(windows[:int(whole.sum())])
        self._walking_now = bool(verdicts[-1])
        # Sample j (absolute) carries the verdict of the last block that ended at or before it: verdicts[0] up to
        # the first block end in the batch, each next one from its block's end on.
        carried = np.repeat(verdicts, np.diff(np.concatenate([[0], ends - len(self._hist), [n]])))
        if carried.any():
            self._walk_last = first + int(np.flatnonzero(carried)[-1])
        self._hist = hist[-w:]
        self._n_walk += n
        return carried

    def _steps(self, wins: np.ndarray) -> np.ndarray:
        """Steps in each window (rows). Products are batched matmuls of one row by one row, which numpy
        hands to the same BLAS dot product as `win @ win`: the same bits as testing the windows one by one."""
        result = np.zeros(len(wins), bool)
        energy = (wins[:, None, :] @ wins[:, :, None])[:, 0, 0]
        loud = np.flatnonzero(energy / wins.shape[1] >= self.s.walk_rms_g ** 2)
        if not len(loud):
            return result
        wins, energy = wins[loud], energy[loud]
        lags = range(self._lags[0], self._lags[1] + 1)
        ac = np.empty((len(loud), len(lags)))
        for j, lag in enumerate(lags):
            ac[:, j] = (wins[:, None, lag:] @ wins[:, :-lag, None])[:, 0, 0]
        ac /= energy[:, None]
        best = np.argmax(ac, axis=1)
        for i in np.flatnonzero(ac[np.arange(len(loud)), best] >= self.s.walk_regularity).tolist():
            # One twist or jolt is a single swing and back: steps repeat, so the rhythm holds two steps on too.
            two, win = 2 * lags[int(best[i])], wins[i]
            result[loud[i]] = (two < len(win) - 1
                               and float(win[two:] @ win[:-two]) / energy[i] >= self.s.walk_regularity / 2)
        return result

    def update(self, walking: np.ndarray, acc_vertical_g: np.ndarray, tilt_deg: np.ndarray,
               walk_index: int | None = None, up_sensor: np.ndarray | None = None) -> np.ndarray:
        """Per-sample activity names for one batch (`codes`, named).

        walking: from walking(); acc_vertical_g: specific force along world up (≈ 1 at rest);
        tilt_deg: angle between the trunk's up axis and vertical; walk_index: where these samples
        start among those walking() has seen (default: they are its last ones); up_sensor: world up
        in sensor axes (n × 3), which tells where the accelerometer's offset along vertical changed.
        """
        codes = self.codes(walking, acc_vertical_g, tilt_deg > self.s.lying_tilt_deg, walk_index, up_sensor)
        names: np.ndarray = ACTIVITY_NAMES[codes]
        return names

    def codes(self, walking: np.ndarray, acc_vertical_g: np.ndarray, tilted: np.ndarray,
              walk_index: int | None = None, up_sensor: np.ndarray | None = None,
              acc_g: np.ndarray | None = None, turn_rad: np.ndarray | None = None) -> np.ndarray:
        """Per-sample activity codes (int8, ACTIVITIES' order) for one batch; tilted: the trunk's up axis more
        than `lying_tilt_deg` from vertical; acc_g: the accelerometer (n × 3, g, sensor axes) and turn_rad: the
        sensor's turn to each sample from the one before (n × 3, rad, its own axes, the filter's gyro bias taken
        off), for world up after a walk (`_up_both_ways`; without them, the filter's alone). The rest as `update`."""
        n = len(walking)
        # walking() saw samples update() does not (before calibration): where this part starts in its count.
        first = self._n_walk - n if walk_index is None else walk_index
        self._walk_offset = first - self._n
        lying = self._lying(tilted)
        up = np.full((n, 3), np.nan) if up_sensor is None else np.asarray(up_sensor, float)
        base = self._n
        acc = np.full((n, 3), np.nan) if acc_g is None else np.asarray(acc_g, float)
        turn = np.full((n, 3), np.nan) if turn_rad is None else np.asarray(turn_rad, float)
        flips = self._sit_stand_flips(acc_vertical_g - 1.0, up, walking, lying, acc, turn)
        any_walking, any_lying = bool(walking.any()), bool(lying.any())
        seated = self._seated_unseen(base, n, flips, walking | lying)
        if not (flips or any_walking or any_lying or self._was_lying or seated):  # most batches: the state goes on
            return np.full(n, self._upright, np.int8)
        state = np.empty(n, np.int8)
        # Walk the few points where the upright state may change: flips, walking starts, lying ends.
        walk_on = np.flatnonzero(walking & ~np.concatenate([[False], walking[:-1]]))
        lie_off = np.flatnonzero(~lying & np.concatenate([[self._was_lying], lying[:-1]]))
        changes = sorted([(i, new) for i, new in flips] + [(int(i), STANDING_CODE) for i in walk_on]
                         + [(int(i), SITTING_CODE) for i in lie_off] + seated)
        current, last = self._upright, 0
        for i, new in changes:
            state[last:i] = current
            current, last = new, i
        state[last:] = current
        self._upright = current
        self._was_lying = bool(lying[-1]) if n else self._was_lying
        state[walking] = WALKING_CODE
        state[lying] = LYING_CODE
        return state

    def _seated_unseen(self, base: int, n: int, flips: list[tuple[int, int]],
                       moved: np.ndarray) -> list[tuple[int, int]]:
        """[(index in batch, SITTING_CODE)] where a walk lost in a gap is taken to have ended seated (gap()), once
        seat_unseen_s passed with no sit/stand, steps or lying seen; [] otherwise. What is seen first cancels it; so
        does a sit/stand judged on the seat's own sample (its movement ended move_quiet_s before), which a batch ending
        just before that sample reports at its end (index n, the seat then being due at the next batch's start)."""
        if self._seat_at is None:
            return []
        at = self._seat_at - base
        if any(i <= at for i, _ in flips) or moved[:max(0, min(at, n))].any():
            self._seat_at = None
            return []
        if at >= n:
            return []
        self._seat_at = None
        return [(max(at, 0), SITTING_CODE)]

    def _lying(self, tilted: np.ndarray) -> np.ndarray:
        """Tilted for lying_min_s: a deep bend while standing up or reaching down is over sooner."""
        if len(tilted) and not tilted.any():  # upright throughout: the tilted run is over
            self._tilted_run = 0
            return tilted
        run = trailing_run(tilted, self._tilted_run)
        self._tilted_run = int(run[-1]) if len(run) else self._tilted_run
        return run >= round(self.s.lying_min_s * self.s.rate_hz)

    def _sit_stand_flips(self, av_g: np.ndarray, up: np.ndarray, walking: np.ndarray,
                         lying: np.ndarray, acc: np.ndarray, turn: np.ndarray) -> list[tuple[int, int]]:
        """(index in batch, new state code) for every sit-to-stand or stand-to-sit recognised in this batch, taken in
        parts that end where a movement open at a part's start is due to be dropped as too long (move_max_s after its
        start): the drop, and the resting value it takes afresh from the two seconds before it, then fall on that
        sample however the stream is batched (at a batch's end they did not: an attack's 300 probes read 33 differently
        at batches of 7, 100 and the whole stream). A part with no movement open at its start ends move_max_s and a
        sample after the first sample one could open at (`_quiet_part`), so a movement that begins in it is due at its
        end or later. Held open past that sample by the trunk's tilting, it is dropped just after its next moving
        sample, where the part is cut (dropped at the end of the part that sample fell in, a review's probes read 3 of
        220 differently)."""
        n, max_n = len(av_g), self._max_n
        flips: list[tuple[int, int]] = []
        done = 0
        while True:
            moved = None
            if self._move_start is None:
                cut, moved = self._quiet_part(done, av_g, walking, lying)
            elif self._move_start + max_n + 1 > self._n:  # (self._n: this part's start)
                cut = min(n, done + self._move_start + max_n + 1 - self._n)
            else:
                # Due already, held open by the trunk's tilting since: dropped once it moves again, at the sample after
                # its first moving one (the test's state put back after looking, so the part then takes it afresh).
                cut = min(n, done + max_n)
                first = self._first_moving(av_g[done:cut], walking[done:cut], lying[done:cut])
                if first is not None:
                    cut = done + first + 1
            part = slice(done, cut)
            flips += [(done + i, code) for i, code in self._part_flips(av_g[part], up[part], walking[part],
                                                                       lying[part], acc[part], turn[part], moved)]
            done = cut
            if done >= n:
                return flips

    def _quiet_part(self, done: int, av_g: np.ndarray, walking: np.ndarray,
                    lying: np.ndarray) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """With no movement open at sample `done` of the batch: where the part from there ends, and `_moving` of its
        samples (the test's state taken to that end; None for an empty batch). It ends move_max_s and a sample after
        the first sample a movement could open at (a moving one, or walking's end), or with the batch. (Parts of
        move_max_s through quiet minutes cost a one-minute batch 15-21 %.) The test is taken move_max_s at a time
        from `done`, as those parts were: its moving means are summed in other groups only after a movement that
        ended, or a walk's end that opened none, within move_max_s of its part's start (2.8e-16 g at most on an
        attack's day), and no decision changed on 39 simulated recordings and 107 synthetic streams at up to 14
        batchings."""
        n, max_n = len(av_g), self._max_n
        if n - done <= max_n:  # (the gateway's 1 s batches) a movement opening here is due after the batch's end
            return n, self._moving(av_g[done:], walking[done:], lying[done:]) if n else None
        cut, opens, seen, at = n, False, [], done
        while at < cut:
            end = min(cut, at + max_n)
            seen.append(self._moving(av_g[at:end], walking[at:end], lying[at:end]))
            if not opens:
                was = np.concatenate([[walking[at - 1] if at else self._walked_to_end], walking[at:end - 1]])
                can = seen[-1][2] | (was & ~walking[at:end])
                if can.any():
                    opens, cut = True, min(n, at + int(np.argmax(can)) + max_n + 1)
            at = end
        if len(seen) < 2:
            return cut, seen[0] if seen else None
        blocked, smooth, moving = (np.concatenate(parts) for parts in zip(*seen))
        return cut, (blocked, smooth, moving)

    def _moving(self, av_g: np.ndarray, walking: np.ndarray,
                lying: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sample of a part: blocked (walking, lying, the seconds after lying), the smoothed vertical acceleration
        less 1 g, and moving (away from its resting value, not blocked); the tests' state taken up to its end."""
        after_lying_n, n = self._after_lying_n, len(av_g)
        if n and not lying.any() and self._since_lying + 1 > after_lying_n:  # most batches: lying is long past
            self._since_lying = self._since_lying + n
            blocked = walking
        else:
            since_lying = trailing_run(~lying, self._since_lying)
            self._since_lying = since_lying[-1] if n else self._since_lying
            blocked = walking | (since_lying <= after_lying_n)
        smooth = self._smooth.update(av_g)
        moving = ~blocked & ~self._rest.at_rest(smooth, ~blocked)  # none before the first resting value is known
        return blocked, smooth, moving

    def _first_moving(self, av_g: np.ndarray, walking: np.ndarray, lying: np.ndarray) -> int | None:
        """The first moving sample of a part, its state put back after looking (`_moving`), or None."""
        kept = self._since_lying, self._smooth.copy(), self._rest.copy()
        at = np.flatnonzero(self._moving(av_g, walking, lying)[2])
        self._since_lying, self._smooth, self._rest = kept
        return int(at[0]) if len(at) else None

    def _part_flips(self, av_g: np.ndarray, up: np.ndarray, walking: np.ndarray, lying: np.ndarray, acc: np.ndarray,
                    turn: np.ndarray, moved: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                    ) -> list[tuple[int, int]]:
        """(index in part, new state code) for every sit-to-stand or stand-to-sit recognised in this part.

        A movement is a group of moving samples with less than `move_quiet_s` of rest between them;
        it is judged once that much rest follows it (so at the same sample however the stream is
        batched). Walking, lying and the seconds after lying cancel a movement in progress. moved: the part's
        `_moving`, when already taken.
        """
        s, n, base = self.s, len(av_g), self._n
        blocked, smooth, moving = moved if moved is not None else self._moving(av_g, walking, lying)
        free = ~blocked
        rest = free & (np.abs(smooth - self._calm.update(av_g)) < CALM_G) & np.isfinite(up[:, 0])
        self._rests = (base, base, np.flatnonzero(rest), up, av_g)
        self._buf = np.concatenate([self._buf, av_g])
        self._up_buf = np.concatenate([self._up_buf, up])
        self._acc_buf = np.concatenate([self._acc_buf, acc])
        self._turn_buf = np.concatenate([self._turn_buf, turn])
        # Tilting matters only to a movement that is open or may open in this batch (here or after walking); most
        # batches of a day are quiet, and a tilt going on into the next batch is found there, from the buffer.
        if self._move_start is None and not moving.any() and not walking.any() and not self._walked_to_end:
            tilting = np.zeros(n, bool)
        else:
            tilting = free & (self._tilt_dps(n) > s.move_tilt_dps)
        quiet_n, margin = round(s.move_quiet_s * s.rate_hz), round(s.move_margin_s * s.rate_hz)
        flips: list[tuple[int, int]] = []
        # Runs of moving, blocked and tilting samples, in order (few per batch).
        runs = ([(a, b, _MOVING) for a, b in runs_of(moving)] + [(a, b, _BLOCKED) for a, b in runs_of(blocked)]
                + [(a, b, _TILTING) for a, b in runs_of(tilting)])
        if self._walked_to_end and n and not walking[0]:
            self._after_walk(base, base)  # walking ended on the batch edge
        self._walked_to_end = bool(walking[-1]) if n else self._walked_to_end
        for a, b, kind in sorted(runs):
            self._close_if_quiet(base + a, flips, base, quiet_n, margin)
            if kind == _BLOCKED:
                self._move_start = self._move_from = self._fidget_from = None
                if walking[b - 1] and b < n and not walking[b]:
                    self._after_walk(base + b, base)
            elif kind == _TILTING:
                self._tilt_last = base + b - 1
            else:
                if self._move_start is None:
                    self._move_start = base + a
                self._move_last = base + b - 1
        self._close_if_quiet(base + n, flips, base, quiet_n, margin)
        self._add_rests(base + n)
        # Still tilting after the vertical movement has been quiet for quiet_n is settling, not "moving for long".
        open_until = min(base + n, self._move_last + quiet_n)
        if self._move_start is not None and open_until - self._move_start > self._max_n:
            # "Moving" for this long is no sit/stand: most likely a new resting value (an offset seen at
            # a new posture). Take it afresh from the last two seconds and start looking again.
            self._rest.reset(float(np.median(self._buf[-round(2.0 * s.rate_hz):])))
            self._move_start = self._move_from = None
        self._n += n
        # The longest window judged, the rest before it, and HELD_OPEN_S for a fall judged that much after its window.
        keep_from = self._n - round((s.move_max_s + 2 * s.move_margin_s + 2.0 + HELD_OPEN_S) * s.rate_hz)
        drop = max(0, keep_from - self._buf_start)
        self._buf, self._up_buf, self._buf_start = self._buf[drop:], self._up_buf[drop:], self._buf_start + drop
        self._acc_buf, self._turn_buf = self._acc_buf[drop:], self._turn_buf[drop:]
        return flips

    def falling_now(self, began_n_ago: int) -> bool:
        """Whether the movement under way, if it began at least began_n_ago samples ago, has brought the upper back down
        by stand_rise_m or more (a sit-down), judged on the samples seen so far as if it ended now (it is judged for
        good move_quiet_s after its last moving sample, once the trunk has settled, or a fall HELD_OPEN_S after that
        while the trunk still tilts): for a calibration whose bend may
        have been a sit-down, found 1.5 s after the sit-up. Not waiting for the trunk to settle: sitting down and
        settling back into the seat brings the back down all the same (a reviewer's probe: 17 of 72 such sit-downs
        were taken for the calibration, 2-5° off). (A rise judged this early is no stand-up: a calibration's own
        sit-up, right after sitting down, integrated to one on an unseen day.)"""
        if self._move_start is None or self._n - self._move_start < began_n_ago:
            return False
        a = self._move_from if self._move_from is not None else self._move_start - round(self.s.move_margin_s
                                                                                          * self.s.rate_hz)
        return self._judge(a, self._n, (self._move_start, self._move_last), rest_before=self._move_from is None,
                           settled=False) == SITTING_CODE

    def _after_walk(self, end: int, base: int) -> None:
        """Walking just ended: sitting straight down after the last steps is common, and the walking verdict lags
        the steps. Integrate from a step of steady walking before it (`_anchor_step`)."""
        anchor = self._anchor_step(end)
        if anchor is not None:
            # The movement itself (its core, at most move_core_max_s) starts where the walking did end.
            self._move_from, self._step_n = anchor
            self._move_start = self._move_last = end

    def _anchor_step(self, end: int) -> tuple[int, int] | None:
        """(absolute sample, samples since the step before) of the last step peak at least ANCHOR_BACK_S before
        walking ended that closes two steps of one rhythm, or None. The last peaks before the verdict ends may be
        the sit-down itself (lowering into a chair shakes the trunk at step frequency too)."""
        s = self.s
        shortest, longest = round(s.step_s[0] * s.rate_hz), round(s.step_s[1] * s.rate_hz)
        peaks = [p - self._walk_offset for p in self._peaks]
        latest = end - round(ANCHOR_BACK_S * s.rate_hz)
        for k in range(len(peaks) - 1, 1, -1):
            p, gap, before = peaks[k], peaks[k] - peaks[k - 1], peaks[k - 1] - peaks[k - 2]
            if (p <= latest and shortest <= gap <= longest and shortest <= before <= longest
                    and abs(gap - before) <= STEP_RHYTHM * before):
                return (p, gap) if end - p <= round((s.walk_window_s + ANCHOR_BACK_S) * s.rate_hz) else None
        return None

    def _up_both_ways(self, lo: int, hi: int, tail: int) -> tuple[np.ndarray, np.ndarray] | None:
        """World up in sensor axes and vertical acceleration (g, gravity removed) over buffer samples lo..hi of a
        movement straight from walking: the mean of the orientation filter's up and of the accelerometer's at the rest
        after turned back by the gyro; None where the buffer does not hold them or the gyro's is not to be trusted.

        Straight from walking the filter's tilt is off by up to 4° (each whole-body turn's centripetal acceleration
        pulls it, then the gyro bias it learnt from them), and a tilt error of δ puts δ × the walking speed into
        vertical velocity as the wearer stops: a 0.45 m fall into a chair read 0.1–0.2 m. The gyro's, turned back from
        a still rest, errs elsewhere (the accelerometer's bias there, bias the rest's mean gets wrong); their mean, as
        a two-filter smoother joins a forward and a backward estimate with equal weights, missed fewer such sit-downs
        than either (docs/pipeline.md, "Activity and sitting time")."""
        if lo < 0 or hi - lo <= tail or hi - lo > GYRO_BACK_MAX_S * self.s.rate_hz:
            return None
        acc, turn, vqf_up = self._acc_buf[lo:hi], self._turn_buf[lo:hi], self._up_buf[lo:hi]
        if not (np.all(np.isfinite(acc)) and np.all(np.isfinite(turn)) and np.all(np.isfinite(vqf_up))):
            return None
        # The rest after must be still in the gyro too: a trunk fidgeting or swaying there turns a degree or two a
        # second back and forth, and its mean, taken off as bias, tilted the up carried back over the window by 8-12°
        # (a helper's stops into a standing fidget: 3 false sit-downs in 187 ends of walks, none with this).
        spread_dps = turn[-tail:].std(axis=0) * DEG_PER_RAD * self.s.rate_hz
        bias = turn[-tail:].mean(axis=0)
        if (float(np.linalg.norm(spread_dps)) > TAIL_SPREAD_MAX_DPS
                or float(np.linalg.norm(bias)) * DEG_PER_RAD * self.s.rate_hz > TAIL_BIAS_MAX_DPS):
            return None  # no rest, or turning in it: no bias to take off, the filter's up alone
        # R(turn from each sample to the last): a world-fixed vector in the last sample's axes, R v, is it in each
        # sample's own; Rᵀ takes each sample's vector into the last sample's axes.
        r = SensorAttitude.of(turns_to_last(turn - bias))
        # Each tail sample's acceleration in the last sample's axes: their mean is gravity there, however the trunk
        # swayed in the tail; taken in each sample's own axes, a sway of a degree or two would tilt it by as much.
        a = acc[-tail:]
        g = (r.row0[-tail:] * a[:, :1] + r.row1[-tail:] * a[:, 1:2] + r.row2[-tail:] * a[:, 2:]).sum(axis=0)
        g /= np.linalg.norm(g)
        gyro_up = np.column_stack([r.row0 @ g, r.row1 @ g, r.row2 @ g])
        if float(row_dot(gyro_up, vqf_up).min()) < GYRO_UP_AGREE:  # (both unit vectors)
            return None  # further from the filter's than its own error goes: the gyro's is wrong (a tail no rest)
        up = gyro_up + vqf_up
        up /= np.linalg.norm(up, axis=1, keepdims=True)
        return up, row_dot(up, acc) - 1.0

    def _step_velocity(self, a: int, rest_g: float, step_x: np.ndarray | None = None) -> float:
        """Vertical velocity (m/s) at absolute sample a, a step's peak, from the step before it: over a whole step
        the trunk neither rises nor falls, so its mean velocity is zero. (The step-band peak is not exactly the
        bottom of the bounce: the band-pass moves it by up to 26° of a step at 1.8 steps/s, and there the trunk
        still moved at 0.15 m/s; taken as zero, a 0.45 m fall into a chair integrated to 0.04 m.)"""
        lo = a - self._step_n - self._buf_start
        if self._step_n <= 0 or lo < 0:
            return 0.0
        x = ((self._vertical(lo, a - self._buf_start) if step_x is None else step_x) - rest_g) * G_M_S2
        # v(t) = v(a) − ∫ₜᵃ x: a zero mean over the step makes v(a) the mean of ∫ₜᵃ x.
        return float(np.mean(np.cumsum(x[::-1])) * self.dt_s)

    def _close_if_quiet(self, now: int, flips: list[tuple[int, int]], base: int, quiet_n: int, margin: int) -> None:
        """Judge the open movement if it has been followed by quiet_n samples of rest before `now`; a fall, also if the
        trunk's tilting has held it open HELD_OPEN_S past that."""
        last = max(self._move_last, self._tilt_last)  # the movement goes on while the trunk still tilts
        if self._move_start is None:
            return
        move_from = self._move_from
        after_walk = move_from is not None
        start = move_from if move_from is not None else self._move_start - margin
        held_at = self._move_last + quiet_n + self._held_n + 1  # where a fall the tilting holds open is judged
        if now >= held_at and self._fall_judged != self._move_last:
            # Once, at the first call past that sample: the tilting runs seen by then all began before it, so the same
            # answer however the stream is batched.
            self._fall_judged = self._move_last
            if self._tilt_last > self._move_last + self._held_n:
                self._add_rests(held_at)
                end = self._move_last + round(MOVE_AFTER_S * self.s.rate_hz)
                if self._judge(start, end, (self._move_start, self._move_last), rest_before=not after_walk,
                               settled=False, fidgeting=True) == SITTING_CODE:
                    self._fidget_from = (self._move_last, self._up_buf[self._move_last - self._buf_start:
                                                                       end - self._buf_start].mean(axis=0))
                    self._move_start = self._move_from = None
                    flips.append((held_at - base, SITTING_CODE))
                    return
        if now - last <= quiet_n:
            return
        # The offset fit as of the sample it is judged at (the rests before it), however the stream is batched.
        self._add_rests(last + quiet_n + 1)
        flip = self._judge(start, last + round(MOVE_AFTER_S * self.s.rate_hz),
                           (self._move_start, self._move_last), rest_before=not after_walk)
        self._move_start = self._move_from = None
        if flip is not None:
            self._fidget_from = None
            # The first quiet sample past the limit, in whichever batch sees it (now − last > quiet_n).
            flips.append((last + quiet_n + 1 - base, flip))

    def _add_rests(self, until: int) -> None:
        """This batch's rest samples before absolute index `until` not yet in the offset fit: into it."""
        base, added, at, up, av_g = self._rests
        take = at[np.searchsorted(at, added - base):np.searchsorted(at, until - base)]
        if len(take):
            self._offset.add(up[take], av_g[take])
        self._rests = (base, max(added, until), at, up, av_g)

    def _judge(self, a: int, b: int, core: tuple[int, int], rest_before: bool = True,
               settled: bool = True, fidgeting: bool = False) -> int | None:
        """Net rise of the upper back over absolute samples a..b, zero vertical velocity at the end (and at the start,
        or after a walk the velocity of its steady steps).

        The accelerometer's offset along vertical is not constant: its bias and gain errors project
        differently once the trunk has tilted (0.03 g of bias, 20° of tilt: 0.01 g, which a 4 s double
        integral turns into 0.2 m). So the resting value is measured before and after the movement and
        blended as the sensor's orientation moved between them (`_blend`), or taken from the day's rests where they
        tell it (`_offset_change`). After a walk there is no rest before (the
        integration starts at a step, where only the velocity is known, `_step_velocity`): the rest after stands
        for both, as walking and sitting tilt the trunk alike. settled: not judged while the trunk still tilts (the
        rest after is no rest yet); `falling_now` judges anyway. fidgeting: a fall with no rest after (the trunk still
        tilts), which must outdo what FIDGET_OFFSET_G along the trunk's way could fake.
        """
        s = self.s
        longest = round((s.move_max_s + 2 * s.move_margin_s + MOVE_AFTER_S) * s.rate_hz)
        if (core[1] - core[0]) * self.dt_s > s.move_core_max_s or b - a > longest or a < self._buf_start:
            return None  # too long to be a sit/stand, or the rest before it was not seen (start of data)
        lo, hi = a - self._buf_start, min(b - self._buf_start, len(self._buf))
        raw, x = self._buf[lo:hi], self._vertical(lo, hi)
        if len(x) < 3:
            return None
        edge = max(1, min(round(REST_EDGE_S * s.rate_hz), len(x) // 3))
        # Judged before it settled (falling_now), the samples before its last half second may still be the movement.
        tail = max(edge, min(round(REST_AFTER_S * s.rate_hz), len(x) // 3)) if settled else edge
        u = self._up_buf[lo:lo + len(x)]
        step_x = None
        if not rest_before and (both := self._up_both_ways(lo - self._step_n, hi, tail)) is not None:
            up_all, x_all = both
            raw = x_all[self._step_n:]
            x_all = bridged(x_all, impulses(self._acc_buf[lo - self._step_n:hi], s.rate_hz))
            u, x, step_x = up_all[self._step_n:], x_all[self._step_n:], x_all[:self._step_n]
        # Means as sum / count, np.mean's own arithmetic without its call overhead (this runs per movement).
        after = float(x[-tail:].sum()) / tail
        before = self._rest_before(lo, x[:edge]) if rest_before else after
        # World up at the two rests, for both the offset bound and the blend.
        up_before, up_after = u[:edge].mean(axis=0), u[-edge:].mean(axis=0)
        if abs(after - before) > _offset_change_bound(up_after - up_before):
            return None  # the rests either side differ by more than a change of orientation explains
        if settled and self._still_tilting(lo + len(x) - edge, edge):
            return None  # the "rest" after is a slow posture change going on: its offset is not the one after
        offset = self._offset_change(u, up_before, tail, after - before if rest_before else None)
        if offset is None:
            core_in_window = (core[0] - self._buf_start - lo, core[1] - self._buf_start - lo)
            offset = (after - before) * self._blend(u, up_before, up_after, core_in_window)
        elif not rest_before:  # the rest after stands for both ends: the offset is measured from there
            offset = offset - float(offset[-tail:].mean())
        v0_m_s = 0.0 if rest_before else self._step_velocity(a, after, step_x)
        acc_m_s2 = landings_kept((x - before - offset) * G_M_S2, (raw - x) * G_M_S2, v0_m_s, self.dt_s)
        rise_m = _zupt_rise_m(acc_m_s2, self.dt_s, v0_m_s)
        if fidgeting:
            # No rest after to measure the offset where the trunk went: a fall must outdo what FIDGET_OFFSET_G of it,
            # seen along the trunk's way from its posture before, could fake through the integral's kernel (T/2 − t).
            away = np.linalg.norm(u - up_before, axis=1)
            kernel_s = np.abs((len(x) - 1) / 2 - np.arange(len(x))) * self.dt_s
            rise_m += FIDGET_OFFSET_G * G_M_S2 * float(away @ kernel_s) * self.dt_s
        if rise_m > 0.0 and self._trunk_up is not None and np.all(np.isfinite(up_after - up_before)):
            # Only from a rise, and down to none (module docstring).
            rise_m = max(0.0, rise_m - TRUNK_LEVER_M * max(0.0, float((up_after - up_before) @ self._trunk_up)))
        if rise_m >= s.stand_rise_m:
            if rest_before and self._in_a_bend(lo, edge, max(0, hi - longest)):
                return None  # a sit-up from a bend, or a rise not to be told from one (module docstring)
            return STANDING_CODE
        if rise_m <= -s.stand_rise_m:
            return SITTING_CODE
        return None

    def _vertical(self, lo: int, hi: int) -> np.ndarray:
        """Vertical acceleration over buffer samples lo..hi (g, less 1 g), impulses (a tap on the case) bridged."""
        return bridged(self._buf[lo:hi], impulses(self._acc_buf[lo:hi], self.s.rate_hz))

    def _rest_before(self, lo: int, x: np.ndarray) -> float:
        """The resting value before a movement whose window starts at buffer sample lo: the mean over its first samples,
        x (impulses bridged), and the settled samples just before the window (up to REST_BEFORE_S in all): world up
        within SETTLED_UP of the edge's, and their mean as close to the edge's as noise allows (else they were another
        rest, or the end of an earlier movement, and the edge stands alone)."""
        edge = len(x)
        edge_sum = float(x.sum())
        more = min(lo, max(0, round(REST_BEFORE_S * self.s.rate_hz) - edge))
        if not more:
            return edge_sum / edge
        d = self._up_buf[lo - more:lo] - self._up_buf[lo:lo + edge].mean(axis=0)
        unsettled = np.flatnonzero(~(row_dot(d, d) <= SETTLED_UP ** 2))  # NaN (no orientation given): unsettled
        k = more - (int(unsettled[-1]) + 1 if len(unsettled) else 0)  # the settled run that ends at the window
        if not k:
            return edge_sum / edge
        ext_sum = float(self._buf[lo - k:lo].sum())
        # Two means of one rest differ by noise alone: 3σ of their difference, σ from the edge's own scatter.
        agree_g = max(REST_NOISE_G, 3.0 * float(np.std(x)) * np.sqrt(1.0 / k + 1.0 / edge))
        if abs(ext_sum / k - edge_sum / edge) > agree_g:
            return edge_sum / edge
        return (ext_sum + edge_sum) / (k + edge)

    def _offset_change(self, u: np.ndarray, up_before: np.ndarray, edge: int,
                       rests_differ_g: float | None) -> np.ndarray | None:
        """The offset's change from the rest before, per sample of the window, from the day's rests; None when they do
        not tell it well enough, or do not predict the change seen between the rests either side (rests_differ_g)."""
        if not np.all(np.isfinite(u)):
            return None
        change, sd = self._offset.change(u, up_before)
        if sd > MODEL_SD_G:
            return None
        if rests_differ_g is not None and abs(float(change[-edge:].mean()) - rests_differ_g) > MODEL_AGREE_G:
            return None
        return change

    def _in_a_bend(self, lo: int, n: int, earliest: int) -> bool:
        """The rest before a movement (buffer samples lo..lo+n) is no rest but part of a bend: the trunk still tilts
        there, and by more than BEND_UP from the latest settled n samples before it (from `earliest` on), or no settled
        n samples were seen there to tell it from one (the link came back, or the data began, inside the bend); after
        a fall judged while the trunk still tilted, by more than FIDGET_COS allows from the posture fallen into."""
        if not self._still_tilting(lo, n):
            return False  # also with no orientation given (NaN)
        fidget = self._fidget_from
        if fidget is not None and fidget[0] - self._buf_start <= lo:
            # Down into a seat (or a crouch) fidgeting, no sit/stand since: a rise from within FIDGET_COS of that
            # posture is from the seat (a fidget's turns pass for settled, and lie more than BEND_UP from its rest:
            # 15 of 27 stand-ups straight from fidgeting refused, the wearer read sitting until the next walk).
            before = self._up_buf[lo:lo + n].mean(axis=0)
            cos_limit = FIDGET_COS * float(np.linalg.norm(before) * np.linalg.norm(fidget[1]))
            return not float(before @ fidget[1]) > cos_limit
        u = self._up_buf[earliest:lo]
        d = u[n - 1:] - u[:max(0, len(u) - n + 1)]  # world up's move over n samples from each start
        settled = np.flatnonzero(row_dot(d, d) <= SETTLED_UP ** 2)
        if not len(settled):
            return True
        e = self._up_buf[lo:lo + n] - u[settled[-1]:settled[-1] + n].mean(axis=0)
        return bool(row_dot(e, e).max() > BEND_UP ** 2)

    def _still_tilting(self, lo: int, n: int) -> bool:
        """World up moved by more than SETTLED_UP over buffer samples lo..lo+n (no orientation given: no)."""
        u = self._up_buf[lo:lo + n]
        if len(u) < 2 or not np.all(np.isfinite(u[[0, -1]])):
            return False
        return bool(np.linalg.norm(u[-1] - u[0]) > SETTLED_UP)

    def _tilt_dps(self, n: int) -> np.ndarray:
        """How fast world up moves in sensor axes for the buffer's last n samples (°/s, the mean of the last
        move_smooth_s of steps; 0 with no orientation given). The buffer's first sample (the stream's start or just
        after a gap) has no step before it: its rate is 0, and the windows after it are shorter."""
        w = self._tilt_window
        u = self._up_buf[-(n + w):]
        step = np.diff(u, axis=0)
        rate = np.nan_to_num(np.sqrt(row_dot(step, step)) * DEG_PER_RAD * self.s.rate_hz)
        if len(u) < n + w:  # u begins at the buffer's first sample
            rate = np.concatenate([[0.0], rate])
        return trailing_mean(rate, n, w)  # rate[k] belongs to u[k + len(u) - len(rate)]; the last n are the batch's

    def _blend(self, u: np.ndarray, u0: np.ndarray, u1: np.ndarray, core: tuple[int, int]) -> np.ndarray:
        """How far the resting value has gone from before to after, per sample of the window.

        A constant accelerometer bias b reads b·up along vertical (up: world up in sensor axes), so
        the resting value moves as the sensor's orientation does: the blend is the orientation's
        progress from its rest before to its rest after. Sitting up from a slouch in a second moves
        the offset under the movement threshold, seconds before a jolt marks a "movement": blended
        across that jolt instead, the change integrated to a quarter-metre "rise". Without an
        orientation change (or none given), across the samples that moved.
        u: world up in sensor axes over the window; u0, u1: its mean at the rest before and after; core: where the
        movement's core begins and ends in the window.
        """
        d: np.ndarray = u1 - u0
        if np.all(np.isfinite(d)) and d @ d > ORIENTATION_CHANGE ** 2:
            progress: np.ndarray = np.clip((u - u0) @ d / (d @ d), 0.0, 1.0)
            return progress
        n = len(u)
        c0 = min(max(core[0], 0), n - 1)  # np.clip's arithmetic on two ints, without its call
        c1 = min(max(core[1], c0), n - 1)
        return np.clip((np.arange(n) - c0) / max(c1 - c0, 1), 0.0, 1.0)


_MOVING, _BLOCKED, _TILTING = range(3)  # kinds of run in _sit_stand_flips


def _offset_change_bound(up_change: np.ndarray) -> float:
    """The most the resting value can move between the two rests: the accelerometer's offset
    (≤ 0.03 g a axis) and gain error (≤ 2 %) seen along a vertical that moved by |Δup| in sensor
    axes (up_change), plus noise. More than that, and one "rest" was not one — the next movement had begun."""
    d = up_change
    moved = float(np.sqrt(d @ d)) if np.all(np.isfinite(d)) else 2.0  # no orientation given: no bound
    return OFFSET_PER_UP_G * moved + REST_NOISE_G


def _zupt_rise_m(acc_m_s2: np.ndarray, dt_s: float, v0_m_s: float = 0.0) -> float:
    """Displacement over the span from velocity v0 at its start, with the velocity's drift removed so it is zero
    at its end."""
    v = v0_m_s + np.cumsum(acc_m_s2) * dt_s
    v -= v[-1] * np.linspace(0.0, 1.0, len(v))
    return float(v.sum() * dt_s)
