"""`posture bridge`: MQTT → InfluxDB, losing nothing (metrics, events, status, the alert log and the alert service's
day so far); and the live stream, best effort, in a retention policy of its own.

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
- Two copies of one minute (sent unfinished, then whole) are one point, and InfluxDB keeps the last write: a copy is
  written only if it saw at least as much of its minute as the one InfluxDB holds (read before each batch with
  minutes), so an unfinished copy that comes last is not stored over the whole one (docs/influx.md). A read InfluxDB
  refuses or answers unusably is said and counted, and the minutes are written checked against this bridge's own
  copies, then read again once it answers (MinutesUnread).
- If the points can be neither written nor spooled (disk full), their messages stay unacknowledged
  and are tried again: the broker keeps them, and a restarted bridge receives them again.
- Live states (`<prefix>/+/live`) are subscribed at QoS 0: the broker keeps none for an absent bridge (a
  week of seconds is no backlog worth replaying), but what arrives is stored like the rest (spooled
  while InfluxDB is down), in influx.live_policy (v2: the live bucket), which the bridge creates. One
  request goes to one policy, so a batch is split by policy; the spool keeps each point's topic, which
  says its policy. In the spool a live point is expendable: when the spool is full (bridge.spool_max_points)
  live points are deleted first, so they never push out the points that must not be lost (live_evicted); and
  it expires at its time + influx.live_retention, when it is deleted unsent, since its policy would delete it on
  arrival (live_expired). A live policy or bucket the settings cannot reach drops the live points (live_dropped).
- Several bridges (bridge.share_group, each with its own client_id and spool) split the messages through an MQTT 5
  shared subscription. Mosquitto hands a member its turn whether or not it is connected: a member that is away
  holds its share in its session until it returns, or until it is run once with `leave`, which unsubscribes, stores
  what the session holds and ends it (docs/mqtt.md, "Several bridges: a shared subscription").
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from contract.identity import check_device
from contract.influx_schema import MEASUREMENT, dead_letter_line, minute_coverage, to_line_protocol
from contract.messages import COVERAGE_FIELDS, Coverage, stamp_will
from contract.validation import Malformed, Validators, load_validators, parse, stream_of
from service_io.config import BridgeSettings, Config
from service_io.influx import (
    NOT_NOW_STATUSES,
    PointsRefused,
    QueryError,
    SettingsError,
    WriteError,
    Writer,
    duration_s,
    make_writer,
    query,
)
from service_io.influx import TIMEOUT_S as INFLUX_TIMEOUT_S
from service_io.mqtt import MqttEndpoint
from service_io.spool import Item as SpoolItem
from service_io.spool import Spool, SpoolError

log = logging.getLogger("posture.bridge")
# The alert service's day so far (today) for the Daily dashboard's program day and zone (contract TODAY_FIELDS).
SUBTOPICS = ("metrics", "events", "status", "alerts/log", "today")
LIVE = "live"  # best effort: QoS 0, stored apart (influx.live_policy)
BEYOND_RETENTION = "points beyond retention policy"  # 1.x's reason when a write held points its policy would delete
RETRY_INFLUX_S = 2.0
DEAD_LETTERS = ""  # the "topic" of a dead-letter point in the pending batches and the spool
NO_MESSAGE = -1  # the "mid" of a pending point that no MQTT message waits on
NO_SUBSCRIPTION = 0x11  # UNSUBACK's reason: the session had no such subscription
LEAVE_IDLE_S = 2.0  # leaving a share group: this long with no message and nothing unstored, the session is empty
WARN_EVERY_S = 30.0  # a trouble that lasts is said again this often, not once per batch
DELETE_AGAIN_S = 5.0  # rows drained while the spool could not delete them (a full disk): their delete tried this often
# A server that will not let the bridge read its minutes (a user granted WRITE only; an InfluxDB 2.x bucket with no
# v1 mapping) is asked again this seldom: it waits on a person, and meanwhile minutes are written unchecked
# (MinutesUnread).
READ_MINUTES_RETRY_S = 600.0
READ_REFUSED_STATUSES = (401, 403, 404)  # /query refused for settings a person must fix (READ, credentials, mapping)
# What the bridge reads of a device's stored minutes before a batch: from its first minute in the batch to its last,
# in stretches split where the batch has none of its minutes for longer than this (at most 60 minutes read unasked).
STRETCH_GAP_MS = 3_600_000
# A member of a share group reads a minute it wrote again this long after: the two copies of a minute can reach two
# members at the same moment, each read InfluxDB before the other wrote, and the last write was kept, the unfinished
# copy as often as not. The other's read and write each end within the HTTP timeout (10 s), so its write is in by
# then; a copy that saw more of its minute than what InfluxDB holds then is written again. At most VERIFY_MAX_MINUTES
# wait (a drain after an outage writes thousands a second): beyond, the oldest are read at once.
VERIFY_AFTER_S = 2 * INFLUX_TIMEOUT_S + 1
VERIFY_MAX_MINUTES = 50_000
# How many of the minutes it wrote last the bridge remembers the coverage of (about 6 MB): what keeps an unfinished copy
# of one out while InfluxDB cannot be read (MinutesUnread), the whole copy written before that included.
RECENT_MINUTES = 20_000
# The spool key of a minute written and not read again yet (its body: topic, a line end, its line), put before its
# message is acknowledged: a kill -9 within VERIFY_AFTER_S of the write forgot it, and another member's unfinished
# copy stored over it stayed. No MQTT topic holds a NUL; the spool's drain passes these by.
WRITTEN = "\x00written"
Item = tuple[str, str]  # (topic it came on, line protocol)


@dataclass
class BridgeStats:
    received: int = 0
    points_written: int = 0
    points_spooled: int = 0
    points_refused: int = 0  # InfluxDB refused them (400): dead-lettered with its reason
    spool_failures: int = 0  # batches neither InfluxDB nor the spool took: held unacknowledged, tried again
    live_expired: int = 0  # live points older than influx.live_retention: deleted from the spool unsent, or dropped by
    #                        InfluxDB on arrival (its policy would delete them)
    live_dropped: int = 0  # live points whose policy or bucket the settings do not reach: dropped, not spooled;
    #                        and those neither InfluxDB nor the spool took (not kept in memory for the next try)
    live_evicted: int = 0  # live points the full spool deleted to keep room for the rest (bridge.spool_max_points)
    points_evicted: int = 0  # other points the full spool deleted, the oldest: data lost (only with no live left)
    minutes_rewritten: int = 0  # copies of a minute this bridge wrote again, another member's copy (or another
    #                             writer's, while InfluxDB could not be read) that saw less of it stored over it
    minutes_superseded: int = 0  # copies of a minute not written: a copy that saw more of it is stored, or came too
    minute_reads_failed: int = 0  # reads of the stored minutes InfluxDB refused or answered unusably (MinutesUnread)
    minutes_unchecked: int = 0  # copies of a minute written without knowing what InfluxDB held (a read failed): only
    #                             against this bridge's own copies, and read again later (VERIFY_AFTER_S)
    malformed: Counter[str] = field(default_factory=Counter)
    refused_again: int = 0  # retained messages refused before, sent again as we subscribed again: not dead-lettered


class MinutesUnread(Exception):
    """InfluxDB answered the read of its stored minutes, but not with them: a refusal that waits on a person
    (`refused`: 401/403/404, "error authorizing query") or an answer that is not InfluxDB's (a proxy's page, JSON of
    another shape, a statement's error). The minutes are written all the same, checked only against this bridge's own
    copies, and read again later (_verify_written): waiting on it blocked every minute for as long as it lasted."""

    def __init__(self, reason: str, refused: bool = False):
        super().__init__(reason)
        self.refused = refused


# InfluxDB 1.x's answer for a statement it did not run, as one before it failed. Its HTTP handler merges results by
# statement id, and this one takes the place of the failed statement's own error: a read of several statements on a
# server without the database yet (the first batch of a fresh install) is answered with it alone, no reason said.
NOT_EXECUTED = "not executed"


class NotExecuted(MinutesUnread):
    """An answer of several statements that says a statement was not run, not why: asked again one at a time."""


def parse_stored_minutes(answer: object, stretches: list[tuple[str, int, int]],
                         ) -> tuple[dict[tuple[str, int], Coverage], list[tuple[str, int, int]]]:
    """/query's JSON for stretch_query(stretches) → (each stored minute's coverage by (device, ms), the stretches
    still to read). InfluxDB's [http] max-row-limit cuts an answer (1.6.7: the statement it stopped in is `partial`,
    the statements after it are left out): what follows the last row it gave is read again, and so is every statement
    not answered. MinutesUnread for anything that is not InfluxDB's answer: a statement's error, results or series
    of another shape, columns without the coverage fields, a time that is not epoch ms, a value that is not a number."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if isinstance(answer, dict) and "error" in answer:
        raise MinutesUnread(f"InfluxDB's answer is an error: {str(answer['error'])[:200]}")
    if not isinstance(results, list) or not all(isinstance(result, dict) for result in results):
        raise MinutesUnread("the answer has no list of results")
    stored: dict[tuple[str, int], Coverage] = {}
    answered: dict[int, tuple[bool, int | None]] = {}  # statement → (cut short, its last time)
    for position, result in enumerate(results):
        sid = result.get("statement_id", position)
        if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < len(stretches) or sid in answered:
            raise MinutesUnread(f"a result of statement {str(sid)[:40]!r} of {len(stretches)}")
        if "error" in result:
            error = str(result["error"])
            if "database not found" in error:  # 1.x before the first write: nothing stored
                answered[sid] = (False, None)
                continue
            if error == NOT_EXECUTED and len(stretches) > 1:
                raise NotExecuted(f"InfluxDB: statement {sid} of {len(stretches)} {error}")
            raise MinutesUnread(f"InfluxDB: {error[:200]}", refused="authoriz" in error)
        device, first_ms, last_ms = stretches[sid]
        series_list = result.get("series", [])
        if not isinstance(series_list, list) or not all(isinstance(series, dict) for series in series_list):
            raise MinutesUnread("series is not a list of series")
        last_seen: int | None = None
        for series in series_list:
            columns, values = series.get("columns"), series.get("values", [])
            if not isinstance(columns, list) or not isinstance(values, list):
                raise MinutesUnread("a series without columns or values")
            try:
                at = [columns.index(name) for name in ("time", *COVERAGE_FIELDS)]
            except ValueError:
                raise MinutesUnread(f"a series with columns {str(columns)[:120]}, not time and "
                                    f"{', '.join(COVERAGE_FIELDS)}") from None
            tags = series.get("tags") or {}
            if not isinstance(tags, dict) or tags.get("device_id", device) != device:
                raise MinutesUnread(f"a series of tags {str(tags)[:120]} in the statement for device {device!r}")
            for row in values:
                if not isinstance(row, list) or len(row) != len(columns):
                    raise MinutesUnread(f"a row {str(row)[:80]} that does not match its columns")
                t_ms, *coverage = (row[i] for i in at)
                if isinstance(t_ms, bool) or not isinstance(t_ms, int) or not first_ms <= t_ms <= last_ms:
                    raise MinutesUnread(f"a time of {str(t_ms)[:40]!r}, not epoch ms in {first_ms}..{last_ms}")
                if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in coverage):
                    raise MinutesUnread(f"a coverage of {str(coverage)[:80]}, not numbers")
                # A field the point lacks counts 0, as in the copies that come (contract minute_coverage).
                stored[device, t_ms] = tuple(0.0 if v is None else float(v) for v in coverage)
                last_seen = t_ms if last_seen is None else max(last_seen, t_ms)
        answered[sid] = (bool(result.get("partial")) or any(s.get("partial") for s in series_list), last_seen)
    left = []
    for sid, (device, first_ms, last_ms) in enumerate(stretches):
        if sid not in answered:
            left.append((device, first_ms, last_ms))
        elif answered[sid][0]:
            if (last_seen := answered[sid][1]) is None:  # cut short with nothing: the next read would be the same
                raise MinutesUnread("a statement cut short (partial) before its first row")
            if last_seen < last_ms:
                left.append((device, last_seen + 1, last_ms))
    if left and len(left) == len(stretches) and not answered:
        raise MinutesUnread("none of its statements answered")
    return stored, left


def _stretches(keys: set[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(device, first ms, last ms) covering these minutes: each device's, split where STRETCH_GAP_MS has none."""
    times: dict[str, list[int]] = {}
    for device, t_ms in keys:
        times.setdefault(device, []).append(t_ms)
    stretches = []
    for device in sorted(times):
        ordered = sorted(times[device])
        first = previous = ordered[0]
        for t_ms in ordered[1:]:
            if t_ms - previous > STRETCH_GAP_MS:
                stretches.append((device, first, previous))
                first = t_ms
            previous = t_ms
        stretches.append((device, first, previous))
    return stretches


def subscriptions(prefix: str, share_group: str = "") -> list[tuple[str, int]]:
    """The bridge's (topic filter, QoS): each result stream at QoS 1, live at QoS 0; with a share group, as MQTT 5
    shared subscriptions, so the broker hands each message to one bridge of the group (docs/mqtt.md, "Several
    bridges")."""
    share = f"$share/{share_group}/" if share_group else ""
    return [*((f"{share}{prefix}/+/{sub}", 1) for sub in SUBTOPICS), (f"{share}{prefix}/+/{LIVE}", 0)]


class Bridge:
    """Built by open(), which opens the spool; the constructor itself does no I/O."""

    def __init__(self, config: Config, spool: Spool, validators: Validators, writer: Writer | None = None,
                 leave: bool = False):
        self.cfg: BridgeSettings = config.bridge
        # Leaving the share group for good: unsubscribe rather than subscribe, store what the session holds, then end
        # the session, so that the broker hands this member's turns to the others (docs/mqtt.md, "Several bridges").
        self.leave = leave
        self._filters = subscriptions(config.mqtt.prefix, self.cfg.share_group)
        # A member's session may still hold the plain filters of when it ran alone: they would bring it every message
        # as well as its share. Let go of them at every connect (the broker answers "no subscription" if none).
        self._plain_filters = [t for t, _ in subscriptions(config.mqtt.prefix)]
        self._unsubscribed = threading.Event()
        self.leave_refused: str | None = None  # why --leave could not leave: no such member's session at the broker
        self._session_made = False  # that refusal's connect made the broker a session of the mistyped id
        self._last_message_s = time.monotonic()
        self.influx_cfg = config.influx
        self.dead_letter_topic = self.cfg.dead_letter_topic or f"{config.mqtt.prefix}/_deadletter"
        self.stats = BridgeStats()
        self.spool = spool
        self.validators = validators
        # InfluxDB writers by target: False the database's default policy, True the live policy (or bucket).
        self._writers: dict[bool, Writer] = {False: writer} if writer is not None else {}
        self._live_apart = bool(config.influx.live_policy or config.influx.live_bucket)
        # How long a spooled live point is worth sending: its policy's (or bucket's) retention; in the default
        # policy, for ever.
        retention_s = duration_s(config.influx.live_retention) if self._live_apart else None
        self._live_retention_s = retention_s if retention_s is not None and math.isfinite(retention_s) else None
        self._warned: dict[str, float] = {}  # trouble → when it was last logged (monotonic s)
        # The spool's rows up to this id (but WRITTEN ones) are stored and wait to be deleted: the spool would not let
        # go of them (a full disk). 0: none wait. The drain goes on past them (_drain_spool).
        self._drained_to = 0
        self._delete_again_at = 0.0  # monotonic s: when their delete is tried again
        # Minutes written to be read again (VERIFY_AFTER_S): (device, ms) → (when written, monotonic s; its coverage;
        # its item; its WRITTEN row in the spool, None if the spool would not take it), oldest first.
        # OrderedDicts, as queues: a plain dict taken from the front skips every key deleted before (12 µs more a
        # minute written at 20,000 kept, measured).
        self._written: OrderedDict[tuple[str, int], tuple[float, Coverage, Item, int | None]] = OrderedDict()
        # The last RECENT_MINUTES written: (device, ms) → coverage.
        self._recent: OrderedDict[tuple[str, int], Coverage] = OrderedDict()
        self._read_minutes_at = 0.0  # monotonic s from which InfluxDB is asked for its minutes again (after a refusal)
        self._reads_failing = False  # the last read of the stored minutes failed (said when they work again)
        # (mid, qos, connection, topic, lines) not yet stored; a packet id is only good on its connection
        self._pending: list[tuple[int, int, int, str, list[str]]] = []
        # The dead letters of points InfluxDB refused, while a batch is written: stored (or spooled) with that batch,
        # before its messages are acknowledged or its spool rows deleted (_settle_dead_letters).
        self._refused_letters: list[Item] = []
        self._last_dead_letter_ms = 0
        self._connection = 0
        self._session_present = False  # this connection found the broker holding our session (and subscriptions)
        # The retained messages (topic, payload) sent again with DUP on this connection and taken (_sent_again)
        self._taken_again: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stop_event = threading.Event()
        self.mqtt = MqttEndpoint(config.mqtt, self.cfg.client_id, name="bridge", manual_ack=True, persistent=True,
                                 session_expiry_s=self.cfg.session_expiry_s,
                                 subscriptions=[] if leave else self._filters,
                                 on_message=self._on_message, on_connected=self._on_connected,
                                 stopping=self.stop_event)
        self.client, self.connected = self.mqtt.client, self.mqtt.connected
        self.client.on_unsubscribe = self._on_unsubscribed

    @classmethod
    def open(cls, config: Config, writer: Writer | None = None, leave: bool = False) -> Bridge:
        """A bridge with its on-disk spool open (created if new), the JSON Schemas loaded, and the minutes a run before
        wrote and had not read again (_load_written)."""
        bridge = cls(config, Spool(Path(config.bridge.spool_path), config.bridge.spool_max_points), load_validators(),
                     writer, leave)
        bridge._load_written()
        return bridge

    # paho's network thread --------------------------------------------------------------
    def _on_connected(self, client: mqtt.Client, session_present: bool) -> None:
        self._connection += 1
        self._session_present = session_present
        self._taken_again.clear()
        if not session_present and not self.leave and (self._connection > 1 or self.spool.existed):
            # The broker queues for a session it holds: without it, what gateways published meanwhile is gone, and
            # only the broker's own log would say so.
            log.warning("the broker holds no session of %r (restarted without persistence, or the session expired): "
                        "what was published while the bridge was away is lost to it (docs/mqtt.md, 'Broker')",
                        self.cfg.client_id)
        if self.leave and self._connection == 1 and not session_present:
            # A mistyped --client-id would otherwise make a session of its own, find it empty and "leave", while the
            # member's session goes on collecting its share.
            self._session_made = True
            self._refuse_leave(f"the broker has no session for client id {self.cfg.client_id!r}: nothing to leave "
                               f"(is it the member's --client-id?)")
        elif self.leave:  # what the session already holds still comes; nothing more is queued for it
            self._unsubscribed.clear()
            client.unsubscribe([topic for topic, _ in self._filters])
        elif self.cfg.share_group:
            client.unsubscribe(self._plain_filters)

    def _on_unsubscribed(self, _client: mqtt.Client, _userdata: object, _mid: int, reason_codes: list[Any],
                         _properties: object) -> None:
        if not self.leave:
            return
        if self._connection == 1 and reason_codes and all(getattr(rc, "value", 0) == NO_SUBSCRIPTION for rc in
                                                              reason_codes):
            self._refuse_leave(f"the session of {self.cfg.client_id!r} holds no subscription of share group "
                               f"{self.cfg.share_group!r} to {self._plain_filters[0]}: nothing to "
                               f"leave (are bridge.share_group and mqtt.prefix the member's?)")
            return
        self._unsubscribed.set()

    def _refuse_leave(self, reason: str) -> None:
        self.leave_refused = reason
        self.stop_event.set()

    def _on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        """Never raises: an exception here ends paho's thread, and the unacknowledged message would come
        back to end the next bridge's too."""
        self.stats.received += 1
        self._last_message_s = time.monotonic()
        topic = msg.topic  # paho decodes it anew at each access
        try:
            stream = stream_of(topic)
            doc = parse(stream, msg.payload, self.validators)
            check_device(topic, doc)  # the topic says whose data it is (the ACL's unit), not the payload
            lines = [] if self._stored_before(msg, doc) else to_line_protocol(stamp_will(doc, time.time()), stream)
        except (Malformed, KeyError, TypeError, ValueError) as exc:
            self._refuse(client, msg, str(exc))
            return
        except Exception as exc:  # a bug met: said once with its traceback, then counted like the rest
            if not self.stats.malformed["error"]:
                log.exception("handling a message on %s failed; further failures are counted", topic)
            self._refuse(client, msg, f"error: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._pending.append((msg.mid, msg.qos, self._connection, topic, lines))
            if len(self._pending) >= self.cfg.batch_points:
                self._wake.set()

    def _stored_before(self, msg: mqtt.MQTTMessage, doc: dict[str, Any]) -> bool:
        """A gateway's last will sent again because we subscribed again (_sent_again): the broker queued the will for
        us when it was published, and it was stored then, at its arrival. Stamped with this arrival it would be a new
        offline status each time, and the Devices dashboard would say a sensor that crashed days ago was last heard
        now. Acknowledged, not stored."""
        return doc.get("kind") == "status" and bool(doc.get("will")) and self._sent_again(msg)

    def _sent_again(self, msg: mqtt.MQTTMessage) -> bool:
        """A retained message sent again because we subscribed again, with our session present, on a stream the broker
        queues for us (QoS 1; not live): it came, and was handled, when it was published.

        But not a copy sent again from the session (DUP): it was never acknowledged, so what it owed may never have
        been stored (a bridge killed -9 holding it: its dead letter, or the will it was, was lost). The first such
        copy of a retained message on a connection is taken (twice rather than never, if the kill came between its
        storing and its acknowledgement); the others are sent again: one more piles up in the session at each run
        that did not acknowledge its own (Mosquitto 2.0: each with DUP and retain, beside the copy the new
        subscription brings)."""
        if not msg.retain or not self._session_present or self._is_live_topic(msg.topic):
            return False
        if not msg.dup:
            return True
        copy = (msg.topic, bytes(msg.payload))
        if copy in self._taken_again:
            return True
        self._taken_again.add(copy)
        return False

    def _refuse(self, client: mqtt.Client, msg: mqtt.MQTTMessage, reason: str) -> None:
        """A malformed message: counted, said once per kind, dead-lettered; acknowledged once its dead letter is
        stored, like any other point. One sent again because we subscribed again (_sent_again), refused and
        dead-lettered when it came, is only counted apart and acknowledged in its turn: dead-lettered at each arrival,
        garbage left retained on a device's status topic was a new posture_deadletter point and a new message on the
        dead-letter topic at every restart of the bridge or the broker."""
        if self._sent_again(msg):
            self.stats.refused_again += 1
            with self._lock:
                self._pending.append((msg.mid, msg.qos, self._connection, DEAD_LETTERS, []))
            return
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
        line = self._dead_letter_line(topic, reason, payload)
        with self._lock:
            self._pending.append((mid, qos, self._connection, DEAD_LETTERS, [line]))

    def _dead_letter_line(self, topic: str, reason: str, payload: str) -> str:
        return dead_letter_line(topic, reason, payload, self._dead_letter_ms(),
                                bridge=self.cfg.client_id if self.cfg.share_group else "")

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
                self._verify_written()
                if self.leave and self._left():
                    break
            self._store_pending()
        finally:
            left = self.leave and self._left()
            # A refused --leave leaves nothing behind: the session its connect made the broker keep for a week, and
            # the spool file it made for the mistyped id (nothing can be in it: no subscription, no message).
            self.mqtt.stop(end_session=left or self._session_made)
            if left:
                log.info("left share group %r: session %r ended", self.cfg.share_group, self.cfg.client_id)
            for writer in self._writers.values():
                writer.close()
            made_empty = self._session_made and not self.spool.existed and not len(self.spool)
            self.spool.close()
            if made_empty:
                self.spool.path.unlink(missing_ok=True)

    def _left(self) -> bool:
        """Leaving: unsubscribed on this connection, the messages the session held all stored and acknowledged (none
        for LEAVE_IDLE_S: the broker sends what it holds at once, unless it waits for our acknowledgements), and the
        spool empty (its points came from here alone)."""
        with self._lock:
            pending = bool(self._pending)
        return (self.leave_refused is None and self._unsubscribed.is_set() and self.connected.is_set() and not pending
                and time.monotonic() - self._last_message_s >= LEAVE_IDLE_S
                and not self.spool.peek(1, skip_keys=(WRITTEN,)))

    def _store_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        items = [(topic, line) for _, _, _, topic, lines in batch for line in lines]
        left = [items[i] for i in self._store(items)] + self._settle_dead_letters()
        if left:
            try:
                self._spool(left)
            except SpoolError as exc:  # neither InfluxDB nor the disk: keep them unacknowledged, try again
                self.stats.spool_failures += 1
                self._warn("spool", logging.ERROR, "cannot store or spool; messages stay unacknowledged: %s", exc)
                # Live points are not kept for the next try: no broker window bounds them (QoS 0, a point a second
                # per wearer), so they piled up in memory for as long as it lasted (InfluxDB on the disk that is
                # full: hours), and every try wrote and spooled all of them again. Best effort: dropped, counted.
                kept = [entry for entry in batch if not self._is_live_topic(entry[3])]
                self.stats.live_dropped += sum(len(entry[4]) for entry in batch) - sum(len(e[4]) for e in kept)
                with self._lock:
                    self._pending[:0] = kept
                time.sleep(min(RETRY_INFLUX_S, self.cfg.flush_interval_s))
                return
            self.stats.points_spooled += len(left)
        for mid, qos, connection, _, _ in batch:  # stored (in InfluxDB or on disk): the broker may forget them
            if mid != NO_MESSAGE and connection == self._connection:  # older connection: the broker sends it again
                self.client.ack(mid, qos)
        # The broker sends no more than its in-flight window until we acknowledge: silence counts from here (leaving
        # would otherwise end a session that still held messages, after a slow write).
        self._last_message_s = time.monotonic()

    def _spool(self, items: list[Item]) -> None:
        """Into the spool, live points as expendable and expiring."""
        self._put([self._spool_item(topic, line) for topic, line in items])

    def _put(self, items: list[SpoolItem]) -> list[int]:
        """Into the spool: their ids. What the full spool deleted to make room is counted and said (expendable items
        as live points: a WRITTEN row deleted is counted there too)."""
        before, before_live = self.spool.dropped, self.spool.dropped_expendable
        ids = self.spool.put(items)
        live = self.spool.dropped_expendable - before_live
        durable = self.spool.dropped - before - live
        if live:
            self.stats.live_evicted += live
            self._warn("live evicted", logging.WARNING, "the spool is full (bridge.spool_max_points %s): live points "
                       "deleted to keep room for the rest (counted in live_evicted)", self.spool.max_items)
        if durable:
            self.stats.points_evicted += durable
            self._warn("evicted", logging.ERROR, "the spool is full (bridge.spool_max_points %s) with no live points "
                       "left: the oldest points were deleted (counted in points_evicted)", self.spool.max_items)
        return ids

    def _spool_item(self, topic: str, line: str) -> SpoolItem:
        """A live point is expendable, and expires at its time (the line's last word, ms) + influx.live_retention."""
        if not self._is_live_topic(topic):
            return topic, line.encode()
        expires_at_s = None
        if self._live_retention_s is not None:
            try:
                expires_at_s = int(line.rsplit(" ", 1)[1]) / 1000 + self._live_retention_s
            except (IndexError, ValueError):
                pass
        return topic, line.encode(), expires_at_s, True

    def _drain_spool(self) -> None:
        """The spool to InfluxDB, a batch at a time, each batch's rows deleted once stored. A spool that will not delete
        them (a full disk: SQLite's delete needs room for its log, and the spool itself may be what filled it) is
        drained on past them (_drained_to), their delete tried again every DELETE_AGAIN_S: stuck on its first batch, the
        bridge wrote those 5,000 points again five times a second, and the rest of the spool never, for as long as the
        disk stayed full (a 12 MB tmpfs: 5,513 of 10,513 spooled points, and 1.5 million writes for 30,000 minutes)."""
        if self._drained_to and time.monotonic() >= self._delete_again_at:
            self._delete_drained()
        try:
            while not self.stop_event.is_set():
                try:
                    self._expire()  # before each batch, and during an outage too: deleted unsent, it takes no more room
                except SpoolError as exc:  # a full disk: sent all the same, and InfluxDB drops them (live_expired)
                    self._warn("expire", logging.ERROR, "cannot delete expired live points from the spool: %s", exc)
                if not (rows := self.spool.peek(self.cfg.batch_points, after_id=self._drained_to,
                                                skip_keys=(WRITTEN,))):
                    return
                left = set(self._store([(topic, body.decode()) for _, topic, body, _ in rows]))
                # The dead letters of refused rows, on disk before those rows go (a kill -9 in between: the rows are
                # drained again, and dead-lettered twice rather than not at all).
                if letters := self._settle_dead_letters():
                    self._spool(letters)
                    self.stats.points_spooled += len(letters)
                # The rows before the first one left are stored; the rest: written again later, idempotent.
                stored_to = rows[first - 1][0] if (first := min(left, default=len(rows))) else self._drained_to
                if self._drained_to:  # deletes fail: they wait for _delete_drained
                    self._drained_to = stored_to
                else:
                    try:
                        self.spool.delete([row[0] for i, row in enumerate(rows) if i not in left])
                    except SpoolError as exc:
                        self._warn("undeleted", logging.ERROR, "the spool cannot delete what it sent to InfluxDB (%s): "
                                   "the rest of it is sent on, and those rows deleted once it can (a full disk?)", exc)
                        self._drained_to, self._delete_again_at = stored_to, time.monotonic() + DELETE_AGAIN_S
                if left:
                    return
        except SpoolError as exc:
            self._warn("spool", logging.ERROR, "cannot empty the spool: %s", exc)

    def _delete_drained(self) -> None:
        """The rows stored while the spool would not delete them (up to _drained_to), deleted a batch at a time, oldest
        first: each delete needs less room than one of them all. Tried again after DELETE_AGAIN_S if it still fails."""
        try:
            while self._drained_to:
                rows = self.spool.peek(self.cfg.batch_points, skip_keys=(WRITTEN,))
                self.spool.delete(ids := [row[0] for row in rows if row[0] <= self._drained_to])
                if len(ids) < len(rows) or not rows:
                    self._drained_to = 0
        except SpoolError:
            self._delete_again_at = time.monotonic() + DELETE_AGAIN_S
            return
        log.info("the spool deletes what it sent to InfluxDB again")

    def _expire(self) -> None:
        """Delete the expired live points from the spool, counted: their policy would drop them on arrival."""
        if expired := self.spool.expire(time.time()):
            self.stats.live_expired += expired
            self._warn("expired", logging.WARNING, "live points older than influx.live_retention deleted from the "
                       "spool, not sent (counted in live_expired): %s", expired)

    @staticmethod
    def _is_live_topic(topic: str) -> bool:
        """A live point: it came on a live topic (a dead letter is not one, whatever its topic)."""
        return topic != DEAD_LETTERS and topic.rpartition("/")[2] == LIVE  # stream_of(topic) == LIVE, cheaper

    def _is_live(self, topic: str) -> bool:
        """A point for the live policy (or bucket)."""
        return self._live_apart and self._is_live_topic(topic)

    def _store(self, items: list[Item]) -> list[int]:
        """Write (topic, line) items, one request per retention policy (the default one first): the indices of the
        items not settled, which must wait. Once InfluxDB fails, the other policy's items wait too (one retry
        pause, not one per policy)."""
        groups: dict[bool, list[int]] = {}
        for i, (topic, _) in enumerate(items):
            groups.setdefault(self._is_live(topic), []).append(i)
        left: list[int] = []
        for live in sorted(groups):
            indices = groups[live]
            minutes: dict[int, tuple[str, int, Coverage]] = {}
            unchecked = False
            if not live and not left:
                if (checked := self._superseded([items[i] for i in indices])) is None:  # InfluxDB did not answer
                    left += indices
                    continue
                superseded, by_position, unchecked = checked
                minutes = {i: by_position[k] for k, i in enumerate(indices) if k in by_position}
                indices = [i for k, i in enumerate(indices) if k not in superseded]  # settled: never written
            done = 0 if left else self._write([items[i] for i in indices], live)
            written = [(minutes[i], items[i]) for i in indices[:done] if i in minutes]
            for (device, t_ms, coverage), _ in written:
                self._recent[device, t_ms] = coverage
                self._recent.move_to_end((device, t_ms))  # the oldest first
            while len(self._recent) > RECENT_MINUTES:
                self._recent.popitem(last=False)
            if written and (self.cfg.share_group or unchecked):  # to be read again (_verify_written)
                self.stats.minutes_unchecked += len(written) if unchecked else 0
                self._remember_written(written)
            left += indices[done:]
        return sorted(left)

    def _superseded(self, items: list[Item]) -> tuple[set[int], dict[int, tuple[str, int, Coverage]], bool] | None:
        """The indices of the copies of a minute not to write: each minute's fullest copy (contract/messages.py,
        COVERAGE_FIELDS) is written, unless InfluxDB holds a fuller one — whatever order the copies came in (an
        unfinished copy resent after the whole one, from a gateway's spool after a restart or through a share group,
        was stored over it: InfluxDB keeps the last write). Of equal copies the last one of the batch is written.
        None: InfluxDB did not answer, and the items must wait. With them, the minutes among the items by index:
        (device, ms, coverage), and whether InfluxDB's copies were left unknown (MinutesUnread: checked against this
        bridge's own copies only)."""
        minutes = {k: found for k, (_, line) in enumerate(items) if (found := minute_coverage(line)) is not None}
        if not minutes:
            return set(), minutes, False
        keys = {(device, t_ms) for device, t_ms, _ in minutes.values()}
        try:
            best = self._stored_coverage(keys)
        except MinutesUnread:  # what InfluxDB could not tell, the copies this bridge wrote may
            best, unchecked = {}, True
            for key in keys:
                for mine in (self._recent.get(key), self._written[key][1] if key in self._written else None):
                    if mine is not None:
                        best[key] = max(best.get(key, mine), mine)
        else:
            unchecked = False
        if best is None:
            return None
        kept: dict[tuple[str, int], int] = {}
        for k, (device, t_ms, coverage) in minutes.items():
            stored = best.get((device, t_ms))
            if stored is None or coverage >= stored:
                best[device, t_ms], kept[device, t_ms] = coverage, k
        superseded = {k for k, (device, t_ms, _) in minutes.items() if kept.get((device, t_ms)) != k}
        if less := sum(coverage < best[device, t_ms] for k, (device, t_ms, coverage) in minutes.items()
                       if k in superseded):
            if not self.stats.minutes_superseded:
                log.info("a copy of a minute that saw less of it than one stored (or with it) is not written over "
                         "it; counted in minutes_superseded")
            self.stats.minutes_superseded += less
        return superseded, minutes, unchecked

    def _verify_written(self) -> None:
        """The minutes a share group member wrote, and those any bridge wrote unchecked (MinutesUnread), VERIFY_AFTER_S
        ago (or more than VERIFY_MAX_MINUTES wait), read again; one InfluxDB holds less of than the copy written
        (another member's copy, written after its read and ours; another writer's while InfluxDB could not be read)
        goes to the spool, checked and written again from there (and read again after), counted in minutes_rewritten.
        While InfluxDB cannot be read they wait, VERIFY_MAX_MINUTES at most."""
        if not self._written:
            return
        now, over = time.monotonic(), len(self._written) - VERIFY_MAX_MINUTES
        due: list[tuple[str, int]] = []
        for key, (written_at, *_) in self._written.items():
            if written_at > now - VERIFY_AFTER_S and len(due) >= over:
                break
            due.append(key)
        if not due:
            return
        try:
            stored = self._stored_coverage(set(due))
        except MinutesUnread:  # kept to be read once InfluxDB answers, but no more than VERIFY_MAX_MINUTES of them
            if (over := len(self._written) - VERIFY_MAX_MINUTES) > 0:
                self._forget_written(list(self._written)[:over])
                self._warn("unverified", logging.WARNING, "minutes written while InfluxDB could not be read, too "
                           "many to keep in memory to read again: the oldest %d not read again", over)
            return
        if stored is None:  # an outage: read again at the next turn
            return
        again = {}
        for key in due:
            if (held := stored.get(key)) is not None and held < self._written[key][1]:
                again[key] = self._written[key]
        try:
            # Spooled before their WRITTEN rows go: checked and written again from there, and remembered again then.
            self._spool([item for _, _, item, _ in again.values()])
        except SpoolError as exc:  # kept, to be read again at the next turn
            self._warn("spool", logging.ERROR, "cannot spool minutes to write again: %s", exc)
            self._forget_written([key for key in due if key not in again])
            return
        self._forget_written(due)
        if not again:
            return
        if not self.stats.minutes_rewritten:
            log.info("another writer (a member of share group %r, or one while InfluxDB could not be read) stored a "
                     "copy of a minute that saw less of it over the one this bridge wrote: written again (counted in "
                     "minutes_rewritten)", self.cfg.share_group)
        self.stats.minutes_rewritten += len(again)

    def _remember_written(self, written: list[tuple[tuple[str, int, Coverage], Item]]) -> None:
        """Minutes just written ((device, ms, coverage), item), to be read again VERIFY_AFTER_S from now: in memory,
        and in the spool (WRITTEN) before their messages are acknowledged, so a stop or a kill -9 within those seconds
        does not forget them (_load_written). A spool that will not take them leaves them in memory only."""
        now, stale = time.monotonic(), []
        for (device, t_ms, _), _ in written:
            if (old := self._written.pop((device, t_ms), None)) is not None and old[3] is not None:
                stale.append(old[3])  # to the end, the oldest first: its older copy's row goes
        try:
            # Expendable: a full spool deletes them before any point (and counts them with the live ones).
            rows: list[int | None] = list(self._put([(WRITTEN, f"{topic}\n{line}".encode(), None, True)
                                                    for _, (topic, line) in written]))
            self.spool.delete(stale)
        except SpoolError as exc:
            self._warn("spool", logging.ERROR, "cannot keep the minutes written on disk until they are read again: "
                       f"a kill -9 in the next {VERIFY_AFTER_S:.0f} s would forget them: %s", exc)
            rows = [None] * len(written)
        for ((device, t_ms, coverage), item), row in zip(written, rows, strict=True):
            self._written[device, t_ms] = (now, coverage, item, row)

    def _forget_written(self, keys: list[tuple[str, int]]) -> None:
        """Minutes read again (or too many to keep): out of memory and out of the spool."""
        rows = [row for key in keys if (row := self._written.pop(key)[3]) is not None]
        try:
            self.spool.delete(rows)
        except SpoolError as exc:  # read again after the next start: written again only over a copy that saw less
            self._warn("spool", logging.ERROR, "cannot delete minutes read again from the spool: %s", exc)

    def _load_written(self) -> None:
        """At start: the minutes a run before wrote and had not read again (stopped or killed within VERIFY_AFTER_S of
        writing them) go back into the spool as any copy: checked when it drains (_superseded: written again only over
        a copy that saw less), then read again as written. Forgotten, another member's unfinished copy stored over the
        whole one in those seconds stayed for good."""
        try:
            while rows := self.spool.of_key(WRITTEN, VERIFY_MAX_MINUTES):
                self._put([(topic, line.encode()) for _, _, body, _ in rows
                           for topic, _, line in [body.decode().partition("\n")]])
                self.spool.delete([row for row, _, _, _ in rows])  # a kill -9 before: put twice, written once
        except SpoolError as exc:
            log.warning("cannot read again the minutes written just before the last stop: %s", exc)

    def _stored_coverage(self, keys: set[tuple[str, int]]) -> dict[tuple[str, int], Coverage] | None:
        """How much of each of these minutes (device, ms) InfluxDB holds, for those it holds, read in pages where its
        max-row-limit cuts the answer. None if it did not answer (an outage: the minutes wait). MinutesUnread if it
        answered otherwise (said once per WARN_EVERY_S, counted in minute_reads_failed); a refusal is not asked again
        before READ_MINUTES_RETRY_S, as it waits on a person."""
        if time.monotonic() < self._read_minutes_at:
            raise MinutesUnread("not asked again yet", refused=True)
        stretches, stored = _stretches(keys), {}
        # InfluxDB's pages bring at least a row each, and the rows are minutes (on the minute, as the pipeline makes
        # them): more pages than minutes in the stretches is a server paging a millisecond at a time, for ever.
        pages_left = sum((last_ms - first_ms) // 60_000 + 1 for _, first_ms, last_ms in stretches)
        alone = False  # a statement at a time, after an answer that said one was not executed (NotExecuted)
        try:
            while stretches:
                if (pages_left := pages_left - 1) < 0:
                    raise MinutesUnread("more pages than minutes asked for")
                asked = stretches[:1] if alone else stretches
                try:
                    # In the body: a GET's URL is limited (InfluxDB 1.x answers 431 past 1 MB, a proxy 414 from 8 KB).
                    # By a deadline: VERIFY_AFTER_S counts on a read ending within INFLUX_TIMEOUT_S.
                    answer = query(self.influx_cfg, stretch_query(asked), in_body=True,
                                   deadline=time.monotonic() + INFLUX_TIMEOUT_S)
                except QueryError as exc:
                    if exc.status is None or exc.status >= 500 or exc.status in NOT_NOW_STATUSES:
                        self._warn("outage", logging.WARNING, "InfluxDB unavailable, spooling to disk: %s", exc)
                        time.sleep(min(RETRY_INFLUX_S, self.cfg.flush_interval_s))
                        return None
                    raise MinutesUnread(str(exc), refused=exc.status in READ_REFUSED_STATUSES) from None
                try:
                    page, left = parse_stored_minutes(answer, asked)
                except NotExecuted:  # once a read: alone, a statement is answered with its own error or rows
                    alone, pages_left = True, pages_left + 1
                    continue
                stretches = left + stretches[len(asked):]
                stored.update(page)
        except MinutesUnread as exc:
            self._unreadable(exc)
            raise
        if self._reads_failing:
            log.info("InfluxDB answers the bridge's reads of its minutes again: each copy of a minute is checked "
                     "against what it holds; those written unchecked meanwhile are read again")
            self._reads_failing = False
        return {key: coverage for key, coverage in stored.items() if key in keys}

    def _unreadable(self, exc: MinutesUnread) -> None:
        """A read of the stored minutes that failed: counted, and said in one line (once per WARN_EVERY_S)."""
        self.stats.minute_reads_failed += 1
        self._reads_failing = True
        if exc.refused:
            self._read_minutes_at = time.monotonic() + READ_MINUTES_RETRY_S
            self._warn("unreadable", logging.WARNING, "InfluxDB does not let the bridge read its minutes (%s): each "
                       "copy of a minute is written, checked only against this bridge's own copies (counted in "
                       "minutes_unchecked; grant the user READ on influx.database); asked again in "
                       f"{READ_MINUTES_RETRY_S:.0f} s", str(exc)[:300])
        else:
            self._warn("unusable", logging.WARNING, "InfluxDB's answer to the read of its minutes is not one the "
                       "bridge can use (%s): each copy of a minute is written, checked only against this bridge's own "
                       "copies (counted in minutes_unchecked), and read again later; is influx.url an InfluxDB?",
                       str(exc)[:300])

    def _write(self, items: list[Item], live: bool = False) -> int:
        """Write (topic, line) items in order to one policy (live: influx.live_policy); lines InfluxDB refuses are
        found by bisection and dead-lettered. Returns how many leading items are settled (stored or
        dead-lettered): fewer than all when InfluxDB is unavailable or the settings do not work with it, and the
        rest must wait."""
        if not items:
            return 0
        try:
            if live not in self._writers:
                self._writers[live] = make_writer(self.influx_cfg, live=live)
            self._writers[live].write([line for _, line in items])
        except PointsRefused as exc:
            if live and BEYOND_RETENTION in str(exc):
                # 1.x stored the rest and dropped only what its retention would delete (it says so only when
                # nothing else was wrong): settled, not dead-lettered — after a long outage that could be days of
                # seconds, bisected one request at a time into posture_deadletter, kept for ever.
                dropped = int(m.group(1)) if (m := re.search(r"dropped=(\d+)", str(exc))) else 0
                self.stats.live_expired += dropped
                self.stats.points_written += len(items) - dropped
                self._warn("expired", logging.WARNING, "InfluxDB dropped live points older than influx.live_retention "
                           "(counted in live_expired): %s", exc)
                return len(items)
            if len(items) == 1:
                self._refused_point(*items[0], str(exc))
                return 1
            half = len(items) // 2
            done = self._write(items[:half], live)
            return done if done < half else half + self._write(items[half:], live)
        except SettingsError as exc:
            if live:
                # Best effort, as on MQTT: a live policy or bucket that cannot be had (InfluxDB 2.x without
                # influx.live_bucket) must not spool a point a second per wearer for ever, nor hold the rest up.
                self.stats.live_dropped += len(items)
                self._warn("live", logging.ERROR, "live points cannot be stored, dropped (counted in live_dropped): "
                           "%s", exc)
                return len(items)
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
        why = f"refused by InfluxDB: {reason}"
        self._dead_letter(topic, why, line, store=False)
        if topic != DEAD_LETTERS:
            self._refused_letters.append((DEAD_LETTERS, self._dead_letter_line(topic, why, line)))

    def _settle_dead_letters(self) -> list[Item]:
        """Write the dead letters of the points the last writes refused: those not stored (InfluxDB gone meanwhile),
        for the caller to spool before it acknowledges or deletes what they came from. Queued for the next flush, a
        kill -9 before it lost the refused line (its message acknowledged, its spool row deleted), and a long drain
        of a spool with many refused rows held them all in memory."""
        letters, self._refused_letters = self._refused_letters, []
        return [letters[i] for i in self._store(letters)] if letters else []

    def _warn(self, trouble: str, level: int, text: str, detail: object) -> None:
        """One line when a trouble starts, and again every WARN_EVERY_S while it lasts."""
        now = time.monotonic()
        if now - self._warned.get(trouble, -1e9) > WARN_EVERY_S:
            log.log(level, text, detail)
            self._warned[trouble] = now


def stretch_query(stretches: list[tuple[str, int, int]]) -> str:
    """The InfluxQL that reads what InfluxDB holds of the minutes in these stretches (_stretches): one statement per
    (device, first ms, last ms), in that order (parse_stored_minutes reads them by position). One statement over all
    of them (the batch's earliest minute to its latest, every device) read every device's minutes between: a gateway's
    day-old minute resent from its spool among 10 other devices' current ones read 14,400 rows for 11 minutes; a drain
    after an outage mixing a day's backlog with today's minutes, 1 million rows for 72,000 minutes; and a read that
    runs past TIMEOUT_S is taken for an outage, its batch spooled and read again as it drains."""
    fields = ", ".join(f'"{name}"' for name in COVERAGE_FIELDS)
    return "; ".join(f'SELECT {fields} FROM "{MEASUREMENT["metrics"]}" WHERE "device_id" = \'{device}\' AND '
                     f'time >= {first_ms}ms AND time <= {last_ms}ms GROUP BY "device_id"'
                     for device, first_ms, last_ms in stretches)
