"""`posture bridge`: MQTT → InfluxDB, losing nothing (metrics, events, status and the alert log).

- A persistent MQTT session (MQTT 5 clean_start false + session expiry, or 3.1.1 clean session
  off), QoS 1: while the bridge is away the broker keeps its messages.
- Messages are acknowledged (paho `manual_ack`) only once their points are stored: written to
  InfluxDB, or, while InfluxDB is down, in the on-disk spool (service_io/spool.py), which is
  written to InfluxDB when it answers again. A `kill -9` loses nothing: unacknowledged messages
  are redelivered, spooled points are on disk, and a point written twice overwrites itself.
- Malformed payloads (not JSON, too large or deep, wrong schema, wrong types, times out of range) are
  counted and published, with the reason, to a dead-letter topic; they never stop the bridge, and
  neither does any other error met handling a message (it is counted and dead-lettered as `error`).
- A point InfluxDB refuses (400: a field type conflict, a time out of its range) is found by
  bisecting the batch, dead-lettered with InfluxDB's reason and counted; the rest are stored, and it
  never blocks the spool. An outage (no answer, 5xx) is retried from the spool; settings that do not
  work (401/403, no such database or bucket) are said so, naming the key, while the spool keeps the
  points. A 1.x database that does not exist is created (service_io/influx.py).
- If the points can be neither written nor spooled (disk full), their messages stay unacknowledged
  and are tried again: the broker keeps them, and a restarted bridge receives them again.
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

from contract.identity import check_device
from contract.influx_schema import dead_letter_line, to_line_protocol
from contract.messages import stamp_will
from contract.validation import Malformed, Validators, load_validators, parse, stream_of
from service_io.config import BridgeSettings, Config
from service_io.influx import PointsRefused, SettingsError, WriteError, Writer, make_writer
from service_io.mqtt import MqttEndpoint
from service_io.spool import Spool, SpoolError

log = logging.getLogger("posture.bridge")
SUBTOPICS = ("metrics", "events", "status", "alerts/log")
RETRY_INFLUX_S = 2.0
DEAD_LETTERS = ""  # the "topic" of a dead-letter point in the pending batches and the spool
NO_MESSAGE = -1  # the "mid" of a pending point that no MQTT message waits on
WARN_EVERY_S = 30.0  # a trouble that lasts is said again this often, not once per batch
Item = tuple[str, str]  # (topic it came on, line protocol)


@dataclass
class BridgeStats:
    received: int = 0
    points_written: int = 0
    points_spooled: int = 0
    points_refused: int = 0  # InfluxDB refused them (400): dead-lettered with its reason
    spool_failures: int = 0  # batches neither InfluxDB nor the spool took: held unacknowledged, tried again
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
        self._warned: dict[str, float] = {}  # trouble → when it was last logged (monotonic s)
        # (mid, qos, connection, topic, lines) not yet stored; a packet id is only good on its connection
        self._pending: list[tuple[int, int, int, str, list[str]]] = []
        self._last_dead_letter_ms = 0
        self._connection = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stop_event = threading.Event()
        prefix = config.mqtt.prefix
        self.mqtt = MqttEndpoint(config.mqtt, self.cfg.client_id, name="bridge", manual_ack=True, persistent=True,
                                 session_expiry_s=self.cfg.session_expiry_s,
                                 subscriptions=[(f"{prefix}/+/{sub}", 1) for sub in SUBTOPICS],
                                 on_message=self._on_message, on_connected=self._on_connected,
                                 stopping=self.stop_event)
        self.client, self.connected = self.mqtt.client, self.mqtt.connected

    @classmethod
    def open(cls, config: Config, writer: Writer | None = None) -> Bridge:
        """A bridge with its on-disk spool open (created if new) and the JSON Schemas loaded."""
        return cls(config, Spool(Path(config.bridge.spool_path), config.bridge.spool_max_points), load_validators(),
                   writer)

    # paho's network thread --------------------------------------------------------------
    def _on_connected(self, client: mqtt.Client, session_present: bool) -> None:
        self._connection += 1

    def _on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        """Never raises: an exception here ends paho's thread, and the unacknowledged message would come
        back to end the next bridge's too."""
        self.stats.received += 1
        try:
            stream = stream_of(msg.topic)
            doc = parse(stream, msg.payload, self.validators)
            check_device(msg.topic, doc)  # the topic says whose data it is (the ACL's unit), not the payload
            lines = to_line_protocol(stamp_will(doc, time.time()), stream)
        except (Malformed, KeyError, TypeError, ValueError) as exc:
            self._refuse(client, msg, str(exc))
            return
        except Exception as exc:  # a bug met: said once with its traceback, then counted like the rest
            if not self.stats.malformed["error"]:
                log.exception("handling a message on %s failed; further failures are counted", msg.topic)
            self._refuse(client, msg, f"error: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._pending.append((msg.mid, msg.qos, self._connection, msg.topic, lines))
            if len(self._pending) >= self.cfg.batch_points:
                self._wake.set()

    def _refuse(self, client: mqtt.Client, msg: mqtt.MQTTMessage, reason: str) -> None:
        """A malformed message: counted, said once per kind, dead-lettered; acknowledged once its dead letter is
        stored, like any other point."""
        kind = reason.split(":", 1)[0]
        self.stats.malformed[kind] += 1
        if sum(self.stats.malformed.values()) == 1 or self.stats.malformed[kind] == 1:
            log.warning("malformed message on %s (%s); further ones are counted", msg.topic, reason[:120])
        try:
            self._dead_letter(msg.topic, reason, msg.payload.decode("utf-8", "replace"), msg.mid, msg.qos)
        except Exception:  # nothing may escape into paho's thread (see _on_message)
            log.exception("dead-lettering a message on %s failed", msg.topic)
            client.ack(msg.mid, msg.qos)

    def _dead_letter(self, topic: str, reason: str, payload: str, mid: int = NO_MESSAGE, qos: int = 0,
                     store: bool = True) -> None:
        """Published to the dead-letter topic (the first 2000 characters of the payload), and stored in
        posture_deadletter with the next batch, before the message `mid` it came from is acknowledged: what the
        bridge could not use — a bug of ours included — is never lost."""
        body = {"topic": topic, "reason": reason, "payload": payload[:2000]}
        self.client.publish(self.dead_letter_topic, json.dumps(body), qos=1)
        if not store:
            return
        line = dead_letter_line(topic, reason, payload, self._dead_letter_ms())
        with self._lock:
            self._pending.append((mid, qos, self._connection, DEAD_LETTERS, [line]))

    def _dead_letter_ms(self) -> int:
        """Now, but after the last dead letter's time: two at the same millisecond would overwrite each other."""
        with self._lock:
            self._last_dead_letter_ms = max(int(time.time() * 1000), self._last_dead_letter_ms + 1)
            return self._last_dead_letter_ms

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
        items = [(topic, line) for _, _, _, topic, lines in batch for line in lines]
        done = self._write(items)
        if done < len(items):
            try:
                self.spool.put([(topic, line.encode()) for topic, line in items[done:]])
            except SpoolError as exc:  # neither InfluxDB nor the disk: keep them unacknowledged, try again
                self.stats.spool_failures += 1
                self._warn("spool", logging.ERROR, "cannot store or spool; messages stay unacknowledged: %s", exc)
                with self._lock:
                    self._pending[:0] = batch
                time.sleep(min(RETRY_INFLUX_S, self.cfg.flush_interval_s))
                return
            self.stats.points_spooled += len(items) - done
        for mid, qos, connection, _, _ in batch:  # stored (in InfluxDB or on disk): the broker may forget them
            if mid != NO_MESSAGE and connection == self._connection:  # older connection: the broker sends it again
                self.client.ack(mid, qos)

    def _drain_spool(self) -> None:
        try:
            while not self.stop_event.is_set() and (rows := self.spool.peek(self.cfg.batch_points)):
                done = self._write([(topic, body.decode()) for _, topic, body, _ in rows])
                self.spool.delete([row[0] for row in rows[:done]])  # the rest: written again later, idempotent
                if done < len(rows):
                    return
        except SpoolError as exc:
            self._warn("spool", logging.ERROR, "cannot empty the spool: %s", exc)

    def _write(self, items: list[Item]) -> int:
        """Write (topic, line) items in order; lines InfluxDB refuses are found by bisection and dead-lettered.
        Returns how many leading items are settled (stored or dead-lettered): fewer than all when InfluxDB
        is unavailable or the settings do not work with it, and the rest must wait."""
        if not items:
            return 0
        try:
            if self._writer is None:
                self._writer = make_writer(self.influx_cfg)
            self._writer.write([line for _, line in items])
        except PointsRefused as exc:
            if len(items) == 1:
                self._refused_point(*items[0], str(exc))
                return 1
            half = len(items) // 2
            done = self._write(items[:half])
            return done if done < half else half + self._write(items[half:])
        except SettingsError as exc:
            self._warn("settings", logging.ERROR, "InfluxDB refuses our settings, spooling to disk: %s", exc)
            time.sleep(min(RETRY_INFLUX_S, self.cfg.flush_interval_s))
            return 0
        except WriteError as exc:
            self._warn("outage", logging.WARNING, "InfluxDB unavailable, spooling to disk: %s", exc)
            time.sleep(min(RETRY_INFLUX_S, self.cfg.flush_interval_s))
            return 0
        self.stats.points_written += len(items)
        return len(items)

    def _refused_point(self, topic: str, line: str, reason: str) -> None:
        self.stats.points_refused += 1
        if self.stats.points_refused == 1:
            log.warning("InfluxDB refused a point (%s); it and any further ones go to %s, counted", reason[:160],
                        self.dead_letter_topic)
        # A refused dead letter is published, not stored again: InfluxDB would refuse it again.
        self._dead_letter(topic, f"refused by InfluxDB: {reason}", line, store=topic != DEAD_LETTERS)

    def _warn(self, trouble: str, level: int, text: str, exc: Exception) -> None:
        """One line when a trouble starts, and again every WARN_EVERY_S while it lasts."""
        now = time.monotonic()
        if now - self._warned.get(trouble, -1e9) > WARN_EVERY_S:
            log.log(level, text, exc)
            self._warned[trouble] = now
