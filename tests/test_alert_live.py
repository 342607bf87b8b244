"""The real-time slouch nudge (rules.slouch_now) on live states, without MQTT: one nudge per slouch at the
moment its delay is met, one "recovered" once live states have shown it over for RECOVER_HOLD_S, whatever is lost,
repeated, restarted or re-found in between."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from alerts.catalog import Catalog
from alerts.engine import RECOVER_HOLD_S, AlertEngine
from alerts.settings import CalibrationRule, Limits, RecoveryRule, Rules, SittingRule, SlouchNowRule, SlouchRule
from contract.messages import alert_day
from contract.validation import load_validators
from pipeline.live import LiveClock
from sensor.batching import BatchCollector
from sensor.stream import ImuBatch
from service_io.config import LIVE_HZ_MIN, MAX_PIPELINE_BATCH_S

DAY = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
T0 = DAY + 10 * 3600  # 10:00 UTC
FAR = 10**9
VALIDATORS = load_validators()


def engine(**sections) -> AlertEngine:
    base = {"limits": Limits(max_delay_s=FAR, quiet_hours=""), "calibration": CalibrationRule(enabled=False),
            "recovery": RecoveryRule(enabled=False)}
    return AlertEngine(Rules(**(base | sections)), Catalog.load(), UTC)


def live(t_s: float, since: float | None, device: str = "D", flexion: float | None = 24.0) -> dict:
    doc = {"schema": 1, "kind": "live", "device": device, "ts": int(round(t_s * 1000)), "t_s": t_s,
           "calibration": "calibrated", "flexion_deg": flexion if since is not None else 4.0, "lateral_deg": 0.5,
           "rotation_deg": -1.0, "activity": "sitting", "slouching_since_s": since, "leaning_since_s": None,
           "lean_side": None, "sitting_since_s": T0 - 600}
    return VALIDATORS["live"](doc)  # every live state here is one the contract accepts


def slouch(start_s: float, seconds: float, lead_s: float = 10, tail_s: float = 15) -> list[dict]:
    """Live states at 1 Hz: upright for lead_s, a slouch from start_s (shown once its 5 s dwell confirmed it)
    for `seconds`, upright for tail_s after (long enough, by default, to show it over)."""
    out = []
    t = start_s - lead_s
    while t < start_s + seconds + tail_s:
        shown = start_s + 5 <= t < start_s + seconds
        out.append(live(t, start_s if shown else None))
        t += 1.0
    return out


def end_event(start_s: float, end_s: float, device: str = "D") -> dict:
    return VALIDATORS["events"]({"schema": 1, "kind": "slouch", "device": device, "ts": int(start_s * 1000),
                                 "start_s": start_s, "end_s": end_s, "duration_s": end_s - start_s,
                                 "peak_flexion_deg": 28.0, "mean_flexion_deg": 24.0})


def start_event(start_s: float, device: str = "D") -> dict:
    return VALIDATORS["events"]({"schema": 1, "kind": "episode_start", "device": device, "ts": int(start_s * 1000),
                                 "episode": "slouch", "start_s": start_s, "confirmed_after_s": 5.0, "side": None})


def minute(t_s: float, slouch_s: float, device: str = "D") -> dict:
    return {"schema": 1, "kind": "metrics", "device": device, "ts": int(t_s * 1000), "minute_start_s": t_s,
            "worn_s": 60.0, "sitting_s": 60.0, "standing_s": 0.0, "walking_s": 0.0, "lying_s": 0.0,
            "slouch_s": slouch_s, "lean_left_s": 0.0, "lean_right_s": 0.0, "rotations_left": 0, "rotations_right": 0,
            "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0, "sitting_since_s": T0 - 600,
            "lost_samples": 0, "flexion_mean_deg": 20.0}


def run(eng: AlertEngine, docs: list[dict], lag_s: float = 0.3, retained: bool = False) -> tuple[list[dict], int]:
    """Feed live states (and any events or minutes among them) as they arrive, lag_s after their time; the
    alerts, and how many live states changed the saved state."""
    alerts, changed = [], 0
    for doc in docs:
        now_s = doc["ts"] / 1000 + lag_s
        if doc["kind"] == "live":
            out, touched = eng.on_live(doc, now_s, retained=retained)
            changed += touched
        elif doc["kind"] == "metrics":
            out = eng.on_metrics(doc, doc["ts"] / 1000 + 60 + lag_s)
        else:
            out = eng.on_event(doc, doc.get("end_s", doc["ts"] / 1000) + lag_s)
        alerts += out
    return alerts, changed


def test_a_three_minute_slouch_at_1_hz_gives_one_nudge_at_since_plus_delay_and_one_recovered():
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    start = T0 + 0.25
    alerts, changed = run(eng, slouch(start, 180))
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"]
    nudge, recovered = alerts
    assert nudge["ts"] == round((start + 30) * 1000)  # the moment the delay was met, in sensor time
    assert nudge["id"] == f"D-slouch_now-{nudge['ts']}" and nudge["severity"] == "warning"
    assert nudge["evidence"] == {"slouch_s": 30.0, "delay_s": 30.0, "since_s": start, "flexion_deg": 24.0,
                                 "activity": "sitting"}
    assert nudge["title"] == "Slouching now" and nudge["message"].startswith("Slouching for 30 s now (24° forward).")
    assert nudge["stretch"]["id"] in {s.id for s in Catalog.load().for_deficit("slouch")}
    assert recovered["ts"] == round((start + 180) * 1000)  # the first live state without it
    assert recovered["message"] == "Out of the slouch after 3 min. Keep it up!" and recovered["stretch"] is None
    for a in alerts:
        VALIDATORS["alerts/log"](a)
    # 200 live states; the saved state changed only with the nudge and with the follow-up
    assert changed == 2


def test_a_wearer_slouching_standing_is_told_to_stand_tall_not_to_sit_up():
    """The pipeline measures a slouch standing too (random day 1796555268: 2 min slouched 23° at 09:39, standing), and
    the nudge said "Sit up tall." to a wearer on their feet."""
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    [nudge, _] = run(eng, [{**doc, "activity": "standing", "sitting_since_s": None} for doc in slouch(T0, 60)])[0]
    assert nudge["message"].startswith("Slouching for 30 s now (24° forward). Stand tall. Try: ")
    assert nudge["evidence"]["activity"] == "standing"


def test_no_nudge_when_the_slouch_ends_before_the_delay():
    eng = engine(slouch_now=SlouchNowRule(delay_s=60))
    alerts, changed = run(eng, slouch(T0, 59.5))
    assert alerts == [] and changed == 0
    assert run(eng, [end_event(T0, T0 + 59.5)])[0] == []  # its end is no nudge either (episode_min is 5)


def test_a_delay_shorter_than_the_dwell_is_met_when_the_slouch_is_confirmed():
    eng = engine(slouch_now=SlouchNowRule(delay_s=2))
    [nudge, _] = run(eng, slouch(T0, 20))[0]
    assert nudge["ts"] == (T0 + 2) * 1000  # nominally since + delay; it went out with the first state showing it
    assert nudge["message"].startswith("Slouching for 5 s now")  # as that state saw it


def test_a_nudge_that_comes_late_says_how_long_the_slouch_has_gone_on():
    """The first live state after the delay may come minutes after it (live states lost, the service restarted or away
    for a while): the nudge, sent then, said "Slouching for 60 s now" at the slouch's 5th minute. Its time and id stay
    the moment the delay was met."""
    eng = engine(slouch_now=SlouchNowRule(delay_s=60), limits=Limits(max_delay_s=600, quiet_hours=""))
    docs = [d for d in slouch(T0, 400) if not T0 + 30 <= d["ts"] / 1000 < T0 + 300]
    nudge, _ = run(eng, docs)[0]
    assert nudge["ts"] == (T0 + 60) * 1000 and nudge["evidence"]["slouch_s"] == 300.0
    assert nudge["message"].startswith("Slouching for 5 min now (24° forward).")


def test_a_live_state_delivered_again_or_late_makes_no_second_alert():
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    docs = slouch(T0, 60)
    alerts, _ = run(eng, docs)
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"]
    again, changed = run(eng, docs)  # everything once more, as after a redelivery
    assert again == [] and changed == 0


def test_a_restart_mid_slouch_does_not_nudge_again_and_the_follow_up_still_comes():
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    docs = slouch(T0, 120)
    half = next(i for i, d in enumerate(docs) if d["ts"] >= (T0 + 60) * 1000)
    first, _ = run(eng, docs[:half])
    assert [a["kind"] for a in first] == ["slouch_now"]
    saved = eng.dump(set(eng.devices))  # what the service wrote with the nudge
    restarted = engine(slouch_now=SlouchNowRule(delay_s=30))
    restarted.load(saved)
    rest, _ = run(restarted, docs[half + 3:])  # three live states lost while it restarted
    assert [a["kind"] for a in rest] == ["recovered"]


def test_live_states_lost_around_the_delay_and_around_the_end():
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    docs = [d for d in slouch(T0, 90, tail_s=100) if not (T0 + 25 <= d["ts"] / 1000 <= T0 + 40)
            and not (T0 + 85 <= d["ts"] / 1000 <= T0 + 160)]
    docs.insert(next(i for i, d in enumerate(docs) if d["ts"] / 1000 > T0 + 90), end_event(T0, T0 + 90))
    alerts, _ = run(eng, docs)
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"]
    assert alerts[0]["ts"] == (T0 + 30) * 1000  # the same nudge as without the loss
    # the end event does not praise: the live states do, from the first of those that showed it over
    assert alerts[1]["ts"] == (T0 + 161) * 1000


def test_after_a_gap_in_the_live_stream_the_live_states_settle_the_follow_up_not_the_end_event():
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    docs = slouch(T0, 60, tail_s=0)
    alerts, _ = run(eng, docs)
    assert [a["kind"] for a in alerts] == ["slouch_now"]
    # the next live state comes 10 min later; the slouch's end event says it ended at T0 + 60, but the pipeline
    # sends that for a gap or a stop too: no praise from it
    assert run(eng, [live(T0 + 660, None)])[0] == []
    assert eng.on_event(end_event(T0, T0 + 60), now_s=T0 + 661) == []
    # ten seconds of live states without the slouch: over, from the first of them
    alerts, _ = run(eng, [live(T0 + 661 + k, None) for k in range(10)])
    assert [(a["kind"], a["ts"]) for a in alerts] == [("recovered", (T0 + 660) * 1000)]
    assert run(eng, [live(T0 + 671 + k, None) for k in range(20)])[0] == []  # once
    assert eng.on_event(end_event(T0, T0 + 60), T0 + 700) == []


def test_quiet_hours_hold_the_nudge_until_they_end_if_the_slouch_goes_on():
    eng = engine(slouch_now=SlouchNowRule(delay_s=60), limits=Limits(quiet_hours="22:00-07:00", max_delay_s=FAR))
    start = DAY + 7 * 3600 - 120  # 06:58
    alerts, changed = run(eng, slouch(start, 300))
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"]
    assert alerts[0]["ts"] == (DAY + 7 * 3600) * 1000  # held at 06:59, sent with the first live state at 07:00
    assert alerts[0]["evidence"]["slouch_s"] == 120.0
    assert eng.devices["D"].held_on("2026-11-20") == {"quiet_hours": 1}  # on its day: no minute has opened one
    assert changed == 3  # held, sent, over


def test_quiet_hours_hold_a_slouch_that_ends_in_them_for_good():
    eng = engine(slouch_now=SlouchNowRule(delay_s=60), limits=Limits(quiet_hours="22:00-07:00", max_delay_s=FAR))
    alerts, _ = run(eng, slouch(DAY + 6 * 3600, 300))
    assert alerts == [] and eng.devices["D"].held_on("2026-11-20") == {"quiet_hours": 1}


def test_snooze_cap_and_staleness_hold_it_too():
    eng = engine(slouch_now=SlouchNowRule(delay_s=30))
    eng.snooze("D", 30, from_s=T0)
    assert run(eng, slouch(T0, 120))[0] == []
    capped = engine(slouch_now=SlouchNowRule(delay_s=30), limits=Limits(daily_cap=0, quiet_hours="", max_delay_s=FAR))
    assert run(capped, slouch(T0, 120))[0] == []
    stale = engine(slouch_now=SlouchNowRule(delay_s=30), limits=Limits(quiet_hours="", max_delay_s=600))
    assert run(stale, slouch(T0, 120), lag_s=3600)[0] == []  # an hour-old live state (a retained one) is history
    assert stale.devices["D"].held_on("2026-11-20") == {"stale": 1}


def test_the_minute_based_rules_send_no_second_nudge_for_the_same_slouch():
    eng = engine(slouch=SlouchRule(window_min=5, share_pct=30, min_worn_min=2, episode_min=2, cooldown_min=5),
                 slouch_now=SlouchNowRule(delay_s=30, cooldown_min=1))
    start = T0 + 15  # a 10-minute slouch, its minutes and its end event among the live states, as they arrive
    docs = slouch(start, 600, tail_s=120)
    for k in range(1, 13):
        at = next(i for i, d in enumerate(docs) if d["kind"] == "live" and d["ts"] >= (T0 + 60 * k + 1) * 1000)
        docs.insert(at, minute(T0 + 60 * (k - 1), slouch_s=min(max(start + 600 - (T0 + 60 * (k - 1)), 0), 60)
                               - (15 if k == 1 else 0)))
    docs.insert(next(i for i, d in enumerate(docs) if d["ts"] >= (start + 601) * 1000 and d["kind"] == "live"),
                end_event(start, start + 600))
    alerts, _ = run(eng, docs)
    # the unbroken run (2 min) and the share (30 %) hold while the live-nudged slouch goes on, even past their
    # cooldown (5 min); its end event is not nudged again; after it their cooldown runs from its end, so the
    # 5-minute share window never holds that slouch again
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"], [(a["kind"], a["ts"]) for a in alerts]


def test_a_minute_based_nudge_during_the_slouch_means_no_live_one_and_they_share_the_cooldown():
    eng = engine(slouch=SlouchRule(window_min=3, share_pct=30, min_worn_min=2, episode_min=100, cooldown_min=30),
                 slouch_now=SlouchNowRule(delay_s=150, cooldown_min=5))
    alerts, _ = run(eng, [minute(T0 + 60 * k, slouch_s=40) for k in range(3)])
    assert [(a["kind"], a["ts"]) for a in alerts] == [("slouch", (T0 + 120) * 1000)]
    # a slouch that began before that nudge has had its nudge
    assert run(eng, slouch(T0 + 100, 160, lead_s=0, tail_s=1))[0] == []
    # a new slouch that meets its delay within the live rule's cooldown (5 min) of it: sent once that has passed
    alerts, _ = run(eng, slouch(T0 + 262, 200, lead_s=0))
    assert [(a["kind"], a["ts"]) for a in alerts] == [("slouch_now", (T0 + 420) * 1000),
                                                      ("recovered", (T0 + 462) * 1000)]
    assert alerts[0]["evidence"]["slouch_s"] == 158.0
    assert eng.devices["D"].held_today == {}  # a cooldown is not a hold


def test_one_praise_per_slouch_the_follow_up_or_the_minute_based_recovery():
    recovery = RecoveryRule(upright_min=1, max_slouch_pct=10, within_min=30)
    eng = engine(slouch_now=SlouchNowRule(delay_s=30), recovery=recovery)
    docs = slouch(T0 + 5, 40, tail_s=200) + [minute(T0 + 60 * k, slouch_s=s) for k, s in ((0, 40), (1, 0), (2, 0))]
    alerts, _ = run(eng, sorted(docs, key=lambda d: d["ts"] + (60_000 if d["kind"] == "metrics" else 0)))
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"]
    # without the follow-up, the minute-based praise watches the live nudge instead
    eng = engine(slouch_now=SlouchNowRule(delay_s=30, recovered=False), recovery=recovery)
    alerts, _ = run(eng, sorted(docs, key=lambda d: d["ts"] + (60_000 if d["kind"] == "metrics" else 0)))
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovery"]


def test_a_start_event_is_never_an_episode_nor_a_nudge():
    eng = engine(slouch=SlouchRule(episode_min=0.05), slouch_now=SlouchNowRule(enabled=False))
    assert eng.on_event(start_event(T0), now_s=T0 + 6) == []
    assert "D" not in eng.devices  # nothing remembered: no day opened, nothing to save
    [episode] = eng.on_event(end_event(T0, T0 + 20), now_s=T0 + 21)
    assert episode["kind"] == "slouch" and episode["evidence"]["episode_min"] == 0.3


def test_another_start_while_the_nudged_slouch_is_not_over_is_that_slouch_going_on():
    eng = engine(slouch_now=SlouchNowRule(delay_s=10, cooldown_min=0))
    docs = [live(T0 + k, T0 if k < 60 else T0 + 58) for k in range(5, 130)]
    docs += [live(T0 + k, None) for k in range(130, 145)]
    alerts, _ = run(eng, docs)
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 10), ("recovered", 130)]
    assert alerts[1]["evidence"] == {"slouch_s": 130.0, "since_s": T0}  # from the start of the slouch nudged
    assert eng.devices["D"].slouch_now_starts == [T0, T0 + 58]


def test_live_states_change_nothing_saved_when_the_rule_is_off_or_nothing_moves():
    eng = engine(slouch_now=SlouchNowRule(enabled=False))
    alerts, changed = run(eng, slouch(T0, 300))
    assert alerts == [] and changed == 0
    eng = engine()
    assert run(eng, [live(T0 + k, None, flexion=None) for k in range(100)]) == ([], 0)  # uncalibrated: all null


def test_a_gateway_restart_mid_slouch_is_no_recovery():
    eng = engine(slouch=SlouchRule(episode_min=0.1, cooldown_min=0), slouch_now=SlouchNowRule(delay_s=10))
    alerts, _ = run(eng, [live(T0 + k, T0) for k in range(5, 30)])
    assert [a["kind"] for a in alerts] == ["slouch_now"]
    # the gateway stops gracefully (its pipeline's finish() ends the open slouch: an end event) and restarts: its
    # fresh pipeline is uncalibrated for a moment, then confirms the slouch anew, 5 s after it finds it
    fresh = [end_event(T0, T0 + 30)]
    fresh += [live(T0 + 31, None, flexion=None) | {"flexion_deg": None, "calibration": "uncalibrated"}]
    fresh += [live(T0 + 32 + k, None if k < 6 else T0 + 32) for k in range(20)]
    fresh += [end_event(T0 + 32, T0 + 52)]
    alerts, _ = run(eng, fresh)
    assert alerts == []  # no praise for a slouch that went on, no second nudge, no episode nudge for its parts
    assert eng.devices["D"].slouch_now_open
    alerts, _ = run(eng, [live(T0 + 52 + k, None) for k in range(12)])
    assert [(a["kind"], a["ts"], a["evidence"]["slouch_s"]) for a in alerts] == [("recovered", (T0 + 52) * 1000, 52)]


def test_a_two_second_gap_and_the_slouch_found_again_is_one_slouch_one_nudge_one_recovered():
    eng = engine(slouch=SlouchRule(episode_min=0.1, cooldown_min=0), slouch_now=SlouchNowRule(delay_s=10))
    docs = [live(T0 + k, None) for k in range(-5, 5)] + [live(T0 + k, T0) for k in range(5, 41)]
    # no live state for 2 s (a BLE gap): the pipeline ends the slouch (its end event), finds it again at T0 + 43 and
    # shows it once its dwell confirmed it, 5 s later: meanwhile posture is measured and shows no slouch
    docs += [end_event(T0, T0 + 41)]
    docs += [live(T0 + k, None) for k in range(43, 48)] + [live(T0 + k, T0 + 43) for k in range(48, 100)]
    docs += [end_event(T0 + 43, T0 + 100)] + [live(T0 + k, None) for k in range(100, 112)]
    alerts, changed = run(eng, docs)
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 10), ("recovered", 100)]
    assert alerts[1]["message"] == "Out of the slouch after 100 s. Keep it up!"
    assert changed == 3  # the nudge, the slouch found again, the follow-up


def test_a_gap_before_the_delay_does_not_start_the_delay_again():
    """Through evaluation/harness.py (a 150 s slouch, outages injected into its link): a BLE gap of
    1.5–8 s 20–50 s into a slouch made the pipeline end it and find it again, and the delay counted from the piece
    found again: the nudge came 80–117 s after the slouch began for a delay of 60 s, saying "Slouching for 60 s now"."""
    eng = engine(slouch_now=SlouchNowRule(delay_s=60))
    docs = [live(T0 + k, None) for k in range(-5, 5)] + [live(T0 + k, T0) for k in range(5, 45)]
    docs += [end_event(T0, T0 + 45)]  # no live state for 2 s (a BLE gap): the pipeline ends the slouch
    # found again at T0 + 47.5, shown once its dwell confirmed it: the states of the dwell show posture, no slouch yet
    docs += [{**live(T0 + k, None), "flexion_deg": 24.0} for k in range(48, 53)]
    docs += [live(T0 + k, T0 + 47.5) for k in range(53, 150)] + [live(T0 + k, None) for k in range(150, 165)]
    alerts, _ = run(eng, docs)
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 60), ("recovered", 150)]
    assert alerts[0]["evidence"]["since_s"] == T0 and alerts[0]["message"].startswith("Slouching for 60 s now")
    assert alerts[1]["message"] == "Out of the slouch after 2 min. Keep it up!"  # 150 s, from its start


def test_a_sit_up_or_a_long_gap_before_the_delay_starts_it_again():
    # Sitting up (a live state with posture and no slouch before the new start) is an end: the delay starts again.
    eng = engine(slouch_now=SlouchNowRule(delay_s=60))
    docs = [live(T0 + k, T0) for k in range(5, 45)] + [live(T0 + k, None) for k in range(45, 47)]
    docs += [live(T0 + k, T0 + 47) for k in range(52, 130)]
    assert [a["ts"] / 1000 - T0 for a in run(eng, docs)[0]] == [107]
    # So is a gap longer than a slouch that goes on can look absent (RECOVER_HOLD_S): the time away is not known.
    eng = engine(slouch_now=SlouchNowRule(delay_s=60))
    docs = [live(T0 + k, T0) for k in range(5, 45)] + [live(T0 + k, T0 + 44 + RECOVER_HOLD_S + 1)
                                                      for k in range(60, 130)]
    assert [a["ts"] / 1000 - T0 for a in run(eng, docs)[0]] == [44 + RECOVER_HOLD_S + 1 + 60]


def test_end_events_of_the_nudged_slouch_never_praise():
    eng = engine(slouch=SlouchRule(episode_min=0.1, cooldown_min=0), slouch_now=SlouchNowRule(delay_s=10))
    alerts, _ = run(eng, [live(T0 + k, T0) for k in range(5, 40)])
    assert [a["kind"] for a in alerts] == ["slouch_now"]
    # a BLE gap, a gateway stop (finish()) or a recalibration ends the slouch in the pipeline: its end event comes,
    # and nothing else (the live stream stopped)
    assert eng.on_event(end_event(T0, T0 + 40), now_s=T0 + 41) == []
    assert eng.on_event(end_event(T0, T0 + 40), now_s=T0 + 42) == []  # delivered again
    state = eng.devices["D"]
    assert state.slouch_now_open and state.slouch_now_over_s == T0 + 40  # the cooldown runs from its end
    # the slouch found again after the restart ends before a live state showed it (those were lost): a part of it
    assert eng.on_event(end_event(T0 + 45, T0 + 60), now_s=T0 + 61) == []
    assert state.slouch_now_open and state.slouch_now_over_s == T0 + 60
    # once it is over, a later slouch's end is an episode as any (the minute-based rules' own)
    run(eng, [live(T0 + k, None) for k in range(100, 115)])
    assert not state.slouch_now_open
    [episode] = eng.on_event(end_event(T0 + 120, T0 + 140), now_s=T0 + 141)
    assert episode["kind"] == "slouch"


def test_a_few_seconds_upright_in_the_middle_of_a_slouch_do_not_end_it():
    eng = engine(slouch_now=SlouchNowRule(delay_s=10, cooldown_min=0))
    # slouched from T0, upright for 5 s from T0 + 61, slouched again from T0 + 66 (shown once confirmed, at T0 + 71):
    # ten states without it, fewer than RECOVER_HOLD_S seconds from the first to the last
    docs = [live(T0 + k, T0) for k in range(5, 61)] + [live(T0 + k, None) for k in range(61, 71)]
    docs += [live(T0 + k, T0 + 66) for k in range(71, 120)] + [live(T0 + k, None) for k in range(120, 140)]
    alerts, _ = run(eng, docs)
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 10), ("recovered", 120)]
    assert 70 - 61 < RECOVER_HOLD_S


@pytest.mark.parametrize("batch_s", [1.0, MAX_PIPELINE_BATCH_S])
@pytest.mark.parametrize("per_notification", [1, 7, 15])
def test_at_the_slowest_live_stream_the_config_takes_each_nudged_slouch_is_seen_over(batch_s, per_notification):
    """gateway.live_hz down to 0.01 was taken: below about 0.33 (a state every 3 s) live states came further apart
    than the alert service's LIVE_MAX_GAP_S, so the slouch nudged live was never seen over — no "recovered", and
    (it stayed open, saved) no slouch nudged live again. At the lowest live_hz the config takes, the states the
    gateway's own batching (BatchCollector) and LiveClock send at 100 Hz give each slouch its nudge and follow-up."""
    eng = engine(slouch_now=SlouchNowRule(delay_s=10, cooldown_min=0))
    collector, clock = BatchCollector(batch_s, 100.0), LiveClock(LIVE_HZ_MIN, batch_s)
    slouches = [(T0, 60.0), (T0 + 120, 60.0)]  # each shown once its 5 s dwell confirmed it
    docs = []
    for first in range(0, 220 * 100, per_notification):
        t_s = T0 - 10 + np.arange(first, first + per_notification) / 100
        batch = collector.add(ImuBatch("D", t_s, t_s, np.zeros((len(t_s), 3)), np.zeros((len(t_s), 3))))
        if batch is None or clock.take(batch.t_s, float(batch.t_s[-1])) is None:
            continue
        t = float(batch.t_s[-1])
        docs.append(live(t, next((start for start, s in slouches if start + 5 <= t < start + s), None)))
    alerts, _ = run(eng, docs)
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"] * 2
    assert [alerts[0]["ts"], alerts[2]["ts"]] == [(T0 + 10) * 1000, (T0 + 130) * 1000]  # each slouch's start + delay
    # over at the first state without it: at most a live interval and a batch after it ended
    assert [60 <= alerts[1]["ts"] / 1000 - T0 < 63, 180 <= alerts[3]["ts"] / 1000 - T0 < 183] == [True, True]


def test_uncalibrated_states_and_gaps_restart_the_count():
    eng = engine(slouch_now=SlouchNowRule(delay_s=10))
    run(eng, [live(T0 + k, T0) for k in range(5, 30)])
    docs = [live(T0 + k, None) for k in range(30, 38)]  # 8 s without the slouch …
    docs += [live(T0 + 38, None) | {"flexion_deg": None}]  # … then posture not measured (recalibrating)
    docs += [live(T0 + k, None) for k in range(39, 47)]  # 8 s again …
    docs += [live(T0 + k, None) for k in range(51, 60)]  # … a 4 s gap, then 8 s
    assert run(eng, docs)[0] == []
    [recovered] = run(eng, [live(T0 + k, None) for k in range(60, 62)])[0]
    assert recovered["ts"] == (T0 + 51) * 1000  # the first state of the run that lasted


def test_praise_does_not_use_up_the_daily_cap():
    eng = engine(slouch_now=SlouchNowRule(delay_s=10, cooldown_min=0),
                 limits=Limits(daily_cap=8, pace=False, quiet_hours="", max_delay_s=FAR))
    docs = [d for k in range(9) for d in slouch(T0 + 120 * k, 30, lead_s=0, tail_s=60)]
    alerts, _ = run(eng, docs)
    assert [a["kind"] for a in alerts] == ["slouch_now", "recovered"] * 8  # the ninth slouch meets the cap
    state = eng.devices["D"]
    assert state.sent_on("2026-11-20") == 8 and state.held_on("2026-11-20") == {"daily_cap": 1}


def test_a_live_state_from_the_future_does_not_stop_the_follow_up():
    eng = engine(slouch_now=SlouchNowRule(delay_s=10))
    docs = [live(T0 + k, T0) for k in range(5, 40)]
    # a clock that stepped an hour ahead for two states (or forged ones), one slouching with a start of its own
    docs += [live(T0 + 3600, None), live(T0 + 3601, T0 + 3590)]
    docs += [live(T0 + k, T0) for k in range(40, 60)] + [live(T0 + k, None) for k in range(60, 75)]
    alerts, _ = run(eng, docs)
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 10), ("recovered", 60)]
    assert eng.live["D"]["ts"] == (T0 + 74) * 1000  # the latest by arrival is the current state


def test_a_retained_copy_never_replaces_a_newer_state():
    eng = engine(slouch_now=SlouchNowRule(delay_s=10))
    run(eng, [live(T0 + k, T0) for k in range(5, 30)])
    # the service reconnects: the broker's retained copy is the last change, the slouch's confirmation at T0 + 5
    assert run(eng, [live(T0 + 5, T0)], retained=True) == ([], 0)
    assert eng.live["D"]["ts"] == (T0 + 29) * 1000
    alerts, _ = run(eng, [live(T0 + k, None) for k in range(30, 45)])
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("recovered", 30)]
    # a service that starts afresh has no state yet: the retained copy is the current one until the next comes
    fresh = engine(slouch_now=SlouchNowRule(delay_s=10))
    run(fresh, [live(T0 + 100, None)], retained=True)
    assert fresh.live["D"]["ts"] == (T0 + 100) * 1000
    run(fresh, [live(T0 + 200, None)], retained=True)  # a newer retained copy (the gateway changed meanwhile)
    assert fresh.live["D"]["ts"] == (T0 + 200) * 1000


def test_a_slouch_that_ended_out_of_range_lasted_as_long_as_it_was_seen():
    """A wearer who walked out of range slouching and came back upright: nobody saw the slouch end. The follow-up
    said "Out of the slouch after 6 min", the time away counted as slouching (a helper's end-to-end probe)."""
    eng = engine(slouch=SlouchRule(episode_min=0.1, cooldown_min=0),
                 slouch_now=SlouchNowRule(delay_s=10, cooldown_min=0))
    docs = [live(T0 + k, T0) for k in range(0, 40)]  # slouching; nudged at 10 s
    docs += [end_event(T0, T0 + 39)]  # the gateway closes it when the sensor goes silent
    docs += [live(T0 + 190 + k, None) for k in range(12)]  # back upright after 150 s away
    alerts, _ = run(eng, docs)
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 10), ("recovered", 190)]
    assert alerts[1]["evidence"]["slouch_s"] == 39.0
    assert alerts[1]["message"] == "Out of the slouch after 39 s. Keep it up!"
    # Seen upright a moment before the gap, or uncalibrated on the way back: as long as seen all the same.
    for before_gap, on_return in (([live(T0 + 40, None)], []), ([], [live(T0 + 189, None, flexion=None) |
                                                                     {"flexion_deg": None}])):
        other = engine(slouch=SlouchRule(episode_min=0.1, cooldown_min=0), slouch_now=SlouchNowRule(delay_s=10))
        docs = [live(T0 + k, T0) for k in range(0, 40)] + before_gap + on_return
        alerts, _ = run(other, docs + [live(T0 + 190 + k, None) for k in range(12)])
        assert [a["evidence"]["slouch_s"] for a in alerts if a["kind"] == "recovered"] == [39.0]
    # A slouch seen to end is timed to its end, as before.
    alerts, _ = run(eng, [live(T0 + 300 + k, T0 + 300) for k in range(20)] + [live(T0 + 320 + k, None)
                                                                               for k in range(12)])
    assert [(a["kind"], a["ts"] / 1000 - T0, a["evidence"]["slouch_s"]) for a in alerts] == [
        ("slouch_now", 310, 10.0), ("recovered", 320, 20.0)]


def by_arrival(docs: list[dict]) -> list[dict]:
    """Live states and minutes in the order they arrive: a minute some seconds after it ends (the pipeline's hold)."""
    return sorted(docs, key=lambda d: d["ts"] + (66_000 if d["kind"] == "metrics" else 0))


def test_a_nudged_slouch_whose_end_the_live_stream_lost_is_closed_by_an_upright_minute():
    """The live stream is QoS 0: when the states that showed the nudged slouch over were lost (here they came 4 s
    apart, each run of them cut short), it stayed open, saved, and every later slouch was taken for it: no nudge
    for the rest of the day. A minute of metrics (QoS 1) worn with no slouch in it closes it now, with its
    follow-up, and the next slouch is nudged."""
    eng = engine(slouch_now=SlouchNowRule(delay_s=30, cooldown_min=1))
    docs = slouch(T0, 120, tail_s=0)  # 10:00:00 to 10:02:00, nudged at 10:00:30
    docs += [live(T0 + 120 + 4 * k, None) for k in range(45)]  # upright to 10:05, the states in between lost
    docs += slouch(T0 + 300, 120, lead_s=0, tail_s=15)  # a new slouch at 10:05, all its states delivered
    docs += [minute(T0 + 60 * k, slouch_s=s) for k, s in enumerate((60, 60, 0, 0, 0, 55, 60))]
    alerts, _ = run(eng, by_arrival(docs))
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [
        ("slouch_now", 30), ("recovered", 120), ("slouch_now", 330), ("recovered", 420)]
    assert alerts[1]["evidence"] == {"slouch_s": 120.0, "since_s": T0}  # over by the upright minute's start


def test_an_upright_minute_that_arrives_after_the_next_slouch_began_still_lets_that_slouch_be_nudged():
    """The gateway's minutes came late (a spooled backlog) while the live states of a new slouch were already
    taken for the nudged one: the upright minute between them tells them apart."""
    eng = engine(slouch_now=SlouchNowRule(delay_s=30, cooldown_min=1))
    docs = slouch(T0, 60, tail_s=0) + [live(T0 + 60 + 4 * k, None) for k in range(30)]
    docs += slouch(T0 + 180, 120, lead_s=0, tail_s=0)  # the new slouch from 10:03, still going on at 10:05
    alerts, _ = run(eng, docs[:-30])
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("slouch_now", 30)]  # the new one taken for it
    alerts, _ = run(eng, [minute(T0 + 60 * k, slouch_s=s) for k, s in enumerate((60, 0, 0, 55))] + docs[-30:])
    # the new slouch's nudge at its start + delay, as for live states lost around the delay
    assert [(a["kind"], a["ts"] / 1000 - T0) for a in alerts] == [("recovered", 60), ("slouch_now", 210)]
    # a minute that shows a slouch, or too little worn to say, ends nothing
    assert run(eng, [minute(T0 + 240, slouch_s=30), minute(T0 + 300, 0.0) | {"worn_s": 20.0}])[0] == []
    assert eng.devices["D"].slouch_now_open


def test_an_alert_counts_on_the_day_of_the_data_it_was_decided_on_for_the_cap_and_alerts_sent():
    """A minute rule decided on 23:59 is stamped 00:00:00.000: it counts on that day (the report counts it there too,
    tests/test_report.py). A live nudge at 00:00:35, before the new day's first minute, is the new day's: it counted
    against the day before's cap (held there, the cap used up at 00:00:00.000) and in its `alerts_sent`."""
    eng = engine(sitting=SittingRule(max_sitting_min=20, cooldown_min=600), slouch=SlouchRule(enabled=False),
                 slouch_now=SlouchNowRule(delay_s=30), limits=Limits(daily_cap=1, quiet_hours="", max_delay_s=FAR))
    midnight = DAY + 86_400
    sitting = [minute(midnight - 600 + 60 * k, 0.0) | {"sitting_since_s": midnight - 1200} for k in range(10)]
    alerts, _ = run(eng, sitting)
    assert [(a["kind"], a["ts"]) for a in alerts] == [("sitting", int(midnight * 1000))]
    assert alert_day(alerts[0]["ts"], UTC).isoformat() == "2026-11-20"
    assert (eng.today_state("D")["date"], eng.today_state("D")["alerts_sent"]) == ("2026-11-20", 1)
    nudged, _ = run(eng, slouch(midnight + 5, 40, lead_s=2, tail_s=0))
    assert [(a["kind"], a["ts"]) for a in nudged] == [("slouch_now", int((midnight + 35) * 1000))]
    assert eng.devices["D"].held_today == {}
    assert (eng.today_state("D")["date"], eng.today_state("D")["alerts_sent"]) == ("2026-11-20", 1)
    run(eng, [minute(midnight, 40.0)])  # the new day's first minute opens it, with its nudge
    assert (eng.today_state("D")["date"], eng.today_state("D")["alerts_sent"]) == ("2026-11-21", 1)


def test_a_held_back_finding_counts_in_alerts_held_on_the_day_of_its_data():
    """`alerts_held` counted on the device's open day: a live nudge held back at 00:00:35, before the new day's first
    minute, went into the day before's count and was gone when the new day opened it; an episode of the day before
    held back after that counted on the new day. Each counts on its own day now (contract alert_day), as sent ones."""
    eng = engine(slouch=SlouchRule(episode_min=2), sitting=SittingRule(enabled=False),
                 slouch_now=SlouchNowRule(delay_s=30))
    midnight = DAY + 86_400
    run(eng, [minute(midnight - 120 + 60 * k, 0.0) for k in range(2)])  # 23:58 and 23:59: the day before is open
    eng.snooze("D", 600, from_s=midnight - 60)
    assert run(eng, slouch(midnight + 5, 40, lead_s=2, tail_s=0))[0] == []  # due at 00:00:35, snoozed
    assert (eng.today_state("D")["date"], eng.today_state("D")["alerts_held"]) == ("2026-11-20", 0)
    run(eng, [minute(midnight, 40.0)])  # the new day's first minute opens it, with the nudge held on it
    assert (eng.today_state("D")["date"], eng.today_state("D")["alerts_held"]) == ("2026-11-21", 1)
    # A slouch of the day before, over at 23:59:50, whose end event comes late: held back on that day, not this one.
    assert eng.on_event(end_event(midnight - 400, midnight - 10), now_s=midnight + 90) == []
    assert eng.today_state("D")["alerts_held"] == 1
    assert eng.devices["D"].held_other_days == {"2026-11-20": {"snoozed": 1}}


# A slouch nudged live, then a minute-based slouch nudge due by the minutes once the shared cooldown has passed.
RESTART_RULES = {"slouch": SlouchRule(window_min=5, share_pct=30, min_worn_min=2, episode_min=2, cooldown_min=5),
                 "slouch_now": SlouchNowRule(delay_s=30, cooldown_min=1)}


def test_a_restart_during_a_long_nudged_slouch_sends_no_minute_based_nudge_for_it():
    # At a restart the broker delivers the minutes it kept for the service before any live state (those come, retained
    # or new, only after its subscribe): the slouch nudged live goes on, and the stream was current when it stopped.
    rules = RESTART_RULES
    eng = engine(**rules)
    start = T0 + 15
    docs = slouch(start, 1200, tail_s=0)
    for k in range(1, 10):
        at = next(i for i, d in enumerate(docs) if d["kind"] == "live" and d["ts"] >= (T0 + 60 * k + 1) * 1000)
        docs.insert(at, minute(T0 + 60 * (k - 1), slouch_s=60 - (15 if k == 1 else 0)))
    alerts, _ = run(eng, docs[:next(i for i, d in enumerate(docs) if d["ts"] >= (T0 + 9 * 60 + 2) * 1000)])
    assert [a["kind"] for a in alerts] == ["slouch_now"]
    restarted = engine(**rules)
    restarted.load(eng.dump(set(eng.devices)))  # what the service saved with each minute
    # down from 10:09:02 to 10:11:05 (past the shared cooldown since the nudge): the minutes it missed, then live states
    backlog = [minute(T0 + 60 * k, slouch_s=60) for k in range(9, 11)]
    alerts = [a for doc in backlog for a in restarted.on_metrics(doc, T0 + 11 * 60 + 5)]
    alerts += run(restarted, slouch(start, 1200, lead_s=0, tail_s=0)[665:])[0]
    assert alerts == [], [(a["kind"], a["ts"]) for a in alerts]  # one slouch, one nudge


def test_a_restart_before_the_first_minute_of_a_live_nudged_slouch_sends_no_minute_based_nudge_for_it():
    # The slouch nudged live before any minute was decided with the live stream current (a sensor's first slouch,
    # 30 s into its first minute): the state saved said the stream was not current, and a restart then went by that —
    # the backlog's minutes of the slouch sent a minute-based 'Slouching' nudge for it. A live nudge says it is.
    rules = RESTART_RULES
    eng = engine(**rules)
    start = T0 + 15
    docs = slouch(start, 1200, tail_s=0)
    alerts, _ = run(eng, docs[:next(i for i, d in enumerate(docs) if d["ts"] >= (start + 40) * 1000)])
    assert [a["kind"] for a in alerts] == ["slouch_now"]
    restarted = engine(**rules)
    restarted.load(eng.dump(set(eng.devices)))
    backlog = [minute(T0 + 60 * k, slouch_s=60 - (15 if k == 0 else 0)) for k in range(7)]
    alerts = [a for doc in backlog for a in restarted.on_metrics(doc, T0 + 7 * 60 + 5)]
    assert alerts == [], [(a["kind"], a["ts"]) for a in alerts]  # one slouch, one nudge
