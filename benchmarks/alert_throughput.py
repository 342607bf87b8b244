"""How many messages a second one `posture alerts` process drains, and its CPU time per message.

A real Mosquitto and `posture alerts` as deployed (a subprocess, as in benchmarks/alert_latency.py, whose broker,
service start and payloads this reuses). A backlog of N metrics minutes (QoS 1, acknowledged by the service only
once their state is saved) over D devices, each device's minutes in order as its gateway sends them, is drained
two ways:

- queued while stopped: the broker keeps it for the service's persistent session while the service is not running
  (as after a restart or an outage); timed, and its CPU counted, from the first day so far it publishes after its
  start (its start-up is not its pace) to the last;
- sent to it frozen: the service is online, then frozen (SIGSTOP: connected, reading nothing) while the backlog is
  published, then let go (SIGCONT); with `--live-per-minute L`, L live states (QoS 0, upright: they change nothing
  saved) of each device before each of its minutes (a gateway sends about 60 a minute), so a mix.

Done when every device's retained `…/today` shows its last minute; the service's CPU time (user + system, psutil)
over the span is divided by the messages. The sitting rule fires once per device (its cooldown then holds it), so
alerts are decided, spooled and sent as in use. Another load on the machine slows messages/s; CPU µs a message
much less.

With `--instances N` (N > 1) as many processes split the devices (alerts.partitions = N, docs/scaling.md): each
partition's session receives every message and handles its own devices'; the CPU is that of all of them.

    .venv/bin/python benchmarks/alert_throughput.py [--messages 20000] [--devices 1000] [--live-per-minute 0 4]
                                                    [--instances 1 2]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ are scripts, not a package
from alert_latency import ROOT, RULES, Broker, connect, live, metrics, start_service  # noqa: E402
from process_cpu import cpu_s  # noqa: E402

DRAIN_TIMEOUT_S = 600.0
PUBLISH_INFLIGHT = 1000  # the publisher's own QoS 1 window: it is not what is measured
PUBLISH_CHUNK = 20_000


def backlog(devices: int, minutes: int, live_per_minute: int, now_s: float) -> list[tuple[str, bytes, int]]:
    """(topic, payload, qos) in the order a set of gateways would send them: minute by minute, each device's live
    states of that minute, then its metrics minute."""
    out = []
    for k in range(minutes):
        minute_s = now_s - (minutes - k) * 60  # metrics() gives the minute that ended before this time
        for d in range(devices):
            device = f"load{d:05d}"
            for j in range(live_per_minute):
                state_s = minute_s - 60 + (j + 1) * 60 / (live_per_minute + 1)
                upright = {**live(device, state_s), "slouching_since_s": None}  # most live states change nothing
                out.append((f"posture/{device}/live", json.dumps(upright).encode(), 0))
            out.append((f"posture/{device}/metrics", json.dumps(metrics(device, minute_s)).encode(), 1))
    return out


class TodayWatcher:
    """Subscribed to every device's retained day so far: tells when each has reached its last minute."""

    def __init__(self, port: int, want_ts: int, devices: int) -> None:
        self.want_ts, self.devices = want_ts, devices
        self.done_devices: set[str] = set()
        self.first_at: float | None = None
        self.first = threading.Event()
        self.done = threading.Event()
        self.client = connect(port, "bench-today")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe("posture/+/today", 0)
        if not subscribed.wait(10):
            raise SystemExit("the watcher got no SUBACK")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
            self.first.set()
        if json.loads(msg.payload).get("ts") == self.want_ts:
            self.done_devices.add(msg.topic.split("/")[1])
            if len(self.done_devices) >= self.devices:
                self.done.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_all(port: int, messages: list[tuple[str, bytes, int]]) -> None:
    gateway = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-load", protocol=mqtt.MQTTv5)
    gateway.max_inflight_messages_set(PUBLISH_INFLIGHT)  # before connecting: paho refuses it after
    gateway.connect("127.0.0.1", port)
    gateway.loop_start()
    for start in range(0, len(messages), PUBLISH_CHUNK):  # paho's packet ids wrap at 65,535, QoS 0 ones too
        infos = [gateway.publish(t, body, qos=qos) for t, body, qos in messages[start:start + PUBLISH_CHUNK]]
        for info in infos:
            info.wait_for_publish(60)
    gateway.loop_stop()
    gateway.disconnect()


class Group:
    """`posture alerts` as one process, or as `instances` processes splitting the devices among them."""

    def __init__(self, work: Path, port: int, instances: int) -> None:
        self.work, self.port, self.instances = work, port, instances
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Group:
        if self.instances == 1:
            self.procs = [start_service(self.work, self.port)]
            return self
        (self.work / "rules.toml").write_text(RULES)
        config = self.work / "posture.toml"  # start_service's, split
        config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {self.port}\n\n[alerts]\n'
                          f'state_path = "{self.work / "alerts.db"}"\nrules_path = "{self.work / "rules.toml"}"\n'
                          f'timezone = "UTC"\nha_discovery = false\npartitions = {self.instances}\n')
        logs = [self.work / f"alerts-{k}.log" for k in range(self.instances)]
        self.procs = [subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", "alerts", "--config", str(config),
                                        "--instance", f"i{k}"], cwd=ROOT, stdout=open(log, "ab"),
                                       stderr=subprocess.STDOUT) for k, log in enumerate(logs)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every partition run by one of them: its session exists
            said = [re.findall(r"running partitions (\S+) of", log.read_text()) for log in logs]
            if all(said) and sorted(k for s in said for k in s[-1].split(",") if k != "none") == \
                    [str(k) for k in range(self.instances)]:
                return self
            time.sleep(0.2)
        raise SystemExit("the instances did not split the partitions:\n" + logs[0].read_text()[-2000:])

    def cpu_s(self) -> float:
        return cpu_s(psutil.Process(p.pid) for p in self.procs)

    def signal(self, sig: int) -> None:
        for proc in self.procs:
            proc.send_signal(sig)

    def stop(self) -> dict[str, float]:
        """Stopped: the counters they printed, summed."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        total: dict[str, float] = {"received": 0, "live": 0, "state_writes": 0, "alerts": 0, "errors": 0}
        for k, proc in enumerate(self.procs):
            proc.wait(30)
            log = self.work / ("alerts.log" if self.instances == 1 else f"alerts-{k}.log")
            stats = json.loads([ln for ln in log.read_text().splitlines() if ln.startswith("{")][-1])
            for key in total:
                value = stats[key]
                total[key] += sum(value.values()) if isinstance(value, dict) else value
        return total


def run_offline(work: Path, port: int, devices: int, minutes: int, instances: int) -> dict[str, float]:
    """The backlog queued by the broker for the service's persistent session while it is not running; timed, and
    its CPU counted, from the first day so far it publishes (its start-up is not its pace) to the last."""
    now_s = time.time()
    messages = backlog(devices, minutes, 0, now_s)
    last_minute_ms = int(json.loads(messages[-1][1])["ts"]) + 60_000
    Group(work, port, instances).start().stop()  # their sessions and subscriptions
    publish_all(port, messages)
    watcher = TodayWatcher(port, last_minute_ms, devices)
    group = Group(work, port, instances).start()
    try:
        if not watcher.first.wait(DRAIN_TIMEOUT_S):
            raise SystemExit("no day so far published")
        cpu0_s, t0 = group.cpu_s(), time.perf_counter()
        if not watcher.done.wait(DRAIN_TIMEOUT_S):
            raise SystemExit(f"only {len(watcher.done_devices)} of {devices} devices reached their last minute")
        elapsed_s, cpu_used_s = time.perf_counter() - t0, group.cpu_s() - cpu0_s
    finally:
        stats = group.stop()
        watcher.close()
    return drained(stats, len(messages), elapsed_s, cpu_used_s)


def drained(stats: dict[str, float], messages: int, elapsed_s: float, cpu_used_s: float) -> dict[str, float]:
    """A drain's figures, with the counters the service printed as it stopped."""
    return {"messages": messages, "received": stats["received"], "live": stats["live"],
            "writes": stats["state_writes"], "elapsed_s": elapsed_s, "cpu_s": cpu_used_s,
            "alerts": stats["alerts"], "errors": stats["errors"]}


def run_once(work: Path, port: int, devices: int, minutes: int, live_per_minute: int,
             instances: int) -> dict[str, float]:
    now_s = time.time()
    messages = backlog(devices, minutes, live_per_minute, now_s)
    last_minute_ms = int(json.loads(messages[-1][1])["ts"]) + 60_000
    group = Group(work, port, instances).start()
    watcher = TodayWatcher(port, last_minute_ms, devices)
    try:
        group.signal(signal.SIGSTOP)  # connected, reading nothing: the backlog waits at the broker and socket
        publish_all(port, messages)
        cpu0_s, t0 = group.cpu_s(), time.perf_counter()
        group.signal(signal.SIGCONT)
        if not watcher.done.wait(DRAIN_TIMEOUT_S):
            raise SystemExit(f"only {len(watcher.done_devices)} of {devices} devices reached their last minute")
        elapsed_s, cpu_used_s = time.perf_counter() - t0, group.cpu_s() - cpu0_s
        time.sleep(0.5)  # the last live states (QoS 0, no today) are counted before the stop
    finally:
        stats = group.stop()
        watcher.close()
    return drained(stats, len(messages), elapsed_s, cpu_used_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000, help="metrics minutes in the backlog")
    ap.add_argument("--devices", type=int, default=1_000)
    ap.add_argument("--live-per-minute", type=int, nargs="*", default=[0, 4],
                    help="live states per device before each minute: one run of a frozen service per value")
    ap.add_argument("--instances", type=int, nargs="*", default=[1],
                    help="processes splitting the devices (alerts.partitions): one set of runs per value")
    args = ap.parse_args()
    minutes = max(1, args.messages // args.devices)
    runs = [("queued while stopped", None)] + [("sent to it frozen", n) for n in args.live_per_minute]
    rows = []
    for instances in args.instances:
        for how, live_per_minute in runs:
            work = Path(tempfile.mkdtemp(prefix="alert-throughput-"))
            with Broker(work / "mosquitto", no_delay=True, save_each_change=False) as broker:
                if live_per_minute is None:
                    r = run_offline(work, broker.port, args.devices, minutes, instances)
                else:
                    r = run_once(work, broker.port, args.devices, minutes, live_per_minute, instances)
            mix = f"{live_per_minute} live : 1 metrics" if live_per_minute else "metrics only"
            rows.append(f"| {instances} | {how} | {mix} | {r['messages']:,} | {r['received']:,} | "
                        f"{r['messages'] / r['elapsed_s']:,.0f} | {1e6 * r['cpu_s'] / r['messages']:.0f} | "
                        f"{r['writes']:,.0f} | {r['alerts']:,.0f} | {r['errors']:.0f} |")
    print(f"{args.devices:,} devices, {minutes} minutes each\n"
          "| processes | backlog | messages | published | handled | messages/s | CPU µs/message | state writes "
          "| alerts | errors |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
