"""Where each sample sits in time: sequence gaps, sensor-clock unwrapping, sensor → host time.

Pure: arrival times are passed in, nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

SEQ_MODULO = 1 << 16
CLOCK_MODULO_US = 1 << 32
MAX_DRIFT = 500e-6  # sensor crystals drift tens of ppm (±100 ppm at worst over temperature)
MAX_HOLD_S = 120.0  # the longest a backlog is held back to be placed where it was taken (then it is placed late)
# How far the lag of a backlog's arrivals falls in a short while (a drain at 1.2× the sample rate: 170 ms a second)
# and a link's does not (its minima over 16-32 samples differ by milliseconds).
FALL_S = 0.025
_Times = TypeVar("_Times", float, np.ndarray)


@dataclass(frozen=True)
class Placement:
    t_sensor_s: np.ndarray  # sensor time of each sample in the packet, unwrapped
    lost_samples: int  # samples missing right before this packet (negative: a correction)
    lost_packets: int  # packets missing right before this packet (0 where the wire has no counter)
    duplicate: bool = False  # a packet we already had (its samples should be dropped)
    late_s: float = 0.0  # how long after the floor of its neighbours it arrived (arrival-timed: a backlog's packet)
    clock_step_s: float = 0.0  # how far the sensor clock stepped right before this packet (taken out of t_sensor_s)


class CountedTimeline:
    """For profiles with a sequence counter and sensor timestamps on the wire: gaps are exact.

    The counter and the clock tell a gap twice over. Where they disagree the sensor clock stepped (a firmware that
    sets its clock while it streams): the counter says what was lost, and the step is taken out of the sensor times,
    which go on from the last packet. Read off the clock, a step forward of 35 min within a connection at 200 Hz was
    420,000 samples "lost" in one minute, which the contract refuses (at most 48,000), and its samples were mapped
    35 min into the future; a step back dropped every packet as a repeat until the clock had caught up.

    But the counter counts notifications sent (firmware-sim/PROTOCOL.md), so a sensor that sent nothing for a while
    (`posture sim --mute` shorter than the link's watchdog: the simulator's counter stands still) has a clock gap the
    counter does not show, and so has a loss of packets whose size differs from the next one's. Where the arrivals
    (arrived_s) show the clock's gap rather than the counter's, the clock is right: read as a step, a 2 s mute was no
    loss and every later sample of the connection was placed 2 s before it was taken.
    """

    def __init__(self) -> None:
        self._last_seq: int | None = None
        self._last_t0_us = 0
        self._t0_unwrapped_us = 0
        self._next_us = 0  # where the next sample is due, on the unwrapped sensor clock
        self._last_arrived_s: float | None = None

    def place(self, seq: int, t0_us: int, period_us: int, n: int, arrived_s: float | None = None) -> Placement:
        """arrived_s: when the packet arrived (any clock that is not set, the same for every packet; None: unknown)."""
        clock_step_us = 0
        if self._last_seq is None:
            self._t0_unwrapped_us = t0_us
            lost_samples = lost_packets = 0
        else:
            step_us = (t0_us - self._last_t0_us) % CLOCK_MODULO_US
            lost_packets = (seq - self._last_seq - 1) % SEQ_MODULO
            behind = step_us == 0 or step_us >= CLOCK_MODULO_US // 2
            # Not after the last packet by the clock nor by the counter: a repeat, not 35 minutes (behind) or
            # 65,535 packets (the same packet again) of loss. A BLE stack with a stale subscription delivers each
            # packet twice.
            if behind and lost_packets >= SEQ_MODULO // 2:
                return Placement(np.empty(0), 0, 0, duplicate=True)
            lost_samples = round((self._t0_unwrapped_us + step_us - self._next_us) / period_us)
            # The packets the clock says were lost, against the counter's count (modulo its wrap, within one).
            by_clock = (round(lost_samples / n) - lost_packets + SEQ_MODULO // 2) % SEQ_MODULO - SEQ_MODULO // 2
            if behind or (abs(by_clock) > 1 and not self._arrivals_show(lost_samples, lost_packets, n, period_us,
                                                                         arrived_s)):
                lost_samples = lost_packets * n  # the counter's: the clock stepped
                clock_step_us = self._t0_unwrapped_us + step_us - (self._next_us + lost_samples * period_us)
                step_us -= clock_step_us
                clock_step_us = (clock_step_us + CLOCK_MODULO_US // 2) % CLOCK_MODULO_US - CLOCK_MODULO_US // 2
            self._t0_unwrapped_us += step_us
            lost_samples = max(0, lost_samples)
        self._last_seq, self._last_t0_us, self._last_arrived_s = seq, t0_us, arrived_s
        self._next_us = self._t0_unwrapped_us + n * period_us
        t_us = self._t0_unwrapped_us + period_us * np.arange(n)
        return Placement(t_us / 1e6, lost_samples, lost_packets, clock_step_s=clock_step_us / 1e6)

    def _arrivals_show(self, lost_samples: int, lost_packets: int, n: int, period_us: int,
                       arrived_s: float | None) -> bool:
        """Whether the time between this packet's arrival and the last's is nearer the clock's gap (lost_samples)
        than the counter's (lost_packets of n): no step then, the sensor sent nothing for as long as its clock says."""
        if arrived_s is None or self._last_arrived_s is None:
            return False
        unseen_us = (arrived_s - self._last_arrived_s) * 1e6 - n * period_us  # less this packet's own samples
        return abs(unseen_us - lost_samples * period_us) < abs(unseen_us - lost_packets * n * period_us)


class ArrivalTimeline:
    """For profiles with neither counter nor timestamp (WT901BLE, Thingy:52 raw): from arrival times.

    The sensor samples on a steady clock, so r_j = (arrival_j − arrival_0)·rate − j, for the j-th
    received sample, has a floor set by the smallest link latency; every lost sample lifts that
    floor by exactly one for all later samples, a late packet lifts only itself. A packet's loss
    count is the floor over the `window` samples that arrive *after* it: a lost sample is then
    placed right after the last packet that arrived early enough to prove it came before the loss
    (within a few samples of the truth), where a trailing window placed it a whole window late —
    and the rotation rate filled in for it came from the wrong moment of a twist. So a packet is
    placed once `window` samples have followed it (0.32 s at 100 Hz), or when flushed. Clock drift
    moves the floor slowly and continuously, unlike a loss, so it is followed as the fractional
    part of the floor. The count is an estimate: a link that delays every packet by more than half
    a period for a whole window reads as loss until it recovers.

    A backlog delivered at once (the host or the sensor stalled: a Raspberry Pi's SD card, a paused VM) arrives
    faster than the sensor samples: while that lasts the floor is still falling, and a packet placed on it was
    counted lost by the whole stall, its samples after it put that far ahead, into the future (a 20 s stall: 1,970
    samples "lost", sample times 15 s ahead, slewed back at 5 %). So nothing is placed while the floor of the newer
    half of the last window of arrivals is below the older half's by more than FALL_S (a drain at 1.2× the sample
    rate is seen at 50 and 100 Hz, 1.5× at 200 Hz; one slower still reads as loss). Jitter does not do that: every
    packet of half a window would have to come FALL_S later than the next half's floor (under heavy jitter, 30 ms +
    exponential 80 ms, it adds 0.05–0.16 s to the p99 of how long a packet waits to be placed). At most `max_hold_s`
    of samples are held: those placed past it, the floor still falling, follow their neighbours, late, not lost.
    """

    def __init__(self, rate_hz: float, window: int = 32, drift_gain: float = 0.02, max_hold_s: float = MAX_HOLD_S):
        self.rate_hz = rate_hz
        self.window = window
        self.drift_gain = drift_gain
        self.max_hold = max(window, round(max_hold_s * rate_hz))
        self._pending_min = np.inf  # the floor of the packets waiting
        self._fall = max(1.0, FALL_S * rate_hz)
        self.falling = False  # a backlog is coming in: nothing is placed
        self.held_too_long = 0  # packets placed past max_hold_s with the floor still falling
        self._pending: deque[tuple[float, int]] = deque()  # (r of the packet's newest sample, n), not yet placed
        self._pending_samples = 0
        self._first_host_s: float | None = None
        self._arrived = 0
        self._placed = 0
        self._lost = 0
        self._drift = 0.0

    def place(self, host_s: float, n: int = 1) -> list[Placement]:
        """Placements of the packets that are now settled, oldest first (usually none or one)."""
        if self._first_host_s is None:
            self._first_host_s = host_s
        j = self._arrived + n - 1  # ordinal of the newest sample in this packet
        r = (host_s - self._first_host_s) * self.rate_hz - j
        self._pending.append((r, n))
        self._pending_min = min(self._pending_min, r)
        self._arrived += n
        self._pending_samples += n
        self.falling = self._floor_falls()
        out = []
        while self._pending_samples - self._pending[0][1] >= self.window and (
                not self.falling or self._pending_samples > self.max_hold):
            # Placed past max_hold while the floor is still falling: the floor tells how late the backlog came,
            # not what was lost (counted lost, the samples after it went that far into the future). They follow
            # their neighbours; a loss among them is counted once the floor has held.
            self.held_too_long += self.falling
            out.append(self._settle(full=True, falling=self.falling))
        return out

    def _floor_falls(self) -> bool:
        """The floor of the last window of arrivals' newer half more than FALL_S below its older half's. Those are
        the newest packets waiting: a packet is placed only with a window's samples after it."""
        newer, older, seen = np.inf, np.inf, 0
        for r_k, n_k in reversed(self._pending):
            if seen >= self.window:
                break
            if seen < self.window // 2:
                newer = min(newer, r_k)
            else:
                older = min(older, r_k)
            seen += n_k
        return older - newer > self._fall

    def flush(self) -> list[Placement]:
        """Place every packet still waiting, with what followed it (the link is going away)."""
        return [self._settle(full=False) for _ in range(len(self._pending))]

    def _settle(self, full: bool, falling: bool = False) -> Placement:
        floor = self._pending_min  # the head and what arrived after it
        head, n = self._pending.popleft()
        self._pending_samples -= n
        if head <= self._pending_min:
            self._pending_min = min((r for r, _ in self._pending), default=np.inf)
        # Flushed, a packet may have few followers, perhaps all late: a new loss needs a quarter window.
        trusted = (full or self._pending_samples >= self.window // 4) and not falling
        lost = round(floor - self._drift) if trusted else self._lost
        counted_back = 0
        if lost < self._lost:
            # Fewer lost than already placed: the packets that raised the floor were late, not lost (at
            # the start: the first packets came late). Samples handed on cannot move back in time, so
            # the floor is re-anchored, the next sample follows its neighbour, and the count is corrected.
            counted_back = self._lost - max(lost, 0)
            self._drift += lost - self._lost
            lost = self._lost
        if full and not falling:
            self._drift += self.drift_gain * (floor - lost - self._drift)
        lost_now, self._lost = lost - self._lost - counted_back, lost
        index = self._placed + self._lost + np.arange(n)
        self._placed += n
        return Placement(index / self.rate_hz, lost_now, 0, late_s=(head - floor) / self.rate_hz)


class ClockMap:
    """Sensor clock → host clock: the lower envelope of (host − sensor) with a linear drift fit.

    Arrival always lags the sample, so the smallest lag per window is the best estimate of the
    clock offset; a line through those minima follows crystal drift (tens of ppm). When a new,
    smaller lag moves the map earlier (the first packets of a link came late, as on a busy host),
    host times would run backwards: the map then slews to the new estimate at SLEW of the sensor's
    time instead of jumping, so host times always increase; a move later is slewed too, up to JUMP_S.
    Arrivals are best timed on a clock that is never set: `host_offset_s` then carries how far the host
    clock was set since (by NTP), and the map follows it the same way.

    A connection's map settles on two steady windows (the lag of each one's halves within FALL_S) whose minima agree
    within FALL_S: a sensor that kept its samples while out of reach (or a host that stalled as the link came back)
    delivers them faster than it samples, so the lag falls by a fraction of a second every window until the backlog
    is drained. Settled on the backlog's first window, the map put samples up to the stall into the future and slewed
    back at SLEW for minutes, each of those host minutes holding 63 s of samples. A backlog's windows are dropped,
    not learnt; after MAX_HOLD_S the map settles on what it has (a sensor clock running fast by percents).
    """

    SLEW = 0.05  # up to 50 ms of correction per second: a backwards step of 0.2 s is gone in 4 s
    # A map moved later by this much or more is taken at once (the host clock was set forward: downstream reads
    # the jump as a lost link, and starts afresh after it); by less it is slewed in too, as a short jump would be
    # taken for a short gap and filled with samples that never were.
    JUMP_S = 1.0
    # A packet this much later than the settled map is a backlog's (the host stalled, D-Bus held the notifications):
    # it tells when the host got round to it, not the link's latency. Learnt, a stall of 90 s a minute into a
    # connection made most of the history and put the samples after it up to 28 s into the future, for minutes.
    LATE_S = 1.0

    def __init__(self, window_s: float = 1.0, history: int = 300):
        self.window_s = window_s
        self.history = history
        # How far the host clock has been set since the arrival times began (they come from a clock that is
        # never set): added to every host time, so a clock set by NTP is followed from the next sample on.
        self.host_offset_s = 0.0
        # The window minima (sensor time, lag), oldest first, at most `history`: arrays, as the refit reads them
        # whole once a window (rebuilding an array of 300 pairs was a third of the client's decoding CPU).
        self._minima = np.empty((0, 2))
        self._window_start_s: float | None = None
        self._window_min: tuple[float, float] | None = None
        self._halves = [np.inf, np.inf]  # the window's smallest lag in its older and its newer half (_settle)
        self._steady_before = False  # the window before this one was steady (_settle)
        self._settled = False
        self._connection_start_s = 0.0  # sensor time of this connection's first packet
        self._fit = (0.0, 0.0, 0.0)  # slope, intercept, reference sensor time
        self._last: tuple[float, float] | None = None  # (sensor, host) time of the last sample mapped
        # (steady, host) time of the last sample mapped before a reset(): a new connection's host times go on from
        # there, with whatever correction was still being slewed in (else a clock set back would run them backwards).
        self._carried: tuple[float, float] | None = None

    def update(self, sensor_s: float, host_s: float) -> None:
        """sensor_s: sensor time of the newest sample in a packet; host_s: when it arrived."""
        lag = host_s - sensor_s
        if self._window_start_s is None or sensor_s < self._window_start_s:
            self.reset()
            self._window_start_s = self._connection_start_s = sensor_s
        elif self.settled and host_s - self._steady(sensor_s) > self.LATE_S:
            return
        if self._window_min is None or lag < self._window_min[1]:
            self._window_min = (sensor_s, lag)
            if len(self._minima) < 2:
                self._fit = (0.0, lag if not len(self._minima) else min(lag, float(self._minima[-1, 1])), sensor_s)
        half = int(sensor_s - self._window_start_s >= self.window_s / 2)
        self._halves[half] = min(self._halves[half], lag)
        if sensor_s - self._window_start_s >= self.window_s:
            self._minima = np.concatenate((self._minima, [self._window_min]))[-self.history:]
            self._window_start_s, self._window_min = sensor_s, None
            if not self._settled:
                self._settle(sensor_s)
            self._halves = [np.inf, np.inf]
            self._refit()

    def _settle(self, sensor_s: float) -> None:
        """Settled on two steady windows (the lag of each one's halves within FALL_S) that agree: else the windows
        before the last are dropped. A draining backlog's lag falls within every window; two windows of one drain
        agreed by chance when the host stalled in its middle (the map settled 49 s late)."""
        older, newer = self._halves
        steady = not np.isfinite(older + newer) or abs(older - newer) <= FALL_S
        settles = (steady and self._steady_before and len(self._minima) >= 2
                   and abs(self._minima[-2, 1] - self._minima[-1, 1]) <= FALL_S)
        if not settles:
            self._minima = self._minima[-1:]
        self._steady_before = steady
        self._settled = settles or sensor_s - self._connection_start_s >= MAX_HOLD_S

    @property
    def settled(self) -> bool:
        """Whether the map rests on this connection's link latency (before that, on its first packets)."""
        return self._settled

    def shift(self, sensor_ahead_s: float) -> None:
        """The sensor clock was moved ahead by this much (a synthesised clock re-anchored): every lag seen so far
        is that much smaller from now on. Known exactly, so the map moves with it rather than learn it as a
        change of lag over half its history."""
        self._minima[:, 1] -= sensor_ahead_s
        if self._window_min is not None:
            self._window_min = (self._window_min[0], self._window_min[1] - sensor_ahead_s)
        slope, intercept, ref = self._fit
        self._fit = (slope, intercept - sensor_ahead_s, ref)

    def _refit(self) -> None:
        s, lag = self._minima[:, 0], self._minima[:, 1]
        ref = s[-1]
        if len(s) >= 3:
            # The median slope of pairs half the history apart, not least squares: a few late windows (a
            # busy host, a BLE retry) must not tilt the line. Theil–Sen (all pairs) is as robust but 50×
            # slower, once a second per sensor. No crystal drifts by more than MAX_DRIFT: a steeper line
            # is latency.
            h = len(s) // 2
            pair_slopes = (lag[h:2 * h] - lag[:h]) / (s[h:2 * h] - s[:h])
            slope = float(np.clip(np.median(pair_slopes), -MAX_DRIFT, MAX_DRIFT))
            intercept = float(np.median(lag - slope * (s - ref)))
        else:
            slope, intercept = 0.0, float(lag.min())
        self._fit = (slope, intercept, float(ref))

    def reset(self) -> None:
        """A new connection (or a sensor clock that restarted): the map starts afresh, host times go on."""
        if self._last is not None:
            self._carried = (float(self._steady(self._last[0])), self._last[1])
        self._minima = self._minima[:0]
        self._window_start_s = self._window_min = None
        self._halves, self._steady_before, self._settled = [np.inf, np.inf], False, False
        self._last = None

    def _steady(self, sensor_s: _Times) -> _Times:
        """The map on the arrivals' own clock (without host_offset_s)."""
        slope, intercept, ref = self._fit
        return sensor_s + intercept + slope * (sensor_s - ref)

    def to_host(self, sensor_s: np.ndarray) -> np.ndarray:
        """Host times of samples newer than any mapped before."""
        steady_s = self._steady(sensor_s)
        host_s = steady_s + self.host_offset_s
        if not len(sensor_s):
            return host_s
        # How far the map moved since the last sample (in this connection, or the one before), slewed away.
        if self._last is not None:
            last_sensor_s, last_host_s = self._last
            host_s = host_s + self._owed(last_host_s - (self._steady(last_sensor_s) + self.host_offset_s),
                                         sensor_s - last_sensor_s)
        elif self._carried is not None:
            then_s, last_host_s = self._carried
            host_s = host_s + self._owed(last_host_s - (then_s + self.host_offset_s),
                                         np.maximum(0.0, steady_s - then_s))
        self._last, self._carried = (float(sensor_s[-1]), float(host_s[-1])), None
        return host_s

    def _owed(self, ahead_s: float, elapsed_s: np.ndarray) -> np.ndarray | float:
        """The correction still carried elapsed_s after host times were ahead_s ahead of the map (behind: < 0),
        slewed away at SLEW; a map moved later by JUMP_S or more is taken at once."""
        if ahead_s > 0:
            return np.maximum(0.0, ahead_s - self.SLEW * elapsed_s)
        if -self.JUMP_S < ahead_s < 0:
            return np.minimum(0.0, ahead_s + self.SLEW * elapsed_s)
        return 0.0
