"""The answer to a wearer's own calibration moves reaches them at once; the sensor's own refusals stay bounded."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from alerts.catalog import Catalog
from alerts.engine import ANSWERS_PER_REQUEST, AlertEngine
from alerts.settings import Limits, Rules
from contract.messages import payload
from contract.validation import load_validators, parse
from pipeline.calibration import Calibration, CalibrationRequest, CalibrationSettings
from pipeline.events import asking
from pipeline.stream import PosturePipeline
from support.alerts import DEVICE, Phone, publish, running_alerts, stop, wait_online, write_config, zone_at
from support.day_messages import slouchy_minute
from support.mqtt import wait_for

HOLD_BROKEN = ("moved during the upright hold after 1.4 s", "sit upright and keep still for 3 s")
NOT_STRAIGHT = ("the bend was not one straight movement", "bend straight forward once and sit up")
NOT_BACK = ("the forward bend did not come back within 10 s", f"{CalibrationSettings().instructions} again")
MOVED = ("sitting has read +25° of sideways bend for minutes: the sensor has probably moved",
         CalibrationSettings().instructions)


def calibration(t_s: float, status: str, said: tuple[str, str] | None = None, **fields) -> tuple[str, dict]:
    """A calibration event as the gateway publishes it (pipeline events.asking's parts for a refusal or request)."""
    doc = {"schema": 1, "kind": "calibration", "device": DEVICE, "ts": int(round(t_s * 1000)), "t_s": t_s,
           "status": status, "with_bend": status == "calibrated"}
    if said is None:
        doc |= {"message": "calibrated with a 30° forward bend", "calibrated_s": t_s}
    else:
        joint = "; then " if status == "recalibrate" else ": "
        doc |= {"message": asking(t_s, status, *said, joint).message, "reason": said[0], "ask": said[1]}
    return f"posture/{DEVICE}/events", doc | fields


def live(t_s: float, activity: str, calibrated: bool = True) -> tuple[str, dict]:
    """The live state about once a second (contract/schemas/live.json): uncalibrated, no angles."""
    angle = 2.0 if calibrated else None
    return f"posture/{DEVICE}/live", {
        "schema": 1, "kind": "live", "device": DEVICE, "ts": int(round(t_s * 1000)), "t_s": t_s,
        "calibration": "recalibrate" if calibrated else "uncalibrated", "flexion_deg": angle, "lateral_deg": angle,
        "rotation_deg": angle, "activity": activity, "slouching_since_s": None, "leaning_since_s": None,
        "lean_side": None, "sitting_since_s": None}


def test_a_refusal_of_the_moves_made_in_quiet_hours_and_a_snooze_reaches_the_wearer_at_once_each_try(tmp_path,
                                                                                                     broker):
    """A wearer puts the sensor on at 23:00 (quiet hours from 22:00), snoozed, and does the calibration moves; they are
    refused, and they try again: refused again. Both answers were held (quiet hours, then the cooldown the refusals
    shared with the pipeline's requests, 4 h): the wearer heard nothing, and did not know why the sensor measured
    nothing. They answer what the wearer is doing now: each comes at once."""
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n", timezone=zone_at(23))
    log, now = tmp_path / "alerts.log", time.time() // 60 * 60
    first, again = now - 4 * 60 + 20, now - 2 * 60 + 5
    phone = Phone(broker.port)
    try:
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            publish(broker.port, [(f"posture/{DEVICE}/status", {"schema": 1, "kind": "status", "device": DEVICE,
                                                                "ts": int((now - 300) * 1000), "online": True})],
                    retain=True)
            publish(broker.port, [(f"posture/{DEVICE}/alerts/snooze", {"minutes": 60}),
                                  live(first - 1, "sitting", calibrated=False), calibration(first, "refused", NOT_BACK),
                                  live(again - 1, "sitting", calibrated=False),
                                  calibration(again, "refused", NOT_STRAIGHT)])
            wait_for(lambda: len(phone.alerts) >= 2, 30, "both refusals on the phone")
            stats = stop(service, log)
    finally:
        phone.close()
    assert stats["snoozes"] == 1
    assert [(a["kind"], a["ts"], a["evidence"]["status"]) for a in phone.alerts] == [
        ("calibration", int(first * 1000), "refused"), ("calibration", int(again * 1000), "refused")]
    assert phone.alerts[0]["message"] == ("The forward bend did not come back within 10 s. Sit upright and still for "
                                          "3 s, bend forward once and sit up again.")


def test_a_knocked_sensors_day_of_refusals_tells_eight_messages_none_at_night(tmp_path, broker):
    """The sensor is knocked at 13:00 and the pipeline asks for a recalibration; the wearer never does it. The
    calibrator, watching for the moves, refuses everyday ones (a simulated desk day: 15 in the 40 min after the
    request), here at its most, one a minute, day and night (lying from 23:00 to 07:00). 24 h of it tell the request,
    the first refusals as answers (ANSWERS_PER_REQUEST), then one every 4 h (the requests' cooldown) outside quiet
    hours: 8 messages, none from 22:00 to 07:00."""
    zone = ZoneInfo(zone_at(12))  # now 12:xx: the day from 13:00 yesterday to 11:00 today lies behind
    config = write_config(tmp_path, broker, "[limits]\nmax_delay_s = 1000000\n[habit]\nsummary_time = \"\"\n",
                          timezone=zone.key)
    log = tmp_path / "alerts.log"
    midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def at(hours: float) -> float:  # local time, hours from midnight today (yesterday's are negative)
        return midnight + round(hours * 3600)

    messages = [calibration(at(-11.2), "calibrated"), live(at(-11) - 1, "sitting"),
                calibration(at(-11), "recalibrate", MOVED)]
    reasons = [HOLD_BROKEN, NOT_BACK, NOT_STRAIGHT]
    for k, t_s in enumerate(range(int(at(-11)) + 60, int(at(11)) + 1, 60)):
        lying = at(-1) <= t_s - 1 < at(7)
        messages += [live(t_s - 1, "lying" if lying else "sitting"), calibration(t_s, "refused", reasons[k % 3])]
    phone = Phone(broker.port)
    try:
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            publish(broker.port, messages)
            wait_for(lambda: phone.alerts and phone.alerts[-1]["ts"] == int(at(11) * 1000), 60,
                     "the last refusal handled")
            stop(service, log)
    finally:
        phone.close()
    told = [(datetime.fromtimestamp(a["ts"] / 1000, zone).strftime("%H:%M"), a["evidence"]["status"])
            for a in phone.alerts]
    assert told == [("13:00", "recalibrate"), ("13:01", "refused"), ("13:02", "refused"), ("13:03", "refused"),
                    ("17:00", "refused"), ("21:00", "refused"), ("07:00", "refused"), ("11:00", "refused")]
    assert ANSWERS_PER_REQUEST == 3


DAY = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


def event(t_s: float, status: str, said: tuple[str, str] | None = None, **fields) -> dict:
    return calibration(t_s, status, said, **fields)[1]


def test_a_sleeper_turning_over_under_a_sensor_asked_to_recalibrate_is_not_woken():
    """The pipeline asks for a recalibration at 21:58 and the wearer goes to bed at 22:00: turning over in bed looks to
    the calibrator like a hold and a bend, refused (at most one a minute). Lying is no calibration attempt: those are
    the sensor's, held by quiet hours, and the answers left are for the morning's moves (a refusal told at 07:00)."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    out = eng.on_event(event(DAY + 21 * 3600 + 58 * 60, "recalibrate", MOVED), now_s=DAY + 21 * 3600 + 58 * 60)
    assert [a["evidence"]["status"] for a in out] == ["recalibrate"]
    for t_s in range(int(DAY + 22 * 3600), int(DAY + 31 * 3600), 60):
        eng.on_live(live(t_s - 1, "lying")[1], now_s=t_s)
        out += eng.on_event(event(t_s, "refused", NOT_BACK), now_s=t_s + 1)
    assert len(out) == 1  # the request alone: nothing from 22:00 to 07:00
    morning = DAY + 31 * 3600 + 5 * 60
    eng.on_live(live(morning - 1, "sitting")[1], now_s=morning)
    [answer] = eng.on_event(event(morning, "refused", NOT_STRAIGHT), now_s=morning + 1)
    assert (answer["ts"], answer["evidence"]["status"]) == (int(morning * 1000), "refused")


def test_refusals_after_a_request_held_in_quiet_hours_are_the_sensors_not_answers():
    """The monitor asks for a recalibration at 22:38 (a knocked sensor's day through the pipeline, seed 5): held by
    quiet hours, the wearer does not know of it and makes no moves, but the calibrator refuses their everyday ones
    (22:45, 22:46, 22:52, sitting): told at once as answers, they would be the first the wearer heard of it, at night.
    Once a request is told (in the morning, a refusal as a request), the next refusals answer the moves it asked for."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    asked = DAY + 22 * 3600 + 38 * 60
    out = eng.on_event(event(asked, "recalibrate", MOVED), now_s=asked)
    for t_s in (asked + 7 * 60, asked + 8 * 60, asked + 14 * 60):
        eng.on_live(live(t_s - 1, "sitting")[1], now_s=t_s)
        out += eng.on_event(event(t_s, "refused", HOLD_BROKEN), now_s=t_s + 1)
    assert out == []
    morning = []
    for t_s in range(int(DAY + 31 * 3600), int(DAY + 31 * 3600) + 5 * 60, 60):
        eng.on_live(live(t_s - 1, "sitting")[1], now_s=t_s)
        morning += eng.on_event(event(t_s, "refused", NOT_BACK), now_s=t_s + 1)
    assert [a["ts"] for a in morning] == [int((DAY + 31 * 3600 + 60 * k) * 1000) for k in range(4)]  # 07:00 a request


def test_answers_are_counted_per_request_and_a_calibration_made_starts_them_again():
    """Past ANSWERS_PER_REQUEST refusals told, the next is a request again (under the requests' cooldown, which answers
    neither start nor wait for); a calibration the wearer made, or a new request told, gives the next refusals their
    answers. A restart's restored calibration is none made."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    t_s = DAY + 10 * 3600

    def told(doc: dict) -> list[str]:
        return [a["evidence"]["status"] for a in eng.on_event(doc, now_s=doc["t_s"] + 1)]

    said = []
    for _ in range(5):
        t_s += 60
        said.append(told(event(t_s, "refused", HOLD_BROKEN)))
    assert said == [["refused"]] * 4 + [[]]  # 3 answers, a request (its cooldown from then: 4 h), held
    assert told(event(t_s + 60, "calibrated", calibrated_s=t_s - 86_400,
                      message="calibration restored from the last run")) == []
    assert told(event(t_s + 120, "refused", HOLD_BROKEN)) == []
    assert told(event(t_s + 180, "calibrated")) == []  # made now: the next refusals answer new moves
    assert told(event(t_s + 240, "refused", NOT_STRAIGHT)) == ["refused"]
    assert told(event(t_s + 300, "recalibrate", MOVED)) == []  # within the requests' cooldown: held
    assert [told(event(t_s + 360 + 60 * k, "refused", NOT_STRAIGHT)) for k in range(3)] == [["refused"]] * 2 + [[]]
    # A request held (the cooldown, quiet hours) gives no new answers: the wearer never heard it, and the refusals
    # after it are of everyday moves (before, 3 more went out at once, at night too). One told does.
    assert told(event(t_s + 600, "recalibrate", MOVED)) == []
    assert told(event(t_s + 660, "refused", NOT_STRAIGHT)) == []
    t_s += 4 * 3600
    assert told(event(t_s, "recalibrate", MOVED)) == ["recalibrate"]
    assert told(event(t_s + 60, "refused", NOT_STRAIGHT)) == ["refused"]


def test_a_request_delivered_again_or_late_gives_no_more_answers():
    """A request whose answers were told, delivered again (QoS 1 redelivers what was not acknowledged; a gateway's spool
    sends again what its broker had not) or an older one arriving late, is no new request: the refusals after it are
    requests, held by the cooldown, not 3 more answers (told at once, through quiet hours and a snooze: before, the
    count started again, and 21:56-21:58 were told)."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    asked = DAY + 21 * 3600 + 50 * 60
    request, told = event(asked, "recalibrate", MOVED), []
    told += eng.on_event(request, now_s=asked + 1)
    for k in range(1, 10):
        t_s = asked + 60 * k
        if k == 5:
            told += eng.on_event(request, now_s=t_s)  # the same request again
            told += eng.on_event(event(asked - 600, "recalibrate", MOVED), now_s=t_s)  # an older one, late
        eng.on_live(live(t_s - 1, "sitting")[1], now_s=t_s)
        told += eng.on_event(event(t_s, "refused", HOLD_BROKEN), now_s=t_s + 1)
    assert [(a["evidence"]["status"], a["ts"] / 1000 - asked) for a in told] == [
        ("recalibrate", 0), ("refused", 60), ("refused", 120), ("refused", 180)]
    assert told[0]["ts"] / 1000 == asked and ANSWERS_PER_REQUEST == 3


def test_an_answer_from_a_backlog_minutes_old_is_not_told():
    """An answer goes out through quiet hours and a snooze because the wearer waits for it now: one that arrives
    late by the gateway's clock (a spool's backlog after an outage, limits.max_late_s) is held as a nudge about now is,
    not told at night minutes after the moves."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    now_s = DAY + 23 * 3600  # quiet hours
    for k in range(6):  # the offset between the clocks, learned from live states (none here)
        eng.on_live(live(now_s - 6 + k, "sitting")[1], now_s=now_s - 6 + k)
    late = now_s - Limits().max_late_s - 60
    assert eng.on_event(event(late, "refused", HOLD_BROKEN), now_s=now_s) == []
    assert [a["evidence"]["status"] for a in eng.on_event(event(now_s - 1, "refused", HOLD_BROKEN), now_s=now_s)] \
        == ["refused"]


ASKED = DAY + 23.5 * 3600  # 23:30 UTC: quiet hours (22:00-07:00)
MORNING = DAY + 31 * 3600  # 07:00 the next morning
AGE = ("the calibration is 24 h old", CalibrationSettings().instructions)


def worn_minute(start_s: float) -> tuple[str, dict]:
    """A minute worn sitting, no slouch: no rule of its own fires."""
    return f"posture/{DEVICE}/metrics", {**slouchy_minute(DEVICE, start_s), "slouch_s": 0.0}


def through(eng: AlertEngine, from_s: float, to_s: float, made_s: float | None = None) -> list[dict]:
    """The wearer's data from from_s to to_s, a minute at a time: a live state 30 s in (lying until 06:50, then
    sitting), the minute 6 s after its end, and a calibration the wearer made at made_s. Returns the alerts."""
    out = []
    for start_s in range(int(from_s), int(to_s), 60):
        if made_s is not None and start_s <= made_s < start_s + 60:
            out += eng.on_event(event(made_s, "calibrated"), now_s=made_s)
        at_s = start_s + 30
        out += eng.on_live(live(at_s, "lying" if at_s < MORNING - 600 else "sitting")[1], now_s=at_s)[0]
        out += eng.on_metrics(worn_minute(start_s)[1], now_s=start_s + 66)
    return out


def test_a_request_held_by_quiet_hours_is_told_once_at_the_first_data_after_them():
    """The pipeline asks for the moves at 23:30 (a sensor put on late, a calibration that turned 24 h old at night):
    held by quiet hours. It asks once, so the wearer never heard of it and the calibrator watched for moves nobody made.
    Now the request is told at the first data after 07:00 (the minute that ends then), in its own words, once; its hold
    counted once."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    request = event(ASKED, "recalibrate", MOVED)
    assert eng.on_event(request, now_s=ASKED + 1) == []
    told = through(eng, ASKED, MORNING + 2 * 3600)
    [daytime] = AlertEngine(Rules(limits=Limits(quiet_hours="")), Catalog.load(), UTC).on_event(request, ASKED + 1)
    assert [(a["kind"], a["ts"], a["message"], a["evidence"]) for a in told] == [
        ("calibration", int(MORNING * 1000), daytime["message"], daytime["evidence"])]
    assert daytime["message"].startswith("Sitting has read +25° of sideways bend")
    state = eng.devices[DEVICE]
    assert not state.request_unsaid and state.request_waiting == {}
    assert (state.held_other_days, state.held_today) == ({"2026-11-20": {"quiet_hours": 1}}, {})
    # Told: the refusals after it answer the moves it asked for.
    assert [a["evidence"]["status"] for a in eng.on_event(event(MORNING + 7230, "refused", NOT_BACK),
                                                          now_s=MORNING + 7231)] == ["refused"]


def restored_event(at_s: float, with_bend: bool, request: CalibrationRequest | None) -> dict:
    """The `calibrated` event a restarted gateway's pipeline sends at its first sample, with the calibration (full or
    provisional, made an hour before the request) and the request the last run kept, as the gateway publishes it."""
    full = Calibration.from_vectors(np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.0, 0.87]))
    calibration = Calibration(full.r_sensor_trunk, with_bend, full.bend_deg * with_bend, taken_s=ASKED - 3600)
    pipeline = PosturePipeline(calibration=calibration, request=request)
    still = np.tile([0.0, 0.0, 1.0], (50, 1))
    [restored] = [e for e in pipeline.update(at_s + np.arange(50) / 50, still, 0.0 * still).events
                  if e.kind == "calibration"]
    doc = parse("events", json.dumps(payload(DEVICE, restored)).encode(), load_validators(), now_s=at_s)
    assert doc["message"] == "calibration restored from the last run" and doc["with_bend"] == with_bend
    assert pipeline.armed == (request is not None or not with_bend)  # watching for the moves it was asked for
    return doc


def test_a_request_held_by_quiet_hours_is_not_told_after_a_calibration_made_in_them():
    """A calibration the wearer made at 06:00 is what the request asked for: nothing to tell at 07:00. One a restart of
    the gateway restored is the old one the request was about: restored with the request the last run kept (its
    calibration file), the pipeline watches for the moves still, and the request is told. Restored without it (a
    gateway from before it kept one, or its file not written since the request), a full one watches for no moves, and
    the pipeline asks again for what still holds; told at 07:00, the wearer's moves went unseen: not told. A
    provisional one restored is finished by the moves: the request is told."""
    kept = CalibrationRequest(moved=True)
    for restored, with_bend, request, said in ((False, True, None, []), (True, True, None, []),
                                               (True, True, kept, ["recalibrate"]),
                                               (True, False, None, ["recalibrate"]),
                                               (True, False, kept, ["recalibrate"])):
        eng = AlertEngine(Rules(), Catalog.load(), UTC)
        eng.on_event(event(ASKED, "recalibrate", MOVED), now_s=ASKED + 1)
        told = through(eng, ASKED, MORNING - 3600)
        at_s = MORNING - 3600
        calibrated = restored_event(at_s, with_bend, request) if restored else event(at_s, "calibrated")
        assert ("request_pending" in calibrated) == (request is not None)
        told += eng.on_event(calibrated, now_s=at_s)
        told += through(eng, at_s, MORNING + 3600)
        assert [a["evidence"]["status"] for a in told] == said, (restored, with_bend, request)


def test_a_request_held_over_is_told_in_its_own_words_before_a_refusal_of_the_sensors_that_comes_first():
    """The first data after quiet hours is a refusal of moves the wearer did not make (the calibrator watched all night;
    live states off, the 06:59 minute not yet in): not an answer (the wearer has not heard the request), it is told as a
    request, and decided first it took the waiting request's place: "Moved during the upright hold after 1.4 s" at
    07:00, and the request's own words ("the sensor has probably moved") never. The request goes first; the refusal is
    held by the requests' cooldown after it, and answers nothing."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    eng.on_event(event(ASKED, "recalibrate", MOVED), now_s=ASKED + 1)
    through(eng, ASKED, MORNING - 60)
    told = eng.on_event(event(MORNING + 5, "refused", HOLD_BROKEN), now_s=MORNING + 6)
    told += through(eng, MORNING, MORNING + 600)
    assert [(a["ts"] / 1000, a["evidence"]["status"], a["evidence"]["reason"]) for a in told] == [
        (MORNING + 5, "recalibrate", MOVED[0])]
    assert eng.devices[DEVICE].answers_told == 0

def test_the_latest_request_held_is_the_one_told_and_one_told_within_the_cooldown_is_not_told_again():
    """Of two requests held in the night the latest is told (in its words; the first, delivered again late, does not
    come back). A request held by the requests' cooldown is none the wearer has not heard (one was told within it):
    not told later."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    eng.on_event(event(ASKED, "recalibrate", MOVED), now_s=ASKED + 1)
    told = through(eng, ASKED, ASKED + 5400)
    told += eng.on_event(event(ASKED + 5400, "recalibrate", AGE), now_s=ASKED + 5401)
    told += eng.on_event(event(ASKED, "recalibrate", MOVED), now_s=ASKED + 5460)  # the first again, late
    told += through(eng, ASKED + 5460, MORNING + 600)
    assert [(a["ts"] / 1000, a["evidence"]["reason"]) for a in told] == [(MORNING, AGE[0])]

    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    before = ASKED - 2.5 * 3600  # 21:00: told
    assert [a["ts"] for a in eng.on_event(event(before, "recalibrate", MOVED), now_s=before)] == [before * 1000]
    eng.on_event(event(ASKED, "recalibrate", AGE), now_s=ASKED + 1)  # within the 4 h cooldown
    assert through(eng, ASKED, MORNING + 600) == []


def test_a_request_held_by_quiet_hours_is_told_after_a_restart_of_the_alert_service():
    """The request waits in the device's saved state: an engine started afresh from it at 03:00 tells it at 07:00. A
    state saved before it kept the request's words still loads: its request is not told (no words to tell it with)."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    eng.on_event(event(ASKED, "recalibrate", MOVED), now_s=ASKED + 1)
    through(eng, ASKED, MORNING - 4 * 3600)
    saved = eng.dump({DEVICE})
    restarted = AlertEngine(Rules(), Catalog.load(), UTC)
    assert restarted.load(saved) == {}
    told = through(restarted, MORNING - 4 * 3600, MORNING + 3600)
    assert [(a["ts"] / 1000, a["evidence"]["reason"]) for a in told] == [(MORNING, MOVED[0])]

    record = json.loads(saved[f"device/{DEVICE}"])
    del record["request_waiting"]
    older = AlertEngine(Rules(), Catalog.load(), UTC)
    assert older.load({**saved, f"device/{DEVICE}": json.dumps(record).encode()}) == {}
    assert older.devices[DEVICE].request_unsaid
    assert through(older, MORNING - 4 * 3600, MORNING + 3600) == []


def test_a_request_held_by_a_snooze_is_told_once_the_snooze_is_over():
    """Snoozed for an hour from 14:00 (wall clock), a request at 14:10 is told at the first data after 15:00: the minute
    that ends then, arriving at 15:00:06."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    snoozed_s, asked = DAY + 14 * 3600, DAY + 14 * 3600 + 600
    eng.snooze(DEVICE, 60, from_s=snoozed_s)
    assert eng.on_event(event(asked, "recalibrate", MOVED), now_s=asked + 1) == []
    told = through(eng, asked, snoozed_s + 2 * 3600)
    assert [(a["ts"] / 1000, a["evidence"]["reason"]) for a in told] == [(snoozed_s + 3600, MOVED[0])]
    assert eng.devices[DEVICE].held_today == {"snoozed": 1}


def test_a_request_in_a_backlog_is_told_at_the_first_data_that_is_not_stale():
    """A gateway out of the network from 14:00 to 16:00 sends its backlog when back: the request in it (14:10) is older
    than limits.max_delay_s (10 min), held as stale as a nudge of then would be, and so are the backlog's minutes
    until those of its last 10 min; what it asks for is still to do. Told at the first of them, once."""
    eng = AlertEngine(Rules(), Catalog.load(), UTC)
    asked, back = DAY + 14 * 3600 + 600, DAY + 16 * 3600
    assert eng.on_event(event(asked, "recalibrate", MOVED), now_s=back) == []
    told = [a for start_s in range(int(asked), int(back), 60)
            for a in eng.on_metrics(worn_minute(start_s)[1], now_s=back + 1)]
    assert [(a["ts"] / 1000, a["evidence"]["reason"]) for a in told] == [(back - 540, MOVED[0])]  # 15:51, not stale
    assert through(eng, back, back + 600) == []
    assert eng.devices[DEVICE].held_today == {"stale": 1}


def test_a_request_held_in_quiet_hours_reaches_the_phone_in_the_morning_across_a_restart(tmp_path, broker):
    """Through the service (real Mosquitto): a request at 06:30 (quiet hours), a minute at 06:40, the service stopped
    and started again, then the morning's minutes: the request reaches the phone at the first, once."""
    zone = ZoneInfo(zone_at(7))  # now 07:xx
    config = write_config(tmp_path, broker, "[limits]\nmax_delay_s = 1000000\n[habit]\nsummary_time = \"\"\n",
                          timezone=zone.key)
    log = tmp_path / "alerts.log"
    now = time.time()
    seven = datetime.fromtimestamp(now, zone).replace(hour=7, minute=0, second=0, microsecond=0).timestamp()
    asked, morning = seven - 1800, now // 60 * 60 - 120  # the morning's minutes: the last two ended by now, after 07:00
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    try:
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            publish(broker.port, [calibration(asked, "recalibrate", MOVED), worn_minute(seven - 1200)])
            wait_for(lambda: phone.today().get("ts") == int((seven - 1140) * 1000), 30, "the 06:40 minute handled")
            stop(service, log)
        assert phone.alerts == []
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            publish(broker.port, [worn_minute(max(morning, seven - 60)), worn_minute(max(morning, seven - 60) + 60)])
            wait_for(lambda: phone.today().get("ts") == int((max(morning, seven - 60) + 120) * 1000), 30,
                     "the morning's minutes handled")
            stats = stop(service, log)
    finally:
        phone.close()
    assert [(a["kind"], a["ts"], a["evidence"]["reason"]) for a in phone.alerts] == [
        ("calibration", int((max(morning, seven - 60) + 60) * 1000), MOVED[0])]
    assert stats["alerts"] == {"calibration": 1}


MOUNT = {"mount_euler_deg": [0.0, 12.0, 70.0], "mount_max_deg": 0.0}  # the same sensor, where it was taped all along


def worn_on_one_calibration(hours: float) -> tuple[list[tuple[str, str]], list[float], list[dict]]:
    """The sensor worn `hours` from 09:00 on the calibration the wearer made then, never taken off: its data reaches the
    gateway 4 min every 1.5 h, sitting (out of reach in between, less than the 2 h after which the moves are asked for,
    away_recalibrate_s), through the pipeline at 50 Hz into the alert engine (nights included, quiet hours off: every
    nudge a rule makes is told). When the phone asks for the calibration moves, the wearer makes them in the next
    stretch. Returns the calibration alerts told (data time as "day HH:MM", the first day 0, and message), the times the
    calibrations in use were made, and the `recalibrate` events."""
    from contract.messages import payload
    from evaluation.harness import CALIBRATION_MOVES
    from firmware_sim.imu import SensorSimulation
    from firmware_sim.scenario import parse_scenario
    from pipeline.stream import PipelineSettings, PosturePipeline

    start, stretch_s, every_s = DAY + 9 * 3600, 240.0, 5400.0
    pipeline = PosturePipeline(PipelineSettings.for_rate(50.0))
    eng = AlertEngine(Rules(limits=Limits(quiet_hours="")), Catalog.load(), UTC)
    told, made, asked, moves = [], [], [], True
    for k in range(int(hours * 3600 / every_s) + 1):
        segments = [*(CALIBRATION_MOVES if moves else []), {"activity": "sit_upright", "duration_s": stretch_s}]
        sim = SensorSimulation(parse_scenario({"name": "stretch", "segment": segments}), seed=k, rate_hz=50.0,
                               **MOUNT)
        moves = False
        outs = [pipeline.update(ch.t_s + start + k * every_s, ch.acc_g, ch.gyro_dps) for ch in sim.chunks(500)]
        outs.append(pipeline.link_lost())  # out of reach: the minutes seen go out
        now_s = start + k * every_s + sim.n_samples / 50.0 + 1.0
        for item in [i for out in outs for i in out.events + out.metrics]:
            doc = payload(DEVICE, item)
            if item.kind == "calibration" and item.status == "recalibrate":
                asked.append(doc)
            for alert in (eng.on_metrics(doc, now_s) if item.kind == "metrics" else eng.on_event(doc, now_s)):
                if alert["kind"] == "calibration":
                    at_s = alert["ts"] / 1000 - DAY
                    told.append((f"{int(at_s // 86400)} {int(at_s % 86400 // 3600):02d}:{int(at_s % 3600 // 60):02d}",
                                 alert["message"]))
                    moves = moves or alert["evidence"]["status"] != "refused"  # a request: the moves next time
        if pipeline.calibration is not None and pipeline.calibration.taken_s not in made:
            made.append(pipeline.calibration.taken_s)
    return told, made, asked


def test_the_moves_the_calibrations_age_asks_for_recalibrate_the_sensor():
    """A wearer who keeps the sensor on for two days was told "Calibration is 24 h old. Sit upright and still for 3 s,
    bend forward once and sit up" by the alert service, a day after calibrating, and made the moves; but the calibrator
    watches for them only after a request of the pipeline's own, and ignored them: no calibration came of them, and the
    nudge came again every 4 h (the requests' cooldown), made after each: 6 times in the day after the age (17 in four
    days). The pipeline asks itself at the calibration's age, the calibrator watching from then: the moves made after
    it recalibrate the sensor, and the wearer is asked once, a day after each calibration."""
    told, made, asked = worn_on_one_calibration(48.0)
    assert told == [("1 09:00", "The calibration is 24 h old. Sit upright and still for 3 s, bend forward once and "
                                "sit up.")]
    assert [round((t_s - DAY) / 60) for t_s in made] == [9 * 60, 24 * 60 + 10 * 60 + 30]  # the moves the next stretch
    [request] = asked
    assert request["reason"] == "the calibration is 24 h old" and request["t_s"] - made[0] >= 24 * 3600
