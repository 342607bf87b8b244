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
    p.add_argument("--spool", help="file of the on-disk buffer (bridge.spool_path); each bridge its own")
    p.add_argument("--client-id", help="MQTT client id, which names the persistent session (bridge.client_id); "
                                       "each bridge of a share group its own, the same at every restart")
    p.add_argument("--share-group", help="split the messages with the other bridges of this group through an MQTT 5 "
                                         "shared subscription (bridge.share_group)")
    p.add_argument("--leave", action="store_true", help="leave the share group for good: store what the broker "
                                                          "holds for this bridge, end its session, exit")
    p.set_defaults(func=run_bridge_cli)


def run_bridge_cli(args: argparse.Namespace) -> int:
    from bridge.service import Bridge

    config = config_from(args, influx={"url": args.influx_url, "api": args.influx_api, "database": args.database},
                         bridge={"spool_path": args.spool, "client_id": args.client_id,
                                 "share_group": args.share_group})
    if args.leave and not config.bridge.share_group:
        # Alone, ending the session would only make the broker drop what comes until the bridge is back.
        raise ValueError("config: --leave is for a bridge of a share group (bridge.share_group)")
    bridge = Bridge.open(config, leave=args.leave)
    stop_on_signals(bridge.stop_event.set)
    bridge.run()
    if bridge.leave_refused:  # refused at connect, before a message: no run whose counters say anything
        raise ValueError(f"--leave: {bridge.leave_refused}")
    # Every counter of BridgeStats (bridge/service.py says what each counts), malformed by kind.
    print(json.dumps(dataclasses.asdict(bridge.stats) | {"malformed": dict(bridge.stats.malformed)}))
    return 0
