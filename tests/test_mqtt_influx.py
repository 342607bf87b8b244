"""Gateway → Mosquitto → bridge → InfluxDB, with real servers (posture/local_servers.py), \
and faults that must lose nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from posture.local_servers import InfluxDB1
from support.day_messages import slouchy_minute
from support.mqtt import DB, client, listen, start_or_fail, wait_for
from support.servers import SecuredInfluxDB1, SecuredMosquitto, VictoriaMetrics

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, broker, influx_url: str) -> Path:
    text = (f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n\n'
            f'[influx]\nurl = "{influx_url}"\ndatabase = "{DB}"\n\n'
            f'[bridge]\nspool_path = "{path.parent / "bridge.spool"}"\nflush_interval_s = 0.1\n\n'
            f'[gateway]\nspool_dir = "{path.parent / "gateway-spool"}"\n')
    path.write_text(text)
    return path


def start_bridge(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "posture.cli", "bridge", "--config", str(config)],
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)


def wait_until_bridge_stores(probe: mqtt.Client, stored, device: str = "probe") -> None:
    """The broker queues only for sessions it knows: before a test publishes, the bridge's session
    must exist. Publish a probe status until `stored()` sees it."""
    body = {"schema": 1, "kind": "status", "device": device, "ts": 1_600_000_000_000, "online": True}

    def arrived() -> bool:
        probe.publish(f"posture/{device}/status", json.dumps(body), qos=1)
        return bool(stored())

    wait_for(arrived, 30, "the bridge to store a probe")


def influx_has_probe(influx: InfluxDB1, device: str = "probe"):
    return lambda: influx.rows(f"SELECT count(online) FROM posture_status WHERE device_id = '{device}'", DB)


def bridge_ready(broker, influx: InfluxDB1, device: str = "probe") -> None:
    """A bridge is up and storing (device: a probe no bridge of the test stored yet, or this returns at once)."""
    probe = client(broker.port)
    wait_until_bridge_stores(probe, influx_has_probe(influx, device), device)
    probe.loop_stop()


def start_publisher(config: Path, n: int, rate: float, progress: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "publish_known.py"), str(config), "dev1",
                             str(n), str(rate), str(progress)], stdout=open(log, "a"), stderr=subprocess.STDOUT)


def count_minutes(influx: InfluxDB1) -> int:
    rows = influx.rows("SELECT count(worn_s) FROM posture_minute", DB)
    return rows[0]["count"] if rows else 0


def missing(influx: InfluxDB1, n: int) -> str:
    """The minute indices not in InfluxDB, as ranges, for a failure message."""
    have = {(r["time"] - 1_700_000_000_000) // 60_000 for r in influx.rows("SELECT worn_s FROM posture_minute", DB)}
    gaps = sorted(set(range(n)) - have)
    ranges, start = [], None
    for i, k in enumerate(gaps):
        start = k if start is None else start
        if i + 1 == len(gaps) or gaps[i + 1] != k + 1:
            ranges.append(f"{start}-{k}")
            start = None
    return ", ".join(ranges) or "none"


def test_faults_lose_nothing_and_duplicate_nothing(tmp_path, broker, influx):
    """Broker restart, InfluxDB down 30 s, bridge and gateway killed with -9: every point, exactly once."""
    n = 3000
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    bridge_log, pub_log, progress = tmp_path / "bridge.log", tmp_path / "pub.log", tmp_path / "progress"
    bridge = start_bridge(config, bridge_log)
    bridge_ready(broker, influx)
    pub = start_publisher(config, n, 80.0, progress, pub_log)
    try:
        time.sleep(4)
        broker.restart()  # Mosquitto restarted mid-stream
        time.sleep(3)
        influx.stop()  # InfluxDB away for 30 s
        down_since = time.monotonic()
        time.sleep(3)
        bridge.send_signal(signal.SIGKILL)  # the bridge killed -9 …
        bridge.wait()
        bridge = start_bridge(config, bridge_log)  # … and started again
        time.sleep(3)
        pub.send_signal(signal.SIGKILL)  # the gateway killed -9 …
        pub.wait()
        pub = start_publisher(config, n, 80.0, progress, pub_log)  # … and started again
        time.sleep(max(0.0, 30.0 - (time.monotonic() - down_since)))
        influx.start()
        assert pub.wait(timeout=120) == 0, pub_log.read_text()[-2000:]
        wait_for(lambda: count_minutes(influx) >= n, 120,
                 lambda: f"{n} points in InfluxDB; have {count_minutes(influx)}, missing {missing(influx, n)}"
                         f"\n--- bridge log:\n"
                         f"{bridge_log.read_text()[-3000:]}\n--- gateway log:\n{pub_log.read_text()[-1500:]}")
        time.sleep(2)  # anything late would show up as more than n
    finally:
        for proc in (pub, bridge):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    rows = influx.rows("SELECT worn_s, slouch_s, rotations_left, device_id FROM posture_minute", DB)
    times = [r["time"] for r in rows]
    assert len(rows) == n and len(set(times)) == n, "lost or duplicated points"
    start_ms = 1_700_000_000_000
    assert sorted(times) == [start_ms + 60_000 * k for k in range(n)]
    for r in rows:
        k = (r["time"] - start_ms) // 60_000
        assert r["slouch_s"] == k % 60 and r["rotations_left"] == k % 7 and r["device_id"] == "dev1"
    assert "spooling to disk" in bridge_log.read_text(), "InfluxDB outage never reached the spool"


def test_ten_thousand_malformed_payloads_are_counted_and_dead_lettered(tmp_path, broker, influx):
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    bridge = start_bridge(config, tmp_path / "bridge.log")
    dead = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: dead.append(json.loads(m.payload))
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe("posture/_deadletter", qos=1)
    watcher.loop_start()
    sender = client(broker.port, max_inflight=1000)
    try:
        wait_until_bridge_stores(sender, influx_has_probe(influx))
        bad = [b"not json {", json.dumps({"schema": 1, "kind": "metrics"}).encode(),
               json.dumps({"schema": 1, "kind": "status", "device": "d", "ts": 1, "online": "yes"}).encode(),
               b"\xff\xfe", b"[]", b'{"schema": 1, "ts": ' + b"9" * 5000 + b"}"]  # the last past Python's int()
        for i in range(10_000):
            sender.publish(f"posture/dev{i % 3}/{('metrics', 'status', 'events')[i % 3]}", bad[i % len(bad)], qos=1)
        good = {"schema": 1, "kind": "status", "device": "dev9", "ts": 1_700_000_000_000, "online": True,
                "battery_pct": 80, "lost_samples": 0, "malformed_packets": 0, "reconnects": 0}
        sender.publish("posture/dev9/status", json.dumps(good), qos=1).wait_for_publish(30)
        wait_for(lambda: len(dead) >= 10_000, 120, lambda: f"10 000 dead letters; have {len(dead)}; bridge alive: "
                 f"{bridge.poll() is None}\n{(tmp_path / 'bridge.log').read_text()[-1500:]}")
        wait_for(lambda: influx.rows("SELECT battery_pct FROM posture_status WHERE device_id = 'dev9'", DB), 30,
                 "the valid point")
        assert bridge.poll() is None, "the bridge died"
    finally:
        sender.loop_stop()
        watcher.loop_stop()
        bridge.send_signal(signal.SIGTERM)
        out = bridge.wait(timeout=30)
    assert out == 0
    assert len(dead) == 10_000 and {d["reason"].split(":")[0] for d in dead} == {"not JSON", "schema"}
    stats = json.loads((tmp_path / "bridge.log").read_text().strip().splitlines()[-1])
    assert sum(stats["malformed"].values()) == 10_000


def test_v2_write_path_against_a_server_that_speaks_it(tmp_path, broker):
    """VictoriaMetrics accepts influxdb-client's /api/v2/write; InfluxDB 1.6.7 does not have it."""
    vm = start_or_fail(VictoriaMetrics(tmp_path / "vm"))
    try:
        config = write_config(tmp_path / "posture.toml", broker, vm.url)
        bridge = start_bridge(config, tmp_path / "bridge.log")
        sender = client(broker.port)

        def vm_has_probe() -> list:
            vm.flush()
            return vm.export('{__name__="posture_status_online", device_id="probe"}')

        wait_until_bridge_stores(sender, vm_has_probe)
        now_ms = int(time.time() * 1000) // 1000 * 1000
        for k in range(5):
            ts = now_ms - 60_000 + k * 1000
            body = {"schema": 1, "kind": "rotation", "device": "vmdev", "ts": ts, "start_s": ts / 1000,
                    "end_s": ts / 1000 + 2, "duration_s": 2.0, "side": "left", "peak_deg": 30.0 + k}
            sender.publish("posture/vmdev/events", json.dumps(body), qos=1).wait_for_publish(10)

        def stored() -> list:
            vm.flush()
            return vm.export('{__name__="posture_rotation_peak_deg"}')

        wait_for(lambda: stored() and sum(len(s["values"]) for s in stored()) == 5, 60, "5 points in VictoriaMetrics")
        series = stored()[0]
        assert series["metric"]["device_id"] == "vmdev" and series["metric"]["side"] == "left"
        assert sorted(series["values"]) == [30.0, 31.0, 32.0, 33.0, 34.0]
        sender.loop_stop()
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=30) == 0
    finally:
        vm.kill()


def test_a_publisher_keeps_its_backlog_while_the_broker_is_down(tmp_path, broker):
    """Broker away: messages wait in the spool, in order, and all arrive after it returns."""
    from gateway.publisher import DevicePublisher
    from pipeline.events import MinuteMetrics
    from service_io.config import load_config

    config = load_config(write_config(tmp_path / "posture.toml", broker, "http://127.0.0.1:9"))
    got: list[int] = []
    seen = threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="phone", protocol=mqtt.MQTTv5)

    def on_message(c, u, m):
        got.append(json.loads(m.payload)["ts"])
        if len(got) >= 200:
            seen.set()

    listener.on_message = on_message
    broker.stop()
    publisher = DevicePublisher.open(config, "dev2", tmp_path / "spool")
    publisher.start()
    publisher.submit([MinuteMetrics(minute_start_s=60.0 * k) for k in range(200)])
    for _ in range(20):
        publisher.pump()
        time.sleep(0.05)
    assert publisher.backlog == 200
    broker.start()
    listener.connect("127.0.0.1", broker.port)
    listener.subscribe("posture/dev2/metrics", qos=1)
    listener.loop_start()
    deadline = time.monotonic() + 30
    while not seen.is_set() and time.monotonic() < deadline:
        publisher.pump()
        time.sleep(0.02)
    listener.loop_stop()
    publisher.stop()
    assert got == [60_000 * k for k in range(200)], "backlog not delivered complete and in order"


def test_virtual_sensor_to_influxdb_and_phone_end_to_end(tmp_path, testbed, start_sim, broker, influx):
    """posture sim (BLE) → posture run → Mosquitto → posture bridge → InfluxDB 1.6.7, and
    → posture alerts → a phone's topic (and back through the bridge into InfluxDB)."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    (tmp_path / "rules.toml").write_text("[slouch]\nepisode_min = 0.25\n"  # a 15 s slouch, any hour
                                         "[limits]\nquiet_hours = \"\"\n")
    with open(config, "a") as f:
        f.write(f'\n[alerts]\nstate_path = "{tmp_path / "alerts.db"}"\nrules_path = "{tmp_path / "rules.toml"}"\n'
                'timezone = "Asia/Kolkata"\n')
    bridge = start_bridge(config, tmp_path / "bridge.log")
    bridge_ready(broker, influx)
    alerts = subprocess.Popen([sys.executable, "-m", "posture.cli", "alerts", "--config", str(config)],
                              stdout=open(tmp_path / "alerts.log", "w"), stderr=subprocess.STDOUT)
    phone = client(broker.port)
    phone_got: list[dict] = []
    phone.on_message = lambda c, u, m: phone_got.append(json.loads(m.payload))
    phone.subscribe("posture/DeskSensor/alerts", 1)
    start_sim(name="DeskSensor", profile="native", scenario="office-short")
    gateway = subprocess.Popen([sys.executable, "-m", "posture.cli", "run", "--config", str(config),
                                "--sensor", "DeskSensor", "--adapter", "hci0"], env=testbed.env,
                               stdout=open(tmp_path / "gateway.log", "w"), stderr=subprocess.STDOUT)
    try:
        # office-short: calibration moves until ~14 s, a slouch from ~22 s to ~42 s.
        wait_for(lambda: influx.rows("SELECT duration_s FROM posture_slouch", DB), 90,
                 lambda: "a slouch in InfluxDB\n" + (tmp_path / "gateway.log").read_text()[-2000:])
        wait_for(lambda: influx.rows("SELECT text, stretch FROM posture_alert", DB), 30,
                 lambda: "the slouch alert in InfluxDB\n" + (tmp_path / "alerts.log").read_text()[-2000:])
        gateway.send_signal(signal.SIGTERM)  # ends with the unfinished minute flushed
        assert gateway.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()[-2000:]
        wait_for(lambda: influx.rows("SELECT worn_s FROM posture_minute", DB), 30, "minute metrics")
        # The alert service's day so far, from the first minute: the Daily dashboard's zone and program day.
        wait_for(lambda: influx.rows("SELECT program_day FROM posture_today", DB), 30,
                 lambda: "the day so far in InfluxDB\n" + (tmp_path / "alerts.log").read_text()[-2000:])
    finally:
        for proc in (gateway, bridge, alerts):
            if proc.poll() is None:
                proc.kill()
        phone.loop_stop()
    assert [a["kind"] for a in phone_got][:1] == ["slouch"], phone_got
    assert phone_got[0]["stretch"]["name"] and phone_got[0]["evidence"]["episode_min"] >= 0.25
    stored = influx.rows("SELECT text, stretch, alert_id, kind FROM posture_alert", DB)
    assert stored[0]["alert_id"] == phone_got[0]["id"] and stored[0]["stretch"] == phone_got[0]["stretch"]["name"]
    calibration = influx.rows("SELECT message, with_bend, status FROM posture_calibration", DB)
    assert calibration[0]["status"] == "calibrated" and calibration[0]["with_bend"] is True
    slouch = influx.rows("SELECT duration_s, peak_flexion_deg, device_id FROM posture_slouch", DB)
    assert len(slouch) == 1 and 14 <= slouch[0]["duration_s"] <= 22 and slouch[0]["device_id"] == "DeskSensor"
    assert 20 <= slouch[0]["peak_flexion_deg"] <= 32
    minutes = influx.rows("SELECT worn_s, slouch_s FROM posture_minute", DB)
    assert sum(m["slouch_s"] for m in minutes) == pytest.approx(slouch[0]["duration_s"], abs=0.5)
    status = influx.rows("SELECT online, battery_pct FROM posture_status WHERE device_id = 'DeskSensor'", DB)
    assert any(s["online"] and s["battery_pct"] == 100 for s in status)
    assert status[-1]["online"] is False  # the gateway's last word on a clean stop
    today = influx.rows("SELECT program_day, program_days, streak_days, timezone FROM posture_today", DB)
    assert {(t["program_day"], t["program_days"], t["streak_days"], t["timezone"]) for t in today} == {
        (1, 31, 0, "Asia/Kolkata")}


def test_credentials_tls_and_acl_with_no_secret_in_logs(tmp_path, influx):
    """Gateway and bridge over TLS with passwords; a phone reads only its own alerts (deploy/mosquitto/acl.example)."""
    from support.servers import make_password_file, make_test_ca

    passwords = {"posture-gateway": "gw-Secret-1", "posture-bridge": "br-Secret-2", "phone-desk": "ph-Secret-3",
                 "posture-alerts": "al-Secret-4"}
    tls = make_test_ca(tmp_path / "ca")
    server = SecuredMosquitto(tmp_path / "mosquitto", password_file=make_password_file(tmp_path / "passwd", passwords),
                              acl_file=ROOT / "deploy" / "mosquitto" / "acl.example", tls=tls)
    start_or_fail(server)
    started: list[subprocess.Popen[bytes]] = []
    try:
        def config_for(user: str, password: str) -> Path:
            path = write_config(tmp_path / f"{user}.toml", server, influx.url)
            text = path.read_text().replace(f"port = {server.port}\n",
                                            f'port = {server.tls_port}\nhost = "localhost"\nusername = "{user}"\n'
                                            f'password = "{password}"\ntls_ca = "{tls["cafile"]}"\n', 1)
            path.write_text(text.replace('host = "127.0.0.1"\n', "", 1))
            return path

        # A bridge with a wrong password is refused, and says so without the password.
        wrong = start_bridge(config_for("posture-bridge", "not-the-Secret"), tmp_path / "wrong.log")
        wait_for(lambda: "refused" in (tmp_path / "wrong.log").read_text(), 30, "the broker to refuse the bridge")
        wrong.send_signal(signal.SIGTERM)
        wrong.wait(timeout=30)
        assert "refused" in (tmp_path / "wrong.log").read_text()
        assert "not-the-Secret" not in (tmp_path / "wrong.log").read_text()

        bridge = start_bridge(config_for("posture-bridge", passwords["posture-bridge"]), tmp_path / "bridge.log")
        started.append(bridge)
        phone_got: list[str] = []
        phone = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        phone.username_pw_set("phone-desk", passwords["phone-desk"])
        phone.tls_set(ca_certs=tls["cafile"])
        phone.on_message = lambda c, u, m: phone_got.append(m.topic)
        phone.connect("localhost", server.tls_port)
        phone.subscribe([("posture/#", 1), ("posture/DeskSensor/alerts", 1)])
        phone.loop_start()
        gateway_user = ("posture-gateway", passwords["posture-gateway"])
        probe = client(server.tls_port, "localhost", gateway_user, tls["cafile"])
        wait_until_bridge_stores(probe, influx_has_probe(influx))
        probe.loop_stop()
        publisher = start_publisher(config_for("posture-gateway", passwords["posture-gateway"]), 20, 50.0,
                                    tmp_path / "progress", tmp_path / "pub.log")
        assert publisher.wait(timeout=60) == 0, (tmp_path / "pub.log").read_text()[-2000:]
        wait_for(lambda: count_minutes(influx) >= 20, 60, "20 points stored over TLS with passwords")
        # The alert service as its own user: reads results, nudges each wearer's phone.
        alerts_config = config_for("posture-alerts", passwords["posture-alerts"])
        # No daily summary: after its time of day (18:00) it would add an alert per wearer.
        (tmp_path / "rules.toml").write_text('[slouch]\nwindow_min = 5\nshare_pct = 50.0\nmin_worn_min = 3.0\n'
                                             '[limits]\nquiet_hours = ""\nmax_delay_s = 1000000\n'
                                             '[habit]\nsummary_time = ""\n')
        with open(alerts_config, "a") as f:
            f.write(f'\n[alerts]\nstate_path = "{tmp_path / "alerts.db"}"\nrules_path = "{tmp_path / "rules.toml"}"\n')
        alerts = subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", "alerts", "--config", str(alerts_config)],
                                  stdout=open(tmp_path / "alerts.log", "w"), stderr=subprocess.STDOUT)
        started.append(alerts)
        wait_for(lambda: "connected to MQTT" in (tmp_path / "alerts.log").read_text(), 30, "the alert service")
        gateway = client(server.tls_port, "localhost", gateway_user, tls["cafile"])
        start = time.time() // 60 * 60 - 600
        for device in ("DeskSensor", "OtherDesk"):
            for k in range(5):
                gateway.publish(f"posture/{device}/metrics", json.dumps(slouchy_minute(device, start + 60 * k)),
                                qos=1).wait_for_publish(10)
        wait_for(lambda: "posture/DeskSensor/alerts" in phone_got, 20, "the phone's own alert")
        wait_for(lambda: len(influx.rows("SELECT alert_id FROM posture_alert", DB)) == 2, 20,
                 "both wearers' alerts stored by the bridge")
        time.sleep(1)
        gateway.loop_stop()
        phone.loop_stop()
        for proc in (bridge, alerts):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert set(phone_got) == {f"posture/DeskSensor/{t}" for t in ("alerts", "alerts/text", "today")}, \
            "the phone read more than its own alerts"
        logs = "".join((tmp_path / name).read_text() for name in ("bridge.log", "pub.log", "wrong.log", "alerts.log"))
        assert not any(secret in logs for secret in passwords.values())
    finally:
        for proc in started:  # a failed wait must not leave them retrying the broker for ever
            if proc.poll() is None:
                proc.kill()
        server.kill()


def test_mqtt_311_is_selectable(tmp_path, broker, influx):
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    config.write_text(config.read_text().replace("[mqtt]\n", '[mqtt]\nprotocol = "3.1.1"\n'))
    bridge = start_bridge(config, tmp_path / "bridge.log")
    try:
        bridge_ready(broker, influx)
        pub = start_publisher(config, 100, 200.0, tmp_path / "progress", tmp_path / "pub.log")
        assert pub.wait(timeout=60) == 0
        wait_for(lambda: count_minutes(influx) >= 100, 60, "100 points over MQTT 3.1.1")
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=30)
    assert count_minutes(influx) == 100


def test_influxdb_credentials_and_no_password_in_errors(tmp_path, broker):
    from service_io.influx import InfluxSettings, WriteError, make_writer

    secured = start_or_fail(SecuredInfluxDB1(tmp_path / "influx-auth", admin=("poster", "Influx-Secret-9")))
    try:
        secured.create_database(DB)
        line = "posture_status,device_id=a online=true 1700000000000"
        good = make_writer(InfluxSettings(url=secured.url, database=DB, username="poster", password="Influx-Secret-9"))
        good.write([line])
        assert secured.rows("SELECT online FROM posture_status", DB)
        bad = make_writer(InfluxSettings(url=secured.url, database=DB, username="poster", password="Wrong-Secret-7"))
        with pytest.raises(WriteError) as refused:
            bad.write([line])
        assert "401" in str(refused.value) and "Secret" not in str(refused.value)
        # No credentials at all, api "auto": 1.x found, its /write takes no token, so the hint names what it takes.
        with pytest.raises(WriteError) as anonymous:
            make_writer(InfluxSettings(url=secured.url, database=DB)).write([line])
        assert "influx.username and influx.password" in str(anonymous.value), anonymous.value
        assert "Secret" not in repr(InfluxSettings(password="Influx-Secret-9", token="tok-Secret"))
    finally:
        secured.kill()


def retained_status(port: int, device: str, want, timeout_s: float = 30) -> dict:
    """The retained status of `device` once `want(status)` holds (read by a fresh subscriber each time)."""
    got: list[dict] = []

    def read() -> bool:
        c = client(port)
        c.on_message = lambda cl, u, m: got.append(json.loads(m.payload)) if m.payload else None
        c.subscribe(f"posture/{device}/status", 1)
        time.sleep(0.5)
        c.loop_stop()
        c.disconnect()
        return bool(got) and want(got[-1])

    wait_for(read, timeout_s, lambda: f"a status of {device} as wanted; last {got[-1:]}")
    return got[-1]


def test_a_clean_stop_says_offline_and_keeps_the_link_counters(tmp_path, broker):
    """Issue 12 item 8: the goodbye status zeroed lost/malformed/reconnects, which the Devices dashboard shows."""
    from contract.messages import Status
    from gateway.publisher import DevicePublisher
    from service_io.config import load_config

    config = load_config(write_config(tmp_path / "posture.toml", broker, "http://127.0.0.1:9"))
    publisher = DevicePublisher.open(config, "dev3", tmp_path / "spool", name="dev 3")
    publisher.start()
    wait_for(publisher.connected.is_set, 10, "the publisher to connect")
    publisher.publish_status(Status(online=True, battery_pct=80, link_quality_pct=99.5, lost_samples=7,
                                    malformed_packets=3, duplicate_packets=2, reconnects=1, discarded_samples=5))
    retained_status(broker.port, "dev3", lambda s: s["online"])
    publisher.stop()
    last = retained_status(broker.port, "dev3", lambda s: not s["online"])
    assert (last["lost_samples"], last["malformed_packets"], last["duplicate_packets"], last["reconnects"],
            last["discarded_samples"], last["battery_pct"], last["sensor_name"], last["will"]) == \
        (7, 3, 2, 1, 5, 80, "dev 3", False)
    assert last["link_quality_pct"] is None  # no link, no quality


GATEWAY_THAT_HANGS = """
import sys, time
from pathlib import Path
from contract.messages import Status
from gateway.publisher import DevicePublisher
from service_io.config import load_config
publisher = DevicePublisher.open(load_config(Path(sys.argv[1])), "dev4", Path(sys.argv[2]))
publisher.start()
while not publisher.connected.is_set():
    time.sleep(0.05)
time.sleep(1.5)  # the will was composed at connect: a status now is later than its ts
publisher.publish_status(Status(online=True, lost_samples=4))
print("published", flush=True)
time.sleep(600)
"""


def test_a_crashed_gateways_will_says_so_and_is_stored_when_it_arrives(tmp_path, broker):
    """Issue 12 item 8: the will's online:false carries the time the gateway connected, before its last
    statuses, so "Last seen" said online after a crash. The will marks itself; stamp_will (the bridge) stores
    it when it arrives, after the gateway's last status."""
    from contract.messages import stamp_will

    config = write_config(tmp_path / "posture.toml", broker, "http://127.0.0.1:9")
    config.write_text(config.read_text().replace("[mqtt]\n", "[mqtt]\nkeepalive_s = 1\n"))
    gateway = subprocess.Popen([sys.executable, "-c", GATEWAY_THAT_HANGS, str(config), str(tmp_path / "spool")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert gateway.stdout.readline().strip() == "published"
        last_word = retained_status(broker.port, "dev4", lambda s: s["online"])
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
        will = retained_status(broker.port, "dev4", lambda s: not s["online"])
        arrived_s = time.time()
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert will["will"] is True and will["ts"] < last_word["ts"]  # composed at connect: it cannot know better
    stored = stamp_will(will, arrived_s)
    assert stored["ts"] > last_word["ts"] and not stored["online"]
    assert stamp_will(last_word, arrived_s) == last_word  # the gateway's own statuses keep their time


def test_a_will_is_stored_once_not_again_at_each_bridge_restart(tmp_path, broker, influx):
    """The will is retained: every time the bridge subscribes again (a restart, a reconnect) the broker sends it
    again. Stamped at each arrival, a sensor that crashed days ago got a new offline status at every restart, and
    the Devices dashboard's "Last seen" said it was last heard then (and kept it in its 24 h for ever). Stored once,
    when it came; a will that came while the bridge was away is stored when the bridge is back, once."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    log = tmp_path / "bridge.log"
    bridge = start_bridge(config, log)
    statuses = "SELECT \"online\" FROM \"posture_status\" WHERE \"device_id\" = 'dev4'"

    def stored() -> list[list]:
        return influx.query(statuses, DB)["results"][0].get("series", [{"values": []}])[0]["values"]

    def crash_a_gateway() -> None:
        gateway = subprocess.Popen([sys.executable, "-c", GATEWAY_THAT_HANGS, str(config), str(tmp_path / "spool")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert gateway.stdout.readline().strip() == "published"
            retained_status(broker.port, "dev4", lambda s: s["online"])  # its online status reached the broker
        finally:
            gateway.kill()
            gateway.wait()

    def restart(bridge: subprocess.Popen) -> subprocess.Popen:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        return start_bridge(config, log)

    try:
        bridge_ready(broker, influx)
        crash_a_gateway()
        wait_for(lambda: [r[1] for r in stored()] == [True, False], 30, lambda: f"online, then the will: {stored()}")
        first = stored()
        for _ in range(2):
            bridge = restart(bridge)
            bridge_ready(broker, influx)  # the retained will came before the probe: the same subscription
            time.sleep(1.0)
            assert stored() == first, "the retained will was stored again at the bridge's restart"
        # A crash while the bridge is away: the will waits in the bridge's session and is stored when it is back.
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        crash_a_gateway()
        bridge = start_bridge(config, log)
        wait_for(lambda: len(stored()) == 4, 30, lambda: f"the second crash's online and will: {stored()}")
        time.sleep(1.0)
        assert [r[1] for r in stored()] == [True, False, True, False]
        now_ms = time.time() * 1000
        (last_seen,) = influx.query(f"SELECT last(\"online\") FROM \"posture_status\" WHERE \"device_id\" = 'dev4' "
                                    f"AND time > {int(now_ms) - 86_400_000}ms", DB)["results"][0]["series"][0]["values"]
        assert last_seen == stored()[-1]
    finally:
        bridge.terminate()
        bridge.wait(30)


def test_garbage_left_retained_is_dead_lettered_once_not_again_at_each_bridge_restart(tmp_path, broker, influx):
    """Garbage left retained on a device's topics (an app tried, another product's gateway) comes again every time the
    bridge subscribes again, as a will does. Dead-lettered at each arrival, it was a new posture_deadletter point and a
    new message on the dead-letter topic at every restart of the bridge (or the broker): 2 retained messages and 2
    restarts were 6 dead letters of 2. Once each, when it came; one left while the bridge was away comes in its
    session, and is dead-lettered once too."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    log = tmp_path / "bridge.log"
    sender = client(broker.port)
    for topic, body in [("posture/ghost/status", b"not json"), ("posture/ghost/today", b"[1, 2, 3]")]:
        sender.publish(topic, body, qos=1, retain=True).wait_for_publish(10)  # before the bridge's session was made
    published: list[dict] = []
    watcher = client(broker.port)
    watcher.on_message = lambda _c, _u, m: published.append(json.loads(m.payload))
    watcher.subscribe("posture/_deadletter", qos=1)

    def stored() -> list[dict]:
        return influx.rows('SELECT "topic", "reason" FROM "posture_deadletter"', DB)

    def restart(bridge: subprocess.Popen) -> subprocess.Popen:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        return start_bridge(config, log)

    bridge = start_bridge(config, log)
    try:
        bridge_ready(broker, influx)
        wait_for(lambda: len(stored()) == 2, 30, lambda: f"2 dead letters, have {stored()}")
        for _ in range(2):
            bridge = restart(bridge)
            bridge_ready(broker, influx)  # the retained garbage came before the probe: the same subscription
            time.sleep(1.0)
            assert len(stored()) == 2, f"dead-lettered again at the bridge's restart: {stored()}"
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        sender.publish("posture/ghost2/status", b"{", qos=1, retain=True).wait_for_publish(10)  # while it is away
        bridge = start_bridge(config, log)
        wait_for(lambda: len(stored()) == 3, 30, lambda: f"3 dead letters, have {stored()}")
        bridge_ready(broker, influx)
        time.sleep(1.0)
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        sender.loop_stop()
        watcher.loop_stop()
    topics = sorted(r["topic"] for r in stored())
    assert topics == ["posture/ghost/status", "posture/ghost/today", "posture/ghost2/status"]
    assert len(published) == 3, published
    stats = json.loads(log.read_text().strip().splitlines()[-1])  # its last lifetime
    assert stats["malformed"] == {"not JSON": 1} and stats["refused_again"] == 3


def test_a_retained_message_a_killed_bridge_never_stored_is_taken_when_it_comes_again(tmp_path, broker, influx):
    """Retained garbage, and a retained will, that the bridge was killed -9 holding (the garbage's dead letter
    published, neither stored: the messages unacknowledged) come again from the session as copies with DUP, beside the
    copies the new subscription brings (Mosquitto: all retained, our session present). Taken for sent again like the
    new ones, the dead letter and the will were lost: never stored. Each unacknowledged copy comes again, one more per
    kill, and one stored point is what they owe: exactly one here, since none was stored before (in general at least
    one: a bridge killed between storing it and its acknowledgement stores it again, a point of its own arrival time).
    The copies the next clean restart's subscription brings are still not taken."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    # The first runs hold what they received for 60 s before storing it: a kill -9 meanwhile leaves it unacknowledged.
    holding = tmp_path / "holding.toml"
    holding.write_text(config.read_text().replace("flush_interval_s = 0.1", "flush_interval_s = 60"))
    log = tmp_path / "bridge.log"
    sender = client(broker.port)
    will = {"schema": 1, "kind": "status", "device": "dev9", "ts": 1_700_000_000_000, "online": False, "will": True}
    sender.publish("posture/dev9/status", json.dumps(will), qos=1, retain=True).wait_for_publish(10)
    sender.publish("posture/ghost/status", b"not json", qos=1, retain=True).wait_for_publish(10)
    watcher, published = listen(broker.port, "posture/_deadletter")

    def stored() -> list[dict]:
        return influx.rows('SELECT "topic", "reason" FROM "posture_deadletter"', DB)

    def wills() -> list[dict]:
        return influx.rows("SELECT \"online\" FROM \"posture_status\" WHERE \"device_id\" = 'dev9'", DB)

    bridge, stop = None, signal.SIGKILL  # a holding run would stop only at its next flush
    try:
        for kills in (1, 2):  # the second run is sent the first run's copies again, and its own subscription's
            bridge = start_bridge(holding, log)
            wait_for(lambda n=kills: len(published) == n, 30,
                     lambda n=kills: f"run {n} to dead-letter the copy it was sent again, published: {published}")
            time.sleep(1.0)  # the will, sent in the same breath as the garbage, is held too
            bridge.send_signal(signal.SIGKILL)
            bridge.wait(30)
        assert stored() == [] and wills() == [], "stored before the kill: the case is not made"
        bridge, stop = start_bridge(config, log), signal.SIGTERM
        bridge_ready(broker, influx)
        wait_for(lambda: stored() and wills(), 30, lambda: f"what the killed bridges did not store: {stored()}, "
                                                           f"{wills()}")
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        stats = json.loads(log.read_text().strip().splitlines()[-1])
        # Sent again: the first run's copy and the second's; sent anew: the third's subscription's copy.
        assert stats["malformed"] == {"not JSON": 1} and stats["refused_again"] == 2, stats
        bridge = start_bridge(config, log)
        # A probe of its own: the first is stored already, and the wait returned at once; on a loaded machine the stop
        # below then came before this run was up, it wrote no stats, and the third run's were read (CI, 2026-12-07).
        bridge_ready(broker, influx, "probe-4")
        time.sleep(1.0)
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.send_signal(stop)
            bridge.wait(30)
        sender.loop_stop()
        watcher.loop_stop()
    assert [r["topic"] for r in stored()] == ["posture/ghost/status"]
    assert [r["online"] for r in wills()] == [False]
    assert len(published) == 3, published  # published as each run took it, before storing: one per run that did
    stats = json.loads(log.read_text().strip().splitlines()[-1])
    assert stats["malformed"] == {} and stats["refused_again"] == 1, stats
