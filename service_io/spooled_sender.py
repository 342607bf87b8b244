"""Publishing what a Spool holds, oldest first, deleting each item once the broker acknowledged it.

The one way our services send messages that must not be lost (QoS 1 PUBACK = delivered to the
broker): the gateway's results and the alert service's nudges. Within a process, paho itself
resends what was not acknowledged when a connection drops; the spool covers process restarts,
which send again, from the oldest, whatever the broker had not acknowledged. An item past its expiry is
dropped and counted instead of sent; one still valid carries the rest of its lifetime as the
MQTT 5 message expiry, so the broker drops it for a phone that comes back too late.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from service_io.spool import Spool, SpoolError

log = logging.getLogger("posture.spool")


class SpooledSender:
    def __init__(self, client: mqtt.Client, spool: Spool, *, max_inflight: int = 100, mqtt5: bool = True,
                 clock: Callable[[], float] = time.time):
        self.client, self.spool, self.max_inflight, self.mqtt5, self.clock = client, spool, max_inflight, mqtt5, clock
        self.expired = 0
        self._inflight: list[tuple[mqtt.MQTTMessageInfo, int]] = []  # sent, not yet acknowledged
        self._sent_up_to = 0  # highest spool id handed to paho since the last (re)connect
        # spool.puts when a look found fewer items than it had room for: none came since, if it still is. pump()
        # runs every 50 ms per device, and a look is an SQLite query: most of a quiet gateway's CPU per sensor.
        self._seen_all_at: int | None = None
        self._lock = threading.Lock()

    def pump(self) -> None:
        """Forget what the broker acknowledged; hand the next spooled items to paho (call while connected).

        Acknowledgements are read from paho's message handles here, in our thread, rather than in
        an on_publish callback: paho calls that holding its own lock, which would deadlock against
        a publish made holding ours.
        """
        self._forget_acknowledged()
        with self._lock:
            room, after = self.max_inflight - len(self._inflight), self._sent_up_to
        expired = []
        puts = self.spool.puts  # read before the look: a put during it makes the next pump look again
        rows = self.spool.peek(room, after_id=after) if room > 0 and puts != self._seen_all_at else []
        if room > 0:
            self._seen_all_at = puts if len(rows) < room else None
        for spool_id, topic, body, expires_at in rows:
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
                break
            with self._lock:
                self._inflight.append((info, spool_id))
                self._sent_up_to = spool_id
        self.spool.delete(expired)
        self.expired += len(expired)

    def settle(self, connected: threading.Event, timeout_s: float) -> None:
        """Before a clean stop: wait (at most timeout_s, while connected) for the broker to acknowledge what is in
        flight, and forget what it did. Otherwise an acknowledgement that came after the last pump is lost with the
        process, and the next start sends that item again: a phone got the same nudge twice after a restart.
        Best effort: what cannot be forgotten now (a full disk) is sent again, as after a crash."""
        deadline = time.monotonic() + timeout_s
        while connected.is_set() and time.monotonic() < deadline:
            with self._lock:
                if all(_acknowledged(info) for info, _ in self._inflight):
                    break
            time.sleep(0.01)
        try:
            self._forget_acknowledged()
        except SpoolError as exc:
            log.warning("could not mark what the broker acknowledged as sent (%s): it goes out again at the next "
                        "start", exc)

    def _forget_acknowledged(self) -> None:
        with self._lock:
            acked = [_acknowledged(info) for info, _ in self._inflight]
            done = [spool_id for (_, spool_id), ok in zip(self._inflight, acked) if ok]
            self._inflight = [item for item, ok in zip(self._inflight, acked) if not ok]
        self.spool.delete(done)

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
