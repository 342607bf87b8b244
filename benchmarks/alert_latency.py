"""How long `posture alerts` takes to answer: from a message that triggers an alert to the alert on the phone's topic.

A real Mosquitto and `posture alerts` as deployed (a subprocess); this process publishes as a gateway would and
subscribes as a phone would, so both ends read one clock (time.perf_counter). One message at a time, each waited
for, with a pause between: the reply time of one message, not throughput. Each message is a device of its own, so
no cooldown, daily cap or quiet hours holds an alert back; Home Assistant discovery is off (it is sent once per
device, and a new device per message would add it to every reply). Two triggers:

- metrics (QoS 1, acknowledged by the service after its state is saved, then the alert is published): a minute of
  a sitting spell 50 minutes long (rule `sitting`);
- live (QoS 0, nothing acknowledged): a live state slouching for longer than `slouch_now.delay_s`.

    .venv/bin/python benchmarks/alert_latency.py [--messages 300] [--kind metrics|live|both] [--broker-nagle]
        [--broker-saves-each-change]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from posture.local_servers import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 20  # replies not counted: the service's first steps (imports, SQLite's first pages) are not its pace
PAUSE_S = 0.02  # between one reply and the next message
REPLY_TIMEOUT_S = 5.0
SITTING_MIN = 50.0  # past the sitting rule's 45 min
SLOUCH_S = 70.0  # past slouch_now's 60 s delay
RULES = "".join(f"[{section}]\nenabled = false\n" for section in ("slouch", "rotation", "lean", "calibration",
                                                                   "recovery")) + \
    '[limits]\ndaily_cap = 100000\nquiet_hours = ""\n[habit]\nsummary_time = ""\n'


def metrics(device: str, now_s: float) -> dict[str, object]:
    """The minute that just ended, sitting for SITTING_MIN minutes by its end."""
    start_s = now_s // 60 * 60 - 60
    return {"schema": 1, "kind": "metrics", "device": device, "ts": int(start_s * 1000), "minute_start_s": start_s,
            "worn_s": 60.0, "sitting_s": 60.0, "standing_s": 0.0, "walking_s": 0.0, "lying_s": 0.0, "slouch_s": 0.0,
            "lean_left_s": 0.0, "lean_right_s": 0.0, "rotations_left": 0, "rotations_right": 0,
            "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0,
            "sitting_since_s": start_s + 60 - SITTING_MIN * 60, "lost_samples": 0, "flexion_mean_deg": 5.0,
            "lateral_mean_deg": 0.5, "lean_left_mean_deg": None, "lean_right_mean_deg": None,
            "rotation_left_peak_mean_deg": None, "rotation_right_peak_mean_deg": None,
            "rotation_left_peak_max_deg": None, "rotation_right_peak_max_deg": None}


def live(device: str, now_s: float) -> dict[str, object]:
    """A live state now, slouching for SLOUCH_S."""
    return {"schema": 1, "kind": "live", "device": device, "ts": int(now_s * 1000), "t_s": now_s,
            "calibration": "calibrated", "flexion_deg": 26.0, "lateral_deg": 0.4, "rotation_deg": -2.0,
            "activity": "sitting", "slouching_since_s": now_s - SLOUCH_S, "leaning_since_s": None, "lean_side": None,
            "sitting_since_s": now_s - 900}


class Broker(Mosquitto):
    """Mosquitto as the tests run it (a save a second); no_delay: set_tcp_nodelay (Nagle's algorithm off on its
    sockets); save_each_change: a save after every change, as deploy/mosquitto/mosquitto.conf.example asks."""

    def __init__(self, workdir: Path, no_delay: bool, save_each_change: bool) -> None:
        super().__init__(workdir)
        self.no_delay, self.save_each_change = no_delay, save_each_change

    def config(self) -> str:
        config = super().config()  # has set_tcp_nodelay true, as the shipped config
        if not self.no_delay:
            config = config.replace("set_tcp_nodelay true", "set_tcp_nodelay false")
        return config + ("autosave_on_changes true\n" if self.save_each_change else "")


def _no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(port: int, client_id: str, no_delay: bool = False) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if no_delay:  # as the gateway's own client: its messages leave at once
        c.on_socket_open = _no_delay
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def start_service(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "rules.toml").write_text(RULES)
    (work / "posture.toml").write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n\n[alerts]\nstate_path = "{work / "alerts.db"}"\n'
        f'rules_path = "{work / "rules.toml"}"\ntimezone = "UTC"\nha_discovery = false\n')
    online = threading.Event()
    watcher = connect(port, "bench-watch")
    watcher.on_message = lambda c, u, m: online.set() if m.payload == b"online" else None
    watcher.subscribe("posture/_alerts/availability", 1)
    proc = subprocess.Popen([sys.executable, "-m", "posture.cli", "alerts", "--config", str(work / "posture.toml")],
                            cwd=ROOT, stdout=open(work / "alerts.log", "ab"), stderr=subprocess.STDOUT)
    if not online.wait(30):
        proc.kill()
        raise SystemExit("posture alerts did not come online:\n" + (work / "alerts.log").read_text()[-2000:])
    watcher.loop_stop()
    watcher.disconnect()
    return proc


def measure(port: int, kind: str, n: int, first: int) -> np.ndarray:
    """Reply times (s) of n messages of one kind, devices numbered from first."""
    arrived: dict[str, float] = {}
    cond = threading.Condition()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        at = time.perf_counter()
        with cond:
            arrived.setdefault(msg.topic.split("/")[1], at)
            cond.notify_all()

    def reply_at(device: str) -> float:
        with cond:
            if not cond.wait_for(lambda: device in arrived, REPLY_TIMEOUT_S):
                raise SystemExit(f"no alert for {device} ({kind}) within {REPLY_TIMEOUT_S} s")
            return arrived[device]

    phone = connect(port, f"bench-phone-{kind}")
    phone.on_message = on_message
    subscribed = threading.Event()
    phone.on_subscribe = lambda *args: subscribed.set()
    phone.subscribe("posture/+/alerts", 1)
    if not subscribed.wait(10):
        raise SystemExit("the phone got no SUBACK")
    gateway = connect(port, f"bench-gateway-{kind}", no_delay=True)
    latency_s = []
    for i in range(first, first + WARMUP + n):
        device = f"bench{i:05d}"
        doc = metrics(device, time.time()) if kind == "metrics" else live(device, time.time())
        sent = time.perf_counter()
        gateway.publish(f"posture/{device}/{kind}", json.dumps(doc), qos=1 if kind == "metrics" else 0)
        if i >= first + WARMUP:
            latency_s.append(reply_at(device) - sent)
        else:
            reply_at(device)
        time.sleep(PAUSE_S)
    for c in (phone, gateway):
        c.loop_stop()
        c.disconnect()
    return np.array(latency_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300, help="measured replies per kind (after a warm-up)")
    ap.add_argument("--kind", choices=("metrics", "live", "both"), default="both")
    ap.add_argument("--broker-nagle", action="store_true",
                    help="Mosquitto's own default set_tcp_nodelay false (the shipped config sets true)")
    ap.add_argument("--broker-saves-each-change", action="store_true",
                    help="Mosquitto with autosave_on_changes true, as the shipped config (default: a save a second)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alert-latency-"))
    kinds = ("metrics", "live") if args.kind == "both" else (args.kind,)
    rows = []
    with Broker(work / "mosquitto", not args.broker_nagle, args.broker_saves_each_change) as broker:
        proc = start_service(work, broker.port)
        try:
            for k, kind in enumerate(kinds):
                ms = 1000 * measure(broker.port, kind, args.messages, first=k * (args.messages + WARMUP))
                p50, p99 = np.percentile(ms, [50, 99])
                rows.append(f"| {kind} | {len(ms)} | {p50:.2f} | {p99:.2f} | {ms.max():.2f} |")
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"broker set_tcp_nodelay {str(not args.broker_nagle).lower()}, autosave_on_changes "
          f"{str(args.broker_saves_each_change).lower()}\n"
          "| trigger | replies | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
