"""`posture run`: read sensors over BLE, run the pipeline, publish results to MQTT.

The service (BLE, the pipeline, MQTT) is imported when the command runs: `posture run --help` must
not load bleak, numpy and scipy.
"""

from __future__ import annotations

import argparse

from service_io.cli_options import add_common, config_from


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="read sensors over BLE, run the pipeline, publish results to MQTT")
    add_common(p)
    p.add_argument("--sensor", action="append", dest="sensors", metavar="NAME_OR_ADDRESS",
                   help="sensor to read (repeatable; default: the first posture sensor found)")
    p.add_argument("--adapter", help="BlueZ adapter, e.g. hci0")
    p.add_argument("--spool", help="directory of the on-disk buffer (gateway.spool_dir)")
    p.add_argument("--imu", action="store_true", default=None, help="also publish raw samples on …/imu")
    p.set_defaults(func=run_gateway_cli)


def run_gateway_cli(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from gateway.service import run_gateway

    config = config_from(args, gateway={"sensors": tuple(args.sensors) if args.sensors else None,
                                        "adapter": args.adapter, "spool_dir": args.spool, "publish_imu": args.imu})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(config, stop)

    asyncio.run(main())
    return 0
