"""Device identity (issue 12, item 5): different sensor names never share an id, a spool, a calibration or an
InfluxDB series; a name already safe keeps its id; a payload's device must be its topic's. Unit tests of
contract/identity.py, then through real BlueZoo + the virtual sensor, Mosquitto, the bridge and InfluxDB."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from importlib import resources

import pytest
from test_mqtt_influx import bridge_ready, start_bridge, write_config

from contract.identity import HASH_HEX, ID_PATTERN, MAX_ID_LEN, check_device, device_id, shown_name, topic_device
from contract.validation import SCHEMA_FILES, Malformed, load_validators, parse
from gateway.publisher import adopt_legacy_files, device_file
from support.alerts import Phone, publish, running_alerts, stop, wait_online
from support.alerts import write_config as alerts_config
from support.day_messages import slouchy_minute
from support.mqtt import DB, client, wait_for

# Names the old rule (anything outside [A-Za-z0-9_.:-] → '_') made one device.
OLD_COLLISIONS = [("#", "+"), ("a b", "a/b"), ("Датчик", "Сенсор"), ("desk #1", "desk +1"), ("Café", "Cafè")]


def old_device_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", name)[:64] or "sensor"


@pytest.mark.parametrize("pair", OLD_COLLISIONS)
def test_names_the_old_rule_merged_get_ids_of_their_own(pair):
    a, b = pair
    assert old_device_id(a) == old_device_id(b)
    assert device_id(a) != device_id(b)
    assert device_file(SPOOL, device_id(a), ".spool") != device_file(SPOOL, device_id(b), ".spool")


SPOOL = resources.files("contract")  # any directory: device_file only builds the path


@pytest.mark.parametrize("name", ["DeskSensor", "WT901BLE68", "C0:FF:EE:00:00:01", "desk-1", "a.b_c", "x" * 64])
def test_a_safe_name_keeps_the_id_it_always_had(name):
    assert device_id(name) == name == old_device_id(name)


def test_ids_are_stable_readable_and_safe():
    # Pinned: an id is a key in the user's spool, calibration and database; it must never change.
    assert device_id("a b") == "a_b-c8687a08aa"
    assert device_id("Café Sensor") == "Cafe_Sensor-dc93f60adc"
    assert device_id("Датчик") == "sensor-6a3290f757"
    assert device_id("") == "sensor-e3b0c44298"
    rng = random.Random(5)
    alphabet = "aZ9_.:- /#+éДд中\u0301\x00"
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))) for _ in range(5000)}
    ids = {device_id(n) for n in names}
    assert len(ids) == len(names), "two names met"
    assert all(ID_PATTERN.fullmatch(i) for i in ids)


def test_no_name_can_take_another_names_hashed_id():
    hashed = device_id("a b")
    assert device_id(hashed) != hashed, "a safe name that looks hashed must be hashed itself"
    assert device_id("x-0123456789") != "x-0123456789"
    assert device_id("x-01234567890") == "x-01234567890"  # eleven hex digits: not the pattern
    assert device_id("x-ABCDEF0123") == "x-ABCDEF0123"  # capitals: not the pattern
    long = "y" * 80
    assert len(device_id(long)) == MAX_ID_LEN and device_id(long).endswith(device_id(long)[-HASH_HEX:])


def test_the_schemas_allow_exactly_the_ids():
    for name in SCHEMA_FILES.values():  # every payload the bridge or the alert service reads
        device = json.loads((resources.files("contract") / "schemas" / name).read_text())["properties"]["device"]
        assert device["pattern"] == f"^{ID_PATTERN.pattern.split('{')[0]}+$" and device["maxLength"] == MAX_ID_LEN


@pytest.mark.parametrize("name", ["Desk\nSensor", "Desk\x00Sensor", "Desk\x1b[31mSensor", "Desk\x7f", "x" * 300])
def test_a_name_with_control_characters_is_shown_printable_and_refused_raw(name):
    """A status's sensor_name ends up in logs, Home Assistant and text exports: a newline there forges a line.
    The gateway sends it printable; a raw one from anyone else is refused."""
    status = {"schema": 1, "kind": "status", "device": device_id(name), "ts": int(time.time() * 1000), "online": True}
    validators = load_validators()
    shown = shown_name(name)
    assert shown is not None and shown.isprintable() and len(shown) <= 248
    assert parse("status", json.dumps({**status, "sensor_name": shown}).encode(), validators)["sensor_name"] == shown
    with pytest.raises(Malformed, match="schema"):
        parse("status", json.dumps({**status, "sensor_name": name}).encode(), validators)


def test_the_topic_names_the_device():
    assert topic_device("posture/a_b-c8687a08aa/metrics") == "a_b-c8687a08aa"
    assert topic_device("home/posture/Desk/alerts/log") == "Desk"
    check_device("posture/Desk/events", {"device": "Desk"})
    with pytest.raises(Malformed, match="^device:"):
        check_device("posture/Desk/metrics", {"device": "Other"})


def test_an_address_keeps_its_legacy_files_and_a_lookalike_name_its_own(tmp_path):
    (tmp_path / "C0_FF_EE_00_00_01.spool").write_text("spool")
    (tmp_path / "C0_FF_EE_00_00_01.spool-wal").write_text("wal")
    (tmp_path / "C0_FF_EE_00_00_01.calibration.json").write_text("{}")
    adopt_legacy_files(tmp_path, "C0:FF:EE:00:00:01")
    assert device_file(tmp_path, "C0:FF:EE:00:00:01", ".spool").read_text() == "spool"
    assert (tmp_path / "C0+FF+EE+00+00+01.spool-wal").read_text() == "wal"
    assert device_file(tmp_path, "C0:FF:EE:00:00:01", ".calibration.json").exists()
    assert device_file(tmp_path, "C0_FF_EE_00_00_01", ".spool") != device_file(tmp_path, "C0:FF:EE:00:00:01", ".spool")


def test_two_sensors_the_old_rule_merged_stay_two_devices(tmp_path, testbed, start_sim, broker, influx):
    """'desk #1' and 'desk +1' — one device `desk__1` before — each with its own id, spool, calibration file and
    InfluxDB series (its human name stored with its status), through BLE, posture run, the bridge."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    config.write_text(config.read_text() + "status_interval_s = 1.0\n")
    bridge = start_bridge(config, tmp_path / "bridge.log")
    bridge_ready(broker, influx)
    start_sim(name="desk #1", adapter="hci1", scenario="office-short", seed=3)
    start_sim(name="desk +1", adapter="hci2", scenario="office-short", seed=4)
    gateway = subprocess.Popen([sys.executable, "-m", "posture.cli", "run", "--config", str(config),
                                "--sensor", "desk #1", "--sensor", "desk +1", "--adapter", "hci0"], env=testbed.env,
                               stdout=open(tmp_path / "gateway.log", "w"), stderr=subprocess.STDOUT)
    ids = {device_id("desk #1"): "desk #1", device_id("desk +1"): "desk +1"}
    spool = tmp_path / "gateway-spool"
    try:
        def both_calibrated() -> bool:
            return all(device_file(spool, i, ".calibration.json").exists() for i in ids)

        wait_for(both_calibrated, 90,
                 lambda: "both sensors calibrated\n" + (tmp_path / "gateway.log").read_text()[-2000:])
        # A calibration found at a batch's last sample has measured nothing yet: stopped before the next batch, that
        # sensor has no minute (CI once). A live angle says samples were measured, so the stop sends their minute.
        wait_for(lambda: len(influx.rows('SELECT count(flexion_deg) FROM "live"."posture_live" GROUP BY device_id',
                                         DB)) == 2, 30, "both devices' live angles")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()[-2000:]
        wait_for(lambda: len(influx.rows("SELECT count(worn_s) FROM posture_minute GROUP BY device_id", DB)) == 2,
                 30, "both devices' minutes")
    finally:
        if gateway.poll() is None:
            gateway.kill()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=30)
    assert {p.name for p in spool.glob("*.spool")} == {f"{i}.spool" for i in ids}
    calibrations = [device_file(spool, i, ".calibration.json").read_text() for i in ids]
    assert calibrations[0] != calibrations[1], "two sensors, two mountings"
    for device, name in ids.items():
        status = influx.rows(f"SELECT sensor_name, online FROM posture_status WHERE device_id = '{device}'", DB)
        assert status and {s["sensor_name"] for s in status} == {name}
        assert influx.rows(f"SELECT worn_s FROM posture_minute WHERE device_id = '{device}'", DB)
    assert not influx.rows("SELECT worn_s FROM posture_minute WHERE device_id = 'desk__1'", DB)


def test_the_alert_service_refuses_a_payload_about_another_device_and_names_it_for_home_assistant(tmp_path, broker):
    config = alerts_config(tmp_path, broker, "[slouch]\nwindow_min = 5\nshare_pct = 50.0\nmin_worn_min = 3.0\n"
                                             "[limits]\nquiet_hours = \"\"\nmax_delay_s = 1000000\n"
                                             "[habit]\nsummary_time = \"\"\n")
    log = tmp_path / "alerts.log"
    with running_alerts(config, log) as service:
        victim, intruder = device_id("a b"), device_id("a/b")
        phone = Phone(broker.port, victim, extra=("homeassistant/#",))
        try:
            wait_online(broker.port, service, log)
            start = time.time() // 60 * 60 - 600
            # On the victim's topic, the intruder's minutes: refused, so neither wearer gets an alert from them.
            publish(broker.port,
                    [(f"posture/{victim}/metrics", slouchy_minute(intruder, start + 60 * k)) for k in range(6)])
            status = {"schema": 1, "kind": "status", "device": victim, "ts": int(start * 1000), "online": True,
                      "sensor_name": "a b"}
            publish(broker.port, [(f"posture/{victim}/status", status)], retain=True)
            publish(broker.port, [(f"posture/{victim}/metrics", slouchy_minute(victim, start + 60 * k))
                                  for k in range(6)])
            wait_for(lambda: phone.kinds(), 30, lambda: "the victim's own alert\n" + log.read_text()[-2000:])

            def device_names() -> set[str]:
                with phone.lock:
                    return {json.loads(m.payload)["device"]["name"] for t, msgs in phone.other.items()
                            if t.endswith("/config") for m in msgs}

            wait_for(lambda: "Posture a b" in device_names(), 30, lambda: f"HA's device name, got {device_names()}")
            stats = stop(service, log)
        finally:
            publish(broker.port, [(f"posture/{victim}/status", "")], retain=True)
    phone.close()
    assert stats["malformed"] == {"device": 6}
    assert all(a["device"] == victim for a in phone.alerts)


def test_the_bridge_refuses_a_payload_about_another_device(tmp_path, broker, influx):
    """Needs check_device wired into bridge/service.py (see contract/identity.py)."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    bridge = start_bridge(config, tmp_path / "bridge.log")
    dead: list[dict] = []
    watcher = client(broker.port)
    watcher.on_message = lambda c, u, m: dead.append(json.loads(m.payload))
    watcher.subscribe("posture/_deadletter", qos=1)
    try:
        bridge_ready(broker, influx)
        start = 1_700_000_000.0
        publish(broker.port, [("posture/victim/metrics", slouchy_minute("intruder", start)),
                              ("posture/victim/metrics", slouchy_minute("victim", start + 60))])
        wait_for(lambda: influx.rows("SELECT worn_s FROM posture_minute WHERE device_id = 'victim'", DB), 30,
                 "the victim's own minute")
        wait_for(lambda: dead, 10, "the dead letter")
    finally:
        watcher.loop_stop()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=30)
    assert not influx.rows("SELECT worn_s FROM posture_minute WHERE device_id = 'intruder'", DB)
    assert len(influx.rows("SELECT worn_s FROM posture_minute", DB)) == 1
    assert [d["reason"].split(":")[0] for d in dead] == ["device"]
