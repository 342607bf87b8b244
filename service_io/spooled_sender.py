"""Publishing what a Spool holds, oldest first, deleting each item once the broker acknowledged it.

The one way our services send messages that must not be lost (QoS 1 PUBACK = delivered to the
broker): the gateway's results and the alert service's nudges. Within a process, paho itself
resends what was not acknowledged when a connection drops; the spool covers process restarts,
which send again, from the oldest, whatever the broker had not acknowledged. An item past its expiry is
dropped and counted instead of sent; one still valid carries the rest of its lifetime as the
MQTT 5 message expiry, so the broker drops it for a phone that comes back too late.

An MQTT 5 PUBACK may refuse the message (a reason code of 0x80 or more: an ACL that does not allow the topic,
a quota): that item stays in the spool, is counted and said, and its topic waits: its items, the refused and
any new ones, go again together and in order after RETRY_REFUSED_S, twice that after another refusal, up to
MAX_BACKOFF times, so a broker setting put right delivers them without a restart and in the order they were
measured (a minute's later record must not be overtaken by its earlier one), while other topics go on. MQTT
3.1.1 has no way to refuse: Mosquitto acknowledges a refused message as delivered and drops it (docs/mqtt.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from service_io.spool import Spool, SpoolError

log = logging.getLogger("posture.spool")

RETRY_REFUSED_S = 60.0  # a refused topic's items go again after this, doubling while refused: a wrong ACL must not
MAX_BACKOFF = 16  # flood the broker, and a fixed one should deliver within minutes
WARN_EVERY_S = 60.0  # refusals are said at most this often (with the count since)


class SpooledSender:
    def __init__(self, client: mqtt.Client, spool: Spool, *, max_inflight: int = 100, mqtt5: bool = True,
                 clock: Callable[[], float] = time.time, retry_refused_s: float = RETRY_REFUSED_S):
        self.client, self.spool, self.max_inflight, self.mqtt5, self.clock = client, spool, max_inflight, mqtt5, clock
        self.retry_refused_s = retry_refused_s
        self.expired = 0
        self.refused = 0  # PUBACKs that refused an item (each kept, and sent again)
        self._inflight: list[tuple[mqtt.MQTTMessageInfo, int, str]] = []  # sent, not yet acknowledged; with topic
        # mid → reason of a refusing PUBACK, set on paho's thread (a dict store is atomic), read by _forget_acknowledged
        self._refusals: dict[int, ReasonCode] = {}
        self._waiting: dict[int, str] = {}  # spool id → topic, of items held while their topic waits after a refusal
        self._topic_due: dict[str, float] = {}  # a waiting topic → when its items go again (monotonic s)
        self._backoff: dict[str, int] = {}  # a waiting topic → its retry interval, in retry_refused_s
        self._unsaid: Counter[tuple[str, str]] = Counter()  # (topic, reason) refused since the last warning
        self._said_at = -1e9
        client.on_publish = self._on_publish
        self._sent_up_to = 0  # highest spool id handed to paho since the last (re)connect
        # spool.puts when a look found fewer items than it had room for: none came since, if it still is. pump()
        # runs every 50 ms per device, and a look is an SQLite query: most of a quiet gateway's CPU per sensor.
        self._seen_all_at: int | None = None
        self._lock = threading.Lock()

    def pump(self) -> None:
        """Forget what the broker acknowledged; hand the next spooled items to paho (call while connected).

        Acknowledgements are read from paho's message handles here, in our thread: paho calls on_publish
        holding its own lock, which would deadlock against a publish made holding ours, so that callback
        only notes a refusal.
        """
        self._forget_acknowledged()
        with self._lock:
            room, after = self.max_inflight - len(self._inflight), self._sent_up_to
        expired = []
        rows = self._refused_due(room)
        room -= len(rows)
        puts = self.spool.puts  # read before the look: a put during it makes the next pump look again
        if room > 0 and puts != self._seen_all_at:
            new = self.spool.peek(room, after_id=after)
            self._seen_all_at = puts if len(new) < room else None
            rows += new
        for k, (spool_id, topic, body, expires_at) in enumerate(rows):
            if topic in self._topic_due and spool_id > after:  # behind its topic's refused ones: after them
                with self._lock:
                    self._waiting[spool_id] = topic
                    self._sent_up_to = max(self._sent_up_to, spool_id)
                continue
            properties = None
            if expires_at is not None:
                left_s = expires_at - self.clock()
                if left_s <= 0:
                    expired.append(spool_id)
                    continue
                if self.mqtt5:
                    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
                    properties.MessageExpiryInterval = max(1, math.ceil(left_s))
            info = self.client.publish(topic, body, qos=1, properties=properties)
            # NO_CONN: paho keeps the message and sends it on reconnect (so do not send it again);
            # anything else (its queue is full) means try again later.
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._seen_all_at = None  # the rest is still to send
                self._waiting.update((i, t) for i, t, *_ in rows[k:] if i <= after)  # the refused ones not sent
                for t in {t for i, t, *_ in rows[k:] if i <= after}:
                    self._topic_due[t] = 0.0  # due still
                break
            with self._lock:
                self._inflight.append((info, spool_id, topic))
                self._sent_up_to = max(self._sent_up_to, spool_id)
        self.spool.delete(expired)
        self.expired += len(expired)
        self._say_refusals()

    def _refused_due(self, room: int) -> list[tuple[int, str, bytes, float | None]]:
        """The held items of the topics whose time to go again has come, oldest first, at most room. A topic all of
        whose items are taken waits no more: its new items go straight after them."""
        now_s = time.monotonic()
        if room <= 0 or not any(at <= now_s for at in self._topic_due.values()):
            return []
        due = {t for t, at in self._topic_due.items() if at <= now_s}
        ids = sorted(i for i, t in self._waiting.items() if t in due)[:room]
        rows = self.spool.get(ids)  # one expired or pushed out meanwhile is no longer there
        for spool_id in ids:
            del self._waiting[spool_id]
        for topic in due - set(self._waiting.values()):
            del self._topic_due[topic]
        return rows

    def settle(self, connected: threading.Event, timeout_s: float) -> None:
        """Before a clean stop: wait (at most timeout_s, while connected) for the broker to acknowledge what is in
        flight, and forget what it did. Otherwise an acknowledgement that came after the last pump is lost with the
        process, and the next start sends that item again: a phone got the same nudge twice after a restart.
        Best effort: what cannot be forgotten now (a full disk) is sent again, as after a crash."""
        deadline = time.monotonic() + timeout_s
        while connected.is_set() and time.monotonic() < deadline:
            with self._lock:
                if all(_acknowledged(info) for info, *_ in self._inflight):
                    break
            time.sleep(0.01)
        try:
            self._forget_acknowledged()
        except SpoolError as exc:
            log.warning("could not mark what the broker acknowledged as sent (%s): it goes out again at the next "
                        "start", exc)

    def _forget_acknowledged(self) -> None:
        """Delete what the broker took; keep what it refused, to go again in retry_refused_s."""
        with self._lock:
            ours = {info.mid for info, *_ in self._inflight}
            for mid in [mid for mid in list(self._refusals) if mid not in ours]:  # the endpoint's own (status, birth)
                self._refusals.pop(mid, None)
            acked = [_acknowledged(info) for info, *_ in self._inflight]
            done = []
            for (info, spool_id, topic), ok in zip(self._inflight, acked):
                if not ok:
                    continue
                reason = self._refusals.pop(info.mid, None)
                if reason is None:
                    done.append(spool_id)
                    self._backoff.pop(topic, None)
                    continue
                self.refused += 1
                self._unsaid[topic, str(reason)] += 1
                self._waiting[spool_id] = topic
                now_s = time.monotonic()
                if self._topic_due.get(topic, -math.inf) <= now_s:  # the first refusal of a round sets the wait
                    backoff = self._backoff[topic] = min(2 * self._backoff.get(topic, 0) or 1, MAX_BACKOFF)
                    self._topic_due[topic] = now_s + backoff * self.retry_refused_s
            self._inflight = [item for item, ok in zip(self._inflight, acked) if not ok]
        self.spool.delete(done)

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, reason_code: ReasonCode,
                    _properties: object) -> None:
        """paho's thread, holding its locks: only note a refusal (paho marks the message published after this)."""
        if reason_code.is_failure:
            self._refusals[mid] = reason_code

    def _say_refusals(self) -> None:
        if not self._unsaid or time.monotonic() - self._said_at < WARN_EVERY_S:
            return
        self._said_at = time.monotonic()
        (topic, reason), _ = self._unsaid.most_common(1)[0]
        log.warning("the MQTT broker refused messages %d time(s) since the last warning, e.g. %s: %s (an ACL that "
                    "does not allow the topic? check mqtt.prefix and the account's topics); %d kept, to go again "
                    "within %.0f s", self._unsaid.total(), topic, reason, len(self._waiting),
                    MAX_BACKOFF * self.retry_refused_s)
        self._unsaid.clear()

    @property
    def waiting(self) -> int:
        """Items held while their topic waits after a refusal (not to be waited for at a stop)."""
        return len(self._waiting)

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)


def _acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
    """is_published(), except for a message paho queued while the link was down (rc NO_CONN): for that one it
    raises RuntimeError for ever, even once paho sent it on the reconnect and the broker acknowledged it."""
    if info.rc == mqtt.MQTT_ERR_NO_CONN:
        return bool(info._published)  # paho's own flag, set by the PUBACK; no public way to read it here
    return info.is_published()
