"""`posture alerts` against a real Mosquitto: subscribed to as a phone would (paho and mosquitto_sub)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest

from alerts.catalog import Catalog
from alerts.engine import AlertEngine
from alerts.service import SNOOZE_WAIT_S, AlertService, new_engine, resembling
from alerts.settings import load_rules
from contract.validation import load_validators
from pipeline.summary import day_bounds
from report.day import build_day_report
from report.draw import header_parts
from report.query import fetch_day
from service_io.config import load_config
from service_io.influx import InfluxSettings
from service_io.spool import Spool
from support.alerts import (
    BURST_RULES,
    DEVICE,
    Phone,
    at_last_minute,
    noon_zone,
    publish,
    queue_while_stopped,
    running_alerts,
    sitting_minutes,
    start_alerts,
    stop,
    wait_online,
    write_config,
    zone_at,
)
from support.bridges import BridgeProcess
from support.day_messages import scenario_messages, slouchy_minute
from support.homeassistant import check_config
from support.mqtt import DB, SlowUplink, client, listen, wait_for
from support.spools import DeleteRefusingSpool

OFFICE_RULES = """
[slouch]
window_min = 15
share_pct = 20.0
min_worn_min = 10.0
[lean]
min_lean_min = 3.0
[limits]
pace = false
quiet_hours = ""
max_delay_s = 1000000
[habit]
min_worn_min = 30.0
summary_time = "{summary}"
"""


def hour_ago() -> float:
    return time.time() // 60 * 60 - 70 * 60


def as_topics(messages: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(f"posture/{doc['device']}/{stream}", doc) for stream, doc in messages]


def last_minute_handled(phone: Phone, messages: list[tuple[str, dict]]) -> bool:
    last = max(doc["ts"] for topic, doc in messages if topic.endswith("/metrics")) + 60_000
    return phone.today().get("ts") == last


def test_an_office_day_gives_the_alerts_its_imbalances_call_for(tmp_path, broker):
    zone = noon_zone()
    start_s = hour_ago()
    summary_at = datetime.fromtimestamp(start_s, ZoneInfo(zone)) + timedelta(minutes=40)  # in the data, before now
    config = write_config(tmp_path, broker, OFFICE_RULES.format(summary=summary_at.strftime("%H:%M")), timezone=zone)
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        phone = Phone(broker.port, extra=(f"posture/{DEVICE}/alerts/log", f"posture/{DEVICE}/today"))
        sub = shutil.which("mosquitto_sub")
        assert sub, "mosquitto_sub missing: apt-get install mosquitto-clients"
        text_sub = subprocess.Popen([sub, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1", "-v",
                                     "-t", f"posture/{DEVICE}/alerts/text", "-t", "probe/ready"],
                                    stdout=subprocess.PIPE, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(text_sub.stdout.readline, "")), daemon=True).start()
        try:
            def sub_ready() -> bool:  # mosquitto_sub says nothing when subscribed: publish until it shows
                publish(broker.port, [("probe/ready", "ready")])
                return any(line.startswith("probe/ready") for line in lines)

            wait_for(sub_ready, 20, "mosquitto_sub to subscribe")
            messages = as_topics(scenario_messages("office-day", DEVICE, start_s))
            publish(broker.port, messages)
            wait_for(lambda: "summary" in phone.kinds() and last_minute_handled(phone, messages), 60,
                     lambda: f"a daily summary and the last minute; got {phone.kinds()}\n" + log.read_text()[-3000:])
            stats = stop(service, log)
        finally:
            text_sub.terminate()
            text_sub.wait(10)
    phone.close()
    prefix = f"posture/{DEVICE}/alerts/text "
    lines = [line.rstrip("\n").removeprefix(prefix) for line in lines if line.startswith(prefix)]

    kinds = phone.kinds()
    assert {"slouch", "rotation", "lean", "summary"} <= set(kinds), kinds
    assert stats["alerts"] == {k: kinds.count(k) for k in set(kinds)} and stats["malformed"] == {}
    catalog = Catalog.load()
    validate = load_validators()["alerts/log"]
    by_kind: dict[str, list[dict]] = {}
    for alert in phone.alerts:
        validate(alert)
        by_kind.setdefault(alert["kind"], []).append(alert)
        assert alert["device"] == DEVICE and len(alert["message"]) <= 240
    assert len({a["id"] for a in phone.alerts}) == len(phone.alerts)
    # office-day: turns right more often and further (40° vs 28°) → favour the left; leans right → bend left
    rotation = by_kind["rotation"][0]
    assert rotation["stretch"]["side"] == "left" and rotation["evidence"]["rotation_si"] > 25
    assert rotation["stretch"]["id"] in {s.id for s in catalog.for_deficit("rotation")}
    lean = by_kind["lean"][0]
    assert lean["evidence"]["lean_side"] == "right" and lean["stretch"]["side"] == "left"
    assert lean["stretch"]["id"] in {s.id for s in catalog.for_deficit("lean")}
    slouch_ids = [a["stretch"]["id"] for a in by_kind["slouch"]]
    assert set(slouch_ids) <= {s.id for s in catalog.for_deficit("slouch")} and len(slouch_ids) >= 2
    assert all(a != b for a, b in zip(slouch_ids, slouch_ids[1:]))  # rotates, no repeat
    assert all(s["safety"] for s in (a["stretch"] for a in phone.alerts) if s)
    # as a phone gets them: QoS 1, not retained, with MQTT 5 message expiry; the text mirror; the log copy
    assert not any(phone.retained) and all(e is not None and 0 < e <= 600 for e in phone.expiry)
    assert sorted(lines) == sorted(phone.texts) and len(lines) == len(phone.alerts)
    assert any(line.startswith("Slouching: ") for line in lines)
    logged = [json.loads(m.payload) for m in phone.other[f"posture/{DEVICE}/alerts/log"]]
    assert logged == phone.alerts
    # the summary is about the day up to its time, however the data arrived
    due_ms = summary_at.replace(second=0, microsecond=0).timestamp() * 1000
    before = [doc for topic, doc in messages if topic.endswith("/metrics") and doc["ts"] < due_ms]
    summary = by_kind["summary"][0]["evidence"]
    assert summary["worn_min"] == round(sum(d["worn_s"] for d in before) / 60, 1)
    assert summary["slouch_min"] == round(sum(d["slouch_s"] for d in before) / 60, 1)
    assert summary["timezone"] == zone  # what the Daily dashboard groups its days in
    today = phone.today()
    assert today["worn_min"] > 55 and today["rotations_right"] > today["rotations_left"] > 0
    assert today["alerts_sent"] == len(phone.alerts) - 1  # the summary does not count against the cap


def test_a_summary_due_while_the_service_was_away_covers_the_backlog(tmp_path, broker):
    """Down at summary_time and back more than max_delay_s after it, the broker holding six hours of minutes for it:
    the summary was built from the first batch of them (a helper measured "Slouched 6 of 61 min worn: goal met" for a
    day 43 % slouched). Now it covers the whole backlog up to summary_time."""
    zone = noon_zone()
    first_s = time.time() // 60 * 60 - 6 * 3600
    summary_at = datetime.fromtimestamp(time.time() - 20 * 60, ZoneInfo(zone))  # 20 min ago: max_delay_s is 10
    rules = ("[slouch]\nenabled = false\n[limits]\nquiet_hours = \"\"\nmax_delay_s = 600\n"
             f"[habit]\nmin_worn_min = 30.0\nsummary_time = \"{summary_at.strftime('%H:%M')}\"\n")
    config = write_config(tmp_path, broker, rules, timezone=zone)
    messages = [(f"posture/{DEVICE}/metrics", {**slouchy_minute(DEVICE, first_s + 60 * k),
                                               "slouch_s": 6.0 if k < 120 else 40.0}) for k in range(6 * 60 - 2)]
    log = tmp_path / "alerts.log"
    queue_while_stopped(broker.port, config, log, messages)
    phone = Phone(broker.port)
    with running_alerts(config, log) as service:
        wait_for(lambda: "summary" in phone.kinds(), 60, lambda: "the summary\n" + log.read_text()[-3000:])
        stop(service, log)
    phone.close()
    due_ms = summary_at.replace(second=0, microsecond=0).timestamp() * 1000
    before = [doc for _, doc in messages if doc["ts"] < due_ms]
    [summary] = [a["evidence"] for a in phone.alerts if a["kind"] == "summary"]
    assert summary["worn_min"] == round(len(before), 1) and len(before) > 300
    assert summary["slouch_min"] == round(sum(d["slouch_s"] for d in before) / 60, 1)
    assert summary["goal_met"] is False


def test_the_summary_tells_the_day_as_the_report_does(tmp_path, broker, influx):
    """One day of two wearers, 100 minutes each, through Mosquitto to `posture alerts` and to `posture bridge` into
    InfluxDB. The summary's text was rounded from the evidence's tenths, so twice: 29.47 min slouched of 100 read
    "Slouched 30 of 100 min worn (30%" on the phone and "slouch 29 min (29 % of worn time)" in the report. And the
    goal was judged on those tenths: a day 19.97 % slouched (Upright 80.03 % on the Daily dashboard) was 20.0 %, its
    goal of 20 % missed. Now the text is rounded once from the day's totals as the report rounds them, and the goal
    is judged on the share as it is, said with the decimals that show which side of the goal it is on."""
    zone = noon_zone()
    summary_at = datetime.fromtimestamp(time.time() - 60, ZoneInfo(zone)).replace(second=0, microsecond=0)
    rules = ("[slouch]\nenabled = false\n[slouch_now]\nenabled = false\n[limits]\nquiet_hours = \"\"\n"
             f"[habit]\nmin_worn_min = 30.0\nsummary_time = \"{summary_at.strftime('%H:%M')}\"\n")
    config = write_config(tmp_path, broker, rules, timezone=zone, ha_discovery=False)
    with config.open("a") as f:
        f.write(f'\n[influx]\nurl = "{influx.url}"\ndatabase = "{DB}"\n\n[bridge]\nflush_interval_s = 0.1\n')
    slouch_s = {"Tenths": 17.68, "UnderGoal": 11.98}  # a minute's; 100 minutes: 29.47 and 19.97 min of 100 worn
    first_s = summary_at.timestamp() - 100 * 60  # the last minute ends at summary_time: the data got there
    messages = [(f"posture/{device}/metrics", {**slouchy_minute(device, first_s + 60 * k), "slouch_s": s})
                for device, s in slouch_s.items() for k in range(100)]
    bridge = BridgeProcess(config, "bridge").start()
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, "Tenths", extra=("posture/UnderGoal/alerts",))
    with running_alerts(config, log) as service:
        try:
            wait_online(broker.port, service, log)
            # The bridge subscribed too (its "connected" line comes at the broker's SUBACK): else the minutes published
            # now could reach no bridge (a first connection has no session to queue them in).
            wait_for(bridge.connections, 30, "the bridge to subscribe")
            publish(broker.port, messages)
            wait_for(lambda: phone.kinds().count("summary") == 2, 60,
                     lambda: "the summaries\n" + log.read_text()[-3000:])
            stop(service, log)
            # No row at all before the bridge's first write (a CI run polled then: IndexError, not a wait).
            wait_for(lambda: [r["count"] for r in influx.rows('SELECT count("worn_s") FROM "posture_minute"', DB)]
                     == [200], 30, "the bridge to store the minutes")
            bridge.stop()
        finally:
            if bridge.proc is not None and bridge.proc.poll() is None:
                bridge.proc.kill()
            phone.close()
    summaries = {a["device"]: a for a in phone.alerts if a["kind"] == "summary"}
    day = summary_at.date()
    reports = {device: build_day_report(device, day, ZoneInfo(zone), fetch_day(
        InfluxSettings(url=influx.url, database=DB), device, *day_bounds(day, ZoneInfo(zone)))) for device in slouch_s}
    assert "slouch 29 min (29 % of worn time)" in header_parts(reports["Tenths"])
    assert summaries["Tenths"]["message"].startswith("Slouched 29 of 100 min worn (29%, goal < 20%): goal missed.")
    assert summaries["Tenths"]["evidence"]["slouch_pct"] == 29.5  # the evidence keeps its tenths
    under = reports["UnderGoal"].totals.slouch_pct_of_worn
    assert under is not None and 19.9 < under < 20.0
    assert "slouch 20 min (20 % of worn time)" in header_parts(reports["UnderGoal"])
    assert summaries["UnderGoal"]["evidence"]["goal_met"] is True
    assert summaries["UnderGoal"]["message"].startswith("Slouched 20 of 100 min worn (19.97%, goal < 20%): goal met.")


def test_a_week_of_two_wearers_tells_each_streak_as_the_days_went(tmp_path, broker):
    """A week through Mosquitto: DeskSensor met the goal on days 1 and 2, was not worn on 3, worn 40 min on 4 (too
    little to count), and slouched half of today, 100 min up to summary_time; Other met it yesterday and today. The
    summary said "goal missed. Streak 2 d" (and `today` streak_days 2) though the next morning it was 0: a missed day
    ends the streak as it is judged. One summary each, today's; the days before were not today while it ran."""
    zone = noon_zone()
    summary_at = datetime.fromtimestamp(time.time() - 60, ZoneInfo(zone)).replace(second=0, microsecond=0)
    rules = ("[slouch]\nenabled = false\n[slouch_now]\nenabled = false\n[sitting]\nenabled = false\n"
             "[calibration]\nenabled = false\n[limits]\nquiet_hours = \"\"\n"
             f"[habit]\nmin_worn_min = 60.0\nsummary_time = \"{summary_at.strftime('%H:%M')}\"\n")
    config = write_config(tmp_path, broker, rules, timezone=zone, ha_discovery=False)
    today_first_s = summary_at.timestamp() - 100 * 60  # the last minute ends at summary_time: the data got there

    def day(device: str, days_back: int, minutes: int, slouch_s: float) -> list[tuple[str, dict]]:
        first_s = today_first_s - days_back * 86400
        return [(f"posture/{device}/metrics", {**slouchy_minute(device, first_s + 60 * k), "slouch_s": slouch_s})
                for k in range(minutes)]

    messages = (day(DEVICE, 4, 100, 6.0) + day(DEVICE, 3, 100, 6.0) + day(DEVICE, 1, 40, 6.0)
                + day("Other", 1, 100, 6.0) + day(DEVICE, 0, 100, 30.0) + day("Other", 0, 100, 6.0))
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=("posture/Other/alerts", f"posture/{DEVICE}/today", "posture/Other/today"))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        publish(broker.port, messages)
        wait_for(lambda: phone.kinds().count("summary") == 2, 60, lambda: "the summaries\n" + log.read_text()[-3000:])
        time.sleep(1.0)  # a second summary of either would come with the next steps
        stats = stop(service, log)
    phone.close()
    assert stats["alerts"] == {"summary": 2}
    summaries = {a["device"]: a for a in phone.alerts if a["kind"] == "summary"}
    assert "goal missed. Streak 0 d, day 5 of 31." in summaries[DEVICE]["message"]
    assert (phone.today()["goal_met"], phone.today()["streak_days"], phone.today()["program_day"]) == (False, 0, 5)
    assert "goal met. Streak 2 d, day 2 of 31." in summaries["Other"]["message"]
    assert phone.today("Other")["streak_days"] == 2


def test_a_day_the_service_missed_the_summary_of_is_judged_as_it_would_have_told(tmp_path, broker):
    """The service down from before yesterday's summary_time (18:00) until after midnight, the broker holding the
    evening: yesterday 10 % slouched to 18:00 and 50 % after. Running, the service would have told "goal met" and the
    streak gone on (2 d); away, the closed day was judged whole (34 %, missed), and `today` said streak 0: the streak
    depended on whether the alert service ran at 18:00. Now the day is judged up to summary_time either way."""
    zone = zone_at(1)  # 01:xx: yesterday's evening lies 3-7 hours back
    yesterday = (datetime.now(ZoneInfo(zone)) - timedelta(days=1)).date()
    day_s = datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=ZoneInfo(zone)).timestamp()
    rules = ("[slouch]\nenabled = false\n[slouch_now]\nenabled = false\n[sitting]\nenabled = false\n"
             "[calibration]\nenabled = false\n[limits]\nquiet_hours = \"\"\n"
             "[habit]\nmin_worn_min = 60.0\nsummary_time = \"18:00\"\n")
    config = write_config(tmp_path, broker, rules, timezone=zone, ha_discovery=False)

    def minutes(first_s: float, n: int, slouch_s: float) -> list[tuple[str, dict]]:
        return [(f"posture/{DEVICE}/metrics", {**slouchy_minute(DEVICE, first_s + 60 * k), "slouch_s": slouch_s})
                for k in range(n)]

    # the day before yesterday, 16:00-18:00, met; yesterday 16:00-18:00 at 10 %, 18:00-21:00 at 50 %: 34 % whole
    messages = (minutes(day_s - 86400 + 16 * 3600, 120, 6.0) + minutes(day_s + 16 * 3600, 120, 6.0)
                + minutes(day_s + 18 * 3600, 180, 30.0))
    log = tmp_path / "alerts.log"
    queue_while_stopped(broker.port, config, log, messages)
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    with running_alerts(config, log) as service:
        wait_for(lambda: phone.today().get("date") == (yesterday + timedelta(days=1)).isoformat()
                 and saved_device(tmp_path / "alerts.db", DEVICE).get("minutes", {}).get(
                     str(int((day_s + 20 * 3600 + 59 * 60) * 1000))) is not None, 60,
                 lambda: f"the backlog handled; today {phone.today()}\n" + log.read_text()[-2000:])
        stats = stop(service, log)
    phone.close()
    assert stats["alerts"] == {} and stats["received"] == 420
    state = saved_device(tmp_path / "alerts.db", DEVICE)
    assert state["days"][(yesterday - timedelta(days=1)).isoformat()]["goal_met"] is True
    # the open day is yesterday (no minute of today yet): the today document shows today, closing it on a copy
    assert state["day"] == yesterday.isoformat()
    restarted = new_engine(load_config(config))
    restarted.load({f"device/{DEVICE}": json.dumps(state).encode()})
    restarted.days_begun(time.time())
    assert restarted.today_state(DEVICE)["streak_days"] == 2
    assert (phone.today()["streak_days"], phone.today()["program_day"], phone.today()["worn_min"]) == (2, 3, 0.0)


def test_today_after_midnight_is_the_new_day_not_yesterdays(tmp_path, broker):
    """Yesterday evening's minutes (20:00-22:00) and nothing since: Home Assistant read `today` as 120 minutes worn,
    yesterday's, until the sensor's first minute of the new day. It is the new day, empty, and stays so when a late
    minute of yesterday comes."""
    zone = zone_at(1)  # 01:xx: yesterday's evening lies 3-5 hours back
    yesterday = (datetime.now(ZoneInfo(zone)) - timedelta(days=1)).date()
    evening_s = datetime(yesterday.year, yesterday.month, yesterday.day, 20, tzinfo=ZoneInfo(zone)).timestamp()
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n",
                          timezone=zone)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today", "posture/LaterSensor/today"))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        # Then a minute of today from another sensor, sent after them: once its `today` shows it, all 120 were handled
        # (the new day's `today` of DEVICE comes with the first; stopping then left most unread on a busy machine).
        publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, evening_s + 60 * k))
                              for k in range(120)]
                + [("posture/LaterSensor/metrics", slouchy_minute("LaterSensor", time.time() // 60 * 60 - 60))])
        today = datetime.now(ZoneInfo(zone)).date().isoformat()
        wait_for(lambda: phone.today().get("date") == today and phone.today("LaterSensor").get("worn_min") == 1.0,
                 30, lambda: f"today's `today`; got {phone.today()}\n" + log.read_text()[-2000:])
        stats = stop(service, log)
    phone.close()
    assert stats["received"] == 121 and stats["malformed"] == {}
    shown = phone.today()
    assert (shown["worn_min"], shown["slouch_min"], shown["posture"]) == (0.0, 0.0, "not_worn")


def test_alerts_go_on_while_the_disk_refuses_to_mark_them_sent(tmp_path, broker, caplog):
    """A full disk that refused the deletes of what was sent stopped the service (the SpoolError left pump), and
    each restart sent the phone every such alert again (441 repeats of 100 in a helper's 30 s). Now it goes on: each
    alert once, one warning, the deletes done once there is room, nothing sent again at the next start."""
    config = load_config(write_config(tmp_path, broker, BURST_RULES))
    spool = DeleteRefusingSpool(tmp_path / "alerts.db", max_items=100_000)
    spool.full = True
    service = AlertService(config, new_engine(config), spool, load_validators())
    runner = threading.Thread(target=service.run)
    listener, got = listen(broker.port, "posture/+/alerts")
    runner.start()
    try:
        wait_online(broker.port)
        publish(broker.port, sitting_minutes(["A", "B", "C"], 3))
        wait_for(lambda: len(got) == 3, 30, lambda: f"three alerts; got {got}")
        publish(broker.port, sitting_minutes(["D", "E"], 3))
        wait_for(lambda: len(got) == 5, 30, lambda: f"five alerts; got {got}")
        assert runner.is_alive() and len(spool) == 15  # all sent (alerts, text, log), none marked so yet
        spool.full = False
        wait_for(lambda: len(spool) == 0, 30, "the deletes, once there is room")
    finally:
        service.stop_event.set()
        runner.join(30)
    assert not runner.is_alive()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot mark what the broker acknowledged as sent" in warnings[0], warnings
    again = AlertService.open(config)
    runner = threading.Thread(target=again.run)
    runner.start()
    try:
        assert again.connected.wait(10)
        time.sleep(1.0)
    finally:
        again.stop_event.set()
        runner.join(30)
    listener.loop_stop()
    assert sorted(a["device"] for a in got) == ["A", "B", "C", "D", "E"]  # each once, none again after the restart


def test_restart_mid_day_neither_resends_nor_loses_state(tmp_path, broker):
    """kill -9 half-way, messages published while it is down, then a restart: the same alerts and
    totals as one uninterrupted run of the same engine, each alert once."""
    rules = OFFICE_RULES.format(summary="")
    config = write_config(tmp_path, broker, rules)
    messages = as_topics(scenario_messages("office-day", DEVICE, hour_ago()))
    half = len(messages) // 2
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        publish(broker.port, messages[:half])
        wait_for(lambda: len(phone.kinds()) >= 2, 30, lambda: "alerts of the first half\n" + log.read_text()[-2000:])
        time.sleep(1.0)
        service.kill()  # kill -9: no goodbye
        service.wait(10)
        publish(broker.port, messages[half:])  # while it is away: the broker keeps them for its session
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)

            reference = AlertEngine(load_rules(tmp_path / "rules.toml"), Catalog.load(), ZoneInfo(noon_zone()))
            expected = []
            for topic, doc in messages:
                now = time.time()
                expected += (reference.on_metrics(doc, now) if topic.endswith("metrics")
                             else reference.on_event(doc, now))

            want = reference.today_state(DEVICE)
            wait_for(lambda: phone.today().get("ts") == want["ts"], 30, "the last minute to be handled")
            wait_for(lambda: len(phone.kinds()) >= len(expected), 30, "the last alerts")
            stop(service, log)
    phone.close()
    got_ids = [a["id"] for a in phone.alerts]
    assert len(got_ids) == len(set(got_ids)), f"an alert was sent twice: {got_ids}"
    assert got_ids == [a["id"] for a in expected]
    assert [a["stretch"] for a in phone.alerts] == [a["stretch"] for a in expected]
    today = phone.today()
    for key in ("worn_min", "slouch_min", "rotations_left", "rotations_right", "lean_right_min", "alerts_sent"):
        assert today[key] == want[key], key


def test_cap_quiet_hours_and_snooze_over_mqtt(tmp_path, broker):
    rules = """
[slouch]
window_min = 5
share_pct = 50.0
min_worn_min = 3.0
episode_min = 1000.0
cooldown_min = 5.0
[sitting]
enabled = false
[calibration]
enabled = false
[recovery]
enabled = false
[limits]
daily_cap = 3
pace = false
quiet_hours = "{quiet}"
max_delay_s = 1000000
[habit]
summary_time = ""
"""
    now = time.time()
    # The service's day in a zone where it is about noon: the stretches below (from two hours back) stay on one
    # local day whenever the test runs (in UTC, from midnight to 1 am the snoozed minutes fell on yesterday's and
    # the wait for today's alerts_held timed out).
    zone = ZoneInfo(noon_zone())
    day = datetime.fromtimestamp(now, zone).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    # quiet from two hours ago until one hour ago, local time
    quiet = "-".join(datetime.fromtimestamp(now - back_s, zone).strftime("%H:%M") for back_s in (7200, 3600))
    config = write_config(tmp_path, broker, rules.format(quiet=quiet), timezone=zone.key)
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        phone_cap, phone_quiet, phone_snooze = (Phone(broker.port, d, extra=(f"posture/{d}/today",))
                                                for d in ("CapSensor", "QuietSensor", "SnoozeSensor"))
        wait_online(broker.port, service, log)

        def minutes(device: str, start_s: float, n: int) -> list[tuple[str, dict]]:
            return [(f"posture/{device}/metrics", slouchy_minute(device, start_s + 60 * k)) for k in range(n)]

        # CapSensor: slouching for an hour of today's data → alerts every 5 min until 3 are out
        publish(broker.port, minutes("CapSensor", day + 60, 60))
        # QuietSensor: slouching from 2 h 10 min ago for 40 min → held while quiet, first alert when it ends
        start_quiet = (now - 7200) // 60 * 60 - 600
        publish(broker.port, minutes("QuietSensor", start_quiet, 90))
        # SnoozeSensor: the wearer snoozes 30 min (mosquitto_pub, as a phone app would), then slouches. Before its
        # first minute it is known by its gateway's status (a snooze for a device not known is refused).
        publish(broker.port, [("posture/SnoozeSensor/status", {"schema": 1, "kind": "status", "device": "SnoozeSensor",
                                                               "ts": int(now * 1000), "online": True})], retain=True)
        pub = shutil.which("mosquitto_pub")
        assert pub, "mosquitto_pub missing: apt-get install mosquitto-clients"
        subprocess.run([pub, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t",
                        "posture/SnoozeSensor/alerts/snooze", "-m", "30"], check=True, timeout=10)
        recent = now // 60 * 60 - 3600
        publish(broker.port, minutes("SnoozeSensor", recent, 30))
        wait_for(lambda: len(phone_cap.kinds()) >= 3 and len(phone_quiet.kinds()) >= 3, 30, "cap and quiet alerts")
        wait_for(lambda: phone_snooze.today("SnoozeSensor").get("alerts_held", 0) >= 1, 30,
                 "the snoozed minutes to be handled")
        assert phone_snooze.kinds() == []  # held, not sent
        publish(broker.port, [("posture/SnoozeSensor/alerts/snooze", json.dumps({"minutes": 0}))])
        publish(broker.port, minutes("SnoozeSensor", recent + 30 * 60, 10))
        wait_for(lambda: phone_snooze.kinds(), 30, "an alert once the snooze is cancelled")
        stats = stop(service, log)
    for phone in (phone_cap, phone_quiet, phone_snooze):
        phone.close()
    assert len(phone_cap.alerts) == 3  # the cap
    gaps = [b["ts"] - a["ts"] for a, b in zip(phone_cap.alerts, phone_cap.alerts[1:])]
    assert all(g >= 5 * 60_000 for g in gaps)  # the cooldown
    quiet_start_ms, quiet_end_ms = (now - 7200) // 60 * 60 * 1000, (now - 3600) // 60 * 60 * 1000
    quiet_ts = [a["ts"] for a in phone_quiet.alerts]
    assert not [t for t in quiet_ts if quiet_start_ms <= t < quiet_end_ms]  # none in quiet hours
    assert quiet_end_ms in quiet_ts and quiet_ts[0] < quiet_start_ms  # before, and as soon as they end
    assert phone_snooze.alerts[0]["ts"] >= (recent + 30 * 60) * 1000  # nothing from the snoozed stretch
    assert stats["snoozes"] == 2


def test_malformed_input_is_counted_and_never_stops_it(tmp_path, broker):
    rules = "[slouch]\nwindow_min = 5\nshare_pct = 50.0\nmin_worn_min = 3.0\n[limits]\nmax_delay_s = 1000000\n" \
            "quiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
    config = write_config(tmp_path, broker, rules)
    log = tmp_path / "alerts.log"
    # left retained by some app: applied on every restart it would snooze forever, so it is ignored
    publish(broker.port, [(f"posture/{DEVICE}/alerts/snooze", "600")], retain=True)
    with running_alerts(config, log) as service:
        phone = Phone(broker.port)
        try:
            wait_online(broker.port, service, log)
            bad = [(f"posture/{DEVICE}/metrics", b"\xff\xfe not json"), (f"posture/{DEVICE}/metrics", "{}"),
                   (f"posture/{DEVICE}/metrics",
                    json.dumps({"schema": 1, "kind": "metrics", "device": DEVICE, "ts": -5})),
                   (f"posture/{DEVICE}/events", json.dumps({"schema": 1, "kind": "slouch", "device": DEVICE,
                                                            "ts": 1, "duration_s": "long"})),
                   (f"posture/{DEVICE}/alerts/snooze", "soon"), (f"posture/{DEVICE}/alerts/snooze", "-5"),
                   (f"posture/{DEVICE}/alerts/snooze", json.dumps({"minutes": True})),
                   (f"posture/{DEVICE}/metrics", json.dumps(slouchy_minute(DEVICE, 0.0)).replace("45.0", "NaN")),
                   (f"posture/{DEVICE}/metrics", json.dumps(slouchy_minute(DEVICE, time.time() + 3 * 86400))),
                   # Past Python's 4300 digits: counted as a bug (errors, with a traceback) before
                   (f"posture/{DEVICE}/metrics", json.dumps(slouchy_minute(DEVICE, 0.0)).replace(
                       '"lost_samples": 0', '"lost_samples": ' + "9" * 5000))] * 50
            publish(broker.port, bad)
            start = time.time() // 60 * 60 - 600
            publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, start + 60 * k))
                                  for k in range(6)])
            wait_for(lambda: phone.kinds(), 30, lambda: "an alert after the garbage\n" + log.read_text()[-2000:])
            stats = stop(service, log)
        finally:
            publish(broker.port, [(f"posture/{DEVICE}/alerts/snooze", "")], retain=True)  # clear the retained one
    phone.close()
    assert stats["malformed"] == {"not JSON": 150, "schema": 150, "snooze": 151, "time": 50}
    assert not stats["errors"], stats["errors"]
    assert phone.kinds()[0] == "slouch"
    assert log.read_text().count("malformed message") == 4  # one line per kind, the rest counted
    assert "Traceback" not in log.read_text()


def test_home_assistant_discovery_is_retained_valid_and_sent_again_when_ha_restarts(tmp_path, broker):
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        start = time.time() // 60 * 60 - 300
        publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, start + 60 * k)) for k in range(3)])
        ha = Phone(broker.port, "nobody", extra=("homeassistant/#",))

        def configs(phone: Phone = ha) -> dict[str, list[mqtt.MQTTMessage]]:
            with phone.lock:
                return {t: list(m) for t, m in phone.other.items() if t.endswith("/config")}

        wait_for(lambda: len(configs()) == 10, 30, lambda: f"10 discovery configs, got {list(configs())}")
        late = Phone(broker.port, "nobody", extra=("homeassistant/#",))  # an HA that starts only now …
        wait_for(lambda: len(configs(late)) == 10, 30, "the configs for a late subscriber")
        late.close()
        first = configs(late)
        assert all(msgs[0].retain for msgs in first.values())  # … finds them: they are retained
        for topic, msgs in first.items():
            config_doc = json.loads(msgs[0].payload)
            check_config(topic, config_doc)
            assert config_doc["device"]["identifiers"] == ["posture_desksensor"]
        publish(broker.port, [("homeassistant/status", "online")])  # HA's birth message after its restart
        wait_for(lambda: all(len(m) == 2 for m in configs().values()), 30, "the configs again")
        stop(service, log)
    ha.close()


def test_look_alike_device_ids_are_said_as_sharing_one_home_assistant_device(tmp_path, broker):
    """Home Assistant ids are [a-z0-9_]: Desk-1 and desk_1 both become posture_desk_1, and each device's retained
    configs replace the other's. Giving one other ids would rename a device's entities (and break automations that
    use them) whenever a look-alike appears; the service says so, naming both, instead of nothing."""
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        start = time.time() // 60 * 60 - 300
        # Either order: on a busy machine the two can be heard in one step, where a set gives them in any order.
        said_as = [f"Home Assistant: devices {a!r} and {b!r} share the ids posture_desk_1"
                   for a, b in (("Desk-1", "desk_1"), ("desk_1", "Desk-1"))]
        wait_online(broker.port, service, log)
        publish(broker.port, [("posture/Desk-1/metrics", slouchy_minute("Desk-1", start)),
                              ("posture/Desk-2/metrics", slouchy_minute("Desk-2", start))])
        time.sleep(1.0)
        publish(broker.port, [("posture/desk_1/metrics", slouchy_minute("desk_1", start))])
        wait_for(lambda: any(said in log.read_text() for said in said_as), 30,
                 lambda: f"the warning; log:\n{log.read_text()}")
        stop(service, log)
    text = log.read_text()
    said = next(said for said in said_as if said in text)
    assert text.count(said) == 1 and "rename one sensor" in text
    assert "Desk-2" not in text.split(said)[1].splitlines()[0]  # only the look-alikes


def live_state(device: str, t_s: float, since: float | None) -> dict:
    """A live state as the gateway publishes it about once a second (contract/schemas/live.json)."""
    return {"schema": 1, "kind": "live", "device": device, "ts": int(round(t_s * 1000)), "t_s": t_s,
            "calibration": "calibrated", "flexion_deg": 26.0 if since is not None else 3.0, "lateral_deg": 0.4,
            "rotation_deg": -2.0, "activity": "sitting", "slouching_since_s": since, "leaning_since_s": None,
            "lean_side": None, "sitting_since_s": t_s - 900}


def publish_live(port: int, device: str, states: list[dict], pace_s: float = 0.0) -> None:
    """As the gateway: QoS 0, not retained (its retained copy on a change is the same state again)."""
    gateway = client(port)
    for doc in states:
        gateway.publish(f"posture/{device}/live", json.dumps(doc), qos=0).wait_for_publish(10)
        time.sleep(pace_s)
    gateway.loop_stop()
    gateway.disconnect()


def test_live_states_give_one_nudge_while_slouching_and_one_recovered_after_without_a_write_each(tmp_path, broker):
    rules = ("[slouch_now]\ndelay_s = 20.0\n[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
             "[calibration]\nenabled = false\n")
    config = write_config(tmp_path, broker, rules)
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        phone = Phone(broker.port)
        ha = Phone(broker.port, "nobody", extra=("homeassistant/#",))
        wait_online(broker.port, service, log)
        # A device the service has only ever seen live: upright for 20 s, then a slouch (shown once its 5 s dwell
        # confirmed it) of 60 s so far, in sensor time up to now, a few seconds of it at the real pace. Whole seconds:
        # the nudge says how long the state that fires it saw the slouch, and a state at since + 20 rounded to the ms
        # could read 19.9995 s and leave it to the next one (21 s).
        now = float(int(time.time()))
        since = now - 60
        upright = [live_state(DEVICE, now - 80 + k, None) for k in range(20)]
        slouching = [live_state(DEVICE, since + k, since) for k in range(5, 56)]
        publish_live(broker.port, DEVICE, upright + slouching)
        publish_live(broker.port, DEVICE, [live_state(DEVICE, since + k, since) for k in range(56, 61)], pace_s=0.2)
        wait_for(lambda: phone.kinds() == ["slouch_now"], 30, lambda: f"one nudge, got {phone.kinds()}\n"
                 + log.read_text()[-2000:])
        # … the slouch goes on (and one state comes twice, as a retained copy would), then the wearer sits up
        publish_live(broker.port, DEVICE, [live_state(DEVICE, since + k, since) for k in (60, 61, 62)])
        time.sleep(1.0)
        assert phone.kinds() == ["slouch_now"]  # exactly one nudge while slouching
        publish_live(broker.port, DEVICE, [live_state(DEVICE, since + 63 + k, None) for k in range(30)])
        wait_for(lambda: phone.kinds() == ["slouch_now", "recovered"], 30,
                 lambda: f"the follow-up, got {phone.kinds()}\n" + log.read_text()[-2000:])
        # hostile live payloads are counted, never a stop
        hostile = [(f"posture/{DEVICE}/live", b"{\"flexion_deg\": NaN}"),
                   (f"posture/{DEVICE}/live", json.dumps({**live_state(DEVICE, now, None), "activity": "dancing"})),
                   (f"posture/{DEVICE}/live", json.dumps(live_state(DEVICE, now, now + 600))),
                   (f"posture/{DEVICE}/live", json.dumps(live_state("Other", now, None)))]
        publish(broker.port, hostile)
        # Home Assistant hears of a device seen only live
        wait_for(lambda: len([t for t in ha.other if "posture_desksensor" in t]) == 10, 30, "10 discovery configs")
        time.sleep(1.0)
        stats = stop(service, log)
    phone.close()
    ha.close()
    nudge, recovered = phone.alerts
    assert nudge["ts"] == round((since + 20) * 1000) and nudge["title"] == "Slouching now"
    assert nudge["stretch"]["id"] in {s.id for s in Catalog.load().for_deficit("slouch")}
    assert recovered["ts"] == round((since + 63) * 1000)
    validate = load_validators()["alerts/log"]
    for alert in phone.alerts:
        validate(alert)
    assert all(e is not None and 0 < e <= 600 for e in phone.expiry)
    assert phone.texts[0].startswith("Slouching now: Slouching for 20 s now (26° forward).")
    for topic, msgs in ha.other.items():
        if topic.endswith("/config"):
            check_config(topic, json.loads(msgs[0].payload))
    # 109 live states (QoS 0: a local broker loses none), two of them changed the saved state: the nudge and
    # the follow-up, each written with its alert in one transaction; the rest wrote nothing
    assert stats["live"] == 20 + 51 + 5 + 3 + 30
    assert stats["state_writes"] == 2
    assert stats["alerts"] == {"slouch_now": 1, "recovered": 1}
    assert stats["malformed"] == {"not JSON": 1, "schema": 1, "time": 1, "device": 1}


NOW_RULES = """
[calibration]
enabled = false
[limits]
quiet_hours = ""
pace = false
[habit]
summary_time = ""
"""


def gateway_minute(device: str, start_s: float, sitting_since_s: float | None) -> dict:
    """A minute worn upright, sitting since sitting_since_s, or walking (None)."""
    doc = {**slouchy_minute(device, start_s), "slouch_s": 0.0, "sitting_since_s": sitting_since_s}
    return doc if sitting_since_s is not None else {**doc, "sitting_s": 0.0, "walking_s": 60.0}


def backlog(device: str, ahead_s: float) -> list[tuple[str, dict]]:
    """What a gateway whose clock is ahead_s off sends after a 9-minute outage, in one burst: the minutes that ended
    12 to 4 min ago, sitting (since long before: the sitting rule fires at each), and the 3 after them, walking."""
    last_s = (time.time() + ahead_s) // 60 * 60  # the latest minute's end, by the gateway's clock
    since = last_s - 3 * 3600
    return [(f"posture/{device}/metrics", gateway_minute(device, last_s - 60 * k, since if k > 4 else None))
            for k in range(13, 0, -1)]


def live_now(port: int, device: str, ahead_s: float, count: int = 5) -> None:
    """The gateway's live stream for a few seconds, as it goes: each state stamped when it is sent."""
    for _ in range(count):
        publish_live(port, device, [live_state(device, time.time() + ahead_s, None)], pace_s=0.2)


# 4 min ahead: 7 would have every minute refused (AHEAD_SLACK_S, 5 min); 7 min behind: the minutes of the backlog are
# stale by the service's clock too (16 to 11 min old), which a gateway behind always made them.
@pytest.mark.parametrize("ahead_s", [240.0, -420.0])
def test_a_backlog_after_an_outage_nudges_nothing_about_now_whatever_the_gateways_clock_reads(tmp_path, broker,
                                                                                               ahead_s):
    """A 9-minute outage of the gateway's link, its spool sent again in a burst: "Sitting for 50 min" of 9 minutes ago
    went out while the minutes after it showed the wearer walking. Judged on the gateway's clock as its live states
    show it, a real-time minute still nudges, and none of the backlog does; its hold is counted (`late`)."""
    config = write_config(tmp_path, broker, NOW_RULES)
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        real_time = Phone(broker.port, "RealTime")
        phone = Phone(broker.port, "Outage", extra=("posture/Outage/today",))
        wait_online(broker.port, service, log)
        for device in ("RealTime", "Outage"):
            live_now(broker.port, device, ahead_s)
        last_s = (time.time() + ahead_s) // 60 * 60
        publish(broker.port, [("posture/RealTime/metrics", gateway_minute("RealTime", last_s - 60, last_s - 3 * 3600))])
        wait_for(lambda: real_time.kinds() == ["sitting"], 30, lambda: f"a sitting nudge, got {real_time.kinds()}\n"
                 + log.read_text()[-2000:])
        messages = backlog("Outage", ahead_s)
        publish(broker.port, messages)
        wait_for(lambda: at_last_minute(phone, ["Outage"], messages), 30, lambda: log.read_text()[-2000:])
        time.sleep(1.0)
        stats = stop(service, log)
    real_time.close()
    phone.close()
    assert phone.kinds() == []
    assert phone.today("Outage")["alerts_held"] == 1 and phone.today("Outage")["sitting_min"] == 9.0
    assert stats["alerts"] == {"sitting": 1}


def test_minutes_queued_while_the_service_was_away_nudge_nothing_about_now_after_its_restart(tmp_path, broker):
    """The broker keeps the minutes for the service's session while it is stopped and delivers them at its restart,
    before any live state: the offset it learned before, saved with the device's state, judges them."""
    config = write_config(tmp_path, broker, NOW_RULES)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        live_now(broker.port, DEVICE, 0.0)
        first = [(f"posture/{DEVICE}/metrics", gateway_minute(DEVICE, time.time() // 60 * 60 - 20 * 60, None))]
        publish(broker.port, first)  # an old minute, walking: the device's state is written, with its offset
        wait_for(lambda: at_last_minute(phone, [DEVICE], first), 30, lambda: log.read_text()[-2000:])
        stop(service, log)
    messages = backlog(DEVICE, 0.0)
    publish(broker.port, messages)  # while it is away
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        wait_for(lambda: at_last_minute(phone, [DEVICE], messages), 30, lambda: log.read_text()[-2000:])
        time.sleep(1.0)
        stop(service, log)
    phone.close()
    assert phone.kinds() == []
    assert phone.today()["alerts_held"] == 1 and phone.today()["sitting_min"] == 9.0


def test_a_device_known_only_from_an_old_retained_live_state_is_not_announced(tmp_path, broker):
    # The gateway leaves its last live state retained: a sensor retired two days ago still has one on the broker,
    # and so does the one in use. Only the one in use is announced to Home Assistant when the service starts.
    now = time.time()
    publish(broker.port, [("posture/OldSensor/live", live_state("OldSensor", now - 2 * 86_400, None)),
                          (f"posture/{DEVICE}/live", live_state(DEVICE, now - 30, None))], retain=True)
    ha = Phone(broker.port, "nobody", extra=("homeassistant/#",))
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:

        def announced(node: str) -> list[str]:
            with ha.lock:
                return [t for t in ha.other if t.endswith("/config") and f"/{node}/" in t]

        wait_online(broker.port, service, log)
        wait_for(lambda: len(announced("posture_desksensor")) == 10, 30, lambda: log.read_text()[-2000:])
        time.sleep(1.0)
        assert announced("posture_oldsensor") == []
        # … until the old sensor is worn again: its first new state announces it (only the devices heard from are
        # looked at after the start)
        publish_live(broker.port, "OldSensor", [live_state("OldSensor", time.time(), None)])
        wait_for(lambda: len(announced("posture_oldsensor")) == 10, 30, lambda: log.read_text()[-2000:])
        stats = stop(service, log)
    ha.close()
    assert stats["live"] == 3 and stats["malformed"] == {}  # the first two read as retained copies
    for topic in announced("posture_desksensor"):  # the live entities: the sensor's status alone
        config_doc = json.loads(ha.other[topic][0].payload)
        check_config(topic, config_doc)
        if config_doc["state_topic"].endswith("/live"):
            assert [a["topic"] for a in config_doc["availability"]] == [f"posture/{DEVICE}/status"]


def test_a_device_removed_in_home_assistant_stays_removed_while_it_sends_nothing(tmp_path, broker):
    """Deleting a device in Home Assistant clears its retained configs (so that it is not discovered again). A sensor
    retired days ago was announced again at every restart of Home Assistant (and of the service): its last day's
    minutes are kept for good. Now only a device with data of today or yesterday is announced again."""
    config = load_config(write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n"))
    ahead = [0.0]
    service = AlertService.open(config, clock=lambda: time.time() + ahead[0])
    ha = Phone(broker.port, "nobody", extra=("homeassistant/#",))

    def announced(node: str) -> list[bytes]:
        with ha.lock:
            return [m.payload for t, msgs in ha.other.items() if f"/{node}/" in t for m in msgs if m.payload]

    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        wait_online(broker.port)
        start = time.time() // 60 * 60 - 300
        publish(broker.port, [(f"posture/{d}/metrics", slouchy_minute(d, start + 60 * k))
                              for d in ("Retired", DEVICE) for k in range(3)])
        wait_for(lambda: len(announced("posture_retired")) == len(announced("posture_desksensor")) == 10, 30,
                 "both devices announced")
        # Three days on, DeskSensor is still worn; Retired's user deletes it in Home Assistant, then HA restarts.
        ahead[0] = 3 * 86_400
        publish(broker.port, [(f"posture/{DEVICE}/metrics",
                               slouchy_minute(DEVICE, (time.time() + ahead[0]) // 60 * 60 - 120))])
        with ha.lock:
            cleared = [t for t in ha.other if "/posture_retired/" in t]
        publish(broker.port, [(t, b"") for t in cleared], retain=True)
        publish(broker.port, [("homeassistant/status", "online")])
        wait_for(lambda: len(announced("posture_desksensor")) == 20, 30, "DeskSensor announced again")
        time.sleep(1.0)
    finally:
        service.stop_event.set()
        runner.join(30)
    ha.close()
    assert not runner.is_alive()
    assert len(cleared) == 10 and len(announced("posture_retired")) == 10  # not again after its removal


def test_a_restart_announces_each_sensor_under_its_name_only(tmp_path, broker):
    """The names come with the sensors' retained statuses, just after the connect. Announced at once, most sensors of a
    fleet went out under their ids first, then again under their names: at every start Home Assistant's device names
    turned to ids and back, and twice the configs went out."""
    devices = [f"Desk{k:02d}" for k in range(30)]
    now = time.time()
    publish(broker.port, [(f"posture/{d}/status", {"schema": 1, "kind": "status", "device": d, "ts": int(now * 1000),
                                                   "online": True, "sensor_name": f"Desk {d[-2:]} of Ann"})
                          for d in devices], retain=True)
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        publish(broker.port, [(f"posture/{d}/metrics", slouchy_minute(d, now // 60 * 60 - 300)) for d in devices])
        time.sleep(1.0)
        stop(service, log)
        ha = Phone(broker.port, "nobody", extra=("homeassistant/sensor/+/streak/config",))
        time.sleep(1.0)
        with ha.lock:
            ha.other.clear()  # the retained configs of the first run
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            wait_for(lambda: len(ha.other) == len(devices), 30, "the configs again")
            time.sleep(1.0)
            stop(service, log)
    ha.close()
    names = [json.loads(m.payload)["device"]["name"] for msgs in ha.other.values() for m in msgs]
    assert sorted(names) == sorted(f"Posture Desk {d[-2:]} of Ann" for d in devices)  # each once, by its name


def queued_burst(tmp_path: Path, broker, devices: list[str], minutes: int):
    """A backlog of minutes of many devices, queued at the broker for the service's session while it is stopped, and a
    phone watching every device's alerts and day so far: (messages, config, log, phone)."""
    messages = sitting_minutes(devices, minutes)
    config = write_config(tmp_path, broker, BURST_RULES, ha_discovery=False)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, "+", extra=("posture/+/today",))
    queue_while_stopped(broker.port, config, log, messages)
    return messages, config, log, phone


def test_a_backlog_of_many_devices_is_saved_once_per_batch_and_each_minute_counted_once(tmp_path, broker):
    devices = [f"Burst{i:03d}" for i in range(50)]
    messages, config, log, phone = queued_burst(tmp_path, broker, devices, 20)
    with running_alerts(config, log) as service:
        wait_for(lambda: len(at_last_minute(phone, devices, messages)) == len(devices), 60,
                 lambda: f"every device's last minute\n{log.read_text()[-2000:]}")
        stats = stop(service, log)
        # All acknowledged: a restart gets nothing again.
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            time.sleep(1.0)
            again = stop(service, log)
    phone.close()
    assert stats["received"] == len(messages) == 1000 and stats["errors"] == {}
    # A state write (one transaction, then one acknowledgement each) per batch of what had arrived, not per message
    assert 1 <= stats["state_writes"] <= len(messages) // 10, stats
    assert again["received"] == 0 and again["state_writes"] == 0
    for device in devices:
        assert phone.today(device)["worn_min"] == 20.0 and phone.today(device)["alerts_sent"] == 1, device
    assert sorted(a["device"] for a in phone.alerts) == devices and stats["alerts"] == {"sitting": len(devices)}


def test_a_clean_stop_just_after_alerts_went_out_does_not_send_them_again_at_the_next_start(tmp_path, broker):
    """Stopped (SIGTERM) the moment the first alert reaches the phone: the broker's acknowledgements of the rest
    arrive as the service stops. Forgotten, the restarted service sent those alerts again (a test once saw 11 of
    50 wearers nudged twice on a busy machine)."""
    devices = [f"Stop{i:02d}" for i in range(30)]
    config = write_config(tmp_path, broker, BURST_RULES, ha_discovery=False)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, "+")
    with running_alerts(config, log) as service:
        first, stopped = phone.c.on_message, []

        def on_message(c, u, msg):
            first(c, u, msg)
            # Once: a second SIGTERM landing while Python finalises (its handlers back to the default) ended the
            # stopped service with -15 on a busy machine.
            if msg.topic.endswith("/alerts") and not stopped:
                stopped.append(True)
                service.send_signal(signal.SIGTERM)

        phone.c.on_message = on_message
        wait_online(broker.port, service, log)
        publish(broker.port, sitting_minutes(devices, 1))
        assert service.wait(30) == 0, log.read_text()[-3000:]
        phone.c.on_message = first
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            wait_for(lambda: len(phone.alerts) >= len(devices), 30, lambda: "every alert\n" + log.read_text()[-2000:])
            time.sleep(1.0)  # a resent alert would come now
            stop(service, log)
    phone.close()
    assert sorted(a["device"] for a in phone.alerts) == devices


def test_kill_9_in_the_middle_of_a_backlog_loses_no_minute_and_counts_none_twice(tmp_path, broker):
    devices = [f"Burst{i:03d}" for i in range(100)]
    messages, config, log, phone = queued_burst(tmp_path, broker, devices, 40)
    with running_alerts(config, log) as service:
        deadline = time.monotonic() + 60
        while not phone.other and time.monotonic() < deadline:  # the first batch handled: the backlog is draining
            time.sleep(0.005)
        service.kill()  # kill -9 mid-backlog: some batches saved and acknowledged, maybe one saved and not
        service.wait(10)
        done_at_kill = at_last_minute(phone, devices, messages)
        assert phone.other and len(done_at_kill) < len(devices), "the kill came before or after the backlog"
        with running_alerts(config, log) as service:
            wait_for(lambda: len(at_last_minute(phone, devices, messages)) == len(devices), 60,
                     lambda: f"every device's last minute after the restart\n{log.read_text()[-2000:]}")
            stats = stop(service, log)
    phone.close()
    assert 0 < stats["received"] <= len(messages) and stats["errors"] == {}
    for device in devices:  # every minute once: one lost would be 39.0, one counted twice 41.0
        today = phone.today(device)
        assert today["worn_min"] == 40.0 and today["sitting_min"] == 40.0, (device, today)
        assert today["alerts_sent"] == 1, (device, today)  # its sitting alert decided once, over both runs
    # Delivery is at least once (docs/alerts.md: an alert the broker had but had not acknowledged goes out again with
    # its id), so each device's one alert arrived, perhaps twice, never two different ones.
    assert sorted({a["id"]: a["device"] for a in phone.alerts}.values()) == devices


def test_a_second_alert_service_on_the_same_state_file_is_refused_in_one_line(tmp_path, broker):
    """Two `posture alerts` with one config (partitions = 1): both ran, each taking the broker session from the other
    every second and deciding alerts from its own copy of the state. The second now stops at once, exit 2, one line
    naming alerts.state_path; the first runs on. (Partitions lock their own.)"""
    config = write_config(tmp_path, broker, BURST_RULES)
    log = tmp_path / "alerts.log"
    first = start_alerts(config, log)
    try:
        wait_online(broker.port, first, log)
        second = subprocess.run([sys.executable, "-m", "posture.cli", "alerts", "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1 and "alerts.state_path" in lines[0], second.stderr[-2000:]
        assert first.poll() is None
    finally:
        stop(first, log)  # and it stopped cleanly, exit 0
    assert "another client" not in log.read_text()


def test_a_sensor_taken_off_shows_not_worn_in_today_at_once_and_its_posture_again_when_put_on(tmp_path, broker):
    """Off the body no minute comes, and Home Assistant's Posture (from `today`) showed the last minute's (the desk's
    first, read lying) for as long as the sensor lay there. The live state's not_worn is said at once, both ways."""
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
                                            "[calibration]\nenabled = false\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
        wait_online(broker.port, service, log)
        now = time.time()
        minute_s = (now // 60 - 2) * 60
        publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, minute_s))])
        wait_for(lambda: phone.today().get("posture") == "slouching", 30, lambda: f"the minute's posture, got "
                 f"{phone.today()}\n" + log.read_text()[-2000:])
        off = {**live_state(DEVICE, now - 5, None), "flexion_deg": None, "lateral_deg": None, "rotation_deg": None,
               "activity": "not_worn", "sitting_since_s": None}
        publish_live(broker.port, DEVICE, [live_state(DEVICE, now - 6, None), off])
        wait_for(lambda: phone.today().get("posture") == "not_worn", 30, lambda: f"not_worn, got {phone.today()}\n"
                 + log.read_text()[-2000:])
        assert phone.today()["slouching"] is False and phone.today()["sitting_now_min"] == 0.0
        publish_live(broker.port, DEVICE, [live_state(DEVICE, now - 4, None)])
        wait_for(lambda: phone.today().get("posture") == "slouching", 30, lambda: f"put on again, got "
                 f"{phone.today()}\n" + log.read_text()[-2000:])
        stats = stop(service, log)
    phone.close()
    assert stats["state_writes"] == 1  # the minute: being taken off and put on wrote nothing


def test_today_goes_out_once_per_change_not_once_per_message_of_its_minute(tmp_path, broker):
    """`today` was published (retained, QoS 1) after every step that handled any message of a device: a minute, then
    each of its events and any live state that changed the saved state arriving in steps of their own, each sent the
    same document again (an earlier attack counted several for one minute). It goes out when it changes."""
    config = load_config(write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
                                                        "[calibration]\nenabled = false\n[slouch]\nenabled = false\n"))
    service = AlertService.open(config)
    runner = threading.Thread(target=service.run)
    listener, got = listen(broker.port, f"posture/{DEVICE}/today")
    runner.start()
    try:
        wait_online(broker.port)
        minute_s = time.time() // 60 * 60 - 120
        publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, minute_s))])
        wait_for(lambda: got, 30, "the minute's `today`")
        t = minute_s + 20
        events = [{"schema": 1, "kind": "episode_start", "device": DEVICE, "ts": int(t * 1000), "episode": "slouch",
                   "start_s": t, "confirmed_after_s": 5.0, "side": None},
                  {"schema": 1, "kind": "rotation", "device": DEVICE, "ts": int(t * 1000), "start_s": t,
                   "end_s": t + 2, "duration_s": 2.0, "side": "right", "peak_deg": 30.0},
                  {"schema": 1, "kind": "lean", "device": DEVICE, "ts": int(t * 1000), "start_s": t, "end_s": t + 8,
                   "duration_s": 8.0, "side": "left", "mean_lateral_deg": -7.0}]
        for event in events:  # each in a step of its own, as events that trail their minute arrive
            publish(broker.port, [(f"posture/{DEVICE}/events", event)])
            time.sleep(0.5)
        assert service.stats.received == 4
        assert len(got) == 1, got
        # A change still goes out: the next minute.
        publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, minute_s + 60))])
        wait_for(lambda: len(got) == 2, 30, lambda: f"the next minute's `today`; got {got}")
    finally:
        service.stop_event.set()
        runner.join(30)
        listener.loop_stop()
    assert got[1]["ts"] == int(minute_s + 120) * 1000 and got[1]["worn_min"] == 2.0


def test_a_minute_stamped_hours_ahead_does_not_close_today(tmp_path, broker):
    """One minute stamped 14 h ahead (a gateway's clock wrong for a moment: within the contract's day) closed today:
    every real minute after it was a "late" minute of a closed day and ignored, `today` showed tomorrow with that one
    minute, and today's summary was never sent (a helper's probe: 19 of 39 minutes lost). A minute or event of a day
    the service's own clock has not reached is refused as malformed."""
    zone = noon_zone()  # 14 h ahead is tomorrow, 02:xx
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n",
                          timezone=zone)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today", "posture/LaterSensor/today"))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        now_s = time.time() // 60 * 60
        upright = [(f"posture/{DEVICE}/metrics", {**slouchy_minute(DEVICE, now_s - 60 * (40 - k)), "slouch_s": 0.0})
                   for k in range(39)]
        ahead = {**slouchy_minute(DEVICE, now_s + 14 * 3600), "slouch_s": 0.0}
        publish(broker.port, [*upright[:20], (f"posture/{DEVICE}/metrics", ahead), *upright[20:],
                              ("posture/LaterSensor/metrics", slouchy_minute("LaterSensor", now_s - 60))])
        wait_for(lambda: phone.today("LaterSensor").get("worn_min") == 1.0, 30,
                 lambda: "the later sensor's minute\n" + log.read_text()[-2000:])  # sent after all of DEVICE's
        stats = stop(service, log)
    phone.close()
    shown = phone.today()
    assert (shown["date"], shown["worn_min"]) == (datetime.now(ZoneInfo(zone)).date().isoformat(), 39.0)
    assert stats["received"] == 41 and stats["malformed"] == {"time": 1}


def test_a_minute_stamped_hours_ahead_on_the_same_day_is_refused(tmp_path, broker):
    """A gateway whose clock ran 3 h ahead for a moment, on the same local day: its minute was taken, `today` showed
    that minute (its end, 15:xx, and its posture) until the clock got there, and rules decided on it set their
    cooldowns hours ahead (an hour stamped 6 h ahead: no slouch nudge from 09:00 to 14:50). A minute or event more
    than 5 min ahead of the service's clock is refused as malformed."""
    zone = noon_zone()  # 3 h ahead is still today
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n",
                          timezone=zone)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        now_s = time.time() // 60 * 60
        upright = [(f"posture/{DEVICE}/metrics", {**slouchy_minute(DEVICE, now_s - 60 * (20 - k)), "slouch_s": 0.0})
                   for k in range(20)]
        ahead = slouchy_minute(DEVICE, now_s + 3 * 3600)
        publish(broker.port, [*upright[:10], (f"posture/{DEVICE}/metrics", ahead), *upright[10:]])
        wait_for(lambda: phone.today().get("worn_min") in (20.0, 21.0), 30, lambda: log.read_text()[-2000:])
        stats = stop(service, log)
    phone.close()
    shown = phone.today()
    assert (shown["worn_min"], shown["ts"], shown["posture"]) == (20.0, int(now_s) * 1000, "upright")
    assert stats["malformed"] == {"time": 1}


def test_a_broker_restarted_without_its_retained_messages_gets_every_today_again(tmp_path, broker):
    """A broker restarted without persistence (or its store lost) forgets every retained message. Discovery came back
    at the reconnect, but each device's retained `today` only with its next minute: a sensor put away for the evening
    had none until the next morning, and Home Assistant's entities that read it (slouch minutes, upright, posture,
    streak) were unknown meanwhile (a helper's probe: 0 of 2 after the restart). A connect on which the broker has no
    session of ours publishes every device's `today` again."""
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    devices = ["DeskA", "DeskB"]
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        start_s = time.time() // 60 * 60 - 600
        publish(broker.port, [(f"posture/{d}/metrics", slouchy_minute(d, start_s + 60 * k))
                              for k in range(5) for d in devices])
        before = Phone(broker.port, "nobody", extra=("posture/+/today",))
        wait_for(lambda: all(before.today(d).get("worn_min") == 5.0 for d in devices), 30, "both days so far")
        before.close()
        broker.kill()
        shutil.rmtree(broker.workdir / "data")  # nothing retained survives
        broker.start()
        after = Phone(broker.port, "nobody", extra=("posture/+/today",))
        wait_for(lambda: all(after.today(d).get("worn_min") == 5.0 for d in devices), 60,
                 lambda: f"both days so far again; got {after.other.keys()}\n" + log.read_text()[-2000:])
        after.close()
        stop(service, log)


def test_a_broker_back_from_its_last_save_gets_every_today_again(tmp_path, broker):
    """A broker killed and started again comes back with what it last saved (Mosquitto: every autosave_interval, 30
    min by default): the session of ours is there, but a `today` it acknowledged after that save is not, and it held
    the day as it was then until the device's next minute (an attack: kill -9 within 1 s of the publish). Every connect
    publishes every device's `today` again, whatever the broker says of our session."""
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        start_s = time.time() // 60 * 60 - 600
        phone = Phone(broker.port, "nobody", extra=("posture/+/today",))
        publish(broker.port, [("posture/DeskA/metrics", slouchy_minute("DeskA", start_s + 60 * k)) for k in range(3)])
        wait_for(lambda: phone.today("DeskA").get("worn_min") == 3.0, 30, "three minutes")
        time.sleep(3.0)  # saved (autosave_interval 1)
        saved = tmp_path / "saved"
        shutil.copytree(broker.workdir / "data", saved)
        publish(broker.port, [("posture/DeskA/metrics", slouchy_minute("DeskA", start_s + 60 * k))
                              for k in range(3, 5)])
        wait_for(lambda: phone.today("DeskA").get("worn_min") == 5.0, 30, "five minutes")
        phone.close()
        broker.kill()
        shutil.rmtree(broker.workdir / "data")
        shutil.copytree(saved, broker.workdir / "data")  # as it was at its last save
        broker.start()
        wait_for(lambda: "session present: True" in log.read_text(), 60, lambda: log.read_text()[-2000:])
        after = Phone(broker.port, "nobody", extra=("posture/+/today",))
        wait_for(lambda: after.today("DeskA").get("worn_min") == 5.0, 60,
                 lambda: f"the day so far again; got {after.today('DeskA')}\n" + log.read_text()[-2000:])
        after.close()
        stop(service, log)


def saved_state(path: Path, config: Path, devices: list[str], start_s: float, minutes: int) -> AlertEngine:
    """A state file holding `minutes` of each device's data, as a run of the service leaves it."""
    engine = new_engine(load_config(config))
    for device in devices:
        for k in range(minutes):
            engine.on_metrics(slouchy_minute(device, start_s + 60 * k), time.time())
    spool = Spool(path)
    spool.put([], meta=engine.dump(set(devices)))
    spool.close()
    return engine


def test_the_state_file_holds_the_minutes_kept_each_in_its_record(tmp_path):
    """Each step writes what its minutes changed (engine.changes): their records and their device's, and deletes the
    records of minutes no longer kept (the day before's, after the next day's first minutes). The file then holds the
    device's record and one record per minute kept, and a start reads from it the day as it was."""
    engine = AlertEngine(load_rules(None), Catalog.load(), ZoneInfo("UTC"))
    spool = Spool(tmp_path / "alerts.db")
    start_s = datetime(2026, 11, 20, 23, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    for k in range(120):  # 23:00 to 01:00
        engine.on_metrics(slouchy_minute(DEVICE, start_s + 60 * k), start_s + 60 * k + 60)
        spool.put([], meta=engine.changes({DEVICE}))
    meta = spool.meta()
    spool.close()
    kept = engine.devices[DEVICE].minutes
    assert len(kept) < 120 and sorted(meta) == sorted([f"device/{DEVICE}"] + [f"minute/{DEVICE}/{k}" for k in kept])
    read = AlertEngine(load_rules(None), Catalog.load(), ZoneInfo("UTC"))
    assert read.load(meta) == {} and read.today_state(DEVICE) == engine.today_state(DEVICE)


def test_a_corrupt_device_record_starts_that_device_afresh_and_every_other_goes_on(tmp_path, broker):
    """One device's record truncated in the state file (a hand edit, a bad restore) stopped the whole service at start
    with "posture alerts: Unterminated string starting at: …", naming neither the file nor the device, and no device
    was served. Now: one line naming both, that device starts afresh, its record kept in the file under another key."""
    config = write_config(tmp_path, broker, BURST_RULES)
    state = tmp_path / "alerts.db"
    start = time.time() // 60 * 60 - 600
    engine = saved_state(state, config, [DEVICE, "Broken"], start, 3)
    bad = engine.dump({"Broken"})["device/Broken"][:40]  # truncated inside a string
    spool = Spool(state)
    spool.put([], meta={"device/Broken": bad})
    spool.close()
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today", "posture/Broken/today"))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        publish(broker.port, [(f"posture/{d}/metrics", slouchy_minute(d, start + 180)) for d in (DEVICE, "Broken")])
        wait_for(lambda: phone.today().get("worn_min") and phone.today("Broken").get("worn_min"), 30,
                 lambda: "both devices' day\n" + log.read_text()[-2000:])
        stats = stop(service, log)
    phone.close()
    assert phone.today()["worn_min"] == 4.0  # its three minutes kept, and the new one
    assert phone.today("Broken")["worn_min"] == 1.0  # afresh
    said = [ln for ln in log.read_text().splitlines() if "'Broken'" in ln]
    assert len(said) == 1 and str(state) in said[0] and "starts afresh" in said[0], said
    kept = Spool(state)
    meta = kept.meta()
    kept.close()
    aside = [key for key in meta if key.startswith("unreadable/Broken/")]
    assert len(aside) == 1 and meta[aside[0]] == bad and aside[0] in said[0]  # where it is, said
    assert json.loads(meta["device/Broken"])["day"]  # its fresh record
    assert stats["unreadable_records"] == 1


def test_a_snooze_for_a_device_not_known_is_refused_naming_the_one_it_resembles(tmp_path, broker):
    """A snooze on `desksensor` for the sensor `DeskSensor` (or for no sensor at all) was accepted without a word and
    made an empty state record: the phone snoozed nothing and nobody was told. Now it is refused in one line naming the
    known device it resembles, and counted. A device is known from its saved state (all loaded at start: a snooze
    after a restart, before the next minute, is taken) or from a message of it since, its gateway's retained status
    included (a sensor not worn yet can be snoozed)."""
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    state = tmp_path / "alerts.db"
    saved_state(state, config, [DEVICE], time.time() // 60 * 60 - 600, 3)
    publish(broker.port, [("posture/Fresh/status", {"schema": 1, "kind": "status", "device": "Fresh",
                                                    "ts": int(time.time() * 1000), "online": True})], retain=True)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, "nobody", extra=(f"posture/{DEVICE}/today",))
    with running_alerts(config, log) as service:
        try:
            wait_online(broker.port, service, log)
            time.sleep(0.5)  # Fresh's retained status, which comes with the subscription
            # DeskSensor's last: its `today` says all four were handled (Fresh, with no minute, has none)
            publish(broker.port, [(f"posture/{d}/alerts/snooze", "30")
                                  for d in ("Fresh", "desksensor", "Nobody", DEVICE)])
            wait_for(lambda: phone.today().get("snoozed_until"), 30, lambda: "the snoozes\n" + log.read_text()[-2000:])
            # the unknown ones wait SNOOZE_WAIT_S for their devices (kept across a stop), then are refused
            wait_for(lambda: "'Nobody'" in log.read_text() and "'desksensor'" in log.read_text(), 30,
                     lambda: "the refusals\n" + log.read_text()[-2000:])
            stats = stop(service, log)
        finally:
            publish(broker.port, [("posture/Fresh/status", "")], retain=True)
    phone.close()
    assert stats["snoozes"] == 2 and stats["malformed"] == {"snooze": 2}, stats
    lines = log.read_text().splitlines()
    said = [ln for ln in lines if "'desksensor'" in ln]
    assert len(said) == 1 and "'DeskSensor'" in said[0] and "refused" in said[0], said
    said = [ln for ln in lines if "'Nobody'" in ln]
    assert len(said) == 1 and "refused" in said[0] and "did you mean" not in said[0], said
    kept = Spool(state)
    devices = sorted(key for key in kept.meta() if key.startswith("device/"))
    kept.close()
    assert devices == [f"device/{DEVICE}", "device/Fresh"]  # no state made for the unknown ones


def test_a_snooze_queued_while_the_service_was_away_waits_for_its_devices_retained_status(tmp_path, broker):
    """A snooze published while the service was away, for a sensor with no saved state, is delivered from the
    session at the reconnect before that sensor's retained status (Mosquitto sends the queued messages at once, the
    retained ones after the SUBSCRIBE on that connection): it was refused as for no known device. Now a snooze waits
    a few seconds for its device to become known; one for no device is still refused after that."""
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    publish(broker.port, [("posture/Waiting/status", {"schema": 1, "kind": "status", "device": "Waiting",
                                                      "ts": int(time.time() * 1000), "online": True})], retain=True)
    try:
        before_s = time.time()
        queue_while_stopped(broker.port, config, log, [("posture/Waiting/alerts/snooze", "30"),
                                                       ("posture/NoSuchSensor/alerts/snooze", "30")])
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            wait_for(lambda: "'NoSuchSensor'" in log.read_text(), 30, lambda: "the refusal\n" + log.read_text()[-2000:])
            stats = stop(service, log)
    finally:
        publish(broker.port, [("posture/Waiting/status", "")], retain=True)
    assert stats["snoozes"] == 1 and stats["malformed"] == {"snooze": 1}, stats
    assert [ln for ln in log.read_text().splitlines() if "'Waiting'" in ln] == []
    kept = Spool(state := tmp_path / "alerts.db")
    meta = kept.meta()
    kept.close()
    assert sorted(key for key in meta if key.startswith("device/")) == ["device/Waiting"], state
    until_s = json.loads(meta["device/Waiting"])["snooze_until_s"]
    assert before_s + 1800 <= until_s <= time.time() + 1800


def test_data_far_behind_this_clock_is_counted_and_said_once_per_device(tmp_path, caplog):
    """A gateway's clock a month behind (a Raspberry Pi booted without RTC or NTP) set a new wearer's program start a
    month back, silently. Its minutes now open no day: counted (far_behind), said once per device, no state made."""
    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                              "POSTURE_ALERTS_TIMEZONE": "UTC"})
    now = time.time()
    service = AlertService.open(config, clock=lambda: now)
    month_ago = now // 60 * 60 - 30 * 86_400
    batch = []
    for k, device in enumerate(["Pi", "Pi", "Other"]):
        msg = mqtt.MQTTMessage(topic=f"posture/{device}/metrics".encode())
        msg.payload, msg.qos = json.dumps(slouchy_minute(device, month_ago + 60 * k)).encode(), 1
        batch.append((-1, msg))  # of no connection of the service's: not acknowledged
    try:
        with caplog.at_level(logging.WARNING, logger="posture.alerts"):
            service.step(batch)
    finally:
        service.spool.close()
    assert service.stats.far_behind == 3 and not service.stats.malformed and not service.stats.errors
    said = [r.getMessage() for r in caplog.records if "not counted" in r.getMessage()]
    assert [s.split("'")[1] for s in said] == ["Pi", "Other"] and "30 days before this clock's" in said[0], said
    assert service.engine.devices == {}


def test_a_refused_snooze_names_the_device_it_resembles_by_case_punctuation_or_spelling():
    known = {"DeskSensor", "Kitchen-2", "WT901BLE68"}
    assert resembling("desksensor", known) == "DeskSensor"
    assert resembling("Desk-Sensor", known) == "DeskSensor"
    assert resembling("DeskSensr", known) == "DeskSensor"
    assert resembling("kitchen_2", known) == "Kitchen-2"
    assert resembling("Nobody", known) is None and resembling("x", set()) is None


def test_a_state_file_that_is_no_database_is_moved_aside_and_the_service_serves(tmp_path, broker):
    """A damaged state file (a card's bad sector) stopped the service at every start with "spool …: cannot open: file
    is not a database": no wearer had alerts until someone moved the file by hand. Now it is moved aside, said once,
    counted, and every device starts afresh."""
    config = write_config(tmp_path, broker, BURST_RULES)
    state = tmp_path / "alerts.db"
    state.write_bytes(b"not a database, a bad restore" * 100)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        publish(broker.port, [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, time.time() // 60 * 60 - 120))])
        wait_for(lambda: phone.today().get("worn_min"), 30, lambda: "the day so far\n" + log.read_text()[-2000:])
        stats = stop(service, log)
    phone.close()
    assert phone.today()["worn_min"] == 1.0
    aside = list(tmp_path.glob("alerts.db.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    said = [ln for ln in log.read_text().splitlines() if "cannot be read" in ln]
    assert len(said) == 1 and str(aside[0]) in said[0], said
    assert stats["unreadable_files"] == 1


def stop_after_three_minutes(service, log, phone, device: str) -> dict:
    """Stopped once `today` shows the device's 3 sitting minutes (and a moment more, in which an alert decided from
    them would have reached the phone): the service's stats."""
    wait_for(lambda: phone.today(device).get("worn_min") == 3.0, 30, lambda: log.read_text()[-2000:])
    time.sleep(0.5)
    return stop(service, log)


def assert_snoozed(phone, stats: dict, device: str) -> None:
    """One snooze taken, and the alert its minutes were due held by it, not sent: as the wearer asked."""
    assert phone.kinds() == [] and stats["alerts"] == {}, phone.alerts
    assert stats["snoozes"] == 1 and phone.today(device)["alerts_held"] == 1, stats


def test_a_snooze_waiting_for_its_device_holds_that_devices_first_minutes_too(tmp_path, broker):
    """A snooze published while the service was away, for a sensor not known yet, and then the sensor's first minutes
    (put on and worn while the service was still away): the snooze waits for the device, and its first minutes, which
    make it known, were decided before it was taken: the wearer who had snoozed got a nudge from them."""
    config = write_config(tmp_path, broker, BURST_RULES)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, device="Fresh", extra=("posture/Fresh/today",))
    queue_while_stopped(broker.port, config, log, [("posture/Fresh/alerts/snooze", "30"),
                                                   *sitting_minutes(["Fresh"], 3)])
    with running_alerts(config, log) as service:
        try:
            wait_online(broker.port, service, log)
            stats = stop_after_three_minutes(service, log, phone, "Fresh")
        finally:
            phone.close()
    assert_snoozed(phone, stats, "Fresh")


@pytest.mark.parametrize("stopped_by", [signal.SIGKILL, signal.SIGTERM])
def test_a_snooze_waiting_for_its_device_outlives_a_crash_or_stop_of_the_service(tmp_path, broker, stopped_by):
    """A snooze queued while the service was away, for a sensor not known yet, waits up to SNOOZE_WAIT_S for it. It was
    acknowledged with its step and kept in memory alone: a kill -9 in that wait lost it (the broker had it as
    delivered), a clean stop refused it; the sensor's first minutes, queued next, were then nudged. Now the waiting
    snooze is saved before it is acknowledged and waits again after the restart."""
    config = write_config(tmp_path, broker, BURST_RULES)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, device="Later", extra=("posture/Later/today",))
    queue_while_stopped(broker.port, config, log, [("posture/Later/alerts/snooze", "30")])
    with running_alerts(config, log) as service:
        try:
            wait_online(broker.port, service, log)
            time.sleep(1.0)  # the queued snooze came at the connect, and waits (up to 5 s) for its device
            service.send_signal(stopped_by)
            service.wait(30)
            publish(broker.port, sitting_minutes(["Later"], 3))  # the sensor, put on meanwhile: a sitting nudge's due
            with running_alerts(config, log) as service:
                wait_online(broker.port, service, log)
                stats = stop_after_three_minutes(service, log, phone, "Later")
        finally:
            phone.close()
    assert_snoozed(phone, stats, "Later")
    assert not stats["malformed"], stats


def test_alerts_the_broker_acknowledged_leave_the_file_at_once_so_a_kill_9_then_sends_none_twice(tmp_path, broker):
    """Delivery is at least once: an alert the broker has but whose acknowledgement the service has not yet written
    goes out again after a kill -9. That window was the wait for the next step, up to 0.2 s with nothing arriving:
    killed 0.2–0.5 s after a burst's first alert reached the phone, 12–34 of 100 wearers were nudged twice. Now a
    step follows every few ms while alerts are in flight: killed 0.1 s after the last reached the phone, none is.
    100 wearers: their 300 messages go out over several steps (100 in flight at most), the last with nothing
    arriving."""
    devices = [f"Idle{i:03d}" for i in range(100)]
    config = write_config(tmp_path, broker, BURST_RULES, ha_discovery=False)
    log = tmp_path / "alerts.log"
    phone = Phone(broker.port, "+")
    with running_alerts(config, log) as service:
        first = phone.c.on_message
        killer = threading.Timer(0.1, service.kill)

        def on_message(c, u, msg):
            first(c, u, msg)
            if msg.topic.endswith("/alerts") and len(phone.alerts) == len(devices):
                killer.start()

        phone.c.on_message = on_message
        wait_online(broker.port, service, log)
        publish(broker.port, sitting_minutes(devices, 1))
        assert service.wait(30) == -signal.SIGKILL, log.read_text()[-3000:]
        phone.c.on_message = first
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            time.sleep(1.0)  # a resent alert would come now
            stats = stop(service, log)
    phone.close()
    assert sorted(a["device"] for a in phone.alerts) == devices and stats["alerts"] == {}


def test_snoozes_for_devices_not_known_wait_saved_up_to_a_limit_and_one_past_it_is_said(tmp_path, caplog):
    """Each snooze waiting for its device is saved before it is acknowledged (a crash keeps it); a flood of them on
    topics of no device is bounded (WAITING_MAX): one more is refused at once, in a line of its own kind, even after
    another bad snooze was said (counted as one more bad `snooze`, it went unsaid)."""
    from alerts import service as service_module

    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                              "POSTURE_ALERTS_TIMEZONE": "UTC"})
    now = time.time()
    service = AlertService.open(config, clock=lambda: now)
    batch = []
    for device, body in [("Nan", b"NaN"), *((f"Ghost{i}", b"10") for i in range(service_module.WAITING_MAX + 1))]:
        msg = mqtt.MQTTMessage(topic=f"posture/{device}/alerts/snooze".encode())
        msg.payload, msg.qos = body, 1
        batch.append((service._connection, msg))  # of its connection (not connected: acknowledged to no one)
    try:
        with caplog.at_level(logging.WARNING, logger="posture.alerts"):
            service.step(batch)
        saved = json.loads(service.spool.meta()[service_module.WAITING_KEY])
    finally:
        service.spool.close()
    assert service.stats.malformed == {"snooze": 1, "snoozes_waiting": 1}, service.stats.malformed
    assert len(saved) == service_module.WAITING_MAX and saved[0][:3] == ["Ghost0", "posture/Ghost0/alerts/snooze", 10.0]
    said = [r.getMessage() for r in caplog.records if "already wait" in r.getMessage()]
    assert len(said) == 1 and f"'Ghost{service_module.WAITING_MAX}'" in said[0], said
    reopened = AlertService.open(config, clock=lambda: now)  # as after a kill -9: they wait again
    reopened.spool.close()
    assert sum(map(len, reopened._waiting_snoozes.values())) == service_module.WAITING_MAX


def test_a_snooze_on_a_topic_that_is_no_device_id_is_said_naming_the_id_it_meant(tmp_path, caplog):
    """A snooze on a look-alike of a device id (a Cyrillic 'о', fullwidth letters) or on a sensor's name where its id
    differs ('Büro' for 'Buro-…') was counted as a malformed snooze and said only if no bad snooze had been said
    before: the phone's user was never told. Now each such id is said once, naming the known id it means."""
    from contract.identity import device_id

    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                              "POSTURE_ALERTS_TIMEZONE": noon_zone()})
    now = time.time()
    service = AlertService.open(config, clock=lambda: now)
    buro = device_id("Büro")
    batch = []
    for topic, body in [*((f"posture/{d}/metrics", json.dumps(slouchy_minute(d, now // 60 * 60 - 600)).encode())
                          for d in (DEVICE, buro)),
                        (f"posture/{DEVICE}/alerts/snooze", b"NaN"),
                        ("posture/DeskSens\u043er/alerts/snooze", b"30"), ("posture/Büro/alerts/snooze", b"30"),
                        ("posture/\uff24\uff45\uff53\uff4bSensor/alerts/snooze", b"30"),
                        ("posture/\u2603/alerts/snooze", b"30")]:
        msg = mqtt.MQTTMessage(topic=topic.encode())
        msg.payload, msg.qos = body, 1
        batch.append((-1, msg))  # of no connection of the service's: not acknowledged
    try:
        with caplog.at_level(logging.WARNING, logger="posture.alerts"):
            service.step(batch)
    finally:
        service.spool.close()
    assert service.stats.malformed == {"snooze": 5} and service.stats.snoozes == 0, service.stats.malformed
    said = [r.getMessage() for r in caplog.records if "is not a device id" in r.getMessage()]
    assert len(said) == 4, said
    assert [s.rsplit("did you mean ", 1)[-1].split("?")[0] if "did you mean" in s else None for s in said] == \
        [repr(DEVICE), repr(buro), repr(DEVICE), None], said


def saved_device(state: Path, device: str) -> dict:
    """A device's state as the running service last saved it ({} before its first): read beside it (WAL). Its record
    with its minutes, each saved in a record of its own (engine.MINUTE_KEY), as a record of before held them."""
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (f"device/{device}",)).fetchone()
        minutes = db.execute("SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1",
                             (f"minute/{device}/",)).fetchall()
    if not row:
        return {}
    places = sorted((json.loads(value)[0], key.rsplit("/", 1)[1], json.loads(value)[1]) for key, value in minutes)
    return json.loads(row[0]) | {"minutes": {key: minute for _, key, minute in places}}


def test_a_snooze_the_broker_delivers_again_after_its_crash_is_taken_once(tmp_path, broker):
    """The broker crashed (kill -9) after the service took a snooze and before its acknowledgement reached the broker:
    restarted from its saved session, the broker delivered it again (MQTT DUP, same packet id) and it was taken again,
    from then: its end moved by the outage and `snoozes` counted it twice. Now the copy is known and ignored, and a
    second press of the wearer's after it is still taken, from when it came."""
    config = write_config(tmp_path, broker, "[habit]\nsummary_time = \"\"\n")
    state = tmp_path / "alerts.db"
    saved_state(state, config, [DEVICE], time.time() // 60 * 60 - 600, 3)
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        wait_online(broker.port, service, log)
        service.send_signal(signal.SIGSTOP)  # no acknowledgement: the snooze is in flight when the broker saves
        try:
            publish(broker.port, [(f"posture/{DEVICE}/alerts/snooze", "30")])
            time.sleep(2.5)  # the broker saves its sessions every second (autosave_interval 1)
            broker.kill()
        finally:
            service.send_signal(signal.SIGCONT)
        wait_for(lambda: saved_device(state, DEVICE).get("snooze_until_s"), 30,
                 lambda: "the snooze to be taken\n" + log.read_text()[-2000:])
        until_s = saved_device(state, DEVICE)["snooze_until_s"]
        time.sleep(3.0)  # the outage: its acknowledgement went nowhere
        broker.start()
        wait_for(lambda: "delivered again" in log.read_text()
                 or saved_device(state, DEVICE)["snooze_until_s"] != until_s, 30,
                 lambda: "the copy to be handled\n" + log.read_text()[-2000:])
        assert saved_device(state, DEVICE)["snooze_until_s"] == until_s
        time.sleep(0.5)
        publish(broker.port, [(f"posture/{DEVICE}/alerts/snooze", "30")])  # the wearer presses again
        wait_for(lambda: saved_device(state, DEVICE)["snooze_until_s"] >= until_s + 3.0, 30,
                 lambda: "the second press to be taken\n" + log.read_text()[-2000:])
        stats = stop(service, log)
    assert stats["snoozes"] == 2 and stats["snooze_copies"] == 1, stats


def test_a_snooze_delivered_again_is_known_by_its_packet_id_or_its_sent_time_and_taken_once(tmp_path):
    """What tells a copy the broker delivers again (its acknowledgement lost in a reconnect) from the wearer's second
    press: the DUP flag and the same packet id; with a sent time in the payload, that time (any copy, by any path). A
    snooze with a sent time snoozes from it, never from later than it arrived; one sent far ahead is refused. Known
    also after a restart, and while it waits for its device."""
    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                              "POSTURE_ALERTS_TIMEZONE": noon_zone()})
    t0 = time.time()
    clock = [t0]

    def snooze(body: str, mid: int, dup: bool = False, device: str = DEVICE) -> tuple[int, mqtt.MQTTMessage]:
        msg = mqtt.MQTTMessage(mid=mid, topic=f"posture/{device}/alerts/snooze".encode())
        msg.payload, msg.qos, msg.dup = body.encode(), 1, dup
        return -1, msg  # of no connection of the service's: acknowledged to no one

    def step_at(t_s: float, *batch: tuple[int, mqtt.MQTTMessage]) -> float | None:
        clock[0] = t_s
        service.step(list(batch))
        return service.engine.devices[DEVICE].snooze_until_s

    service = AlertService.open(config, clock=lambda: clock[0])
    minute = mqtt.MQTTMessage(topic=f"posture/{DEVICE}/metrics".encode())
    minute.payload, minute.qos = json.dumps(slouchy_minute(DEVICE, t0 // 60 * 60 - 600)).encode(), 1
    try:
        assert step_at(t0, (-1, minute), snooze("30", 7)) == t0 + 1800
        assert step_at(t0 + 300, snooze("30", 7, dup=True)) == t0 + 1800  # the copy: the end stays
        assert service.stats.snoozes == 1 and service.stats.snooze_copies == 1
        # the wearer's second press, with a packet id of an earlier one (ids come round): taken
        assert step_at(t0 + 360, snooze("30", 7)) == t0 + 360 + 1800
        # one the broker tried before but the service never took (lost in a crash before it was saved): taken
        assert step_at(t0 + 420, snooze("30", 8, dup=True)) == t0 + 420 + 1800
        sent = json.dumps({"minutes": 30, "sent_s": t0 + 400})
        assert step_at(t0 + 600, snooze(sent, 9)) == t0 + 400 + 1800  # from when the wearer sent it
        assert step_at(t0 + 900, snooze(sent, 21)) == t0 + 400 + 1800  # a copy, though no DUP and another id
        assert service.stats.snoozes == 4 and service.stats.snooze_copies == 2
        ahead = json.dumps({"minutes": 30, "sent_s": t0 + 960 + 3600})
        assert step_at(t0 + 960, snooze(ahead, 10)) == t0 + 400 + 1800 and service.stats.malformed == {"snooze": 1}
        a_bit_ahead = json.dumps({"minutes": 30, "sent_s": t0 + 960 + 60})
        assert step_at(t0 + 960, snooze(a_bit_ahead, 11)) == t0 + 960 + 1800  # no longer than asked
        assert step_at(t0 + 1000, snooze("30", 30, device="Fresh")) is not None  # waits for its device
        assert step_at(t0 + 1001, snooze("30", 30, dup=True, device="Fresh")) == t0 + 960 + 1800
        assert service.stats.snooze_copies == 3 and len(service._waiting_snoozes["Fresh"]) == 1
    finally:
        service.spool.close()
    service = AlertService.open(config, clock=lambda: clock[0])  # as after a crash: what was taken is known
    try:
        assert step_at(t0 + 1100, snooze("30", 8, dup=True), snooze("30", 30, dup=True, device="Fresh"),
                       snooze(a_bit_ahead, 12)) == t0 + 960 + 1800
        assert service.stats.snooze_copies == 3 and service.stats.snoozes == 0, service.stats
        assert len(service._waiting_snoozes["Fresh"]) == 1
    finally:
        service.spool.close()


FIRST_HOLD_RULES = """
[slouch]
window_min = 5
share_pct = 50.0
min_worn_min = 3.0
episode_min = 1000.0
cooldown_min = 5.0
[sitting]
enabled = false
[recovery]
enabled = false
[limits]
daily_cap = 2
pace = false
quiet_hours = ""
max_delay_s = 1000000
[habit]
summary_time = ""
"""


def test_a_calibration_refused_at_the_first_hold_is_sent_and_leaves_the_days_nudges_to_posture(tmp_path, broker):
    """A newcomer's fidgety first hold is refused 2 s in: the request to hold still again goes out at once, and it is
    no posture nudge, so it uses up none of the day's cap (it took one: a cap of 2 left one slouch nudge, and
    `alerts_sent` said 2). Nor does the answer to the second try, 10 min later (held by the requests' 4 h cooldown
    before: a wearer who tried again heard nothing; a sensor that goes on refusing by itself is bounded in
    tests/test_alerts_calibration.py)."""
    start = time.time() // 60 * 60 - 30 * 60
    config, log = write_config(tmp_path, broker, FIRST_HOLD_RULES), tmp_path / "alerts.log"

    def refused(t_s: float) -> tuple[str, dict]:
        return f"posture/{DEVICE}/events", {
            "schema": 1, "kind": "calibration", "device": DEVICE, "ts": int(t_s * 1000), "t_s": t_s,
            "status": "refused", "with_bend": False,
            "message": "moved during the upright hold after 1.2 s: sit upright and keep still for 3 s"}

    minutes = [(f"posture/{DEVICE}/metrics", slouchy_minute(DEVICE, start + 60 * k)) for k in range(25)]
    phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
    try:
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            publish(broker.port, [refused(start + 2), *minutes[:10], refused(start + 600 + 5), *minutes[10:]])
            wait_for(lambda: phone.today().get("ts") == int((start + 25 * 60) * 1000), 30, "the last minute handled")
            time.sleep(0.5)  # (the alerts go out before the day so far)
            stop(service, log)
        assert phone.kinds() == ["calibration", "slouch", "slouch", "calibration"], phone.kinds()
        assert [(a["ts"], a["evidence"]["status"]) for a in phone.alerts if a["kind"] == "calibration"] == [
            (int((start + 2) * 1000), "refused"), (int((start + 605) * 1000), "refused")]
        today = phone.today()
        assert today["alerts_sent"] == 2 and today["alerts_held"] >= 1, today  # the cap: two posture nudges
    finally:
        phone.close()


def gateway_status(device: str, ts_s: float, online: bool) -> dict:
    """A sensor's status as the gateway publishes it (contract/schemas/status.json)."""
    return {"schema": 1, "kind": "status", "device": device, "ts": int(ts_s * 1000), "online": online,
            "battery_pct": 80, "link_quality_pct": 99.0 if online else None, "lost_samples": 0,
            "malformed_packets": 0, "duplicate_packets": 0, "reconnects": 0, "rssi_dbm": None,
            "sensor_name": device, "will": False}


def test_sitting_now_counts_to_where_a_link_lost_mid_minute_left_its_data_and_not_while_the_sensor_is_away(
        tmp_path, broker):
    """A wearer sat through the calibration and on, and the link was lost 4.5 s into the ninth minute: that minute
    goes out unfinished (`posture run`'s link_lost). `today.sitting_now_min` counted the sitting to the minute's end,
    55.5 s the data never saw (8.8 min said for 7.9), and said it for the rest of the day. It counts to where the data
    ends (the minute's seen_until_s), says nothing (null) while the gateway says the sensor is offline, the last
    stretch again when it is back within the pipeline's SITTING_GAP_S (it goes on), and nothing when back after
    longer, until the next minute."""
    config = write_config(tmp_path, broker, "[limits]\nquiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
                                            "[calibration]\nenabled = false\n")
    log = tmp_path / "alerts.log"
    start_s = time.time() // 60 * 60 - 20 * 60
    lost_at_s = start_s + 8 * 60 + 4.5
    messages = as_topics(scenario_messages("sit-upright", DEVICE, start_s, lost_at_s=lost_at_s,
                                           extra_segments=[{"activity": "sit_upright", "duration_s": 600}]))
    last = max((doc for topic, doc in messages if topic.endswith("/metrics")), key=lambda doc: doc["ts"])
    assert last["minute_start_s"] == lost_at_s - 4.5 and last["worn_s"] < 5 and last["sitting_since_s"] is not None
    true_min = (last["seen_until_s"] - last["sitting_since_s"]) / 60  # to its last sample's end
    assert lost_at_s - 0.011 <= last["seen_until_s"] <= lost_at_s
    with running_alerts(config, log) as service:
        phone = Phone(broker.port, extra=(f"posture/{DEVICE}/today",))
        wait_online(broker.port, service, log)
        publish(broker.port, messages)
        wait_for(lambda: last_minute_handled(phone, messages), 30, lambda: f"the cut minute, got {phone.today()}\n"
                 + log.read_text()[-2000:])
        said = phone.today()["sitting_now_min"]
        assert abs(said - true_min) <= 0.05 + 1e-9, (said, true_min)

        def now_said(status: dict, expected: float | None) -> None:
            publish(broker.port, [(f"posture/{DEVICE}/status", status)], retain=True)
            wait_for(lambda: phone.today()["sitting_now_min"] == expected, 30,
                     lambda: f"{expected} after {status}, got {phone.today()}\n" + log.read_text()[-2000:])

        now_said(gateway_status(DEVICE, lost_at_s + 3, online=False), None)  # the watchdog's 3 s: offline
        now_said(gateway_status(DEVICE, lost_at_s + 40, online=True), said)  # back within SITTING_GAP_S: goes on
        now_said(gateway_status(DEVICE, lost_at_s + 50, online=False), None)
        now_said(gateway_status(DEVICE, lost_at_s + 400, online=True), None)  # back after it: a new stretch, if any
        stats = stop(service, log)
    phone.close()
    assert stats["errors"] == {} and stats["malformed"] == {}, stats


def test_minutes_the_session_holds_show_in_today_when_they_come_before_the_subscriptions_are_answered(tmp_path,
                                                                                                      broker):
    """The broker sends a persistent session's backlog right after CONNACK; on a slow link the service handles it
    before the SUBACK, while it does not count as connected yet (service_io/mqtt.py). Each handled device's `today`
    was then left unsent until its next message (a CI run: three minutes queued while the service was away, none
    shown in 30 s). Now it goes out once connected. The relay holds what the service sends 0.5 s, so the backlog comes
    first every time."""
    uplink = SlowUplink(broker.port, delay_s=0.5)
    try:
        config = write_config(tmp_path, uplink, NOW_RULES)
        log = tmp_path / "alerts.log"
        phone = Phone(broker.port, device="Away", extra=("posture/Away/today",))
        messages = sitting_minutes(["Away"], 3)
        queue_while_stopped(broker.port, config, log, messages)
        with running_alerts(config, log) as service:
            wait_online(broker.port, service, log)
            wait_for(lambda: at_last_minute(phone, ["Away"], messages), 30, lambda: log.read_text()[-2000:])
            stats = stop(service, log)
        assert stats["received"] == 3 and phone.today("Away")["worn_min"] == 3.0, stats
    finally:
        uplink.close()


def test_a_snooze_waiting_for_its_device_waits_from_when_the_service_has_subscribed(tmp_path, broker):
    """The wait for a snoozed device's retained status (SNOOZE_WAIT_S, 5 s) counted from the CONNACK: through a link
    slow by 6 s the snooze was refused before the service had even subscribed, so before the status could come (an
    attack's probe). The wait, Home Assistant's settling and the summary's now count from the SUBACK."""
    uplink = SlowUplink(broker.port, delay_s=6.0)
    try:
        config = write_config(tmp_path, uplink, NOW_RULES)
        log = tmp_path / "alerts.log"
        queue_while_stopped(broker.port, config, log, [])
        publish(broker.port, [("posture/NewDev/status", gateway_status("NewDev", time.time(), True))], retain=True)
        publish(broker.port, [("posture/NewDev/alerts/snooze", {"minutes": 30, "sent_s": time.time()})])
        with running_alerts(config, log) as service:
            wait_for(lambda: "session present: True" in log.read_text(), 60, lambda: log.read_text()[-2000:])
            time.sleep(SNOOZE_WAIT_S + 1.0)  # past the wait, counted from the SUBACK, had the status not come
            stats = stop(service, log)
        assert stats["snoozes"] == 1 and stats["malformed"] == {}, stats
    finally:
        uplink.close()
