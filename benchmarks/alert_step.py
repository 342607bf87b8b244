"""CPU of the alert service's own handling per message, in-process: `AlertService.step` over a fleet's message mix.

The messages are what `benchmarks/fleet.py` publishes for N wearers (its Wearer), built as paho would hand them over,
and fed to one service's `step` in batches of B: a steady fleet reaches the service a few messages at a time, a
backlog in batches of hundreds. Nothing reaches a broker: the service is opened with its real rules, catalog and
state file, its MQTT client's publish and its sender's pump do nothing and nothing is acknowledged, so the figure is
our handling alone (validation, rules, state writes, Home Assistant discovery, the day so far), not paho's receive.

    .venv/bin/python benchmarks/alert_step.py [--wearers 3000] [--seconds 10] [--batch 3 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ are scripts, not a package
from fleet import Wearer  # noqa: E402

from alerts.service import AlertService  # noqa: E402
from service_io.config import load_config  # noqa: E402

OTHER_CONNECTION = -1  # a connection id that is never the service's: nothing is acknowledged


def messages(wearers: int, seconds: int, start_s: float) -> list[mqtt.MQTTMessage]:
    fleet = [Wearer(i, wearers, start_s, seed=7) for i in range(wearers)]
    out = []
    for k in range(seconds):
        for w in fleet:
            for topic, body, qos, retain in w.step(start_s + k, 1.0):
                msg = mqtt.MQTTMessage(mid=1, topic=topic.encode())
                msg.payload, msg.qos, msg.retain = body, qos, retain
                out.append(msg)
    return out


def run(wearers: int, seconds: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        config = load_config(env={}, overrides={"alerts": {"state_path": f"{workdir}/alerts.db"}})
        service = AlertService.open(config)
        try:
            service.client.publish = lambda *_a, **_k: None  # type: ignore[method-assign]
            service.sender.pump = lambda: None  # type: ignore[method-assign]
            service.connected.set()  # so discovery and the day so far are worked out as when online
            msgs = messages(wearers, seconds, time.time() - seconds - 5)
            cpu0 = time.process_time()
            for k in range(0, len(msgs), batch):
                service.step([(OTHER_CONNECTION, m) for m in msgs[k:k + batch]])
            cpu_s = time.process_time() - cpu0
            return {"messages": len(msgs), "us": cpu_s / len(msgs) * 1e6, "stats": service.stats.as_dict()}
        finally:
            service.spool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wearers", type=int, default=3000)
    ap.add_argument("--seconds", type=int, default=10, help="seconds of the fleet's messages")
    ap.add_argument("--batch", type=int, nargs="*", default=[3, 500], help="messages a step")
    args = ap.parse_args()
    print("| wearers | messages a step | messages | CPU µs a message | state writes |\n|---|---|---|---|---|")
    for batch in args.batch:
        r = run(args.wearers, args.seconds, batch)
        print(f"| {args.wearers:,} | {batch} | {r['messages']:,} | {r['us']:.1f} | {r['stats']['state_writes']:,} |")


if __name__ == "__main__":
    main()
