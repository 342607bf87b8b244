"""The live stream and episode starts (issue 13) through real Mosquitto and InfluxDB 1.6.7: live states in a
retention policy of their own that the bridge creates, spooled through an outage into that policy, an episode's
start and end as one point whatever their order, and the gateway's live topic retained only on change."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions
from test_bridge_faults import has_database, spooled, stop_bridge
from test_mqtt_influx import bridge_ready, influx_has_probe, start_bridge, wait_until_bridge_stores, write_config

from contract.messages import payload
from gateway.publisher import DevicePublisher
from pipeline.events import EpisodeStart, LeanInterval, LiveState, SlouchEpisode
from posture.local_servers import InfluxDB1
from service_io import influx as influx_module
from service_io.config import Config, load_config
from service_io.influx import InfluxSettings, SettingsError, live_bucket, make_writer
from support.alerts import publish
from support.day_messages import slouchy_minute
from support.mqtt import DB, client, start_or_fail, wait_for
from support.servers import SecuredInfluxDB1

# Live points are kept 7 days: they must be recent, or InfluxDB drops them. Whole seconds, a minute back.
T0_S = float(int(time.time()) - 3600)
LIVE = 'FROM "live"."posture_live"'
NO_BROKER = SimpleNamespace(port=1)  # for a bridge whose store is called directly: it never connects


def state(t_s: float, slouching_since_s: float | None = None, flexion_deg: float = 5.0) -> LiveState:
    return LiveState(t_s=t_s, calibration="calibrated", flexion_deg=flexion_deg, lateral_deg=-1.5, rotation_deg=3.0,
                     activity="sitting", slouching_since_s=slouching_since_s, sitting_since_s=T0_S - 600.0)


def live_rows(influx: InfluxDB1, device: str) -> list[dict]:
    if not has_database(influx):
        return []
    if not any(r[0] == "live" for r in policies(influx)):
        return []
    return influx.rows(f"SELECT * {LIVE} WHERE device_id = '{device}'", DB)


def policies(influx: InfluxDB1) -> list[list]:
    """SHOW RETENTION POLICIES: [name, duration, shard group duration, replicas, default] each."""
    return influx.query(f'SHOW RETENTION POLICIES ON "{DB}"')["results"][0]["series"][0]["values"]


def influx_stats(server: InfluxDB1, module: str) -> dict:
    """SHOW STATS for one module since the server started (httpd: requests by kind; write: points asked to be
    written, and dropped as beyond their retention policy)."""
    for series in server.query("SHOW STATS")["results"][0]["series"]:
        if series["name"] == module:
            return dict(zip(series["columns"], series["values"][0]))
    raise AssertionError(f"no {module} in SHOW STATS")


def spool_keys(path: Path) -> list[tuple[str, bytes]]:
    """(topic, line) of what the bridge's spool holds, oldest first."""
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT key, body FROM items ORDER BY id").fetchall()
    finally:
        db.close()


def open_publisher(tmp_path: Path, port: int, device: str) -> DevicePublisher:
    config = load_config(None, env={}, overrides={"mqtt": {"port": port}})
    publisher = DevicePublisher.open(config, device, tmp_path / "gateway-spool")
    publisher.start()
    wait_for(publisher.connected.is_set, 10, "the gateway's publisher to connect")
    return publisher


def send_events(publisher: DevicePublisher, items: list) -> None:
    publisher.submit(items)
    wait_for(lambda: (publisher.pump(), publisher.backlog == 0)[1], 10, "the broker to take the events")


class LiveWatcher:
    """A subscriber to one device's live topic that sees the retain flag as the gateway sent it (MQTT 5
    retain-as-published: else a broker clears it for subscribers already there)."""

    def __init__(self, port: int, device: str):
        self.got: list[tuple[bool, dict]] = []
        self.c = client(port)
        self.c.on_message = lambda c, u, m: self.got.append((bool(m.retain), json.loads(m.payload)))
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *args: subscribed.set()
        self.c.subscribe(f"posture/{device}/live", options=SubscribeOptions(qos=0, retainAsPublished=True))
        assert subscribed.wait(10), "no SUBACK"

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_live_states_are_stored_in_their_own_policy_which_the_bridge_creates(tmp_path, broker):
    """A fresh InfluxDB (no database): the bridge creates the database, then the policy `live` (7 d), says so
    once, and the live states go there — not into the default policy, where the minutes go."""
    fresh = start_or_fail(InfluxDB1(tmp_path / "fresh"))
    log = tmp_path / "bridge.log"
    publisher = None
    try:
        bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, fresh.url), log)
        try:
            probe = client(broker.port)
            wait_until_bridge_stores(probe, lambda: has_database(fresh) and influx_has_probe(fresh)())
            probe.loop_stop()
            publisher = open_publisher(tmp_path, broker.port, "Desk")
            for k in range(10):
                publisher.publish_live(state(T0_S + k, slouching_since_s=T0_S + 2.0 if k >= 7 else None,
                                             flexion_deg=5.0 + 3 * k))
            publish(broker.port, [("posture/Desk/metrics", slouchy_minute("Desk", T0_S))])
            wait_for(lambda: len(live_rows(fresh, "Desk")) == 10, 20,
                     lambda: f"10 live points; have {len(live_rows(fresh, 'Desk'))}; log:\n{log.read_text()[-2000:]}")
            wait_for(lambda: fresh.rows("SELECT count(worn_s) FROM posture_minute", DB), 10, "the minute")
            stats = stop_bridge(bridge, log)
        finally:
            if bridge.poll() is None:
                bridge.kill()
        rows = live_rows(fresh, "Desk")
        by_policy = {p[0]: p for p in policies(fresh)}
        in_default = fresh.rows("SELECT count(calibration) FROM posture_live", DB)
        minutes_in_live = fresh.rows('SELECT count(worn_s) FROM "live"."posture_minute"', DB)
    finally:
        if publisher is not None:
            publisher.stop()
        fresh.kill()
    assert [r["time"] for r in rows] == [int((T0_S + k) * 1000) for k in range(10)]
    assert [r["flexion_deg"] for r in rows] == [5.0 + 3 * k for k in range(10)]
    assert {r["calibration"] for r in rows} == {"calibrated"} and {r["activity"] for r in rows} == {"sitting"}
    assert [r["slouching_since_s"] for r in rows] == [None] * 7 + [T0_S + 2.0] * 3  # what slouch shading reads
    assert all(r.get("lean_side") is None and r["sitting_since_s"] == T0_S - 600.0 for r in rows)
    assert by_policy["live"][1:] == ["168h0m0s", "24h0m0s", 1, False]  # 7 days, not the default
    assert by_policy["autogen"][4] is True
    assert in_default == [] and minutes_in_live == []
    assert stats["points_refused"] == 0 and stats["malformed"] == {}
    text = log.read_text()
    assert text.count("created InfluxDB retention policy 'live'") == 1, text[-2000:]
    assert "unavailable" not in text, text[-2000:]


def test_live_points_spooled_in_an_outage_are_stored_in_their_policy(tmp_path, broker, influx):
    log = tmp_path / "bridge.log"
    bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, influx.url), log)
    publisher = None
    try:
        bridge_ready(broker, influx)
        publisher = open_publisher(tmp_path, broker.port, "Desk")
        influx.stop()  # an outage: what arrives now waits in the bridge's spool
        for k in range(5):
            publisher.publish_live(state(T0_S + k))
        publish(broker.port, [("posture/Desk/metrics", slouchy_minute("Desk", T0_S))])
        wait_for(lambda: spooled(tmp_path / "bridge.spool") >= 6, 20,
                 lambda: f"6 points in the spool; log:\n{log.read_text()[-2000:]}")
        influx.start()
        wait_for(lambda: len(live_rows(influx, "Desk")) == 5, 30,
                 lambda: f"the 5 spooled live points in InfluxDB; log:\n{log.read_text()[-2000:]}")
        wait_for(lambda: influx.rows("SELECT count(worn_s) FROM posture_minute WHERE device_id = 'Desk'", DB), 10,
                 "the spooled minute")
        wait_for(lambda: spooled(tmp_path / "bridge.spool") == 0, 10, "the spool to drain")
        stats = stop_bridge(bridge, log)
    finally:
        if publisher is not None:
            publisher.stop()
        if bridge.poll() is None:
            bridge.kill()
    assert influx.rows("SELECT count(calibration) FROM posture_live", DB) == []  # none in the default policy
    assert influx.rows('SELECT count(worn_s) FROM "live"."posture_minute"', DB) == []
    assert stats["points_spooled"] >= 6 and stats["points_refused"] == 0
    assert "unavailable" in log.read_text()


def test_a_full_spool_deletes_live_points_first_and_never_sends_expired_ones(tmp_path, broker, influx):
    """An outage with bridge.spool_max_points = 40, and 30 points that must not be lost among 40 live ones: the 30
    are all stored afterwards, and the oldest live points were deleted to make room (live_evicted), not them. Live
    points past influx.live_retention (here 1h) are deleted from the spool and never sent: InfluxDB is asked to
    write the points that were left in the spool and nothing else, and drops none as beyond its retention."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    config.write_text(config.read_text().replace("[bridge]\n", "[bridge]\nspool_max_points = 40\n")
                      .replace("[influx]\n", '[influx]\nlive_retention = "1h"\n'))
    log, spool = tmp_path / "bridge.log", tmp_path / "bridge.spool"
    now_s = float(int(time.time()))
    fresh = [now_s - 60 + k for k in range(40)]
    live = [("posture/Desk/live", payload("Desk", state(t))) for t in fresh]
    keep = [("posture/Keep/status", {"schema": 1, "kind": "status", "device": "Keep",
                                     "ts": int((now_s - 60) * 1000) + k, "online": True}) for k in range(30)]
    bridge = start_bridge(config, log)
    try:
        bridge_ready(broker, influx)
        influx.stop()  # an outage
        # Past their retention as they arrive: spooled (InfluxDB is down), then deleted unsent.
        publish(broker.port, [("posture/Old/live", payload("Old", state(now_s - 3601 - k))) for k in range(5)])
        wait_for(lambda: "deleted from the spool, not sent" in log.read_text(), 20,
                 lambda: f"the expired live points deleted; log:\n{log.read_text()[-2000:]}")
        publish(broker.port, live[:20] + keep[:15] + live[20:] + keep[15:])
        last_live = f" {int(fresh[-1] * 1000)}".encode()

        def all_in() -> bool:
            rows = spool_keys(spool)
            return (sum(key == "posture/Keep/status" for key, _ in rows) == 30
                    and any(body.endswith(last_live) for _, body in rows))

        wait_for(all_in, 20, lambda: f"the 30 statuses and the last live point spooled; have "
                                     f"{len(spool_keys(spool))} rows; log:\n{log.read_text()[-2000:]}")
        in_spool = spool_keys(spool)
        live_in_spool = sum(key.endswith("/live") for key, _ in in_spool)
        influx.start()
        wait_for(lambda: spooled(spool) == 0, 30, lambda: f"the spool to drain; log:\n{log.read_text()[-2000:]}")
        stats = stop_bridge(bridge, log)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    assert len(in_spool) == 40  # the cap, with 30 + 40 (+ 5 expired) points arrived
    assert influx.rows("SELECT count(online) FROM posture_status WHERE device_id = 'Keep'", DB)[0]["count"] == 30
    stored = live_rows(influx, "Desk")
    assert len(stored) == live_in_spool and [r["time"] for r in stored] == [int(t * 1000) for t in fresh[-len(stored):]]
    assert stats["live_evicted"] == 40 - len(stored) >= 30 - (len(in_spool) - live_in_spool - 30)
    assert stats["points_evicted"] == 0 and stats["live_expired"] == 5 and stats["points_refused"] == 0
    assert live_rows(influx, "Old") == []
    written = influx_stats(influx, "write")  # since InfluxDB started again
    assert written["pointReqLocal"] == len(in_spool) and written["writeDrop"] == 0, written
    text = log.read_text()
    assert text.count("live points deleted to keep room") == 1 and "oldest points were deleted" not in text, text


def complete(influx: InfluxDB1, measurement: str) -> int:
    """Episodes with both the end's duration and the start's confirmation."""
    rows = influx.rows(f"SELECT duration_s, confirmed_after_s FROM {measurement}", DB)
    return sum(1 for r in rows if r["duration_s"] is not None and r["confirmed_after_s"] is not None)


def test_an_episode_start_and_its_end_are_one_point_in_any_order(tmp_path, broker, influx):
    """Start and end, each twice (a gateway restarted and sent them again), in either order: one point per
    episode, holding the end's values and the start's confirmed_after_s; episodes counted by duration_s."""
    slouch = SlouchEpisode(T0_S + 10.123, T0_S + 40.5, 28.0, 24.0)
    lean = LeanInterval(T0_S + 60.0, T0_S + 75.0, "left", -9.0)
    starts = {"slouch": EpisodeStart("slouch", slouch.start_s, 5.0),
              "lean": EpisodeStart("lean", lean.start_s, 5.0, side="left")}
    ends = {"slouch": slouch, "lean": lean}
    messages = []
    for device, order in (("StartFirst", ("start", "end")), ("EndFirst", ("end", "start"))):
        for _ in range(2):
            for episode in ("slouch", "lean"):
                for which in order:
                    item = starts[episode] if which == "start" else ends[episode]
                    messages.append((f"posture/{device}/events", payload(device, item)))
    log = tmp_path / "bridge.log"
    bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, influx.url), log)
    try:
        bridge_ready(broker, influx)
        publish(broker.port, messages)
        wait_for(lambda: complete(influx, "posture_slouch") == complete(influx, "posture_lean") == 2, 20,
                 lambda: f"the episodes stored; log:\n{log.read_text()[-2000:]}")
        stop_bridge(bridge, log)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    for device in ("StartFirst", "EndFirst"):
        slouches = influx.rows(f"SELECT * FROM posture_slouch WHERE device_id = '{device}'", DB)
        assert slouches == [{"time": int(round(slouch.start_s * 1000)), "confirmed_after_s": 5.0, "device_id": device,
                             "duration_s": pytest.approx(30.377), "mean_flexion_deg": 24.0,
                             "peak_flexion_deg": 28.0}], slouches
        leans = influx.rows(f"SELECT * FROM posture_lean WHERE device_id = '{device}'", DB)
        assert len(leans) == 1 and leans[0]["side"] == "left" and leans[0]["confirmed_after_s"] == 5.0
        assert leans[0]["duration_s"] == 15.0 and leans[0]["mean_lateral_deg"] == -9.0
    counted = influx.rows("SELECT count(duration_s) FROM posture_slouch GROUP BY device_id", DB)
    assert [r["count"] for r in counted] == [1, 1]


def test_an_episode_still_going_on_is_a_point_without_duration(tmp_path, influx):
    """Only the start arrived (the episode goes on, or a gateway crash lost its end): the point has no duration_s,
    so counting duration_s does not count it, counting confirmed_after_s does."""
    from bridge.service import Bridge

    bridge = Bridge.open(load_config(write_config(tmp_path / "posture.toml", NO_BROKER,
                                                  influx.url), env={}))
    try:
        from contract.influx_schema import to_line_protocol

        line = to_line_protocol(payload("Open", EpisodeStart("slouch", T0_S, 5.0)))[0]
        assert bridge._store([("posture/Open/events", line)]) == []
    finally:
        bridge.spool.close()
    assert influx.rows("SELECT count(duration_s) FROM posture_slouch", DB) == []
    assert influx.rows("SELECT count(confirmed_after_s) FROM posture_slouch", DB)[0]["count"] == 1


def test_the_gateway_retains_the_live_state_only_when_it_changes(tmp_path, broker):
    """A run of identical states is retained once; a change is retained (and sent at once); a late subscriber
    gets the last change from the broker; after the broker restarts, the first state is retained again."""
    publisher = open_publisher(tmp_path, broker.port, "Desk")
    watcher = LiveWatcher(broker.port, "Desk")
    late = None
    try:
        for k in range(10):
            publisher.publish_live(state(T0_S + k, flexion_deg=5.0 + k))  # the angles change, the state does not
        publisher.publish_live(state(T0_S + 9.5, slouching_since_s=T0_S + 4.0))  # the slouch confirmed
        for k in range(10, 16):
            publisher.publish_live(state(T0_S + k, slouching_since_s=T0_S + 4.0, flexion_deg=20.0 + k))
        wait_for(lambda: len(watcher.got) == 17, 10, lambda: f"17 live messages, have {len(watcher.got)}")
        retained = [doc["ts"] for flag, doc in watcher.got if flag]
        assert retained == [int(T0_S * 1000), int((T0_S + 9.5) * 1000)]
        assert publisher.live_published == 17 and publisher.live_retained == 2

        got: list[mqtt.MQTTMessage] = []
        late = client(broker.port)  # Home Assistant after a restart
        late.on_message = lambda c, u, m: got.append(m)
        late.subscribe("posture/Desk/live", qos=0)
        wait_for(lambda: got, 10, "the retained live state")
        time.sleep(0.5)
        assert len(got) == 1 and got[0].retain
        doc = json.loads(got[0].payload)
        assert doc["ts"] == int((T0_S + 9.5) * 1000) and doc["slouching_since_s"] == T0_S + 4.0

        broker.restart()  # the gateway reconnects; the broker's copy may be gone: the next state is retained
        wait_for(lambda: not publisher.connected.is_set(), 10, "the publisher to see the broker go")
        wait_for(publisher.connected.is_set, 20, "the publisher to reconnect")
        watcher.close()
        watcher = LiveWatcher(broker.port, "Desk")  # besides, the broker's copy, retained (it kept it)
        publisher.publish_live(state(T0_S + 16, slouching_since_s=T0_S + 4.0))
        publisher.publish_live(state(T0_S + 17, slouching_since_s=T0_S + 4.0))
        after = int((T0_S + 16) * 1000)
        wait_for(lambda: len([d for _, d in watcher.got if d["ts"] >= after]) == 2, 10, "2 live messages after it")
        assert [flag for flag, d in watcher.got if d["ts"] >= after] == [True, False]
    finally:
        watcher.close()
        if late is not None:
            late.loop_stop()
        publisher.stop()


def test_a_live_policy_that_exists_is_left_alone_and_one_that_cannot_be_made_names_the_key(tmp_path, influx,
                                                                                              caplog):
    influx.query(f'CREATE RETENTION POLICY "live" ON "{DB}" DURATION 30d REPLICATION 1')
    settings = InfluxSettings(url=influx.url, api="v1", database=DB)
    line = f"posture_live,device_id=a calibration=\"calibrated\" {int(T0_S * 1000)}"
    with caplog.at_level(logging.INFO, logger="posture.influx"):
        make_writer(settings, live=True).write([line])
    assert "left as it is" in caplog.text and "720h0m0s" in caplog.text
    assert next(p for p in policies(influx) if p[0] == "live")[1] == "720h0m0s"
    assert len(influx.rows(f"SELECT * {LIVE}", DB)) == 1

    secured = start_or_fail(SecuredInfluxDB1(tmp_path / "influx-auth", admin=("root", "Root-Secret-1")))
    try:
        secured.create_database(DB)
        secured.query("CREATE USER \"writer\" WITH PASSWORD 'Writer-Secret-2'")
        secured.query(f'GRANT WRITE ON "{DB}" TO "writer"')
        writer = make_writer(InfluxSettings(url=secured.url, api="v1", database=DB, username="writer",
                                            password="Writer-Secret-2"), live=True)
        with pytest.raises(SettingsError, match="influx.live_policy 'live' does not exist") as missing:
            writer.write([line])
        assert "Secret" not in str(missing.value)
    finally:
        secured.kill()


def no_policy_rights(tmp_path: Path) -> tuple[SecuredInfluxDB1, Config]:
    """InfluxDB with authentication, the database, and a bridge config for a user who may write to it (GRANT ALL)
    but not create a retention policy (an admin's right)."""
    secured = start_or_fail(SecuredInfluxDB1(tmp_path / "influx-auth", admin=("root", "Root-Secret-1")))
    secured.create_database(DB)
    secured.query("CREATE USER \"writer\" WITH PASSWORD 'Writer-Secret-2'")
    secured.query(f'GRANT ALL ON "{DB}" TO "writer"')
    return secured, load_config(write_config(tmp_path / "posture.toml", NO_BROKER, secured.url), env={},
                                overrides={"influx": {"username": "writer", "password": "Writer-Secret-2"}})


def test_live_points_the_settings_cannot_store_are_dropped_and_hold_nothing_up(tmp_path):
    """A user who may write but not create the live policy (or InfluxDB 2.x without influx.live_bucket): the
    other points are stored, live ones are counted and dropped — not spooled a point a second for ever, and
    never ahead of the rest in the spool."""
    from bridge.service import Bridge

    secured, config = no_policy_rights(tmp_path)
    try:
        bridge = Bridge.open(config)
        t_ms = int(T0_S * 1000)
        items = [("posture/A/live", f'posture_live,device_id=A calibration="calibrated" {t_ms + i}') for i in range(3)]
        items.insert(1, ("posture/A/metrics", f"posture_minute,device_id=A worn_s=60 {t_ms}"))
        try:
            assert bridge._store(items) == []
            assert len(bridge.spool) == 0
        finally:
            bridge.spool.close()
        assert bridge.stats.live_dropped == 3 and bridge.stats.points_written == 1
        assert len(secured.rows("SELECT * FROM posture_minute", DB)) == 1
    finally:
        secured.kill()


def test_a_live_policy_that_cannot_be_made_is_asked_for_once_a_minute_not_every_write(tmp_path, caplog,
                                                                                       monkeypatch):
    """The refusal is remembered for RETRY_LIVE_SETTINGS_S (60 s): five flushes cost InfluxDB one /write and one
    CREATE RETENTION POLICY, not five of each; the points are still counted as dropped, and logged once. Once an
    administrator made the policy, the next try after the wait stores them."""
    from bridge.service import Bridge

    secured, config = no_policy_rights(tmp_path)
    t_ms = int(T0_S * 1000)

    def live(k: int) -> list[tuple[str, str]]:
        return [("posture/A/live", f'posture_live,device_id=A calibration="calibrated" {t_ms + 10 * k + i}')
                for i in range(3)]

    try:
        bridge = Bridge.open(config)
        try:
            before = influx_stats(secured, "httpd")
            with caplog.at_level(logging.WARNING, logger="posture.bridge"):
                for k in range(5):
                    assert bridge._store(live(k)) == []
            after = influx_stats(secured, "httpd")
            secured.query(f'CREATE RETENTION POLICY "live" ON "{DB}" DURATION 7d REPLICATION 1')
            assert bridge._store(live(5)) == []  # within the minute: not asked, dropped
            dropped_before_retry = bridge.stats.live_dropped
            monkeypatch.setattr(influx_module, "RETRY_LIVE_SETTINGS_S", 0.0)  # the minute is over
            assert bridge._store(live(6)) == [] and len(bridge.spool) == 0
        finally:
            bridge.spool.close()
        stored = secured.rows(f"SELECT * {LIVE}", DB)
    finally:
        secured.kill()
    assert after["writeReq"] - before["writeReq"] == 1
    assert after["queryReq"] - before["queryReq"] == 2  # the CREATE RETENTION POLICY, and the second SHOW STATS
    assert dropped_before_retry == 18 and bridge.stats.live_dropped == 18
    assert [r["time"] for r in stored] == [t_ms + 60 + i for i in range(3)]
    lines = [r.getMessage() for r in caplog.records if "live points cannot be stored" in r.getMessage()]
    assert len(lines) == 1 and "influx.live_policy 'live'" in lines[0] and "not asked again for 60 s" in lines[0]


def test_live_points_past_their_retention_are_dropped_not_dead_lettered(tmp_path, influx):
    """After a week-long outage the spool holds live points their policy would delete: InfluxDB drops them
    (400, "points beyond retention policy") and stores the rest; they are counted, not dead-lettered one by one."""
    from bridge.service import Bridge

    bridge = Bridge.open(load_config(write_config(tmp_path / "posture.toml", NO_BROKER,
                                                  influx.url), env={}))
    old_ms, new_ms = int((time.time() - 8 * 86400) * 1000), int(T0_S * 1000)
    items = [("posture/Old/live", f'posture_live,device_id=Old calibration="calibrated" {t}')
             for t in (old_ms, old_ms + 1000, old_ms + 2000, new_ms, new_ms + 1000)]
    try:
        assert bridge._store(items) == []
    finally:
        bridge.spool.close()
    assert bridge.stats.live_expired == 3 and bridge.stats.points_written == 2 and bridge.stats.points_refused == 0
    assert len(influx.rows(f"SELECT * {LIVE}", DB)) == 2


def test_the_live_bucket_on_the_v2_api():
    assert live_bucket(InfluxSettings(database="posture")) == "posture/live"  # 1.8: database/policy
    assert live_bucket(InfluxSettings(database="posture", live_bucket="posture-live")) == "posture-live"  # 2.x, 3.x
    assert live_bucket(InfluxSettings(bucket="posture", live_policy="")) == "posture"  # no policy: with the rest


def test_a_live_message_carrying_a_batch_is_a_point_for_each_of_its_states(tmp_path, broker, influx):
    """gateway.live_hz 10 at 1 s batches: one message a second with nine earlier states: ten points a second, at
    their own times, the earlier ones with their angles (the discrete part is the message's latest state's)."""
    from pipeline.events import EarlierState

    log = tmp_path / "bridge.log"
    publisher = open_publisher(tmp_path, broker.port, "Desk")
    bridge = start_bridge(write_config(tmp_path / "posture.toml", broker, influx.url), log)
    try:
        probe = client(broker.port)
        wait_until_bridge_stores(probe, influx_has_probe(influx))
        probe.loop_stop()
        for k in range(3):
            last_s = T0_S + k + 0.9
            earlier = tuple(EarlierState(T0_S + k + j / 10, 10.0 + j, -1.0, 179.0 - j) for j in range(9))
            publisher.publish_live(replace(state(last_s, flexion_deg=19.0), earlier=earlier))
        wait_for(lambda: len(live_rows(influx, "Desk")) == 30, 20,
                 lambda: f"30 live points; have {len(live_rows(influx, 'Desk'))}; log:\n{log.read_text()[-2000:]}")
        stats = stop_bridge(bridge, log)
    finally:
        if bridge.poll() is None:
            bridge.kill()
        publisher.stop()
    rows = live_rows(influx, "Desk")
    assert [r["time"] for r in rows] == [int(round((T0_S + k + j / 10) * 1000)) for k in range(3) for j in range(10)]
    assert [r["flexion_deg"] for r in rows] == [10.0 + j for _ in range(3) for j in range(10)]
    assert [r["rotation_deg"] for r in rows][:10] == [179.0 - j for j in range(9)] + [3.0]
    assert [r["calibration"] for r in rows][:10] == [None] * 9 + ["calibrated"]
    # Besides the probes (a message and a point each), three messages gave thirty points.
    assert stats["points_written"] - (stats["received"] - 3) == 30 and stats["malformed"] == {}
