"""`posture alerts` with alerts.partitions above 1: one of several instances that split the devices between them.

Each partition (alerts/partition.py) is a whole alert service of its own (alerts/service.py): a persistent MQTT
session, `<client_id>-p<k>`, that receives every message and handles its own devices' (acknowledging the others'
unread), and a state file, `<state_path>.p<k>`. Whichever instance runs a partition resumes that session: what the
broker queued for it while no instance ran it, and what the last one received and had not acknowledged, arrives
there; the state file holds what was acknowledged. So a partition moves between instances losing and counting
nothing twice, as one service does across a restart.

Instances learn of each other from retained records on `<prefix>/_alerts/members/<instance>`, sent every HEARTBEAT_S
from a thread of their own with the time they were sent (MQTT 5: expiring after MEMBER_TIMEOUT_S), and cleared by
their will when they die or by themselves when they stop; a record older than MEMBER_TIMEOUT_S is of an instance
gone (one that died while the broker was down leaves a record no will clears). The times are compared across
instances, which share one machine (the locks below) and so one clock. Each runs the partitions the even assignment
of alerts/partition.py gives it among the instances it sees. An exclusive lock on the partition's lock file makes
sure two never run one at once, whatever each believes of the others: an instance lets go of a partition only after
its service stopped, and the taker tries again until it can. Those locks tie the instances of a deployment to one
machine (docs/scaling.md).

Every partition service's will says the service is offline (Home Assistant's availability): an instance that sees
that while it runs partitions says online again; an instance that stops and sees no other says offline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.partition import Partition, owned
from alerts.service import AlertService, AlertStats, check_start
from service_io.config import Config
from service_io.lock import try_lock
from service_io.mqtt import Message, MqttEndpoint
from service_io.spool import SpoolError

log = logging.getLogger("posture.alerts")
REBALANCE_S = 0.5  # how often the partitions wanted are compared with those run (and a held lock tried again)
HEARTBEAT_S = 5.0  # an instance's record is sent again this often
MEMBER_TIMEOUT_S = 3 * HEARTBEAT_S  # … and it is gone when not heard from for this long
STALE_RECORD_S = 4 * MEMBER_TIMEOUT_S  # a record this old is cleared at the broker, for those that start later
RETRY_S = 10.0  # a partition whose service could not start, or died, is tried again after this
STOP_WAIT_S = 60.0  # the longest a partition's service may take to stop; its lock is kept until it has


def default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:64]


@dataclass
class _Running:
    service: AlertService
    thread: threading.Thread
    lock: IO[bytes]


class AlertGroup:
    """One instance: the partitions it owns among the instances running, each as an AlertService in a thread."""

    def __init__(self, config: Config, instance: str = "", clock: Callable[[], float] = time.time):
        self.config, self.cfg, self.clock = config, config.alerts, clock
        self.me = instance or self.cfg.instance or default_instance()
        self.count = self.cfg.partitions
        self.stop_event = threading.Event()
        self.stats = AlertStats()  # of the partitions run here and stopped; running ones are added by totals()
        prefix = config.mqtt.prefix
        self.members_topic = f"{prefix}/_alerts/members"
        self.availability_topic = f"{prefix}/_alerts/availability"
        self._record = f"{self.members_topic}/{self.me}"
        self._members: dict[str, tuple[int, float]] = {}  # instance → (its alerts.partitions, when last heard)
        self._view = False  # this connection's records are in (our own came back): guarded by _lock
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._stuck: dict[int, _Running] = {}  # stopped, not yet ended: their locks are kept
        self._retry_at: dict[int, float] = {}  # partition → not before (monotonic), after a failure
        self._refused: dict[int, str] = {}  # partition → why it could not start, said once
        self._said: tuple[frozenset[int], frozenset[str]] | None = None
        self._beat_at = 0.0  # monotonic; 0: due (on every connect)
        self.mqtt = MqttEndpoint(
            # "-instance-": never a partition's "-p<k>", whatever the instance is called
            config.mqtt, f"{self.cfg.client_id}-instance-{self.me}", name=f"alerts instance {self.me}",
            subscriptions=[(f"{self.members_topic}/+", 1), (self.availability_topic, 1)],
            will=Message(self._record, b""), on_connected=self._on_connected, on_message=self._on_message,
            stopping=self.stop_event)

    @classmethod
    def open(cls, config: Config, instance: str = "", clock: Callable[[], float] = time.time) -> AlertGroup:
        """Checks what every partition's service reads (thresholds, catalog, time zone, state files) before any runs:
        ConfigError names a bad one, as for one service. An instance that joined and then could start no partition
        would hold its share of the devices back."""
        check_start(config)
        return cls(config, instance, clock)

    # paho's network thread ----------------------------------------------------------------
    def _on_connected(self, client: mqtt.Client, session_present: bool) -> None:
        with self._lock:  # records come again with the subscription: those of instances gone meanwhile do not
            self._members, self._view = {}, False
            self._beat_at = 0.0  # our record at once (the heartbeat thread sends it once subscribed)

    def _on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.availability_topic:
            if msg.payload == b"offline" and self._running and not self.stop_event.is_set():
                client.publish(self.availability_topic, "online", qos=1, retain=True)  # another instance's will
            return
        name = msg.topic.removeprefix(self.members_topic + "/")
        with self._lock:
            self._members.pop(name, None)
            if not msg.payload:  # stopped, or its will: gone
                return
            try:
                record = json.loads(msg.payload)
                count, sent_s = int(record["partitions"]), float(record["sent_s"])
                if not math.isfinite(sent_s):  # NaN: an age of 0 for ever, a member no one can clear
                    raise ValueError("sent_s is not a time")
                age_s = max(0.0, time.time() - sent_s)
            # Raised here, a record that is not one would end paho's network thread, and with it this instance's
            # view of the others.
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
                log.warning("instance record on %s is not one (%r); ignored", msg.topic, bytes(msg.payload[:60]))
                return
            if name == self.me:
                self._view = True
            elif age_s > STALE_RECORD_S and msg.retain:  # of an instance long gone: not for those that start later
                client.publish(msg.topic, b"", qos=1, retain=True)
            if age_s <= MEMBER_TIMEOUT_S:
                self._members[name] = (count, time.monotonic() - age_s)

    # our thread ---------------------------------------------------------------------------
    def run(self) -> None:
        self.mqtt.start()
        # Its own thread: starting or stopping partitions may take this one seconds, and an instance that goes
        # quiet for MEMBER_TIMEOUT_S is taken for gone (its partitions then move for nothing).
        beats = threading.Thread(target=self._heartbeats, name="alerts-heartbeat", daemon=True)
        beats.start()
        try:
            while not self.stop_event.wait(REBALANCE_S):
                self.rebalance()
        finally:
            self._stop()
            beats.join(5)

    def _heartbeats(self) -> None:
        while not self.stop_event.wait(0.2):
            with self._lock:
                due = time.monotonic() - self._beat_at >= HEARTBEAT_S
                if due and self.mqtt.connected.is_set():
                    self._beat_at = time.monotonic()
                else:
                    continue
            properties = None
            if self.mqtt.mqtt5:  # the broker forgets a record no will cleared (its instance died while it was down)
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
                properties.MessageExpiryInterval = int(MEMBER_TIMEOUT_S)
            body = json.dumps({"partitions": self.count, "sent_s": round(time.time(), 3)})
            self.mqtt.client.publish(self._record, body, qos=1, retain=True, properties=properties)

    def _others(self) -> tuple[set[str], list[str]] | None:
        """The other instances running with our number of partitions, and those with another; None: not known now."""
        now_s = time.monotonic()
        with self._lock:
            if not (self.mqtt.connected.is_set() and self._view):
                return None
            alive = {name: count for name, (count, seen_s) in self._members.items()
                     if now_s - seen_s <= MEMBER_TIMEOUT_S and name != self.me}
        return ({name for name, count in alive.items() if count == self.count},
                sorted(name for name, count in alive.items() if count != self.count))

    def rebalance(self) -> None:
        """Stop the partitions no longer ours, then start those that are (when their last runner let go)."""
        self._reap()
        view = self._others()
        if view is None:
            return  # who else runs is not known now: keep what runs, take nothing
        others, mismatched = view
        wanted = owned(self.me, others, self.count)
        died = [k for k, run in self._running.items() if not run.thread.is_alive()]  # said by _run_partition
        for k in died:
            self._retry_at[k] = time.monotonic() + RETRY_S
        self._release([k for k in self._running if k not in wanted or k in died])
        for k in sorted(wanted - set(self._running) - set(self._stuck)):
            if self.stop_event.is_set():
                return
            if time.monotonic() >= self._retry_at.get(k, 0.0):
                self._take(k)
        said = (frozenset(self._running), frozenset(others))
        if said != self._said:
            self._said = said
            log.info("instance %s: running partitions %s of %d (other instances: %s)%s", self.me,
                     ",".join(map(str, sorted(self._running))) or "none", self.count, ", ".join(sorted(others)) or
                     "none", f"; ignoring {', '.join(mismatched)}: another alerts.partitions" if mismatched else "")

    def _take(self, k: int) -> None:
        partition = Partition(k, self.count)
        lock = try_lock(Path(f"{partition.state_path(self.cfg.state_path)}.lock"))
        if lock is None:  # its last runner has not let go yet: next round
            return
        try:
            service = AlertService.open(self.config, self.clock, partition)
        except Exception as exc:  # noqa: BLE001 - a bad file (full disk, not SQLite): the others run on
            lock.close()
            self._retry_at[k] = time.monotonic() + RETRY_S
            if self._refused.get(k) != str(exc):
                self._refused[k] = str(exc)
                log.error("partition %d cannot start: %s; trying again every %.0f s", k, exc, RETRY_S)
            return
        self._refused.pop(k, None)
        thread = threading.Thread(target=self._run_partition, args=(k, service), name=f"alerts-p{k}", daemon=True)
        thread.start()
        self._running[k] = _Running(service, thread, lock)

    @staticmethod
    def _run_partition(k: int, service: AlertService) -> None:
        try:
            service.run()
        except SpoolError as exc:  # a full disk, say: one line, and the group tries again later
            log.error("partition %d stopped: %s; trying again in %.0f s", k, exc, RETRY_S)
        except Exception:
            log.exception("partition %d stopped on a bug; trying again in %.0f s", k, RETRY_S)

    def _release(self, partitions: list[int]) -> None:
        """Stop these partitions' services together; let go of each lock once its service has ended."""
        runs = {k: self._running.pop(k) for k in partitions}
        for run in runs.values():
            run.service.stop_event.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for k, run in runs.items():
            run.thread.join(max(0.0, deadline - time.monotonic()))
            if run.thread.is_alive():  # its state may still be written: the lock stays until it ends
                log.warning("partition %d: its service has not stopped after %.0f s; keeping its lock until it does",
                            k, STOP_WAIT_S)
                self._stuck[k] = run
            else:
                self._let_go(run)

    def _reap(self) -> None:
        for k, run in list(self._stuck.items()):
            if not run.thread.is_alive():
                del self._stuck[k]
                self._let_go(run)

    def _let_go(self, run: _Running) -> None:
        self.stats.add(run.service.stats)
        run.lock.close()  # the lock goes with the file

    def _stop(self) -> None:
        """Say we are going first (the others start taking our partitions as each lock comes free), then stop every
        partition together; the last instance says the service is offline."""
        if self.mqtt.connected.is_set():
            self.mqtt.publish(Message(self._record, b""))
        self._release(list(self._running))
        self._reap()
        view = self._others()
        if view is not None and not view[0] | set(view[1]) and self.mqtt.connected.is_set():
            with contextlib.suppress(RuntimeError, ValueError):  # the link dropped just now
                self.mqtt.publish(Message(self.availability_topic, "offline")).wait_for_publish(5)
        self.mqtt.stop(goodbye=Message(self._record, b""))

    def totals(self) -> AlertStats:
        total = AlertStats()
        total.add(self.stats)
        for run in [*self._running.values(), *self._stuck.values()]:
            total.add(run.service.stats)
        return total
