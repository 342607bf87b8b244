"""What a gateway's MQTT connection per device costs against one connection for all of them.

`posture run` gives each device its own paho client (its own network thread, and its own will to say the device went
offline). This publishes what the gateway publishes most, a live state a second per device (400 bytes, QoS 0), from
the main thread to a real Mosquitto, once over one client per device and once over a single client, and reports the
process's CPU (user + system) in % of a core; runs alternate so a busy machine weighs on both alike. Each device
publishes at its own moment of the second (sensors do not start together) and every client sets TCP_NODELAY as
the gateway's do: neither lets one client gain by sending several devices' states in one write.

    .venv/bin/python benchmarks/gateway_mqtt_connections.py [--devices 10] [--seconds 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from posture.local_servers import Mosquitto
from service_io.mqtt import send_at_once

LIVE_BYTES = 400  # about a live state's JSON


def run(port: int, devices: int, seconds: float, one_client: bool) -> float:
    """% of a core this process spent publishing devices' live states at 1 Hz for `seconds`."""
    clients = []
    for i in range(1 if one_client else devices):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench{i}", protocol=mqtt.MQTTv5)
        c.on_socket_open = send_at_once
        c.connect("127.0.0.1", port, keepalive=60)
        c.loop_start()
        clients.append(c)
    time.sleep(2.0)  # connected and settled
    body = b"x" * LIVE_BYTES
    cpu0, start, k = time.process_time(), time.monotonic(), 0
    while time.monotonic() - start < seconds:
        for i in range(devices):  # device i at i/devices of each second
            time.sleep(max(0.0, start + k + i / devices - time.monotonic()))
            clients[0 if one_client else i].publish(f"posture/dev{i}/live", body, qos=0)
        k += 1
    pct = (time.process_time() - cpu0) / seconds * 100
    for c in clients:
        c.loop_stop()
        c.disconnect()
    return pct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        broker = Mosquitto(Path(workdir))
        broker.start()
        try:
            print("| clients | % of a core | % per device |\n|---|---|---|")
            for _ in range(args.rounds):
                for one in (False, True):
                    pct = run(broker.port, args.devices, args.seconds, one)
                    label = "one for all" if one else "one per device"
                    print(f"| {label} ({args.devices} devices) | {pct:.3f} | {pct / args.devices:.4f} |")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
