"""Whether a finding may reach the phone now: no storms, nothing stale, nothing at night.

Pure: times come in as arguments. Data time (the finding's) decides quiet hours and the day a
nudge counts against the cap (contract alert_day, as `alerts_sent` and the day report count it); wall-clock
time decides snoozes (the wearer snoozes "from now": from when the phone sent it, else from when it arrived) and
staleness (a backlog delivered after an outage is
history, not a nudge). Lateness of a "now" nudge is judged on the gateway's clock, as its live states show it.
"""

from __future__ import annotations

from datetime import date as Date
from datetime import datetime, timedelta, tzinfo
from datetime import time as TimeOfDay

from alerts.rules import NOW_KINDS, Finding
from alerts.settings import Limits
from alerts.state import DeviceState
from contract.messages import alert_day, is_nudge


def local(t_s: float, tz: tzinfo | None) -> datetime:
    """Local time of a Unix time; tz None: the machine's own zone (with its daylight saving)."""
    return datetime.fromtimestamp(t_s, tz)


def in_span(at: TimeOfDay, span: tuple[TimeOfDay, TimeOfDay] | None) -> bool:
    if span is None:
        return False
    start, end = span
    return start <= at < end if start <= end else at >= start or at < end  # spans midnight


def held_reason(state: DeviceState, finding: Finding, limits: Limits, tz: tzinfo | None, now_s: float) -> str | None:
    """Why the finding is held back, or None if it may be sent."""
    if now_s - finding.ts_s > limits.max_delay_s:
        return "stale"
    # An answer is about now too: the wearer waits for it, and one from a backlog minutes old went out through quiet
    # hours and a snooze.
    if (finding.kind in NOW_KINDS or finding.answer) and (late := late_s(state, finding.ts_s, now_s)) is not None \
            and late > limits.max_late_s:
        return "late"
    if finding.answer:  # the wearer is making the moves it answers now: awake, and waiting for it
        return None
    if state.snooze_until_s is not None and now_s < state.snooze_until_s:
        return "snoozed"
    # ts, not alert_day's millisecond before: a minute's nudge reaches the phone after its end, and quiet hours are the
    # wearer's clock (the 21:59 minute judged at 21:59:59.999 buzzed at 22:00:06).
    if in_span(local(finding.ts_s, tz).time(), limits.quiet_span()):
        return "quiet_hours"
    if not is_nudge(finding.kind):  # the cap and its pace count nudges, not praise nor a calibration request
        return None
    day = alert_day(finding.ts_ms, tz)
    if state.sent_on(day.isoformat()) >= limits.daily_cap:
        return "daily_cap"
    if limits.pace and paced(state, finding.ts_s, day, limits, tz):
        return "paced"
    return None


# A clock offset learned from live states is trusted this long after the latest of them (wall clock): long enough for
# the backlog the broker delivers after a restart of this service, before any live state; not for good, as a gateway
# whose live stream was switched off (gateway.live_hz 0) may have its clock set since (NTP after a boot without RTC).
OFFSET_KEPT_S = 3600.0


def late_s(state: DeviceState, t_s: float, now_s: float) -> float | None:
    """How long after data time t_s it is now by the gateway's clock (the clock its data times are in): the service's
    clock less the offset its live states showed (state.clock_offset_s). Unlike now_s - t_s, a gateway clock minutes
    off does not make every minute look late (or early). None with no offset known, or one older than OFFSET_KEPT_S."""
    if state.clock_offset_s is None or state.clock_offset_at_s is None or \
            now_s - state.clock_offset_at_s > OFFSET_KEPT_S:
        return None
    return now_s - state.clock_offset_s - t_s


# Which nudge goes first when the day's cap leaves one: a warning (a slouch or a sitting going on) is about now, an info
# (the day's lean or rotation imbalance) can be told at another turn.
SEVERITY_FIRST = ("warning", "info")


def in_turn(state: DeviceState, findings: list[Finding], limits: Limits, tz: tzinfo | None) -> list[Finding]:
    """The order findings found together are offered a nudge: the kind told longest ago first, so that where the cap's
    pace lets one through, a sitter who also slouches hears "time to move" too, not only the slouch found at every
    minute. But where the cap leaves one nudge for the day, the most severe first: told longest ago alone, the day's
    last nudge went to an info-level lean over a warning-level slouch going on."""
    def key(f: Finding) -> tuple[int, float]:
        last = is_nudge(f.kind) and state.sent_on(alert_day(f.ts_ms, tz).isoformat()) == limits.daily_cap - 1
        return (SEVERITY_FIRST.index(f.severity) if last else 0, state.last_alert_s.get(f.kind, -1e18))
    return sorted(findings, key=key)


# The day's first nudges go out as they come (a morning's first slouch is told at once); the rest of the cap is spread.
PACE_FREE = 2
# … and never closer than this: a sensor first worn at 21:50, quiet hours from 22:00, had its cap left a minute apart.
PACE_MIN_GAP_S = 15 * 60.0


def paced(state: DeviceState, t_s: float, day: Date, limits: Limits, tz: tzinfo | None) -> bool:
    """Whether a nudge at t_s comes too soon after the day's latest: past the first PACE_FREE, the nudges the cap has
    left are spread evenly over the waking day left (to the end of the day the cap counts, less quiet hours), the last
    a share before its end: each at least (waking time left) / (nudges left + 1) of waking time after the one before.
    Unpaced, a wearer slouching from 08:00 had the cap of 8 used up by 09:41 (five real-time slouch nudges 15 min
    apart, sitting, lean, rotation) and heard nothing more for the 8 h of a day with 138 min slouched. Waking time, not
    the time to the next quiet hours: with quiet hours 01:00-09:00 a wearer up after midnight had the new day's cap
    spread over the hour to 01:00, five nudges by 00:45 and three left for the day from 09:00."""
    sent, last_s = state.sent_on(day.isoformat()), last_nudge_s(state)
    if sent < PACE_FREE or last_s is None:
        return False
    left = limits.daily_cap - sent  # at least 1: the cap was checked first
    day_end_s = datetime.combine(day + timedelta(days=1), TimeOfDay(0), tz).timestamp()
    since_s = waking_s(last_s, t_s, limits, tz)
    return since_s < PACE_MIN_GAP_S or since_s < waking_s(last_s, day_end_s, limits, tz) / (left + 1)


def last_nudge_s(state: DeviceState) -> float | None:
    """The data time of the latest nudge sent (praise is none)."""
    return max((at_s for kind, at_s in state.last_alert_s.items() if is_nudge(kind)), default=None)


def waking_s(from_s: float, to_s: float, limits: Limits, tz: tzinfo | None) -> float:
    """The seconds from from_s to to_s outside quiet hours (as in_span reads them, by the local clock; tz None: the
    machine's zone, with its daylight saving)."""
    span = limits.quiet_span()
    if to_s <= from_s or span is None or span[0] == span[1]:  # (start == end: in_span holds nothing quiet)
        return to_s - from_s
    start, end = span
    quiet_s, d = 0.0, local(from_s, tz).date() - timedelta(days=1)  # the day before's span may reach into from_s's
    while (begin_s := datetime.combine(d, start, tz).timestamp()) < to_s:
        end_s = datetime.combine(d if start < end else d + timedelta(days=1), end, tz).timestamp()
        quiet_s += max(0.0, min(end_s, to_s) - max(begin_s, from_s))
        d += timedelta(days=1)
    return max(0.0, to_s - from_s - quiet_s)
