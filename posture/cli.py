"""`posture` command line: each part registers its own subcommands.

Parsing imports only what parsing needs: each part's cli.py imports its heavy modules (numpy, scipy,
bleak, dbus-fast, paho, the InfluxDB client, matplotlib, the pipeline) in the function that runs the
command, so `posture <cmd> --help` answers at once (tests/test_cli_imports.py holds it).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from alerts import cli as alerts_cli
    from bridge import cli as bridge_cli
    from firmware_sim import cli as sim_cli
    from gateway import cli as gateway_cli
    from replay import cli as replay_cli
    from report import cli as report_cli
    from sensor import cli as sensor_cli

    parser = argparse.ArgumentParser(prog="posture", description="Posture companion: back-worn IMU over BLE.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim_cli.register(sub)
    sensor_cli.register(sub)
    replay_cli.register(sub)
    gateway_cli.register(sub)
    bridge_cli.register(sub)
    alerts_cli.register(sub)
    report_cli.register(sub)
    register_demo(sub, sim_cli.PROFILE_NAMES)
    return parser


def register_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser], profiles: tuple[str, ...]) -> None:
    """`posture demo` (posture/demo.py): registered here, as demo.py loads paho and the chain's parts."""
    p = sub.add_parser("demo", help="the whole chain on the virtual sensor: BLE → pipeline → MQTT → InfluxDB, alerts")
    p.add_argument("--scenario", default="office-demo", help="scenario name or TOML file (default office-demo)")
    p.add_argument("--profile", default="native", choices=profiles)
    p.add_argument("--seconds", type=_seconds, default=0, help="stop after this long (default: the scenario's end)")
    p.add_argument("--workdir", type=Path, help="keep logs, data and the report here (default: a temp dir)")
    p.set_defaults(func=run_demo)


def _seconds(text: str) -> float:
    """--seconds: a duration; 0 (the default) is the scenario's end. A negative one started every server and the
    sensor, then stopped them at once with nothing to show."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"0 (the scenario's end) or more seconds, got {text!r}")
    return value


def run_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` shows where a stuck service is
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        # One clear line, not a traceback, for what a user can fix (bad file, no adapter, …).
        print(f"posture {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
