"""`posture scan` and `posture record`.

The BLE client (bleak, dbus-fast) and asyncio are imported when a command runs, not for `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _positive(text: str) -> float:
    """A duration or rate above 0. `--seconds -5`, `--timeout 0` or `--rate -100` went to BlueZ as given: a scan over at
    once said "no posture sensors found" with sensors in range, a recording of no length exited 1 with nothing."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scan", help="list posture sensors in range")
    p.add_argument("--adapter", help="BlueZ adapter, e.g. hci0 (default: BlueZ's default)")
    p.add_argument("--timeout", type=_positive, default=5.0, help="seconds to scan (default 5)")
    p.set_defaults(func=run_scan)

    p = sub.add_parser("record", help="record decoded samples from a sensor to CSV")
    p.add_argument("--adapter", help="BlueZ adapter, e.g. hci0")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--name", help="advertised name of the sensor")
    who.add_argument("--address", help="Bluetooth address of the sensor")
    p.add_argument("--seconds", type=_positive, required=True, help="how long to record")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--rate", type=_positive, default=100.0, help="sample rate to ask the sensor for, Hz (default 100)")
    p.add_argument("--watchdog", type=_positive, default=3.0, help="reconnect after this many seconds without data")
    p.add_argument("--scan-timeout", type=_positive, default=10.0, help="seconds to look for the sensor")
    p.set_defaults(func=run_record)


def run_scan(args: argparse.Namespace) -> int:
    import asyncio

    from .discovery import discover

    sensors = asyncio.run(discover(args.adapter, args.timeout))
    if not sensors:
        print("no posture sensors found", file=sys.stderr)
        return 1
    print(f"{'NAME':24} {'ADDRESS':17} {'PROFILE':10} RSSI")
    for s in sensors:
        rssi = "" if s.rssi_dbm is None else f"{s.rssi_dbm} dBm"
        print(f"{s.name:24} {s.address:17} {s.profile or '?':10} {rssi}{'' if s.advertising else ' (known, not seen)'}")
    return 0


def run_record(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_record(args))


async def _record(args: argparse.Namespace) -> int:
    from .discovery import SensorFilter, discover
    from .link import LinkSettings
    from .record import record

    wanted = SensorFilter(name=args.name, address=args.address)
    found = await discover(args.adapter, args.scan_timeout, wanted, first_only=True)
    if not found:
        raise RuntimeError(f"no sensor matching {args.name or args.address or 'a posture profile'} found")
    settings = LinkSettings(adapter=args.adapter, rate_hz=args.rate, watchdog_s=args.watchdog)
    link = await record(found[0].device, settings, args.seconds, args.out)
    stats = link.stats
    summary = {"device": found[0].address, "profile": link.profile.name if link.profile else None,
               "out": str(args.out), **(dataclasses.asdict(stats) if stats else {})}
    print(json.dumps(summary), flush=True)
    return 0 if stats and stats.samples else 1
