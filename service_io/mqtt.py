"""One MQTT connection's lifecycle, the same for the gateway, the bridge and the alert service.

Connect in the background (the service starts without a broker), say why a connection fails or
drops and keep retrying, renew subscriptions and send the birth message on every connect (and
count as connected once the broker has taken the subscriptions; a filter it refuses is said), set a
will, send each packet at once (TCP_NODELAY), and stop within a bounded time. paho-mqtt 2.x does
the protocol; this adds what all three services need of it and had each written their own way.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from service_io.config import ConfigError, MqttSettings

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # the longest a stop waits for the goodbye message and for paho's thread
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: a client with our id connected
SHORT_CONNECTION_S = 5.0  # a connection dropped sooner than this: another client with our id, likely
REPEAT_WARNING_S = 60.0  # an unchanged failure is logged again this often, not at every retry


@dataclass(frozen=True)
class Message:
    """A message the endpoint sends by itself: the will, the birth on every connect, the goodbye on stop."""
    topic: str
    payload: str | bytes
    qos: int = 1
    retain: bool = True


def send_at_once(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """paho's on_socket_open, called on every (re)connect's new socket: TCP_NODELAY, no Nagle's algorithm.

    Why: a reply is often a second small packet right behind the first (the alert service's PUBACK, then its
    alert's PUBLISH). Nagle holds the second until the first is acknowledged, and the broker delays that ACK
    (it has nothing to send back): ~44 ms per reply. paho writes each MQTT packet whole as it is queued, so
    there is nothing for Nagle to gather that would be worth that wait."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):  # TLS too (a subclass)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # only slower, never broken: say so and go on
            log.warning("cannot set TCP_NODELAY on the MQTT socket: %s", exc)


class _PahosPropertiesToo(type):
    """paho's client module checks what it is given with its own name for the class (`will_set`: isinstance(properties,
    Properties)): with that name ours, paho's Properties that callers build, as paho documents, must still pass."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, Properties)


class _SharedTablesProperties(Properties, metaclass=_PahosPropertiesToo):
    """paho's MQTT 5 properties of one packet, its lookup tables built once for every packet, not anew for each.

    Why: on MQTT 5 paho makes a Properties for every packet it receives (a PUBLISH, a PUBACK), and paho's own __init__
    builds three tables that never change (the 27 property names, their types, the packets each is for), then
    unpack() first clears each of the 27 names with a string replace and a hasattr: 20 µs of the 41 µs paho took to
    receive a live state here, as much as the rest of its receive (on MQTT 3.1.1, with no properties, 21 µs), of
    the ~85 µs of CPU the bridge spends on one and ~145 µs the alert service (docs/benchmarks.md). Nothing else
    differs: paho's own methods read the packet's properties (they only read the tables), so a packet says what it
    said; clear() removes what was read, as paho's does."""

    def __init__(self, packetType: int) -> None:
        vars(self).update(_PAHO_TABLES, packetType=packetType)

    def clear(self) -> None:
        for name in [name for name in vars(self) if name not in _PAHO_TABLES and name != "packetType"]:
            delattr(self, name)


# What paho's Properties.__init__ sets besides packetType: only these tables, read and never changed by its methods
# (paho-mqtt 2.2, read for this). A paho that sets anything else keeps its own class
# (_read_properties_with_shared_tables).
_PAHO_TABLE_NAMES = frozenset({"types", "names", "properties"})
_PAHO_TABLES = {name: value for name, value in
                vars(Properties(PacketTypes.PUBLISH)).items()  # type: ignore[no-untyped-call]  # paho: unannotated
                if name != "packetType"}


def _read_properties_with_shared_tables() -> list[str]:
    """paho's modules that make the Properties of the packets it receives make _SharedTablesProperties instead (2.2:
    paho.mqtt._packet decodes them, the client builds a PUBACK's for on_publish; a paho that decodes them in the
    client alone is served by the same). The modules changed, or none if paho's Properties holds more than its tables
    (tests/test_mqtt_endpoint.py fails then, rather than the services silently getting slower)."""
    if _PAHO_TABLES.keys() != _PAHO_TABLE_NAMES:
        log.info("paho-mqtt's Properties is not as this module knows it; its own is used")
        return []
    changed = []
    for name in ("paho.mqtt._packet", "paho.mqtt.client"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "Properties", None) is Properties:
            module.Properties = _SharedTablesProperties  # type: ignore[attr-defined]  # paho's own name for it
            changed.append(name)
    return changed


PROPERTIES_SHARE_TABLES_IN = _read_properties_with_shared_tables()


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (on_connect_fail is not told)."""

    last_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


class MqttEndpoint:
    """A paho client set up from MqttSettings, its network loop in paho's own thread (loop_start, so
    publish() and ack() from other threads only queue: paho's thread alone writes to the socket).

    loop_stop() waits without limit (for a reconnect in progress or unacknowledged messages), and
    stopping a service must not hang: stop() waits for it at most STOP_WAIT_S, from a daemon thread.

    persistent: the broker keeps our subscriptions and queues QoS 1 messages while we are away
    (MQTT 5: clean_start false and a session expiry; 3.1.1: clean session off).
    on_connected(client, session_present) runs on paho's thread before the subscriptions and the
    birth message go out; on_message(client, message) for every message received. stopping: the
    service's own stop flag, if it has one: set, a reconnect does not start over.

    `connected` is set once the broker has answered the subscriptions (at once without any): a message
    published after it reaches us. Set at CONNACK, one published in the moment before the SUBSCRIBE was
    read went to no one on a first connection (a shared subscription's group has no session to queue it in).
    A filter the broker refuses in its SUBACK is said, naming it: the service would otherwise receive nothing from it
    and look connected. (Brokers whose ACL refuses there, EMQX's, do; Mosquitto 2.0 grants every filter and keeps
    what its ACL denies from delivery, unsaid.) A persistent session's backlog may come before the SUBACK: a
    service must hold what it handles before `connected` for then (alerts/service.py's `today`).
    """

    def __init__(self, settings: MqttSettings, client_id: str, *, name: str = "",
                 subscriptions: Sequence[tuple[str, int]] = (), will: Message | None = None,
                 birth: Message | None = None, manual_ack: bool = False, persistent: bool = False,
                 session_expiry_s: int = 0, max_inflight: int | None = None,
                 on_connected: Callable[[mqtt.Client, bool], None] | None = None,
                 on_message: Callable[[mqtt.Client, mqtt.MQTTMessage], None] | None = None,
                 stopping: threading.Event | None = None) -> None:
        self.settings = settings
        self.name = name or client_id
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.birth = birth
        self.mqtt5 = settings.protocol == "5"
        self.connected = threading.Event()
        self.stopping = stopping or threading.Event()
        self._on_connected = on_connected
        self._started = False
        self._last_warning: tuple[str, float] = ("", -1e9)
        self._connected_at_s = -1e9
        self._link_up = False  # CONNACK received on the current connection (connected may wait for the SUBACK)
        self._subscribe_mid: int | None = None
        self._session_present = False
        self._last_takeover_warning_s = -1e9
        self._short_connections = 0  # connections in a row that dropped within SHORT_CONNECTION_S
        self.client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                              protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311, manual_ack=manual_ack,
                              clean_session=None if self.mqtt5 else not persistent)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls_ca:
            try:
                self.client.tls_set(ca_certs=settings.tls_ca)
            except OSError as exc:  # ssl.SSLError too: alone, "[Errno 2] No such file" names neither key nor file
                raise ConfigError(f"mqtt.tls_ca: cannot use {settings.tls_ca!r} as a CA file: "
                                  f"{exc.strerror or exc}") from None
        if max_inflight is not None:
            self.client.max_inflight_messages_set(max_inflight)
        if will is not None:
            self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._connect_kwargs: dict[str, Any] = {"keepalive": settings.keepalive_s}
        if self.mqtt5:
            self._connect_kwargs["clean_start"] = not persistent
            if persistent:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
                properties.SessionExpiryInterval = session_expiry_s
                self._connect_kwargs["properties"] = properties
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_socket_open = send_at_once
        self.client.on_connect = self._connect_done
        self.client.on_connect_fail = self._connect_failed
        self.client.on_disconnect = self._disconnected
        self.client.on_subscribe = self._subscribed
        if on_message is not None:
            self.client.on_message = lambda client, _userdata, message: on_message(client, message)

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def publish(self, message: Message) -> mqtt.MQTTMessageInfo:
        """Queue one message (paho's thread sends it)."""
        return self.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)

    def start(self) -> None:
        """Connect in the background; returns at once, whether or not the broker is there."""
        if self._started:
            return
        self._started = True
        self.client.connect_async(self.settings.host, self.settings.port, **self._connect_kwargs)
        self.client.loop_start()

    def stop(self, goodbye: Message | None = None, end_session: bool = False) -> None:
        """Send goodbye if connected (waiting at most STOP_WAIT_S), disconnect, let paho's thread end.
        end_session (MQTT 5): the broker forgets our persistent session (its subscriptions) with this disconnect."""
        self.stopping.set()
        if goodbye is not None and self._link_up:
            info = self.publish(goodbye)
            with contextlib.suppress(RuntimeError, ValueError):  # the link dropped just now: the will says it
                info.wait_for_publish(STOP_WAIT_S)
        if end_session and self.mqtt5:
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
            properties.SessionExpiryInterval = 0
            self.client.disconnect(properties=properties)
        else:
            self.client.disconnect()
        if not self._started:
            return
        stopper = threading.Thread(target=self.client.loop_stop, name=f"mqtt-stop-{self.name}", daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT_S)
        if stopper.is_alive():
            log.warning("%s: MQTT thread still busy after %.0f s; leaving it (daemon)", self.name, STOP_WAIT_S)

    # paho's network thread ----------------------------------------------------------------
    def _connect_done(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                      reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            self._warn(f"MQTT broker {self.where} refused the connection: {reason_code}; retrying")
            return
        if self.stopping.is_set():  # reconnected while stopping: do not start over
            client.disconnect()
            return
        # The service learns of the new connection first (the alert service numbers connections: a packet
        # id from the last one must not be acknowledged on this one), then messages may come.
        if self._on_connected is not None:
            self._on_connected(client, flags.session_present)
        self._session_present = flags.session_present
        if self.subscriptions:
            self._subscribe_mid = client.subscribe(self.subscriptions)[1]
        if self.birth is not None:
            self.publish(self.birth)
        self._last_warning = ("", -1e9)
        self._connected_at_s = time.monotonic()
        self._link_up = True
        if not self.subscriptions:
            self._ready()

    def _subscribed(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_codes: Sequence[Any],
                    _properties: Any) -> None:
        if mid != self._subscribe_mid or not self._link_up:  # a SUBACK of a connection since lost
            return
        for (topic, _qos), reason in zip(self.subscriptions, reason_codes, strict=False):
            if reason.is_failure:
                self._warn(f"MQTT broker {self.where} refused the subscription to {topic!r}: {reason}; nothing "
                           f"published there reaches {self.name} (does the broker's ACL let client "
                           f"{self.client_id!r} read it?)")
        self._ready()

    def _ready(self) -> None:
        self.connected.set()
        log.info("%s: connected to MQTT %s; session present: %s", self.name, self.where, self._session_present)

    def _connect_failed(self, client: mqtt.Client, _userdata: Any) -> None:
        error = self.client.last_error
        self._warn(f"cannot reach MQTT broker {self.where}: {error or 'connection failed'}; retrying")

    def _disconnected(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                      _properties: Any) -> None:
        was_connected = self._link_up
        self._link_up = False
        self.connected.clear()
        if self.stopping.is_set():
            return
        lasted_s = time.monotonic() - self._connected_at_s
        # Two processes with one client id take the session from each other at every reconnect, and each message
        # goes to whichever holds it: say what to fix, not only that the link dropped. MQTT 5 brokers may say so
        # (reason 0x8E); Mosquitto 2.0.11 only closes the socket, so connections dropped soon after they were made are
        # taken for that too, said at most every REPEAT_WARNING_S (it recurs at every reconnect). Two in a row, not
        # one: a broker that crashed or restarted just after we connected drops one connection early, once.
        taken = getattr(reason_code, "value", None) == SESSION_TAKEN_OVER
        if was_connected:
            self._short_connections = self._short_connections + 1 if lasted_s < SHORT_CONNECTION_S else 0
        if taken or self._short_connections >= 2:
            now_s = time.monotonic()
            if now_s - self._last_takeover_warning_s >= REPEAT_WARNING_S:
                self._last_takeover_warning_s = now_s
                log.warning("%s: MQTT connection to %s %s: is another client connected as %r? Every process needs a "
                            "client id of its own; reconnecting", self.name, self.where,
                            "taken over by another with our id" if taken else
                            f"lost {lasted_s:.1f} s after it was made ({reason_code})", self.client_id)
        elif was_connected:
            self._warn(f"MQTT connection to {self.where} lost: {reason_code}; reconnecting")

    def _warn(self, text: str) -> None:
        """Once per new reason, and again every REPEAT_WARNING_S while it lasts: not at every retry."""
        last_text, last_s = self._last_warning
        now_s = time.monotonic()
        if text != last_text or now_s - last_s >= REPEAT_WARNING_S:
            log.warning("%s: %s", self.name, text)
            self._last_warning = (text, now_s)
