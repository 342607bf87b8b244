"""Samples/s and CPU per sensor for 1, 5, 10, 20 simultaneous virtual sensors at 100 Hz through BlueZoo.

Each sensor is its own `posture sim` process on its own BlueZoo adapter; one client process
(this one) holds a bleak link to each on hci0. CPU is measured per process group over the
steady-state window with psutil. Results go to stdout and, with --write, to docs/benchmarks.md.

    .venv/bin/python benchmarks/ble_throughput.py [--counts 1 5 10 20] [--seconds 20] [--profile native] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from process_cpu import cpu_s

from evaluation.doc_sections import write_measurement
from firmware_sim.testbed import Testbed
from sensor.discovery import discover
from sensor.link import LinkSettings, SensorLink

RATE_HZ = 100
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


async def run_one(count: int, seconds: float, profile: str, workdir: Path) -> dict:
    with Testbed(adapters=count + 1, workdir=workdir / f"ble-{profile}-{count}") as bed:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bed.bus_address
        sims = [subprocess.Popen(
            [sys.executable, "-m", "posture.cli", "sim", "--adapter", f"hci{i + 1}", "--name", f"Bench{i:02d}",
             "--profile", profile, "--scenario", "office-short", "--seed", str(i)],
            env=bed.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(count)]
        try:
            found = []
            deadline = time.monotonic() + 60
            while len(found) < count and time.monotonic() < deadline:
                found = [s for s in await discover("hci0", 2.0) if s.name.startswith("Bench")]
            if len(found) < count:
                raise RuntimeError(f"only {len(found)} of {count} sensors appeared")
            counts = {s.address: 0 for s in found}

            def counter(address):
                def on_batch(batch):
                    counts[address] += batch.n
                return on_batch

            stop = asyncio.Event()
            links = [SensorLink(s.device, counter(s.address), LinkSettings(adapter="hci0", watchdog_s=5))
                     for s in found]
            tasks = [asyncio.create_task(link.run(stop)) for link in links]
            await asyncio.wait_for(asyncio.gather(*(link.connected.wait() for link in links)), 60)
            await asyncio.sleep(2.0)  # settle

            me = psutil.Process()
            sim_procs = [psutil.Process(p.pid) for p in sims]
            bus_procs = [psutil.Process(p.pid) for p in bed._procs]  # dbus-daemon and BlueZoo
            before = {k: v for k, v in counts.items()}
            c0 = (cpu_s([me]), cpu_s(sim_procs), cpu_s(bus_procs))
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            c1 = (cpu_s([me]), cpu_s(sim_procs), cpu_s(bus_procs))
            got = {k: counts[k] - before[k] for k in counts}
            stop.set()
            await asyncio.gather(*tasks)
            lost = sum(link.stats.lost_samples for link in links)
            per_sensor = [g / elapsed for g in got.values()]
            return {
                "profile": profile, "sensors": count, "seconds": round(elapsed, 1),
                "samples_per_s_total": round(sum(per_sensor)),
                "samples_per_s_min_sensor": round(min(per_sensor), 1),
                "delivered_pct": round(100 * sum(per_sensor) / (count * RATE_HZ), 2),
                "lost_samples": lost,
                "client_cpu_pct_per_sensor": round(100 * (c1[0] - c0[0]) / elapsed / count, 2),
                "sim_cpu_pct_per_sensor": round(100 * (c1[1] - c0[1]) / elapsed / count, 2),
                "bluez_cpu_pct_per_sensor": round(100 * (c1[2] - c0[2]) / elapsed / count, 2),
            }
        finally:
            for p in sims:
                p.terminate()
            for p in sims:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


COLUMNS = ["profile", "sensors", "seconds", "samples_per_s_total", "samples_per_s_min_sensor", "delivered_pct",
           "lost_samples", "client_cpu_pct_per_sensor", "sim_cpu_pct_per_sensor", "bluez_cpu_pct_per_sensor"]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--profiles", nargs="+", default=["native", "witmotion"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOC}")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for profile in args.profiles:
            for count in args.counts:
                row = asyncio.run(run_one(count, args.seconds, profile, Path(tmp)))
                print(row, flush=True)
                rows.append(row)
    print(table(rows))
    if args.write:
        write_measurement(DOC, "ble_throughput", table(rows),
                          f"benchmarks/ble_throughput.py --seconds {args.seconds:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
