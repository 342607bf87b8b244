"""The server fixtures in posture/local_servers.py and tests/support/servers.py, proved against the real servers.

A missing binary fails (naming the Debian package), it never skips: the bridge's tests need them all.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from posture.local_servers import HOST, InfluxDB1, Mosquitto, ServerMissing, http, which
from support.servers import (
    SecuredInfluxDB1,
    SecuredMosquitto,
    VictoriaMetrics,
    make_password_file,
    make_test_ca,
    write_line_protocol,
)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    try:
        yield
    except ServerMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    with installed():
        broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def influxdb(tmp_path) -> Iterator[InfluxDB1]:
    server = InfluxDB1(tmp_path / "influxdb")
    with installed():
        server.start()
    yield server
    server.stop()


@pytest.fixture
def victoria(tmp_path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path / "victoria")
    with installed():
        server.start()
    yield server
    server.stop()


class MqttClient:
    """paho 2.x with its network loop in a thread, turning callbacks into queues a test can wait on."""

    def __init__(self, client_id: str = "", *, v5: bool = False) -> None:
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[mqtt.ConnectFlags, object]] = queue.Queue()
        self.subacks: queue.Queue[object] = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_connect = lambda _c, _u, flags, reason, _p: self.connacks.put((flags, reason))
        self.client.on_subscribe = lambda _c, _u, _mid, reasons, _p: self.subacks.put(reasons)

    def connect(self, port: int, **kwargs: object) -> tuple[mqtt.ConnectFlags, object]:
        self.client.connect(HOST, port, **kwargs)
        self.client.loop_start()
        return self.connacks.get(timeout=5)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos)
        self.subacks.get(timeout=5)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout=5)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def session_properties(expiry_s: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry_s
    return properties


def port_refuses(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_missing_binary_names_the_debian_package() -> None:
    with pytest.raises(ServerMissing, match="apt-get install -y some-package"):
        which("no-such-server-binary", "some-package")


def test_mosquitto_publish_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    sub, pub = MqttClient(), MqttClient()
    sub.connect(mosquitto.port)
    sub.subscribe("posture/+/trunk")
    pub.connect(mosquitto.port)
    pub.publish("posture/dev1/trunk", b'{"pitch": 12.5}')
    message = sub.next_message()
    assert (message.topic, message.payload) == ("posture/dev1/trunk", b'{"pitch": 12.5}')
    sub.close()
    pub.close()


def test_mosquitto_retained_message_survives_restart(mosquitto: Mosquitto) -> None:
    pub = MqttClient()
    pub.connect(mosquitto.port)
    pub.publish("posture/dev1/status", b"online", retain=True)
    pub.close()
    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.port == port
    sub = MqttClient()
    sub.connect(mosquitto.port)
    sub.subscribe("posture/dev1/status")
    message = sub.next_message()
    assert (message.payload, message.retain) == (b"online", True)
    sub.close()


def test_mosquitto_persistent_session_gets_message_queued_across_restart(mosquitto: Mosquitto) -> None:
    sub = MqttClient("bridge-1", v5=True)
    # clean_start=False from the very first CONNECT: mosquitto 2.0.11 writes to disk only the sessions
    # whose latest CONNECT had clean_start=False, so paho's default (clean only the first time) would
    # lose this one on restart, although the broker keeps it while it runs.
    sub.connect(mosquitto.port, clean_start=False, properties=session_properties(300))
    sub.subscribe("posture/#", qos=1)
    sub.close()

    pub = MqttClient()
    pub.connect(mosquitto.port)
    pub.publish("posture/dev1/trunk", b"while-away", qos=1)
    pub.close()
    mosquitto.restart()

    back = MqttClient("bridge-1", v5=True)
    flags, reason = back.connect(mosquitto.port, clean_start=False, properties=session_properties(300))
    assert flags.session_present, reason
    message = back.next_message()
    assert (message.topic, message.payload, message.qos) == ("posture/dev1/trunk", b"while-away", 1)
    back.close()


def test_mosquitto_password_file_rejects_a_wrong_password(tmp_path) -> None:
    with installed():
        passwords = make_password_file(tmp_path / "passwd", {"bridge": "right-one"})
        broker = SecuredMosquitto(tmp_path / "mosquitto", password_file=passwords).start()
    with broker:
        wrong = MqttClient()
        wrong.client.username_pw_set("bridge", "wrong-one")
        assert wrong.connect(broker.port)[1].is_failure
        wrong.close()
        right = MqttClient()
        right.client.username_pw_set("bridge", "right-one")
        assert not right.connect(broker.port)[1].is_failure
        right.close()


def test_mosquitto_tls_listener_with_the_generated_ca(tmp_path) -> None:
    with installed():
        tls = make_test_ca(tmp_path / "ca")
        broker = SecuredMosquitto(tmp_path / "mosquitto", tls=tls).start()
    with broker:
        client = MqttClient()
        client.client.tls_set(ca_certs=tls["cafile"])
        assert not client.connect(broker.tls_port)[1].is_failure
        client.subscribe("secure/#")
        client.publish("secure/x", b"over tls")
        assert client.next_message().payload == b"over tls"
        client.close()


def test_influxdb_write_query_and_ping(influxdb: InfluxDB1) -> None:
    status, headers, _ = http("GET", f"{influxdb.url}/ping")
    assert status == 204
    assert headers["X-Influxdb-Version"].startswith("1.6.")
    influxdb.create_database("posture")
    # The same measurement, tags and time twice: 1.x keeps one point, the later field values win.
    write_line_protocol(influxdb, "posture", ["trunk,device=dev1 pitch=1.0 1700000000000",
                                             "trunk,device=dev1 pitch=2.5,roll=0.5 1700000000000"])
    rows = influxdb.rows("SELECT * FROM trunk", "posture")
    assert rows == [{"time": 1700000000000, "pitch": 2.5, "roll": 0.5, "device": "dev1"}]


def test_influxdb_data_survives_stop_and_start(influxdb: InfluxDB1) -> None:
    influxdb.create_database("posture")
    write_line_protocol(influxdb, "posture", "trunk,device=dev1 pitch=3 1700000000000")
    port = influxdb.port
    influxdb.stop()
    assert port_refuses(port)
    influxdb.start()
    assert influxdb.port == port
    assert influxdb.rows("SELECT pitch FROM trunk", "posture") == [{"time": 1700000000000, "pitch": 3}]


def test_influxdb_auth_needs_the_admin_user(tmp_path) -> None:
    with installed(), SecuredInfluxDB1(tmp_path / "influxdb") as server:
        assert http("GET", f"{server.url}/query?q=SHOW+DATABASES")[0] == 401
        server.create_database("posture")
        server.restart()  # the admin user is created once and still works afterwards
        assert ["posture"] in server.query("SHOW DATABASES")["results"][0]["series"][0]["values"]


@pytest.mark.parametrize("kind", [Mosquitto, InfluxDB1, VictoriaMetrics])
def test_kill_then_start_on_the_same_port(tmp_path, kind: type) -> None:
    with installed():
        server = kind(tmp_path / "server").start()
    port = server.port
    server.kill()
    assert port_refuses(port)
    with installed():
        server.start()
    assert server.port == port and server.running
    server.stop()


@pytest.mark.parametrize("kind", [Mosquitto, InfluxDB1])
def test_a_first_start_whose_port_was_taken_meanwhile_starts_on_another(tmp_path, kind: type) -> None:
    """free_port() lets its port go; on a busy machine another process may take it before the server binds it
    (a suite on 6 workers saw influxd exit with "address already in use")."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        server = kind(tmp_path / "server")
        server.port = taken.getsockname()[1]
        with installed():
            server.start()
        try:
            assert server.running and server.port != taken.getsockname()[1]
        finally:
            server.stop()


def v2_write(url: str, bucket: str, point: Point) -> None:
    with InfluxDBClient(url=url, token="unused", org="posture-org") as client:
        writer = client.write_api(write_options=SYNCHRONOUS)
        writer.write(bucket=bucket, record=point, write_precision=WritePrecision.MS)


def trunk_point(ms: int) -> Point:
    return Point("trunk").tag("device", "dev1").field("pitch", 4.5).time(ms, WritePrecision.MS)


def test_influxdb_1_6_has_no_v2_write_api(influxdb: InfluxDB1) -> None:
    influxdb.create_database("posture")
    with pytest.raises(ApiException) as caught:
        v2_write(influxdb.url, "posture", trunk_point(1700000000000))
    assert caught.value.status == 404


def test_victoria_metrics_takes_a_v2_write_and_gives_it_back(victoria: VictoriaMetrics) -> None:
    ms = int(time.time() * 1000) - 5000  # older than the 1 s that VM's instant queries hold back
    v2_write(victoria.url, "posture", trunk_point(ms))
    # measurement_field becomes the metric name; v2's bucket and org leave no label.
    series = {"__name__": "trunk_pitch", "device": "dev1"}
    expected = [{"metric": series, "values": [4.5], "timestamps": [ms]}]
    assert victoria.export('{__name__="trunk_pitch"}') == expected
    assert float(victoria.query('trunk_pitch{device="dev1"}')[0]["value"][1]) == 4.5
    victoria.restart()
    assert victoria.export('{__name__="trunk_pitch"}') == expected
