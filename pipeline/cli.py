"""`posture replay`, `run` (sensors → MQTT), `bridge` (MQTT → InfluxDB) and `alerts` (MQTT → phone)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from .alerts.service import AlertService
from .bridge import Bridge
from .calibration import Calibration
from .config import Config, ConfigError, load_config
from .gateway_service import run_gateway
from .replay import replay


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the posture pipeline over a recorded CSV (posture record, or x-io layout)")
    p.add_argument("file", type=Path, help="CSV with t_s, acc_{x,y,z}_g, gyro_{x,y,z}_dps columns")
    p.add_argument("--out", type=Path, help="write events and per-minute metrics here, one JSON object a line")
    p.add_argument("--device", default="replay", help="device name to put in the output (default replay)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--axes-are-trunk", action="store_true",
                   help="skip calibration: the sensor's x, y, z already point forward, left and up")
    p.add_argument("--offline", action="store_true",
                   help="orientation from VQF's offline estimate of the whole file (more accurate than live; "
                        "holds the recording in memory)")
    p.set_defaults(func=run_replay)

    p = sub.add_parser("run", help="read sensors over BLE, run the pipeline, publish results to MQTT")
    _common(p)
    p.add_argument("--sensor", action="append", dest="sensors", metavar="NAME_OR_ADDRESS",
                   help="sensor to read (repeatable; default: the first posture sensor found)")
    p.add_argument("--adapter", help="BlueZ adapter, e.g. hci0")
    p.add_argument("--spool", help="directory of the on-disk buffer (gateway.spool_path)")
    p.add_argument("--imu", action="store_true", default=None, help="also publish raw samples on …/imu")
    p.set_defaults(func=run_gateway_cli)

    p = sub.add_parser("bridge", help="store MQTT results in InfluxDB, losing nothing")
    _common(p)
    p.add_argument("--influx-url", help="InfluxDB base URL (influx.url)")
    p.add_argument("--influx-api", choices=("auto", "v1", "v2"), help="influx.api (default: ask /ping)")
    p.add_argument("--database", help="InfluxDB 1.x database / 2.x bucket (influx.database)")
    p.add_argument("--spool", help="file of the on-disk buffer (bridge.spool_path)")
    p.set_defaults(func=run_bridge_cli)

    p = sub.add_parser("alerts", help="nudge the wearer's phone over MQTT, with the stretch for what is off")
    _common(p)
    p.add_argument("--rules", help="TOML with thresholds (alerts.rules_path; defaults: pipeline/alerts/rules.toml)")
    p.add_argument("--state", help="file of the service's state and outgoing alerts (alerts.state_path)")
    p.add_argument("--timezone", help="IANA time zone for days, quiet hours, summary (alerts.timezone)")
    p.set_defaults(func=run_alerts_cli)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (docs/mqtt.md lists the keys)")
    p.add_argument("--mqtt-host", help="broker host (mqtt.host)")
    p.add_argument("--mqtt-port", type=int, help="broker port (mqtt.port)")
    p.add_argument("--prefix", help="topic prefix (mqtt.prefix, default posture)")


def _config(args: argparse.Namespace, **sections) -> Config:
    mqtt = {"host": args.mqtt_host, "port": args.mqtt_port, "prefix": args.prefix}
    try:
        return load_config(args.config, overrides={"mqtt": mqtt, **sections})
    except ConfigError as exc:
        raise ValueError(f"config: {exc}") from None


def _stop_on_signals(callback) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: callback())


def run_gateway_cli(args: argparse.Namespace) -> int:
    config = _config(args, gateway={"sensors": tuple(args.sensors) if args.sensors else None,
                                    "adapter": args.adapter, "spool_path": args.spool, "publish_imu": args.imu})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(config, stop)

    asyncio.run(main())
    return 0


def run_bridge_cli(args: argparse.Namespace) -> int:
    config = _config(args, influx={"url": args.influx_url, "api": args.influx_api, "database": args.database},
                     bridge={"spool_path": args.spool})
    bridge = Bridge(config)
    _stop_on_signals(bridge.stop_event.set)
    bridge.run()
    print(json.dumps({"received": bridge.stats.received, "points_written": bridge.stats.points_written,
                      "points_spooled": bridge.stats.points_spooled, "malformed": dict(bridge.stats.malformed)}))
    return 0


def run_alerts_cli(args: argparse.Namespace) -> int:
    config = _config(args, alerts={"rules_path": args.rules, "state_path": args.state, "timezone": args.timezone})
    try:
        service = AlertService(config)
    except ConfigError as exc:
        raise ValueError(f"config: {exc}") from None
    _stop_on_signals(service.stop_event.set)
    service.run()
    print(json.dumps({"received": service.stats.received, "alerts": dict(service.stats.alerts),
                      "snoozes": service.stats.snoozes, "malformed": dict(service.stats.malformed),
                      "errors": dict(service.stats.errors)}))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    known = Calibration.sensor_axes_are_trunk_axes() if args.axes_are_trunk else None
    summary = replay(args.file, args.out, args.device, progress=not args.quiet, calibration=known,
                     offline=args.offline)
    print(json.dumps(summary, indent=1))
    return 0 if summary["samples"] else 1
