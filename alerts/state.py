"""What the alert service remembers per device, as plain JSON-able data: it must survive restarts.

Minutes are kept by their start time, so a message delivered twice (after a crash, before its
acknowledgement) overwrites itself instead of counting twice; of two different copies of a minute (the gateway's
unfinished one at a stop or a lost link, and the whole one) the fuller is kept, whichever came last. Only today's
minutes and the rules' look-back window are kept; finished days shrink to a line each for the habit program.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import asdict, dataclass, field
from typing import Any

from contract.messages import coverage
from contract.validation import Malformed, check_minute
from pipeline.events import MINUTE_S

MINUTE_MS = round(MINUTE_S * 1000)  # minutes are kept by their start in epoch ms

# The metrics values the rules and daily totals read, of those the contract defines (tests/test_contract.py
# holds them to it): a state saved every step keeps only these.
MINUTE_FIELDS = ("worn_s", "sitting_s", "standing_s", "walking_s", "lying_s", "slouch_s", "lean_left_s",
                 "lean_right_s", "lean_left_mean_deg", "lean_right_mean_deg", "flexion_mean_deg", "lateral_mean_deg",
                 "rotations_left", "rotations_right", "rotation_left_cumulative_deg",
                 "rotation_right_cumulative_deg", "sitting_since_s", "seen_until_s",
                 "lost_samples")  # with worn_s, how much of its minute a copy saw (contract/messages.py, coverage)
RECENT = 50  # alert ids and stretch ids remembered, most recent first
# Snoozes taken remembered per device, most recent first: a copy the broker delivers again comes after a reconnect, with
# at most the few a wearer sent during that outage before it.
SNOOZES_KEPT = 10
STARTS_KEPT = 10  # starts of the slouch nudged live remembered (to know its end events by)


@dataclass
class DeviceState:
    day: str | None = None  # local date (YYYY-MM-DD) of the newest minute
    day_start_ms: int | None = None  # when that day began (its local midnight as the zone was then: engine._start_ms)
    # minute start, Unix ms as text (JSON keys) → fields; changed by add_minute and drop_before only (they keep _keys)
    minutes: dict[str, dict[str, Any]] = field(default_factory=dict)
    days: dict[str, dict[str, Any]] = field(default_factory=dict)  # finished days: worn_min, slouch_min, goal_met
    program_start: str | None = None
    last_alert_s: dict[str, float] = field(default_factory=dict)  # kind → data time of the last one sent
    last_held_s: dict[str, float] = field(default_factory=dict)  # kind → data time it was last held back
    # rotation, lean → how much of it the day held when it was last nudged (rules.Finding.amount: the SI, the minutes
    # leaning); the day's own
    told: dict[str, float] = field(default_factory=dict)
    sent_today: int = 0  # nudges sent that count on `day` (contract alert_day)
    # … and on the days either side of it, while they are not `day`: a live nudge after midnight, before the new
    # day's first minute opens it (its count starts then from this), or a late event's (the day before's cap).
    sent_other_days: dict[str, int] = field(default_factory=dict)
    held_today: dict[str, int] = field(default_factory=dict)  # reason → findings held back that count on `day`
    # … and on the days either side of it, as sent_other_days (a live nudge held after midnight, before the new day's
    # first minute opens it; a late event's of the day before): each day's alerts_held counts its own findings.
    held_other_days: dict[str, dict[str, int]] = field(default_factory=dict)
    sent_ids: list[str] = field(default_factory=list)
    recent_stretches: list[str] = field(default_factory=list)
    snooze_until_s: float | None = None  # wall clock
    snoozes_taken: list[str] = field(default_factory=list)  # the latest snoozes' identities (alerts.service.snooze_id)
    slouch_alert_s: float | None = None  # a slouch nudge whose recovery we still watch for
    # The real-time nudge (rules.slouch_now), each slouch known by its start (slouching_since_s, sensor time):
    slouch_now_done_s: float | None = None  # the latest slouch that needs no live nudge: nudged, by either kind
    slouch_now_sent_s: float | None = None  # the latest slouch the live rule nudged
    # … and the starts it has gone by since: its own, then each start the pipeline re-found it at after ending it
    # for no posture reason (a BLE gap, a gateway restart, a recalibration), the latest last; at most STARTS_KEPT
    slouch_now_starts: list[float] = field(default_factory=list)
    slouch_now_open: bool = False  # … and live states have not shown it over yet (its follow-up is due)
    slouch_now_over_s: float | None = None  # when it was seen over: the minute-based rules' cooldown runs from then
    slouch_now_held_s: float | None = None  # a slouch whose nudge was held back: a later try is at its live time
    # The live stream was current at the latest minute (engine._nudged_slouch_goes_on): what a restart goes by until
    # its first live state, which comes after the minutes the broker kept for it
    live_current: bool = False
    # The service's clock minus the gateway's data clock, as its live states show it (engine._learn_offset: they are
    # neither queued nor spooled, so none is late), and when it was last seen so (wall clock): what tells a late
    # minute (policy.late_s). Saved with the device's next write, so that after a restart the backlog the broker
    # delivers before any live state is judged by it too. None: no live stream seen (gateway.live_hz 0).
    clock_offset_s: float | None = None
    clock_offset_at_s: float | None = None
    # Refusals of the calibration moves told at once, as answers (engine.on_event), since the latest request told
    # (engine._decide) or calibration made: ANSWERS_PER_REQUEST at most, then they are requests again.
    answers_told: int = 0
    # … the time (sensor s) of the latest request or calibration made seen: one delivered again or late (QoS 1
    # redelivers; a gateway's spool sends again what its broker had not acknowledged) is no new one
    answers_from_s: float | None = None
    # … and the latest request was held (quiet hours, a snooze) and none told since: the wearer does not know of it
    request_unsaid: bool = False
    # … and, held by quiet hours or a snooze (engine.REQUEST_WAITS_FOR), its time (sensor s) and its finding's evidence
    # ({"t_s", "evidence"}; empty: none waits): told with its own words at the device's first data after the hold is
    # over, while request_unsaid (engine._request_held_over). A state of before keeps no words: its request is not told.
    request_waiting: dict[str, Any] = field(default_factory=dict)
    summary_sent_day: str | None = None
    summary_goal_met: bool | None = None  # the verdict that day's summary told: the day's, for streak and program
    late_minutes: int = 0  # minutes of days already closed, ignored
    minutes_superseded: int = 0  # copies of a minute that saw less of it than the copy kept, ignored (add_minute)
    # Minutes kept before the contract bounded a minute (contract/validation.py check_minute, 2026-12-06) that it
    # refuses (60 s slouched in 1 s worn, 10**9 rotations): dropped when the state is read, so the day's totals, its
    # `today` and its rules count none of them, as they count none arriving now.
    minutes_refused: int = 0
    # The streak as of the newest finished day no longer kept (engine.KEEP_DAYS): the kept days' streak goes on
    # from it, else it stopped growing at KEEP_DAYS + 1 (Home Assistant's Streak stuck at 63 d)
    streak_before: int = 0
    # The program's days that met the goal among the finished days no longer kept: the summary's "goal met on N of 31
    # days" counted the kept days alone, and from 63 days after the program began it shrank to "0 of 31"
    program_met_before: int = 0

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        # The minutes' keys by their start: a window, the latest or those to drop without a look at every minute kept
        # (and a sort), which made each minute's cost grow with the day's minutes. ValueError: a key that is no time.
        self._keys = sorted(self.minutes, key=int)

    def add_minute(self, doc: dict[str, Any]) -> bool:
        """Keeps the minute, unless the copy of it kept already saw more of it (contract/messages.py, coverage: the
        bridge's rule): the gateway sends some minutes twice, unfinished at a stop or a lost link and then whole, and
        the unfinished copy may come last (resent from its spool after a restart). Of equal copies the later is kept.
        Returns whether it was kept; one that was not is counted (minutes_superseded)."""
        # Hundredths of a second or degree are plenty, and keep a day's state (saved each minute) small.
        kept = {k: round(v, 2) if isinstance(v, float) else v for k in MINUTE_FIELDS if (v := doc.get(k)) is not None}
        old = self.minutes.get(key := str(doc["ts"]))
        if old is not None and coverage(kept) < coverage(old):
            self.minutes_superseded += 1
            return False
        if old is None:
            insort(self._keys, key, key=int)
        self.minutes[key] = kept
        return True

    def drop_before(self, start_ms: float) -> list[str]:
        """Forgets the minutes that start before start_ms; returns their keys."""
        gone = self._keys[:bisect_left(self._keys, start_ms, key=int)]
        del self._keys[:len(gone)]
        for key in gone:
            del self.minutes[key]
        return gone

    def latest_key(self) -> str | None:
        """The key of the latest minute kept."""
        return self._keys[-1] if self._keys else None

    def sent_on(self, day: str) -> int:
        """Nudges sent that count on `day` (YYYY-MM-DD)."""
        return self.sent_today if day == self.day else self.sent_other_days.get(day, 0)

    def count_sent(self, day: str) -> None:
        if day == self.day:
            self.sent_today += 1
        else:  # a new dict: a copy of the state (engine.today_state) must not change the original's
            self.sent_other_days = {**self.sent_other_days, day: self.sent_other_days.get(day, 0) + 1}

    def held_on(self, day: str) -> dict[str, int]:
        """Findings held back, by reason, that count on `day` (YYYY-MM-DD)."""
        return self.held_today if day == self.day else self.held_other_days.get(day, {})

    def count_held(self, day: str, reason: str) -> None:
        """One more finding held back for `reason` that counts on `day` (YYYY-MM-DD, contract alert_day)."""
        held = self.held_on(day)
        held = {**held, reason: held.get(reason, 0) + 1}  # new dicts: a copy of the state must not change its original
        if day == self.day:
            self.held_today = held
        else:
            self.held_other_days = {**self.held_other_days, day: held}

    def window(self, end_ms: int, minutes: float) -> list[dict[str, Any]]:
        """The minutes that start within `minutes` before end_ms, oldest first."""
        return self.between(end_ms - minutes * MINUTE_MS, end_ms)

    def between(self, start_ms: float, end_ms: float) -> list[dict[str, Any]]:
        """The minutes that start at start_ms or after it and before end_ms, oldest first."""
        keys = self._keys
        return [self.minutes[k] for k in keys[bisect_left(keys, start_ms, key=int):bisect_left(keys, end_ms, key=int)]]

    def remember(self, attr: str, item: str, kept: int = RECENT) -> None:
        items = getattr(self, attr)
        setattr(self, attr, [item, *(i for i in items if i != item)][:kept])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DeviceState:
        """ValueError if `data` is no device record: not a JSON object, or a field not of its default's type (a field
        holding None by default may hold a number or text). Keys it does not know are ignored, missing ones default."""
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object but {type(data).__name__}")
        for name, value in data.items():
            kind = _KINDS.get(name)
            if kind is not None and not (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
                raise ValueError(f"{name} is {type(value).__name__}, not {kind.__name__}")
            if kind is None and name in cls.__dataclass_fields__ and not isinstance(value, (int, float, str)) \
                    and value is not None:
                raise ValueError(f"{name} is {type(value).__name__}")
        state = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if refused := [key for key, minute in state.minutes.items() if _refused(minute)]:
            state.minutes = {k: m for k, m in state.minutes.items() if k not in refused}
            state._index()
            state.minutes_refused += len(refused)
        return state


def _refused(minute: Any) -> bool:
    """A kept minute the contract refuses. One that is no minute at all (a hand edit) is not for it to judge: the rules
    meet it as they did."""
    try:
        check_minute(minute)
    except Malformed:
        return True
    except (TypeError, AttributeError):
        return False
    return False


# Each field's type, for those not None by default: what from_dict holds a saved record to.
_KINDS = {name: type(value) for name in DeviceState.__dataclass_fields__
          if (value := getattr(DeviceState(), name)) is not None}
