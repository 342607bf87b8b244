"""How often a device's status may go out at once: a sensor whose link flaps is not a retained message a second.

gateway/publisher.py's status_due sends a status at once when `online`, `battery_pct` or `reconnects` changed. A
link that drops and comes back every second changes `online` and `reconnects` at every look (STATUS_CHECK_S), and
each status is a retained message: a write to the broker's store (the shipped Mosquitto config saves its whole
persistence file, with fsync, after every change) and a point in InfluxDB. So such changes draw on a budget: the
first FLAP_BURST in a row go out at once (a drop and its return, as before), then one per refill_s (the gateway's
status_interval_s), each saying the status as it is by then. Pure: time passed in.
"""

from __future__ import annotations

from contract.messages import Status

# A drop and its return are two changes, a battery step a third: a link that drops once is said at once, both ways.
FLAP_BURST = 3


def seen_at_once(status: Status) -> tuple[object, ...]:
    """What status_due (gateway/publisher.py) sends at once when it changed."""
    return status.online, status.battery_pct, status.reconnects


class FlapLimit:
    def __init__(self, refill_s: float, burst: int = FLAP_BURST):
        self.refill_s = refill_s  # seconds for one more change to go out at once (gateway.status_interval_s)
        self.burst = burst
        self._budget = float(burst)  # changes that may go out at once now
        self._at_s: float | None = None  # when the budget was last brought up to date
        self._sent: Status | None = None  # the last status that went out

    def may_send(self, status: Status, now_s: float) -> bool:
        """False while status changes what is seen at once and the budget for that is spent: it is looked at again at
        the next look, and goes out as it is then once the budget allows (at most refill_s later)."""
        if self._sent is None or seen_at_once(status) == seen_at_once(self._sent):
            return True  # the first status, or a change status_due itself spaces out
        return self._refill(now_s) >= 1.0

    def sent(self, status: Status, now_s: float) -> None:
        """status went out at now_s."""
        if self._sent is not None and seen_at_once(status) != seen_at_once(self._sent):
            self._budget = self._refill(now_s) - 1.0
        self._sent = status

    def _refill(self, now_s: float) -> float:
        if self._at_s is not None:
            self._budget = min(float(self.burst), self._budget + max(0.0, now_s - self._at_s) / self.refill_s)
        self._at_s = now_s
        return self._budget
