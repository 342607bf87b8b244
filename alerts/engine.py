"""The alert service's logic, free of I/O: validated messages in, alert payloads out.

Per device it keeps a DeviceState (alerts/state.py) and, for each minute of metrics or
event, runs the rules, lets the policy hold back what must not go out now, and picks a stretch
that addresses the deficit (not the one suggested last). The live state (about once a second)
drives the real-time slouch nudge and its "recovered" follow-up (a minute worn without a slouch also ends the slouch
nudged live: live states may be lost); it changes the saved state only
when one of them moves, which on_live reports so the service writes nothing for the rest (how long the
live states have shown no slouch is kept in memory: a restart counts it afresh). The
daily summary and the 31-day habit program run on the wall clock (`tick`). All state is JSON,
saved by the service with what it sends.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Mapping
from datetime import date as Date
from datetime import datetime, timedelta, tzinfo
from datetime import time as TimeOfDay
from statistics import median
from typing import Any, TypeVar

import orjson

from alerts import rules as r
from alerts.catalog import Catalog
from alerts.compose import alert_id, alert_payload, summary_payload
from alerts.policy import held_reason, in_turn, last_nudge_s, local
from alerts.settings import Rules
from alerts.state import MINUTE_MS, SNOOZES_KEPT, STARTS_KEPT, DeviceState
from contract.messages import alert_day, is_nudge
from pipeline.events import LYING, NOT_WORN, SITTING_GAP_S
from pipeline.summary import DayTotals, day_totals
from service_io.zones import iana_name

# A day's last minute goes out some seconds after midnight (the pipeline's hold), an event at once: one this
# soon after midnight does not close the day before that minute is in (docs/alerts.md).
DAY_CLOSE_LAG_S = 120.0
# A device with none of today's data this long after midnight is shown the new day, empty: longer than a minute takes
# to arrive, so a sensor worn over midnight moves to the new day by its own first minute.
DAY_BEGUN_AFTER_S = 180.0
KEEP_DAYS = 62  # finished days kept for the streak and the program
# The two slouch nudges share one cooldown: the slow, minute-based one a minute after the live one would be the
# same slouch's second nudge (for the minute-based rules it runs from the end of a slouch nudged live, which they
# do not nudge while it goes on). Praise has no cooldown: it comes once per nudge.
SLOUCH_NUDGES = ("slouch", "slouch_now")
# The slouch nudged live is over once live states with posture measured have shown no slouch for this long, with
# no gap between two of them longer than LIVE_MAX_GAP_S. Longer than a slouch that goes on can look absent: the
# pipeline ends an open slouch for reasons that are not posture (a BLE gap over 1 s, a gateway stop or restart, a
# recalibration) and shows the slouch it finds again only once its dwell (5 s, pipeline.slouch_dwell_s) confirmed
# it, in the next batch (1 s, gateway.pipeline_batch_s), on the next live state (1 s at gateway.live_hz 1): up to
# about 7 s without it. A few seconds upright in the middle of a slouch are no end of it either.
RECOVER_HOLD_S = 10.0
# Live states come about once a second; after a longer gap (lost messages, a BLE gap, a gateway restart) the stream
# cannot say what happened in it, so the count of slouch-free seconds starts again. So does a state backwards in
# sensor time (after one from a clock that jumped ahead, or a forged one).
LIVE_MAX_GAP_S = 3.0
# A live state's open states began at or before it: its ts is its latest sample's time, rounded to the ms (the slack
# is for that). A later start is no state of a pipeline; the service refuses it as malformed.
LIVE_STARTS = ("slouching_since_s", "leaning_since_s", "sitting_since_s")
LIVE_START_SLACK_S = 1.0
# A minute of metrics worn this long with no slouch in it shows the slouch nudged live over, if the live states have
# not (engine._minute_shows_nudged_slouch_over): at least RECOVER_HOLD_S and the dwell (5 s) in it without one, as a
# minute handed out unfinished (a lost link) may end in a slouch its dwell had not confirmed yet; half the minute.
MINUTE_OVER_WORN_S = 30.0
# A live state this close to a minute's end says what is going on at that minute.
LIVE_FRESH_S = 120.0
# Live states whose clock offsets the median is of (_learn_offset): about as many seconds at gateway.live_hz 1.
OFFSETS_KEPT = 9
# … and how many there must be before their median is taken: a majority of the kept, so that no single state (a
# forged one, or a clock's glitch: a live state's ts may be any time) sets the offset. With one taken alone, a live
# state a day ahead held every "now" nudge as late for OFFSET_KEPT_S (an hour) where no other live state followed.
OFFSETS_AGREE = OFFSETS_KEPT // 2 + 1
# A minute or event of a local day more than this many days before the service's own date does not open a day (the
# device's first, or one after its latest): a gateway whose clock is far behind (a Raspberry Pi booted without RTC or
# NTP: the contract refuses only times before 2000, the service before 2020) set a new wearer's program start a month
# or a year back (the program over, "day 32 of 31", at their first real minute), and opened its old day for any wearer,
# closing it with a verdict the streak and program counted. A week: the broker keeps the service's session (and what it
# queued) alerts.session_expiry_s, 7 days by default; a gateway's backlog older than that still goes to InfluxDB.
MAX_BEHIND_DAYS = 7
# A device's state is saved as records (dump, changes): `device/<id>`, all of it but its minutes, and one
# `minute/<id>/<minute's ts>` for each minute kept, [its place in arrival order, the minute]. A minute rewrites its own
# record and the device's, not every minute of the day: one record of all of them grew with the day (at 16 h, 0.34 MB
# encoded and written for each minute, two thirds of the minute's cost). A record of before holds its minutes itself.
DEVICE_KEY, MINUTE_KEY = "device/", "minute/"
# Refusals of the calibration moves told at once as answers (rules.Finding.answer), since the latest request told (a
# `recalibrate` event, sent to the phone) or calibration made: a wearer who tries, fails and tries again
# hears each of their first tries' answers. The calibrator refuses what it watched, while it looks for a calibration,
# whoever made it: with a knocked sensor the wearer does not recalibrate, everyday moves are refused too (a simulated
# desk day: 15 in the 40 min after the request, at most one a minute, refusal_every_s): past these, a refusal is a
# request again, under the policy and the requests' cooldown.
ANSWERS_PER_REQUEST = 3
# The holds a calibration request held waits out, to be told at the device's first data after them
# (_request_held_over): the wearer's "not now" (the night, a snooze), not "never", and a backlog's staleness (a gateway
# out of the network sends its requests late; what they ask for is still to do). The pipeline asks once for a reason,
# so a request held at 23:30 (a sensor put on late, a calibration that turned 24 h old at night) was never told, and
# the calibrator watched for moves nobody made. Not the requests' cooldown: it holds none the wearer has not heard (one
# was told within it: request_unsaid is not set); the daily cap and its pace hold no request (policy.held_reason).
REQUEST_WAITS_FOR = ("quiet_hours", "snoozed", "stale")
# A calibration said within this of when it was made was made then (calibrated_s is t_s to the 10 ms the contract
# keeps times to); a restored one was made at least a batch before.
SAME_CALIBRATION_S = 0.5
POSTURES = ("upright", "slouching", "leaning_left", "leaning_right", "standing", "walking", "lying", NOT_WORN)


class FarBehind(Exception):
    """A minute or event of a day more than MAX_BEHIND_DAYS before the service's clock's that would open a day: not
    counted, nothing of the device's state changed (the service counts and says it)."""

    def __init__(self, device: str, day: str, today: str):
        super().__init__(f"{day} is {(Date.fromisoformat(today) - Date.fromisoformat(day)).days} days before this "
                         f"clock's {today}")
        self.device, self.day = device, day


class AlertEngine:
    def __init__(self, rules: Rules, catalog: Catalog, tz: tzinfo | None = None):
        self.rules, self.catalog, self.tz = rules, catalog, tz
        self.devices: dict[str, DeviceState] = {}
        # The latest live state per device (by arrival, see on_live), in memory only: it changes every second, and a
        # restart learns it again within one.
        self.live: dict[str, dict[str, Any]] = {}
        # The latest status per device (by arrival: a will's ts is when its gateway connected), in memory only: the
        # broker keeps it retained and delivers it at every subscribe. What `today` says of sitting now goes by it.
        self.status: dict[str, dict[str, Any]] = {}
        # Per device, the sensor time of the first of the live states that have shown posture measured and no
        # slouch, unbroken, up to the latest; in memory only (a restart counts afresh: it cannot know the gap).
        self._clear_from: dict[str, float] = {}
        # Per device, the time of the latest live state that showed a slouch (in memory only): with the slouch's end
        # events (slouch_now_over_s), how long the nudged slouch was seen to last.
        self._slouch_seen_s: dict[str, float] = {}
        # Per device, the slouch the live states show as the wearer has slouched it (in memory only): the pipeline's
        # start of its latest piece and the start of the whole (_slouching_since). Before its nudge, a slouch the
        # pipeline ended for no posture reason and found again is still one slouch, its delay counted from its start.
        self._slouch_pieces: dict[str, tuple[float, float]] = {}
        # Per device, the time of the first live state with posture measured and no slouch after the latest that showed
        # one (in memory only).
        self._upright_seen_s: dict[str, float] = {}
        # Per device, the offsets (service clock − data time) of its latest live states, for _learn_offset
        self._offsets: dict[str, deque[float]] = {}
        # Per device, today's minutes folded so far, in the order _fold folds them (arrival, the minutes dict's
        # own): each new minute is added to it instead of the day folded again for the rules and again for the retained
        # `today` (which made a message's cost grow with the minutes of the day). Dropped whenever a device's day
        # changes, a minute comes again (it replaces its first copy) or the states are loaded.
        self._folded: dict[str, DayTotals] = {}
        # Per device, each kept minute's place in arrival order (the minutes dict's own), saved in its record: a
        # restart folds the day in the same order, to the same totals. Places are the engine's, never reused.
        self._places: dict[str, dict[str, int]] = {}
        self._next_place = 0
        # Per device, the minutes whose record is to be written (kept) or deleted (no longer kept) with its next state
        # write (changes).
        self._unsaved: dict[str, set[str]] = {}
        # The devices that may still owe today's summary: tick, run at every step of the service, looks at these only
        # (looking at all of them took 0.8 ms a step at 3,000 devices, most of a fleet's alert service).
        self._summary_due: set[str] = set()
        self._ticked_s = float("-inf")  # the clock at the last tick: one set back may make a set-aside day due again
        self._calendar_day: str | None = None  # the local date days_begun last looked at
        self._wait_from: tuple[str, float] = ("", 0.0)  # the day, and when its summary's fallback wait began

    # state --------------------------------------------------------------------------
    def dump(self, devices: set[str]) -> dict[str, bytes]:
        """These devices' whole states as JSON records (DEVICE_KEY, MINUTE_KEY), as load reads them."""
        out: dict[str, bytes] = {}
        for device in devices & self.devices.keys():
            out[DEVICE_KEY + device] = _encoded(self.devices[device])
            out |= {MINUTE_KEY + f"{device}/{key}": self._minute_record(device, key)
                    for key in self.devices[device].minutes}
        return out

    def changes(self, devices: set[str]) -> dict[str, bytes | None]:
        """What changed of these devices' states since they were last written, as records to set (None: to delete):
        each device's record, and its minutes added, replaced or dropped. What the service writes with each step: a
        minute rewrites its device's record and its own, not all the day's minutes, nor other devices'."""
        out: dict[str, bytes | None] = {}
        for device in devices & self.devices.keys():
            out[DEVICE_KEY + device] = _encoded(self.devices[device])
            minutes = self.devices[device].minutes
            for key in self._unsaved.pop(device, ()):
                out[MINUTE_KEY + f"{device}/{key}"] = self._minute_record(device, key) if key in minutes else None
        return out

    def _minute_record(self, device: str, key: str) -> bytes:
        return _json([self._places[device][key], self.devices[device].minutes[key]])

    def load(self, records: Mapping[str, bytes]) -> dict[str, str]:
        """The devices' states, from their records (dump's, changes'). A record that cannot be read (truncated by a
        hand edit or a bad restore, not a device's state) is left out, that device starting afresh: it stopped every
        other device's start. Returns why, by device, for those. A minute record that cannot be read is left out (and
        counted, minutes_refused) as a minute the contract refuses; it is deleted with the device's next write, as are
        the minute records of a device that starts afresh and those beside a record that holds its minutes itself."""
        self.devices, unreadable = {}, {}
        self._places, self._unsaved, self._next_place = {}, {}, 0
        minutes: dict[str, dict[str, bytes]] = {}
        for key, value in records.items():
            if key.startswith(MINUTE_KEY):
                device, _, ts = key.removeprefix(MINUTE_KEY).rpartition("/")
                minutes.setdefault(device, {})[ts] = value
        for key, value in records.items():
            if key.startswith(DEVICE_KEY):
                device = key.removeprefix(DEVICE_KEY)
                try:
                    data = json.loads(value)
                    self.devices[device], self._places[device] = _read_state(data, minutes.get(device, {}))
                except (ValueError, RecursionError) as exc:  # JSON's errors, a bad UTF-8, from_dict's
                    unreadable[device] = str(exc) or type(exc).__name__
                    continue
                if "minutes" in data:  # a record of before, holding its minutes: each gets its own record
                    self._unsaved[device] = set(self._places[device])
        for device, saved in minutes.items():
            # The records of minutes not kept (unreadable, refused, beside a record holding its minutes, or of a device
            # that starts afresh) are deleted.
            self._unsaved.setdefault(device, set()).update(saved.keys() - self._places.get(device, {}).keys())
        for places in self._places.values():
            self._next_place = max(self._next_place, max(places.values(), default=-1) + 1)
        self._folded = {}
        self._summary_due = set(self.devices)
        return unreadable

    def _state(self, device: str) -> DeviceState:
        return self.devices.setdefault(device, DeviceState())

    # inputs -------------------------------------------------------------------------
    def on_metrics(self, doc: dict[str, Any], now_s: float) -> list[dict[str, Any]]:
        """FarBehind: a minute far behind this clock that would open a day (MAX_BEHIND_DAYS)."""
        device, day = doc["device"], self._date(doc["ts"] / 1000)
        end_ms = doc["ts"] + MINUTE_MS
        state = self.devices.get(device)
        if state is not None and state.day is not None and doc["ts"] < self._start_ms(state):
            state.late_minutes += 1  # a day already closed: its summary and streak are settled
            return []
        self._check_behind(device, state, day, now_s)
        state = self._state(device)
        again = str(doc["ts"]) in state.minutes  # (so of state.day: an earlier day's minute is late, above)
        if again and not state.add_minute(doc):  # a copy that saw less of the minute than the one kept: ignored
            return []
        folded = self._folded.pop(device, None)  # stale from here on, also should a bug stop this minute half-way
        if state.day is None or day > state.day:  # (an earlier date after the open day began: the zone moved west)
            self._close_day(state, day)
            folded = None
        if not again:
            state.add_minute(doc)
        self._kept(device, str(doc["ts"]))
        if (state.summary_sent_day == day and (at := self.rules.habit.summary_at()) is not None
                and doc["ts"] < (due_ms := self._summary_due_ms(day, at))):
            # A minute before summary_time that came after a summary sent on the fallback (the sensor's backlog): the
            # day is judged on all that arrived up to then, not only on what the summary could see.
            state.summary_goal_met = self._goal_met(self._fold(state, due_ms))
        self._summary_due.add(device)
        self._prune(device, state, end_ms)  # never today's minutes
        if folded is None or again:
            folded = self._fold(state)
        else:
            folded.add(state.minutes[str(doc["ts"])])
        self._folded[device] = folded
        over = self._minute_shows_nudged_slouch_over(device, state, doc, now_s)
        rules, up = self.rules, r.upright(doc)
        found = [
            rules.slouch.enabled and (r.slouch_unbroken(state, end_ms, rules) or r.slouch_share(state, end_ms, rules)),
            # The day's imbalances, told to a wearer up (the sensor on, not lying) at this minute: the stretch is now.
            rules.rotation.enabled and up and r.rotation_asymmetry(folded, end_ms, rules, state.told.get("rotation")),
            rules.lean.enabled and up and r.lean_asymmetry(folded, end_ms, rules, state.told.get("lean")),
            rules.sitting.enabled and r.long_sitting(doc, end_ms, rules),
            rules.recovery.enabled and r.recovery(state, end_ms, rules),
        ]
        if self._nudged_slouch_goes_on(device, state, end_ms / 1000):  # its nudge went out live already
            found = [f for f in found if not f or f.kind != "slouch"]
        return over + self._decide(device, state, [f for f in found if f], now_s) + \
            self._request_held_over(device, state, end_ms / 1000, now_s)

    def on_event(self, doc: dict[str, Any], now_s: float) -> list[dict[str, Any]]:
        """FarBehind: an event far behind this clock that would open a day (MAX_BEHIND_DAYS)."""
        if doc["kind"] == "episode_start":  # a slouch or lean under way: never an episode (its end is), no nudge
            return []
        device = doc["device"]
        data_s = doc.get("end_s", doc.get("t_s", doc["ts"] / 1000))  # when it was over: where its news is
        day = self._date(data_s - DAY_CLOSE_LAG_S)
        self._check_behind(device, self.devices.get(device), day, now_s)
        state = self._state(device)
        if state.day is None or day > state.day:  # the morning's first word may be an event: a new day's cap
            self._close_day(state, day)
            self._folded.pop(device, None)
        if doc["kind"] == "calibration" and (doc["status"] == "recalibrate" or _made_now(doc)) \
                and (state.answers_from_s is None or doc["t_s"] > state.answers_from_s):
            # A calibration made: the next refusals answer new moves. A new request does so once it is told (_decide):
            # held (quiet hours, the cooldown of one told earlier), a sensor picked up at 23:30 had the refusals of
            # everyday moves told at once at night, three more, for a request the wearer never heard.
            state.answers_from_s = doc["t_s"]
            state.request_waiting = {}  # one before it is no longer the latest (a calibration made ends it too)
            if doc["status"] == "calibrated":
                state.answers_told = 0
            # A request the wearer does not know of (held: quiet hours, a snooze) has them make no moves: the refusals
            # after it are the sensor's. Known if it goes out now (_decide clears this) or one went out within the
            # cooldown that holds it; a calibration made leaves none open.
            since_s = doc["t_s"] - state.last_alert_s.get("calibration", -1e18)
            state.request_unsaid = (doc["status"] == "recalibrate"
                                    and since_s >= 60 * self.rules.calibration.cooldown_min)
        elif (doc["kind"] == "calibration" and doc["status"] == "calibrated" and doc.get("with_bend")
              and not doc.get("request_pending") and state.request_waiting
              and doc["t_s"] > state.request_waiting["t_s"]):
            # A full calibration a restart of the gateway restored without the request (a gateway from before it kept
            # one, or its calibration file not written since the request): the pipeline started afresh with it
            # watches for no moves, and asks again for what still holds (the calibration's age at the first sitting,
            # the check when it sees the sensor off again). Told at 07:00, the request had the wearer make moves
            # nothing watched, and the pipeline's own request again was then held by the cooldown. Restored with it
            # (request_pending), the pipeline watches for the moves still: the request is told as after no restart.
            state.request_waiting = {}
        found: list[r.Finding] = []
        if doc["kind"] == "slouch" and self._of_nudged_slouch(state, doc["start_s"]):
            # (A part of) the slouch nudged live: not nudged again. Never praised here: the pipeline ends a slouch for
            # reasons that are not posture too (a BLE gap, a gateway stop or restart, a recalibration) and then finds
            # it again; only the live states tell when it is over (on_live). Its end still bounds the cooldown.
            state.slouch_now_over_s = max(doc["end_s"], state.slouch_now_over_s or doc["end_s"])
        elif doc["kind"] == "slouch" and self.rules.slouch.enabled:
            found += filter(None, [r.slouch_episode(doc, self.rules)])
        elif doc["kind"] == "calibration" and self.rules.calibration.enabled:
            # A refusal answers moves made now, sitting up, by a wearer who knows of the request (or calibrates on their
            # own: none): one after a request held, while the wearer lies (asleep, turning over) or with the sensor off
            # the body is the sensor's, and so are those past the answers a request has.
            answer = (doc["status"] == "refused" and not state.request_unsaid
                      and state.answers_told < ANSWERS_PER_REQUEST
                      and not self._lying_or_off(device, state, doc["t_s"]))
            found += filter(None, [r.calibration_event(doc, answer)])
        # A request held over goes first, in its own words: a refusal the sensor made before it was told (answer, above,
        # is judged as it stood) is told as a request, and decided first it took the request's place (the wearer's
        # first word in the morning was "Moved during the upright hold after 1.4 s" for moves they never made, and the
        # request's own never came); after it, the requests' cooldown holds it.
        told = self._request_held_over(device, state, data_s, now_s)
        return told + self._decide(device, state, found, now_s)

    def _request_held_over(self, device: str, state: DeviceState, t_s: float, now_s: float) -> list[dict[str, Any]]:
        """The latest calibration request, held by quiet hours, a snooze or as stale (REQUEST_WAITS_FOR), none told
        since (request_unsaid: no calibration made since, no later request; nor a full one restored, on_event), told
        at the device's first data (a minute, a live state or an event; t_s its data time) after the hold is over,
        with its own words: once, as any request told clears request_unsaid. Its alert is of that data's time (quiet
        hours and staleness are judged there); still held, it waits on, counted held once (when it came)."""
        waiting = state.request_waiting
        if not (waiting and state.request_unsaid and self.rules.calibration.enabled and t_s > waiting["t_s"]):
            return []
        finding = r.Finding("calibration", t_s, "warning", waiting["evidence"])
        if held_reason(state, finding, self.rules.limits, self.tz, now_s) is not None:
            return []
        return self._decide(device, state, [finding], now_s)

    def _lying_or_off(self, device: str, state: DeviceState, t_s: float) -> bool:
        """The wearer read lying, or the sensor off the body, at about t_s (sensor time): by the latest live state if it
        is that close (LIVE_FRESH_S), else by the latest minute if it ended that close (not up in it: worn and not
        lying for less than rules.UPRIGHT_MINUTE_S); False when neither says (uncalibrated, nothing is read lying)."""
        live = self.live.get(device)
        if live is not None and abs(live["ts"] / 1000 - t_s) <= LIVE_FRESH_S:
            return live["activity"] in (LYING, NOT_WORN)
        key = state.latest_key()
        if key is not None and abs((int(key) + MINUTE_MS) / 1000 - t_s) <= LIVE_FRESH_S:
            return not r.upright(state.minutes[key])
        return False

    def _check_behind(self, device: str, state: DeviceState | None, day: str, now_s: float) -> None:
        """FarBehind if data of `day` would open a day (the device's first, or one after its latest: setting the
        program's start, closing the day open) while more than MAX_BEHIND_DAYS before this clock's local date."""
        if state is not None and state.day is not None and day <= state.day:
            return
        today = local(now_s, self.tz).date()
        if day < (today - timedelta(days=MAX_BEHIND_DAYS)).isoformat():
            raise FarBehind(device, day, today.isoformat())

    def on_live(self, doc: dict[str, Any], now_s: float, retained: bool = False) -> tuple[list[dict[str, Any]], bool]:
        """A live state: the real-time slouch nudge (rules.slouch_now) and its follow-up.

        Returns the alerts and whether the device's saved state changed; most live states change nothing.
        Live states never close a day: one just after midnight may arrive before that day's last minute.
        The latest by arrival is the current state, not the one with the largest ts (one from a clock that jumped
        ahead, or a forged one, would make every real state "older" for up to a day) — except that the broker's
        retained copy (`retained`: delivered on subscribing, the last *change*) never replaces a newer state we
        have: it is ignored then. The service has refused states whose starts lie after them (live_time_error).
        """
        device = doc["device"]
        previous = self.live.get(device)
        if retained and previous is not None and doc["ts"] <= previous["ts"]:
            return [], False
        self.live[device] = doc
        state = self._state(device)
        if not retained:  # the broker's retained copy is the gateway's last change, of any age: it tells no offset
            self._learn_offset(device, state, doc, now_s)
        since = self._slouching_since(device, doc)
        if since is not None:
            self._slouch_seen_s[device] = doc["ts"] / 1000
        clear_from = self._clear_streak(device, doc, previous)
        told = self._request_held_over(device, state, doc["ts"] / 1000, now_s)  # (at once with none waiting)
        if since is None and not state.slouch_now_open:  # most states: no slouch, none followed up; nothing to save
            return told, bool(told)
        before = _scalars(state)  # copied only here: at every state it took a third of a live state's cost
        t_s = doc["ts"] / 1000
        rule, out = self.rules.slouch_now, []
        if state.slouch_now_open and since is not None:
            since = doc["slouching_since_s"]  # the nudged slouch knows its pieces by the pipeline's own starts
            if not r.same_start(since, _nudged_starts(state)[-1]):
                # A slouch while the nudged one is not over is that slouch going on, found again after the pipeline
                # ended it for no posture reason (a gap, a restart, a recalibration), or after a few seconds
                # upright: known by its new start from now on, no second nudge (done), no praise.
                state.slouch_now_starts = [*_nudged_starts(state), since][-STARTS_KEPT:]
                state.slouch_now_done_s = since
        elif state.slouch_now_open and clear_from is not None and t_s - clear_from >= RECOVER_HOLD_S:
            # Over: live states with posture measured have shown no slouch for RECOVER_HOLD_S, unbroken, since
            # clear_from (its time).
            out += self._nudged_slouch_over(device, state, clear_from, now_s)
        if rule.enabled and since is not None:
            out += self._slouch_now(device, state, {**doc, "slouching_since_s": since}, since, now_s)
        return told + out, bool(told) or _scalars(state) != before

    def _slouching_since(self, device: str, doc: dict[str, Any]) -> float | None:
        """When the slouch a live state shows began, as the wearer slouched it: the pipeline's slouching_since_s, or
        the start of the slouch before it when the pipeline ended that one for no posture reason (a BLE gap over 1 s, a
        gateway restart) and found it again: no live state showed posture measured and no slouch between the last that
        showed the slouch and the new piece's start (the states of its dwell come after that start), and the piece
        began within RECOVER_HOLD_S of that last state (as long as a slouch that goes on can look absent). Counted from
        the piece, a 2 s gap 45 s into a slouch moved its nudge 47 s later, and a flaky link held it off as long."""
        since, t_s = doc["slouching_since_s"], doc["ts"] / 1000
        if since is None:
            if doc["flexion_deg"] is not None:
                self._upright_seen_s.setdefault(device, t_s)
            return None
        pieces, seen_s = self._slouch_pieces.get(device), self._slouch_seen_s.get(device)
        upright_s = self._upright_seen_s.get(device)
        if pieces is not None and r.same_start(since, pieces[0]):
            start = pieces[1]
        elif (pieces is not None and seen_s is not None and 0.0 <= since - seen_s <= RECOVER_HOLD_S
              and (upright_s is None or upright_s >= since)):
            start = pieces[1]  # the slouch before it, going on
        else:
            start = since
        self._slouch_pieces[device] = (since, start)
        self._upright_seen_s.pop(device, None)
        return start

    def on_status(self, doc: dict[str, Any]) -> bool:
        """The gateway's status of a sensor (QoS 0, retained). Returns whether `today`'s sitting_now_min reads
        otherwise by it (_sitting_now_min): the sensor went offline or came back, or came back after so long that the
        sitting stretch its latest minute shows is over."""
        device = doc["device"]
        before = self._sitting_unseen(device)
        self.status[device] = {"online": doc["online"], "ts": doc["ts"]}
        return self._sitting_unseen(device) != before

    def _sitting_unseen(self, device: str) -> tuple[bool, bool]:
        """Whether the latest status says the sensor is offline, and whether it says so SITTING_GAP_S after the device's
        latest minute's data ended (_gap_after); (False, False) with no status or no minute."""
        status, state = self.status.get(device), self.devices.get(device)
        if status is None:
            return False, False
        if state is None or not state.minutes:
            return not status["online"], False
        key = state.latest_key()
        assert key is not None  # it has minutes
        return not status["online"], self._gap_after(device, state.minutes[key], int(key) + MINUTE_MS)

    def _gap_after(self, device: str, last: dict[str, Any], end_ms: int) -> bool:
        """The sensor's latest status is more than SITTING_GAP_S (gateway clock) after where the minute `last` (ending
        at end_ms) saw its last sample: the pipeline starts any sitting after such a gap afresh."""
        status = self.status.get(device)
        until_s = last.get("seen_until_s")
        return status is not None and status["ts"] / 1000 - (end_ms / 1000 if until_s is None else until_s) > \
            SITTING_GAP_S

    def _sitting_now_min(self, device: str, last: dict[str, Any], end_ms: int) -> float | None:
        """`today`'s sitting_now_min from the latest minute (`last`, ending at end_ms): how long the wearer had sat
        where its data ends (rules.sitting_s), as long as nothing says that stretch is over. 0 off the body (the live
        state says so) or not sitting; None (not known) while the gateway says the sensor is offline, or says it is
        back after longer than SITTING_GAP_S unseen, until the next minute: else a sensor that went silent while its
        wearer sat (a battery that died, out of reach) showed them sitting "now" for the rest of the day."""
        if self.not_worn(device):
            return 0.0
        status = self.status.get(device)
        if status is not None and not status["online"]:
            return None
        sat_s = r.sitting_s(last, end_ms)
        if sat_s is None:
            return 0.0
        return None if self._gap_after(device, last, end_ms) else round(sat_s / 60, 1)

    def _learn_offset(self, device: str, state: DeviceState, doc: dict[str, Any], now_s: float) -> None:
        """The offset of the service's clock to the gateway's data clock (state.clock_offset_s, policy.late_s), from a
        live state as it arrives: the gateway neither spools nor queues them, the broker does not queue them for a
        service away (QoS 0), so each is news of a second ago at most. The median of the latest OFFSETS_KEPT: a state
        held up on its way (a busy gateway or service) moves it none, a step of the gateway's clock (NTP) within a few
        seconds. In memory; the device's state has the latest median, saved with its next write (no write for it)."""
        recent = self._offsets.setdefault(device, deque(maxlen=OFFSETS_KEPT))
        recent.append(now_s - doc["ts"] / 1000)
        if len(recent) >= OFFSETS_AGREE:  # before: the offset saved (a restart), or none (as if no live stream)
            state.clock_offset_s, state.clock_offset_at_s = round(median(recent), 3), now_s

    def _nudged_slouch_over(self, device: str, state: DeviceState, over_s: float, now_s: float) -> list[dict[str, Any]]:
        """The slouch nudged live is over, seen so from over_s (sensor time): its follow-up, if enabled."""
        state.slouch_now_open = False
        self._slouch_pieces.pop(device, None)  # a slouch after it is a new one
        # It lasted as long as it was seen, no more: to where its last end event or live state showed it, if that
        # was before the gap that ended it (out of range: "Out of the slouch after 6 min" counted the time away).
        seen = [s for s in (state.slouch_now_over_s, self._slouch_seen_s.get(device)) if s is not None]
        lasted_to = min(over_s, max(seen)) if seen and over_s - max(seen) > LIVE_MAX_GAP_S else over_s
        state.slouch_now_over_s = max(over_s, state.slouch_now_over_s or over_s)
        if not self.rules.slouch_now.recovered:
            return []
        assert state.slouch_now_sent_s is not None  # open is set with it
        return self._decide(device, state, [r.slouch_recovered(state.slouch_now_sent_s, over_s, lasted_to)], now_s)

    def _minute_shows_nudged_slouch_over(self, device: str, state: DeviceState, doc: dict[str, Any],
                                         now_s: float) -> list[dict[str, Any]]:
        """A minute of metrics (QoS 1: it is not lost) worn MINUTE_OVER_WORN_S with no slouch in it, after the slouch
        nudged live began, ends that slouch (by the minute's start) when the live stream (QoS 0) has not: the states
        that showed it over may all have been lost, or have come with gaps, and while it is open every later slouch
        is taken for it and not nudged. The minute's slouch_s counts a slouch still going on (the pipeline adds it up
        to each batch, from its start), so none in it is none at all."""
        starts, start_s = _nudged_starts(state), doc["ts"] / 1000
        if (not state.slouch_now_open or not starts or start_s < starts[0] or doc["slouch_s"] > 0
                or doc["worn_s"] < MINUTE_OVER_WORN_S):
            return []
        # A slouch the live states showed after that minute (taken for the nudged one, perhaps before the minute
        # arrived) is a new one: it gets its own nudge.
        state.slouch_now_starts = [s for s in starts if s <= start_s]
        if state.slouch_now_done_s is not None and state.slouch_now_done_s > start_s:
            state.slouch_now_done_s = state.slouch_now_starts[-1]
        return self._nudged_slouch_over(device, state, start_s, now_s)

    @staticmethod
    def _of_nudged_slouch(state: DeviceState, start_s: float) -> bool:
        """An episode from start_s is (a part of) the slouch nudged live: one of its starts, or any slouch that began
        after it while it is not over (found again before a live state showed it)."""
        starts = _nudged_starts(state)
        return (any(r.same_start(start_s, s) for s in starts)
                or (state.slouch_now_open and bool(starts) and start_s > starts[0]))

    def _clear_streak(self, device: str, doc: dict[str, Any], previous: dict[str, Any] | None) -> float | None:
        """Since when (sensor time) the live states up to doc have shown posture measured and no slouch, with no gap
        longer than LIVE_MAX_GAP_S between two in a row (by arrival); None if doc shows a slouch or no posture."""
        if doc["flexion_deg"] is None or doc["slouching_since_s"] is not None:  # uncalibrated, or slouching
            self._clear_from.pop(device, None)
            return None
        t_s, start = doc["ts"] / 1000, self._clear_from.get(device)
        gap_s = None if previous is None else t_s - previous["ts"] / 1000
        if start is None or gap_s is None or not 0 <= gap_s <= LIVE_MAX_GAP_S:  # 0: the same state again
            start = t_s
        self._clear_from[device] = start
        return start

    def _slouch_now(self, device: str, state: DeviceState, doc: dict[str, Any], since: float,
                    now_s: float) -> list[dict[str, Any]]:
        found = r.slouch_now(doc, state, self.rules)
        if found is None:
            return []
        if state.last_alert_s.get("slouch", -1e18) >= since:  # a minute-based nudge went out during this slouch
            state.slouch_now_done_s = since
            return []
        out = self._decide(device, state, [found], now_s)
        if alert_id(device, found.kind, found.ts_s) in state.sent_ids:  # sent, now or before
            state.slouch_now_done_s = state.slouch_now_sent_s = since
            state.slouch_now_starts = [since]
            state.slouch_now_open, state.slouch_now_held_s = True, None
            # Sent from a live state: the stream is current (a restart before the next minute goes by this)
            state.live_current = True
        else:  # held back: tried again with the next live state, at its time
            state.slouch_now_held_s = since
        return out

    def _nudged_slouch_goes_on(self, device: str, state: DeviceState, t_s: float) -> bool:
        """The slouch nudged live is not over yet, by a live stream that is current at about t_s (a minute's end). With
        no live state since the start (a restart: the broker delivers the minutes it kept for us before any live
        state), the stream is as it was at the last minute saved (state.live_current): else the backlog's minutes sent
        a second nudge for the slouch nudged live, past the shared cooldown."""
        live = self.live.get(device)
        if live is not None:
            state.live_current = abs(live["ts"] / 1000 - t_s) <= LIVE_FRESH_S
        return state.slouch_now_open and state.live_current

    def snooze(self, device: str, minutes: float, from_s: float, snooze_id: str | None = None) -> None:
        """Snoozed for `minutes` from from_s (wall clock); 0 ends a snooze. snooze_id: the command's identity
        (took_snooze knows it from then on)."""
        state = self._state(device)
        state.snooze_until_s = from_s + minutes * 60 if minutes > 0 else None
        if snooze_id is not None:
            state.remember("snoozes_taken", snooze_id, SNOOZES_KEPT)

    def took_snooze(self, device: str, snooze_id: str) -> bool:
        """The snooze of this identity was taken already (one of the device's latest SNOOZES_KEPT)."""
        state = self.devices.get(device)
        return state is not None and snooze_id in state.snoozes_taken

    def tick(self, now_s: float, listening_since_s: float = float("-inf")) -> list[dict[str, Any]]:
        """Daily summaries that are due (habit.summary_time). listening_since_s: since when the service could receive
        (its connection to the broker): a backlog the broker held while it was away has had no time to arrive before."""
        at = self.rules.habit.summary_at()
        if at is None:
            return []
        now = local(now_s, self.tz)
        today = now.date().isoformat()
        out = []
        due_ms = self._summary_due_ms(today, at)
        if now_s < self._ticked_s:  # the clock was set back (it ran ahead): a device set aside may owe one again
            self._summary_due = set(self.devices)
        self._ticked_s = now_s
        if now_s * 1000 < due_ms:
            return []
        # The fallback waits max_delay_s from summary_time, or from the connect if the service came (back) only after
        # it (the broker's backlog for us comes first); as first seen today: a link that drops every few minutes
        # must not put it off past midnight.
        if self._wait_from[0] != today:
            self._wait_from = (today, max(due_ms / 1000, listening_since_s))
        wait_from_s = self._wait_from[1]
        for device in list(self._summary_due):
            state = self.devices[device]
            if state.day is not None and state.day > today:  # a clock a little ahead near midnight: its turn comes
                continue
            if state.day != today or state.summary_sent_day == today:  # settled; a new minute brings it back
                self._summary_due.discard(device)
                continue
            worn_before = any(m["worn_s"] > 0 for m in state.between(self._start_ms(state), due_ms))
            # The day up to summary_time, once the data has got there (a backlog may still be arriving)
            # or has had max_delay_s to.
            if not worn_before:  # none yet: only a late minute of before summary_time can bring one, and brings it back
                self._summary_due.discard(device)
                continue
            caught_up = int(state.latest_key() or 0) + MINUTE_MS >= due_ms  # (a minute worn: there is a latest)
            if caught_up or now_s >= wait_from_s + self.rules.limits.max_delay_s:
                totals = self._fold(state, until_ms=due_ms)
                evidence = self.summary_evidence(state, today=totals, telling=True)
                # What the wearer is told is the day's verdict: the streak and program count it, not the evening's.
                state.summary_sent_day, state.summary_goal_met = today, evidence["goal_met"]
                self._summary_due.discard(device)
                stretch = self._summary_stretch(state, evidence, totals)
                out.append(summary_payload(device, today, now_s, evidence, stretch, totals))
        return out

    # what Home Assistant and the summary show ---------------------------------------
    def _fold(self, state: DeviceState, until_ms: float = float("inf")) -> DayTotals:
        """The open day's minutes up to until_ms, folded: the day's totals as they are, before any rounding for
        display (the goal is judged, and the summary's text rounded, from these)."""
        start_ms = self._start_ms(state)
        return day_totals(m for k, m in state.minutes.items() if start_ms <= int(k) < until_ms)

    def summary_evidence(self, state: DeviceState, until_ms: float = float("inf"),
                         today: DayTotals | None = None, telling: bool = False) -> dict[str, Any]:
        """today: the day's minutes up to until_ms folded, if the caller has them already. telling: for the summary
        itself, whose verdict is the day's."""
        h = self.rules.habit
        folded = today if today is not None else self._fold(state, until_ms)
        shown = r.totals_of(folded)
        met = self._day_verdict(state, folded)
        # Only states that have seen a day get here (tick, today_state); _close_day sets both together.
        assert state.day is not None and state.program_start is not None
        program_day = (Date.fromisoformat(state.day) - Date.fromisoformat(state.program_start)).days + 1
        in_program = [d for d in state.days.values() if d.get("program_day", 0) <= h.program_days]
        days_met = (state.program_met_before + sum(1 for d in in_program if d["goal_met"])
                    + (1 if met and program_day <= h.program_days else 0))
        # Told: the summary's own verdict, or one it sent; a summary that could not judge (worn too little by then)
        # told nothing, and the day is judged whole at midnight: missed so far, it ends nothing yet.
        told = telling or (state.summary_sent_day == state.day and state.summary_goal_met is not None)
        return {"date": state.day, **shown, "goal_slouch_pct": h.goal_slouch_pct, "goal_met": met,
                "streak_days": self._streak(state, met, told),
                "program_day": program_day, "program_days": h.program_days,
                "days_met": days_met, "alerts_sent": state.sent_today, "alerts_held": sum(state.held_today.values()),
                "timezone": iana_name(self.tz)}

    def days_begun(self, now_s: float) -> list[str]:
        """The devices whose `today` still shows a day before the local date of DAY_BEGUN_AFTER_S ago (none of their
        data since midnight: not worn), once per date, and all of those at the first call (a restart). Their
        today_state is then the new day's, empty: else Home Assistant showed yesterday's totals until the first
        minute, hours later, as today's."""
        calendar_day = self._date(now_s - DAY_BEGUN_AFTER_S)
        if calendar_day == self._calendar_day:
            return []
        self._calendar_day = calendar_day
        return [d for d, state in self.devices.items() if state.day is not None and state.day < calendar_day]

    def today_state(self, device: str) -> dict[str, Any]:
        """The retained `<prefix>/<device>/today` document (Home Assistant's entities read it): the day of its latest
        minute, or the day begun since with nothing in it yet (days_begun)."""
        state = self._state(device)
        if device not in self._folded:
            self._folded[device] = self._fold(state)
        if self._calendar_day is not None and state.day is not None and state.day < self._calendar_day:
            # Closed on a copy: the day itself stays open (a late minute of it still counts there). Shallow, with its
            # own `days`: closing replaces the other fields it changes (a deep copy took 16 ms a device).
            begun = copy.copy(state)
            begun.days = dict(state.days)
            self._close_day(begun, self._calendar_day, self._folded[device])
            evidence = self.summary_evidence(begun, today=DayTotals())
            return self._today_document(device, begun, evidence, {"worn_s": 0.0}, self._start_ms(begun))
        latest_key = state.latest_key()
        assert latest_key is not None  # the service asks for devices with minutes only
        evidence = self.summary_evidence(state, today=self._folded[device])
        if int(latest_key) < (day_start_ms := self._start_ms(state)):  # the day begun by an event, no minute
            return self._today_document(device, state, evidence, {"worn_s": 0.0}, day_start_ms)
        return self._today_document(device, state, evidence, state.minutes[latest_key], int(latest_key) + MINUTE_MS)

    def _today_document(self, device: str, state: DeviceState, evidence: dict[str, Any], last: dict[str, Any],
                        ts_ms: int) -> dict[str, Any]:
        """last: the latest minute ({"worn_s": 0.0} for none of the day yet); ts_ms: its end (the day's start)."""
        slouch_pct = evidence["slouch_pct"]
        # Off the body no minute comes: the posture was the last minute's (the desk's first, read lying) for as long
        # as the sensor lay there. The live state says it at once.
        off = self.not_worn(device)
        return {
            "schema": 1, "kind": "today", "device": device, "ts": ts_ms, "date": state.day,
            "worn_min": evidence["worn_min"], "slouch_min": evidence["slouch_min"],
            "upright_pct": round(100 - slouch_pct, 1) if slouch_pct is not None else None,
            "sitting_min": evidence["sitting_min"],
            "sitting_now_min": self._sitting_now_min(device, last, ts_ms),
            "posture": NOT_WORN if off else posture_of(last),
            "slouching": not off and bool(last["worn_s"] and last["slouch_s"] >= 0.5 * last["worn_s"]),
            "rotation_si": evidence["rotation_si"], "rotations_left": evidence["rotations_left"],
            "rotations_right": evidence["rotations_right"], "lean_left_min": evidence["lean_left_min"],
            "lean_right_min": evidence["lean_right_min"], "lateral_mean_deg": _round(last.get("lateral_mean_deg")),
            "goal_slouch_pct": evidence["goal_slouch_pct"], "goal_met": evidence["goal_met"],
            "streak_days": evidence["streak_days"], "program_day": evidence["program_day"],
            "program_days": evidence["program_days"], "alerts_sent": state.sent_today,
            "alerts_held": evidence["alerts_held"],
            "snoozed_until": int(state.snooze_until_s * 1000) if state.snooze_until_s else None,
            # From the day's first minute: the Daily dashboard's days and hours are in it (the bridge stores it).
            "timezone": evidence["timezone"],
        }

    def not_worn(self, device: str) -> bool:
        """The latest live state says the sensor is off the body."""
        return (self.live.get(device) or {}).get("activity") == NOT_WORN

    # decisions ------------------------------------------------------------------------
    def _decide(self, device: str, state: DeviceState, findings: list[r.Finding], now_s: float) -> list[dict[str, Any]]:
        out, seen = [], set()
        for f in in_turn(state, findings, self.rules.limits, self.tz):
            if f.kind in seen:
                continue
            seen.add(f.kind)
            # Praise comes once per nudge, an answer once per refusal said (at most one a minute, the pipeline's
            # refusal_every_s, but for a question the wearer must answer): no cooldown.
            cooldown_s = 60 * getattr(self.rules, f.kind).cooldown_min if f.kind not in r.PRAISE and not f.answer \
                else 0.0
            family = SLOUCH_NUDGES if f.kind in SLOUCH_NUDGES else (f.kind,)
            last_s = max(state.last_alert_s.get(k, -1e18) for k in family)
            if f.kind == "slouch" and state.slouch_now_over_s is not None:
                # A slouch nudged live counts as nudged until it is over: with a window no longer than the
                # cooldown, a share of the window is then never that slouch again.
                last_s = max(last_s, state.slouch_now_over_s)
            if f.ts_s - last_s < cooldown_s:
                continue
            if reason := held_reason(state, f, self.rules.limits, self.tz, now_s):
                if (reason in REQUEST_WAITS_FOR and f.kind == "calibration" and f.evidence["status"] == "recalibrate"
                        and state.request_unsaid and f.ts_s == state.answers_from_s):  # the latest request, unheard
                    state.request_waiting = {"t_s": f.ts_s, "evidence": f.evidence}
                if f.kind in r.PRAISE:  # praise that cannot go out now is moot later
                    state.slouch_alert_s = None if f.kind == "recovery" else state.slouch_alert_s
                    continue
                held_s = state.last_held_s.get(f.kind, -1e18)
                # Counted once a spell; held for the pace, once a kind between two nudges sent (once a cooldown, a
                # slouched day counted 80-89 held in `today` and the summary, beside its 8 sent).
                if (held_s < (last_nudge_s(state) or -1e18) if reason == "paced"
                        else f.ts_s - held_s >= max(cooldown_s, 60.0)):
                    state.count_held(alert_day(f.ts_ms, self.tz).isoformat(), reason)  # its day, as if it were sent
                    state.last_held_s[f.kind] = f.ts_s
                continue
            stretch = None
            if f.deficit:
                chosen = self.catalog.choose(f.deficit, state.recent_stretches)
                stretch = chosen.as_payload(f.side, self.catalog.safety)
            alert = alert_payload(device, f, stretch)
            if alert["id"] in state.sent_ids:  # the same message again (redelivered): never the same alert twice
                continue
            state.remember("sent_ids", alert["id"])
            if stretch:
                state.remember("recent_stretches", stretch["id"])
            if f.answer:  # not a request: the requests' cooldown neither holds it nor runs from it
                state.answers_told += 1
            else:
                state.last_alert_s[f.kind] = f.ts_s
                if f.kind == "calibration":  # a request told now: the wearer knows of it
                    state.request_unsaid, state.request_waiting = False, {}
                    if f.evidence["status"] != "refused":  # the pipeline's request: its answers are due (a refusal
                        state.answers_told = 0  # past them, told as a request, starts no more)
            if f.amount is not None:
                state.told = {**state.told, f.kind: f.amount}
            if is_nudge(f.kind):  # the daily cap and alerts_sent count nudges; praise, a calibration request do not
                state.count_sent(alert_day(f.ts_ms, self.tz).isoformat())
            state.slouch_alert_s = self._praise_watch(f, state.slouch_alert_s)
            out.append(alert)
        return out

    def _praise_watch(self, sent: r.Finding, watching_s: float | None) -> float | None:
        """The slouch nudge the minute-based recovery praise watches, after `sent` went out. One praise per
        nudge: a live nudge with its own follow-up ends the watch (the follow-up praises it), one without
        is watched like a minute-based nudge."""
        if sent.kind == "slouch" or (sent.kind == "slouch_now" and not self.rules.slouch_now.recovered):
            return sent.ts_s
        if sent.kind in ("slouch_now", "recovery"):
            return None
        return watching_s

    def _summary_stretch(self, state: DeviceState, e: dict[str, Any], totals: DayTotals) -> dict[str, Any] | None:
        """The day's main deficit gets a stretch in the summary too. Rotation only as the rotation rule reads it: the
        symmetry index of fewer than rotation.min_excursions rotations means nothing (one rotation is ±200 %). Slouch
        as the goal reads it: the share as it is, not as rounded for display (19.96 % is under a goal of 20 %)."""
        rotations = e["rotations_left"] + e["rotations_right"]
        share = totals.slouch_pct_of_worn
        if share is not None and share >= self.rules.habit.goal_slouch_pct:
            deficit, side = "slouch", None
        elif (e["rotation_si"] is not None and rotations >= self.rules.rotation.min_excursions
              and abs(e["rotation_si"]) >= self.rules.rotation.si_pct):
            deficit, side = "rotation", "left" if e["rotation_si"] > 0 else "right"
        else:
            return None
        chosen = self.catalog.choose(deficit, state.recent_stretches)
        state.remember("recent_stretches", chosen.id)
        return chosen.as_payload(side, self.catalog.safety)

    # days -------------------------------------------------------------------------------
    def _summary_due_ms(self, day: str, at: TimeOfDay) -> int:
        """When the day's summary is due: `at` (habit.summary_at) on that day, local."""
        return int(datetime.combine(Date.fromisoformat(day), at, tzinfo=self.tz).timestamp() * 1000)

    def _date(self, t_s: float) -> str:
        return local(t_s, self.tz).date().isoformat()

    def _day_start_ms(self, day: str | None) -> int:
        if day is None:
            return 0
        start = datetime.combine(Date.fromisoformat(day), TimeOfDay(0), tzinfo=self.tz)
        return int(start.timestamp() * 1000)

    def _start_ms(self, state: DeviceState) -> int:
        """When the open day began, as it was opened: a zone changed since (alerts.timezone, a traveller's) moves no
        minute out of it (west: they were left out, or ignored as late) nor into it again (east: the evening before,
        counted in the day closed, was counted again as the new day's night)."""
        return state.day_start_ms if state.day_start_ms is not None else self._day_start_ms(state.day)

    def _day_verdict(self, state: DeviceState, totals: DayTotals) -> bool | None:
        """Whether the day met the goal: as its summary said once sent (on the day up to summary_time), else on the
        totals so far (also where the summary could not say: worn too little by then)."""
        told = state.summary_goal_met if state.summary_sent_day == state.day else None
        return told if told is not None else self._goal_met(totals)

    def _closing_verdict(self, state: DeviceState, totals: DayTotals) -> bool | None:
        """The verdict a day closes with: as its summary told, or, with none sent (the service away from before
        summary_time until after midnight), as it would have told (the day up to summary_time), so that the streak and
        the program do not depend on whether the service ran at summary_time; else (worn too little by then, or no
        summary_time) on the whole day."""
        at = self.rules.habit.summary_at()
        if state.summary_sent_day == state.day or at is None or state.day is None:
            return self._day_verdict(state, totals)
        by_then = self._goal_met(self._fold(state, until_ms=self._summary_due_ms(state.day, at)))
        return by_then if by_then is not None else self._goal_met(totals)

    def _goal_met(self, totals: DayTotals) -> bool | None:
        """The goal judged on the day's totals as they are: rounded first (to the tenths the summary and `today`
        show), a day 19.96 % slouched read as 20.0 and missed a goal of 20 %, and 59.96 min worn counted as 60."""
        share = totals.slouch_pct_of_worn
        if totals.worn_s < 60 * self.rules.habit.min_worn_min or share is None:
            return None
        return share < self.rules.habit.goal_slouch_pct

    def _streak(self, state: DeviceState, today_met: bool | None, told: bool) -> int:
        """Days in a row that met the goal, up to today: counted once it is met, and none once its summary told it
        missed (`told`: "goal missed. Streak 5 d" told the wearer the days before were still a streak, and the next
        morning it was 0). Missed only so far (before the summary) it ends nothing yet: a slouched first hour showed
        a streak of 0 all morning, back to 6 by noon. Unworn days, and a today worn too little, are skipped."""
        if today_met is False and told:
            return 0
        n = 1 if today_met else 0
        for day in sorted(state.days, reverse=True):
            met = state.days[day]["goal_met"]
            if met is None:
                continue
            if not met:
                return n
            n += 1
        return n + state.streak_before  # met (or unworn) back to the oldest day kept

    def _close_day(self, state: DeviceState, new_day: str, folded: DayTotals | None = None) -> None:
        """folded: the closing day's minutes folded, if the caller has them already."""
        if state.day is not None:
            folded = folded if folded is not None else self._fold(state)
            totals = r.totals_of(folded)
            assert state.program_start is not None  # set below with the first day, before state.day is
            program_day = (Date.fromisoformat(state.day) - Date.fromisoformat(state.program_start)).days + 1
            state.days[state.day] = {"worn_min": totals["worn_min"], "slouch_min": totals["slouch_min"],
                                     "goal_met": self._closing_verdict(state, folded), "program_day": program_day}
            days = sorted(state.days.items())
            for _, gone in days[:-KEEP_DAYS]:  # oldest first, as _streak would count them
                met = gone["goal_met"]
                state.streak_before = state.streak_before + 1 if met else 0 if met is False else state.streak_before
                state.program_met_before += bool(met and gone.get("program_day", 0) <= self.rules.habit.program_days)
            state.days = dict(days[-KEEP_DAYS:])
        state.program_start = state.program_start or new_day
        # The nudges of the new day sent (or held) before it opened count on it; the closing day's still hold its cap
        # for a late event of it. Days before the one before are over.
        kept_from = (Date.fromisoformat(new_day) - timedelta(days=1)).isoformat()
        sent_today, state.sent_other_days = _opened(state.sent_other_days, state.day, state.sent_today, new_day,
                                                    kept_from, 0)
        held_today, state.held_other_days = _opened(state.held_other_days, state.day, state.held_today, new_day,
                                                    kept_from, {})
        state.day, state.sent_today, state.held_today = new_day, sent_today, held_today
        state.told = {}  # a new day's imbalances are told from nothing
        # The new day begins at its midnight, or after the minutes the closed day counted, should the zone have moved.
        counted_to = int(latest) + MINUTE_MS if (latest := state.latest_key()) is not None else 0
        state.day_start_ms = max(self._day_start_ms(new_day), counted_to)

    def _prune(self, device: str, state: DeviceState, end_ms: int) -> None:
        lookback_min = max(self.rules.slouch.window_min,
                           self.rules.recovery.within_min + self.rules.recovery.upright_min)
        keep_from = min(self._start_ms(state), end_ms - lookback_min * MINUTE_MS - MINUTE_MS)
        for key in state.drop_before(keep_from):
            self._places.get(device, {}).pop(key, None)
            self._unsaved.setdefault(device, set()).add(key)

    def _kept(self, device: str, key: str) -> None:
        """The minute `key` kept (new, or a copy that replaced it): its record is written with the device's next
        write. A new one takes the next place in arrival order; a replaced one keeps its (as in the minutes dict)."""
        places = self._places.setdefault(device, {})
        if key not in places:
            places[key], self._next_place = self._next_place, self._next_place + 1
        self._unsaved.setdefault(device, set()).add(key)


def live_time_error(doc: dict[str, Any]) -> str | None:
    """Why a live state cannot be one (an open state that starts after the state itself), or None."""
    for name in LIVE_STARTS:
        if doc[name] is not None and doc[name] > doc["ts"] / 1000 + LIVE_START_SLACK_S:
            return f"time: {name} {doc[name]} is after the state's own ts {doc['ts']}"
    return None


def _encoded(state: DeviceState) -> bytes:
    """A device's state as JSON, but its minutes (each has its record, MINUTE_KEY). orjson reads the fields as they
    are: asdict's deep copy before encoding took half the service's time in a burst."""
    return _json({name: getattr(state, name) for name in state.__dataclass_fields__ if name != "minutes"})


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # what orjson cannot write (an integer past 64 bits) json still can
        return json.dumps(value).encode()


def _read_state(data: Any, minutes: Mapping[str, bytes]) -> tuple[DeviceState, dict[str, int]]:
    """A device's state from its record (data, read) and its minutes' records (by their minute's ts), with each kept
    minute's place in arrival order. A record of before holds its minutes itself: those are taken, in their order.
    ValueError if the device's record is none (DeviceState.from_dict)."""
    if isinstance(data, dict) and "minutes" not in data:
        read, unreadable = [], 0
        for key, value in minutes.items():
            try:
                place, minute = json.loads(value)
                if isinstance(place, bool) or not isinstance(place, int) or not isinstance(minute, dict):
                    raise ValueError
            except (ValueError, TypeError, RecursionError):
                unreadable += 1
                continue
            read.append((place, key, minute))
        data = {**data, "minutes": {key: minute for _, key, minute in sorted(read, key=lambda r: r[0])}}
        state = DeviceState.from_dict(data)
        state.minutes_refused += unreadable
        places = {key: place for place, key, _ in read if key in state.minutes}
        return state, places
    state = DeviceState.from_dict(data)
    return state, {key: place for place, key in enumerate(state.minutes)}


T = TypeVar("T")  # a count per day: nudges sent (int), findings held back by reason (dict)


def _opened(others: dict[str, T], day: str | None, today: T, new_day: str, kept_from: str,
            none: T) -> tuple[T, dict[str, T]]:
    """A count kept per day (`today` the open `day`'s, `others` the days either side) as new_day opens: new_day's
    (`none` if nothing counts on it yet) and the other days', from kept_from on."""
    counts = {**others, **({day: today} if day is not None else {})}
    opened = counts.pop(new_day, none)
    return opened, {d: n for d, n in counts.items() if d >= kept_from and n}


def _made_now(doc: dict[str, Any]) -> bool:
    """A `calibrated` event of a calibration the wearer made as it says (calibrated_s its own t_s, or absent: a gateway
    from before calibrated_s), not one a restart restored or walking corrected."""
    if doc["status"] != "calibrated":
        return False
    made_s = doc.get("calibrated_s", doc["t_s"])
    return made_s is not None and doc["t_s"] - made_s < SAME_CALIBRATION_S


def _nudged_starts(state: DeviceState) -> list[float]:
    """The starts the slouch nudged live has gone by, the latest last (empty before the first live nudge)."""
    if state.slouch_now_starts:
        return state.slouch_now_starts
    return [] if state.slouch_now_sent_s is None else [state.slouch_now_sent_s]


def _scalars(state: DeviceState) -> dict[str, Any]:
    """What a live state may change in a device's state (all of it but the minutes and days), to compare."""
    return {k: copy.copy(getattr(state, k)) for k in state.__dataclass_fields__ if k not in ("minutes", "days")}


def posture_of(minute: dict[str, Any]) -> str:
    """What the wearer mostly did in a minute, for a glance (Home Assistant's Posture entity)."""
    worn = minute["worn_s"] or 0.0
    if worn < 10:
        return NOT_WORN
    for name, key in (("lying", "lying_s"), ("walking", "walking_s"), ("slouching", "slouch_s"),
                      ("leaning_left", "lean_left_s"), ("leaning_right", "lean_right_s"), ("standing", "standing_s")):
        if (minute.get(key) or 0.0) >= 0.5 * worn:
            return name
    return "upright"


def _round(value: float | None) -> float | None:
    # + 0.0: a small negative value rounds to -0.0, which JSON keeps and Home Assistant shows as "-0.0 °"
    return None if value is None else round(value, 2) + 0.0
