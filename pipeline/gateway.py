"""Publishing one device's results to MQTT without losing any: the gateway half of `posture run`.

Events and metrics go into the on-disk spool first (pipeline/spool.py) and leave it only when
the broker has acknowledged them (QoS 1 PUBACK). While the broker is down they wait, in order,
across gateway restarts too; after a reconnect they are sent from the oldest on. A message may
arrive twice after a crash (at-least-once); the bridge's writes are idempotent, so the database
still holds it once. The status (online, battery, link quality) is retained and not spooled:
only the latest matters; the broker publishes "offline" for us (last will) if we vanish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from pathlib import Path

from .config import Config
from .messages import SCHEMA_VERSION, Status, payload, topic
from .mqtt_client import mqtt_client
from .spool import Spool
from .spooled_sender import SpooledSender

log = logging.getLogger("posture.gateway")
MAX_INFLIGHT = 100


def device_file(spool_dir: Path, device: str, suffix: str) -> Path:
    """The device's own file in the spool directory (addresses have colons; file names should not)."""
    return spool_dir / f"{device.replace(':', '_')}{suffix}"


def device_id(name: str) -> str:
    """A topic- and tag-safe id from a sensor's name or address."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", name)[:64] or "sensor"


class DevicePublisher:
    def __init__(self, config: Config, device: str, spool_dir: Path):
        self.device = device
        self.prefix = config.mqtt.prefix
        self.spool = Spool(device_file(spool_dir, device, ".spool"), config.gateway.spool_max_messages)
        self.client, self._connect_kwargs = mqtt_client(config.mqtt, f"{config.gateway.client_id}-{device}")
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.will_set(topic(self.prefix, device, "status"), self._status_body(Status(online=False)),
                             qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.mqtt_cfg = config.mqtt
        self.connected = threading.Event()
        self.sender = SpooledSender(self.client, self.spool, max_inflight=MAX_INFLIGHT,
                                    mqtt5=config.mqtt.protocol == "5")
        self._latest_status: Status | None = None

    def _status_body(self, status: Status) -> str:
        return json.dumps(payload(self.device, status, now_s=time.time()))

    # called by the gateway (any thread) -------------------------------------------------
    def submit(self, items: list) -> None:
        rows = []
        for item in items:
            body = payload(self.device, item)
            rows.append((topic(self.prefix, self.device, item.kind), json.dumps(body).encode()))
        self.spool.put(rows)

    def publish_status(self, status: Status) -> None:
        self._latest_status = status
        if self.connected.is_set():
            self.client.publish(topic(self.prefix, self.device, "status"), self._status_body(status), qos=1,
                                retain=True)

    def publish_imu(self, t_s, acc_g, gyro_dps) -> None:
        """Raw samples, best effort (QoS 0, not spooled): for live views, not for storage."""
        if self.connected.is_set() and len(t_s):
            body = {"schema": SCHEMA_VERSION, "kind": "imu", "device": self.device, "ts": int(t_s[0] * 1000),
                    "t_s": [round(t, 4) for t in t_s.tolist()], "acc_g": acc_g.round(5).tolist(),
                    "gyro_dps": gyro_dps.round(4).tolist()}
            self.client.publish(topic(self.prefix, self.device, "imu"), json.dumps(body), qos=0)

    # lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.mqtt_cfg.host, self.mqtt_cfg.port, **self._connect_kwargs)
        self.client.loop_start()

    def pump(self) -> None:
        if self.connected.is_set():
            self.sender.pump()

    def stop(self, offline: bool = True) -> None:
        if offline and self.connected.is_set():
            info = self.client.publish(topic(self.prefix, self.device, "status"),
                                       self._status_body(Status(online=False)), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # the link dropped just now: the will says it
                info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()

    @property
    def backlog(self) -> int:
        return len(self.spool)

    # paho's network thread ------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s: MQTT connect refused: %s", self.device, reason_code)
            return
        self.connected.set()
        if self._latest_status is not None:
            self.publish_status(self._latest_status)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
