"""The virtual sensor's samples as `posture run` receives them, without the radio.

Each notification is encoded by the simulator's wire profile, goes through a link (independent
loss, burst outages of seconds to minutes, a connection-interval latency with jitter) and is decoded
by the client's own `StreamDecoder` (codec, sequence and clock unwrapping, sensor → host clock map).
What comes out is exactly the `ImuBatch` the gateway hands to the pipeline, one per notification
(with a sensor clock, a connection's first second together once the clock map has seen it; for profiles timed by
arrival, a short wait later: `sensor.timeline.ArrivalTimeline`), plus the
simulator's sample indices so the truth can be looked up for scoring. After an outage longer than
the link watchdog the decoder is restarted, as `SensorLink` does on a reconnect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from firmware_sim.imu import SimChunk
from firmware_sim.profiles import StreamSettings, get_profile
from sensor.profiles import PROFILES, samples_per_notification
from sensor.stream import ImuBatch, StreamDecoder

HOST_EPOCH_S = 1_772_438_400.0  # 2026-03-02 08:00 UTC: the day's first sample, host clock
WATCHDOG_S = 3.0  # sensor.link.LinkSettings.watchdog_s


@dataclass(frozen=True)
class LinkModel:
    """What happens between the sensor and the gateway."""

    profile: str = "native"
    loss_p: float = 0.0  # each notification lost independently
    outages_s: tuple[tuple[float, float], ...] = ()  # (start_s, duration_s) out of range, sim time
    latency_ms: tuple[float, float] = (7.5, 30.0)  # fixed part (connection interval) and mean extra
    seed: int = 0


@dataclass
class Fed:
    """One batch handed to the pipeline and the simulator samples it carries."""

    batch: ImuBatch
    index: np.ndarray  # simulator sample indices
    arrival_s: float  # host time the notification arrived


@dataclass
class LinkStats:
    notifications: int = 0
    lost_notifications: int = 0
    samples_in_outages: int = 0
    reconnects: int = 0
    times_backwards: int = 0  # a batch whose first host time is not after the previous batch's last


class LiveLink:
    """Feeds a simulation's chunks through wire profile, link and client decoder, in order."""

    def __init__(self, rate_hz: float, link: LinkModel, stats: LinkStats | None = None):
        self.link = link
        self.stats = stats if stats is not None else LinkStats()
        self._wire = get_profile(link.profile)
        packing = PROFILES[link.profile].packing_command is not None  # as SensorLink asks the sensor
        self._settings = (StreamSettings(rate_hz=rate_hz, samples_per_packet=samples_per_notification(rate_hz))
                          if packing else StreamSettings(rate_hz=rate_hz))
        self._per_packet = self._wire.samples_per_packet(self._settings)
        self._decoder = StreamDecoder("sim", PROFILES[link.profile], rate_hz)
        self._rng = np.random.default_rng([link.seed, 0x11CC])
        self._outages = sorted(link.outages_s)
        self._seq = 0
        self._last_host_s = -np.inf
        self._last_rx_s: float | None = None
        self._last_arrival_s = HOST_EPOCH_S
        self._waiting: deque[np.ndarray] = deque()  # simulator indices of each packet given to the decoder, not yet out

    def feed(self, chunk: SimChunk) -> Iterator[Fed]:
        st, link = self.stats, self.link
        packets = self._wire.encode_chunk(self._seq, chunk.t_sensor_us, chunk.acc_g, chunk.gyro_dps, chunk.euler_deg,
                                          self._settings)
        starts = np.arange(0, len(chunk), self._per_packet)
        ends = np.minimum(starts + self._per_packet, len(chunk))
        sent_s = chunk.t_s[ends - 1]  # each packet goes when its last sample is taken
        away = np.zeros(len(starts), bool)
        for s, d in self._outages:
            away |= (s <= sent_s) & (sent_s < s + d)
        for k, (a, z, t_s, out) in enumerate(zip(starts.tolist(), ends.tolist(), sent_s.tolist(), away.tolist())):
            self._seq += 1
            if out:
                st.samples_in_outages += z - a
                continue
            st.notifications += 1
            if link.loss_p and self._rng.random() < link.loss_p:
                st.lost_notifications += 1
                continue
            if self._last_rx_s is not None and t_s - self._last_rx_s > WATCHDOG_S:
                st.reconnects += 1  # the watchdog gave up on the link; a new connection starts over
                yield from self._out(self._decoder.restart(), self._last_arrival_s)
            self._last_rx_s = t_s
            packet = packets[k]
            # Sent when its last sample is taken, arrives after the link's latency.
            arrival_s = HOST_EPOCH_S + t_s + (link.latency_ms[0] + self._rng.exponential(link.latency_ms[1])) / 1e3
            self._last_arrival_s = arrival_s
            self._waiting.append(chunk.index[a:z])
            dropped = self._decoder.stats.malformed_total + self._decoder.stats.duplicates
            batch = self._decoder.feed(packet, arrival_s)
            if self._decoder.stats.malformed_total + self._decoder.stats.duplicates != dropped:
                self._waiting.pop()  # the decoder dropped this packet: its samples never come out
            if batch is not None:
                yield from self._out([batch], arrival_s)

    def finish(self) -> Iterator[Fed]:
        """The samples the decoder still holds when the stream ends."""
        yield from self._out(self._decoder.flush(), self._last_arrival_s)

    def _out(self, batches: list[ImuBatch], arrival_s: float) -> Iterator[Fed]:
        # The decoder hands samples on in the order they came (some profiles after a short wait).
        for batch in batches:
            if batch.t_s[0] <= self._last_host_s:
                self.stats.times_backwards += 1
            self._last_host_s = float(batch.t_s[-1])
            # The decoder hands on whole packets, so the batch is the oldest waiting packets' samples.
            parts, n = [], 0
            while n < batch.n:
                parts.append(self._waiting.popleft())
                n += len(parts[-1])
            assert n == batch.n, "a batch that splits a packet"
            index = np.concatenate(parts)
            yield Fed(batch, index, arrival_s)


def random_outages(rng: np.random.Generator, duration_s: float, per_hour: float = 2.0,
                   shortest_s: float = 2.0, longest_s: float = 300.0) -> tuple[tuple[float, float], ...]:
    """Walking out of range: Poisson in time, durations log-uniform from seconds to minutes."""
    n = rng.poisson(per_hour * duration_s / 3600.0)
    starts = np.sort(rng.uniform(60.0, max(duration_s - 60.0, 61.0), size=n))
    lengths = np.exp(rng.uniform(np.log(shortest_s), np.log(longest_s), size=n))
    return tuple((float(s), float(d)) for s, d in zip(starts, lengths))
