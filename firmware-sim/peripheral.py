"""The virtual sensor at run time: registers with BlueZ, then streams a scenario in real time.

The scenario clock starts at the first subscription and then runs on whatever happens to the
link, like a sensor on a moving back: samples taken while nobody listens, while a packet is
dropped or while the sensor is out of range are marked unsent in the truth file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dbus_fast import DBusError, Message
from dbus_fast.aio import MessageBus

from .faults import FaultInjector, FaultSettings
from .gatt import CharacteristicSpec, GattApplication, ServiceSpec
from .imu import SensorSimulation, SimChunk
from .profiles import StreamSettings, WireProfile, get_profile
from .scenario import load_scenario
from .truth import TruthWriter

log = logging.getLogger("posture.sim")

BATTERY_SERVICE, BATTERY_LEVEL = "0000180f-0000-1000-8000-00805f9b34fb", "00002a19-0000-1000-8000-00805f9b34fb"
DEVICE_INFO_SERVICE = "0000180a-0000-1000-8000-00805f9b34fb"
MANUFACTURER, MODEL, SERIAL, FIRMWARE = (f"00002a{x}-0000-1000-8000-00805f9b34fb" for x in ("29", "24", "25", "26"))
MODEL_NAMES = {"native": "posture-imu (virtual)", "witmotion": "WT901BLE (virtual)", "thingy52": "Thingy:52 (virtual)"}
FEED_CHUNK_SAMPLES = 1000
UNREGISTER_TIMEOUT_S = 3.0


@dataclass
class SimConfig:
    profile: str = "native"
    scenario: str = "stream-test"
    seed: int = 1
    adapter: str = "hci0"
    name: str = "PostureSim"
    rate_hz: float = 100.0
    truth_path: Path | None = None
    faults: FaultSettings = field(default_factory=FaultSettings)
    battery_life_h: float = 30.0  # streaming hours from 100 % to empty
    send_jitter_ms: float = 0.0  # extra random delay before each batch of notifications


def _slice(chunk: SimChunk, start: int, stop: int) -> SimChunk:
    return SimChunk(**{f.name: getattr(chunk, f.name)[start:stop] for f in dataclasses.fields(chunk)})


def _concat(parts: list[SimChunk]) -> SimChunk:
    if len(parts) == 1:
        return parts[0]
    return SimChunk(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                       for f in dataclasses.fields(parts[0])})


class SampleFeed:
    """Hands out the simulation's samples in slices of any size, in order."""

    def __init__(self, sim: SensorSimulation):
        self._chunks = sim.chunks(max_samples=FEED_CHUNK_SAMPLES)
        self._current: SimChunk | None = None
        self._pos = 0

    def take(self, n: int) -> SimChunk | None:
        parts, need = [], n
        while need > 0:
            if self._current is None or self._pos >= len(self._current.t_s):
                self._current, self._pos = next(self._chunks, None), 0
                if self._current is None:
                    break
            part = _slice(self._current, self._pos, self._pos + need)
            self._pos += len(part.t_s)
            need -= len(part.t_s)
            parts.append(part)
        return _concat(parts) if parts else None


class VirtualSensor:
    def __init__(self, bus: MessageBus, config: SimConfig):
        self.bus = bus
        self.config = config
        self.profile: WireProfile = get_profile(config.profile)
        self.settings = StreamSettings(rate_hz=config.rate_hz)
        self.scenario = load_scenario(config.scenario)
        self.sim = SensorSimulation(self.scenario, seed=config.seed, rate_hz=config.rate_hz)
        self.faults = FaultInjector(config.faults, config.seed, self.profile.malformed_kinds)
        self.subscribed = asyncio.Event()
        self.connected_devices: set[str] = set()
        self.stats = {"packets_sent": 0, "samples_sent": 0, "samples_unsent": 0, "packets_dropped": 0,
                      "samples_dropped": 0, "samples_failed_read": 0, "samples_gyro_spike": 0, "silences": 0,
                      "control_errors": 0}
        self.battery_pct = 100
        self.app = GattApplication(bus, config.adapter, config.name, self._services(),
                                   advertised_uuids=[self.profile.service_uuid])
        self.data_char = self.app.characteristics[self.profile.data_uuid]
        self.battery_char = self.app.characteristics[BATTERY_LEVEL]

    def _services(self) -> list[ServiceSpec]:
        p = self.profile
        text = lambda s: (lambda: s.encode())  # noqa: E731
        return [
            ServiceSpec(p.service_uuid, [
                CharacteristicSpec(p.data_uuid, ["notify"], on_notify=self._on_notify),
                CharacteristicSpec(p.control_uuid, p.control_flags,
                                   read=(lambda: p.read_control(self.settings)) if "read" in p.control_flags else None,
                                   write=self._on_control),
            ]),
            ServiceSpec(BATTERY_SERVICE, [
                CharacteristicSpec(BATTERY_LEVEL, ["read", "notify"], read=lambda: bytes([self.battery_pct])),
            ]),
            ServiceSpec(DEVICE_INFO_SERVICE, [
                CharacteristicSpec(MANUFACTURER, ["read"], read=text("Posture Companion project")),
                CharacteristicSpec(MODEL, ["read"], read=text(MODEL_NAMES[p.name])),
                CharacteristicSpec(SERIAL, ["read"], read=text(f"SIM-{self.config.seed:06d}")),
                CharacteristicSpec(FIRMWARE, ["read"], read=text("firmware-sim 0.1")),
            ]),
        ]

    def _on_notify(self, on: bool) -> None:
        log.info("notifications %s", "on" if on else "off")
        if on:
            self.subscribed.set()

    def _on_control(self, payload: bytes) -> None:
        try:
            self.profile.write_control(payload, self.settings)
        except ValueError as exc:
            self.stats["control_errors"] += 1
            log.warning("control write refused: %s", exc)
            raise
        if self.settings.rate_hz != self.sim.rate_hz:
            # The wire rate is fixed by --rate: the motion model is sampled once, ahead of time.
            log.warning("rate change to %.1f Hz requested; simulator keeps %.1f Hz", self.settings.rate_hz,
                        self.sim.rate_hz)
            self.settings.rate_hz = self.sim.rate_hz

    async def _watch_connections(self) -> None:
        """Follow Device1.Connected under our adapter, as bluetoothd's own bookkeeping does.

        BlueZoo does not send StopNotify when the central disconnects; without this the sensor
        would count samples as sent to a central that is gone.
        """
        prefix = f"/org/bluez/{self.config.adapter}/"
        await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
            member="AddMatch", signature="s",
            body=["type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'"]))

        def handler(msg: Message) -> None:
            if (msg.member != "PropertiesChanged" or not (msg.path or "").startswith(prefix)
                    or msg.body[0] != "org.bluez.Device1" or "Connected" not in msg.body[1]):
                return
            if msg.body[1]["Connected"].value:
                self.connected_devices.add(msg.path)
            else:
                self.connected_devices.discard(msg.path)
                if not self.connected_devices:
                    for char in self.app.characteristics.values():
                        char.notifying = False

        self.bus.add_message_handler(handler)

    async def run(self) -> dict:
        await self._watch_connections()
        await self.app.register()
        log.info("%s advertising as %r on %s (%s profile, scenario %s, %.0f s)", self.profile.name,
                 self.config.name, self.config.adapter, self.profile.name, self.scenario.name,
                 self.sim.duration_s)
        truth = TruthWriter(self.config.truth_path) if self.config.truth_path else None
        try:
            await self.subscribed.wait()
            await self._stream(SampleFeed(self.sim), truth)
        finally:
            if truth:
                truth.close(self.sim.events(), {**self.sim.meta(), **self.summary()})
            # A swamped BlueZ may answer slowly; leaving is more important than leaving politely.
            with contextlib.suppress(TimeoutError, DBusError):
                await asyncio.wait_for(self.app.unregister(), UNREGISTER_TIMEOUT_S)
        return self.summary()

    def summary(self) -> dict:
        return {"scenario": self.scenario.name, "seed": self.config.seed, "profile": self.profile.name,
                "rate_hz": self.sim.rate_hz, **self.stats, "malformed_sent": dict(self.faults.malformed_sent),
                "battery_pct": self.battery_pct}

    async def _stream(self, feed: SampleFeed, truth: TruthWriter | None) -> None:
        rng = np.random.default_rng([self.config.seed, 0x5E11])
        start = time.monotonic()
        seq = 0
        taken = 0
        silent = False
        while True:
            n = self.profile.samples_per_packet(self.settings)
            due_s = start + (taken + n) / self.sim.rate_hz
            await asyncio.sleep(max(0.0, due_s - time.monotonic()))
            if self.config.send_jitter_ms > 0:
                await asyncio.sleep(rng.exponential(self.config.send_jitter_ms) / 1000)
            chunk = feed.take(n)
            if chunk is None:
                return
            taken += len(chunk.t_s)
            silent = await self._follow_silence(chunk.t_s[0], silent)
            sent = np.zeros(len(chunk.t_s), bool)
            if not silent and not self.faults.muted_at(chunk.t_s[0]) and self.data_char.notifying \
                    and self.settings.streaming:
                sent[:] = self._send_packet(seq, chunk)
                seq += 1
            self.stats["samples_unsent"] += int((~sent).sum())
            self._drain_battery(time.monotonic() - start)
            if truth:
                truth.write(chunk, sent)

    def _send_packet(self, seq: int, chunk: SimChunk) -> bool:
        failed = self.faults.failed_reads(len(chunk.t_s))
        acc_g = np.where(failed[:, None], 0.0, chunk.acc_g)  # the truth keeps what the motion was
        gyro_dps, spikes = self.faults.gyro_spikes(chunk.gyro_dps)
        packet = self.profile.encode(seq, chunk.t_sensor_us, acc_g, gyro_dps, chunk.euler_deg, self.settings)
        if self.faults.drop():
            self.stats["packets_dropped"] += 1
            self.stats["samples_dropped"] += len(chunk.t_s)
            return False
        if (bad := self.faults.malformed(packet)) is not None:
            self.data_char.notify(bad)
        self.data_char.notify(packet)
        self.stats["packets_sent"] += 1
        self.stats["samples_sent"] += len(chunk.t_s)
        self.stats["samples_failed_read"] += int(failed.sum())
        self.stats["samples_gyro_spike"] += spikes
        return True

    async def _follow_silence(self, t_s: float, was_silent: bool) -> bool:
        silent = self.faults.silent_at(t_s)
        if silent and not was_silent:
            log.info("going out of range at t=%.1f s", t_s)
            self.stats["silences"] += 1
            self.subscribed.clear()
            await self.app.unregister()
        elif was_silent and not silent:
            log.info("back in range at t=%.1f s", t_s)
            await self.app.register()
        return silent

    def _drain_battery(self, streamed_s: float) -> None:
        pct = max(0, 100 - int(100 * streamed_s / (self.config.battery_life_h * 3600)))
        if pct != self.battery_pct:
            self.battery_pct = pct
            if self.battery_char.notifying:
                self.battery_char.notify(bytes([pct]))


def summary_line(summary: dict) -> str:
    return json.dumps(summary, sort_keys=True)
