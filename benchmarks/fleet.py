"""How many wearers one machine carries: N simulated gateways → Mosquitto → `posture bridge` + `posture alerts`.

    .venv/bin/python benchmarks/fleet.py --wearers 1000 [--seconds 60] [--warmup-s 30] [--live-hz 1]
    .venv/bin/python benchmarks/fleet.py --search [--live-hz 0] [--steps 100,300,1000,2000,5000,10000]
    .venv/bin/python benchmarks/fleet.py --scale 2 …   (2 bridges on a share group, 2 alert instances splitting the
                                                        devices: docs/scaling.md)

Everything real but the sensors: Mosquitto with the shipped durability settings
(deploy/mosquitto/mosquitto.conf.example: autosave_on_changes true, autosave_interval 1, set_tcp_nodelay true,
queue_qos0_messages false, max_queued_messages 1000000), InfluxDB 1.6.7 (posture/local_servers.py), one
`posture bridge` and one `posture alerts` as subprocesses with a config file, as deployed. The wearers are
simulated without BLE: each one a small state machine (sitting, standing and walking bouts; a slouch every ~20 min,
a third of them past the alert service's 60 s live delay; a trunk rotation every ~5 min; a battery that drains)
whose messages are built through the contract (contract.messages.payload, the dataclasses of pipeline.events), so
the bridge and the alert service take them as they take the gateway's. Per wearer, as `posture run` sends them
(docs/mqtt.md): a live state every 1/live_hz s (QoS 0, retained when its discrete part changed), a metrics minute a
minute (QoS 1; the wearers' minutes staggered across the minute), episode_start/slouch/rotation events (QoS 1),
the status on change and every 60 s (QoS 1, retained). Timestamps are now (host Unix time).

The generator: `--processes` publisher processes (multiprocessing), each driving its paho clients from one thread
with paho's external-loop calls (no network thread per client: on a 2-core machine the generator's own CPU is CPU the
system under test does not get). The wearers share `--connections` MQTT connections (a real fleet has one per
gateway; the broker's cost is per message, a connection costs it a keepalive a minute). Each wearer is stepped once a
second in one of SLOTS time slots, so the load is spread over the second; a step that runs late is reported as the
generator's lag, and its sent rate is reported against the target.

Backlog, over the window after the warm-up (sampled every POLL_S):
- metrics: published − stored in InfluxDB (count of posture_minute): its growth over the window;
- live: now − the newest stored live point of a few sample wearers (the bridge's lag);
- the alert service: arrival of its retained `<device>/today` − its ts (the end of the minute it answers, which the
  generator publishes at once): how far behind its one inbox (live, metrics, events, status) runs;
- the broker: $SYS/broker/store/messages/count (messages it holds: retained ones and queues for the sessions).
Sustained = the generator kept its schedule, the metrics backlog and the broker's store did not grow, the live lag
and the alert service's lag stayed under LAG_LIMIT_S. CPU % per process (100 % = one core) over the window.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from process_cpu import cpu_s

from contract.messages import Status, payload, topic
from pipeline.events import EpisodeStart, LiveState, MinuteMetrics, RotationExcursion, SlouchEpisode
from posture.local_servers import InfluxDB1, Mosquitto

ROOT = Path(__file__).resolve().parents[1]
DB = "posture"
PREFIX = "posture"
SLOTS = 10  # a second is cut into this many slots; a wearer steps in its own, so the load is spread over the second
POLL_S = 5.0  # InfluxDB, $SYS and CPU sampled this often
LAG_LIMIT_S = 5.0  # live lag and the alert service's lag bounded by this: "sustained"
SAMPLE_WEARERS = 4  # whose newest live point is asked for (one query each: N series would make it heavy)
SLOUCH_DWELL_S = 5.0  # the pipeline's slouch_dwell_s: an episode_start this long after a slouch began
# Counters each publisher process keeps in the shared array, in this order.
COUNTERS = ("live", "metrics", "events", "status", "retained", "steps", "late_steps", "max_late_s", "publish_errors",
            "end_s")
DISCOVERY_WAIT_S = 120.0
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
DISCOVERY_QUIET_S = 5.0
# Nudges go out at any hour here: the default quiet hours (22:00-07:00 UTC) would hold back every one of them at
# the hours this runs, and sending them is part of the alert service's work in the daytime; unpaced, as the figures in
# docs/benchmarks.md were measured (a run of minutes would send each wearer two nudges and hold the rest).
RULES = '[limits]\nquiet_hours = ""\npace = false\n'


# --- one wearer ------------------------------------------------------------------------------------------------

class Wearer:
    """One simulated wearer's gateway output, stepped once a second: plausible, not a model of anyone."""

    def __init__(self, index: int, n_total: int, start_s: float, seed: int) -> None:
        self.device = f"fleet{index:05d}"
        self.rng = rng = random.Random(seed * 1_000_003 + index)
        # Minutes end at this wearer's own second of the minute: the fleet's metrics spread over the minute.
        self.minute_offset_s = float(index * 60 // max(n_total, 1))
        self.minute_start_s = (start_s - self.minute_offset_s) // 60 * 60 + self.minute_offset_s
        # A gateway sends a device's status (with the sensor's name) before its first live state: its first status
        # check is at once (gateway/service.py). Later than that, the alert service would announce the device to Home
        # Assistant under its id, then again under its name.
        self.first_status_s = start_s
        self.activity = "sitting"
        self.sitting_since_s: float | None = start_s - rng.uniform(0, 1800)
        self.activity_until_s = start_s + rng.expovariate(1 / 900)
        self.flexion_base_deg = rng.uniform(-2, 8)
        self.slouch_start_s: float | None = None
        self.slouch_end_s = 0.0
        self.slouch_confirmed = False
        self.slouch_flexion: list[float] = []
        self.next_slouch_s = start_s + rng.expovariate(1 / 1200)
        self.next_rotation_s = start_s + rng.expovariate(1 / 300)
        self.battery_pct = rng.randint(30, 100)
        self.lost_samples = 0
        self.status_sent: tuple[int, float] | None = None  # battery, when
        self.live_key: tuple[object, ...] | None = None
        self.live_credit = rng.random()  # live_hz below 1: a state every 1/live_hz steps, wearers out of phase
        self._new_minute()

    def _new_minute(self) -> None:
        self.m_worn_s = self.m_sitting_s = self.m_standing_s = self.m_walking_s = self.m_slouch_s = 0.0
        self.m_flexion: list[float] = []
        self.m_lateral: list[float] = []
        self.m_rotations: dict[str, list[float]] = {"left": [], "right": []}

    def step(self, now_s: float, live_hz: float) -> list[tuple[str, bytes, int, bool]]:
        """This second's messages: (topic, payload, qos, retain)."""
        rng, out = self.rng, []
        # What the wearer does: sitting bouts of ~15 min, standing or walking for ~1.5 min between.
        if now_s >= self.activity_until_s:
            if self.activity == "sitting":
                self.activity = "walking" if rng.random() < 0.5 else "standing"
                self.sitting_since_s = None
                self.activity_until_s = now_s + rng.expovariate(1 / 90)
            else:
                self.activity, self.sitting_since_s = "sitting", now_s
                self.activity_until_s = now_s + rng.expovariate(1 / 900)
        # A slouch (sitting only) every ~20 min: two thirds short, a third past the live nudge's 60 s delay.
        if self.slouch_start_s is None and self.activity == "sitting" and now_s >= self.next_slouch_s:
            self.slouch_start_s, self.slouch_confirmed, self.slouch_flexion = now_s, False, []
            self.slouch_end_s = now_s + (rng.uniform(65, 180) if rng.random() < 1 / 3 else rng.uniform(8, 50))
        slouching = self.slouch_start_s is not None
        flexion = self.flexion_base_deg + (20.0 if slouching else 0.0) + rng.gauss(0, 2)
        lateral, rotation = rng.gauss(0, 2), rng.gauss(0, 5)
        if self.slouch_start_s is not None:
            self.slouch_flexion.append(flexion)
            if not self.slouch_confirmed and now_s - self.slouch_start_s >= SLOUCH_DWELL_S:
                self.slouch_confirmed = True
                out.append(self._event(EpisodeStart("slouch", self.slouch_start_s, SLOUCH_DWELL_S)))
            if now_s >= self.slouch_end_s or self.activity != "sitting":
                if self.slouch_confirmed:
                    f = self.slouch_flexion
                    out.append(self._event(SlouchEpisode(self.slouch_start_s, now_s, round(max(f), 2),
                                                         round(sum(f) / len(f), 2))))
                self.slouch_start_s, self.slouch_confirmed = None, False
                self.next_slouch_s = now_s + rng.expovariate(1 / 1200)
        if now_s >= self.next_rotation_s:  # an out-and-back trunk rotation every ~5 min, more to the right
            side = "right" if rng.random() < 0.6 else "left"
            peak = round(rng.uniform(18, 45), 2)
            self.m_rotations[side].append(peak)
            out.append(self._event(RotationExcursion(now_s - 1.6, now_s, side, peak)))
            self.next_rotation_s = now_s + rng.expovariate(1 / 300)
        # This second in the minute's sums.
        self.m_worn_s += 1.0
        self.m_sitting_s += self.activity == "sitting"
        self.m_standing_s += self.activity == "standing"
        self.m_walking_s += self.activity == "walking"
        self.m_slouch_s += self.slouch_confirmed
        self.m_flexion.append(flexion)
        self.m_lateral.append(lateral)
        self.lost_samples += rng.random() < 0.05
        if rng.random() < 1 / 1200:  # a percent every ~20 min: a status at once
            self.battery_pct = max(self.battery_pct - 1, 5)
        if self._status_due(now_s):
            # The first at once, the heartbeats after it spread over the minute (gateways start at different times).
            self.status_sent = self.battery_pct, now_s - (rng.uniform(0, 60) if self.status_sent is None else 0.0)
            status = Status(online=True, battery_pct=self.battery_pct, link_quality_pct=round(rng.uniform(97, 100), 1),
                            lost_samples=self.lost_samples, sensor_name=self.device)
            out.append((topic(PREFIX, self.device, "status"),
                        json.dumps(payload(self.device, status, now_s=now_s)).encode(), 1, True))
        # The live state, as publish_live sends it: retained when its discrete part changed.
        self.live_credit += live_hz
        while self.live_credit >= 1.0:
            self.live_credit -= 1.0
            state = LiveState(now_s, "calibrated", round(flexion, 2), round(lateral, 2), round(rotation, 2),
                              self.activity, self.slouch_start_s if self.slouch_confirmed else None, None, None,
                              self.sitting_since_s)
            key = (state.activity, state.slouching_since_s, state.sitting_since_s)
            retain, self.live_key = key != self.live_key, key
            out.append((topic(PREFIX, self.device, "live"), json.dumps(payload(self.device, state)).encode(), 0,
                        retain))
        if now_s >= self.minute_start_s + 60:
            out.append(self._minute())
        return out

    def _status_due(self, now_s: float) -> bool:
        if self.status_sent is None:
            return now_s >= self.first_status_s
        battery, sent_s = self.status_sent
        return battery != self.battery_pct or now_s - sent_s >= 60

    def _event(self, event: Any) -> tuple[str, bytes, int, bool]:
        return topic(PREFIX, self.device, event.kind), json.dumps(payload(self.device, event)).encode(), 1, False

    def _minute(self) -> tuple[str, bytes, int, bool]:
        rot = self.m_rotations

        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 2) if values else None

        metrics = MinuteMetrics(
            self.minute_start_s, worn_s=self.m_worn_s, sitting_s=self.m_sitting_s, standing_s=self.m_standing_s,
            walking_s=self.m_walking_s, slouch_s=self.m_slouch_s, flexion_mean_deg=mean(self.m_flexion),
            lateral_mean_deg=mean(self.m_lateral), rotations_left=len(rot["left"]), rotations_right=len(rot["right"]),
            rotation_left_peak_mean_deg=mean(rot["left"]), rotation_right_peak_mean_deg=mean(rot["right"]),
            rotation_left_peak_max_deg=max(rot["left"], default=None),
            rotation_right_peak_max_deg=max(rot["right"], default=None),
            rotation_left_cumulative_deg=round(sum(rot["left"]), 2),
            rotation_right_cumulative_deg=round(sum(rot["right"]), 2), sitting_since_s=self.sitting_since_s,
            lost_samples=0)
        self.minute_start_s += 60
        self._new_minute()
        return topic(PREFIX, self.device, "metrics"), json.dumps(payload(self.device, metrics)).encode(), 1, False


# --- a publisher process ---------------------------------------------------------------------------------------

def _no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    # As the gateway's endpoint (service_io/mqtt.py): a small packet leaves at once, not after Nagle's wait.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def publisher(proc: int, indices: list[int], n_total: int, port: int, live_hz: float, connections: int,
              start_s: float, end_s: float, shared: Any, seed: int) -> None:
    """One publisher process: its wearers, its connections, until end_s; counters into shared[proc]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us at end_s; Ctrl-C is the parent's
    base = proc * len(COUNTERS)
    clients = []
    for k in range(connections):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{proc}-{k}", protocol=mqtt.MQTTv5)
        c.on_socket_open = _no_delay
        c.max_inflight_messages_set(1000)  # shared by many wearers' QoS 1 messages
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port, keepalive=60)
        clients.append(c)
    by_sock: dict[Any, mqtt.Client] = {c.socket(): c for c in clients}

    def service(timeout_s: float) -> None:
        """One pass of paho's external loop over every connection: read (PUBACKs, CONNACK), write what waits."""
        writers = [s for s, c in by_sock.items() if c.want_write()]
        readable, writable, _ = select.select(list(by_sock), writers, [], max(timeout_s, 0.0))
        for s in readable:
            by_sock[s].loop_read()
        for s in writable:
            by_sock[s].loop_write()

    deadline = time.monotonic() + 30
    while not all(c.is_connected() for c in clients):
        if time.monotonic() > deadline:
            raise SystemExit(f"publisher {proc}: not connected to the broker in 30 s")
        service(0.1)
    wearers = [Wearer(i, n_total, start_s, seed) for i in indices]
    slots: list[list[tuple[Wearer, mqtt.Client]]] = [[] for _ in range(SLOTS)]
    for w, i in zip(wearers, indices):
        slots[i % SLOTS].append((w, clients[i % connections]))
    kinds = {"live": 0, "metrics": 1, "events": 2, "status": 3}
    tick, last_misc = 0, time.monotonic()
    end_at = base + COUNTERS.index("end_s")  # set by the parent: end_s, later moved on
    while True:
        slot_s = start_s + tick / SLOTS
        now = time.time()
        if slot_s >= shared[end_at]:  # the parent moves the end when the warm-up took longer
            break
        if now < slot_s:
            service(slot_s - now)
            continue
        late_s = now - slot_s
        shared[base + 7] = max(shared[base + 7], late_s)
        shared[base + 6] += late_s > 1.0 / SLOTS
        for w, client in slots[tick % SLOTS]:
            for t, body, qos, retain in w.step(now, live_hz):
                info = client.publish(t, body, qos=qos, retain=retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    shared[base + 8] += 1
                    continue
                shared[base + kinds[t.rsplit("/", 1)[1]]] += 1
                shared[base + 4] += retain
        shared[base + 5] += len(slots[tick % SLOTS])
        tick += 1
        service(0.0)
        if time.monotonic() - last_misc >= 1.0:  # keepalive pings
            for c in clients:
                c.loop_misc()
            last_misc = time.monotonic()
    # What is still queued in paho goes out before the connections close (QoS 1 waits for its PUBACK).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(c.want_write() or c._out_messages for c in clients):
        service(0.05)
    for c in clients:
        c.disconnect()  # written at once: no network thread (paho writes in the caller's thread then)


# --- the servers and the services ------------------------------------------------------------------------------

class Broker(Mosquitto):
    """Mosquitto as deploy/mosquitto/mosquitto.conf.example sets it (persistence and queues; no accounts or TLS),
    with $SYS every 5 s for the store's count. save_each_change False: saved once a second instead (as the tests'
    broker), to show what the shipped durability costs."""

    def __init__(self, workdir: Path, save_each_change: bool = True) -> None:
        super().__init__(workdir)
        self.save_each_change = save_each_change

    def config(self) -> str:
        return super().config() + ("autosave_on_changes true\n" if self.save_each_change else "") + (
            "queue_qos0_messages false\npersistent_client_expiration 14d\nsys_interval 5\n")


@dataclass
class Services:
    work: Path
    broker: Broker
    influx: InfluxDB1
    scale: int = 1  # bridges (one share group) and alert instances (as many partitions)
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)

    def start(self) -> None:
        self.broker.start()
        self.influx.start()
        self.influx.create_database(DB)
        w = self.work
        (w / "rules.toml").write_text(RULES)
        sections: dict[str, dict[str, Any]] = {
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port},
            "influx": {"url": self.influx.url, "database": DB},
            "bridge": {"spool_path": str(w / "bridge.spool"), "flush_interval_s": 0.2,
                       **({"share_group": "fleet"} if self.scale > 1 else {})},
            "alerts": {"state_path": str(w / "alerts.db"), "rules_path": str(w / "rules.toml"), "timezone": "UTC",
                       "partitions": self.scale},
        }
        (w / "posture.toml").write_text("\n".join(
            f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            for name, values in sections.items()))
        for name in ("bridge", "alerts"):
            self.procs[name] = []
            for k in range(self.scale):
                own = ([] if self.scale == 1 else ["--client-id", f"posture-bridge-{k}", "--spool",
                                                   str(w / f"bridge-{k}.spool")] if name == "bridge" else
                       ["--instance", f"i{k}"])
                self.procs[name].append(subprocess.Popen(
                    # setpriv --pdeathsig: a benchmark killed hard must not leave its services behind (as
                    # local_servers)
                    [*DIE_WITH_PARENT, sys.executable, "-m", "posture.cli", "-v", name, "--config",
                     str(w / "posture.toml"), *own], cwd=ROOT,
                    stdout=open(w / f"{name}-{k}.log", "wb"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        for name in ("bridge", "alerts"):
            while not self.started(name):
                if time.monotonic() > deadline or any(proc.poll() is not None for proc in self.procs[name]):
                    raise SystemExit(f"posture {name} did not start:\n{self.log(name)[-2000:]}")
                time.sleep(0.1)

    def started(self, name: str) -> bool:
        logs = [self.log(name, k) for k in range(self.scale)]
        if name == "alerts" and self.scale > 1:  # every partition run by one of them: its session exists
            said = [re.findall(r"running partitions (\S+) of", text) for text in logs]
            return all(said) and sorted(k for s in said for k in s[-1].split(",") if k != "none") == \
                [str(k) for k in range(self.scale)]
        return all("connected to MQTT" in text for text in logs)

    def log(self, name: str, k: int = 0) -> str:
        path = self.work / f"{name}-{k}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_service(self, name: str) -> dict[str, Any]:
        """SIGTERM to each process; the stats JSON they print on stop, summed."""
        total: dict[str, Any] = {}
        for proc in self.procs[name]:
            proc.send_signal(signal.SIGTERM)
        for k, proc in enumerate(self.procs[name]):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                return {"error": "did not stop in 60 s"}
            stats = next((json.loads(text) for text in reversed(self.log(name, k).splitlines())
                          if text.startswith("{")), None)
            if stats is None:
                return {"error": "no stats line"}
            for key, value in stats.items():
                if isinstance(value, dict):
                    into = total.setdefault(key, {})
                    for sub, n in value.items():
                        into[sub] = into.get(sub, 0) + n
                elif isinstance(value, (int, float)):
                    total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        for proc in (p for procs in self.procs.values() for p in procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.broker.kill()
        self.influx.kill()


# --- watching: MQTT ($SYS, today, alerts, dead letters), InfluxDB, CPU ------------------------------------------

class Watcher:
    """Subscribes as a phone and an operator would: the broker's store count, the alert service's `today` (its lag),
    the nudges and the dead letters."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.store_count: list[tuple[float, int]] = []
        # Retained ones among them: a wearer's first `today` or live state adds one, which is no backlog.
        self.retained_count: list[tuple[float, int]] = []
        self.today_lag_s: list[tuple[float, float]] = []  # (arrival, lag)
        self.alerts: dict[str, int] = {}
        self.dead_letters = 0
        self.dead_letter_sample: list[str] = []
        self.errors: list[str] = []
        self.today_total = 0
        self.today_ts: dict[str, int] = {}  # device → the newest minute's end its `today` told
        self.discovery = 0  # Home Assistant discovery configs the alert service sent (10 a wearer, retained)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-watcher", protocol=mqtt.MQTTv5)
        c.on_connect = lambda client, *_: client.subscribe(
            [("$SYS/broker/store/messages/count", 0), ("$SYS/broker/retained messages/count", 0),
             (f"{PREFIX}/+/today", 0), (f"{PREFIX}/+/alerts", 0),
             (f"{PREFIX}/_deadletter", 0), ("homeassistant/#", 0)])
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._take(msg)
        except Exception as exc:  # an exception here would end paho's thread, and the watching with it
            with self.lock:
                self.errors.append(f"{msg.topic}: {exc!r}")

    def _take(self, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        t = msg.topic
        with self.lock:
            if t.startswith("homeassistant/"):
                self.discovery += 1
            elif t == "$SYS/broker/retained messages/count":
                self.retained_count.append((now, int(msg.payload)))
            elif t.startswith("$SYS"):
                self.store_count.append((now, int(msg.payload)))
            elif t.endswith("/today"):
                self.today_total += 1
                # The service sends `today` again whenever an event or a live change touched the device: only the
                # first one for a minute answers that minute.
                doc = json.loads(msg.payload)
                if doc["ts"] > self.today_ts.get(doc["device"], 0):
                    self.today_ts[doc["device"]] = doc["ts"]
                    self.today_lag_s.append((now, now - doc["ts"] / 1000))
            elif t.endswith("/_deadletter"):
                self.dead_letters += 1
                if len(self.dead_letter_sample) < 3:
                    self.dead_letter_sample.append(msg.payload[:300].decode(errors="replace"))
            elif t.endswith("/alerts"):
                kind = json.loads(msg.payload).get("kind", "?")
                self.alerts[kind] = self.alerts.get(kind, 0) + 1

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stored_metrics(influx: InfluxDB1) -> int:
    rows = influx.rows("SELECT count(worn_s) FROM posture_minute", DB)
    return int(rows[0]["count"]) if rows else 0


def live_lag_s(influx: InfluxDB1, devices: list[str]) -> float:
    """Now − the newest stored live point, the worst of the sample wearers (inf: none stored)."""
    worst = 0.0
    for device in devices:
        rows = influx.rows(f"SELECT last(flexion_deg) FROM \"live\".posture_live WHERE device_id = '{device}'", DB)
        worst = max(worst, time.time() - rows[0]["time"] / 1000 if rows else math.inf)
    return worst


def cpu_by_name(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    return {name: cpu_s(ps) for name, ps in procs.items()}


def counters(shared: Any, processes: int) -> dict[str, float]:
    out = {name: 0.0 for name in COUNTERS}
    for p in range(processes):
        for k, name in enumerate(COUNTERS):
            v = shared[p * len(COUNTERS) + k]
            out[name] = max(out[name], v) if name in ("max_late_s", "end_s") else out[name] + v
    return out


# --- one run ---------------------------------------------------------------------------------------------------

def run(wearers: int, seconds: float, warmup_s: float, live_hz: float, processes: int, connections: int,
        work: Path, seed: int = 1, save_each_change: bool = True, scale: int = 1) -> dict[str, Any]:
    if work.exists():  # a fresh broker and database each run: an earlier run's points would count as stored
        shutil.rmtree(work)
    work.mkdir(parents=True)
    svc = Services(work, Broker(work / "mosquitto", save_each_change), InfluxDB1(work / "influx"), scale)
    try:
        svc.start()
        r = _measure(svc, wearers, seconds, warmup_s, live_hz, processes, connections, seed)
        r["broker_saves"] = "each change" if save_each_change else "every 1 s"
        r["scale"] = scale
        return r
    finally:
        svc.close()


def _measure(svc: Services, wearers: int, seconds: float, warmup_s: float, live_hz: float, processes: int,
             connections: int, seed: int) -> dict[str, Any]:
    watcher = Watcher(svc.broker.port)
    processes = max(1, min(processes, wearers))
    per_proc_conns = max(1, min(connections // processes, math.ceil(wearers / processes)))
    shared = mp.Array("d", processes * len(COUNTERS), lock=False)
    start_s = math.ceil(time.time()) + 2.0  # room for the processes to import and connect
    end_s = start_s + warmup_s + seconds
    for p in range(processes):  # running until the window, which starts when the warm-up is over, has ended
        shared[p * len(COUNTERS) + COUNTERS.index("end_s")] = math.inf
    ctx = mp.get_context("fork")
    gens = [ctx.Process(target=publisher, args=(p, list(range(p, wearers, processes)), wearers, svc.broker.port,
                                                live_hz, per_proc_conns, start_s, end_s, shared, seed), daemon=True)
            for p in range(processes)]
    for g in gens:
        g.start()
    assert svc.broker.proc is not None and svc.influx.proc is not None
    procs = {"bridge": [psutil.Process(p.pid) for p in svc.procs["bridge"]],
             "alerts": [psutil.Process(p.pid) for p in svc.procs["alerts"]],
             "mosquitto": [psutil.Process(svc.broker.proc.pid)], "influxd": [psutil.Process(svc.influx.proc.pid)],
             "generator": [psutil.Process(g.pid) for g in gens if g.pid is not None]}
    samples = [f"fleet{i:05d}" for i in sorted({0, wearers // 3, 2 * wearers // 3, wearers - 1})][:SAMPLE_WEARERS]
    window_start_s = start_s + warmup_s
    time.sleep(max(0.0, window_start_s - time.time()))
    # The alert service announces each new wearer to Home Assistant (10 retained configs; the wearer's first status,
    # sent before its first live state, has told it the name): a burst at start-up, not the steady state. The window
    # waits for it to end (at least 10 configs a wearer and none new for DISCOVERY_QUIET_S), up to DISCOVERY_WAIT_S.
    waited_until = time.time() + DISCOVERY_WAIT_S
    seen, quiet_since = -1, time.time()
    while time.time() < waited_until:
        if watcher.discovery != seen:
            seen, quiet_since = watcher.discovery, time.time()
        elif seen >= 10 * wearers and time.time() - quiet_since >= DISCOVERY_QUIET_S:
            break
        time.sleep(0.5)
    discovery_at_window = watcher.discovery
    end_s = time.time() + seconds
    for p in range(processes):  # the generator runs on to the window's new end
        shared[p * len(COUNTERS) + COUNTERS.index("end_s")] = end_s
    # The window: backlog and lag every POLL_S; CPU and counters at its two ends.
    cpu0, wall0, machine0 = cpu_by_name(procs), time.time(), psutil.cpu_times()
    broker_io0 = procs["mosquitto"][0].io_counters().write_bytes
    for p in range(processes):  # the generator's lateness from the window's start on, not its start-up's
        shared[p * len(COUNTERS) + COUNTERS.index("max_late_s")] = 0.0
    c0 = counters(shared, processes)
    rss0 = {n: sum(p.memory_info().rss for p in procs[n]) for n in ("bridge", "alerts")}
    backlog: list[tuple[float, float]] = []
    live_lags: list[float] = []
    while True:
        t = time.time()
        pub = counters(shared, processes)["metrics"]
        stored = stored_metrics(svc.influx)
        backlog.append((t, pub - stored))
        if os.environ.get("FLEET_DEBUG"):
            print("debug", round(t - start_s, 1), pub, stored, flush=True)
        live_lags.append(live_lag_s(svc.influx, samples) if live_hz > 0 else float("nan"))
        if t + POLL_S > end_s - 0.5:
            break
        time.sleep(max(0.0, t + POLL_S - time.time()))
    cpu1, wall1, machine1 = cpu_by_name(procs), time.time(), psutil.cpu_times()
    broker_io1 = procs["mosquitto"][0].io_counters().write_bytes
    rss1 = {n: sum(p.memory_info().rss for p in procs[n]) for n in ("bridge", "alerts")}
    c1 = counters(shared, processes)
    window_s = wall1 - wall0
    for g in gens:
        g.join(30)
        if g.is_alive():
            g.kill()
    # Settle: what was sent by the end is stored a moment later if the bridge kept up.
    time.sleep(3.0)
    final = counters(shared, processes)
    stored_end = stored_metrics(svc.influx)
    live_window = svc.influx.rows(
        f"SELECT count(flexion_deg) FROM \"live\".posture_live WHERE time >= {int(wall0 * 1e9)} "
        f"AND time < {int(wall1 * 1e9)}", DB) if live_hz > 0 else []
    alerts_stats = svc.stop_service("alerts")
    bridge_stats = svc.stop_service("bridge")
    watcher.stop()
    with watcher.lock:
        # $SYS repeats a value only when it changed: the last one before the window is its value at the start.
        store = _in_window(watcher.store_count, wall0, wall1)
        retained = _in_window(watcher.retained_count, wall0, wall1)
        today = [lag for t, lag in watcher.today_lag_s if wall0 <= t <= wall1]
        alerts_seen, dead = dict(watcher.alerts), watcher.dead_letters
        dead_sample = list(watcher.dead_letter_sample)
        watch_errors, today_total = watcher.errors[:3], watcher.today_total
        discovery = watcher.discovery
    busy = [(getattr(machine1, f) - getattr(machine0, f)) for f in machine0._fields]
    idle = (machine1.idle - machine0.idle) + (getattr(machine1, "iowait", 0) - getattr(machine0, "iowait", 0))
    sent = {k: c1[k] - c0[k] for k in ("live", "metrics", "events", "status", "retained")}
    messages = sum(sent[k] for k in ("live", "metrics", "events", "status"))
    target_steps = wearers * window_s
    r: dict[str, Any] = {
        "wearers": wearers, "live_hz": live_hz, "window_s": round(window_s, 1), "warmup_s": warmup_s,
        "processes": processes, "connections": per_proc_conns * processes,
        "sent_per_s": {k: round(v / window_s, 1) for k, v in sent.items()},
        "messages_per_s": round(messages / window_s, 1),
        "live_target_per_s": wearers * live_hz,
        "steps_ratio": round((c1["steps"] - c0["steps"]) / target_steps, 4) if target_steps else 1.0,
        "generator_late_steps": int(c1["late_steps"] - c0["late_steps"]), "generator_max_late_s":
            round(c1["max_late_s"], 3), "publish_errors": int(final["publish_errors"]),
        "metrics_backlog_start": backlog[0][1], "metrics_backlog_end": backlog[-1][1],
        "metrics_backlog_max": max(b for _, b in backlog),
        "metrics_published": int(final["metrics"]), "metrics_stored": stored_end,
        "live_lag_max_s": round(max(live_lags), 2) if live_hz > 0 else None,
        "live_lag_median_s": round(float(np.median(live_lags)), 2) if live_hz > 0 else None,
        "live_stored_in_window": int(live_window[0]["count"]) if live_window else 0,
        "live_sent_in_window": int(sent["live"]),
        "today_lag_p50_s": round(float(np.percentile(today, 50)), 2) if today else None,
        "today_lag_p95_s": round(float(np.percentile(today, 95)), 2) if today else None,
        "today_lag_max_s": round(max(today), 2) if today else None, "today_n": len(today),
        "broker_store_start": store[0][1] if store else None, "broker_store_end": store[-1][1] if store else None,
        "broker_retained_start": retained[0][1] if retained else None,
        "broker_retained_end": retained[-1][1] if retained else None,
        "broker_write_mb_per_s": round((broker_io1 - broker_io0) / window_s / 1e6, 2),
        "rss_growth_mb": {n: round((rss1[n] - rss0[n]) / 1e6, 1) for n in rss0},
        "cpu_pct": {n: round(100 * (cpu1[n] - cpu0[n]) / window_s, 1) for n in cpu0},
        "machine_busy_pct": round(100 * (1 - idle / sum(busy)) * (os.cpu_count() or 1), 1),
        "discovery_wait_s": round(wall0 - window_start_s, 1), "discovery_at_window": discovery_at_window,
        "alerts_seen": alerts_seen, "watcher_errors": watch_errors, "today_total": today_total,
        "discovery_configs": discovery,
        "dead_letters": dead, "dead_letter_sample": dead_sample,
        "bridge_stats": bridge_stats, "alerts_stats": alerts_stats,
    }
    r["verdict"], r["why"] = verdict(r)
    return r


def _in_window(values: list[tuple[float, int]], start_s: float, end_s: float) -> list[tuple[float, int]]:
    """The values in force from start_s to end_s: the last before start_s (as at start_s), then those within."""
    before = [(start_s, n) for t, n in values if t < start_s][-1:]
    return before + [(t, n) for t, n in values if start_s <= t <= end_s]


def verdict(r: dict[str, Any]) -> tuple[str, str]:
    """sustained / not sustained / generator-bound, and why."""
    why = []
    if r["steps_ratio"] < 0.98 or r["generator_max_late_s"] > 1.0:
        return "generator-bound", (f"generator ran {r['steps_ratio']:.1%} of its steps, up to "
                                   f"{r['generator_max_late_s']} s late")
    metrics_per_window = r["wearers"] * r["window_s"] / 60
    growth = r["metrics_backlog_end"] - r["metrics_backlog_start"]
    if growth > max(20.0, 0.02 * metrics_per_window):
        why.append(f"metrics backlog grew by {growth:.0f}")
    if r["metrics_published"] - r["metrics_stored"] > max(20.0, 0.02 * metrics_per_window):
        why.append(f"{r['metrics_published'] - r['metrics_stored']} metrics not stored 3 s after the end")
    if r["live_lag_max_s"] is not None and r["live_lag_max_s"] >= LAG_LIMIT_S:
        why.append(f"live lag up to {r['live_lag_max_s']} s")
    if r["today_lag_p95_s"] is None or r["today_lag_p95_s"] >= LAG_LIMIT_S:
        why.append(f"alert service lag p95 {r['today_lag_p95_s']} s")
    if r["broker_store_start"] is not None and r["broker_store_end"] is not None:
        grew = r["broker_store_end"] - r["broker_store_start"]
        if r["broker_retained_start"] is not None and r["broker_retained_end"] is not None:
            grew -= r["broker_retained_end"] - r["broker_retained_start"]
        if grew > max(100.0, 0.02 * r["wearers"]):
            why.append(f"broker store (not retained) grew by {grew}")
    if r["discovery_at_window"] < r["discovery_configs"]:
        why.append(f"Home Assistant discovery not done after {r['warmup_s'] + r['discovery_wait_s']:.0f} s "
                   f"({r['discovery_at_window']} of {r['discovery_configs']} configs)")
    bad = sum(r["bridge_stats"].get("malformed", {}).values()) + sum(r["alerts_stats"].get("malformed", {}).values())
    if bad or r["dead_letters"]:
        why.append(f"{bad} malformed, {r['dead_letters']} dead letters")
    return ("not sustained", "; ".join(why)) if why else ("sustained", "")


def table(results: list[dict[str, Any]]) -> str:
    head = ("| wearers | live Hz | msg/s sent (live target) | steps run | metrics backlog start→end "
            "| live lag med/max s | live stored/sent | alerts lag p50/p95 s | broker store (retained) "
            "| broker MB/s written | CPU % bridge | alerts | mosquitto | influxd | generator | machine | verdict |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cpu = r["cpu_pct"]
        lag = f"{r['live_lag_median_s']}/{r['live_lag_max_s']}" if r["live_hz"] else "–"
        live = f"{r['live_stored_in_window']}/{r['live_sent_in_window']}" if r["live_hz"] else "–"
        lines.append(
            f"| {r['wearers']} | {r['live_hz']:g} | {r['messages_per_s']:.0f} ({r['live_target_per_s']:.0f}) | "
            f"{r['steps_ratio']:.1%} | {r['metrics_backlog_start']:.0f}→{r['metrics_backlog_end']:.0f} | {lag} | "
            f"{live} | {r['today_lag_p50_s']}/{r['today_lag_p95_s']} | {r['broker_store_start']}→"
            f"{r['broker_store_end']} ({r.get('broker_retained_start')}→{r.get('broker_retained_end')}) | "
            f"{r['broker_write_mb_per_s']} | {cpu['bridge']} | {cpu['alerts']} | "
            f"{cpu['mosquitto']} | {cpu['influxd']} | {cpu['generator']} | {r['machine_busy_pct']} | "
            f"{r['verdict']}{': ' + r['why'] if r['why'] else ''} |")
    return "\n".join(lines)


def search(steps: list[int], bisect_rounds: int, run_one: Any) -> tuple[int | None, list[dict[str, Any]]]:
    """Up the steps until one is not sustained, then bisect between the last good and the first bad."""
    results: list[dict[str, Any]] = []
    good: int | None = None
    bad: int | None = None
    for n in steps:
        r = run_one(n)
        results.append(r)
        if r["verdict"] == "sustained":
            good = n
        else:
            bad = n
            break
    for _ in range(bisect_rounds if bad is not None and good is not None else 0):
        assert good is not None and bad is not None
        if bad - good <= max(50, good // 10):
            break
        n = int(round((good + bad) / 2, -1 if bad - good < 1000 else -2))
        r = run_one(n)
        results.append(r)
        good, bad = (n, bad) if r["verdict"] == "sustained" else (good, n)
    return good, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wearers", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60.0, help="the measured window, after the warm-up")
    ap.add_argument("--warmup-s", type=float, default=30.0)
    ap.add_argument("--live-hz", type=float, default=1.0, help="live states a second per wearer; 0: none")
    ap.add_argument("--processes", type=int, default=2, help="publisher processes")
    ap.add_argument("--connections", type=int, default=64, help="MQTT connections the wearers share, in all")
    ap.add_argument("--broker-save", choices=("each-change", "every-1s"), default="each-change",
                    help="Mosquitto's saves: after every change (the shipped config) or once a second")
    ap.add_argument("--scale", type=int, default=1,
                    help="bridges on one share group and alert instances splitting the devices (docs/scaling.md)")
    ap.add_argument("--search", action="store_true", help="step the number of wearers up, then bisect")
    ap.add_argument("--steps", default="100,300,1000,2000,5000,10000,20000")
    ap.add_argument("--bisect", type=int, default=2, help="bisection rounds after the steps")
    ap.add_argument("--workdir", help="keep logs and data here (default: a temp dir, removed)")
    ap.add_argument("--json", help="append each run's result as a JSON line to this file")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []

    def run_one(n: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
            work = (Path(args.workdir) / f"n{n}-hz{args.live_hz:g}-{args.broker_save}-x{args.scale}" if args.workdir
                    else Path(tmp))
            r = run(n, args.seconds, args.warmup_s, args.live_hz, args.processes, args.connections, work,
                    save_each_change=args.broker_save == "each-change", scale=args.scale)
        results.append(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
        print(json.dumps({k: r[k] for k in ("wearers", "verdict", "why", "cpu_pct", "bridge_stats", "alerts_stats",
                                            "alerts_seen", "dead_letter_sample", "watcher_errors", "today_total",
                                            "today_n", "discovery_configs")}), flush=True)
        print(table([r]), flush=True)
        return r

    if args.search:
        good, _ = search([int(s) for s in args.steps.split(",")], args.bisect, run_one)
        print(f"\nlive_hz {args.live_hz:g}: largest sustained N = {good}\n")
        print(table(sorted(results, key=lambda r: r["wearers"])))
    else:
        run_one(args.wearers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
