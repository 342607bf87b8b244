"""One device's results on their way into its spool, when the disk may refuse them (full, failing, read-only).

The spool (service_io/spool.py) is what makes results survive a crash, but a full disk can refuse to
open it (a restart during the spell) or to write to it. Results then wait here in memory, in order, and
go into the spool oldest first, a chunk at a time (space freed bit by bit takes what fits), once it
opens and takes writes again, tried at most once a second. Beyond HELD_MAX held, the oldest go, counted.

A disk that never takes writes again (an SD card the kernel remounted read-only) must not keep a wearer's
results from the broker for as long as the gateway runs: while the spool refuses them and has nothing
older left to send, the publisher hands them to paho from here (send_held, QoS 1), and they leave memory
once the broker acknowledges them. A result the broker refuses (MQTT 5: an ACL that does not allow its topic, a
quota) is handled as the spool's sender handles one (service_io/spooled_sender.py): counted, said at most once a
minute, kept in memory, its topic held while the others go on, and its oldest sent again alone after the sender's
wait (doubling while refused); a topic goes one result at a time until the broker takes one. What is held or
unacknowledged when the process stops is lost, and said with the count. Failures are logged at most once a minute
a device, with how many are held; the end of a spell is said once.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from service_io.spool import Item, Spool
from service_io.spooled_sender import MAX_BACKOFF, RETRY_REFUSED_S, PubackRefusals, acknowledged

log = logging.getLogger("posture.gateway")
# A sensor makes about 70 results an hour (a minute's metrics and its events): days of a full disk in a few MB.
HELD_MAX = 10_000
CHUNK = 100  # results a transaction: what a nearly full disk can still take goes in
RETRY_S = 1.0  # a refusing disk is tried again this often (each try is an SQLite transaction on the gateway's loop)
WARN_EVERY_S = 60.0


@dataclass
class _Refused:
    """A topic whose results wait in memory after the broker refused one."""
    backoff: int  # the wait, in retry_refused_s
    due_s: float  # when its oldest result goes again, alone (clock)
    probing: bool = False  # that result is with the broker: its answer decides


class ResultsSpool:
    def __init__(self, path: Path, max_items: int, device: str, clock: Callable[[], float] = time.monotonic):
        self.path, self.max_items, self.device, self.clock = path, max_items, device, clock
        self.spool: Spool | None = None
        # self.spool is the file as the disk left it, read only: the disk would not open it to write (read-only, full)
        # and what it holds (the last run's results the broker had not taken) goes first, before those in memory
        self.read_only = False
        self.held_dropped = 0  # results dropped beyond HELD_MAX
        self.sent_from_memory = 0  # results the broker acknowledged that never went into the spool
        self._held: deque[Item] = deque()  # oldest first, not handed to paho
        self._sent: deque[tuple[mqtt.MQTTMessageInfo, Item]] = deque()  # handed to paho from memory, not acknowledged
        self.refused = 0  # PUBACKs that refused a result sent from memory (each kept, and sent again)
        self.retry_refused_s = RETRY_REFUSED_S
        self._refusals: PubackRefusals | None = None  # the client's, from send_held: what it refused
        self._refused: dict[str, _Refused] = {}
        self._taken: set[str] = set()  # topics the broker took a result of from here, and refused none since
        self._unsaid: Counter[tuple[str, str]] = Counter()  # (topic, reason) refused since the last line said
        self._refusal_said_at = -math.inf
        self._lock = threading.Lock()
        self._failing = False
        self._retry_at = 0.0
        self._warned_at = -math.inf
        self.flush(force=True)  # open it now if the disk lets us

    def put(self, rows: list[Item]) -> None:
        with self._lock:
            self._held.extend(rows)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Open the spool if it is not open, and move what is held into it; force: even before the retry time."""
        with self._lock:
            if self.spool is not None and not self.read_only and not self._held and not self._failing:
                return
            if self._failing and not force and self.clock() < self._retry_at:
                return
            try:
                if self.spool is None or self.read_only:
                    spool = self._open()
                else:
                    spool = self.spool
                    if not self._held:  # all went to the broker from memory: is the spell over? Only a write says
                        spool.put([], meta={"written": b""})
                while self._held:
                    chunk = list(itertools.islice(self._held, CHUNK))
                    spool.put(chunk)
                    for _ in chunk:
                        self._held.popleft()
                # What waited on a refusal is the spool's now, and its sender keeps its own waits: kept here, a later
                # spell of the disk held that topic's new results as refused (not awaited by a stop, sent as probes).
                out = {item[0] for _, item in self._sent}
                self._refused = {key: refused for key, refused in self._refused.items() if key in out}
            except OSError as exc:  # SpoolError, or the spool's folder not made (a full disk before the first start)
                self._fail(exc)
                return
            if self._failing:
                self._failing = False
                log.warning("%s: the spool takes results again; none held in memory now", self.device)

    def _open(self) -> Spool:
        """The spool, to write; if the disk will not let it open so, at first the file as it is, to read only: what
        it holds is older than what waits in memory and goes first (sent from memory before it, the last run's
        unfinished copy of a minute came after this run's whole one when the disk was put right, and was stored)."""
        try:
            spool = Spool(self.path, self.max_items)
        except OSError:
            if self.spool is None and (view := self._read_only_view()) is not None:
                self.spool, self.read_only = view, True
            raise
        if self.spool is not None:  # the read-only view: the same file, its ids the same (nothing wrote it since)
            self.spool.close()
        self.spool, self.read_only = spool, False
        return spool

    def _read_only_view(self) -> Spool | None:
        """The spool file to read only, if there is one that can be read so: none with a write-ahead log (a crash
        left what it holds in the log, which the read-only mode does not read)."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            if not self.path.is_file() or (wal.is_file() and wal.stat().st_size > 0):
                return None
            return Spool(self.path, self.max_items, read_only=True)
        except OSError:
            return None

    @property
    def refusing(self) -> bool:
        """The disk refused the spool at the last try, and results wait in memory."""
        with self._lock:
            return self._failing and bool(self._held)

    def send_held(self, publish: Callable[[str, bytes], mqtt.MQTTMessageInfo], max_inflight: int,
                  refusals: PubackRefusals, held_topics: Collection[str] = ()) -> None:
        """Hand held results to paho, oldest first, up to max_inflight unacknowledged (call while connected, with
        nothing older left in the spool to send, so the order holds): `refusals` are the client's that `publish`
        sends on; `held_topics` those the spool's sender holds after a refusal, whose results must not overtake the
        ones it keeps. A topic refused here waits too, the others go on; one whose first result (after a start or a
        refusal) is with the broker holds back everything behind it (the order across topics, as the sender keeps it).
        A result paho cannot take now stays held."""
        self._refusals = refusals
        self.forget_sent()
        now_s = self.clock()
        with self._lock:
            out = {key for _, (key, *_) in self._sent}
            i = 0
            while i < len(self._held) and len(self._sent) < max_inflight:
                item = self._held[i]
                key, body = item[:2]
                refused = self._refused.get(key)
                if key in held_topics or (refused is not None and (refused.probing or now_s < refused.due_s)):
                    i += 1  # held: the others go on
                    continue
                if refused is None and key not in self._taken and key in out:
                    return  # its first result's answer first
                info = publish(key, body)
                # NO_CONN: paho keeps it and sends it on the reconnect; anything else (its queue is full): later
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    return
                del self._held[i]
                self._sent.append((info, item))
                out.add(key)
                if refused is not None:  # its oldest, alone
                    refused.probing = True

    def forget_sent(self) -> None:
        """Let go of what the broker acknowledged of the results sent from memory; what it refused is held again."""
        with self._lock:
            back: list[Item] = []
            while self._sent and acknowledged(self._sent[0][0]):
                info, item = self._sent.popleft()
                key = item[0]
                reason = self._refusals.take(info.mid) if self._refusals is not None else None
                if reason is None:
                    self.sent_from_memory += 1
                    self._taken.add(key)
                    self._refused.pop(key, None)  # a probe taken: the topic goes on
                    continue
                self.refused += 1
                self._unsaid[key, str(reason)] += 1
                self._taken.discard(key)
                back.append(item)
                refused = self._refused.get(key)
                if refused is None or refused.probing:  # a round's refusal sets the wait, doubling
                    backoff = min(2 * refused.backoff, MAX_BACKOFF) if refused is not None else 1
                    self._refused[key] = _Refused(backoff, self.clock() + backoff * self.retry_refused_s)
            self._held.extendleft(reversed(back))  # before the newer results of its topic, all still held
        self._say_refusals()

    def _say_refusals(self) -> None:
        """The refusals since the last line, in one line at most once a minute."""
        with self._lock:
            if not self._unsaid or self.clock() - self._refusal_said_at < WARN_EVERY_S:
                return
            self._refusal_said_at = self.clock()
            (key, reason), _ = self._unsaid.most_common(1)[0]
            count, held = self._unsaid.total(), len(self._held) + len(self._sent)
            refused = self._refused.get(key)
            next_s = max(0.0, refused.due_s - self.clock()) if refused is not None else 0.0
            self._unsaid.clear()
        log.warning("%s: the MQTT broker refused %d result(s) sent from memory since the last warning, e.g. on %s: "
                    "%s (an ACL that does not allow the topic? check mqtt.prefix and the account's topics); %d "
                    "results held in memory (lost if the gateway stops first): %s's oldest goes again in %.0f s, the "
                    "wait doubling to %.0f s while refused", self.device, count, key, reason, held, key, next_s,
                    MAX_BACKOFF * self.retry_refused_s)

    def _fail(self, exc: OSError) -> None:
        self._failing, self._retry_at = True, self.clock() + RETRY_S
        if excess := max(0, len(self._held) - HELD_MAX):
            for _ in range(excess):
                self._held.popleft()
            self.held_dropped += excess
        self.warn(exc)

    def warn(self, exc: OSError) -> None:
        """A spool failure, said at most once a minute (a refused delete too: the sender's)."""
        if self.clock() - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = self.clock()
        if not (held := len(self._held) + len(self._sent)) and not self.held_dropped:  # all went from memory
            log.warning("%s: %s; results go to the broker from memory until it takes them (none waiting now)",
                        self.device, exc)
            return
        log.warning("%s: %s; %d results held in memory until it takes them (sent to the broker from there meanwhile, "
                    "lost if the gateway stops first)%s", self.device, exc, held,
                    f", {self.held_dropped} dropped (more than {HELD_MAX})" if self.held_dropped else "")

    @property
    def waiting(self) -> int:
        """Results in memory of a topic the broker refused: they go again only after its wait, not for a stop."""
        with self._lock:
            return sum(1 for key, *_ in self._held if key in self._refused) if self._refused else 0

    @property
    def held(self) -> int:
        """Results in memory: not in the spool, and not acknowledged by the broker."""
        with self._lock:
            return len(self._held) + len(self._sent)

    def __len__(self) -> int:
        """Results not yet acknowledged by the broker: spooled or held."""
        with self._lock:
            return (len(self.spool) if self.spool is not None else 0) + len(self._held) + len(self._sent)

    def close(self) -> None:
        self.flush(force=True)
        self.forget_sent()
        with self._lock:
            if lost := len(self._held) + len(self._sent):
                log.error("%s: %d results lost: the spool could not take them, nor the broker, before the gateway "
                          "stopped", self.device, lost)
            if self.spool is not None:
                self.spool.close()
