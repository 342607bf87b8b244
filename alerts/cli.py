"""`posture alerts`: nudge the wearer's phone over MQTT, with the stretch for what is off.

The service (paho, the config with the pipeline's settings) is imported when the command runs, not for `--help`.
"""

from __future__ import annotations

import argparse
import json

from service_io.cli_options import add_common, config_errors, config_from, stop_on_signals


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alerts", help="nudge the wearer's phone over MQTT, with the stretch for what is off")
    add_common(p)
    p.add_argument("--rules", help="TOML with thresholds (alerts.rules_path; defaults: alerts/rules.toml)")
    p.add_argument("--state", help="file of the service's state and outgoing alerts (alerts.state_path)")
    p.add_argument("--timezone", help="IANA time zone for days, quiet hours, summary (alerts.timezone)")
    p.add_argument("--partitions", type=int,
                   help="split the devices into this many partitions among instances (alerts.partitions; "
                        "docs/scaling.md)")
    p.add_argument("--instance", help="this instance's name among them (alerts.instance; default: host-pid)")
    p.set_defaults(func=run_alerts_cli)


def run_alerts_cli(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from alerts.group import AlertGroup
    from alerts.service import AlertService, check_start
    from service_io.lock import held

    config = config_from(args, alerts={"rules_path": args.rules, "state_path": args.state, "timezone": args.timezone,
                                       "partitions": args.partitions, "instance": args.instance})
    with config_errors():  # before the lock: a start refused for a bad rules file left the lock file behind
        check_start(config)
    with contextlib.ExitStack() as hold:
        if config.alerts.partitions == 1:  # partitions lock their own (alerts/group.py)
            # Two on one state file both ran: each took the broker session from the other every second, and
            # decided alerts from its own copy of the state.
            hold.enter_context(held(Path(f"{config.alerts.state_path}.lock"),
                                    f"alerts.state_path {config.alerts.state_path!r} is in use by another posture "
                                    f"alerts; stop it, or give each its own state_path"))
        with config_errors():
            runner = AlertGroup.open(config) if config.alerts.partitions > 1 else AlertService.open(config)
        stop_on_signals(runner.stop_event.set)
        runner.run()
    stats = runner.totals() if isinstance(runner, AlertGroup) else runner.stats
    print(json.dumps(stats.as_dict()))
    return 0
