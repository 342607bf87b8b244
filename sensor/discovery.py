"""Finding posture sensors: a bleak scan, plus devices BlueZ already knows on the adapter.

BlueZ (and BlueZoo) keep a device object after it was first seen and only signal changes, so a
sensor that advertised before this scan started may produce no new advertisement event; the
object tree still lists it with its advertised service UUIDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any, TypedDict

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak_retry_connector import get_device_by_adapter
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from .profiles import detect_profile


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
    first = asyncio.Event()

    def on_advertisement(device: BLEDevice, adv: AdvertisementData) -> None:
        profile = detect_profile(adv.service_uuids)
        name = adv.local_name or device.name or ""
        if wanted.matches(name, device.address, profile.name if profile else None):
            found[device.address] = FoundSensor(device, name, device.address, profile.name if profile else None,
                                                adv.rssi, True)
            first.set()

    kwargs: _ScannerKwargs = {"bluez": {"adapter": adapter}} if adapter else {}
    try:
        async with BleakScanner(on_advertisement, **kwargs):
            for dev_adapter, _, props in await _known_devices(adapter):
                address = props.get("Address", "")
                profile = detect_profile(props.get("UUIDs", []))
                name = props.get("Name") or props.get("Alias") or ""
                if address in found or not wanted.matches(name, address, profile.name if profile else None):
                    continue
                device = await get_device_by_adapter(address, dev_adapter)
                if device is not None:
                    found[address] = FoundSensor(device, name, address, profile.name if profile else None,
                                                 props.get("RSSI"), False)
                    first.set()
            if not (first_only and found):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(first.wait() if first_only else asyncio.sleep(timeout_s), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:  # alone: "[Errno 2] No such file"
        bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
        raise NoSystemBus(f"cannot reach BlueZ over the D-Bus system bus ({bus}): {exc.strerror or exc}; are dbus "
                          f"and bluetoothd running (systemctl status dbus bluetooth)?") from None
    return sorted(found.values(), key=lambda s: s.address)
