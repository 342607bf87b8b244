"""Publishing what a Spool holds, oldest first, deleting each item once the broker acknowledged it.

The one way our services send messages that must not be lost (QoS 1 PUBACK = delivered to the
broker): the gateway's results and the alert service's nudges. Within a process, paho itself
resends what was not acknowledged when a connection drops; the spool covers process restarts,
which send again, from the oldest, whatever the broker had not acknowledged. An item past its expiry is
dropped and counted instead of sent; one still valid carries the rest of its lifetime as the
MQTT 5 message expiry, so the broker drops it for a phone that comes back too late.

An MQTT 5 PUBACK may refuse the message (a reason code of 0x80 or more: an ACL that does not allow the topic,
a quota): it stays in the spool, is counted and said, and its topic is held: none of its items goes out, the
others' do. After RETRY_REFUSED_S (doubling while refused, up to MAX_BACKOFF times) its oldest item goes alone;
once the broker takes it, the topic's held items follow in their order, so a broker setting put right delivers
them without a restart and a minute's later record is not overtaken by its earlier one (to that end a topic's items
go one at a time until the broker has taken one: after a start, and after a refusal). A topic refused for good
stays held, said once a minute: nothing is dropped. MQTT 3.1.1 has no way to refuse: Mosquitto acknowledges a
refused message as delivered and drops it (docs/mqtt.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from service_io.spool import Spool, SpoolError

log = logging.getLogger("posture.spool")

RETRY_REFUSED_S = 60.0  # a held topic's oldest item goes again after this, doubling while refused: a wrong ACL must
MAX_BACKOFF = 16  # not flood the broker, and a fixed one should deliver within minutes
WARN_EVERY_S = 60.0  # refusals are said at most this often (with the count since)
PROBE_LOOK = 10  # a held topic's oldest items looked at for one to send (the expired ones are dropped on the way)
SENT, EXPIRED, FAILED = "sent", "expired", "failed"  # what _publish did with an item
MAX_UNDELETED = 100_000  # delivered ids kept while the spool refuses deletes; beyond, sending waits for the disk
DELETE_RETRY_S = 1.0  # a refused delete is tried again this often, not at every pump


class PubackRefusals:
    """The refusing PUBACKs (MQTT 5: a reason code of 0x80 or more) of one client's publishes, by packet id: noted on
    paho's thread (its on_publish, holding its locks: nothing else is done there), taken by whoever published —
    the SpooledSender, the gateway's results sent from memory (gateway/results_spool.py). paho marks a refused
    message published just as a taken one, so this is the only place a refusal shows. An id's entry is its last
    PUBACK's (a later one that takes the id's next message clears it): at most one per id, whoever forgot to take it."""

    def __init__(self, client: mqtt.Client):
        self._by_mid: dict[int, ReasonCode] = {}  # a dict store or pop is atomic: no lock against paho's thread
        client.on_publish = self._on_publish

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, reason_code: ReasonCode,
                    _properties: object) -> None:
        """paho's thread: called before paho marks the message published, so a refusal is here when it shows."""
        if reason_code.is_failure:
            self._by_mid[mid] = reason_code
        else:
            self._by_mid.pop(mid, None)

    def take(self, mid: int) -> ReasonCode | None:
        """The refusal of the message with this id, once it is acknowledged; None if the broker took it."""
        return self._by_mid.pop(mid, None)


@dataclass
class _Held:
    """A topic whose items wait after a refusal."""
    from_id: int  # its oldest item not delivered
    backoff: int  # the wait, in retry_refused_s
    due_s: float  # when its oldest item goes again, alone (monotonic)
    probe: int | None = None  # the spool id of that item while it is with the broker


class SpooledSender:
    def __init__(self, client: mqtt.Client, spool: Spool, *, max_inflight: int = 100, mqtt5: bool = True,
                 clock: Callable[[], float] = time.time, retry_refused_s: float = RETRY_REFUSED_S,
                 monotonic: Callable[[], float] = time.monotonic, across_topics: bool = True,
                 refusals: PubackRefusals | None = None):
        """across_topics: the order is kept across topics too (a gateway's events and minutes are one story), not
        only within each (the alert service's alerts, each device's its own): an item that must wait for its topic's
        first answer then holds back those behind it, a pump or so after a start. refusals: the client's, when it
        publishes more than this sender's items that must not be lost (else made here)."""
        self.client, self.spool, self.max_inflight, self.mqtt5, self.clock = client, spool, max_inflight, mqtt5, clock
        self.across_topics = across_topics
        self.retry_refused_s, self.monotonic = retry_refused_s, monotonic
        self.expired = 0
        self.refused = 0  # PUBACKs that refused an item (each kept, and sent again)
        self._inflight: list[tuple[mqtt.MQTTMessageInfo, int, str]] = []  # sent, not yet acknowledged; with topic
        self.refusals = refusals if refusals is not None else PubackRefusals(client)
        self._held: dict[str, _Held] = {}
        # Topics the broker took an item of, and has refused none since. Another's items go one at a time until
        # it does: a refused item with later ones of its topic already sent was overtaken by them when the broker
        # took those (an ACL put right meanwhile; paho sending them again to a restarted broker), and waited for
        # the probe after them (a helper's probe: items 65-100 before 1-64).
        self._taken: set[str] = set()
        # mid → the expiry property sent with it (MQTT 5), and when its life ends
        self._lifetimes: dict[int, tuple[Properties | None, float]] = {}
        self._expired_in_flight: set[tuple[int, str]] = set()  # (spool id, topic) taken from paho at a reconnect
        self._delivered: set[int] = set()  # acknowledged, still to delete from the spool (a full disk said no)
        self._delete_failed_s = -math.inf  # when a delete last failed (monotonic)
        self._unsaid: Counter[tuple[str, str]] = Counter()  # (topic, reason) refused since the last warning
        self._said_at = -1e9
        self._sent_up_to = 0  # highest spool id looked at in order (sent, or held); moved back when a topic is freed
        # spool.puts when a look found fewer items than it had room for: none came since, if it still is. pump()
        # runs every 50 ms per device, and a look is an SQLite query: most of a quiet gateway's CPU per sensor.
        self._seen_all_at: int | None = None
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Items handed to paho and not yet acknowledged as far as the last pump saw."""
        return len(self._inflight)

    def use(self, spool: Spool) -> None:
        """Go on with another connection to the same file (its ids the same): the gateway's spool opened to write
        after it could only be read."""
        self.spool, self._seen_all_at = spool, None

    def pump(self) -> None:
        """Forget what the broker acknowledged; hand the next spooled items to paho (call while connected).

        Acknowledgements are read from paho's message handles here, in our thread: paho calls on_publish
        holding its own lock, which would deadlock against a publish made holding ours, so that callback
        only notes a refusal. A spool that refuses deletes (a full disk) does not stop the sending: what was
        delivered is kept apart, skipped, and deleted later; the SpoolError is raised at the end, to be said.
        """
        self._forget_acknowledged()
        failed: SpoolError | None = None
        with self._lock:
            dropped, self._expired_in_flight = self._expired_in_flight, set()
        expired = {spool_id for spool_id, _ in dropped}
        for spool_id, topic in dropped:
            if (held := self._held.get(topic)) is not None and held.probe == spool_id:
                held.probe = None  # the next oldest goes as the probe, now: the wait was over
        try:
            if len(self._delivered) < MAX_UNDELETED:  # beyond, memory: wait for the disk
                self._send(expired)
        finally:  # an error of _send's own goes out as it is, not as the disk's
            self.expired += len(expired)  # a set: one found by a probe and by the look is one
            self._say_refusals()
            try:
                self._delete(expired)
            except SpoolError as exc:
                failed = exc
        if failed is not None:
            raise failed

    def _send(self, expired: set[int]) -> None:
        with self._lock:
            room = self.max_inflight - len(self._inflight)
            busy = {spool_id for _, spool_id, _ in self._inflight} | self._delivered  # not to be sent (again)
            out = {topic for *_, topic in self._inflight}
        # Each held topic's oldest item, alone, once its wait is over; a quarter of the room at most, so that many
        # topics due together do not hold the others' items back.
        for topic in self._due_topics()[:max(1, room // 4)]:
            if room > 0:
                room -= self._probe(topic, busy, expired)
        puts = self.spool.puts  # read before the look: a put during it makes the next pump look again
        if room > 0 and puts != self._seen_all_at:
            with self._lock:
                after = self._sent_up_to  # after the probes: one may have freed its topic
            last_id = self.spool.last_id()  # before the look: an item put after it has a higher id
            # Twice the room: items left for later (below) do not take the room of those behind them.
            rows = self.spool.peek(2 * room, after_id=after, skip_keys=tuple(self._held))
            complete = len(rows) < 2 * room  # every item after `after` but the held topics' is in rows
            left = False  # an item left for a later pump: the look goes on, the order's cursor stays before it
            for spool_id, topic, body, expires_at in rows:
                if room == 0:
                    complete = False
                    break
                if spool_id in busy:  # with the broker, or delivered (looked at again after a topic was freed)
                    if not left:
                        with self._lock:
                            self._sent_up_to = max(self._sent_up_to, spool_id)
                    continue
                if self.mqtt5 and topic not in self._taken and topic in out:
                    left = True  # its first item's answer first
                    if self.across_topics:
                        complete = False
                        break
                    continue  # the other topics go on
                sent = self._publish(spool_id, topic, body, expires_at, expired, advance=not left)
                if sent == FAILED:
                    complete = False  # the rest is still to send
                    break
                room -= sent == SENT
                out.add(topic)
            complete = complete and not left
            self._seen_all_at = puts if complete else None
            if complete:  # past the held topics' items too (_free comes back for them): no look scans them again
                with self._lock:
                    self._sent_up_to = max(self._sent_up_to, last_id)

    def _publish(self, spool_id: int, topic: str, body: bytes, expires_at: float | None, expired: set[int],
                 advance: bool = True) -> str:
        """Hand one item to paho: SENT, EXPIRED (past its expiry: into `expired`) or FAILED (paho cannot take it
        now). `advance`: the look in order is past it (not for a probe, nor after an item left for later)."""
        properties = None
        if expires_at is not None:
            left_s = expires_at - self.clock()
            if left_s <= 0:
                expired.add(spool_id)
                return EXPIRED
            if self.mqtt5:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
                properties.MessageExpiryInterval = _expiry_interval(left_s)
        info = self.client.publish(topic, body, qos=1, properties=properties)
        # NO_CONN: paho keeps the message and sends it on reconnect (so do not send it again);
        # anything else (its queue is full) means try again later.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return FAILED
        with self._lock:
            self._inflight.append((info, spool_id, topic))
            if expires_at is not None:
                self._lifetimes[info.mid] = properties, expires_at
            if advance:
                self._sent_up_to = max(self._sent_up_to, spool_id)
        return SENT

    def reconnected(self) -> None:
        """Call on paho's thread in on_connect, before paho sends again what the broker had not acknowledged: it
        sends the packet as first made, so an alert in flight when the link dropped reached the phone as late as the
        link came back, with its whole expiry again (a helper's probe: 15.2 s after it was decided, with 5 s of
        life). Each such item now carries what is left of its lifetime (MQTT 5), and one past it leaves paho's
        queue, counted as expired at the next pump. paho has no public way to take a message back: its queue is
        changed under its own lock (paho 2.x)."""
        if not self._lifetimes:
            return
        now_s = self.clock()
        with self._lock:
            # Acknowledged ones are the pump's to forget (the broker took them, or refused them: held).
            waiting = {info.mid: (spool_id, topic) for info, spool_id, topic in self._inflight
                       if not acknowledged(info)}
            gone = {mid for mid, (_, ends_s) in self._lifetimes.items() if mid in waiting and ends_s <= now_s}
            for mid, (properties, ends_s) in self._lifetimes.items():
                if mid in waiting and mid not in gone and properties is not None:
                    properties.MessageExpiryInterval = _expiry_interval(ends_s - now_s)
            if not gone:
                return
            with self.client._out_message_mutex:
                for mid in gone:
                    self.client._out_messages.pop(mid, None)
            self._expired_in_flight.update(waiting[mid] for mid in gone)
            self._inflight = [item for item in self._inflight if item[0].mid not in gone]
            for mid in gone:
                del self._lifetimes[mid]

    def _due_topics(self) -> list[str]:
        now_s = self.monotonic()
        return [t for t, h in self._held.items() if h.probe is None and h.due_s <= now_s]

    def _probe(self, topic: str, busy: set[int], expired: set[int]) -> int:
        """Send the held topic's oldest item alone: 1 if sent. An expired one is dropped and the next taken; one
        already with the broker is the probe as it is (its acknowledgement decides)."""
        held = self._held[topic]
        rows = self.spool.oldest(topic, held.from_id, PROBE_LOOK)
        for spool_id, key, body, expires_at in rows:
            held.from_id = spool_id
            if spool_id in self._delivered:
                continue
            if spool_id in busy:
                held.probe = spool_id
                return 0
            sent = self._publish(spool_id, key, body, expires_at, expired, advance=False)
            if sent == EXPIRED:
                continue
            if sent == FAILED:
                return 0
            held.probe = spool_id
            return 1
        if len(rows) < PROBE_LOOK:  # nothing of it left to send (expired, or pushed out of a full spool): free
            self._free(topic)
        return 0

    def _free(self, topic: str) -> None:
        """The topic goes on: the look in order goes back to where its held items start (sent ones are skipped)."""
        held = self._held.pop(topic)
        with self._lock:
            self._sent_up_to = min(self._sent_up_to, held.from_id - 1)
        self._seen_all_at = None

    def _delete(self, ids: set[int], now: bool = False) -> None:
        """Delete these (expired) and what was delivered, also what an earlier delete could not (a full disk):
        until then those ids are skipped by every look, so nothing goes out twice. After a failure, tried again
        at most every DELETE_RETRY_S (unless `now`): each try sorts and sends every pending id."""
        pending = self._delivered | ids
        if not pending:
            return
        if not now and self.monotonic() - self._delete_failed_s < DELETE_RETRY_S:
            self._delivered = pending
            return
        try:
            self.spool.delete(sorted(pending))
        except SpoolError:
            self._delivered, self._delete_failed_s = pending, self.monotonic()
            raise
        self._delivered, self._delete_failed_s = set(), -math.inf

    def settle(self, connected: threading.Event, timeout_s: float) -> None:
        """Before a clean stop: wait (at most timeout_s, while connected) for the broker to acknowledge what is in
        flight, and forget what it did. Otherwise an acknowledgement that came after the last pump is lost with the
        process, and the next start sends that item again: a phone got the same nudge twice after a restart.
        Best effort: what cannot be forgotten now (a full disk) is sent again, as after a crash."""
        deadline = time.monotonic() + timeout_s
        while connected.is_set() and time.monotonic() < deadline:
            with self._lock:
                if all(acknowledged(info) for info, *_ in self._inflight):
                    break
            time.sleep(0.01)
        try:
            self._forget_acknowledged()
            self._delete(set(), now=True)
        except SpoolError as exc:
            log.warning("could not mark what the broker acknowledged as sent (%s): it goes out again at the next "
                        "start", exc)
        self._said_at = -1e9  # what was refused just now is said before the process ends
        self._say_refusals()

    def _forget_acknowledged(self) -> None:
        """Mark what the broker took as delivered (deleted at the pump's end); hold the topic of what it refused."""
        with self._lock:
            acked = [acknowledged(info) for info, *_ in self._inflight]
            done: list[tuple[int, str, ReasonCode | None]] = []
            for (info, spool_id, topic), ok in zip(self._inflight, acked):
                if ok:
                    done.append((spool_id, topic, self.refusals.take(info.mid)))
                    self._lifetimes.pop(info.mid, None)  # so _lifetimes holds in-flight items only
            self._inflight = [item for item, ok in zip(self._inflight, acked) if not ok]
            self._delivered |= {spool_id for spool_id, _, reason in done if reason is None}
        self._hold_or_free(done)

    def _hold_or_free(self, done: list[tuple[int, str, ReasonCode | None]]) -> None:
        for spool_id, topic, reason in done:
            held = self._held.get(topic)
            if reason is None:
                self._taken.add(topic)
                if held is not None and held.probe == spool_id:  # the broker takes the topic again
                    self._free(topic)
                continue
            self._taken.discard(topic)
            self.refused += 1
            self._unsaid[topic, str(reason)] += 1
            if held is None:
                held = self._held[topic] = _Held(spool_id, 0, 0.0)
            held.from_id = min(held.from_id, spool_id)
            if held.probe == spool_id or held.backoff == 0:  # a round's refusal sets the wait
                held.probe = None
                held.backoff = min(2 * held.backoff or 1, MAX_BACKOFF)
                held.due_s = self.monotonic() + held.backoff * self.retry_refused_s

    def _say_refusals(self) -> None:
        if not self._unsaid or self.monotonic() - self._said_at < WARN_EVERY_S:
            return
        self._said_at = self.monotonic()
        (topic, reason), _ = self._unsaid.most_common(1)[0]
        held = self._held.get(topic)
        next_s = max(0.0, held.due_s - self.monotonic()) if held is not None else 0.0
        log.warning("the MQTT broker refused messages %d time(s) since the last warning, e.g. on %s: %s (an ACL that "
                    "does not allow the topic? check mqtt.prefix and the account's topics); %d topic(s) held, "
                    "their messages kept: %s's oldest goes again in %.0f s, the wait doubling to %.0f s while refused",
                    self._unsaid.total(), topic, reason, len(self._held), topic, next_s,
                    MAX_BACKOFF * self.retry_refused_s)
        self._unsaid.clear()

    @property
    def held_topics(self) -> frozenset[str]:
        """Topics whose items wait after a refusal: nothing newer of them may overtake those."""
        return frozenset(self._held)

    @property
    def waiting(self) -> int:
        """Items of held topics (not to be waited for at a stop)."""
        return self.spool.count_keys(tuple(self._held)) if self._held else 0

    @property
    def caught_up(self) -> bool:
        """Nothing the spool holds is left to send or in flight: what it holds was acknowledged (deletes a full disk
        refused) or waits for its held topic."""
        with self._lock:
            if self._inflight:
                return False
        return len(self.spool) <= len(self._delivered) + self.waiting

    @property
    def undeleted(self) -> int:
        """Items the broker acknowledged that the spool has not yet let us delete (a full disk)."""
        return len(self._delivered)

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)


def _expiry_interval(left_s: float) -> int:
    """MQTT 5 message expiry for what is left of an item's life: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(left_s))


def acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
    """is_published(), except for a message paho queued while the link was down (rc NO_CONN): for that one it
    raises RuntimeError for ever, even once paho sent it on the reconnect and the broker acknowledged it."""
    if info.rc == mqtt.MQTT_ERR_NO_CONN:
        return bool(info._published)  # paho's own flag, set by the PUBACK; no public way to read it here
    return info.is_published()
