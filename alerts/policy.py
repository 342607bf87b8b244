"""Whether a finding may reach the phone now: no storms, nothing stale, nothing at night.

Pure: times come in as arguments. Data time (the finding's) decides quiet hours and the day a
nudge counts against the cap (contract alert_day, as `alerts_sent` and the day report count it); wall-clock
time decides snoozes (the wearer snoozes "from now": from when the phone sent it, else from when it arrived) and
staleness (a backlog delivered after an outage is
history, not a nudge).
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from datetime import time as TimeOfDay

from alerts.rules import Finding
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
    if state.snooze_until_s is not None and now_s < state.snooze_until_s:
        return "snoozed"
    # ts, not alert_day's millisecond before: a minute's nudge reaches the phone after its end, and quiet hours are the
    # wearer's clock (the 21:59 minute judged at 21:59:59.999 buzzed at 22:00:06).
    if in_span(local(finding.ts_s, tz).time(), limits.quiet_span()):
        return "quiet_hours"
    if is_nudge(finding.kind) and state.sent_on(alert_day(finding.ts_ms, tz).isoformat()) >= limits.daily_cap:
        return "daily_cap"  # the cap counts nudges, not praise
    return None
