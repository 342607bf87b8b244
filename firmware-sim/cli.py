"""`posture sim`: run the virtual sensor on a BlueZ adapter (real, or BlueZoo's).

The simulator (dbus-fast, numpy, scipy) and asyncio are imported when the command runs, not for `--help`.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .peripheral import SimConfig

# profiles.PROFILE_NAMES, which `--help` cannot import (numpy); tests/test_cli_imports.py holds the two equal.
PROFILE_NAMES = ("native", "witmotion", "thingy52")


def _silence(text: str) -> tuple[float, float]:
    try:
        start_s, duration_s = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START_S:DURATION_S, got {text!r}") from None
    return start_s, duration_s


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run the virtual sensor (a real BLE peripheral on BlueZ)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="native", help="wire profile (default native)")
    p.add_argument("--scenario", default="office-short", help="scenario name or TOML file (default office-short)")
    p.add_argument("--seed", type=int, default=1, help="random seed for motion, noise and faults")
    p.add_argument("--adapter", default="hci0", help="BlueZ adapter to advertise on (default hci0)")
    p.add_argument("--name", default="PostureSim", help="advertised local name")
    p.add_argument("--rate", type=float, default=100.0, help="sample rate in Hz (default 100)")
    p.add_argument("--truth", type=Path, help="write ground truth: FILE (per sample CSV) + FILE.events.json")
    p.add_argument("--loss", type=float, default=0.0, metavar="P", help="drop each notification with probability P")
    p.add_argument("--corrupt", type=float, default=0.0, metavar="P",
                   help="send a malformed packet before a good one with probability P")
    p.add_argument("--failed-reads", type=float, default=0.0, metavar="P",
                   help="send each sample as a failed read (acceleration zero on every axis) with probability P")
    p.add_argument("--gyro-spikes", type=float, default=0.0, metavar="P",
                   help="send each sample's rotation rate as a lone glitch (1500 °/s on one axis) with probability P")
    p.add_argument("--silence", type=_silence, action="append", default=[], metavar="START_S:DURATION_S",
                   help="go out of range at scenario time START_S for DURATION_S (repeatable)")
    p.add_argument("--mute", type=_silence, action="append", default=[], metavar="START_S:DURATION_S",
                   help="from scenario time START_S for DURATION_S stay connectable but send no data (repeatable)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="mean extra send delay per notification, ms")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from .faults import FaultSettings
    from .peripheral import SimConfig, summary_line
    from .scenario import load_scenario

    # A scenario it cannot read (a typo'd name, a bad key) is said before BlueZ is asked for anything: without BlueZ
    # running, `posture sim --scenario slouhc` said only that D-Bus could not be reached.
    load_scenario(args.scenario)
    config = SimConfig(profile=args.profile, scenario=args.scenario, seed=args.seed, adapter=args.adapter,
                       name=args.name, rate_hz=args.rate, truth_path=args.truth, send_jitter_ms=args.jitter_ms,
                       faults=FaultSettings(loss_p=args.loss, corrupt_p=args.corrupt, failed_read_p=args.failed_reads,
                                            gyro_spike_p=args.gyro_spikes, silences_s=args.silence,
                                            mutes_s=args.mute))
    summary = asyncio.run(_run(config))
    print(summary_line(summary), flush=True)
    return 0


async def _run(config: SimConfig) -> dict:
    import asyncio

    from dbus_fast import BusType, DBusError
    from dbus_fast.aio import MessageBus

    from .peripheral import VirtualSensor

    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:  # alone: "[Errno 2] No such file"
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
        raise OSError(f"cannot reach BlueZ over the D-Bus system bus ({address}): {exc.strerror or exc}; are dbus "
                      f"and bluetoothd running (systemctl status dbus bluetooth)?") from None
    sensor = VirtualSensor(bus, config)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    # SIGTERM ends the scenario early but still closes the truth file and unregisters cleanly.
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await sensor.run()
    except asyncio.CancelledError:
        return sensor.summary()
    except DBusError as exc:  # a traceback before: an adapter BlueZ does not have ("Unknown object '/org/bluez/hci7'")
        raise RuntimeError(f"BlueZ refused the sensor on adapter {config.adapter or 'hci0'}: {exc.text} "
                           f"(`bluetoothctl list` shows the adapters)") from None
    finally:
        bus.disconnect()
