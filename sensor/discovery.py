"""Finding posture sensors: a bleak scan, plus devices BlueZ already knows on the adapter.

BlueZ (and BlueZoo) keep a device object after it was first seen and only signal changes, so a
sensor that advertised before this scan started may produce no new advertisement event; the
object tree still lists it with its advertised service UUIDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak_retry_connector import get_device_by_adapter
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from .profiles import detect_profile

K = TypeVar("K")


@dataclass(frozen=True)
class FoundSensor:
    device: BLEDevice
    name: str
    address: str
    profile: str | None  # None: matched by name or address but no known profile advertised
    rssi_dbm: int | None
    advertising: bool  # seen advertising during this scan (False: known to BlueZ from before)


@dataclass(frozen=True)
class SensorFilter:
    name: str | None = None
    address: str | None = None

    def matches(self, name: str | None, address: str, profile: str | None) -> bool:
        if self.address:
            return address.upper() == self.address.upper()
        if self.name:
            return name == self.name
        return profile is not None


class _ScannerKwargs(TypedDict, total=False):
    bluez: BlueZScannerArgs


async def _known_devices(adapter: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(adapter, device path, Device1 properties) for every device in BlueZ's object tree."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(Message(destination="org.bluez", path="/", member="GetManagedObjects",
                                       interface="org.freedesktop.DBus.ObjectManager"))
    finally:
        bus.disconnect()
    if reply.message_type == MessageType.ERROR:
        return []
    found = []
    for path, interfaces in reply.body[0].items():
        props = interfaces.get("org.bluez.Device1")
        dev_adapter = path.split("/")[3] if path.count("/") >= 4 else ""
        if props is None or (adapter and dev_adapter != adapter):
            continue
        found.append((dev_adapter, path, {k: v.value for k, v in props.items()}))
    return found


class NoSystemBus(ConnectionError):
    """An OSError still (a link that looks for its sensor again goes on trying), saying what to check."""


async def discover(adapter: str | None = None, timeout_s: float = 5.0, wanted: SensorFilter = SensorFilter(),
                   first_only: bool = False) -> list[FoundSensor]:
    found: dict[str, FoundSensor] = {}

    def take(sensor: FoundSensor) -> bool:
        if sensor.advertising or sensor.address not in found:  # the latest advertisement over BlueZ's memory
            found[sensor.address] = sensor
        return first_only

    await _scan(adapter, timeout_s, wanted.matches, take)
    return sorted(found.values(), key=lambda s: s.address)


async def discover_each(adapter: str | None, timeout_s: float,
                        wanted: Mapping[K, SensorFilter]) -> dict[K, FoundSensor]:
    """Several sensors in one scan: each key's first match (a sensor matching two keys is each's), the scan ending
    once every key has one, or after timeout_s. One after another, each sensor not there cost the others timeout_s."""
    got: dict[K, FoundSensor] = {}

    def matches(name: str | None, address: str, profile: str | None) -> bool:
        return any(f.matches(name, address, profile) for key, f in wanted.items() if key not in got)

    def take(sensor: FoundSensor) -> bool:
        for key, f in wanted.items():
            if key not in got and f.matches(sensor.name, sensor.address, sensor.profile):
                got[key] = sensor
        return len(got) == len(wanted)

    await _scan(adapter, timeout_s, matches, take)
    return got


async def _scan(adapter: str | None, timeout_s: float, matches: Callable[[str | None, str, str | None], bool],
                take: Callable[[FoundSensor], bool]) -> None:
    """Offer take() each sensor that matches, advertising or known to BlueZ, until take() says enough or timeout_s."""
    enough = asyncio.Event()

    def offer(sensor: FoundSensor) -> None:
        if not enough.is_set() and take(sensor):
            enough.set()

    def on_advertisement(device: BLEDevice, adv: AdvertisementData) -> None:
        profile = detect_profile(adv.service_uuids)
        name = adv.local_name or device.name or ""
        if matches(name, device.address, profile.name if profile else None):
            offer(FoundSensor(device, name, device.address, profile.name if profile else None, adv.rssi, True))

    kwargs: _ScannerKwargs = {"bluez": {"adapter": adapter}} if adapter else {}
    try:
        async with BleakScanner(on_advertisement, **kwargs):
            for dev_adapter, _, props in await _known_devices(adapter):
                address = props.get("Address", "")
                profile = detect_profile(props.get("UUIDs", []))
                name = props.get("Name") or props.get("Alias") or ""
                if enough.is_set() or not matches(name, address, profile.name if profile else None):
                    continue
                device = await get_device_by_adapter(address, dev_adapter)
                if device is not None:
                    offer(FoundSensor(device, name, address, profile.name if profile else None, props.get("RSSI"),
                                      False))
            if not enough.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(enough.wait(), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:  # alone: "[Errno 2] No such file"
        bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
        raise NoSystemBus(f"cannot reach BlueZ over the D-Bus system bus ({bus}): {exc.strerror or exc}; are dbus "
                          f"and bluetoothd running (systemctl status dbus bluetooth)?") from None
