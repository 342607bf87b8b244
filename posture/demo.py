"""`posture demo`: the whole chain on the virtual sensor, no hardware needed.

Starts a private dbus-daemon + BlueZoo, the virtual sensor on one adapter, the BLE client on the
other, and shows what arrives. Ctrl-C, or the end of the scenario, stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_sim.testbed import Testbed
from sensor.discovery import SensorFilter, discover
from sensor.link import LinkSettings, SensorLink
from sensor.stream import ImuBatch

SENSOR_NAME = "PostureDemo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the virtual sensor and the client together on a private BlueZoo")
    p.add_argument("--profile", default="native", choices=("native", "witmotion", "thingy52"))
    p.add_argument("--scenario", default="office-short", help="scenario name or TOML file")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (default: the scenario's end)")
    p.add_argument("--workdir", type=Path, help="keep logs and the truth file here (default: a temp dir)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="posture-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"posture demo: work dir {workdir}", flush=True)
    with Testbed(adapters=2, workdir=workdir / "ble") as testbed:
        sim_log = open(workdir / "sim.log", "w")
        sim = subprocess.Popen(
            [sys.executable, "-m", "posture.cli", "sim", "--adapter", "hci1", "--name", SENSOR_NAME,
             "--profile", args.profile, "--scenario", args.scenario, "--truth", str(workdir / "truth.csv")],
            env=testbed.env, stdout=sim_log, stderr=subprocess.STDOUT)
        try:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = testbed.bus_address
            return asyncio.run(_client(args, sim))
        finally:
            sim.terminate()
            sim.wait(10)
            sim_log.close()
            print(f"posture demo: sensor summary {(workdir / 'sim.log').read_text().strip().splitlines()[-1:]}")


async def _client(args: argparse.Namespace, sim: subprocess.Popen) -> int:
    found = await discover("hci0", 15, SensorFilter(name=SENSOR_NAME), first_only=True)
    if not found:
        print("posture demo: the virtual sensor did not appear", file=sys.stderr)
        return 1
    print(f"found {found[0].name} {found[0].address} ({found[0].profile} profile)", flush=True)
    latest: list[ImuBatch] = []
    link = SensorLink(found[0].device, latest.append, LinkSettings(adapter="hci0"))
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    started = time.monotonic()
    try:
        while sim.poll() is None and not task.done():
            await asyncio.sleep(1.0)
            if args.seconds and time.monotonic() - started > args.seconds:
                break
            _show(link, latest)
            latest.clear()
    finally:
        stop.set()
        await task
    stats = link.stats
    print("client summary:", json.dumps({"samples": stats.samples, "lost_samples": stats.lost_samples,
                                          "malformed": stats.malformed_total, "reconnects": stats.reconnects,
                                          "battery_pct": stats.battery_pct}) if stats else "no data")
    return 0 if stats and stats.samples else 1


def _show(link: SensorLink, batches: list[ImuBatch]) -> None:
    stats = link.stats
    if not batches or stats is None:
        print("  waiting for data…", flush=True)
        return
    acc = np.concatenate([b.acc_g for b in batches])
    gyro = np.concatenate([b.gyro_dps for b in batches])
    print(f"  {len(acc):4d} samples/s  acc_g {np.array2string(acc.mean(0), precision=2)}"
          f"  |gyro| {np.linalg.norm(gyro, axis=1).max():6.1f} °/s  total {stats.samples}"
          f"  lost {stats.lost_samples}  battery {stats.battery_pct}%", flush=True)
