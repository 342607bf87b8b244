"""`posture bridge`: MQTT → InfluxDB, losing nothing (metrics, events, status and the alert log).

- A persistent MQTT session (MQTT 5 clean_start false + session expiry, or 3.1.1 clean session
  off), QoS 1: while the bridge is away the broker keeps its messages.
- Messages are acknowledged (paho `manual_ack`) only once their points are stored: written to
  InfluxDB, or, while InfluxDB is down, in the on-disk spool (service_io/spool.py), which is
  written to InfluxDB when it answers again. A `kill -9` loses nothing: unacknowledged messages
  are redelivered, spooled points are on disk, and a point written twice overwrites itself.
- Malformed payloads (not JSON, wrong schema, wrong types) are counted and published, with the
  reason, to a dead-letter topic; they never stop the bridge.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from contract.influx_schema import to_line_protocol
from contract.validation import Malformed, Validators, load_validators, parse, stream_of
from service_io.config import BridgeSettings, Config
from service_io.influx import WriteError, Writer, make_writer
from service_io.mqtt import MqttEndpoint
from service_io.spool import Spool

log = logging.getLogger("posture.bridge")
SUBTOPICS = ("metrics", "events", "status", "alerts/log")
RETRY_INFLUX_S = 2.0


@dataclass
class BridgeStats:
    received: int = 0
    points_written: int = 0
    points_spooled: int = 0
    malformed: Counter[str] = field(default_factory=Counter)


class Bridge:
    """Built by open(), which opens the spool; the constructor itself does no I/O."""

    def __init__(self, config: Config, spool: Spool, validators: Validators, writer: Writer | None = None):
        self.cfg: BridgeSettings = config.bridge
        self.influx_cfg = config.influx
        self.dead_letter_topic = self.cfg.dead_letter_topic or f"{config.mqtt.prefix}/_deadletter"
        self.stats = BridgeStats()
        self.spool = spool
        self.validators = validators
        self._writer = writer
        self._last_influx_warning_s = -1e9
        self._pending: list[tuple[int, int, list[str]]] = []  # (mid, qos, lines) not yet stored
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stop_event = threading.Event()
        prefix = config.mqtt.prefix
        self.mqtt = MqttEndpoint(config.mqtt, self.cfg.client_id, name="bridge", manual_ack=True, persistent=True,
                                 session_expiry_s=self.cfg.session_expiry_s,
                                 subscriptions=[(f"{prefix}/+/{sub}", 1) for sub in SUBTOPICS],
                                 on_message=self._on_message, stopping=self.stop_event)
        self.client, self.connected = self.mqtt.client, self.mqtt.connected

    @classmethod
    def open(cls, config: Config, writer: Writer | None = None) -> Bridge:
        """A bridge with its on-disk spool open (created if new) and the JSON Schemas loaded."""
        return cls(config, Spool(Path(config.bridge.spool_path), config.bridge.spool_max_points), load_validators(),
                   writer)

    # paho's network thread --------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        stream = stream_of(msg.topic)
        try:
            doc = parse(stream, msg.payload, self.validators)
            lines = to_line_protocol(doc, stream)
        except (Malformed, KeyError, TypeError, ValueError) as exc:
            self._dead_letter(msg, str(exc))
            client.ack(msg.mid, msg.qos)
            return
        with self._lock:
            self._pending.append((msg.mid, msg.qos, lines))
            if len(self._pending) >= self.cfg.batch_points:
                self._wake.set()

    def _dead_letter(self, msg: mqtt.MQTTMessage, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        self.stats.malformed[kind] += 1
        if sum(self.stats.malformed.values()) == 1 or self.stats.malformed[kind] == 1:
            log.warning("malformed message on %s (%s); further ones are counted", msg.topic, reason[:120])
        body = {"topic": msg.topic, "reason": reason, "payload": msg.payload[:2000].decode("utf-8", "replace")}
        self.client.publish(self.dead_letter_topic, json.dumps(body), qos=1)

    # the bridge's own thread ------------------------------------------------------------
    def run(self) -> None:
        """Until stop_event: connect, store what arrives, drain the spool when InfluxDB is back."""
        self.mqtt.start()
        try:
            while not self.stop_event.is_set():
                self._wake.wait(self.cfg.flush_interval_s)
                self._wake.clear()
                self._store_pending()
                self._drain_spool()
            self._store_pending()
        finally:
            self.mqtt.stop()
            if self._writer:
                self._writer.close()
            self.spool.close()

    def _store_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        lines = [line for _, _, ls in batch for line in ls]
        if not self._write(lines):
            self.spool.put([("", line.encode()) for line in lines])
            self.stats.points_spooled += len(lines)
        for mid, qos, _ in batch:  # stored (in InfluxDB or on disk): now the broker may forget them
            self.client.ack(mid, qos)

    def _drain_spool(self) -> None:
        while not self.stop_event.is_set() and (rows := self.spool.peek(self.cfg.batch_points)):
            if not self._write([row[2].decode() for row in rows]):
                return
            self.spool.delete([row[0] for row in rows])

    def _write(self, lines: list[str]) -> bool:
        if not lines:
            return True
        try:
            if self._writer is None:
                self._writer = make_writer(self.influx_cfg)
            self._writer.write(lines)
        except WriteError as exc:
            now = time.monotonic()
            if now - self._last_influx_warning_s > 30:  # once in a while, not per batch
                log.warning("InfluxDB unavailable, spooling to disk: %s", exc)
                self._last_influx_warning_s = now
            time.sleep(min(RETRY_INFLUX_S, self.cfg.flush_interval_s))
            return False
        self.stats.points_written += len(lines)
        return True
