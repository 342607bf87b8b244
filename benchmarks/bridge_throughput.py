"""Bridge throughput against writing straight to InfluxDB, and latency from publish to stored point.

    .venv/bin/python benchmarks/bridge_throughput.py [--messages 20000] [--protocol 5] [--write]

Real Mosquitto and InfluxDB 1.6.7 (tests/servers.py starts them in a temp dir). In the same run:
(1) the line protocol of M metrics payloads POSTed straight to /write in batches of 5000;
(2) the same M payloads published (QoS 1) and queued at the broker for the bridge's persistent
session, then the bridge started and timed until InfluxDB holds all M points (the bridge alone,
not the publisher, which would share its Python process), with the CPU time its process spent meanwhile (the
bridge's threads, and this script asking InfluxDB for the count every 50 ms); (3) 500 messages at 50/s, each
timestamped when published, InfluxDB polled every 20 ms: latency = first seen − published (±20 ms); (4) the floor
paho sets: the same M messages queued for a bare paho client (MQTT 5 and manual acks, as the bridge) that only
acknowledges each one as it arrives — receiving and PUBACK, nothing decoded or stored. --protocol 3.1.1 runs the
bridge and that client on MQTT 3.1.1 (paho parses no properties there).

--bridges N (N > 1) measures scale-out instead: the same M payloads queued at the broker for a share group
(bridge.share_group) of 1 and then of N `posture bridge` processes, each timed from the moment its first member has
connected (its log says so; startup and imports excluded) until InfluxDB holds all M points. Processes, not threads
of this script: one Python process's bridges would share one interpreter lock, which is what more processes escape.

--live-states S measures messages that carry batches instead: M live messages (QoS 0, as the gateway sends them)
of S states each (the latest and S − 1 `earlier`, gateway.live_hz S at 1 s batches), published by another process
as fast as it can to a running bridge (QoS 0 is not queued for an absent one), timed from the first message the
bridge receives until InfluxDB's live policy holds all M × S points; against the same points POSTed straight to /write.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.service import Bridge
from contract.influx_schema import to_line_protocol
from contract.messages import payload
from evaluation.doc_sections import write_measurement
from pipeline.events import EarlierState, LiveState
from posture.local_servers import InfluxDB1, Mosquitto, ServerError
from service_io.config import load_config
from service_io.influx import V1Writer

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
DB = "posture"


def minute(k: int, t0_ms: int) -> dict:
    ts = t0_ms + 60_000 * (k // 10)
    return {"schema": 1, "kind": "metrics", "device": f"dev{k % 10}", "ts": ts,
            "minute_start_s": ts / 1000, "worn_s": 60.0, "sitting_s": 50.0, "standing_s": 10.0, "walking_s": 0.0,
            "lying_s": 0.0, "slouch_s": float(k % 60), "lean_left_s": 0.0, "lean_right_s": 0.0,
            "lean_left_mean_deg": None, "lean_right_mean_deg": None, "flexion_mean_deg": 4.2,
            "lateral_mean_deg": -0.3, "rotations_left": k % 4, "rotations_right": k % 5,
            "rotation_left_peak_mean_deg": None, "rotation_right_peak_mean_deg": None,
            "rotation_left_peak_max_deg": None, "rotation_right_peak_max_deg": None,
            "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0,
            "sitting_since_s": None, "lost_samples": 0}


def count(influx: InfluxDB1, measurement: str = "posture_minute") -> int:
    rows = influx.rows(f"SELECT count(worn_s) FROM {measurement}", DB)
    return rows[0]["count"] if rows else 0


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def write_direct(influx: InfluxDB1, lines: list[str]) -> float:
    """Seconds to POST the lines straight to /write of the database `direct`, in batches of 5000."""
    writer = V1Writer(influx.settings("direct"))
    start = time.perf_counter()
    for i in range(0, len(lines), 5000):
        writer.write(lines[i:i + 5000])
    return time.perf_counter() - start


def run(messages: int, work: Path, protocol: str = "5") -> dict:
    broker = Mosquitto(work / "mosquitto").start()
    influx = InfluxDB1(work / "influx").start()
    try:
        influx.create_database(DB)
        influx.create_database("direct")
        payloads = [minute(k, 1_700_000_000_000) for k in range(messages)]
        direct_s = write_direct(influx, [line for p in payloads for line in to_line_protocol(p)])

        cfg = work / "posture.toml"
        cfg.write_text(f'[mqtt]\nport = {broker.port}\nprotocol = "{protocol}"\n'
                       f'[influx]\nurl = "{influx.url}"\ndatabase = "{DB}"\n'
                       f'[bridge]\nspool_path = "{work / "bridge.spool"}"\nflush_interval_s = 0.05\n')
        config = load_config(cfg, env={})
        # Once, to create the bridge's persistent session (and the bare paho client's); then the messages queue at
        # the broker while neither runs, and each timing covers one of them alone draining them.
        bridge, thread = start_bridge(config)
        stop_bridge(bridge, thread)
        paho_alone(broker.port, 0, protocol)
        pub = publisher(broker.port)
        for p in payloads:
            pub.publish(f"posture/{p['device']}/metrics", json.dumps(p), qos=1)
        pub.loop_stop()
        pub = publisher(broker.port)
        start, cpu_start = time.perf_counter(), time.process_time()
        bridge, thread = start_bridge(config)
        while count(influx) < messages:
            time.sleep(0.05)
        bridge_s, bridge_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        # Both threads began in the timing: their whole CPU time so far is the drain's.
        paho_thread_cpu_s = thread_cpu_s(bridge.client._thread)  # paho's own thread
        bridge_thread_cpu_s = thread_cpu_s(thread)

        latencies = measure_latency(pub, influx)
        stop_bridge(bridge, thread)
        pub.loop_stop()
        paho_s, paho_cpu_s = paho_alone(broker.port, messages, protocol)
        return {"messages": messages, "direct_points_per_s": messages / direct_s,
                "bridge_messages_per_s": messages / bridge_s, "bridge_points_per_s": messages / bridge_s,
                "bridge_cpu_us_per_message": bridge_cpu_s / messages * 1e6,
                "paho_thread_cpu_us_per_message": paho_thread_cpu_s / messages * 1e6,
                "bridge_thread_cpu_us_per_message": bridge_thread_cpu_s / messages * 1e6,
                "paho_alone_messages_per_s": messages / paho_s, "paho_alone_cpu_us_per_message":
                paho_cpu_s / messages * 1e6, "ratio": direct_s / bridge_s,
                "latency_p50_ms": float(np.percentile(latencies, 50)),
                "latency_p99_ms": float(np.percentile(latencies, 99)), "latency_n": len(latencies)}
    finally:
        broker.kill()
        influx.kill()


def live_message(k: int, states: int, t0_s: float) -> dict:
    """The k-th live message of 10 devices, a second apart per device, carrying `states` states."""
    t_s = t0_s + k // 10 + (states - 1) / states
    earlier = tuple(EarlierState(t0_s + k // 10 + j / states, 10.0 + j % 7, -1.5, 3.0 + j % 5)
                    for j in range(states - 1))
    return payload(f"dev{k % 10}", LiveState(t_s, "calibrated", 12.5, -1.5, 3.0, "sitting", sitting_since_s=t0_s,
                                             earlier=earlier))


def publish_live(port: int, messages: int, states: int, t0_s: float) -> None:
    """In a process of its own (this script's interpreter lock is the bridge's)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(f"posture/dev{k % 10}/live", json.dumps(live_message(k, states, t0_s)), qos=0)
             for k in range(messages)]
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def run_live(messages: int, work: Path, states: int) -> dict:
    import multiprocessing

    broker = Mosquitto(work / "mosquitto").start()
    influx = InfluxDB1(work / "influx").start()
    try:
        influx.create_database(DB)
        influx.create_database("direct")
        t0_s = time.time() - messages // 10 - 3600  # within the live policy's 7 days
        lines = [line for k in range(messages) for line in to_line_protocol(live_message(k, states, t0_s), "live")]
        direct_s = write_direct(influx, lines)
        cfg = work / "posture.toml"
        cfg.write_text(f'[mqtt]\nport = {broker.port}\n[influx]\nurl = "{influx.url}"\ndatabase = "{DB}"\n'
                       f'[bridge]\nspool_path = "{work / "bridge.spool"}"\nflush_interval_s = 0.05\n')
        bridge, thread = start_bridge(load_config(cfg, env={}))
        while not bridge.connected.is_set():
            time.sleep(0.05)
        time.sleep(1.0)  # subscribed

        def stored() -> int:
            try:
                rows = influx.rows('SELECT count(flexion_deg) FROM "live"."posture_live"', DB)
            except ServerError:  # the bridge creates the policy with its first live point
                return 0
            return int(rows[0]["count"]) if rows else 0

        sender = multiprocessing.get_context("spawn").Process(target=publish_live,
                                                              args=(broker.port, messages, states, t0_s))
        sender.start()
        while not bridge.stats.received:  # timed from the first message: the publisher's start-up is not the bridge's
            time.sleep(0.001)
        start, cpu_start = time.perf_counter(), time.process_time()
        deadline, have = time.monotonic() + 300, 0
        while (have := stored()) < len(lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        bridge_s, bridge_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        sender.join(60)
        stop_bridge(bridge, thread)
        return {"messages": messages, "states": states, "points": len(lines), "stored": have,
                "direct_points_per_s": len(lines) / direct_s, "bridge_points_per_s": have / bridge_s,
                "bridge_messages_per_s": messages / bridge_s,
                "bridge_cpu_us_per_message": bridge_cpu_s / messages * 1e6,
                "ratio": (have / bridge_s) / (len(lines) / direct_s)}
    finally:
        broker.kill()
        influx.kill()


def run_shared(messages: int, work: Path, bridges: int, rounds: int) -> list[tuple[int, float]]:
    """(bridge processes, messages/s) drained by a share group of 1 and of `bridges`, alternately `rounds` times on the
    same servers: on a machine that runs other work too, a change of load then shows as a spread, not as a ratio."""
    broker = Mosquitto(work / "mosquitto").start()
    influx = InfluxDB1(work / "influx").start()
    try:
        payloads = [minute(k, 1_700_000_000_000) for k in range(messages)]
        return [(n, drain_shared(messages, payloads, work, broker, influx, n, f"r{r}n{n}"))
                for r in range(rounds) for n in (1, bridges)]
    finally:
        broker.kill()
        influx.kill()


def drain_shared(messages: int, payloads: list[dict], work: Path, broker: Mosquitto, influx: InfluxDB1,
                 n: int, name: str) -> float:
    database, group = name, name
    influx.create_database(database)
    cfg = work / f"{name}.toml"
    cfg.write_text(f'[mqtt]\nport = {broker.port}\n[influx]\nurl = "{influx.url}"\ndatabase = "{database}"\n'
                   f'[bridge]\nshare_group = "{group}"\nflush_interval_s = 0.05\n')

    def start(i: int) -> tuple[subprocess.Popen[bytes], Path]:
        log = work / f"bridge-{name}-{i}.log"
        proc = subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", "bridge", "--config", str(cfg),
                                 "--client-id", f"bench-{name}-{i}", "--spool", str(work / f"bridge-{name}-{i}.spool")],
                                stdout=open(log, "w"), stderr=subprocess.STDOUT)
        return proc, log

    def connected(log: Path) -> bool:
        return "bridge: connected to MQTT" in log.read_text()

    def stop(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(30)

    # Once, to create the members' sessions in the group; then the messages queue while none runs.
    procs = [start(i) for i in range(n)]
    while not all(connected(log) for _, log in procs):
        time.sleep(0.05)
    time.sleep(1.0)  # the SUBACKs
    stop(procs)
    pub = publisher(broker.port)
    for p in payloads:
        pub.publish(f"posture/{p['device']}/metrics", json.dumps(p), qos=1)
    pub.loop_stop()  # after the last PUBACK: paho's loop_stop waits for nothing, so wait for the queue below
    time.sleep(2.0)
    procs = [start(i) for i in range(n)]
    while not any(connected(log) for _, log in procs):
        time.sleep(0.01)
    start_s = time.perf_counter()
    while count_in(influx, database) < messages:
        time.sleep(0.05)
    drain_s = time.perf_counter() - start_s
    stop(procs)
    for i in range(n):  # the group's sessions ended: the next round's messages must not queue for them too
        end_session(broker.port, f"bench-{name}-{i}")
    return messages / drain_s


def end_session(port: int, client_id: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port, clean_start=True)  # no session expiry: it ends with this connection
    client.loop_start()
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


def count_in(influx: InfluxDB1, database: str) -> int:
    rows = influx.rows("SELECT count(worn_s) FROM posture_minute", database)
    return rows[0]["count"] if rows else 0


def start_bridge(config) -> tuple[Bridge, threading.Thread]:
    bridge = Bridge.open(config)
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    bridge.connected.wait(10)
    return bridge, thread


def thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds one thread of this process has used (Linux: /proc/self/task/<tid>/stat, 10 ms ticks); NaN
    elsewhere."""
    if thread is None or thread.native_id is None:
        return float("nan")
    try:
        fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def stop_bridge(bridge: Bridge, thread: threading.Thread) -> None:
    bridge.stop_event.set()
    thread.join(30)


def paho_alone(port: int, messages: int, protocol: str = "5") -> tuple[float, float]:
    """A bare paho client on its own persistent session, as the bridge's (manual acks), acknowledging each
    message as it arrives: (wall s, CPU s of this process) until `messages` arrived. 0 messages: only create the
    session, subscribed as the bridge is to metrics."""
    got = threading.Event()
    received = 0

    def on_message(client: mqtt.Client, _userdata, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        client.ack(message.mid, message.qos)
        received += 1
        if received >= messages:
            got.set()

    mqtt5 = protocol == "5"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-alone", manual_ack=True,
                         protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311, clean_session=None if mqtt5 else False)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("posture/+/metrics", qos=1)
    start, cpu_start = time.perf_counter(), time.process_time()
    if mqtt5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
        properties.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    if messages:
        got.wait(600)
    else:
        time.sleep(0.5)  # for the SUBACK
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    client.disconnect()
    client.loop_stop()
    return wall_s, cpu_s


def measure_latency(pub: mqtt.Client, influx: InfluxDB1, n: int = 500, rate: float = 50.0) -> list[float]:
    sent_ms: dict[int, int] = {}
    seen_ms: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rows = influx.rows("SELECT battery_pct FROM posture_status WHERE device_id = 'lat'", DB)
            now = int(time.time() * 1000)
            for r in rows:
                seen_ms.setdefault(r["time"], now)
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for _ in range(n):
        ts = int(time.time() * 1000)
        sent_ms[ts] = ts
        body = {"schema": 1, "kind": "status", "device": "lat", "ts": ts, "online": True, "battery_pct": 50}
        pub.publish("posture/lat/status", json.dumps(body), qos=1)
        time.sleep(1.0 / rate)
    deadline = time.monotonic() + 10
    while len(seen_ms) < len(sent_ms) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    poller.join(5)
    return [seen_ms[t] - t for t in sent_ms if t in seen_ms]


def points_table(r: dict, bridge_path: str) -> str:
    return (f"| path | points/s |\n|---|---|\n| line protocol POSTed straight to /write (batches of 5000) | "
            f"{r['direct_points_per_s']:,.0f} |\n| {bridge_path} | {r['bridge_points_per_s']:,.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="MQTT protocol of the bridge")
    parser.add_argument("--write", action="store_true", help=f"write the results into {DOC}")
    parser.add_argument("--bridges", type=int, default=1, help="N > 1: 1 and then N bridge processes on a shared "
                                                               "subscription, messages/s of each (nothing written)")
    parser.add_argument("--rounds", type=int, default=3, help="with --bridges: 1 and N alternately, this many times")
    parser.add_argument("--live-states", type=int, default=0,
                        help="S > 0: live messages carrying S states each instead (nothing written)")
    args = parser.parse_args()
    if args.live_states:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_live(args.messages, Path(tmp), args.live_states)
        print(r)
        print(points_table(r, f"MQTT (QoS 0) → bridge → /write, {args.live_states} states a message") +
              f"\n\nBridge / direct = {r['ratio']:.2f}; {r['messages']:,} messages, {r['stored']:,} of "
              f"{r['points']:,} points stored; {r['bridge_messages_per_s']:,.0f} messages/s; {os.cpu_count()} cores")
        return 0
    if args.bridges > 1:
        with tempfile.TemporaryDirectory() as tmp:
            rates = run_shared(args.messages, Path(tmp), args.bridges, args.rounds)
        for n in (1, args.bridges):
            got = [rate for m, rate in rates if m == n]
            print(f"{n} bridge process{'es' if n > 1 else ''} on a share group: median {np.median(got):,.0f} "
                  f"messages/s (runs: {', '.join(f'{r:,.0f}' for r in got)})")
        print(f"{args.messages:,} messages a run, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.messages, Path(tmp), args.protocol)
    print(r)
    print(f"bridge: {r['bridge_messages_per_s']:,.0f} messages/s, {r['bridge_cpu_us_per_message']:.1f} µs CPU a "
          f"message (paho's thread, which decodes and encodes: {r['paho_thread_cpu_us_per_message']:.1f}; the "
          f"bridge's, which writes and acknowledges: {r['bridge_thread_cpu_us_per_message']:.1f}); "
          f"paho alone (receive + PUBACK): {r['paho_alone_messages_per_s']:,.0f} messages/s, "
          f"{r['paho_alone_cpu_us_per_message']:.1f} µs CPU a message; MQTT {args.protocol}, {os.cpu_count()} cores")
    text = (points_table(r, "MQTT (QoS 1) → bridge → /write") + "\n\n"
            f"Bridge / direct = {r['ratio']:.2f} (goal ≥ 0.5); {r['messages']:,} one-point metrics messages. "
            f"Latency from publish to the point being queryable, {r['latency_n']} messages at 50/s: "
            f"p50 {r['latency_p50_ms']:.0f} ms, p99 {r['latency_p99_ms']:.0f} ms (InfluxDB polled every 20 ms).")
    print(text)
    if args.write:
        write_measurement(DOC, "bridge_throughput", text, f"benchmarks/bridge_throughput.py --messages {args.messages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
