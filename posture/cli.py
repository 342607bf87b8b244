"""`posture` command line: each part registers its own subcommands."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys


def build_parser() -> argparse.ArgumentParser:
    from alerts import cli as alerts_cli
    from bridge import cli as bridge_cli
    from firmware_sim import cli as sim_cli
    from gateway import cli as gateway_cli
    from replay import cli as replay_cli
    from report import cli as report_cli
    from sensor import cli as sensor_cli

    from . import demo

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
    demo.register(sub)
    return parser


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
