"""MQTT test helpers: a paho client as a phone or a test publisher would use it, and polling with a reason."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from posture.local_servers import ServerMissing, free_port

DB = "posture"


def start_or_fail(server):
    """Start a server of posture/local_servers.py; a missing binary fails the test (never a skip) naming the package."""
    try:
        return server.start()
    except ServerMissing as exc:
        pytest.fail(str(exc))


def client(port: int, host: str = "127.0.0.1", user: tuple[str, str] | None = None, ca: str | None = None,
           client_id: str = "", max_inflight: int = 20) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(max_inflight)
    if user:
        c.username_pw_set(*user)
    if ca:
        c.tls_set(ca_certs=ca)
    c.connect(host, port)
    c.loop_start()
    return c


def wait_for(predicate, timeout_s: float, what) -> None:
    """Poll until predicate() holds; `what` (text, or a callable for a costly message) explains a timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what() if callable(what) else what}")


def listen(port: int, topic: str) -> tuple[mqtt.Client, list[dict]]:
    """A subscriber (QoS 1) collecting each message's JSON on topic, in order; subscribed when it returns."""
    got: list[dict] = []
    listener = client(port)
    listener.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    subscribed = threading.Event()
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.subscribe(topic, 1)
    assert subscribed.wait(10), "no SUBACK"
    return listener, got


class SlowUplink:
    """A TCP relay to the broker that holds every chunk the client sends for delay_s: a loaded machine or a long
    path, where the client's SUBSCRIBE reaches the broker well after the broker's CONNACK reached the client."""

    def __init__(self, port: int, delay_s: float) -> None:
        self.port, self.delay_s = free_port(), delay_s
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._broker_port = port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self._broker_port))
            threading.Thread(target=self._pump, args=(near, far, self.delay_s), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, 0.0), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay_s: float) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                time.sleep(delay_s)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
