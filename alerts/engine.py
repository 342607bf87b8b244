"""The alert service's logic, free of I/O: validated messages in, alert payloads out.

Per device it keeps a DeviceState (alerts/state.py) and, for each minute of metrics or
event, runs the rules, lets the policy hold back what must not go out now, and picks a stretch
that addresses the deficit (not the one suggested last). The daily summary and the 31-day habit
program run on the wall clock (`tick`). All state is JSON, saved by the service with what it sends.
"""

from __future__ import annotations

import json
from datetime import date as Date
from datetime import datetime, tzinfo
from datetime import time as TimeOfDay
from typing import Any, cast

from alerts import rules as r
from alerts.catalog import Catalog
from alerts.compose import alert_payload, summary_payload
from alerts.policy import held_reason, local
from alerts.settings import Rules
from alerts.state import DeviceState

MINUTE_MS = 60_000
KEEP_DAYS = 62  # finished days kept for the streak and the program
POSTURES = ("upright", "slouching", "leaning_left", "leaning_right", "standing", "walking", "lying", "not_worn")


class AlertEngine:
    def __init__(self, rules: Rules, catalog: Catalog, tz: tzinfo | None = None):
        self.rules, self.catalog, self.tz = rules, catalog, tz
        self.devices: dict[str, DeviceState] = {}

    # state --------------------------------------------------------------------------
    def dump(self, devices: set[str]) -> dict[str, bytes]:
        """These devices' states as JSON, one record each: a minute rewrites one device, not all."""
        return {f"device/{d}": json.dumps(self.devices[d].to_dict()).encode() for d in devices if d in self.devices}

    def load(self, records: dict[str, bytes]) -> None:
        self.devices = {key.removeprefix("device/"): DeviceState.from_dict(json.loads(value))
                        for key, value in records.items() if key.startswith("device/")}

    def _state(self, device: str) -> DeviceState:
        return self.devices.setdefault(device, DeviceState())

    # inputs -------------------------------------------------------------------------
    def on_metrics(self, doc: dict[str, Any], now_s: float) -> list[dict[str, Any]]:
        device, state = doc["device"], self._state(doc["device"])
        end_ms = doc["ts"] + MINUTE_MS
        day = self._date(doc["ts"] / 1000)
        if state.day is not None and day < state.day:
            state.late_minutes += 1  # a day already closed: its summary and streak are settled
            return []
        if state.day != day:
            self._close_day(state, day)
        state.add_minute(doc)
        self._prune(state, end_ms)
        if state.last_calibrated_s is None:  # no calibration seen yet: count its age from the first data
            state.last_calibrated_s = doc["ts"] / 1000
        today = self.today_totals(state)
        rules = self.rules
        found = [
            rules.slouch.enabled and (r.slouch_unbroken(state, end_ms, rules) or r.slouch_share(state, end_ms, rules)),
            rules.rotation.enabled and r.rotation_asymmetry(today, end_ms, rules),
            rules.lean.enabled and r.lean_asymmetry(today, end_ms, rules),
            rules.sitting.enabled and r.long_sitting(doc, end_ms, rules),
            rules.calibration.enabled and r.calibration_age(state, end_ms, rules),
            rules.recovery.enabled and r.recovery(state, end_ms, rules),
        ]
        return self._decide(device, state, [f for f in found if f], now_s)

    def on_event(self, doc: dict[str, Any], now_s: float) -> list[dict[str, Any]]:
        device, state = doc["device"], self._state(doc["device"])
        day = self._date(doc.get("end_s", doc.get("t_s", doc["ts"] / 1000)))
        if state.day is None or day > state.day:  # the morning's first word may be an event: a new day's cap
            self._close_day(state, day)
        if doc["kind"] == "calibration" and doc["status"] == "calibrated":
            state.last_calibrated_s = doc["t_s"]
        found = None
        if doc["kind"] == "slouch" and self.rules.slouch.enabled:
            found = r.slouch_episode(doc, self.rules)
        elif doc["kind"] == "calibration" and self.rules.calibration.enabled:
            found = r.calibration_event(doc)
        return self._decide(device, state, [found] if found else [], now_s)

    def snooze(self, device: str, minutes: float, now_s: float) -> None:
        self._state(device).snooze_until_s = now_s + minutes * 60 if minutes > 0 else None

    def tick(self, now_s: float) -> list[dict[str, Any]]:
        """Daily summaries that are due (habit.summary_time)."""
        at = self.rules.habit.summary_at()
        if at is None:
            return []
        now = local(now_s, self.tz)
        today = now.date().isoformat()
        out = []
        due_ms = int(datetime.combine(now.date(), at, tzinfo=self.tz).timestamp() * 1000)
        if now_s * 1000 < due_ms:
            return []
        for device, state in self.devices.items():
            if state.day != today or state.summary_sent_day == today:
                continue
            before = [int(k) for k, m in state.minutes.items() if self._day_start_ms(today) <= int(k) < due_ms
                      and m["worn_s"] > 0]
            # The day up to summary_time, once the data has got there (a backlog may still be arriving)
            # or has had max_delay_s to.
            if not before:
                continue
            caught_up = max(map(int, state.minutes)) + MINUTE_MS >= due_ms
            if caught_up or now_s * 1000 >= due_ms + self.rules.limits.max_delay_s * 1000:
                state.summary_sent_day = today
                evidence = self.summary_evidence(state, until_ms=due_ms)
                out.append(summary_payload(device, today, now_s, evidence, self._summary_stretch(state, evidence)))
        return out

    # what Home Assistant and the summary show ---------------------------------------
    def today_totals(self, state: DeviceState, until_ms: float = float("inf")) -> dict[str, Any]:
        start_ms = self._day_start_ms(state.day)
        return r.totals([m for k, m in state.minutes.items() if start_ms <= int(k) < until_ms])

    def summary_evidence(self, state: DeviceState, until_ms: float = float("inf")) -> dict[str, Any]:
        h = self.rules.habit
        today = self.today_totals(state, until_ms)
        met = self._goal_met(today)
        # Only states that have seen a day get here (tick, today_state); _close_day sets both together.
        assert state.day is not None and state.program_start is not None
        program_day = (Date.fromisoformat(state.day) - Date.fromisoformat(state.program_start)).days + 1
        in_program = [d for d in state.days.values() if d.get("program_day", 0) <= h.program_days]
        days_met = sum(1 for d in in_program if d["goal_met"]) + (1 if met and program_day <= h.program_days else 0)
        return {"date": state.day, **today, "goal_slouch_pct": h.goal_slouch_pct, "goal_met": met,
                "streak_days": self._streak(state, met), "program_day": program_day, "program_days": h.program_days,
                "days_met": days_met, "alerts_sent": state.sent_today, "alerts_held": sum(state.held_today.values())}

    def today_state(self, device: str) -> dict[str, Any]:
        """The retained `<prefix>/<device>/today` document (Home Assistant's entities read it)."""
        state = self._state(device)
        evidence = self.summary_evidence(state)
        latest_key = max(state.minutes, key=int)
        last = state.minutes[latest_key]
        since = last.get("sitting_since_s")
        end_s = int(latest_key) / 1000 + 60
        slouch_pct = evidence["slouch_pct"]
        return {
            "schema": 1, "kind": "today", "device": device, "ts": int(latest_key) + MINUTE_MS, "date": state.day,
            "worn_min": evidence["worn_min"], "slouch_min": evidence["slouch_min"],
            "upright_pct": round(100 - slouch_pct, 1) if slouch_pct is not None else None,
            "sitting_min": evidence["sitting_min"],
            "sitting_now_min": round((end_s - since) / 60, 1) if since is not None else 0.0,
            "posture": posture_of(last), "slouching": bool(last["worn_s"] and last["slouch_s"] >= 0.5 * last["worn_s"]),
            "rotation_si": evidence["rotation_si"], "rotations_left": evidence["rotations_left"],
            "rotations_right": evidence["rotations_right"], "lean_left_min": evidence["lean_left_min"],
            "lean_right_min": evidence["lean_right_min"], "lateral_mean_deg": _round(last.get("lateral_mean_deg")),
            "goal_slouch_pct": evidence["goal_slouch_pct"], "goal_met": evidence["goal_met"],
            "streak_days": evidence["streak_days"], "program_day": evidence["program_day"],
            "program_days": evidence["program_days"], "alerts_sent": state.sent_today,
            "alerts_held": evidence["alerts_held"],
            "snoozed_until": int(state.snooze_until_s * 1000) if state.snooze_until_s else None,
        }

    # decisions ------------------------------------------------------------------------
    def _decide(self, device: str, state: DeviceState, findings: list[r.Finding], now_s: float) -> list[dict[str, Any]]:
        out, seen = [], set()
        for f in findings:
            if f.kind in seen:
                continue
            seen.add(f.kind)
            cooldown_s = 60 * getattr(self.rules, f.kind).cooldown_min if f.kind != "recovery" else 0.0
            if f.ts_s - state.last_alert_s.get(f.kind, -1e18) < cooldown_s:
                continue
            if reason := held_reason(state, f, self.rules.limits, self.tz, now_s):
                if f.kind == "recovery":  # praise that cannot go out now is moot later
                    state.slouch_alert_s = None
                    continue
                if f.ts_s - state.last_held_s.get(f.kind, -1e18) >= max(cooldown_s, 60.0):  # count once a spell
                    state.held_today[reason] = state.held_today.get(reason, 0) + 1
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
            state.last_alert_s[f.kind] = f.ts_s
            state.sent_today += 1
            state.slouch_alert_s = (f.ts_s if f.kind == "slouch" else
                                    (None if f.kind == "recovery" else state.slouch_alert_s))
            out.append(alert)
        return out

    def _summary_stretch(self, state: DeviceState, e: dict[str, Any]) -> dict[str, Any] | None:
        """The day's main deficit gets a stretch in the summary too."""
        if e["slouch_pct"] is not None and e["slouch_pct"] >= self.rules.habit.goal_slouch_pct:
            deficit, side = "slouch", None
        elif e["rotation_si"] is not None and abs(e["rotation_si"]) >= self.rules.rotation.si_pct:
            deficit, side = "rotation", "left" if e["rotation_si"] > 0 else "right"
        else:
            return None
        chosen = self.catalog.choose(deficit, state.recent_stretches)
        state.remember("recent_stretches", chosen.id)
        return chosen.as_payload(side, self.catalog.safety)

    # days -------------------------------------------------------------------------------
    def _date(self, t_s: float) -> str:
        return local(t_s, self.tz).date().isoformat()

    def _day_start_ms(self, day: str | None) -> int:
        if day is None:
            return 0
        start = datetime.combine(Date.fromisoformat(day), TimeOfDay(0), tzinfo=self.tz)
        return int(start.timestamp() * 1000)

    def _goal_met(self, totals: dict[str, Any]) -> bool | None:
        if totals["worn_min"] < self.rules.habit.min_worn_min or totals["slouch_pct"] is None:
            return None
        return cast(float, totals["slouch_pct"]) < self.rules.habit.goal_slouch_pct

    def _streak(self, state: DeviceState, today_met: bool | None) -> int:
        """Days in a row that met the goal, up to today (counted once it is met); unworn days are skipped."""
        n = 1 if today_met else 0
        for day in sorted(state.days, reverse=True):
            met = state.days[day]["goal_met"]
            if met is None:
                continue
            if not met:
                break
            n += 1
        return n

    def _close_day(self, state: DeviceState, new_day: str) -> None:
        if state.day is not None:
            totals = self.today_totals(state)
            assert state.program_start is not None  # set below with the first day, before state.day is
            program_day = (Date.fromisoformat(state.day) - Date.fromisoformat(state.program_start)).days + 1
            state.days[state.day] = {"worn_min": totals["worn_min"], "slouch_min": totals["slouch_min"],
                                     "goal_met": self._goal_met(totals), "program_day": program_day}
            state.days = dict(sorted(state.days.items())[-KEEP_DAYS:])
        state.program_start = state.program_start or new_day
        state.day, state.sent_today, state.held_today = new_day, 0, {}

    def _prune(self, state: DeviceState, end_ms: int) -> None:
        lookback_min = max(self.rules.slouch.window_min,
                           self.rules.recovery.within_min + self.rules.recovery.upright_min)
        keep_from = min(self._day_start_ms(state.day), end_ms - lookback_min * MINUTE_MS - MINUTE_MS)
        for key in [k for k in state.minutes if int(k) < keep_from]:
            del state.minutes[key]


def posture_of(minute: dict[str, Any]) -> str:
    """What the wearer mostly did in a minute, for a glance (Home Assistant's Posture entity)."""
    worn = minute["worn_s"] or 0.0
    if worn < 10:
        return "not_worn"
    for name, key in (("lying", "lying_s"), ("walking", "walking_s"), ("slouching", "slouch_s"),
                      ("leaning_left", "lean_left_s"), ("leaning_right", "lean_right_s"), ("standing", "standing_s")):
        if (minute.get(key) or 0.0) >= 0.5 * worn:
            return name
    return "upright"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
