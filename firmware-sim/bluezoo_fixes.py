"""BlueZoo, started with a fix for reconnecting: `python -m firmware_sim.bluezoo_fixes [bluezoo options]`.

BlueZoo 1.0.2 (the newest release) exports the GATT service/characteristic objects of a device on
Connect but never removes them on Disconnect, so the next Connect to the same device fails with
sdbus error 17 (object already exported). bluetoothd removes them when the link goes down; this
does the same, and drops BlueZoo's per-link notification subscriptions with them. Nothing else in
BlueZoo is changed. Remove this module once BlueZoo releases a fix.
"""

from __future__ import annotations

from bluezoo import bluezoo
from bluezoo.device import Device

_disconnect = Device.disconnect


async def _disconnect_and_forget_gatt(self: Device, uuid: str | None = None) -> None:
    await _disconnect(self, uuid)
    # Children first: descriptors and characteristics before their services.
    for path in sorted(self.services, reverse=True):
        link = self.services.pop(path)
        subscription = getattr(link, "client_props_changed_subscription", None)
        if subscription is not None:
            subscription.unsubscribe()
        self.peer_adapter.mock.remove_object(link)
    if self.services_resolved:
        await self.ServicesResolved.set_async(False)


Device.disconnect = _disconnect_and_forget_gatt

if __name__ == "__main__":
    bluezoo.main()
