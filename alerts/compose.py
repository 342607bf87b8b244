"""Findings → alert payloads (contract/schemas/alert.json): a title and a message short enough for a phone."""

from __future__ import annotations

import math
from typing import Any

from alerts.rules import Finding
from contract.messages import SCHEMA_VERSION
from pipeline.events import STANDING, calibration_moves
from pipeline.summary import DayTotals

TITLES = {"slouch": "Slouching", "slouch_now": "Slouching now", "rotation": "Rotation imbalance",
          "lean": "Leaning to one side", "sitting": "Time to move", "calibration": "Recalibrate the sensor",
          "recovery": "Upright again", "recovered": "Slouch over", "summary": "Your posture today"}
MESSAGE_MAX_CHARS = 240  # contract/schemas/alert.json: short enough for a phone notification
# A calibration alert's reason keeps at least this much of the message, however long the event's ask (up to 500
# characters, contract/schemas/event.json): an ask near that left the reason "…" and was itself cut mid-word.
REASON_MIN_CHARS = 80


def _how(stretch: dict[str, Any] | None) -> str:
    if stretch is None:
        return ""
    if stretch.get("duration_min"):
        return f" Try: {stretch['name']}, {stretch['duration_min']:g} min."
    each = " each side" if stretch.get("per_side") else ""
    return f" Try: {stretch['name']}, {stretch['reps']}× {stretch['hold_s']} s{each}."


def _span(seconds: float) -> str:
    """45 s, 90 s, 3 min, 2 h 16 min: seconds while the wearer would count them, whole minutes gone by after (rounded,
    150 s read "2 min" and 210 s "4 min", and 119.6 s "120 s"), hours past two."""
    if (whole_s := round(seconds)) < 120:
        return f"{whole_s} s"
    minutes = whole_s // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def message(finding: Finding, stretch: dict[str, Any] | None) -> str:
    e = finding.evidence
    if finding.kind == "slouch" and "slouch_pct" in e:
        # The share is of the time worn: with the sensor off for part of the window, "30% of the last 30 min" said
        # 9 min where the wearer slouched 6 (of 20 worn).
        worn = f"{e['worn_min']:.0f}"
        of = (f"the last {e['window_min']} min" if float(worn) >= e["window_min"] else
              f"the {worn} min worn in the last {e['window_min']}")
        text = f"You slouched {e['slouch_pct']:.0f}% of {of}."
    elif finding.kind == "slouch" and "peak_flexion_deg" in e:  # an episode that has ended
        text = f"You slouched for {_span(e['episode_min'] * 60)} without a break (up to {e['peak_flexion_deg']:.0f}°)."
    elif finding.kind == "slouch":
        text = f"You have been slouching for {_span(e['episode_min'] * 60)}."
    elif finding.kind == "slouch_now":
        forward = f" ({e['flexion_deg']:.0f}° forward)" if e.get("flexion_deg") is not None else ""
        # A slouch is measured standing too (at a standing desk): "Sit up tall" told a standing wearer to sit.
        tall = "Stand tall." if e.get("activity") == STANDING else "Sit up tall."
        text = f"Slouching for {_span(e['slouch_s'])} now{forward}. {tall}"
    elif finding.kind == "recovered":
        text = f"Out of the slouch after {_span(e['slouch_s'])}. Keep it up!"
    elif finding.kind == "rotation":
        more = "right" if finding.side == "left" else "left"
        text = f"Today you rotate more to the {more} (SI {e['rotation_si']:+.0f}%); favour your {finding.side}."
    elif finding.kind == "lean":
        leaning_min = e["lean_left_min"] + e["lean_right_min"]
        text = (f"You lean mostly to the {e['lean_side']} ({e['share_pct']:.0f}% of "
                f"{leaning_min:.{0 if leaning_min >= 10 else 1}f} min leaning); bend to your {finding.side}.")
    elif finding.kind == "sitting":
        text = f"Sitting for {_span(e['sitting_min'] * 60)}."
    elif finding.kind == "calibration":
        why, how = (_sentence(e["reason"]), _sentence(e["ask"])) if "ask" in e else _why_and_how(e["reason"])
        room = MESSAGE_MAX_CHARS - 1  # (the space between the two)
        how = _shortened(how, room - min(len(why), REASON_MIN_CHARS))
        text = f"{_shortened(why, room - len(how))} {how}"
    else:  # recovery
        text = f"Upright for the last {e['upright_min']} min. Keep it up!"
    return (text + _how(stretch))[:MESSAGE_MAX_CHARS]


def alert_id(device: str, kind: str, ts_s: float) -> str:
    """An alert's id: the same finding (device, kind, data time to the ms) is the same alert, however often it is
    found (a redelivered message, a repeated live state); the engine checks what it has sent by it."""
    return f"{device}-{kind}-{int(round(ts_s * 1000))}"


def alert_payload(device: str, finding: Finding, stretch: dict[str, Any] | None) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "kind": finding.kind, "id": alert_id(device, finding.kind, finding.ts_s),
            "device": device, "ts": finding.ts_ms, "severity": finding.severity, "title": TITLES[finding.kind],
            "message": message(finding, stretch), "stretch": stretch, "evidence": finding.evidence}


def summary_payload(device: str, date: str, now_s: float, evidence: dict[str, Any],
                    stretch: dict[str, Any] | None, totals: DayTotals) -> dict[str, Any]:
    """totals: the day's minutes folded, as they are (the evidence's, before rounding); the text's whole minutes and
    percent are rounded from them once, as `posture report` rounds them. From the evidence's tenths they were rounded
    twice: 29.46 min slouched of 100 was "Slouched 30 of 100 min worn (30%" here and "slouch 29 min (29 % of worn
    time)" in the report."""
    e = evidence
    share = totals.slouch_pct_of_worn
    if e["worn_min"] and share is not None:
        goal = ("goal met" if e["goal_met"] else
                ("goal missed" if e["goal_met"] is False else "too little wear to count"))
        text = (f"Slouched {totals.slouch_s / 60:.0f} of {totals.worn_s / 60:.0f} min worn "
                f"({share_text(share, e['goal_slouch_pct'])}%, goal < {e['goal_slouch_pct']:g}%): {goal}. "
                f"Streak {e['streak_days']} d")
    else:
        text = f"Not worn today. Streak {e['streak_days']} d"
    if e["program_day"] < e["program_days"]:
        text += f", day {e['program_day']} of {e['program_days']}."
    elif e["program_day"] == e["program_days"]:  # told now: a wearer who stops after it gets no next summary
        text += (f", day {e['program_days']} of {e['program_days']}: program done, goal met on {e['days_met']} of "
                 f"{e['program_days']} days.")
    else:
        text += f". {e['program_days']}-day program done: goal met on {e['days_met']} of {e['program_days']} days."
    return {"schema": SCHEMA_VERSION, "kind": "summary", "id": f"{device}-summary-{date}", "device": device,
            "ts": int(round(now_s * 1000)), "severity": "info", "title": TITLES["summary"],
            "message": (text + _how(stretch))[:MESSAGE_MAX_CHARS], "stretch": stretch, "evidence": evidence}


def share_text(share_pct: float, goal_pct: float) -> str:
    """The slouched share in whole percent, or with as many decimals (up to 2) as it takes to read on the side of the
    goal it is on: 19.6 % was "20%, goal < 20%: goal met"; now "19.6%"."""
    for digits in (0, 1, 2):
        shown = f"{share_pct:.{digits}f}"
        if (float(shown) < goal_pct) == (share_pct < goal_pct):
            return shown
    # Closer than 0.005 to the goal: cut towards the side it is on.
    cut = math.floor(share_pct * 100) if share_pct < goal_pct else math.ceil(share_pct * 100)
    return f"{cut / 100:.2f}"


def text_mirror(alert: dict[str, Any]) -> str:
    """For phone apps that show a topic's payload as it is (MQTT Alert): one line."""
    return f"{alert['title']}: {alert['message']}"


def _shortened(text: str, max_chars: int) -> str:
    """text whole if it fits, else cut at a word and marked so. The pipeline's reason was cut at 120 characters
    wherever that fell: "…or the sensor has moved; sit tall fo Sit upright and still for 3 s, …" (random day
    1796555284's walk reading -2°)."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars - 1].rsplit(" ", 1)[0].rstrip(" ;:,") + "…"


def _why_and_how(message: str) -> tuple[str, str]:
    """The reason and what to do, as sentences, told apart in the message of a gateway from before its events said them
    apart (reason and ask, pipeline/events.asking): cut at the words "sit upright", without its "recalibrate:". Its own
    instructions are said as they are: they carry the hold time it was set to, and what this reason needs (turn the
    sensor over, bend once more to confirm), where RECALIBRATE in their place told a wearer with the sensor the wrong
    way round to repeat moves that are refused again. Without those words, RECALIBRATE's after the whole message: a
    bend to make again ("bend straight forward once and sit up") was followed by the whole moves, and a sensor to tape
    flat by moves it cannot calibrate from, which the event's ask does not do."""
    why = message.removeprefix("recalibrate: ")
    if (cut := why.lower().find("sit upright")) > 0:
        return _sentence(why[:cut].rstrip(" ;:,").removesuffix("then").rstrip(" ;:,")), _sentence(why[cut:])
    return _sentence(why), RECALIBRATE


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if not text or text[-1] in ".!?…" else text + "."


# What the wearer is asked to do where no request of the pipeline says it (an old gateway's message without the words):
# the pipeline's moves with the hold it has by default, the one definition (pipeline/events.py).
RECALIBRATE = _sentence(calibration_moves())
