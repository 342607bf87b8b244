"""CPU of the alert service's own handling per message, in-process: `AlertService.step` over a fleet's message mix.

The messages are what `benchmarks/fleet.py` publishes for N wearers (its Wearer), built as paho would hand them over,
and fed to one service's `step` in batches of B: a steady fleet reaches the service a few messages at a time, a
backlog in batches of hundreds. Nothing reaches a broker: the service is opened with its real rules, catalog and
state file, its MQTT client's publish and its sender's pump do nothing and nothing is acknowledged, so the figure is
our handling alone (validation, rules, state writes, Home Assistant discovery, the day so far), not paho's receive.

    .venv/bin/python benchmarks/alert_step.py [--wearers 3000] [--seconds 10] [--batch 3 500]
    .venv/bin/python benchmarks/alert_step.py --day-minutes 10 100 480 960

--day-minutes: how a minute's cost grows through a wearer's day (the fleet runs above are a few minutes of a day). One
wearer's day, second by second from 07:00 (its live states, events and status in steps of their own), its minute of
metrics alone in a step, as it reaches the service; the CPU of that step (the rules, `today`, the state write) at
those minutes of the day: the median of the 11 minutes around each.
"""

from __future__ import annotations

import argparse
import calendar
import statistics
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


def day(marks: list[int]) -> dict[int, float]:
    """CPU µs of the step of a minute of metrics at each of `marks` (minutes of a wearer's day)."""
    start_s = float(calendar.timegm((2026, 12, 1, 7, 0, 0)))
    now_s = start_s
    with tempfile.TemporaryDirectory() as workdir:
        config = load_config(env={}, overrides={"alerts": {"state_path": f"{workdir}/alerts.db", "timezone": "UTC"}})
        service = AlertService.open(config, clock=lambda: now_s)
        try:
            service.client.publish = lambda *_a, **_k: None  # type: ignore[method-assign]
            service.sender.pump = lambda: None  # type: ignore[method-assign]
            service.connected.set()
            wearer, cpu_us = Wearer(0, 1, start_s, seed=7), list[float]()
            while len(cpu_us) < max(marks) + 5:
                now_s += 1
                others: list[tuple[int, mqtt.MQTTMessage]] = []
                minutes: list[tuple[int, mqtt.MQTTMessage]] = []
                for topic, body, qos, retain in wearer.step(now_s, 1.0):
                    msg = mqtt.MQTTMessage(mid=1, topic=topic.encode())
                    msg.payload, msg.qos, msg.retain = body, qos, retain
                    (minutes if topic.endswith("/metrics") else others).append((OTHER_CONNECTION, msg))
                service.step(others)
                if minutes:
                    cpu0 = time.process_time()
                    service.step(minutes)
                    cpu_us.append((time.process_time() - cpu0) * 1e6)
            return {m: statistics.median(cpu_us[max(m - 6, 0):m + 5]) for m in marks}
        finally:
            service.spool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wearers", type=int, default=3000)
    ap.add_argument("--seconds", type=int, default=10, help="seconds of the fleet's messages")
    ap.add_argument("--batch", type=int, nargs="*", default=[3, 500], help="messages a step")
    ap.add_argument("--day-minutes", type=int, nargs="*", help="instead: a minute's cost at these minutes of a day")
    args = ap.parse_args()
    if args.day_minutes:
        print("| minute of the day | CPU µs a minute of metrics |\n|---|---|")
        for mark, us in day(args.day_minutes).items():
            print(f"| {mark} | {us:.0f} |")
        return
    print("| wearers | messages a step | messages | CPU µs a message | state writes |\n|---|---|---|---|---|")
    for batch in args.batch:
        r = run(args.wearers, args.seconds, batch)
        print(f"| {args.wearers:,} | {batch} | {r['messages']:,} | {r['us']:.1f} | {r['stats']['state_writes']:,} |")


if __name__ == "__main__":
    main()
