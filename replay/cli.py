"""`posture replay`: the posture pipeline over a recorded CSV.

The pipeline (numpy, scipy, VQF) is imported when the command runs: `posture replay --help` must
not pay a second for it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service_io.cli_options import config_errors


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="run the posture pipeline over a recorded CSV (posture record, or x-io layout)")
    p.add_argument("file", type=Path, help="CSV with t_s, acc_{x,y,z}_g, gyro_{x,y,z}_dps columns")
    p.add_argument("--out", type=Path, help="write events, per-minute metrics and hour and day summaries here, one "
                                            "JSON object a line")
    p.add_argument("--device", default="replay", help="device name to put in the output (default replay)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--axes-are-trunk", action="store_true",
                   help="skip calibration: the sensor's x, y, z already point forward, left and up")
    p.add_argument("--config", type=Path,
                   help="TOML config file: its [pipeline] thresholds, gateway.pipeline_batch_s and alerts.timezone "
                        "apply (docs/mqtt.md)")
    p.add_argument("--timezone", help="IANA time zone of the hour and day summaries' days, local midnight to midnight "
                                      "(default: alerts.timezone of --config, else the machine's)")
    p.add_argument("--offline", action="store_true",
                   help="orientation from VQF's offline estimate of the whole file (more accurate than live; "
                        "holds the recording in memory)")
    p.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from pipeline.calibration import Calibration
    from replay.replay import replay
    from service_io.config import load_config
    from service_io.zones import wearer_zone

    known = Calibration.sensor_axes_are_trunk_axes() if args.axes_are_trunk else None
    with config_errors():
        config = load_config(args.config)
    tz = wearer_zone(args.timezone, config.alerts.timezone)  # the wearer's days, as `posture report` counts them
    summary = replay(args.file, args.out, args.device, progress=not args.quiet, calibration=known,
                     offline=args.offline, tuning=config.pipeline, batch_s=config.gateway.pipeline_batch_s, tz=tz)
    print(json.dumps(summary, indent=1))
    return 0 if summary["samples"] else 1
