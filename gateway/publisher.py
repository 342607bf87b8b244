"""Publishing one device's results to MQTT without losing any: the gateway half of `posture run`.

Events and metrics go into the on-disk spool first (service_io/spool.py) and leave it only when
the broker has acknowledged them (QoS 1 PUBACK). While the broker is down they wait, in order,
across gateway restarts too; after a reconnect they are sent from the oldest on. A message may
arrive twice after a crash (at-least-once); the bridge's writes are idempotent, so the database
still holds it once. A disk that refuses the spool (full, read-only) does not lose them either: they wait in
memory, and go to the broker from there once the spool has nothing older to send (gateway/results_spool.py).
The status (online, battery, link quality) is retained and not spooled:
only the latest matters; the broker publishes "offline" for us (last will) if we vanish. It goes out
when something a reader sees changed and otherwise at a slow heartbeat (status_due). The live
state (what the wearer is doing now, about once a second) is best effort like the raw samples:
QoS 0, not spooled, and retained only when it changes (publish_live).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from contract.identity import shown_name
from contract.messages import SCHEMA_VERSION, Status, payload, topic
from gateway.results_spool import ResultsSpool
from gateway.status_flaps import FlapLimit
from pipeline.events import LiveState
from service_io.config import Config
from service_io.mqtt import Message, MqttEndpoint
from service_io.spool import Item, SpoolError
from service_io.spooled_sender import PubackRefusals, SpooledSender

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("posture.gateway")
MAX_INFLIGHT = 100
# Smaller moves are noise, not news: link quality is over the time since the last status (10–60 s, 1 000–6 000
# samples at 100 Hz), where one lost notification is 0.1–1 %; BLE signal strength wanders a few dB as the wearer moves.
LINK_QUALITY_STEP_PCT = 2.0
RSSI_STEP_DB = 5


@dataclass(frozen=True)
class StatusSchedule:
    """When a device's status goes out (gateway.status_interval_s, gateway.status_heartbeat_s)."""
    min_interval_s: float = 10.0  # a change of only counters, link quality or signal waits this long after the last
    heartbeat_s: float = 60.0  # an unchanged status goes out again this often: the dashboard's "last heard"


def status_due(sent: Status | None, sent_s: float, status: Status, now_s: float, schedule: StatusSchedule) -> bool:
    """Whether `status` should go out now, the last one sent being `sent` at sent_s (seconds, any one clock).

    At once when what it says of the sensor changed (online, battery, reconnects); a change of only the loss,
    malformed, duplicate or discarded counters, link quality (by more than LINK_QUALITY_STEP_PCT) or signal
    (RSSI_STEP_DB) no sooner than schedule.min_interval_s after the last status; and an unchanged one every
    schedule.heartbeat_s."""
    if sent is None:
        return True
    since_s = now_s - sent_s
    if since_s >= schedule.heartbeat_s:
        return True
    if (status.online, status.battery_pct, status.reconnects) != (sent.online, sent.battery_pct, sent.reconnects):
        return True
    if since_s < schedule.min_interval_s:
        return False
    counters = (status.lost_samples, status.malformed_packets, status.duplicate_packets, status.discarded_samples)
    return (counters != (sent.lost_samples, sent.malformed_packets, sent.duplicate_packets, sent.discarded_samples)
            or _moved(status.link_quality_pct, sent.link_quality_pct, LINK_QUALITY_STEP_PCT)
            or _moved(status.rssi_dbm, sent.rssi_dbm, RSSI_STEP_DB))


def _moved(value: float | None, before: float | None, step: float) -> bool:
    """By more than step, or to or from no value."""
    if value is None or before is None:
        return (value is None) != (before is None)
    return abs(value - before) > step


def live_key(state: LiveState) -> tuple[object, ...]:
    """The discrete part of a live state: what a late subscriber needs now and what changes seldom (the angles
    change every second and are not part of it)."""
    return (state.calibration, state.activity, state.slouching_since_s, state.leaning_since_s, state.lean_side,
            state.sitting_since_s)


def device_file(spool_dir: Path, device: str, suffix: str) -> Path:
    """The device's own file in the spool directory. Addresses have colons and file names should not; a colon
    becomes `+`, which no device id has, so `a:b` and `a_b` keep files of their own."""
    return spool_dir / f"{device.replace(':', '+')}{suffix}"


def adopt_legacy_files(spool_dir: Path, device: str) -> None:
    """Earlier versions wrote `:` as `_` (so `a:b` and `a_b` shared files): a device with a colon in its id
    (a sensor known by its address) takes its spool and calibration from there once, unless it has its own."""
    if ":" not in device:
        return  # its file name never changed
    # Before any spool is opened. The SQLite write-ahead log holds what a crash left unmerged: it moves along.
    for suffix in (".spool", ".calibration.json"):
        old, new = spool_dir / f"{device.replace(':', '_')}{suffix}", device_file(spool_dir, device, suffix)
        if old.exists() and not new.exists():
            for extra in ("-wal", "-shm", ""):  # the database file last: its presence marks the move undone
                moved = old.with_name(old.name + extra)
                if moved.exists():
                    moved.replace(new.with_name(new.name + extra))


class DevicePublisher:
    """Built by open(), which opens the device's spool (when the disk lets it); the constructor itself does no I/O."""

    def __init__(self, config: Config, device: str, results: ResultsSpool, name: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.device = device
        self.name = shown_name(name)  # the sensor's human name; `device` is the id derived from it
        self.prefix = config.mqtt.prefix
        self.results = results
        self.mqtt = MqttEndpoint(config.mqtt, f"{config.gateway.client_id}-{device}", name=device,
                                 will=self._status_message(Status(online=False, will=True)),
                                 max_inflight=MAX_INFLIGHT, on_connected=self._on_connected)
        self.client, self.connected = self.mqtt.client, self.mqtt.connected
        # One for the client: results go from the spool and from memory (a disk that refuses it), and a refusal of
        # either must be seen, before the spool may open at all.
        self.refusals = PubackRefusals(self.client)
        self._sender: SpooledSender | None = None  # once the spool is open
        self.status_schedule = StatusSchedule(config.gateway.status_interval_s, config.gateway.status_heartbeat_s)
        self.flaps = FlapLimit(config.gateway.status_interval_s)  # a link that flaps is no retained status a second
        self.clock = clock  # for status_due: monotonic seconds
        self._status_lock = threading.Lock()  # publish_status (the gateway's thread) against _on_connected (paho's)
        self._latest_status: Status | None = None
        self._sent_status: tuple[Status, float] | None = None  # the last status sent, and when (clock)
        self.status_published = 0
        self._live_lock = threading.Lock()  # publish_live (the gateway's thread) against _on_connected (paho's)
        self._live_retained: tuple[object, ...] | None = None  # live_key of the last state sent retained
        self._retain_next_live = True  # the first live state on each connection is retained
        self.live_published = self.live_retained = 0

    @classmethod
    def open(cls, config: Config, device: str, spool_dir: Path, name: str | None = None,
             clock: Callable[[], float] = time.monotonic) -> DevicePublisher:
        """A publisher with the device's spool file in spool_dir open (created if new), or to be opened once the
        disk lets it."""
        results = ResultsSpool(device_file(spool_dir, device, ".spool"), config.gateway.spool_max_messages, device)
        return cls(config, device, results, name, clock)

    @property
    def sender(self) -> SpooledSender | None:
        """What empties the spool to the broker, once the spool is open."""
        if (spool := self.results.spool) is None:
            return self._sender
        if self._sender is None:
            self._sender = SpooledSender(self.client, spool, max_inflight=MAX_INFLIGHT, mqtt5=self.mqtt.mqtt5,
                                         refusals=self.refusals)
        elif self._sender.spool is not spool:  # the file opened to write, after it could only be read
            self._sender.use(spool)
        return self._sender

    def _status_message(self, status: Status) -> Message:
        """The device's retained status, stamped now, with the sensor's human name."""
        status = dataclasses.replace(status, sensor_name=self.name)
        return Message(topic(self.prefix, self.device, "status"), json.dumps(payload(self.device, status,
                                                                                      now_s=time.time())))

    # called by the gateway (any thread) -------------------------------------------------
    def submit(self, items: list[Any]) -> None:
        rows: list[Item] = []
        for item in items:
            body = payload(self.device, item)
            rows.append((topic(self.prefix, self.device, item.kind), json.dumps(body).encode()))
        self.results.put(rows)

    def publish_status(self, status: Status) -> bool:
        """The device's status as it is now: sent if status_due (a change a reader sees, or the heartbeat), the link
        is not flapping (gateway/status_flaps.py) and connected; True if it was. Kept either way: each (re)connect
        sends the latest, and a clean stop its counters."""
        with self._status_lock:
            self._latest_status = status
            if not self.connected.is_set():
                return False
            now_s = self.clock()
            sent, sent_s = self._sent_status or (None, 0.0)
            if not status_due(sent, sent_s, status, now_s, self.status_schedule) or not self.flaps.may_send(status,
                                                                                                        now_s):
                return False
            self.flaps.sent(status, now_s)
            self._sent_status = status, now_s
            self.status_published += 1
        self.mqtt.publish(self._status_message(status))
        return True

    def publish_imu(self, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray) -> None:
        """Raw samples, best effort (QoS 0, not spooled): for live views, not for storage."""
        if self.connected.is_set() and len(t_s):
            body = {"schema": SCHEMA_VERSION, "kind": "imu", "device": self.device, "ts": int(t_s[0] * 1000),
                    "t_s": [round(t, 4) for t in t_s.tolist()], "acc_g": acc_g.round(5).tolist(),
                    "gyro_dps": gyro_dps.round(4).tolist()}
            self.client.publish(topic(self.prefix, self.device, "imu"), json.dumps(body), qos=0)

    def publish_live(self, state: LiveState) -> None:
        """What the wearer is doing now, best effort (QoS 0, not spooled: a live view wants the latest, not a backlog);
        gateway/service.py calls it about gateway.live_hz times a second.

        Retained only when its discrete part (live_key) changed since the last retained one, and the first on each
        connection: a late subscriber (Home Assistant after a restart) gets the current state from the broker, and
        its `ts` says how old the angles in it are. Not retained every second: a retained message is a change to
        the broker's store, and the shipped Mosquitto config (deploy/mosquitto/) saves its whole persistence file,
        with fsync, after every change (autosave_on_changes true, autosave_interval 1)."""
        if not self.connected.is_set():
            return
        key = live_key(state)
        with self._live_lock:
            retain = self._retain_next_live or key != self._live_retained
            if retain:
                self._live_retained, self._retain_next_live = key, False
        info = self.client.publish(topic(self.prefix, self.device, "live"), json.dumps(payload(self.device, state)),
                                   qos=0, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:  # not sent (the link just dropped): the next one is retained
            with self._live_lock:
                self._retain_next_live = True
            return
        self.live_published += 1
        self.live_retained += retain

    # lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.mqtt.start()

    def pump(self) -> None:
        self.results.flush()
        self.results.forget_sent()
        if not self.connected.is_set():
            return
        if (sender := self.sender) is not None:
            try:
                sender.pump()
            except SpoolError as exc:  # what it could not forget goes out again at the next start (at-least-once)
                self.results.warn(exc)
        # A disk that refuses the spool (read-only for good, say): what waits in memory goes straight, once the
        # spool has nothing older to send (a minute's later copy must not overtake its earlier one).
        if self.results.refusing and (sender is None or sender.caught_up):
            self.results.send_held(lambda key, body: self.client.publish(key, body, qos=1), MAX_INFLIGHT,
                                   self.refusals, sender.held_topics if sender is not None else ())

    def stop(self, offline: bool = True) -> None:
        # The retained live state stays: its `ts` says when it was true, the status (online: false) that it is no
        # longer current. An empty retained message to clear it would reach every subscriber as a payload that is
        # no live state (the bridge would dead-letter it), and a crash cannot clear it anyway.
        if (sender := self.sender) is not None:
            sender.settle(self.connected, 0.0)  # gateway/service.py's final flush already waited for the broker
        self.mqtt.stop(self._status_message(self._offline()) if offline else None)
        self.results.close()

    def _offline(self) -> Status:
        """The goodbye: offline, with the counters as they stood (the Devices dashboard shows the last ones;
        zeros would read as a clean link). No link now, so no quality or signal strength."""
        if self._latest_status is None:
            return Status(online=False)
        return dataclasses.replace(self._latest_status, online=False, link_quality_pct=None, rssi_dbm=None)

    @property
    def backlog(self) -> int:
        """Results still to send; those the broker refused (from the spool or from memory) wait for their retry, not
        for a stop (docs/mqtt.md), and
        those it took that a full or read-only disk will not let go of are sent (a stop waited its 10 s for them)."""
        if (sender := self.sender) is None:
            return len(self.results) - self.results.waiting
        return max(0, len(self.results) - self.results.waiting - sender.waiting - sender.undeleted)

    # paho's network thread ------------------------------------------------------------
    def _on_connected(self, client: mqtt.Client, session_present: bool) -> None:
        with self._live_lock:  # the broker may have lost the retained state (restarted without persistence)
            self._retain_next_live = True
        with self._status_lock:
            latest = self._latest_status
            if latest is not None:
                self._sent_status = latest, self.clock()
                self.flaps.sent(latest, self.clock())
                self.status_published += 1
        if latest is not None:  # the will said offline while we were away
            self.mqtt.publish(self._status_message(latest))
