"""`posture bridge`: store MQTT results in InfluxDB, losing nothing.

The service (paho, the InfluxDB client) is imported when the command runs, not for `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from service_io.cli_options import add_common, config_from, stop_on_signals


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bridge", help="store MQTT results in InfluxDB, losing nothing")
    add_common(p)
    p.add_argument("--influx-url", help="InfluxDB base URL (influx.url)")
    p.add_argument("--influx-api", choices=("auto", "v1", "v2"), help="influx.api (default: ask /ping)")
    p.add_argument("--database", help="InfluxDB 1.x database / 2.x bucket (influx.database)")
    p.add_argument("--spool", help="file of the on-disk buffer (bridge.spool_path)")
    p.set_defaults(func=run_bridge_cli)


def run_bridge_cli(args: argparse.Namespace) -> int:
    from bridge.service import Bridge

    config = config_from(args, influx={"url": args.influx_url, "api": args.influx_api, "database": args.database},
                         bridge={"spool_path": args.spool})
    bridge = Bridge.open(config)
    stop_on_signals(bridge.stop_event.set)
    bridge.run()
    # Every counter of BridgeStats (bridge/service.py says what each counts), malformed by kind.
    print(json.dumps(dataclasses.asdict(bridge.stats) | {"malformed": dict(bridge.stats.malformed)}))
    return 0
