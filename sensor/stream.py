"""Notification bytes → timestamped batches, with every gap and bad packet counted.

Pure apart from logging: the caller passes the arrival time of each notification (and, to follow a host clock
that is set while the stream runs, the time on a clock that is never set).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .codecs import DecodedPacket, PacketError
from .profiles import SensorProfile
from .timeline import ArrivalTimeline, ClockMap, CountedTimeline, Placement

log = logging.getLogger("posture.sensor")
# An arrival-timed sensor's rate is looked at over this much of a connection: a WT901BLECL that streams at most 50 Hz
# while 100 are asked reads as half its samples lost, filled in, and a link quality of 50 % for good, with no word.
RATE_CHECK_S = 30.0
SLOW_RATE = 0.75  # under this share of the asked rate for a whole check: said (once), the samples still go on
# Nothing for this long starts the check afresh: a host that stalled (its backlog comes after the gap) or a link out.
RATE_GAP_S = 2.0


@dataclass(frozen=True)
class ImuBatch:
    """Consecutive samples from one sensor, in SI-named units."""

    device: str
    t_s: np.ndarray  # (n,) host time, Unix seconds, drift-corrected from the sensor clock
    t_sensor_s: np.ndarray  # (n,) sensor clock, unwrapped (synthesised from arrivals where the wire has none)
    acc_g: np.ndarray  # (n, 3) sensor frame
    gyro_dps: np.ndarray  # (n, 3) sensor frame
    lost_before: int = 0  # samples missing right before this batch

    @property
    def n(self) -> int:
        return len(self.t_s)


@dataclass
class StreamStats:
    packets: int = 0
    samples: int = 0
    lost_samples: int = 0  # exact for the native profile, estimated from arrival times otherwise
    lost_packets: int = 0  # native profile only
    duplicates: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in PacketError.KINDS})
    reconnects: int = 0
    battery_pct: int | None = None

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


class StreamDecoder:
    def __init__(self, device: str, profile: SensorProfile, rate_hz: float = 100.0):
        self.device = device
        self.profile = profile
        self.rate_hz = rate_hz
        self.stats = StreamStats()
        self._slow_said = False
        self._steady: bool | None = None  # whether feed() is given the steady clock (on every call, or never)
        self._epoch_s = 0.0  # host − steady clock when the first notification came
        self._clock = ClockMap()  # one for all connections: reset() at each, host times go on from the last
        self._start()

    def _start(self) -> None:
        self._counted = CountedTimeline()
        self._arrivals = ArrivalTimeline(self.rate_hz)
        self._waiting: deque[tuple[DecodedPacket, float]] = deque()  # decoded, not yet placed (arrival-timed)
        # Placed but not yet mapped to host time: with a sensor clock, a connection's first seconds, until the clock
        # map has settled (the first packets of a link often come late, or as a backlog, and would set the map late).
        # Not for a synthesised clock: a loss taken back in that second would move the map under packets placed
        # before it (the samples before a stall came out early by the stall).
        self._unmapped: list[tuple[DecodedPacket, Placement]] = []
        self._last_raw: tuple[bytes, float] = (b"", float("-inf"))  # the last notification and its arrival
        self._rate_since_s: float | None = None  # the first arrival of this rate check (_check_rate)
        self._rate_arrived = 0  # samples arrived in it
        self._rate_last_s = 0.0  # the last arrival

    def restart(self) -> list[ImuBatch]:
        """A new connection: sensor clocks and counters may have moved on; keep the totals. Returns
        the samples still held back (arrival-timed profiles place a packet once more have followed, and with a
        sensor clock a connection's first seconds wait for the clock map)."""
        held = self.flush()
        self._start()
        self._clock.reset()
        return held

    def flush(self) -> list[ImuBatch]:
        """The samples still held back, placed with what followed them: call when the stream ends."""
        return self._settled(self._arrivals.flush()) + self._mapped()

    def feed(self, data: bytes | bytearray, host_s: float, steady_s: float | None = None) -> ImuBatch | None:
        """host_s: when the notification arrived, on the host clock (Unix seconds); steady_s: the same moment on a
        clock that is never set (time.monotonic()), on every call or on none. With it, arrival times are reckoned on
        the steady clock, so a host clock set by NTP is neither a loss nor a change of link latency, and host times
        follow it (ClockMap: at once, or slewed)."""
        data = bytes(data)
        if self._steady is None:
            self._steady = steady_s is not None
            self._epoch_s = 0.0 if steady_s is None else host_s - steady_s
        if self._steady != (steady_s is not None):
            raise ValueError("StreamDecoder.feed: give steady_s on every call or on none (one clock for arrivals)")
        if steady_s is not None:
            self._note_clock_set(host_s - steady_s - self._epoch_s)
            host_s = steady_s + self._epoch_s
        if not self.profile.has_sensor_clock:
            # No counter on the wire to tell a repeat (the timeline would read it as a sample and run fast).
            # A stack with a stale subscription delivers a notification twice, the copy right behind the original
            # (microseconds apart, a few ms on a busy host); a sensor's next sample is due a period later, so
            # the same bytes within a period are the same packet. (Two real samples identical to the bit and
            # that close would lose the second to this, read as one lost sample and filled by gap handling:
            # cheap next to a doubled stream, whose timeline would run at twice the rate.)
            last, last_s = self._last_raw
            self._last_raw = (data, host_s)
            if data == last and host_s - last_s < 1.0 / self.rate_hz:
                self.stats.duplicates += 1
                return None
        try:
            packet = self.profile.decode(data)
        except PacketError as exc:
            self.stats.malformed[exc.kind] += 1
            if self.stats.malformed[exc.kind] == 1:  # once per kind; the counters carry the rest
                log.warning("%s: bad packet (%s): %s", self.device, exc.kind, exc)
            return None
        if self.profile.has_sensor_clock:
            # A profile with a sensor clock decodes every packet with its counter and timestamps.
            assert packet.seq is not None and packet.t0_us is not None and packet.period_us is not None
            placed = self._counted.place(packet.seq, packet.t0_us, packet.period_us, packet.n, host_s)
            if placed.duplicate:
                self.stats.duplicates += 1
                return None
            if placed.clock_step_s:
                log.warning("%s: the sensor clock stepped %s by %.3f s (the packet counter says %d packets lost, "
                            "not the clock's gap): sample times go on from the last packet", self.device,
                            "forward" if placed.clock_step_s > 0 else "back", abs(placed.clock_step_s),
                            placed.lost_packets)
            batches = self._batches(packet, host_s, placed)
        else:
            self._check_rate(host_s, packet.n)
            self._waiting.append((packet, host_s))
            held_before = self._arrivals.held_too_long
            batches = self._settled(self._arrivals.place(host_s, packet.n))
            if not held_before and self._arrivals.held_too_long:
                # A backlog over two minutes long, or (more likely) a sensor sending faster than it was asked to
                # (its rate command ignored): every sample then waits that long to be placed.
                held_s = self._arrivals.max_hold / self.rate_hz
                log.warning("%s: samples arrive faster than the %g Hz asked for %.0f s: the sensor may stream at "
                            "another rate (check pipeline.rate_hz); they are placed %.0f s late", self.device,
                            self.rate_hz, held_s, held_s)
        return _joined(batches) if batches else None

    def _check_rate(self, host_s: float, n: int) -> None:
        """Samples arriving at well under the asked rate for RATE_CHECK_S of one connection: said once, with what
        to do. Without a counter a sensor streaming slower than asked and a link losing that share look alike."""
        if self._rate_since_s is None or host_s - self._rate_last_s > RATE_GAP_S:
            self._rate_since_s, self._rate_arrived = host_s, 0
        self._rate_last_s = host_s
        if (since_s := host_s - self._rate_since_s) >= RATE_CHECK_S:
            per_s = self._rate_arrived / since_s
            if per_s < SLOW_RATE * self.rate_hz and not self._slow_said:
                self._slow_said = True
                log.warning("%s: %.0f samples/s arrived over %.0f s of the %g Hz asked: the sensor streams slower "
                            "than asked (set pipeline.rate_hz to its rate) or the link loses %.0f %% of them; the "
                            "missing samples are counted lost and filled in", self.device, per_s, since_s,
                            self.rate_hz, 100 * (1 - per_s / self.rate_hz))
            self._rate_since_s, self._rate_arrived = host_s, 0
        self._rate_arrived += n

    def _note_clock_set(self, offset_s: float) -> None:
        """The host clock as set now, relative to the steady clock at the first notification."""
        step_s = offset_s - self._clock.host_offset_s
        if abs(step_s) >= 0.1:  # less is the two clocks read a moment apart
            how = ("sample times follow it at once" if step_s >= ClockMap.JUMP_S else
                   f"sample times slew to it at {ClockMap.SLEW:.0%} ({abs(step_s) / ClockMap.SLEW:.0f} s)")
            log.warning("%s: host clock set %s by %.1f s: %s", self.device, "forward" if step_s > 0 else "back",
                        abs(step_s), how)
        self._clock.host_offset_s = offset_s

    def _settled(self, placements: list[Placement]) -> list[ImuBatch]:
        """The oldest waiting packets, one per placement (the timeline places them in arrival order)."""
        return [batch for placed in placements for batch in self._batches(*self._waiting.popleft(), placed)]

    def _batches(self, packet: DecodedPacket, host_s: float, placed: Placement) -> list[ImuBatch]:
        self.stats.packets += 1
        self.stats.samples += packet.n
        self.stats.lost_samples += placed.lost_samples
        self.stats.lost_packets += placed.lost_packets
        if placed.lost_samples < 0:
            # Samples counted lost were late after all (or fewer were lost than counted): the synthesised clock,
            # which cannot step back, is ahead by them.
            self._clock.shift(-placed.lost_samples / self.rate_hz)
        # A late packet (a backlog's: late_s after the floor of its neighbours) is learnt as arriving when a prompt
        # one would have. Left out, a connection that began with a backlog had nothing to learn from until it had
        # drained, and its samples took the last connection's map: 2 minutes into the past, behind samples already
        # handed out. (A sensor clock's placement has no late_s: its map drops a backlog's windows itself.)
        self._clock.update(float(placed.t_sensor_s[-1]), host_s - placed.late_s)
        self._unmapped.append((packet, placed))
        return self._mapped() if self._clock.settled or not self.profile.has_sensor_clock else []

    def _mapped(self) -> list[ImuBatch]:
        """The packets placed so far, in host time."""
        out = [ImuBatch(self.device, self._clock.to_host(placed.t_sensor_s), placed.t_sensor_s, packet.acc_g,
                        packet.gyro_dps, max(0, placed.lost_samples)) for packet, placed in self._unmapped]
        self._unmapped.clear()
        return out


def _joined(batches: list[ImuBatch]) -> ImuBatch:
    """Packets placed together, as one batch (times may jump where samples were lost between them;
    lost_before counts them all, as BatchCollector does)."""
    if len(batches) == 1:
        return batches[0]
    return ImuBatch(batches[0].device, np.concatenate([b.t_s for b in batches]),
                    np.concatenate([b.t_sensor_s for b in batches]), np.vstack([b.acc_g for b in batches]),
                    np.vstack([b.gyro_dps for b in batches]), sum(b.lost_before for b in batches))
