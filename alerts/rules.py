"""The alert rules: pure functions from a device's remembered minutes and events to findings.

A finding says what is off and by how much (its evidence); whether it reaches the phone is the
policy's call (alerts/policy.py). Times are data times (the sensor's, Unix s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alerts.settings import Rules
from alerts.state import MINUTE_MS, DeviceState
from contract.messages import PRAISE_KINDS
from pipeline.summary import DayTotals, day_totals

# Praise, not a nudge: no cooldown (once per nudge), and not counted against limits.daily_cap (the cap limits how
# often the wearer is told to do something; praise for having done it must not use that up).
PRAISE = PRAISE_KINDS
# What the wearer is doing *now*: told on a minute or event that comes late (a backlog after an outage) it is about
# someone who may be walking by then, so it is held as late (policy.held_reason). Not the day's imbalances (rotation,
# lean) nor a calibration request: those are as true later. Not slouch_now either: it is decided on a live state, which
# is never late (the offset is learned from live states), and its time is when the delay was met, which may be minutes
# before the first state to arrive after it (states lost); the broker's retained copy is judged stale as before.
NOW_KINDS = ("slouch", "sitting", "recovery", "recovered")


@dataclass(frozen=True)
class Finding:
    kind: str  # slouch | slouch_now | rotation | lean | sitting | calibration | recovery | recovered
    ts_s: float  # data time it is about
    severity: str  # info | warning
    evidence: dict[str, Any]
    deficit: str | None = None  # which stretch addresses it (alerts/stretches.toml)
    side: str | None = None  # the side the stretch should favour
    # How much of a day-total imbalance it tells of (rotation: its SI, signed; lean: minutes leaning), as the data has
    # it (not the evidence's tenths): the next nudge of its kind needs as much more again (state.told).
    amount: float | None = None
    # The answer to moves the wearer is making now (a refusal of them: engine.on_event): the wearer is awake and
    # waiting for it, so neither quiet hours nor a snooze hold it (policy.held_reason).
    answer: bool = False

    @property
    def ts_ms(self) -> int:
        """Its alert's ts (Unix ms), which also says the day it counts on (contract alert_day)."""
        return int(round(self.ts_s * 1000))


def totals(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over some minutes (a day so far): what the daily summary and Home Assistant show."""
    return totals_of(day_totals(minutes))


def totals_of(t: DayTotals) -> dict[str, Any]:
    """totals() of minutes already folded."""
    si = t.rotation_symmetry_index
    return {
        "worn_min": round(t.worn_s / 60, 1), "slouch_min": round(t.slouch_s / 60, 1),
        "slouch_pct": _round(t.slouch_pct_of_worn),
        "sitting_min": round(t.activity_s["sitting"] / 60, 1),
        "lean_left_min": round(t.lean_s["left"] / 60, 1),
        "lean_right_min": round(t.lean_s["right"] / 60, 1),
        "rotations_left": t.rotations["left"], "rotations_right": t.rotations["right"],
        "rotation_left_peak_mean_deg": _round(t.rotation_peak_mean_deg("left")),
        "rotation_right_peak_mean_deg": _round(t.rotation_peak_mean_deg("right")),
        "rotation_si": _round(si),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1) + 0.0  # + 0.0: never -0.0 (Home Assistant would show the sign)


def slouch_share(state: DeviceState, end_ms: int, rules: Rules) -> Finding | None:
    r = rules.slouch
    recent = state.window(end_ms, r.window_min)
    # Two sums, as slouch_unbroken reads them: the whole fold (day_totals) cost a third of a minute's handling.
    worn_s, slouch_s = sum(m["worn_s"] for m in recent), sum(m["slouch_s"] for m in recent)
    if worn_s < r.min_worn_min * 60 or worn_s <= 0 or 100 * slouch_s / worn_s < r.share_pct:
        return None
    flexion = [m["flexion_mean_deg"] for m in recent if m.get("flexion_mean_deg") is not None]
    return Finding("slouch", end_ms / 1000, "warning", {
        "window_min": r.window_min, "worn_min": round(worn_s / 60, 1), "slouch_min": round(slouch_s / 60, 1),
        "slouch_pct": round(100 * slouch_s / worn_s, 1),
        "flexion_mean_deg": round(sum(flexion) / len(flexion), 1) if flexion else None}, deficit="slouch")


def slouch_unbroken(state: DeviceState, end_ms: int, rules: Rules) -> Finding | None:
    """Minutes slouched nearly throughout, back to back up to now: a long slouch still going on, as long as it has
    gone on. A minute missing breaks the run (the sensor was off or out of reach, which ends a slouch in the pipeline
    too): taken as back to back, a slouch either side of a minute away was "slouching for 5 min". The whole run is
    counted: looking back episode_min + 1 minutes only, a slouch nudged at 5 min and again after the cooldown was
    "slouching for 6 min" at its 35th."""
    run = 0
    while (m := state.minutes.get(str(end_ms - (run + 1) * MINUTE_MS))) is not None:
        if not m["worn_s"] or m["slouch_s"] < 0.9 * m["worn_s"]:
            break
        run += 1
    if run < rules.slouch.episode_min:
        return None
    return Finding("slouch", end_ms / 1000, "warning", {"episode_min": run}, deficit="slouch")


def slouch_episode(event: dict[str, Any], rules: Rules) -> Finding | None:
    if event["duration_s"] < rules.slouch.episode_min * 60:
        return None
    return Finding("slouch", event["end_s"], "warning", {
        "episode_min": round(event["duration_s"] / 60, 1), "peak_flexion_deg": round(event["peak_flexion_deg"], 1),
        "mean_flexion_deg": round(event["mean_flexion_deg"], 1)}, deficit="slouch")


SAME_START_S = 0.5  # two reports of one slouch's start agree to this; two slouches never start this close


def same_start(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < SAME_START_S


def slouch_now(live: dict[str, Any], state: DeviceState, rules: Rules) -> Finding | None:
    """A live state showing a slouch held delay_s *now*, one not yet nudged: the real-time nudge.

    Its time is the moment the delay was met (slouching_since_s + delay_s, sensor time), whichever live
    state is the first to arrive after it, so a lost or repeated live message gives the same alert (its id); what it
    says is that state's (how long slouched, how far forward). Once this
    slouch's nudge has been held back (cooldown, quiet hours, snooze, cap or its pace, stale), a later try is at the
    live state's own time: the slouch still goes on then.
    """
    since, t_s = live["slouching_since_s"], live["ts"] / 1000
    delay_s = rules.slouch_now.delay_s
    if since is None or t_s - since < delay_s or same_start(since, state.slouch_now_done_s):
        return None
    at_s = t_s if same_start(since, state.slouch_now_held_s) else since + delay_s
    flexion = live.get("flexion_deg")
    # How long it has gone on as of the state that fires it, as its flexion is that state's: to at_s, the first
    # state after live states lost or the service away for minutes read "Slouching for 60 s now" at the 5th.
    return Finding("slouch_now", at_s, "warning", {
        "slouch_s": round(t_s - since, 1), "delay_s": delay_s, "since_s": since,
        "flexion_deg": None if flexion is None else round(flexion, 1), "activity": live.get("activity")},
                   deficit="slouch")


def slouch_recovered(since_s: float, over_s: float, lasted_to_s: float | None = None) -> Finding:
    """The slouch the live rule nudged (from since_s) is over: live states have shown no slouch since over_s. Its
    length is to lasted_to_s (where it was last seen, when it ended unseen: engine.on_live), else to over_s."""
    end_s = over_s if lasted_to_s is None else lasted_to_s
    return Finding("recovered", over_s, "info", {"slouch_s": round(max(end_s - since_s, 0.0), 1), "since_s": since_s})


# A minute worn upright (not lying) this long: the wearer is up, sitting or standing, and can take a nudge's stretch.
UPRIGHT_MINUTE_S = 30.0


def upright_s(minute: dict[str, Any]) -> float:
    """A minute's seconds worn and not lying (pipeline/metrics.py's upright_s: where posture is measured)."""
    return float(minute["worn_s"] - (minute.get("lying_s") or 0.0))


def upright(minute: dict[str, Any]) -> bool:
    return upright_s(minute) >= UPRIGHT_MINUTE_S


def rotation_asymmetry(day: DayTotals, end_ms: int, rules: Rules, told: float | None = None) -> Finding | None:
    """day: the day's minutes folded, as they are: the thresholds are compared with the values as sent, not with the
    tenths the evidence shows (an SI of 24.96 read as 25.0 was "at or over 25 %"). told: the day's SI when it was last
    nudged. Again only when the imbalance is worse by as much as the first nudge needed (si_pct further from balance),
    or on the other side (the stretch favours the other side then): on totals alone it came every cooldown (2 h) all
    day, and counted by rotations (again after 20 more) the same imbalance was told again the more the wearer moved."""
    count, si = day.rotations["left"] + day.rotations["right"], day.rotation_symmetry_index
    if (count < rules.rotation.min_excursions or si is None or abs(si) < rules.rotation.si_pct
            or (told is not None and si * told > 0 and abs(si) - abs(told) < rules.rotation.si_pct)):
        return None
    restricted = "left" if si > 0 else "right"  # the side turned to less
    keys = ("rotations_left", "rotations_right", "rotation_left_peak_mean_deg", "rotation_right_peak_mean_deg",
            "rotation_si")
    shown = totals_of(day)
    return Finding("rotation", end_ms / 1000, "info", {k: shown[k] for k in keys} | {"restricted_side": restricted},
                   deficit="rotation", side=restricted, amount=si)


def lean_asymmetry(day: DayTotals, end_ms: int, rules: Rules, told: float | None = None) -> Finding | None:
    """day: as rotation_asymmetry's, the seconds as sent (9.97 min leaning, shown as 10.0, was "10 min").
    told: the day's minutes leaning when it was last nudged. Again only after as many more as the first nudge
    needed: a wearer who leaned from 09:00 to 09:12 only was told again at 11:10, lying down."""
    left, right = day.lean_s["left"] / 60, day.lean_s["right"] / 60
    if left + right < rules.lean.min_lean_min or (told is not None and left + right - told < rules.lean.min_lean_min):
        return None
    side = "left" if left > right else "right"
    share = 100 * max(left, right) / (left + right)
    if share < rules.lean.side_share_pct:
        return None
    away = "right" if side == "left" else "left"  # bend away from the usual lean: stretch the side it shortens
    shown = totals_of(day)
    return Finding("lean", end_ms / 1000, "info", {"lean_left_min": shown["lean_left_min"],
                                                    "lean_right_min": shown["lean_right_min"],
                                                    "lean_side": side, "share_pct": round(share, 1)},
                   deficit="lean", side=away, amount=left + right)


def sitting_s(minute: dict[str, Any], end_ms: int) -> float | None:
    """How long the wearer had sat, unbroken, where the minute's data ends (None: not sitting then): from its
    sitting_since_s to its seen_until_s. Counted to the minute's end (end_ms), a minute cut short 4.5 s in by a lost
    link said 25.6 min sitting for 24.7, and `today` went on saying it. A gateway from before seen_until_s: to the
    minute's end, as before. The one count of it: the sitting nudge and `today` (sitting_now_min) read it here."""
    since = minute.get("sitting_since_s")
    if since is None:
        return None
    until_s = minute.get("seen_until_s")
    return max(0.0, float((end_ms / 1000 if until_s is None else until_s) - since))  # (≥ 0: both kept to hundredths)


def long_sitting(minute: dict[str, Any], end_ms: int, rules: Rules) -> Finding | None:
    sat_s = sitting_s(minute, end_ms)
    if sat_s is None or sat_s < rules.sitting.max_sitting_min * 60:
        return None
    return Finding("sitting", end_ms / 1000, "warning", {"sitting_min": round(sat_s / 60, 1)}, deficit="sitting")


def calibration_event(event: dict[str, Any], answer: bool = False) -> Finding | None:
    """A refusal or a request to recalibrate: its reason and what it asks for, as the event says them apart (their
    alert says them as they are, compose.message); a gateway from before it did says its message alone, kept whole as
    the reason (compose._why_and_how tells them apart in it as before). answer: a refusal the engine takes for the
    answer to the wearer's moves (engine.on_event)."""
    if event["status"] not in ("recalibrate", "refused"):
        return None
    said = ({"reason": event["reason"], "ask": event["ask"]} if "ask" in event and "reason" in event
            else {"reason": event["message"]})
    return Finding("calibration", event["t_s"], "warning", {"status": event["status"], **said},
                   answer=answer and event["status"] == "refused")


def recovery(state: DeviceState, end_ms: int, rules: Rules) -> Finding | None:
    """After a slouch nudge: enough upright, nearly slouch-free minutes in a row since it. Upright as the pipeline
    counts it (metrics.upright_s): worn and not lying. A body lying has no posture and no slouch, and five minutes
    lying down after the nudge were praised "Upright for the last 5 min"."""
    r, since = rules.recovery, state.slouch_alert_s
    if since is None or end_ms / 1000 - since > r.within_min * 60 + 60:
        return None
    recent = state.between(since * 1000, end_ms)[-r.upright_min:]
    good = [m for m in recent if upright(m) and m["slouch_s"] <= r.max_slouch_pct / 100 * upright_s(m)]
    if len(recent) < r.upright_min or len(good) < r.upright_min:
        return None
    return Finding("recovery", end_ms / 1000, "info", {"upright_min": r.upright_min})
