"""What the pipeline reports: typed events and per-minute metrics. Times are host Unix seconds."""

from __future__ import annotations

from dataclasses import dataclass, field

# The words and bounds the messages are made of, here and not beside the signal code that uses them: the contract,
# the services and the report read them, and this module imports no numpy or scipy (the services start without them).
SITTING, STANDING, WALKING, LYING = "sitting", "standing", "walking", "lying"
ACTIVITIES = (SITTING, STANDING, WALKING, LYING)
NOT_WORN = "not_worn"  # the live state's activity while the sensor is off the body
SIDES = ("left", "right")
# The sample rates `pipeline.rate_hz` may ask of a sensor, each bound excluded (service_io/config.py), and the
# rate asked when it does not say. The contract bounds a minute's lost samples by the fastest
# (contract/schemas/metrics.json).
RATE_HZ_RANGE = (25.0, 400.0)
RATE_HZ_DEFAULT = 100.0
MINUTE_S = 60.0  # the length of a minute of metrics (MinuteMetrics): the contract bounds its times by it
# Unseen time (no sample measured) that ends a sitting stretch (sitting_since_s). Shorter gaps are a flaky link: the
# watchdog's 3 s and a reconnect (sensor/link.py: a few attempts, a rediscovery) take seconds to a minute, and the
# long-sitting alert, counting from sitting_since_s, must not start again after each. A longer one is a sensor that was
# off or out of reach (a battery that died at the desk, a night): the stretch before it is not the one after it, and
# kept, it would make a wearer who sits the next morning "sitting since yesterday". The alert service reads it too: a
# sensor unseen longer than this is sitting in no stretch its last minute showed (alerts/engine.py).
SITTING_GAP_S = 300.0
# How long the wearer holds still, sitting upright, before the calibration bend (calibration.CalibrationSettings.hold_s
# by default), and the moves they are asked for: the pipeline's requests say them with the hold it is set to, the
# alert service with this one where it has no request's words (a calibration's age, a gateway from before `ask`).
CALIBRATION_HOLD_S = 3.0
# How long a calibration the wearer made is trusted before the pipeline asks for the moves again (calibration.
# CalibrationSettings.max_age_s by default; `pipeline.calibration_max_age_h`, service_io/config.py): a sensor worn
# through a night and a day may have crept on the back (tape stretches, a strap or clip shifts) by less than any check
# finds. Here, beside the hold, as the services' config reads it and imports no signal code.
CALIBRATION_MAX_AGE_S = 24 * 3600.0


def calibration_moves(hold_s: float = CALIBRATION_HOLD_S) -> str:
    """What the wearer is asked to do to calibrate."""
    return f"sit upright and still for {hold_s:g} s, bend forward once and sit up"


@dataclass(frozen=True)
class SlouchEpisode:
    start_s: float
    end_s: float
    peak_flexion_deg: float
    mean_flexion_deg: float
    kind: str = "slouch"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class RotationExcursion:
    start_s: float
    end_s: float
    side: str  # "left" | "right"
    peak_deg: float  # absolute peak of axial rotation in the excursion
    kind: str = "rotation"


@dataclass(frozen=True)
class LeanInterval:
    start_s: float
    end_s: float
    side: str
    mean_lateral_deg: float  # signed: + right
    kind: str = "lean"


@dataclass(frozen=True)
class CalibrationEvent:
    t_s: float
    status: str  # "calibrated" | "refused" | "recalibrate"
    message: str  # the whole line, as the log, the console and the report show it
    with_bend: bool = False
    # "calibrated": when the wearer made the calibration now in use (sensor time, Unix s): t_s for one made now, the
    # earlier time for one restored from the gateway's last run or corrected from walking; None: not known (restored
    # from a file kept before it said). Sent with "calibrated" only (contract/messages.py): the age of a calibration
    # (the alert service's `calibration` rule) is counted from it, and a restart or a correction is no new one.
    calibrated_s: float | None = None
    # "refused", "recalibrate" (made by `asking`): the message's two parts, why and what the wearer is asked to do
    # (the moves, with the hold they are set to; or turn the sensor over, bend once more to confirm …), each whole: the
    # alert service says them as they are, where it cut the message at the words "sit upright" to tell them apart.
    reason: str | None = None
    ask: str | None = None
    # "calibrated", restored with the moves the last run asked for and did not see made: watched for still, so the
    # alert service tells a request it holds for them (after a restored full calibration without one it drops it).
    request_pending: bool = False
    kind: str = "calibration"


def asking(t_s: float, status: str, reason: str, ask: str, joint: str = ": ") -> CalibrationEvent:
    """A refusal or a request to recalibrate: why, and what the wearer is asked to do, joined into its message ("the
    forward bend did not come back within 10 s: sit upright … again"; a request begins "recalibrate: ")."""
    prefix = "recalibrate: " if status == "recalibrate" else ""
    return CalibrationEvent(t_s, status, f"{prefix}{reason}{joint}{ask}", reason=reason, ask=ask)


@dataclass(frozen=True)
class EpisodeStart:
    """A slouch or lean that its dwell has just confirmed, while it goes on: sent once, before the episode
    (SlouchEpisode, LeanInterval) that reports it when it ends, with the same start_s. Consumers count
    episodes by their end; the start only says one is under way."""

    episode: str  # "slouch" | "lean"
    start_s: float
    confirmed_after_s: float  # the dwell it took: confirmed at start_s + this (sensor time)
    side: str | None = None  # lean: "left" | "right" as it stood when confirmed
    kind: str = "episode_start"


# What PipelineOutput.events holds.
Event = SlouchEpisode | RotationExcursion | LeanInterval | CalibrationEvent | EpisodeStart


@dataclass(frozen=True)
class EarlierState:
    """A state of the same batch before a live state's own (its angles only): with gateway.live_hz above one per
    pipeline batch, one message carries the batch's states."""

    t_s: float
    flexion_deg: float
    lateral_deg: float
    rotation_deg: float


@dataclass(frozen=True)
class LiveState:
    """What the wearer is doing now: the latest sample's angles and the states open at it (`posture run`
    publishes one about every 1/gateway.live_hz s). Angles and activity are None until calibrated."""

    t_s: float
    calibration: str  # "uncalibrated" | "provisional" (no forward bend yet) | "calibrated" | "recalibrate"
    flexion_deg: float | None = None  # + forward
    lateral_deg: float | None = None  # + right
    rotation_deg: float | None = None  # + right, against the facing direction
    activity: str | None = None  # sitting | standing | walking | lying
    slouching_since_s: float | None = None  # start of the slouch going on, once its dwell confirmed it
    leaning_since_s: float | None = None
    lean_side: str | None = None  # "left" | "right" while leaning
    sitting_since_s: float | None = None  # start of the current sitting stretch
    earlier: tuple[EarlierState, ...] = ()  # the batch's states before this one (gateway.live_hz), oldest first
    kind: str = "live"


@dataclass
class MinuteMetrics:
    """One minute of one device; all durations in seconds of that minute."""

    minute_start_s: float
    worn_s: float = 0.0
    sitting_s: float = 0.0
    standing_s: float = 0.0
    walking_s: float = 0.0
    lying_s: float = 0.0
    slouch_s: float = 0.0
    lean_left_s: float = 0.0
    lean_right_s: float = 0.0
    lean_left_mean_deg: float | None = None
    lean_right_mean_deg: float | None = None
    flexion_mean_deg: float | None = None  # over the worn seconds not lying (metrics.upright_s)
    lateral_mean_deg: float | None = None  # likewise
    rotations_left: int = 0
    rotations_right: int = 0
    rotation_left_peak_mean_deg: float | None = None
    rotation_right_peak_mean_deg: float | None = None
    rotation_left_peak_max_deg: float | None = None
    rotation_right_peak_max_deg: float | None = None
    rotation_left_cumulative_deg: float = 0.0
    rotation_right_cumulative_deg: float = 0.0
    sitting_since_s: float | None = None  # start of the current sitting stretch, at the minute's last sample
    lost_samples: int = 0
    # Where the minute's data ends: its last sample's time plus the sample period, at most the minute's end (None
    # while it holds no sample). A minute cut short (a lost link, a stop) ends before its end: how long the wearer had
    # sat by then is counted to here (alerts/rules.py, sitting_s), not to the minute's end.
    seen_until_s: float | None = None
    kind: str = field(default="metrics")
