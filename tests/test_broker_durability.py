"""What Mosquitto acknowledged survives its crash, with the shipped configs (issue 12, item 3).

The gateway deletes a message from its spool on PUBACK. While the bridge is away its persistent session
queues the messages in the broker, which then holds the only copy. Each test: a subscriber opens a
persistent QoS 1 session as the bridge does and leaves; the gateway's account publishes N QoS 1 messages
and gets every PUBACK; Mosquitto is killed with -9 and started again on the same port and data dir; the
subscriber comes back and must receive all N. Real Mosquitto, run with the shipped config file
(tests/support/example_broker.py changes only ports and paths).
"""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from support.example_broker import COMPOSE_CONF, EXAMPLE_CONF, ShippedMosquitto, replace_once
from support.mqtt import client, start_or_fail
from support.servers import make_password_file, make_test_ca

USERS = {"posture-gateway": "gw-Secret-1", "posture-bridge": "br-Secret-2"}
TOPIC = "posture/dev1/metrics"
# Mosquitto sends the PUBACK, then saves (write, fsync, rename) in the same pass of its loop. A kill
# inside that save loses what it was saving (measured: the last message, when killed within a
# millisecond of its PUBACK); the test kills after it, as the config's comment promises.
SAVE_S = 0.5


def example_before_issue_12() -> str:
    """The example config as it was: saved every 30 s (a crash lost 100 of 100 acknowledged messages)."""
    text = replace_once(EXAMPLE_CONF.read_text(), "autosave_on_changes true\n", "", EXAMPLE_CONF)
    return replace_once(text, "autosave_interval 1\n", "autosave_interval 30\n", EXAMPLE_CONF)


class Bridgelike:
    """A persistent session as posture bridge opens it (MQTT 5, clean_start false, a session expiry)."""

    def __init__(self, broker: ShippedMosquitto, user: tuple[str, str] | None) -> None:
        self.broker, self.user = broker, user
        self.received: list[int] = []
        self.subscribed = threading.Event()
        self.c: mqtt.Client | None = None

    def connect(self) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="posture-bridge", protocol=mqtt.MQTTv5)
        if self.user:
            c.username_pw_set(*self.user)
        c.on_message = lambda _c, _u, msg: self.received.append(json.loads(msg.payload)["n"])
        c.on_subscribe = lambda *_: self.subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        c.connect(self.broker.host, self.broker.port, clean_start=False, properties=properties)
        c.loop_start()
        self.c = c

    def leave(self) -> None:
        assert self.c is not None
        self.c.disconnect()
        self.c.loop_stop()


def crash_while_bridge_away(tmp_path, source, n: int, text: str | None = None) -> set[int]:
    """Run the scenario above; the distinct messages the returning subscriber got."""
    secured = source == EXAMPLE_CONF
    broker = ShippedMosquitto(
        tmp_path / "mosquitto", source, text=text,
        password_file=make_password_file(tmp_path / "passwd", USERS) if secured else None,
        tls=make_test_ca(tmp_path / "ca") if secured else None)
    start_or_fail(broker)
    publisher = None
    try:
        bridge = Bridgelike(broker, ("posture-bridge", USERS["posture-bridge"]) if secured else None)
        bridge.connect()
        assert bridge.c is not None
        bridge.c.subscribe([(TOPIC.replace("dev1", "+"), 1)])
        assert bridge.subscribed.wait(10), broker.log_tail()
        bridge.leave()

        publisher = client(broker.port, user=("posture-gateway", USERS["posture-gateway"]) if secured else None)
        sent = [publisher.publish(TOPIC, json.dumps({"n": k}), qos=1) for k in range(n)]
        for info in sent:
            info.wait_for_publish(60)  # the PUBACK: from here on the gateway would have deleted it
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
        publisher.loop_stop()
        time.sleep(SAVE_S)

        broker.kill()  # SIGKILL: nothing is saved on the way out
        broker.start()
        bridge = Bridgelike(broker, bridge.user)
        bridge.connect()
        deadline = time.monotonic() + 10
        while len(set(bridge.received)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        bridge.leave()
        return set(bridge.received)
    finally:
        if publisher is not None:
            publisher.loop_stop()
        broker.kill()


@pytest.mark.parametrize("source", [EXAMPLE_CONF, COMPOSE_CONF], ids=["example", "compose"])
def test_a_broker_crash_loses_nothing_it_acknowledged(tmp_path, source):
    n = 100
    got = crash_while_bridge_away(tmp_path, source, n)
    assert got == set(range(n)), f"{n - len(got)} of {n} acknowledged messages lost in the crash"


def test_the_old_example_config_lost_them(tmp_path):
    """The scenario has teeth: with the example as it was (autosave_interval 30) the crash loses them all."""
    n = 100
    got = crash_while_bridge_away(tmp_path, EXAMPLE_CONF, n, text=example_before_issue_12())
    assert len(got) == 0, f"only {n - len(got)} of {n} lost: the test no longer shows the crash"


def test_a_bridge_away_for_more_than_a_thousand_messages_loses_none(tmp_path):
    """Mosquitto's default max_queued_messages (1000) drops the rest silently; the shipped config keeps them,
    across a crash too."""
    n = 1500
    got = crash_while_bridge_away(tmp_path, EXAMPLE_CONF, n)
    assert got == set(range(n)), f"{n - len(got)} of {n} queued messages lost"
