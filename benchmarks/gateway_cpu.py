"""CPU of `posture run` per sensor: 1, 10, 20 virtual sensors at 100 Hz through BlueZoo, publishing to Mosquitto.

The gateway as deployed (a `posture run` subprocess with its default pipeline batch and live stream) reads N
`posture sim` processes, each on its own BlueZoo adapter, each wearing a random day of its own seed (walking,
sitting, slouches: the pipeline's real mix, not a still sensor). After every sensor has been streaming for a
settling time, the gateway's CPU (psutil, user + system) is read over a steady window, with the samples and
live states that reached the broker in it, so a gateway that falls behind shows as missing live states. The
simulators, BlueZoo and dbus-daemon run on the same two cores; their CPU is not the gateway's and is left out.

    .venv/bin/python benchmarks/gateway_cpu.py [--counts 1 10 20] [--seconds 60] [--write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from process_cpu import cpu_s

from evaluation.doc_sections import write_measurement
from firmware_sim.testbed import Testbed
from posture.local_servers import Mosquitto

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SETTLE_S = 20.0  # after the last sensor streams: calibration adopted, the pipeline in its steady state


class LiveCounter:
    """Live states per device on the broker, counted as they arrive."""

    def __init__(self, port: int) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-live", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("posture/+/live", 0)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return
        device = json.loads(msg.payload)["device"]
        with self.lock:
            self.counts[device] = self.counts.get(device, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_one(count: int, seconds: float, work: Path) -> dict[str, object]:
    names = [f"Bench{i:02d}" for i in range(count)]
    with Mosquitto(work / f"mosquitto-{count}") as broker, \
            Testbed(adapters=count + 1, workdir=work / f"ble-{count}") as bed:
        sims = [subprocess.Popen([sys.executable, "-m", "posture.cli", "sim", "--adapter", f"hci{i + 1}",
                                  "--name", name, "--scenario", f"random:{100 + i}:2", "--seed", str(i)],
                                 env=bed.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for i, name in enumerate(names)]
        config = work / f"posture-{count}.toml"
        config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n\n'
                          f'[gateway]\nspool_dir = "{work / f"spool-{count}"}"\n')
        log = open(work / f"gateway-{count}.log", "w")
        gateway = subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", "run", "--config", str(config),
                                    "--adapter", "hci0", *[a for n in names for a in ("--sensor", n)]],
                                   env=bed.env, stdout=log, stderr=subprocess.STDOUT)
        live = LiveCounter(broker.port)
        try:
            deadline = time.monotonic() + 120
            while (streaming := (work / f"gateway-{count}.log").read_text().count(": streaming")) < count:
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise RuntimeError(f"{streaming} of {count} sensors streaming; see {work}/gateway-{count}.log")
                time.sleep(0.5)
            time.sleep(SETTLE_S)
            proc = psutil.Process(gateway.pid)
            live0, cpu0, t0 = live.snapshot(), cpu_s([proc]), time.monotonic()
            time.sleep(seconds)
            live1, cpu1, elapsed = live.snapshot(), cpu_s([proc]), time.monotonic() - t0
        finally:
            live.close()
            for p in (gateway, *sims):
                p.terminate()
            for p in (gateway, *sims):
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()
        live_per_s = [(live1.get(d, 0) - live0.get(d, 0)) / elapsed for d in set(live1) | set(live0)]
        core_pct = 100 * (cpu1 - cpu0) / elapsed
        return {"sensors": count, "seconds": round(elapsed, 1), "gateway_core_pct": round(core_pct, 2),
                "core_pct_per_sensor": round(core_pct / count, 3),
                "devices_live": len(live_per_s), "live_per_s_min": round(min(live_per_s, default=0.0), 2)}


COLUMNS = ["sensors", "seconds", "gateway_core_pct", "core_pct_per_sensor", "devices_live", "live_per_s_min"]


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 20])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOC}")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gateway-cpu-") as tmp:
        for count in args.counts:
            rows.append(run_one(count, args.seconds, Path(tmp)))
            print(rows[-1], flush=True)
    print(table(rows))
    if args.write:
        write_measurement(DOC, "gateway_cpu", table(rows), f"benchmarks/gateway_cpu.py --seconds {args.seconds:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
