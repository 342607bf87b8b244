"""Keeping one sensor connected and streaming: connect, configure, subscribe, watch, reconnect.

Connection attempts and their backoff are bleak-retry-connector's (`establish_connection`); this
module only decides *when* a link is dead (the watchdog) and starts over. What the bytes mean is
sensor/stream.py's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bleak import BleakClient
from bleak.backends.bluezdbus.manager import get_global_bluez_manager
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDBusError, BleakError
from bleak_retry_connector import establish_connection

from .discovery import SensorFilter, discover
from .profiles import BATTERY_LEVEL_UUID, UNLOCK_SETTLE_S, SensorProfile, detect_profile
from .stream import ImuBatch, StreamDecoder, StreamStats

log = logging.getLogger("posture.sensor")
# A sensor that stays away (out of range, switched off for the night) is said when its link is first not made, then
# again at most this often with the tries since: BlueZ (BlueZoo at once) fails a connect to it about every second.
SAY_AGAIN_S = 60.0
# A sensor named in the configuration by its name, not connected for this long while another sensor advertises that
# name, was replaced (a new unit, one swapped for a charged one): the link takes the other one.
REPLACED_AFTER_S = 30.0


class ProfileError(BleakError):
    """The connected device offers none of the sensor profiles we speak."""


def stale_bluez_objects(exc: BaseException) -> bool:
    """BlueZ says an object bleak asked for is not there: its copy of BlueZ's objects is out of date."""
    return isinstance(exc, BleakDBusError) and exc.dbus_error == "org.freedesktop.DBus.Error.UnknownObject"


async def forget_bluez_objects() -> None:
    """bleak keeps one copy of BlueZ's objects per event loop, kept up by BlueZ's signals, and reads them afresh only
    when its bus connection is lost. After bluetoothd restarts (an upgrade, a crash) it still held the old GATT objects,
    and every link failed on them ("Unknown object '…/char0005'", once a second) until the gateway was restarted (an
    attack's probe, BlueZoo restarted). Its bus closed, the next connect reads them again. No public call does this:
    the bus is bleak's private `_bus` (bleak 3.1); the other links on it are gone with that bluetoothd anyway."""
    manager = await get_global_bluez_manager()
    bus = getattr(manager, "_bus", None)
    if bus is not None and bus.connected:
        log.warning("BlueZ's objects are not what bleak knew (bluetoothd restarted?): reading them again")
        bus.disconnect()


@dataclass
class LinkSettings:
    adapter: str | None = None
    rate_hz: float = 100.0
    watchdog_s: float = 3.0  # no notification for this long → the link is treated as lost
    connect_attempts: int = 3  # per establish_connection call (it backs off between them)
    pause_between_rounds_s: float = 1.0  # after a failed round, before asking again
    rediscover_timeout_s: float = 3.0


class SensorLink:
    def __init__(self, device: BLEDevice, on_batch: Callable[[ImuBatch], None],
                 settings: LinkSettings | None = None, wanted: SensorFilter | None = None,
                 in_use: Callable[[str], bool] = lambda address: False):
        """wanted: what the sensor was looked for by; by name, another sensor of that name is taken once this one has
        not been connected for REPLACED_AFTER_S (in_use: an address another link reads, never taken)."""
        self.device = device
        self.on_batch = on_batch
        self.settings = settings or LinkSettings()
        self.wanted = wanted if wanted is not None and wanted.name and not wanted.address else None
        self.in_use = in_use
        self._away_since: float | None = None  # when connecting began to fail (time.monotonic()); None: connected
        self.decoder: StreamDecoder | None = None
        self.profile: SensorProfile | None = None
        self.connected = asyncio.Event()
        self._last_rx_s = 0.0
        self._lost = asyncio.Event()
        self._battery_refused = False  # said once
        self._tries = 0  # connections not made since the last one made
        self._tries_said_s = -float("inf")  # when one was last said (time.monotonic())
        self._mute = 0  # connections made since the last data that carried none
        self._mute_said_s = -float("inf")  # when one was last said (time.monotonic())

    @property
    def last_rx_s(self) -> float:
        """When the last notification came (time.monotonic()); 0 before any. Not moved by a connection made: a sensor
        that connects and sends nothing is silent (gateway/service.py closes what it left open after LINK_GONE_S; while
        each reconnect set this, that never came: its open minute went out when the data came back, minutes late)."""
        return self._last_rx_s

    @property
    def stats(self) -> StreamStats | None:
        return self.decoder.stats if self.decoder else None

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, reconnecting whenever the link is lost."""
        first = True
        while not stop.is_set():
            try:
                client = await self._connect()
            except (BleakError, TimeoutError, OSError) as exc:
                if self._away_since is None:
                    self._away_since = time.monotonic()
                self._not_connected(exc)
                if stale_bluez_objects(exc):
                    await forget_bluez_objects()
                await self._pause(stop)
                await self._refresh_device()
                continue
            if self._tries > 1:
                log.info("%s: connected after %d tries", self.device.address, self._tries + 1)
            self._tries, self._tries_said_s, self._away_since = 0, -float("inf"), None
            try:
                if not first and self.decoder:
                    self.decoder.stats.reconnects += 1
                first = False
                await self._stream(client, stop)
            except (BleakError, TimeoutError, OSError) as exc:
                log.warning("%s: link error: %s", self.device.address, exc)
                if stale_bluez_objects(exc):
                    await forget_bluez_objects()
                await self._pause(stop)
            finally:
                self.connected.clear()
                with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                    await asyncio.wait_for(client.disconnect(), 5)
                if self.decoder:  # the link is gone (notifications too): what was held back is all there is
                    self._deliver(self.decoder.flush())

    def _not_connected(self, exc: BaseException) -> None:
        """Said at the first try of a spell, then once a SAY_AGAIN_S with the count (it was every try: 3,600 lines an
        hour while a sensor was away on BlueZoo)."""
        self._tries += 1
        if time.monotonic() - self._tries_said_s < SAY_AGAIN_S:
            log.debug("%s: not connected (%s); trying again", self.device.address, exc)
            return
        self._tries_said_s = time.monotonic()
        log.warning("%s: not connected (%s); trying again%s", self.device.address, exc,
                    f" (tried {self._tries} times; said again once a minute)" if self._tries > 1 else "")

    async def _connect(self) -> BleakClient:
        self._lost.clear()
        client = await establish_connection(BleakClient, self.device, self.device.name or self.device.address,
                                            disconnected_callback=lambda _: self._lost.set(),
                                            max_attempts=self.settings.connect_attempts,
                                            # A sensor that came back may have a new GATT layout.
                                            use_services_cache=False)
        profile = detect_profile(s.uuid for s in client.services)
        if profile is None:
            await client.disconnect()
            raise ProfileError(f"{self.device.address} offers no posture sensor service")
        if self.decoder is None or self.profile is not profile or self.decoder.device != self.device.address:
            self._deliver(self.decoder.flush() if self.decoder else [])
            self.profile = profile
            self.decoder = StreamDecoder(self.device.address, profile, self.settings.rate_hz)
        else:
            self._deliver(self.decoder.restart())
        return client

    def _deliver(self, held: list[ImuBatch]) -> None:
        """Samples the decoder held back (to place them from what followed) once the stream ends.
        Called on the way out of a connection: a consumer's error is logged, not raised past it."""
        for batch in held:
            try:
                self.on_batch(batch)
            except Exception:  # noqa: BLE001 - the link must still close and reconnect
                log.exception("%s: a held batch could not be handed on", self.device.address)

    async def _stream(self, client: BleakClient, stop: asyncio.Event) -> None:
        profile, decoder = self.profile, self.decoder
        assert profile is not None and decoder is not None  # set by _connect, never unset
        current = await client.read_gatt_char(profile.control_uuid) if profile.reads_control else None
        if profile.unlock_command is not None:
            await client.write_gatt_char(profile.control_uuid, profile.unlock_command, response=True)
            await asyncio.sleep(UNLOCK_SETTLE_S)
        await client.write_gatt_char(profile.control_uuid, profile.rate_command(current, self.settings.rate_hz),
                                     response=True)
        if profile.packing_command is not None:
            try:
                await client.write_gatt_char(profile.control_uuid, profile.packing_command(self.settings.rate_hz),
                                             response=True)
            except BleakError as exc:  # older firmware: it streams with its own notification size
                log.warning("%s: samples per notification not set (%s)", self.device.address, exc)
        await self._read_battery(client)

        def on_data(_: BleakGATTCharacteristic, data: bytearray) -> None:
            self._last_rx_s = time.monotonic()
            if not self.connected.is_set():  # online once data comes: a link that carries none is no sensor read
                self.connected.set()
                self._mute, self._mute_said_s = 0, -float("inf")
                log.info("%s: streaming (%s profile)", self.device.address, profile.name)
            if (batch := decoder.feed(data, time.time(), self._last_rx_s)) is not None:
                self.on_batch(batch)

        subscribed_s = time.monotonic()  # the watchdog's start; last_rx_s stays the last notification's
        await client.start_notify(profile.data_uuid, on_data)
        while not stop.is_set() and not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
            if time.monotonic() - max(self._last_rx_s, subscribed_s) > self.settings.watchdog_s:
                if self.connected.is_set():
                    log.warning("%s: no data for %.1f s, reconnecting", self.device.address,
                                self.settings.watchdog_s)
                else:
                    self._no_data()
                return

    def _no_data(self) -> None:
        """A connection that carried no data (a sensor in range whose measuring stopped): said at the first, then once
        a SAY_AGAIN_S with the count, as a connection not made is (it was two lines every 3 s, "streaming" among
        them)."""
        self._mute += 1
        if time.monotonic() - self._mute_said_s < SAY_AGAIN_S:
            log.debug("%s: connected, no data in %.1f s; reconnecting", self.device.address, self.settings.watchdog_s)
            return
        self._mute_said_s = time.monotonic()
        log.warning("%s: connected, but no data came in %.1f s (the sensor is there and sends nothing); reconnecting%s",
                    self.device.address, self.settings.watchdog_s,
                    f" ({self._mute} connections without data; said again once a minute)" if self._mute > 1 else "")

    async def _read_battery(self, client: BleakClient) -> None:
        """The battery level where the sensor gives it. Optional, as it is to the sensor (notify is optional in the
        Battery Service, some firmware answers the read with no bytes or asks for pairing first): a read or a
        subscription refused costs the level, said once, never the stream (it ended the link before the data was
        subscribed, at every reconnect, and with no bytes read the link's task)."""
        if client.services.get_characteristic(BATTERY_LEVEL_UUID) is None:
            return

        def on_battery(_: BleakGATTCharacteristic | None, data: bytes | bytearray) -> None:
            if data:
                assert self.decoder is not None  # set by _connect, never unset
                self.decoder.stats.battery_pct = data[0]

        try:
            on_battery(None, await client.read_gatt_char(BATTERY_LEVEL_UUID))
            await client.start_notify(BATTERY_LEVEL_UUID, on_battery)
        except BleakError as exc:
            if not client.is_connected:  # the link went, not the level: a link error, as any other
                raise
            if not self._battery_refused:
                log.warning("%s: battery level not available (%s); streaming without it", self.device.address, exc)
            self._battery_refused = True

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.settings.pause_between_rounds_s)

    async def _refresh_device(self) -> None:
        """A sensor that went away may come back under a new BlueZ object: look it up again. One named by its name
        and not connected for REPLACED_AFTER_S may have been replaced by another of that name (gateway.sensors names
        "WT901BLE68" and the new unit advertises that too): that one is tried, said in one line. Before, the link tried
        the old address only, for good: the new sensor was never read until the gateway was restarted."""
        with contextlib.suppress(BleakError, TimeoutError, OSError):
            if self.wanted is not None and self._away_since is not None \
                    and time.monotonic() - self._away_since >= REPLACED_AFTER_S:
                found = await discover(self.settings.adapter, self.settings.rediscover_timeout_s, self.wanted)
                # BlueZ keeps the devices it saw: one advertising now first
                others = sorted((s for s in found if s.profile is not None and not self.in_use(s.address)
                                 and s.address.upper() != self.device.address.upper()), key=lambda s: not s.advertising)
                if others:
                    log.warning("%s: not connected for %.0f s, and %s advertises %r: reading that sensor from now on "
                                "(replaced? If not, name yours by its address in gateway.sensors)", self.device.address,
                                time.monotonic() - self._away_since, others[0].address, self.wanted.name)
                    self.device, self._away_since = others[0].device, time.monotonic()
                    return
            found = await discover(self.settings.adapter, self.settings.rediscover_timeout_s,
                                   SensorFilter(address=self.device.address), first_only=True)
            if found:
                self.device = found[0].device
