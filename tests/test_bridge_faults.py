"""Faults one message, one point or a fresh server used to cause (issue 12, items 1, 2, 6, 7 and parts of 8),
through real Mosquitto and InfluxDB 1.6.7: each test fails on the code before its fix."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_mqtt_influx import bridge_ready, influx_has_probe, start_bridge, wait_until_bridge_stores, write_config

from contract.validation import (
    MAX_AHEAD_S,
    MAX_PAYLOAD_BYTES,
    MAX_SPAN_S,
    SCHEMA_FILES,
    Malformed,
    load_validators,
    parse,
)
from posture.local_servers import InfluxDB1
from service_io.influx import InfluxSettings, PointsRefused, SettingsError, WriteError, make_writer, redact
from service_io.spool import Spool, SpoolError
from support.alerts import Phone, publish, running_alerts, stop, wait_online
from support.alerts import write_config as alerts_config
from support.day_messages import slouchy_minute
from support.mqtt import DB, client, start_or_fail, wait_for
from support.servers import SecuredInfluxDB1, write_line_protocol

T0_S = 1_700_000_000.0  # 2023-11-14: a plausible sensor time, in the past


class DeadLetters:
    """What the bridge dead-letters, as a user's tool subscribed to <prefix>/_deadletter would see it."""

    def __init__(self, port: int):
        self.got: list[dict] = []
        self.c = client(port)
        self.c.on_message = lambda c, u, m: self.got.append(json.loads(m.payload))
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *args: subscribed.set()
        self.c.subscribe("posture/_deadletter", qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def reasons(self) -> list[str]:
        return [d["reason"] for d in list(self.got)]

    def close(self) -> None:
        self.c.loop_stop()


def has_database(influx: InfluxDB1) -> bool:
    return [DB] in influx.query("SHOW DATABASES")["results"][0]["series"][0].get("values", [])


def minutes_stored(influx: InfluxDB1, device: str) -> int:
    if not has_database(influx):
        return 0
    rows = influx.rows(f"SELECT count(worn_s) FROM posture_minute WHERE device_id = '{device}'", DB)
    return rows[0]["count"] if rows else 0


def spooled(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def stop_bridge(bridge, log: Path) -> dict:
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(timeout=30) == 0, log.read_text()[-3000:]
    return json.loads(log.read_text().strip().splitlines()[-1])


# 1 -------------------------------------------------------------------------------------------------------------


def test_a_deeply_nested_payload_is_dead_lettered_and_the_bridge_goes_on(tmp_path, broker, influx):
    """`[` × 100 000 (over the size limit) and `[` × 5 000 (under it, too deep for Python's parser) once killed
    paho's thread: nothing after them was stored, and a restarted bridge met them again."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    log = tmp_path / "bridge.log"
    bridge = start_bridge(config, log)
    dead = DeadLetters(broker.port)
    try:
        bridge_ready(broker, influx)
        publish(broker.port, [("posture/deep/metrics", b"[" * 100_000), ("posture/deep/events", b"[" * 5_000),
                              ("posture/deep/metrics", slouchy_minute("deep", T0_S))])
        wait_for(lambda: minutes_stored(influx, "deep") == 1, 15,
                 lambda: f"the good minute after the deep ones; bridge log:\n{log.read_text()[-2000:]}")
        wait_for(lambda: len(dead.got) == 2, 10, lambda: f"2 dead letters, have {dead.reasons()}")
        assert bridge.poll() is None
        stats = stop_bridge(bridge, log)
    finally:
        dead.close()
        if bridge.poll() is None:
            bridge.kill()
    assert sorted(r.split(":")[0] for r in dead.reasons()) == ["not JSON", "too large"]
    assert stats["malformed"] == {"not JSON": 1, "too large": 1}
    # Kept in InfluxDB too, stored before the ack like any point: the whole payload up to 32 KiB.
    kept = {r["kind"]: r for r in influx.rows("SELECT * FROM posture_deadletter", DB)}
    assert set(kept) == {"not JSON", "too large"}
    assert kept["not JSON"]["payload"] == "[" * 5_000 and kept["not JSON"]["topic"] == "posture/deep/events"
    assert kept["too large"]["payload"] == "[" * 32 * 1024


# 2 -------------------------------------------------------------------------------------------------------------


def test_a_point_influxdb_refuses_is_dead_lettered_and_never_blocks_the_spool(tmp_path, broker, influx):
    """A field type conflict (400 partial write) once sat at the head of the spool for good: after the next
    outage nothing spooled behind it was ever stored."""
    write_line_protocol(influx, DB, f'posture_minute,device_id=other worn_s="text" {int(T0_S * 1000)}')
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    log = tmp_path / "bridge.log"
    bridge = start_bridge(config, log)
    dead = DeadLetters(broker.port)
    try:
        bridge_ready(broker, influx)
        publish(broker.port, [("posture/dev1/metrics", slouchy_minute("dev1", T0_S + 60 * k)) for k in range(5)])
        wait_for(lambda: dead.got, 15, lambda: f"a dead letter; bridge log:\n{log.read_text()[-2000:]}")
        influx.stop()  # an outage: what arrives now waits in the spool
        publish(broker.port, [("posture/dev2/status", {"schema": 1, "kind": "status", "device": "dev2",
                                                       "ts": int(T0_S * 1000) + k, "online": True})
                              for k in range(20)])
        wait_for(lambda: spooled(tmp_path / "bridge.spool") >= 20, 15, "20 points in the spool")
        influx.start()
        wait_for(lambda: influx.rows("SELECT count(online) FROM posture_status WHERE device_id = 'dev2'", DB)
                 == [{"time": 0, "count": 20}], 20,
                 lambda: f"the 20 spooled points in InfluxDB; bridge log:\n{log.read_text()[-2000:]}")
        stats = stop_bridge(bridge, log)
    finally:
        dead.close()
        if bridge.poll() is None:
            bridge.kill()
    assert len(dead.got) == 5 and stats["points_refused"] == 5  # every minute of dev1 conflicts with `other`
    assert all("field type conflict" in r for r in dead.reasons()), dead.reasons()
    assert all(d["topic"] == "posture/dev1/metrics" and d["payload"].startswith("posture_minute,device_id=dev1 ")
               for d in dead.got)
    assert "unavailable" in log.read_text()  # the outage was one, and said so
    kept = influx.rows("SELECT * FROM posture_deadletter", DB)  # and the refused lines are kept, with why
    assert len(kept) == 5 and all(r["kind"] == "refused by InfluxDB" and "field type conflict" in r["reason"]
                                  and r["payload"].startswith("posture_minute,device_id=dev1 ") for r in kept), kept


def test_bisection_stores_every_point_but_the_refused_ones(tmp_path, broker, influx):
    """Three refused lines among a hundred: the other 97 are stored, the three dead-lettered with the reason."""
    from bridge.service import Bridge
    from service_io.config import load_config

    write_line_protocol(influx, DB, f"posture_lean,device_id=x mean_lateral_deg=0.5 {int(T0_S * 1000)}")
    bridge = Bridge.open(load_config(write_config(tmp_path / "posture.toml", broker, influx.url), env={}))
    try:
        lines = [f"posture_lean,device_id=b,side=left mean_lateral_deg={'1.5' if k % 40 else '3i'},"
                 f"duration_s=2.0 {int(T0_S * 1000) + k}" for k in range(100)]
        assert bridge._write([("posture/b/events", line) for line in lines]) == 100
    finally:
        bridge.spool.close()
    assert bridge.stats.points_refused == 3 and bridge.stats.points_written == 97
    assert len(influx.rows("SELECT duration_s FROM posture_lean WHERE device_id = 'b'", DB)) == 97


def test_a_refused_point_is_dead_lettered_before_its_spool_row_or_message_goes(tmp_path, broker, influx):
    """The dead letter of a refused point waited for the next flush, while its spool row was deleted (or its message
    acknowledged) at once: a kill -9 in between left the line in neither the spool nor InfluxDB; draining a spool
    with many refused rows, every one of them."""
    from bridge.service import NO_MESSAGE, Bridge
    from service_io.config import load_config

    write_line_protocol(influx, DB, f"posture_lean,device_id=x mean_lateral_deg=0.5 {int(T0_S * 1000)}")
    config = load_config(write_config(tmp_path / "posture.toml", broker, influx.url), env={})
    lines = [f"posture_lean,device_id=b,side=left mean_lateral_deg={'3i' if k in (3, 7) else '1.5'},duration_s=2.0 "
             f"{int(T0_S * 1000) + k}" for k in range(10)]
    bridge = Bridge.open(config)
    try:
        bridge.spool.put([("posture/b/events", line.encode()) for line in lines[:5]])
        bridge._drain_spool()
        assert [r["payload"] for r in influx.rows("SELECT payload FROM posture_deadletter", DB)] == [lines[3]]
        with bridge._lock:  # a message's batch, as _on_message queues it
            bridge._pending.append((NO_MESSAGE, 1, bridge._connection, "posture/b/events", lines[5:]))
        bridge._store_pending()
    finally:
        bridge.spool.close()  # a kill -9 here: what a restarted bridge has is the spool and InfluxDB
    assert bridge.stats.points_refused == 2 and len(Spool(tmp_path / "bridge.spool")) == 0
    assert len(influx.rows("SELECT duration_s FROM posture_lean WHERE device_id = 'b'", DB)) == 8
    kept = influx.rows("SELECT * FROM posture_deadletter", DB)
    assert sorted(r["payload"] for r in kept) == [lines[3], lines[7]], kept
    assert all(r["kind"] == "refused by InfluxDB" and "field type conflict" in r["reason"] for r in kept)


def test_a_refused_points_dead_letter_is_spooled_if_influxdb_goes_meanwhile(tmp_path, broker, influx):
    """InfluxDB refuses a point, then is gone before its dead letter is written: the dead letter waits in the spool
    (the message it came from is acknowledged), and is stored once InfluxDB is back."""
    from bridge.service import Bridge
    from service_io.config import load_config

    write_line_protocol(influx, DB, f"posture_lean,device_id=x mean_lateral_deg=0.5 {int(T0_S * 1000)}")
    bridge = Bridge.open(load_config(write_config(tmp_path / "posture.toml", broker, influx.url), env={}))
    try:
        assert bridge._write([("posture/b/events", f"posture_lean,device_id=b,side=left mean_lateral_deg=3i "
                                                   f"{int(T0_S * 1000)}")]) == 1
        influx.stop()
        assert len(bridge._settle_dead_letters()) == 1  # not stored: the caller's to spool
        influx.start()
    finally:
        bridge.spool.close()


def test_write_errors_are_told_apart(tmp_path, influx):
    """An outage is retried; a refused point is not; wrong credentials or database name the config key."""
    line = f"posture_status,device_id=a online=true {int(T0_S * 1000)}"
    with pytest.raises(WriteError) as down:
        make_writer(InfluxSettings(url="http://127.0.0.1:9", api="v1")).write([line])
    assert not isinstance(down.value, (PointsRefused, SettingsError))
    writer = make_writer(influx.settings(DB))
    with pytest.raises(PointsRefused, match="unable to parse"):
        writer.write(["posture_status,device_id=a online=maybe 1"])
    writer.write([line])  # the writer is fine after a refusal
    # The database's default policy dropped: 1.x answers 500, which read as "InfluxDB unavailable" for as long as
    # nobody made one again, while /ping answered and every other database took writes.
    influx.query(f'DROP RETENTION POLICY "autogen" ON "{DB}"')
    with pytest.raises(SettingsError, match="influx.database 'posture' has no default retention policy"):
        writer.write([line])
    influx.query(f'CREATE RETENTION POLICY "autogen" ON "{DB}" DURATION INF REPLICATION 1 DEFAULT')
    writer.write([line])

    secured = start_or_fail(SecuredInfluxDB1(tmp_path / "influx-auth", admin=("root", "Root-Secret-1")))
    try:
        secured.query("CREATE USER \"writer\" WITH PASSWORD 'Writer-Secret-2'")
        with pytest.raises(SettingsError, match="influx.username") as wrong:
            make_writer(InfluxSettings(url=secured.url, database=DB, username="root", password="Bad-Secret-3")).write(
                [line])
        assert "Secret" not in str(wrong.value)
        # No database, and a user who may not create one: the key to fix, and not "unavailable".
        with pytest.raises(SettingsError, match="influx.database") as missing:
            make_writer(InfluxSettings(url=secured.url, database=DB, username="writer",
                                       password="Writer-Secret-2")).write([line])
        assert "Secret" not in str(missing.value) and "unavailable" not in str(missing.value)
    finally:
        secured.kill()


# 6 -------------------------------------------------------------------------------------------------------------


def test_an_event_ending_years_ahead_is_refused_and_the_day_goes_on(tmp_path, broker):
    """A slouch with a plausible ts but end_s ten years ahead moved the device's day to 2036: every later
    minute was "late" and no alert ever came."""
    rules = "[slouch]\nwindow_min = 5\nshare_pct = 50.0\nmin_worn_min = 3.0\n[limits]\nmax_delay_s = 1000000\n" \
            "quiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
    config = alerts_config(tmp_path, broker, rules)
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        phone = Phone(broker.port, device="Poisoned")
        try:
            wait_online(broker.port, service, log)
            start = time.time() // 60 * 60 - 600
            poison = {"schema": 1, "kind": "slouch", "device": "Poisoned", "ts": int(start * 1000), "start_s": start,
                      "end_s": start + 10 * 365 * 86400, "duration_s": 20.0, "peak_flexion_deg": 30.0,
                      "mean_flexion_deg": 25.0}
            publish(broker.port, [("posture/Poisoned/events", poison)])
            publish(broker.port, [("posture/Poisoned/metrics", slouchy_minute("Poisoned", start + 60 * k))
                                  for k in range(6)])
            wait_for(lambda: phone.kinds(), 20, lambda: "a slouch alert after the poison\n" + log.read_text()[-2000:])
            stats = stop(service, log)
        finally:
            phone.close()
    assert phone.kinds()[0] == "slouch"
    assert stats["malformed"] == {"time": 1}



def test_a_lone_surrogate_in_a_string_is_dead_lettered_and_neither_service_stops(tmp_path, broker, influx):
    """A status whose sensor_name, or a refused calibration whose message, held the JSON escape "\\ud800" passed
    the schemas; its line protocol (the bridge) and the alert's text mirror (the alert service) could not be encoded
    as UTF-8, and each service exited with the message unacknowledged: every restart met it again, and nothing
    published after it was stored or alerted."""
    t_s = time.time() // 60 * 60 - 600
    poison_status = (b'{"schema":1,"kind":"status","device":"evil","ts":%d,"online":true,"sensor_name":"x\\ud800"}'
                     % int(t_s * 1000))
    poison_event = (b'{"schema":1,"kind":"calibration","device":"evil","ts":%d,"t_s":%d,"status":"refused",'
                    b'"message":"bad \\ud800 bend","with_bend":false}' % (int(t_s * 1000), int(t_s)))
    rules = "[slouch]\nwindow_min = 5\nshare_pct = 50.0\nmin_worn_min = 3.0\n[limits]\nmax_delay_s = 1000000\n" \
            "quiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
    (tmp_path / "alerts").mkdir()
    alerts_log, bridge_log = tmp_path / "alerts.log", tmp_path / "bridge.log"
    with running_alerts(alerts_config(tmp_path / "alerts", broker, rules), alerts_log) as service:
        bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, influx.url), bridge_log)
        phone = Phone(broker.port, device="good")
        try:
            wait_online(broker.port, service, alerts_log)
            bridge_ready(broker, influx)
            publish(broker.port, [("posture/evil/status", poison_status), ("posture/evil/events", poison_event)])
            publish(broker.port, [("posture/good/metrics", slouchy_minute("good", t_s + 60 * k)) for k in range(6)])
            wait_for(lambda: minutes_stored(influx, "good") == 6, 20,
                     lambda: "the minutes after the poison stored\n" + bridge_log.read_text()[-2000:])
            wait_for(lambda: phone.kinds(), 20, lambda: "an alert after the poison\n" + alerts_log.read_text()[-2000:])
            bridge_stats, alert_stats = stop_bridge(bridge, bridge_log), stop(service, alerts_log)
        finally:
            phone.close()
            if bridge.poll() is None:
                bridge.kill()
    assert bridge_stats["malformed"] == {"not JSON": 2}
    assert alert_stats["malformed"] == {"not JSON": 2}
    assert phone.kinds()[0] == "slouch"


def test_a_minute_no_pipeline_makes_is_refused_by_both_services_and_the_next_one_counts(tmp_path, broker, influx):
    """A minute with 60 s slouched in 1 s worn, or 10**9 rotations, passed the schema: InfluxDB summed it into the Daily
    dashboard (1004 rotations on a day the report, which bounded each minute as it read it, said had 124) and the
    alert service into the day's totals and `today`. Refused by the contract now, by both, as any malformed message:
    dead-lettered, counted; the real minute after it is stored and counted."""
    t_s = time.time() // 60 * 60 - 600
    rules = "[slouch]\nwindow_min = 5\nshare_pct = 50.0\nmin_worn_min = 3.0\n[limits]\nmax_delay_s = 1000000\n" \
            "quiet_hours = \"\"\n[habit]\nsummary_time = \"\"\n"
    slouched = slouchy_minute("evil", t_s) | {"worn_s": 1.0, "sitting_s": 1.0, "slouch_s": 60.0}
    twisted = slouchy_minute("evil", t_s + 60) | {"rotations_left": 10 ** 9, "rotation_left_cumulative_deg": 30.0}
    (tmp_path / "alerts").mkdir()
    alerts_log, bridge_log = tmp_path / "alerts.log", tmp_path / "bridge.log"
    with running_alerts(alerts_config(tmp_path / "alerts", broker, rules), alerts_log) as service:
        bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, influx.url), bridge_log)
        phone = Phone(broker.port, device="evil", extra=("posture/evil/today",))
        dead = DeadLetters(broker.port)
        try:
            wait_online(broker.port, service, alerts_log)
            bridge_ready(broker, influx)
            publish(broker.port, [("posture/evil/metrics", slouched), ("posture/evil/metrics", twisted),
                                  ("posture/evil/metrics", slouchy_minute("evil", t_s + 120))])
            wait_for(lambda: minutes_stored(influx, "evil") == 1, 20,
                     lambda: "the real minute stored\n" + bridge_log.read_text()[-2000:])
            # `today` as of the real minute's end
            wait_for(lambda: phone.today("evil").get("ts") == int((t_s + 180) * 1000), 20,
                     lambda: f"the real minute in today: {phone.today('evil')}\n" + alerts_log.read_text()[-2000:])
            wait_for(lambda: len(dead.got) == 2, 10, lambda: f"2 dead letters, have {dead.reasons()}")
            bridge_stats, alert_stats = stop_bridge(bridge, bridge_log), stop(service, alerts_log)
        finally:
            phone.close()
            dead.close()
            if bridge.poll() is None:
                bridge.kill()
    assert bridge_stats["malformed"] == alert_stats["malformed"] == {"minute": 1, "schema": 1}
    assert sorted(dead.reasons()) == ["minute: slouch (slouch_s) 60 s is more than worn_s 1",
                                      "schema: data.rotations_left must be smaller than or equal to 1200"]
    stored = influx.rows("SELECT worn_s, slouch_s, rotations_left FROM posture_minute WHERE device_id = 'evil'", DB)
    assert [(r["worn_s"], r["slouch_s"], r["rotations_left"]) for r in stored] == [(60.0, 45.0, 0)]
    today = phone.today("evil")
    assert (today["worn_min"], today["slouch_min"], today["rotations_left"]) == (1.0, 0.8, 0)  # 45 s: tenths
    for said in ("minute: slouch", "schema: data.rotations_left"):  # each kind said once, in one line
        assert sum(said in line for line in bridge_log.read_text().splitlines()) == 1, said
        assert sum(said in line for line in alerts_log.read_text().splitlines()) == 1, said


# 7 -------------------------------------------------------------------------------------------------------------


def test_a_broker_that_lost_the_bridges_session_is_said(tmp_path, broker, influx):
    """A broker restarted without its store (Mosquitto's default config keeps none) forgets the bridge's session and
    what gateways published for it while it was away: only the broker's log said so. Not said at a first start, nor
    when the broker kept the session."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    log = tmp_path / "bridge.log"
    said = []
    for lost in (False, False, True):
        if lost:
            broker.stop()
            shutil.rmtree(broker.workdir / "data")
            broker.start()
        before = log.read_text().count("bridge: connected to MQTT") if log.exists() else 0
        bridge = subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", "bridge", "--config", str(config)],
                                  stdout=open(log, "a"), stderr=subprocess.STDOUT)
        try:
            wait_for(lambda n=before: log.read_text().count("bridge: connected to MQTT") > n, 30,
                     "the bridge to connect")
            stop_bridge(bridge, log)
        finally:
            if bridge.poll() is None:
                bridge.kill()
        said.append(log.read_text().count("the broker holds no session of 'posture-bridge'"))
    assert said == [0, 0, 1], log.read_text()[-3000:]


def test_first_run_against_a_fresh_influxdb_creates_the_database(tmp_path, broker):
    """A fresh InfluxDB 1.x has no database: the bridge once spooled for ever, saying "unavailable"."""
    fresh = start_or_fail(InfluxDB1(tmp_path / "fresh"))
    log = tmp_path / "bridge.log"
    try:
        bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, fresh.url), log)
        try:
            probe = client(broker.port)
            wait_until_bridge_stores(probe, lambda: has_database(fresh) and influx_has_probe(fresh)())
            probe.loop_stop()
            stop_bridge(bridge, log)
        finally:
            if bridge.poll() is None:
                bridge.kill()
    finally:
        fresh.kill()
    assert "unavailable" not in log.read_text(), log.read_text()[-2000:]


def test_a_database_the_user_may_not_create_is_one_line_naming_the_key(tmp_path, broker):
    """No database and a user without the right to create one: one line naming influx.database, the points
    kept in the spool, and stored once an administrator creates the database."""
    secured = start_or_fail(SecuredInfluxDB1(tmp_path / "influx-auth", admin=("root", "Root-Secret-1")))
    log = tmp_path / "bridge.log"
    try:
        secured.query("CREATE USER \"writer\" WITH PASSWORD 'Writer-Secret-2'")
        config = write_config(tmp_path / "posture.toml", broker, secured.url)
        config.write_text(config.read_text().replace("[influx]\n", '[influx]\nusername = "writer"\n'
                                                                    'password = "Writer-Secret-2"\n'))
        bridge = start_bridge(config, log)
        probe = client(broker.port)
        try:
            # Probes until the bridge has a session and tries to store one: then it says what to fix.
            wait_until_bridge_stores(probe, lambda: "influx.database" in log.read_text() or bridge.poll() is not None)
            assert bridge.poll() is None, log.read_text()[-2000:]
            wait_for(lambda: spooled(tmp_path / "bridge.spool") >= 1, 10, "the probes in the spool")
            secured.create_database(DB)
            secured.query(f'GRANT WRITE ON "{DB}" TO "writer"')
            wait_for(influx_has_probe(secured), 20,
                     lambda: f"the spooled probes stored; bridge log:\n{log.read_text()[-2000:]}")
            stop_bridge(bridge, log)
        finally:
            if bridge.poll() is None:
                bridge.kill()
            probe.loop_stop()
    finally:
        secured.kill()
    text = log.read_text()
    assert "unavailable" not in text and "Secret" not in text, text[-2000:]
    assert text.count("influx.database") == 1, text[-2000:]  # one line, not one per retry


# 8 (parts) and the checks behind 1, 2 and 6 -------------------------------------------------------------------------


def metrics_body(**changes) -> bytes:
    return json.dumps(slouchy_minute("d", T0_S) | changes).encode()


@pytest.mark.parametrize("body, reason", [
    (b"[" * 100_000, "too large"),
    (b" " * (MAX_PAYLOAD_BYTES + 1), "too large"),
    (b"[" * 5_000, "not JSON"),
    (metrics_body().replace(b'"worn_s": 60.0', b'"worn_s": 1e400'), "not JSON"),  # inf to Python, not to us
    (metrics_body(lost_samples=2 ** 63), "schema"),  # beyond int64: InfluxDB would refuse the line
    (metrics_body(ts=10 ** 19), "schema"),  # beyond what InfluxDB can store (1677–2262)
    (metrics_body(ts=-1), "schema"),
    (metrics_body(flexion_mean_deg=720.0), "schema"),
    (metrics_body(worn_s=-1.0), "schema"),
    (metrics_body(ts=int((T0_S + 3 * 86400) * 1000), minute_start_s=T0_S + 3 * 86400,
                  sitting_since_s=T0_S + 3 * 86400), "time"),  # from the future of the receiver's clock
    (metrics_body(minute_start_s=T0_S + 2 * 86400), "time"),  # its times disagree with its ts
])
def test_payloads_are_refused_with_a_reason(body, reason):
    with pytest.raises(Malformed, match=f"^{reason}:"):
        parse("metrics", body, load_validators(), now_s=T0_S + 3600)


def test_event_times_lie_within_a_day_of_ts():
    validators = load_validators()
    good = {"schema": 1, "kind": "slouch", "device": "d", "ts": int(T0_S * 1000), "start_s": T0_S,
            "end_s": T0_S + 20, "duration_s": 20.0, "peak_flexion_deg": 30.0, "mean_flexion_deg": 25.0}
    assert parse("events", json.dumps(good).encode(), validators, now_s=T0_S)
    for bad in ({"end_s": T0_S + 10 * 365 * 86400}, {"end_s": T0_S - 5}, {"end_s": T0_S + MAX_SPAN_S + 1},
                {"start_s": T0_S - MAX_SPAN_S - 10, "end_s": T0_S - MAX_SPAN_S - 5}):
        with pytest.raises(Malformed, match="^time:"):
            parse("events", json.dumps(good | bad).encode(), validators, now_s=T0_S)
    ahead = good | {"ts": int((T0_S + MAX_AHEAD_S + 60) * 1000), "start_s": T0_S + MAX_AHEAD_S + 60,
                    "end_s": T0_S + MAX_AHEAD_S + 80}
    with pytest.raises(Malformed, match="^time:"):
        parse("events", json.dumps(ahead).encode(), validators, now_s=T0_S)


def test_time_bounds_are_one_range_in_every_schema():
    """ts (ms) and every time field (s) share one range of sensor times across the schemas the bridge reads."""
    from importlib import resources

    ranges = set()
    for name in SCHEMA_FILES.values():
        properties = json.loads((resources.files("contract") / "schemas" / name).read_text())["properties"]
        ranges.add((properties["ts"]["minimum"], properties["ts"]["maximum"]))
        for field in ("minute_start_s", "sitting_since_s", "slouching_since_s", "leaning_since_s", "start_s", "end_s",
                      "t_s"):
            if field in properties:
                ranges.add((properties[field]["minimum"] * 1000, properties[field]["maximum"] * 1000))
    assert len(ranges) == 1, ranges


def test_no_password_in_an_influx_url_is_ever_printed(tmp_path, influx):
    url = influx.url.replace("http://", "http://poster:Url-Secret-5@")
    assert redact(url) == influx.url.replace("http://", "http://***@") and "Secret" not in repr(InfluxSettings(url=url))
    make_writer(InfluxSettings(url=url, database=DB, api="v1")).write(  # credentials in the URL work, too
        [f"posture_status,device_id=u online=true {int(T0_S * 1000)}"])
    closed = "http://poster:Url-Secret-5@127.0.0.1:9"
    for api in ("auto", "v1", "v2"):
        with pytest.raises(WriteError) as down:
            make_writer(InfluxSettings(url=closed, api=api)).write(["m f=1 1"])
        assert "Secret" not in str(down.value), down.value


def test_the_spool_shrinks_once_drained(tmp_path):
    def size() -> int:
        return sum(f.stat().st_size for f in tmp_path.glob("s.spool*"))

    spool = Spool(tmp_path / "s.spool")
    for _ in range(20):
        spool.put([("", b"x" * 1000)] * 1000)
    full = size()
    while rows := spool.peek(5000):
        spool.delete([r[0] for r in rows])
    assert size() < full / 10, (full, size())
    spool.close()


def test_a_full_spool_deletes_expendable_items_first(tmp_path):
    """Beyond max_items the expendable items go first (the oldest of them, new ones too), and only then the oldest of
    the rest: what must not be lost is never pushed out while something expendable is left."""
    spool = Spool(tmp_path / "s.spool", max_items=6)
    spool.put([("keep", b"k1"), ("live", b"l1", None, True), ("keep", b"k2"), ("live", b"l2", None, True)])
    spool.put([("keep", b"k3"), ("keep", b"k4"), ("keep", b"k5")])  # 7: the oldest expendable goes
    assert [r[2] for r in spool.peek(10)] == [b"k1", b"k2", b"l2", b"k3", b"k4", b"k5"]
    spool.put([("live", b"l3", None, True), ("keep", b"k6")])  # 8: l2, then the new l3 itself
    assert [r[2] for r in spool.peek(10)] == [b"k1", b"k2", b"k3", b"k4", b"k5", b"k6"]
    assert (spool.dropped, spool.dropped_expendable) == (3, 3)
    spool.put([("keep", b"k7")])  # nothing expendable left: the oldest
    assert [r[2] for r in spool.peek(10)] == [b"k2", b"k3", b"k4", b"k5", b"k6", b"k7"]
    assert (spool.dropped, spool.dropped_expendable) == (4, 3)
    spool.close()


def test_expired_items_are_deleted_and_old_spool_files_still_open(tmp_path):
    path = tmp_path / "s.spool"
    with sqlite3.connect(path) as db:  # a spool file from before expiry and expendable items
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, body BLOB NOT NULL)")
        db.execute("INSERT INTO items (key, body) VALUES ('old', x'01')")
    db.close()
    spool = Spool(path, max_items=4)
    spool.put([("soon", b"s", 100.0, True), ("later", b"l", 200.0), ("never", b"n", None, True)])
    assert spool.expire(99.0) == 0 and spool.expire(150.0) == 1
    assert [(r[1], r[3]) for r in spool.peek(10)] == [("old", None), ("later", 200.0), ("never", None)]
    spool.put([("new", b"x"), ("new", b"y")])  # full: the expendable one goes, not the old item
    assert [r[1] for r in spool.peek(10)] == ["old", "later", "new", "new"]
    assert spool.dropped == spool.dropped_expendable == 1
    spool.close()


def test_a_full_disk_under_the_spool_is_one_line(tmp_path):
    spool = Spool(tmp_path / "s.spool")
    spool._db.execute("PRAGMA max_page_count = 30")  # as a full disk: SQLite answers SQLITE_FULL
    with pytest.raises(SpoolError, match=r"s\.spool.*full") as full:
        spool.put([("", b"x" * 1000)] * 1000)
    assert isinstance(full.value, OSError) and "\n" not in str(full.value)
    assert len(spool) == 0  # nothing half-written
    spool.close()


def test_when_it_can_neither_store_nor_spool_the_bridge_keeps_messages_unacknowledged(tmp_path, broker):
    """InfluxDB down and the disk full: nothing is acknowledged, one line is logged, and all of it is stored
    once room returns."""
    from bridge.service import Bridge
    from service_io.config import load_config

    influx = InfluxDB1(tmp_path / "influxdb")  # not started yet: an outage
    config = load_config(write_config(tmp_path / "posture.toml", broker, influx.url), env={})
    bridge = Bridge.open(config)
    pages = bridge.spool._db.execute("PRAGMA page_count").fetchone()[0]
    bridge.spool._db.execute(f"PRAGMA max_page_count = {pages}")  # as a full disk
    runner = threading.Thread(target=bridge.run)
    runner.start()
    try:
        wait_for(bridge.connected.is_set, 10, "the bridge to connect")
        publish(broker.port, [("posture/full/metrics", slouchy_minute("full", T0_S + 60 * k)) for k in range(50)])
        # Unacknowledged, they stop at the broker's in-flight window (Mosquitto: 20) until some are stored.
        wait_for(lambda: bridge.stats.spool_failures >= 3, 10, "the bridge to fail to spool, and try again")
        assert len(bridge.spool) == 0 and 0 < bridge.stats.received < 50
        bridge.spool._db.execute("PRAGMA max_page_count = 1073741823")  # room again …
        start_or_fail(influx)
        influx.create_database(DB)  # … and InfluxDB back
        wait_for(lambda: minutes_stored(influx, "full") == 50, 20, "the 50 minutes stored")
    finally:
        bridge.stop_event.set()
        runner.join(30)
        influx.kill()


def test_a_spool_that_cannot_delete_is_sent_whole_each_point_once_and_emptied_once_it_can(tmp_path, broker):
    """A full disk refuses SQLite's deletes too (they need room in its log), and the spool may be what filled it. On a
    12 MB tmpfs that held 10,513 spooled points when InfluxDB came back, the bridge wrote the spool's first batch (5,000
    points) again five times a second and the other 5,513 never, for as long as the disk stayed full (1.5 million
    writes in 2 minutes). Here deletes are refused as a full disk refuses them, batches are 20 points: each of the 100
    spooled minutes is written once, and the spool is emptied once deletes work again."""
    from bridge.service import Bridge
    from service_io.config import load_config

    influx = InfluxDB1(tmp_path / "influxdb")  # not started yet: an outage
    path = write_config(tmp_path / "posture.toml", broker, influx.url)
    path.write_text(path.read_text().replace("[bridge]\n", "[bridge]\nbatch_points = 20\n"))
    bridge = Bridge.open(load_config(path, env={}))
    runner = threading.Thread(target=bridge.run)
    runner.start()
    try:
        wait_for(bridge.connected.is_set, 10, "the bridge to connect")
        publish(broker.port, [("posture/full/metrics", slouchy_minute("full", T0_S + 60 * k)) for k in range(100)])
        wait_for(lambda: bridge.stats.points_spooled == 100, 30, lambda: f"100 minutes spooled: {bridge.stats}")
        with bridge.spool._lock:  # deletes refused, as a full disk refuses them (SQLITE_FULL, here from a trigger)
            bridge.spool._db.execute("CREATE TEMP TRIGGER full BEFORE DELETE ON main.items "
                                     "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        start_or_fail(influx)
        wait_for(lambda: minutes_stored(influx, "full") == 100, 30,
                 lambda: f"the 100 minutes stored, have {minutes_stored(influx, 'full')}: {bridge.stats}")
        time.sleep(1.0)  # a batch written again would show now
        assert bridge.stats.points_written == 100 and len(bridge.spool) == 100, bridge.stats
        with bridge.spool._lock:
            bridge.spool._db.execute("DROP TRIGGER full")  # room again
        wait_for(lambda: len(bridge.spool) == 0, 30, "the spool emptied")
        assert bridge.stats.points_written == 100, bridge.stats
    finally:
        bridge.stop_event.set()
        runner.join(30)
        influx.kill()


def test_live_points_do_not_pile_up_in_memory_while_nothing_can_be_stored(tmp_path, broker):
    """InfluxDB down and the disk full (InfluxDB on that disk): the unacknowledged messages stop at the broker's
    window, but live states (QoS 0) have none; they were kept in memory for the next try, all of them, for as long
    as it lasted, and each try wrote and spooled every one again. Now dropped and counted, as best effort is."""
    from bridge.service import Bridge
    from contract.messages import payload
    from pipeline.events import LiveState
    from service_io.config import load_config

    influx = InfluxDB1(tmp_path / "influxdb")  # not started: an outage
    bridge = Bridge.open(load_config(write_config(tmp_path / "posture.toml", broker, influx.url), env={}))
    pages = bridge.spool._db.execute("PRAGMA page_count").fetchone()[0]
    bridge.spool._db.execute(f"PRAGMA max_page_count = {pages}")  # as a full disk
    runner = threading.Thread(target=bridge.run)
    runner.start()
    now_s = time.time()
    try:
        wait_for(bridge.connected.is_set, 10, "the bridge to connect")
        live = client(broker.port)
        for k in range(200):
            state = LiveState(t_s=now_s + k / 100, calibration="calibrated", flexion_deg=5.0, lateral_deg=0.0,
                              rotation_deg=0.0, activity="sitting")
            live.publish("posture/Live/live", json.dumps(payload("Live", state)), qos=0)
        wait_for(lambda: bridge.stats.received >= 200 and bridge.stats.spool_failures, 20,
                 "the live states received, and a try to spool them")
        live.loop_stop()
        held = 0
        for _ in range(20):  # over a try and its pause
            with bridge._lock:
                held = max(held, len(bridge._pending))
            time.sleep(0.1)
        # The "full" spool may still take a first small write into its last page's free room (seen once in CI):
        # every state is spooled or dropped and counted, none held in memory.
        assert held == 0 and bridge.stats.live_dropped + bridge.stats.points_spooled == 200, (held, bridge.stats)
        # What the last page's free room holds, at most (a point's row is over 64 bytes; 22 were spooled once in CI,
        # where the bound was 10, though the disk was full as it should be).
        page_bytes = bridge.spool._db.execute("PRAGMA page_size").fetchone()[0]
        assert bridge.stats.points_spooled <= page_bytes // 64, bridge.stats
    finally:
        bridge.stop_event.set()
        runner.join(30)


# influx.url with a port that is no port ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["{port}:{port}", "${{INFLUX_PORT}}"], ids=["pasted-twice", "unexpanded-variable"])
def test_an_influx_url_whose_port_is_no_port_is_refused_at_start_in_one_line(tmp_path, broker, influx, port):
    """A port pasted twice (`http://127.0.0.1:8086:8086`) passed the start and made an outage that never ends (every
    write "InfluxDB unavailable", spooled); a template variable left unexpanded (`http://127.0.0.1:${INFLUX_PORT}`)
    passed it too, and the bridge died at its first message with a traceback (http.client.InvalidURL, exit 1) —
    under a supervisor, restarted to die again — as did `posture report`. Now both stop at once, exit 2, with one
    line naming influx.url."""
    import subprocess
    import sys

    bad_url = f"http://{influx.host}:" + port.format(port=influx.port)
    config = write_config(tmp_path / "posture.toml", broker, bad_url)
    log = tmp_path / "bridge.log"
    bridge = start_bridge(config, log)
    try:
        sender = client(broker.port)
        deadline = time.monotonic() + 20
        while bridge.poll() is None and time.monotonic() < deadline:  # its session exists once it has connected
            sender.publish("posture/dev1/metrics", json.dumps(slouchy_minute("dev1", T0_S)), qos=1)
            time.sleep(0.5)
        sender.loop_stop()
        assert bridge.poll() is not None, f"the bridge runs on with influx.url {bad_url!r}:\n{log.read_text()[-2000:]}"
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    lines = log.read_text().strip().splitlines()
    assert bridge.returncode == 2 and len(lines) == 1 and "influx.url" in lines[0], log.read_text()[-2000:]
    report = subprocess.run([sys.executable, "-m", "posture.cli", "report", "--config", str(config), "--device", "dev1",
                             "--day", "2023-11-14", "--out", str(tmp_path / "r.png")],
                            capture_output=True, text=True, timeout=60)
    said = report.stderr.strip().splitlines()
    assert report.returncode == 2 and len(said) == 1 and "influx.url" in said[0], report.stderr[-2000:]
    assert minutes_stored(influx, "dev1") == 0
