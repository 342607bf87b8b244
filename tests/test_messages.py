"""Payloads the pipeline really produces: valid against the JSON Schemas, and mapped to stable points."""

from __future__ import annotations

import json
import re

import pytest

from alerts.engine import LIVE_MAX_GAP_S
from contract.influx_schema import FIELDS, to_line_protocol
from contract.messages import Status, payload, topic
from contract.validation import Malformed, load_validators, parse
from evaluation.accuracy import CASES, load_case_scenario
from firmware_sim.imu import SensorSimulation
from pipeline.live import MAX_EARLIER
from pipeline.stream import PosturePipeline
from service_io.config import LIVE_HZ_MAX, LIVE_HZ_MIN, MAX_PIPELINE_BATCH_S, ConfigError, load_config

# Tests sharing a module-scoped fixture run on one xdist worker, so it is built once.
pytestmark = pytest.mark.xdist_group("messages")
START_S = 1_700_000_000.0  # the sensor's clock as a gateway maps it: Unix time (the schemas refuse 1970)


@pytest.fixture(scope="module")
def produced() -> list:
    case = next(c for c in CASES if c.name == "office-short")
    sim = SensorSimulation(load_case_scenario(case), seed=case.seed)
    pipeline = PosturePipeline()
    items = []
    for ch in sim.chunks(max_samples=2000):
        out = pipeline.update(ch.t_s + START_S, ch.acc_g, ch.gyro_dps)
        items += out.events + out.metrics
    final = pipeline.finish()
    return items + final.events + final.metrics


def test_every_payload_validates_and_becomes_points(produced):
    validators = load_validators()
    kinds = set()
    for item in [*produced, Status(online=True, battery_pct=90, link_quality_pct=99.5)]:
        body = payload("desk-1", item, now_s=1_700_000_000.0)
        sub = topic("posture", "desk-1", item.kind).rsplit("/", 1)[-1]
        doc = parse(sub, json.dumps(body).encode(), validators)
        lines = to_line_protocol(doc)
        assert len(lines) == 1 and lines[0].endswith(str(body["ts"]))
        assert "device_id=desk-1" in lines[0]
        kinds.add(item.kind)
    # episode_start once the pipeline confirms episodes as they go on (issue 13)
    assert {"calibration", "slouch", "rotation", "lean", "metrics", "status"} <= kinds
    assert kinds <= {"calibration", "slouch", "rotation", "lean", "metrics", "status", "episode_start"}


def test_field_types_never_change(produced):
    """An int field stays an int (no 'i' on one line and a float on another): InfluxDB would refuse it."""
    for item in produced:
        if item.kind != "metrics":
            continue
        line = to_line_protocol(payload("d", item))[0]
        fields = dict(kv.split("=") for kv in line.split(" ")[1].split(","))
        for name, value in fields.items():
            assert value.endswith("i") == (FIELDS["metrics"][name] is int), (name, value)


@pytest.mark.parametrize("body, reason", [
    (b"{", "not JSON"), (b'{"schema": 1}', "schema"), (b"[1, 2]", "schema"),
    (json.dumps({"schema": 2, "kind": "status", "device": "d", "ts": 1, "online": True}).encode(), "schema"),
    (json.dumps({"schema": 1, "kind": "status", "device": "d e", "ts": 1, "online": True}).encode(), "schema"),
])
def test_malformed_payloads_are_refused_with_a_reason(body, reason):
    with pytest.raises(Malformed, match=f"^{reason}"):
        parse("status", body, load_validators())


def test_config_file_environment_and_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nport = 1884\nusername = "me"\npassword = "from-file"\n'
                    '[gateway]\nsensors = ["Back", "AA:BB:CC:DD:EE:FF"]\n')
    cfg = load_config(path, env={"POSTURE_MQTT_PASSWORD": "from-env", "POSTURE_INFLUX_API": "v1"},
                      overrides={"mqtt": {"port": 1999, "host": None}})
    assert cfg.mqtt.port == 1999 and cfg.mqtt.password == "from-env" and cfg.influx.api == "v1"
    assert cfg.gateway.sensors == ("Back", "AA:BB:CC:DD:EE:FF")
    assert "from-env" not in repr(cfg) and "from-env" not in str(cfg)
    path.write_text('[mqtt]\nprot = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key mqtt\.prot"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"mqtt\.port: expected int"):
        load_config(None, env={"POSTURE_MQTT_PORT": "eighty"})


def test_live_and_episode_start_config(tmp_path):
    cfg = load_config(None, env={})
    assert cfg.gateway.live_hz == 1.0 and cfg.influx.live_policy == "live" and cfg.influx.live_retention == "7d"
    assert cfg.influx.live_bucket == ""
    assert load_config(None, env={"POSTURE_GATEWAY_LIVE_HZ": "0"}).gateway.live_hz == 0  # off
    for bad in ("-1", "0.001", "50", "nan"):
        with pytest.raises(ConfigError, match=r"^gateway\.live_hz: must be 0"):
            load_config(None, env={"POSTURE_GATEWAY_LIVE_HZ": bad})
    for good in ("7d", "72h", "1h30m", "2w", "INF", "inf"):
        assert load_config(None, env={"POSTURE_INFLUX_LIVE_RETENTION": good}).influx.live_retention == good
    for bad in ("7 days", "30m", "", "7d; DROP DATABASE posture", "d7"):
        with pytest.raises(ConfigError, match=r"^influx\.live_retention: must be an InfluxQL duration"):
            load_config(None, env={"POSTURE_INFLUX_LIVE_RETENTION": bad})


def test_a_pipeline_batch_longer_than_the_alert_service_can_follow_is_refused():
    """gateway.pipeline_batch_s = 100 was taken without a word: a nudge and a minute up to 100 s late, and (one live
    message a batch) live states further apart than the alert service's LIVE_MAX_GAP_S, so that a slouch nudged live
    was never seen over and no slouch was nudged again. The bound keeps a second's margin below that gap, and a
    batch's live states within one message."""
    assert MAX_PIPELINE_BATCH_S + 1.0 <= LIVE_MAX_GAP_S
    assert LIVE_HZ_MAX * MAX_PIPELINE_BATCH_S <= MAX_EARLIER + 1
    for good in ("0", "0.25", "2"):
        assert load_config(None, env={"POSTURE_GATEWAY_PIPELINE_BATCH_S": good}).gateway.pipeline_batch_s == float(good)
    for bad in ("100", "2.5", "nan", "-1", "inf"):
        with pytest.raises(ConfigError, match=r"^gateway\.pipeline_batch_s: from 0 \(each notification alone\) to 2 s, "
                                              rf"got {bad}"):
            load_config(None, env={"POSTURE_GATEWAY_PIPELINE_BATCH_S": bad})


def test_a_live_stream_slower_than_the_alert_service_can_follow_is_refused():
    """gateway.live_hz = 0.2 (and down to 0.01) was taken without a word: live states 5 s apart, further than the
    alert service's LIVE_MAX_GAP_S, so that a slouch nudged live was never seen over and no slouch was nudged live
    again (tests/test_alert_live.py feeds it the states at the lowest rate taken). As for pipeline_batch_s, the
    bound keeps a second's margin below that gap; 0 (no live stream) stays."""
    assert 1 / LIVE_HZ_MIN + 1.0 <= LIVE_MAX_GAP_S
    for good in ("0", "0.5", "1", "10"):
        assert load_config(None, env={"POSTURE_GATEWAY_LIVE_HZ": good}).gateway.live_hz == float(good)
    for bad in ("0.33", "0.2", "0.01", "0.49"):
        with pytest.raises(ConfigError, match=r"^gateway\.live_hz: must be 0 \(no live stream\) or from 0\.5 "
                                              r"\(the alert service follows a slouch on live states at most 3 s "
                                              rf"apart\) to 10, got {bad}$"):
            load_config(None, env={"POSTURE_GATEWAY_LIVE_HZ": bad})


@pytest.mark.parametrize("env, said", [
    ({"POSTURE_MQTT_PROTOCOL": "v5"}, r'^mqtt\.protocol: "5" or "3\.1\.1", got \'v5\''),  # paho took it as 3.1.1
    ({"POSTURE_MQTT_PORT": "0"}, r"^mqtt\.port: a TCP port from 1 to 65535"),
    ({"POSTURE_MQTT_PORT": "70000"}, r"^mqtt\.port: a TCP port"),
    ({"POSTURE_BRIDGE_BATCH_POINTS": "-5"}, r"^bridge\.batch_points: at least 1, got -5"),
    ({"POSTURE_BRIDGE_FLUSH_INTERVAL_S": "nan"}, r"^bridge\.flush_interval_s: above 0"),
    ({"POSTURE_GATEWAY_SPOOL_MAX_MESSAGES": "0"}, r"^gateway\.spool_max_messages: at least 1"),
    # Taken as given, unsaid: the alert state or a spool in a temporary SQLite database, a spool dir the working one.
    ({"POSTURE_GATEWAY_CLIENT_ID": ""}, r"^gateway\.client_id: must not be empty"),
    ({"POSTURE_GATEWAY_SPOOL_DIR": " "}, r"^gateway\.spool_dir: must not be empty"),
    ({"POSTURE_BRIDGE_SPOOL_PATH": ""}, r"^bridge\.spool_path: must not be empty"),
    ({"POSTURE_BRIDGE_CLIENT_ID": ""}, r"^bridge\.client_id: must not be empty"),
    ({"POSTURE_ALERTS_STATE_PATH": ""}, r"^alerts\.state_path: must not be empty"),
    ({"POSTURE_ALERTS_CLIENT_ID": ""}, r"^alerts\.client_id: must not be empty"),
    ({"POSTURE_GATEWAY_STATUS_HEARTBEAT_S": "inf"}, r"^gateway\.status_heartbeat_s: a number of 0 or more"),
    ({"POSTURE_ALERTS_SESSION_EXPIRY_S": "-1"}, r"^alerts\.session_expiry_s: a number of 0 or more"),
    ({"POSTURE_INFLUX_API": "v3"}, r"^influx\.api: one of auto, v1, v2, got 'v3'"),  # said only at the first write
    ({"POSTURE_INFLUX_URL": "influx.local:8086"}, r"^influx\.url: an http:// or https:// address"),  # an outage
    ({"POSTURE_INFLUX_URL": "http://"}, r"^influx\.url: an http:// or https:// address with a host"),
    ({"POSTURE_INFLUX_URL": "admin:hunter2@db:8086"}, r"^influx\.url: .*, got '\*\*\*@db:8086'$"),  # no password
    ({"POSTURE_MQTT_PREFIX": "posture/#"}, r"^mqtt\.prefix: one or more topic levels"),  # the bridge's thread died
    ({"POSTURE_MQTT_PREFIX": "a/+"}, r"^mqtt\.prefix: one or more topic levels"),
    ({"POSTURE_MQTT_PREFIX": "posture/"}, r"^mqtt\.prefix: one or more topic levels"),
    # Another topic than the other services' (MQTT keeps the space), each waiting for the other, unsaid.
    ({"POSTURE_MQTT_PREFIX": " posture"}, r"^mqtt\.prefix: .*spaces around one, got ' posture'"),
    ({"POSTURE_MQTT_PREFIX": "site/posture "}, r"^mqtt\.prefix: .*spaces around one"),
    # The same topic rules for the other topics of our own: a wildcard in the alert service's subscription to Home
    # Assistant's status, or in the bridge's dead-letter topic (paho refuses to publish to it).
    ({"POSTURE_ALERTS_HA_PREFIX": "homeassistant/#"}, r"^alerts\.ha_prefix: one or more topic levels"),
    ({"POSTURE_ALERTS_HA_PREFIX": "home assistant "}, r"^alerts\.ha_prefix: .*spaces around one"),
    ({"POSTURE_ALERTS_HA_PREFIX": ""}, r"^alerts\.ha_prefix: one or more topic levels"),
    ({"POSTURE_BRIDGE_DEAD_LETTER_TOPIC": "posture/+/dead"}, r"^bridge\.dead_letter_topic: one or more topic levels"),
    ({"POSTURE_GATEWAY_SENSORS": '["Desk", 7]'}, r"^gateway\.sensors: expected a list of strings"),
    ({"POSTURE_GATEWAY_SENSORS": '["Desk", "Chair"'}, r"^gateway\.sensors: expected a list of strings"),
    ({"POSTURE_MQTT_HOST": " "}, r"^mqtt\.host: the broker's host name or address, got nothing"),
    # Looked up as a name for ever ("Name or service not known": a DNS outage, to the eye).
    ({"POSTURE_MQTT_HOST": "127.0.0.1:1883"}, r"^mqtt\.host: a host name or address alone \(the port is mqtt\.port\)"),
    ({"POSTURE_MQTT_HOST": "mqtt://broker"}, r"^mqtt\.host: a host name or address alone"),
    ({"POSTURE_MQTT_HOST": "[::1]"}, r"^mqtt\.host: a host name or address alone"),
    ({"POSTURE_MQTT_PASSWORD": "secret"}, r"^mqtt\.username: needed with mqtt\.password"),  # never sent, unsaid
    ({"POSTURE_INFLUX_DATABASE": ""}, r"^influx\.database: the database to write to"),  # said at the first write
    ({"POSTURE_INFLUX_DATABASE": "", "POSTURE_INFLUX_BUCKET": "b", "POSTURE_INFLUX_API": "v1"},
     r"^influx\.database: the database to write to"),  # a bucket is no database to /write
    ({"POSTURE_BRIDGE_SESSION_EXPIRY_S": "5000000000"}, r"^bridge\.session_expiry_s: at most 4294967295"),
    ({"POSTURE_ALERTS_SESSION_EXPIRY_S": "5000000000"}, r"^alerts\.session_expiry_s: at most 4294967295"),
    # A typo ran the service on the default, unsaid: the broker on localhost, the database "posture".
    ({"POSTURE_MQTT_HOTS": "broker"}, r"^environment variable POSTURE_MQTT_HOTS names no setting; did you mean "
                                      r"POSTURE_MQTT_HOST\?$"),
    ({"POSTURE_MQQT_HOST": "broker"}, r"^environment variable POSTURE_MQQT_HOST names no setting; did you mean "
                                      r"POSTURE_MQTT_HOST\?$"),
    ({"POSTURE_INFLUX_DB": "p"}, r"^environment variable POSTURE_INFLUX_DB names no setting; \[influx\] has url, "),
])
def test_settings_that_would_fail_later_or_silently_are_refused_at_start(env, said):
    with pytest.raises(ConfigError, match=said):
        load_config(None, env=env)


# TOML writes a list with literal strings too, and allows a comma after its last item: refused as JSON, the file's own
# way failed in a variable.
@pytest.mark.parametrize("value", ['["Desk","C0:FF:EE:00:00:01"]', "Desk, C0:FF:EE:00:00:01",
                                   "['Desk', 'C0:FF:EE:00:00:01']", '[ "Desk", "C0:FF:EE:00:00:01", ]'])
def test_a_list_in_the_environment_is_taken_written_as_in_the_file_or_with_commas(value):
    """Written as the file's TOML list, POSTURE_GATEWAY_SENSORS became the names '["Desk"' and '"C0:FF:EE:00:00:01"]':
    no sensor of either name was ever found, and the gateway looked for them every 30 s."""
    sensors = load_config(None, env={"POSTURE_GATEWAY_SENSORS": value}).gateway.sensors
    assert sensors == ("Desk", "C0:FF:EE:00:00:01")


def test_posture_variables_that_are_not_ours_are_left_alone():
    """Kubernetes gives every container variables for each Service of its namespace (a Service named posture-bridge:
    POSTURE_BRIDGE_SERVICE_HOST, POSTURE_BRIDGE_PORT_8086_TCP_ADDR …), and a wrapper may keep its own POSTURE_HOME:
    refusing them would stop the service in a crash loop for no setting of ours."""
    env = {"POSTURE_SERVICE_HOST": "10.0.0.5", "POSTURE_BRIDGE_SERVICE_HOST": "10.0.0.6",
           "POSTURE_BRIDGE_SERVICE_PORT": "8086", "POSTURE_BRIDGE_SERVICE_PORT_HTTP": "8086",
           "POSTURE_BRIDGE_PORT": "tcp://10.0.0.6:8086", "POSTURE_BRIDGE_PORT_8086_TCP_ADDR": "10.0.0.6",
           "POSTURE_HOME": "/opt/posture", "POSTURE_CONFIG": "/etc/posture.toml", "POSTURE_MQTT_HOST": "broker"}
    assert load_config(None, env=env).mqtt.host == "broker"


def test_a_config_file_that_is_no_utf8_text_is_said_in_one_line_naming_it(tmp_path):
    """A file saved in another encoding, or a directory given as the file: the line named neither the file nor the
    setting ("'utf-8' codec can't decode byte 0xff", "[Errno 21] Is a directory")."""
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[gateway]\nsensors = ["R\xfccken"]\n'.encode("latin-1"))
    for path in (latin, tmp_path):
        with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(path))}: "):
            load_config(path, env={})


def test_a_value_of_another_type_in_the_file_is_refused_not_converted(tmp_path):
    """TOML says what type a value is: `port = 1883.9` became the port 1883, `client_id = true` the id "True". A
    secret's value is not printed, also not when it is refused."""
    path = tmp_path / "c.toml"
    for text, said in (("[mqtt]\nport = 1883.9\n", r"^mqtt\.port: expected int, got 1883\.9"),
                       ("[mqtt]\nhost = 1.5\n", r"^mqtt\.host: expected str, got 1\.5"),
                       ("[alerts]\nclient_id = true\n", r"^alerts\.client_id: expected str, got True"),
                       ("[mqtt]\npassword = 20251204.5\n", r"^mqtt\.password: expected str, got a value of another "
                                                          r"type$")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=said):
            load_config(path, env={})
    path.write_text("[mqtt]\nport = 1884.0\nprotocol = 5\nusername = \"u\"\npassword = 20251204\n")  # as meant
    cfg = load_config(path, env={})
    assert (cfg.mqtt.port, cfg.mqtt.protocol, cfg.mqtt.password) == (1884, "5", "20251204")
    # A number or switch in quotes is read as the environment's text is (docs/mqtt.md says so).
    path.write_text('[mqtt]\nport = "1883"\n[alerts]\nha_discovery = "no"\n')
    cfg = load_config(path, env={})
    assert (cfg.mqtt.port, cfg.alerts.ha_discovery) == (1883, False)
    assert load_config(None, env={"POSTURE_INFLUX_URL": "HTTP://db:8086/proxy"}).influx.url == "HTTP://db:8086/proxy"
    assert load_config(None, env={"POSTURE_MQTT_PREFIX": "site/posture"}).mqtt.prefix == "site/posture"


@pytest.mark.parametrize(("given", "where", "named"), [
    ({}, "/write", "influx.username and influx.password"),  # 1.x with no credentials: the pair it takes
    ({"username": "u", "password": "p"}, "/write", "influx.username and influx.password"),
    ({"url": "http://u:p@db:8086"}, "/write", "influx.username and influx.password"),
    # A token on /write is sent (2.x's v1 API, 1.8's "user:password"): a wrong one is that token.
    ({"token": "t"}, "/write", "influx.token"),
    ({"token": "t"}, "/api/v2/write", "influx.token"),
    ({}, "/api/v2/write", "influx.token"),
])
def test_a_refused_write_names_the_credentials_that_were_sent(given, where, named):
    from service_io.influx import InfluxSettings, write_failure

    said = str(write_failure(InfluxSettings(**given), where, 401, "unauthorized"))
    assert f"check {named}" in said, said
