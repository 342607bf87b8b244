"""BlueZ peripheral objects (GATT application and LE advertisement) on D-Bus with dbus-fast.

These are the objects BlueZ's GattManager1.RegisterApplication and
LEAdvertisingManager1.RegisterAdvertisement expect (see BlueZ doc/org.bluez.GattCharacteristic.rst,
doc/org.bluez.LEAdvertisement.rst). The same objects work on bluetoothd and on BlueZoo.

dbus-fast reads the D-Bus signatures from the annotations, so this module must not use
``from __future__ import annotations``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from dbus_fast import DBusError, Message, MessageType, PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_property, method

BLUEZ = "org.bluez"
ReadHandler = Callable[[], bytes]
WriteHandler = Callable[[bytes], None]
NotifyHandler = Callable[[bool], None]


@dataclass
class CharacteristicSpec:
    """One characteristic of a profile: its UUID, flags and behaviour."""

    uuid: str
    flags: list[str]
    read: ReadHandler | None = None
    write: WriteHandler | None = None
    on_notify: NotifyHandler | None = None


@dataclass
class ServiceSpec:
    uuid: str
    characteristics: list[CharacteristicSpec] = field(default_factory=list)
    primary: bool = True


class GattService(ServiceInterface):
    def __init__(self, path: str, spec: ServiceSpec):
        super().__init__("org.bluez.GattService1")
        self.path = path
        self.spec = spec

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return self.spec.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":  # noqa: F821
        return self.spec.primary


class GattCharacteristic(ServiceInterface):
    def __init__(self, path: str, service_path: str, spec: CharacteristicSpec):
        super().__init__("org.bluez.GattCharacteristic1")
        self.path = path
        self.service_path = service_path
        self.spec = spec
        self.notifying = False
        self._value = b""

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":  # noqa: F821
        return self.spec.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":  # noqa: F821
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":  # noqa: F821
        return self.spec.flags

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":  # noqa: F821
        return self._value

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":  # noqa: F821
        if self.spec.read is None:
            raise DBusError("org.bluez.Error.NotPermitted", "Read not permitted")
        self._value = self.spec.read()
        return self._value

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):  # noqa: F821
        if self.spec.write is None:
            raise DBusError("org.bluez.Error.NotPermitted", "Write not permitted")
        try:
            self.spec.write(bytes(value))
        except ValueError as exc:
            raise DBusError("org.bluez.Error.InvalidValueLength", str(exc)) from exc

    @method()
    def StartNotify(self):
        self.notifying = True
        if self.spec.on_notify:
            self.spec.on_notify(True)

    @method()
    def StopNotify(self):
        self.notifying = False
        if self.spec.on_notify:
            self.spec.on_notify(False)

    @method()
    def Confirm(self):
        # BlueZoo confirms every value, even plain notifications; nothing to do here.
        pass

    def notify(self, value: bytes) -> None:
        """Send a notification: BlueZ forwards a PropertiesChanged on Value to subscribers."""
        self._value = value
        self.emit_properties_changed({"Value": value})


class Advertisement(ServiceInterface):
    def __init__(self, path: str, local_name: str, service_uuids: list[str]):
        super().__init__("org.bluez.LEAdvertisement1")
        self.path = path
        self.local_name = local_name
        self.service_uuids = service_uuids

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":  # noqa: F821
        return self.service_uuids

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":  # noqa: F821
        return self.local_name

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":  # noqa: F821
        return True

    @method()
    def Release(self):
        pass


class GattApplication:
    """A GATT application plus its advertisement, registered with one BlueZ adapter."""

    def __init__(self, bus: MessageBus, adapter: str, local_name: str, services: list[ServiceSpec],
                 advertised_uuids: list[str], root: str = "/org/posture/sim"):
        self.bus = bus
        self.adapter_path = f"/org/bluez/{adapter}"
        self.root = root
        self.services: list[GattService] = []
        self.characteristics: dict[str, GattCharacteristic] = {}
        for i, sspec in enumerate(services):
            spath = f"{root}/service{i}"
            self.services.append(GattService(spath, sspec))
            for j, cspec in enumerate(sspec.characteristics):
                cpath = f"{spath}/char{j}"
                self.characteristics[cspec.uuid] = GattCharacteristic(cpath, spath, cspec)
        self.advertisement = Advertisement(f"{root}/advertisement0", local_name, advertised_uuids)
        self.registered = False

    def _export(self) -> None:
        for svc in self.services:
            self.bus.export(svc.path, svc)
        for char in self.characteristics.values():
            self.bus.export(char.path, char)
        self.bus.export(self.advertisement.path, self.advertisement)

    def _unexport(self) -> None:
        for obj in [*self.services, *self.characteristics.values(), self.advertisement]:
            self.bus.unexport(obj.path, obj)

    async def _call(self, interface: str, member: str, signature: str, body: list) -> None:
        reply = await self.bus.call(Message(destination=BLUEZ, path=self.adapter_path,
                                            interface=interface, member=member,
                                            signature=signature, body=body))
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name, " ".join(map(str, reply.body)))

    async def register(self) -> None:
        self._export()
        await self._call("org.bluez.GattManager1", "RegisterApplication", "oa{sv}",
                         [self.root, {}])
        await self._call("org.bluez.LEAdvertisingManager1", "RegisterAdvertisement", "oa{sv}",
                         [self.advertisement.path, {}])
        self.registered = True

    async def unregister(self) -> None:
        if not self.registered:
            return
        self.registered = False
        for char in self.characteristics.values():
            char.notifying = False
        try:
            await self._call("org.bluez.LEAdvertisingManager1", "UnregisterAdvertisement", "o",
                             [self.advertisement.path])
            await self._call("org.bluez.GattManager1", "UnregisterApplication", "o", [self.root])
        finally:
            self._unexport()
