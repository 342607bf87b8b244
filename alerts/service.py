"""`posture alerts`: the gateway's metrics and events in, nudges with a stretch out to the phone.

- Reads `<prefix>/+/metrics`, `…/events` and `…/alerts/snooze` in a persistent MQTT session
  (QoS 1), so nothing is missed while it is away, and acknowledges each message only after the
  state it changed is saved: a crash or restart neither loses a minute nor counts one twice. Also
  reads `…/status` (QoS 0) for the sensor's human name that Home Assistant shows and whether it is online (what
  `today` says of sitting now), and `…/live`
  (QoS 0, not queued while away: what is going on *now*, about once a second per device) for the
  real-time slouch nudge; a live state that changed nothing is not written. A payload whose
  device is not its topic's is refused as malformed (contract/identity.py), as is a snooze for a device not known
  after SNOOZE_WAIT_S (it would snooze nothing: said naming the device it resembles). A snooze the broker delivers
  again (its acknowledgement lost in a reconnect) is known by its identity (snooze_id) and taken once.
- What it decides to send goes into the same SQLite file, in the same transaction as the state
  (service_io/spool.py): a restart never sends an alert twice, and an alert decided just before a
  crash still goes out (unless its expiry passed). Sending is the gateway's mechanism
  (service_io/spooled_sender.py).
- Publishes each alert on `<prefix>/<device>/alerts` (JSON, QoS 1, MQTT 5 message expiry),
  `…/alerts/text` (one line, for simple phone apps) and `…/alerts/log` (no expiry: the bridge
  stores it in InfluxDB), a retained `…/today` (the day so far) and Home Assistant discovery.
- With alerts.partitions above 1 one such service runs each partition, on its own session and state file, and
  handles only its devices (alerts/group.py runs them).
"""

from __future__ import annotations

import datetime
import difflib
import itertools
import json
import logging
import queue
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from alerts.catalog import Catalog
from alerts.compose import text_mirror
from alerts.engine import MAX_BEHIND_DAYS, AlertEngine, FarBehind, live_time_error
from alerts.homeassistant import discovery_configs, ha_node
from alerts.partition import Partition, device_of, partition_of
from alerts.policy import local
from alerts.settings import load_rules
from alerts.state_files import PARTITIONS_KEY, check_file, check_state_layout
from contract.identity import ID_PATTERN, MAX_ID_LEN, check_device, device_id
from contract.messages import topic
from contract.validation import MAX_PAYLOAD_BYTES, Malformed, Validators, load_validators, parse, stream_of
from service_io.config import Config, ConfigError
from service_io.mqtt import STOP_WAIT_S, Message, MqttEndpoint
from service_io.spool import Spool, SpoolError
from service_io.spooled_sender import SpooledSender
from service_io.zones import zone

log = logging.getLogger("posture.alerts")
DAY_BEGUN_PER_STEP = 50  # new days' empty `today` documents published a step
BATCH = 500
IDLE_POLL_S = 0.2  # a step at least this often with nothing arriving (the summary's time, Home Assistant's settle)
IN_FLIGHT_POLL_S = 0.005  # … and this often while alerts are in flight: the phone's copy counts from their PUBACK
MAX_INFLIGHT = 100
MAX_SNOOZE_MIN = 24 * 60
PLAUSIBLE_FROM_S = 1_577_836_800.0  # 2020-01-01: before it, a sensor clock was never set
# A minute or event stamped ahead of this service's clock by more than clocks disagree is refused. The contract lets a
# ts be a day ahead; one of a day not begun closed today, every real minute after it was then a "late" one of a closed
# day and ignored, and today's summary never came (one minute stamped 14 h ahead: 19 of 39 minutes lost). One of later
# today was taken too: an hour stamped 6 h ahead set the slouch nudges' cooldown 6 h ahead (none from 09:00 to 14:50 of
# a day slouched throughout), and `today` showed its last minute, from the future, until the clock got there.
AHEAD_SLACK_S = 300.0
# A device is announced to Home Assistant if its data is this recent: its latest minute on the local date this long
# ago or later, or its live state this old at most. Its configs are retained, so an older one loses nothing; and a
# device removed in Home Assistant (which clears its retained configs) came back at every start and every restart of
# Home Assistant: its last day's minutes are kept for good, and the gateway leaves its last live state retained.
ANNOUNCE_WITHIN_S = 86_400.0
# Nothing is announced this soon after a connect: the sensors' names come with their retained statuses, after the
# subscription (and after the backlog of a persistent session). Announced at once, most of a fleet went out under
# its ids and again under its names a moment later, at every start: Home Assistant's device names flickered.
ANNOUNCE_SETTLE_S = 2.0
# A device record the state file holds but that cannot be read is moved to this key and the time it was found, in
# the transaction of the device's first state write: kept for a person to look at, never read again.
UNREADABLE_KEY = "unreadable/"
# A snooze for a device not known is refused, said once per device id up to this many ids (then counted only): the
# ids come from topics anyone with the right may publish to.
UNKNOWN_SAID_MAX = 100
# A snooze for a device not known waits this long (wall clock) for it to become known before it is refused: at a
# reconnect the broker delivers what it queued for our session (a snooze published while we were away) at once, and a
# sensor's retained status, which makes it known, only after our SUBSCRIBE on that connection (Mosquitto 2.0: the
# snooze first, its device's retained status a few ms later). Taken then, from when it was sent, else arrived.
SNOOZE_WAIT_S = 5.0
# The snoozes waiting are saved under this meta key (JSON: [device, topic, minutes, arrived_s, from_s, snooze_id] each;
# a file of before from_s and snooze_id holds the first four), in the transaction
# of the step that received them and before they are acknowledged: kept in memory alone, a kill -9 within the wait lost
# one (the broker had it as delivered) and a clean stop refused it, and the sensor's first minutes were then nudged.
WAITING_KEY = "snoozes_waiting"
# At most this many snoozes wait at once; one more is refused at once (a flood on topics of no device): each is saved.
WAITING_MAX = 1000
# Device ids of other partitions remembered (from their messages, which each partition receives) to name the known
# device a refused snooze resembles: a look-alike id most likely belongs to another partition.
ELSEWHERE_KEPT = 10_000
DEVICE_STREAMS = ("metrics", "events", "live", "status")  # a device's own topics (not its snooze, not _alerts/…)


def yesterday(now_s: float, tz: datetime.tzinfo | None) -> str:
    """Yesterday's local date by the calendar: a day ago by the clock was the day before it in the first hour after
    a 23-hour day (a device last worn two days before was announced then)."""
    return (local(now_s, tz).date() - datetime.timedelta(days=1)).isoformat()


@dataclass
class AlertStats:
    received: int = 0
    live: int = 0  # live states handled (about one a second per device)
    state_writes: int = 0  # transactions of state (and alerts) written: a live state that changes nothing adds none
    alerts: Counter[str] = field(default_factory=Counter)  # kind → decided and queued for sending
    snoozes: int = 0
    snooze_copies: int = 0  # snoozes the broker delivered again after a reconnect, taken already: not taken twice
    malformed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # bugs met, by where: "message", "summary"
    elsewhere: int = 0  # messages of devices of other partitions, acknowledged unread (alerts.partitions > 1)
    refused_by_broker: int = 0  # alerts' PUBACKs that refused them (MQTT 5; each kept and sent again)
    expired: int = 0  # alerts dropped unsent, past the rules' limits.expiry_s
    unreadable_records: int = 0  # devices whose record in the state file could not be read: started afresh
    unreadable_files: int = 0  # state files that were no database (damaged): moved aside, every device afresh
    far_behind: int = 0  # minutes and events far behind this clock that would have opened a day (engine.FarBehind)

    def add(self, other: AlertStats) -> None:
        for name, value in list(vars(other).items()):
            mine = getattr(self, name)
            if isinstance(mine, Counter):
                mine.update(dict(value))  # a copy first: a service still running may add to it meanwhile
            else:
                setattr(self, name, mine + value)

    def as_dict(self) -> dict[str, Any]:
        return {name: dict(value) if isinstance(value, Counter) else value for name, value in vars(self).items()}


def new_engine(config: Config) -> AlertEngine:
    """The engine with the thresholds, stretch catalog and time zone of the config; ConfigError names a bad one."""
    cfg = config.alerts
    try:
        tz = zone(cfg.timezone)  # as the report counts the day
    except ValueError as exc:  # it names the zone, and the one it resembles
        raise ConfigError(f"alerts.timezone: {exc}") from None
    rules = load_rules(Path(cfg.rules_path) if cfg.rules_path else None)
    return AlertEngine(rules, Catalog.load(Path(cfg.stretches_path) if cfg.stretches_path else None), tz)


def check_start(config: Config) -> None:
    """What a start reads before it makes a file (a lock, a state file): the thresholds, stretch catalog, time zone and
    the state files' layout. ConfigError names a bad one."""
    new_engine(config)
    check_state_layout(Path(config.alerts.state_path), config.alerts.partitions)


def resembling(device: str, known: set[str]) -> str | None:
    """The known device id `device` most likely meant: the same but for case and punctuation (`desksensor`,
    `Desk-Sensor` for `DeskSensor`), else a close spelling; None if none is close."""
    def folded(name: str) -> str:
        return "".join(c for c in name.casefold() if c.isalnum())

    by_fold: dict[str, str] = {}
    for name in sorted(known - {device}):
        by_fold.setdefault(folded(name), name)
    if (same := by_fold.get(folded(device))) is not None:
        return same
    close = difflib.get_close_matches(folded(device), list(by_fold), n=1, cutoff=0.8)
    return by_fold[close[0]] if close else None


def ascii_folded(name: str) -> str:
    """A name's letters as ASCII where Unicode says they are a form of one (fullwidth 'Ｄ', 'é'); others dropped."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if c.isascii())


class SnoozeCommand(NamedTuple):
    minutes: float  # 0 ends a snooze
    sent_s: float | None  # Unix time the phone sent it, by the phone's clock; None: the payload does not say


class WaitingSnooze(NamedTuple):
    """A snooze waiting (SNOOZE_WAIT_S) for its device to become known."""
    topic: str
    minutes: float
    arrived_s: float  # wall clock: it waits from then
    from_s: float  # wall clock: what it snoozes from (snooze_from_s)
    snooze_id: str  # "" for one saved by a run that did not record it: known by no copy


def parse_snooze(body: bytes | bytearray) -> SnoozeCommand:
    """Minutes to snooze: `30`, `{"minutes": 30}` or `{"minutes": 30, "sent_s": 1796536800.5}` (when the phone sent
    it); 0 ends a snooze. At most the contract's MAX_PAYLOAD_BYTES, as any payload: a 100 MB one (any account that may
    snooze can send it) was decoded, copied and parsed whole."""
    if len(body) > MAX_PAYLOAD_BYTES:
        raise Malformed(f"snooze: too large: {len(body)} bytes, more than the {MAX_PAYLOAD_BYTES} a payload may have")
    text = body.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text)
        minutes = value["minutes"] if isinstance(value, dict) else value
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 <= minutes <= MAX_SNOOZE_MIN:
            raise ValueError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise Malformed(f"snooze: expected minutes 0–{MAX_SNOOZE_MIN}, {{\"minutes\": n}} or "
                        f"{{\"minutes\": n, \"sent_s\": unix time}}, got {text[:40]!r}") from None
    sent = value.get("sent_s") if isinstance(value, dict) else None
    if sent is None:
        return SnoozeCommand(float(minutes), None)
    try:
        if isinstance(sent, bool) or not isinstance(sent, (int, float)):
            raise ValueError
        # An integer of hundreds of digits passed a check against inf, and float() of it then raised past the
        # Malformed count (a review's probe: counted as a bug met, with a traceback).
        sent_s = float(sent)
        if not PLAUSIBLE_FROM_S <= sent_s < float("inf"):
            raise ValueError
    except (ValueError, OverflowError):
        raise Malformed(f"snooze: sent_s {str(sent)[:40]} is no plausible Unix time in seconds (the phone's clock "
                        "unset, or milliseconds?)") from None
    return SnoozeCommand(float(minutes), sent_s)


def snooze_from_s(command: SnoozeCommand, now_s: float) -> float:
    """What a snooze arriving at now_s snoozes from: when the wearer sent it, so that one delivered late (queued while
    the service was away, or delivered again) ends when the wearer meant; else now. Malformed if it was sent ahead of
    this clock by more than clocks disagree (it would snooze longer than asked); never later than now, so a phone
    clock a little ahead does not either."""
    if command.sent_s is None:
        return now_s
    if command.sent_s > now_s + AHEAD_SLACK_S:
        raise Malformed(f"snooze: sent_s {command.sent_s:.0f} is {command.sent_s - now_s:.0f} s ahead of this "
                        "machine's clock (the phone's clock or this one is wrong)")
    return min(command.sent_s, now_s)


def snooze_id(command: SnoozeCommand, mid: int) -> str:
    """What tells a snooze the broker delivers again from another of the wearer's: its minutes and when it was sent if
    it says (a copy by any path is the same), else its minutes and MQTT packet id (a copy the broker delivers again
    keeps its packet id; a second press of the wearer's gets a new one)."""
    if command.sent_s is not None:
        return f"{command.minutes:g} min sent {command.sent_s!r}"
    return f"{command.minutes:g} min packet {mid}"


class AlertService:
    """Built by open(), which reads the rules, the catalog and the saved state; the constructor does no I/O.
    partition: handle only the devices of this partition, on its own session (alerts/group.py)."""

    def __init__(self, config: Config, engine: AlertEngine, spool: Spool, validators: Validators,
                 clock: Callable[[], float] = time.time, partition: Partition | None = None):
        cfg = config.alerts
        self.partition = partition
        self.cfg, self.prefix, self.clock = cfg, config.mqtt.prefix, clock
        self.engine, self.spool, self.validators = engine, spool, validators
        self.expiry_s = engine.rules.limits.expiry_s
        self.stats = AlertStats()
        self.availability_topic = f"{self.prefix}/_alerts/availability"
        self._offline = Message(self.availability_topic, "offline")  # the will, and the goodbye on a clean stop
        self.stop_event = threading.Event()
        p = self.prefix
        self.mqtt = MqttEndpoint(
            config.mqtt, partition.client_id(cfg.client_id) if partition else cfg.client_id,
            name=f"alerts p{partition.index}" if partition else "alerts", manual_ack=True, persistent=True,
            session_expiry_s=cfg.session_expiry_s, max_inflight=MAX_INFLIGHT, stopping=self.stop_event,
            subscriptions=[(f"{p}/+/metrics", 1), (f"{p}/+/events", 1), (f"{p}/+/alerts/snooze", 1),
                           # QoS 0: only for names, not queued while we are away (it would crowd the session's
                           # queue); the retained status comes with each subscription, on every connect.
                           (f"{p}/+/status", 0), (f"{cfg.ha_prefix}/status", 1),
                           # QoS 0 too: a live state is news for a second; one missed while away is history.
                           (f"{p}/+/live", 0)],
            will=self._offline, birth=Message(self.availability_topic, "online"),
            on_connected=self._on_connected,
            on_message=lambda client, msg: self._inbox.put((self._connection, msg)))
        self.client, self.connected = self.mqtt.client, self.mqtt.connected
        self.sender = SpooledSender(self.client, self.spool, max_inflight=MAX_INFLIGHT,
                                    mqtt5=self.mqtt.mqtt5, clock=clock, across_topics=False)
        # queue.Queue, not SimpleQueue: CPython 3.11's SimpleQueue.get(timeout) can block for good when a
        # signal interrupts it near its deadline (the remaining time goes negative = wait forever), and
        # then SIGTERM never stops us. Lock.acquire(timeout), under Queue, treats that case as a timeout.
        self._inbox: queue.Queue[tuple[int, mqtt.MQTTMessage]] = queue.Queue()
        self._connection: int = 0  # counts connections: a packet id is only good for the one it came on
        # Not connected yet: nothing has had time to arrive. Set at the first step once connected (step).
        self._listening_since_s = float("inf")
        # Devices whose `today` is still to be published: a new day's, empty; every device's after the broker lost it
        self._day_begun: set[str] = set()
        self._today_due: set[str] = set()  # devices taken off or put on since the last step: their `today` again
        # Each device's `today` as the broker retains it: a step publishes it only when it differs. Every step that
        # handled a message of a device sent it again, so one minute and the events trailing it in steps of their own
        # were the same retained document several times. Forgotten when the broker may have lost it (_retained_unsure).
        self._today_said: dict[str, bytes] = {}
        # A connect since the last step: the broker may have lost retained messages, and a device's `today` came back
        # only with its next minute (Home Assistant's entities unknown or stale until then: a sensor put away for the
        # evening showed nothing, or an earlier hour, until the morning). Restarted without persistence it has no
        # session of ours; restarted with it, it is back at its last save (Mosquitto: every autosave_interval, 30 min
        # by default), our session there and the `today`s it acknowledged after not: session present cannot tell.
        self._retained_unsure = False
        self._forget_failing = False  # the spool refuses to delete what was sent (said once, until it works again)
        self._announced: set[str] = set()  # devices whose discovery configs went out on this connection
        # Who may need announcing: the devices heard from since the last step, or all of them once per connection
        # and after Home Assistant restarts (looking at every device each step took 0.5 ms at 3,000 devices).
        self._heard: set[str] = set()
        self._announced_on: int | None = None  # the connection (count) whose devices were all looked at; None: none
        self._names: dict[str, str] = {}  # device id → the sensor's human name, from its retained status
        self._node_of: dict[str, str] = {}  # HA node → the device announced under it (look-alikes are said)
        # Devices whose saved record could not be read (set_unreadable): → (the key it is moved to, the record)
        self._unreadable: dict[str, tuple[str, bytes]] = {}
        # Devices this service has handled a valid message of (metrics, events, live, its gateway's status) since it
        # started: with those of the saved state, the devices a snooze may be for.
        self._seen: set[str] = set()
        self._elsewhere_seen: set[str] = set()  # other partitions' device ids (ELSEWHERE_KEPT at most), for hints
        self._unknown_said: set[str] = set()  # unknown devices whose refused snooze was said
        self._behind_said: set[str] = set()  # devices whose data far behind this clock was said
        # Snoozes for devices not known (yet), by device, oldest first, waiting SNOOZE_WAIT_S for them. Saved
        # (WAITING_KEY) in the step that received them, before they are acknowledged: a restart or crash meanwhile
        # keeps them, and they wait again. One from a connection before the current one is not acknowledged: the copy
        # the broker delivers again is known by its snooze_id, and acknowledged.
        self._waiting_snoozes: dict[str, list[WaitingSnooze]] = {}
        self._waiting_changed = False  # to be saved with the step
        self._malformed_said: set[str] = set()  # kinds of malformed input said (once each)
        try:
            self._version = metadata.version("posture-companion")
        except metadata.PackageNotFoundError:
            self._version = "dev"

    @classmethod
    def open(cls, config: Config, clock: Callable[[], float] = time.time,
             partition: Partition | None = None) -> AlertService:
        """The service with its thresholds, stretch catalog and saved state read; ConfigError names a bad one."""
        cfg = config.alerts
        engine = new_engine(config)
        if partition is None:  # partitions: their group looked at every state file once, at start
            check_state_layout(Path(cfg.state_path), cfg.partitions)
        spool = Spool(partition.state_path(cfg.state_path) if partition else Path(cfg.state_path), max_items=100_000)
        try:
            meta = spool.meta()
            check_file(spool.path, meta, cfg.partitions)
            if partition:
                spool.put([], meta={PARTITIONS_KEY: str(partition.count).encode()})
            unreadable = engine.load(meta)
        except BaseException:
            spool.close()
            raise
        service = cls(config, engine, spool, load_validators(), clock, partition)
        service.set_unreadable({device: (why, meta[f"device/{device}"]) for device, why in unreadable.items()})
        service.set_waiting(meta.get(WAITING_KEY))
        service.stats.unreadable_files = int(spool.set_aside is not None)
        return service

    def set_unreadable(self, records: dict[str, tuple[str, bytes]]) -> None:
        """Devices whose saved record could not be read (device → (why, the record)): each said in one line and
        counted; it starts afresh, and its record is moved aside with its first state write, in that transaction (not
        at start: a start on a full disk writes nothing; and until then it stays where it was, read again by the next
        start)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        for device, (why, record) in sorted(records.items()):
            key = f"{UNREADABLE_KEY}{device}/{stamp}"
            self._unreadable[device] = (key, record)
            self.stats.unreadable_records += 1
            log.error("alert state %s: the record of device %r cannot be read (%s); that device starts afresh, "
                      "every other goes on; its record is kept, moved to meta key %r of that file with the device's "
                      "next state write", self.spool.path, device, why[:120], key)

    def set_waiting(self, saved: bytes | None) -> None:
        """The snoozes a run before saved while they waited for their devices: they wait again, from this run's
        connect, each snoozing from when it was sent, else first arrived. A list that cannot be read is said in one
        line, left out."""
        if not saved:
            return
        try:
            for device, topic_, minutes, arrived_s, *recorded in json.loads(saved):
                if not (ID_PATTERN.fullmatch(device) and 0 <= float(minutes) <= MAX_SNOOZE_MIN):
                    raise ValueError(f"not a snooze: {device!r}, {minutes!r}")
                from_s, id_ = recorded if recorded else (arrived_s, "")
                self._waiting_snoozes.setdefault(device, []).append(
                    WaitingSnooze(str(topic_), float(minutes), float(arrived_s), float(from_s), str(id_)))
        except (ValueError, TypeError, RecursionError) as exc:
            log.error("alert state %s: the snoozes waiting for their devices (meta key %r) cannot be read (%s); "
                      "left out", self.spool.path, WAITING_KEY, str(exc)[:120])
            self._waiting_changed = True  # written anew with the next step

    def _waiting_record(self) -> bytes:
        return json.dumps([[device, *item] for device, items in self._waiting_snoozes.items()
                           for item in items]).encode()

    # paho's network thread ----------------------------------------------------------------
    def _on_connected(self, client: mqtt.Client, session_present: bool) -> None:
        # The broker's backlog and retained messages for us arrive once it has our subscriptions (its SUBACK sets
        # `connected`); the summary, the snoozes waiting for their device and Home Assistant's names wait from then
        # (step). Counted from the CONNACK, a link slow by 2 s announced devices by their ids and then by their
        # names, and one slow by 5 s refused a snooze before the device's status could come (an attack's probes).
        self._listening_since_s = float("inf")
        self._connection += 1
        self._announced = set()
        self._retained_unsure = True
        self.sender.reconnected()  # an alert the link dropped goes again with what is left of its life, if any

    # our thread ---------------------------------------------------------------------------
    def run(self) -> None:
        self.mqtt.start()
        try:
            while not self.stop_event.is_set():
                # With alerts in flight, a step soon: their acknowledgements are read, and they leave the file, in a
                # step. Waiting 0.2 s for the next message left each acknowledged alert in the file that long, and a
                # kill -9 then sent it again at the next start (34 of 100 in a probe killing 0.05–0.3 s after). Not
                # while the link is down: none can come then.
                soon = self.sender.in_flight and self.connected.is_set()
                self.step(self._take(timeout_s=IN_FLIGHT_POLL_S if soon else IDLE_POLL_S))
        finally:
            if waiting := sum(map(len, self._waiting_snoozes.values())):  # saved: the next start takes them up
                log.info("%d snooze(s) waiting for their device kept for the next start", waiting)
            # A partition handed to another instance goes quietly: the service as a whole is still online.
            self.sender.settle(self.connected, STOP_WAIT_S)
            self.mqtt.stop(goodbye=None if self.partition else self._offline)
            self.spool.close()

    def _take(self, timeout_s: float) -> list[tuple[int, mqtt.MQTTMessage]]:
        try:
            batch = [self._inbox.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while len(batch) < BATCH and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return batch

    def step(self, batch: list[tuple[int, mqtt.MQTTMessage]]) -> None:
        """Handle a batch (all the inbox holds, up to BATCH); save its state and queue its alerts together, in one
        transaction for the whole batch; only then acknowledge the batch; then send, the phones' alerts first."""
        now_s = self.clock()
        if self._listening_since_s == float("inf") and self.connected.is_set():
            self._listening_since_s = now_s
        alerts: list[dict[str, Any]] = []
        touched: set[str] = set()
        for _, msg in batch:
            if not self._mine(msg.topic):  # another partition's (its own session has it too): acknowledged unread
                self.stats.elsewhere += 1
                self._note_elsewhere(msg.topic)
                continue
            # A topic of no device (Home Assistant's status) goes to every partition: counted once, by the first.
            self.stats.received += self.partition is None or self.partition.index == 0 or \
                device_of(msg.topic, self.prefix) is not None
            try:
                alerts += self._handle(msg, now_s, touched)
            except Malformed as exc:
                self._malformed(msg.topic, str(exc))
            except FarBehind as exc:
                self._far_behind(exc)
            except Exception:  # a bug must not turn one message into a crash on every restart
                if not self.stats.errors["message"]:
                    log.exception("handling a message on %s failed; further failures are counted", msg.topic)
                self.stats.errors["message"] += 1
        self._settle_snoozes(now_s, touched)  # a device known now (its retained status in this batch, say): taken
        try:
            alerts += self.engine.tick(now_s, self._listening_since_s)
        except Exception:  # as for messages: a bug in the summary must not stop every other alert
            if not self.stats.errors["summary"]:
                log.exception("the daily summary failed; further failures are counted")
            self.stats.errors["summary"] += 1
        touched |= {a["device"] for a in alerts}
        self._day_begun |= set(self.engine.days_begun(now_s))  # their `today` shows a day with none of their data
        if touched or self._waiting_changed:
            meta = self.engine.changes(touched)
            aside = {d: self._unreadable[d] for d in touched & self._unreadable.keys() if f"device/{d}" in meta}
            meta.update(aside.values())  # the unreadable record kept, as the fresh one replaces it
            if self._waiting_changed:  # before the snoozes that wait are acknowledged (below)
                meta[WAITING_KEY] = self._waiting_record()
            self.spool.put([item for a in alerts for item in self._outgoing(a, now_s)], meta=meta)
            self.stats.state_writes += 1
            self._waiting_changed = False
            for device in aside:
                del self._unreadable[device]
        for connection, msg in batch:
            if connection == self._connection:  # from an older connection: the broker sends it again
                self.client.ack(msg.mid, msg.qos)
        for a in alerts:
            self.stats.alerts[a["kind"]] += 1
            log.info("%s alert for %s: %s", a["kind"], a["device"], a["message"])
        if self.connected.is_set():
            try:
                self.sender.pump()  # before the day so far and discovery: a nudge is what someone waits for
                if self._forget_failing and not self.sender.undeleted:
                    self._forget_failing = False
                    log.info("what the broker acknowledged is marked as sent again")
            except SpoolError as exc:
                # What was sent but cannot be marked so (a full disk) is held back in memory and marked later. Out of
                # here it stopped the service, and each restart sent the phone every such alert again (441 repeats
                # in a helper's 30 s).
                if not self._forget_failing:
                    self._forget_failing = True
                    log.warning("cannot mark what the broker acknowledged as sent (%s); retried, and sent again "
                                "only if the service stops before it can", exc)
            self.stats.refused_by_broker, self.stats.expired = self.sender.refused, self.sender.expired
            if self._retained_unsure:  # every `today` again, at the pace of the new day's (below)
                self._retained_unsure = False
                self._today_said.clear()
                self._day_begun |= {device for device, state in self.engine.devices.items() if state.minutes}
            # A few at a time: after a restart each folds its closed day again (3 ms; 10 s in one step at 3,000).
            begun = set(itertools.islice(self._day_begun, DAY_BEGUN_PER_STEP))
            self._publish_today(touched | begun | self._today_due)
            self._day_begun -= begun
            self._today_due.clear()
            self._announce(now_s)
        else:
            # Handled while not connected (the link dropped with messages in the inbox, or a persistent session's
            # backlog came before the broker answered our subscriptions): their `today` goes out once connected. It
            # was left unsent until the device's next message (a CI run: 3 minutes, none shown in 30 s).
            self._today_due |= touched

    def _mine(self, topic: str) -> bool:
        if self.partition is None or (device := device_of(topic, self.prefix)) is None:
            return True
        return partition_of(device, self.partition.count) == self.partition.index

    def _handle(self, msg: mqtt.MQTTMessage, now_s: float, touched: set[str]) -> list[dict[str, Any]]:
        if msg.topic == f"{self.cfg.ha_prefix}/status":
            if msg.payload.strip() == b"online":  # Home Assistant restarted: tell it our entities again
                self._announced, self._announced_on = set(), None
            return []
        if msg.topic.endswith("/alerts/snooze"):
            device = msg.topic.split("/")[-3]
            if not ID_PATTERN.fullmatch(device):
                self._refuse_snooze(msg.topic, device, not_an_id=True)
                return []
            if msg.retain:  # an old retained command would re-snooze on every restart
                raise Malformed("snooze: retained snooze commands are ignored; publish without retain")
            command = parse_snooze(msg.payload)
            from_s, id_ = snooze_from_s(command, now_s), snooze_id(command, msg.mid)
            # Without a sent time only the broker's DUP flag tells a copy: a second press may get a packet id again
            if (command.sent_s is not None or msg.dup) and self._snooze_taken(device, id_):
                self.stats.snooze_copies += 1
                log.info("snooze on %s (%s) delivered again: taken once already, not again", msg.topic, id_)
                return []
            if not self._known(device) or device in self._waiting_snoozes:
                # Not known yet: it may be a typo or another case (it would snooze nothing, and make a state), or its
                # retained status may be on its way (_settle_snoozes); one after a snooze waiting waits, in order.
                if sum(map(len, self._waiting_snoozes.values())) >= WAITING_MAX:
                    raise Malformed(f"snoozes_waiting: {WAITING_MAX} snoozes already wait for devices not known; "
                                    f"{device[:70]!r} refused at once")
                self._waiting_snoozes.setdefault(device, []).append(
                    WaitingSnooze(msg.topic, command.minutes, now_s, from_s, id_))
                self._waiting_changed = True
                return []
            self.engine.snooze(device, command.minutes, from_s, id_)
            self.stats.snoozes += 1
            touched.add(device)
            return []
        stream = stream_of(msg.topic)
        doc = parse(stream, msg.payload, self.validators, now_s)  # times from the future are refused there
        check_device(msg.topic, doc)
        self._seen.add(doc["device"])
        if self._waiting_snoozes:  # known now: its snoozes waiting are taken before this message decides anything
            self._settle_snoozes(now_s, touched, only=doc["device"])
        if self.cfg.ha_discovery:
            self._heard.add(doc["device"])
        if stream == "status":  # for the name Home Assistant shows, and whether the sensor is measuring (`today`)
            if doc.get("sensor_name") and self._names.get(doc["device"]) != doc["sensor_name"]:
                self._names[doc["device"]] = doc["sensor_name"]
                self._announced.discard(doc["device"])  # announce again under the name
            if self.engine.on_status(doc):  # offline, or back: `today`'s sitting_now_min says it
                self._today_due.add(doc["device"])
            return []
        if doc["ts"] / 1000 < PLAUSIBLE_FROM_S:
            raise Malformed(f"time: ts {doc['ts']} is not a plausible sensor time (clock unset or wrong?)")
        if stream != "live" and doc["ts"] / 1000 > now_s + AHEAD_SLACK_S:
            raise Malformed(f"time: ts {doc['ts']} is {doc['ts'] / 1000 - now_s:.0f} s ahead of this machine's clock "
                            "(the gateway's clock or this one is wrong)")
        if stream == "live":
            if error := live_time_error(doc):
                raise Malformed(error)
            self.stats.live += 1
            # retained: the broker's copy on subscribing, the gateway's last change; it may be older than what we have
            was_off = self.engine.not_worn(doc["device"])
            alerts, changed = self.engine.on_live(doc, now_s, retained=bool(msg.retain))
            if changed:  # most live states change nothing: no write for them
                touched.add(doc["device"])
            if self.engine.not_worn(doc["device"]) != was_off:  # taken off or put on: `today`'s posture says it
                self._today_due.add(doc["device"])
            return alerts
        touched.add(doc["device"])
        return self.engine.on_metrics(doc, now_s) if stream == "metrics" else self.engine.on_event(doc, now_s)

    def _known(self, device: str) -> bool:
        """A device a snooze may be for: one of the saved state (every device's is loaded at start, so one snoozed
        after a restart before its next minute is known), or one heard from since (its gateway's retained status comes
        with the subscription: a sensor that has sent no minute yet is known by it)."""
        return device in self.engine.devices or device in self._seen or device in self._unreadable

    def _snooze_taken(self, device: str, id_: str) -> bool:
        """A snooze of this identity was taken for the device, or waits for it."""
        return self.engine.took_snooze(device, id_) or any(item.snooze_id == id_
                                                           for item in self._waiting_snoozes.get(device, ()))

    def _settle_snoozes(self, now_s: float, touched: set[str], only: str | None = None) -> None:
        """The waiting snoozes of devices known now are taken, from when each was sent, else arrived; those that waited
        SNOOZE_WAIT_S for an unknown device, since they arrived and since the latest connect (a retained status comes
        after each subscribe), are refused. only: of this device alone (its first message, before that message is
        handled: else the minutes that made it known were decided unsnoozed, and nudged)."""
        for device in [only] if only is not None else list(self._waiting_snoozes):
            items = self._waiting_snoozes.get(device)
            if not items:
                continue
            if self._known(device):
                for item in items:
                    self.engine.snooze(device, item.minutes, item.from_s, item.snooze_id or None)
                    self.stats.snoozes += 1
                touched.add(device)
            elif now_s - max(items[0].arrived_s, self._listening_since_s) >= SNOOZE_WAIT_S:
                for item in items:
                    self._refuse_snooze(item.topic, device)
            else:
                continue
            del self._waiting_snoozes[device]
            self._waiting_changed = True

    def _refuse_snooze(self, topic: str, device: str, not_an_id: bool = False) -> None:
        """Counted as a malformed snooze; said once per device id (UNKNOWN_SAID_MAX ids at most). not_an_id: the topic's
        device is no id at all (a sensor's name with characters ids do not have, a look-alike letter of another
        script): the id of that name is named if it is known."""
        self.stats.malformed["snooze"] += 1
        if device in self._unknown_said or len(self._unknown_said) >= UNKNOWN_SAID_MAX:
            return
        self._unknown_said.add(device)
        known = set(self.engine.devices) | self._seen | self._elsewhere_seen
        if not_an_id:
            # Said once per id, not once for every bad snooze: one with a wrong number said first hid it (a
            # Cyrillic 'о' in 'DeskSensоr' looks like the id and is not; a sensor named 'Büro' has the id 'Buro-…').
            folded = ascii_folded(device)
            like = next((name for name in (device_id(device), folded) if name in known), None) or \
                resembling(folded, known)
            log.warning("snooze on %r refused: %r is not a device id (letters, digits and _.:- only, at most %d)%s; "
                        "nothing snoozed; further ones for it are counted", topic[:200], device[:70], MAX_ID_LEN,
                        f" (did you mean {like!r}?)" if like else "")
            return
        like = resembling(device, known)
        log.warning("snooze on %s refused: no device %r is known%s; nothing snoozed (a device is known once it has "
                    "sent data, or its gateway its status: waited %.0f s for it); further ones for it are counted",
                    topic, device, f" (did you mean {like!r}?)" if like else "", SNOOZE_WAIT_S)

    def _far_behind(self, exc: FarBehind) -> None:
        """Counted; said once per device (UNKNOWN_SAID_MAX devices at most)."""
        self.stats.far_behind += 1
        if exc.device in self._behind_said or len(self._behind_said) >= UNKNOWN_SAID_MAX:
            return
        self._behind_said.add(exc.device)
        log.warning("a minute or event of device %r is not counted: its day %s (more than %d) and it would open that "
                    "day (a new wearer's program start, or a day after the device's latest); its gateway's clock is "
                    "behind (a Raspberry Pi without RTC or NTP?), or this one ahead; further ones are counted "
                    "(far_behind)", exc.device, exc, MAX_BEHIND_DAYS)

    def _note_elsewhere(self, topic: str) -> None:
        device = device_of(topic, self.prefix)
        if (device is not None and device not in self._elsewhere_seen and len(self._elsewhere_seen) < ELSEWHERE_KEPT
                and topic[len(self.prefix) + len(device) + 2:] in DEVICE_STREAMS and ID_PATTERN.fullmatch(device)):
            self._elsewhere_seen.add(device)

    def _malformed(self, where: str, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        self.stats.malformed[kind] += 1
        if kind not in self._malformed_said:  # not by the count: refused snoozes of unknown devices count as "snooze"
            self._malformed_said.add(kind)
            log.warning("malformed message on %s (%s); further ones are counted", where, reason[:160])

    def _outgoing(self, alert: dict[str, Any], now_s: float) -> list[tuple[str, bytes, float | None]]:
        body = json.dumps(alert).encode()
        phone = topic(self.prefix, alert["device"], "alerts")
        expires = now_s + self.expiry_s
        return [(phone, body, expires), (f"{phone}/text", text_mirror(alert).encode(), expires),
                (f"{phone}/log", body, None)]

    def _publish_today(self, devices: set[str]) -> None:
        for device in devices:
            if self.engine.devices.get(device) and self.engine.devices[device].minutes:
                body = json.dumps(self.engine.today_state(device)).encode()
                if self._today_said.get(device) != body:
                    self.client.publish(topic(self.prefix, device, "today"), body, qos=1, retain=True)
                    self._today_said[device] = body

    def _announce(self, now_s: float) -> None:
        if not self.cfg.ha_discovery or now_s - self._listening_since_s < ANNOUNCE_SETTLE_S:
            return  # what is heard meanwhile stays in _heard
        connection = self._connection  # read first: a connect during the look is looked at again next step
        if self._announced_on != connection:
            heard = set(self.engine.devices) | set(self.engine.live)
            self._announced_on = connection
        else:
            heard = self._heard
        self._heard = set()
        since_day = yesterday(now_s, self.engine.tz)
        for device in heard - self._announced:
            state, live = self.engine.devices.get(device), self.engine.live.get(device)
            if not ((state is not None and state.minutes and state.day is not None and state.day >= since_day)
                    or (live is not None and now_s - live["ts"] / 1000 <= ANNOUNCE_WITHIN_S)):
                continue  # heard again when it sends something new
            if (other := self._node_of.setdefault(ha_node(device), device)) != device:
                # Renaming one would change the other's entity ids (and break what uses them): said, not mended.
                log.warning("Home Assistant: devices %r and %r share the ids %s (they differ only in case or "
                            "punctuation): each replaces the other's entities; rename one sensor", other, device,
                            ha_node(device))
                self._node_of[ha_node(device)] = device
            for config_topic, config in discovery_configs(device, prefix=self.prefix, ha_prefix=self.cfg.ha_prefix,
                                                          service_availability_topic=self.availability_topic,
                                                          sw_version=self._version, name=self._names.get(device)):
                self.client.publish(config_topic, json.dumps(config), qos=1, retain=True)
            self._announced.add(device)
