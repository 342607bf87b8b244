"""Soak and chaos run: the real chain twice side by side, faults injected into one, the InfluxDBs compared.

    .venv/bin/python benchmarks/chaos.py [--sensors 5] [--minutes 60] [--seed 1] [--fault-every 180]
                                         [--workdir DIR] [--write]

Two independent stacks, "calm" and "chaos", each with its own Mosquitto (persistent, with the durability
settings of deploy/mosquitto/mosquitto.conf.example), its own InfluxDB 1.x started fresh with no database
(`posture bridge` creates it), its own BlueZoo testbed with N virtual sensors (`posture sim`, random days
from the same seeds in both stacks, the same scheduled link drops via `--silence`), one `posture run` for all
sensors, `posture bridge` and `posture alerts`. Only the chaos stack gets faults, at seeded random times:
kill -9 of the gateway, the bridge, the alert service, Mosquitto and InfluxDB (each restarted), InfluxDB paused
(SIGSTOP/SIGCONT), bursts of malformed payloads on the devices' topics, and a sensor link drop (its sim
SIGSTOPped; the calm stack's twin is stopped at the same moment, so both lose the same sensor time).

At the end the sims finish, the gateways stop with SIGTERM (flushing their last minute), the bridges drain,
and the two InfluxDBs are compared per measurement, each device's data aligned on its own sim's start. Then what a
user sees: each minute stored with the fullest copy sent, the alerts a phone subscribed to `…/alerts` got (repeats,
losses) and the day's totals (InfluxDB, the alert service's `today`, the sims' truth).
docs/reliability.md says how to read the result; --write puts it there. Every process this script starts is
stopped on exit (also on Ctrl-C), by its pid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import paho.mqtt.client as mqtt

from alerts.rules import totals_of
from alerts.state import DeviceState
from contract.influx_schema import ALERT_MEASUREMENT, MEASUREMENT, TAGS, TODAY_FIELDS, TODAY_MEASUREMENT
from contract.messages import coverage, payload
from contract.validation import MINUTE_SLACK_S
from evaluation.doc_sections import write_section
from firmware_sim.testbed import Testbed, adapter_address
from pipeline.events import MinuteMetrics
from pipeline.summary import day_totals
from posture.local_servers import InfluxDB1, Mosquitto, ServerError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
DATABASE = "posture"
PREFIX = "posture"
KINDS = ("gateway_kill", "bridge_kill", "alerts_kill", "broker_kill", "influx_pause", "influx_kill",
         "malformed_burst", "link_drop")
SERVICES = ("bridge", "alerts", "gateway")
EVENT_KINDS = ("slouch", "rotation", "lean", "calibration")
EVENT_TOLERANCE_S = 2.0
ALERT_TOLERANCE_S = 90.0  # alerts are decided on arrival (wall clock), not at a sensor time
START_GRACE_S = 90.0  # no fault before the chain has run this long
# What the chain promises to keep, in the database's default policy (live points are best effort, kept apart).
DURABLE = [*(m for kind, m in MEASUREMENT.items() if kind != "live"), ALERT_MEASUREMENT, TODAY_MEASUREMENT]
# A `today`'s figures that are sums of the day's minutes (alerts.rules.totals_of folds them): what InfluxDB's minutes of
# that day must give again. The rest are the live state's, the rules' or the program's.
TODAY_SUMS = ("worn_min", "slouch_min", "sitting_min", "lean_left_min", "lean_right_min", "rotations_left",
              "rotations_right", "rotation_si")
END_GRACE_S = 60.0  # nor this close to the sims' end
TEN_YEARS_S = 10 * 365.25 * 86400
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def die_with_parent() -> list[str]:
    """As posture.local_servers does for its servers: a chaos run killed hard leaves no process behind."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def log_time(line: str) -> float | None:
    """The Unix time of a `posture -v` log line (logging's asctime, local time, milliseconds)."""
    m = _LOG_TIME.match(line)
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000 if m else None


SNAPSHOT = {"alerts": "alerts", "bridge": "bridge", "contract": "contract", "gateway": "gateway",
            "pipeline": "pipeline", "posture": "posture", "replay": "replay", "report": "report", "sensor": "sensor",
            "service_io": "service_io", "firmware_sim": "firmware-sim"}


def snapshot(dest: Path) -> str:
    """The product's code copied once: every process of both stacks, in every lifetime, runs the same code
    even while the working tree is being edited. Returns a line saying which code it was."""
    for package, folder in SNAPSHOT.items():
        shutil.copytree(ROOT / folder, dest / package, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    return f"{head.stdout.strip() or '?'}{' + uncommitted changes' if dirty.stdout.strip() else ''}"


class DurableMosquitto(Mosquitto):
    """Mosquitto with the durability settings of deploy/mosquitto/mosquitto.conf.example."""

    DURABILITY = {"autosave_on_changes": "true", "autosave_interval": "1", "max_queued_messages": "1000000",
                  "queue_qos0_messages": "false", "persistent_client_expiration": "14d"}

    def config(self) -> str:
        lines = [line for line in super().config().splitlines() if line.split(" ", 1)[0] not in self.DURABILITY]
        return "\n".join([*lines, *(f"{k} {v}" for k, v in self.DURABILITY.items())]) + "\n"


# --- one stack ---------------------------------------------------------------------------------------


@dataclass
class Lifetime:
    started: float
    ended: float | None = None
    how: str = ""  # "kill -9", "SIGTERM", "exited N"


class Stack:
    """Mosquitto, InfluxDB, a BlueZoo testbed with N sims, and the three services, in workdir/NAME."""

    def __init__(self, name: str, root: Path, sensors: int, seed: int, minutes: float,
                 silences: dict[int, list[tuple[float, float]]]):
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n, self.seed, self.minutes, self.silences = sensors, seed, minutes, silences
        self.broker = DurableMosquitto(self.dir / "mosquitto")
        self.influx = InfluxDB1(self.dir / "influxdb")
        self.testbed: Testbed | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lives: dict[str, list[Lifetime]] = defaultdict(list)
        self.config = self.dir / "posture.toml"
        self.stopped: set[str] = set()  # processes we SIGSTOPped (SIGCONT them before anything else)
        self.expected_exit: set[str] = set()
        self.monitor: Monitor | None = None
        self.code = self.dir.parent / "code"
        self.loaded: dict[str, list[dict[str, Any]]] | None = None  # points read back from points.json

    @property
    def devices(self) -> list[str]:
        return [f"Chaos{k}" for k in range(1, self.n + 1)]

    def start_servers(self) -> None:
        self.broker.start()
        self.influx.start()  # fresh, no database: the bridge must create it
        w = self.dir
        self.config.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.broker.port}\nprefix = "{PREFIX}"\n\n'
            f'[influx]\nurl = "{self.influx.url}"\ndatabase = "{DATABASE}"\n\n'
            f'[bridge]\nspool_path = "{w / "bridge.spool"}"\nflush_interval_s = 0.2\n\n'
            f'[gateway]\nspool_dir = "{w / "gateway-spool"}"\nadapter = "hci0"\n'
            f'sensors = [{", ".join(json.dumps(d) for d in self.devices)}]\n\n'
            f'[alerts]\nstate_path = "{w / "alerts.db"}"\nrules_path = "{w / "rules.toml"}"\n')
        # No quiet hours: a run at night would decide alerts and send none (22:00-07:00 by default); no pace: a day's
        # cap spread over the waking day would let two nudges a device through the run, and delivery is what is tested.
        (w / "rules.toml").write_text('[limits]\nquiet_hours = ""\npace = false\n')
        self.monitor = Monitor(self.name, self.broker.port)

    def start_services(self) -> None:
        for name in ("bridge", "alerts"):
            self.spawn(name)
        for name in ("bridge", "alerts"):
            self.wait_for_log(name, "connected to MQTT", 60)

    def start_sims(self) -> None:
        self.testbed = Testbed(adapters=self.n + 1, workdir=self.dir / "ble").start()
        hours = max(0.01, self.minutes / 60)
        for k in range(1, self.n + 1):
            args = ["--adapter", f"hci{k}", "--name", f"Chaos{k}", "--profile", "native",
                    "--scenario", f"random:{self.seed + k}:{hours:g}", "--seed", str(self.seed + k),
                    "--truth", str(self.dir / f"truth-{k}.csv")]
            for start_s, duration_s in self.silences.get(k, []):
                args += ["--silence", f"{start_s:.1f}:{duration_s:.1f}"]
            self.spawn(f"sim{k}", *args)

    def spawn(self, name: str, *extra: str) -> None:
        command = name.rstrip("0123456789") if name.startswith("sim") else {"gateway": "run"}.get(name, name)
        config = [] if command == "sim" else ["--config", str(self.config)]
        env = dict(self.testbed.env if self.testbed and command in ("sim", "run") else os.environ)
        env["PYTHONPATH"] = str(self.code)  # ahead of the editable install's finder: the snapshot runs
        with open(self.dir / f"{name}.log", "ab") as log:  # appended: a restart keeps the earlier lines
            self.procs[name] = subprocess.Popen(
                [*die_with_parent(), sys.executable, "-m", "posture.cli", "-v", command, *config, *extra],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)
        self.lives[name].append(Lifetime(time.time()))
        self.expected_exit.discard(name)

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: posture {name} did not start:\n{self.log(name)[-1500:]}")

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        if sig == signal.SIGSTOP:
            self.stopped.add(name)
        elif sig == signal.SIGCONT:
            self.stopped.discard(name)
        proc.send_signal(sig)

    def kill(self, name: str) -> None:
        self.expected_exit.add(name)
        self.signal(name, signal.SIGKILL)
        self.procs[name].wait(10)
        self._ended(name, "kill -9")

    def stop(self, name: str, timeout_s: float) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        self.expected_exit.add(name)
        if name in self.stopped:
            self.signal(name, signal.SIGCONT)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                self._ended(name, f"SIGTERM, then kill -9 after {timeout_s:g} s")
                return
        self._ended(name, "SIGTERM")

    def _ended(self, name: str, how: str) -> None:
        life = self.lives[name][-1]
        if life.ended is None:
            life.ended, life.how = time.time(), how

    def crashed(self) -> list[tuple[str, int]]:
        """Services that exited without being told to: (name, exit code); recorded, to be restarted."""
        out = []
        for name in SERVICES:
            proc = self.procs.get(name)
            if proc is not None and name not in self.expected_exit and proc.poll() is not None:
                self._ended(name, f"exited {proc.returncode} on its own")
                self.expected_exit.add(name)
                out.append((name, proc.returncode))
        return out

    def sims_done(self) -> bool:
        return all(self.procs[f"sim{k}"].poll() is not None for k in range(1, self.n + 1))

    def spool_len(self) -> int:
        path = self.dir / "bridge.spool"
        if not path.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                return int(db.execute("SELECT count(*) FROM items").fetchone()[0])
        except sqlite3.Error:
            return -1

    def has_database(self) -> bool:
        try:
            result = self.influx.query("SHOW DATABASES")
        except (ServerError, OSError):
            return False
        values = result["results"][0].get("series", [{}])[0].get("values", [])
        return [DATABASE] in values

    def stored(self) -> int:
        """Points stored, all measurements (a drain is over when this stops moving)."""
        if not self.has_database():
            return 0
        total = 0
        for m in DURABLE:
            rows = self.influx.rows(f"SELECT count(*) FROM {m}", DATABASE)
            total += max((v for r in rows for k, v in r.items() if k.startswith("count_") and v), default=0)
        return total

    def points(self, measurement: str) -> list[dict[str, Any]]:
        if self.loaded is not None:
            return self.loaded.get(measurement, [])
        if not self.has_database():
            return []
        return self.influx.rows(f"SELECT * FROM {measurement} GROUP BY *", DATABASE)

    def streaming_times(self) -> dict[str, list[float]]:
        """Each device's moments of `streaming` in the gateway's log (every connect, every lifetime)."""
        by_address = {adapter_address(k): f"Chaos{k}" for k in range(1, self.n + 1)}
        out: dict[str, list[float]] = defaultdict(list)
        for line in self.log("gateway").splitlines():
            if ": streaming (" in line and (t := log_time(line)) is not None:
                for address, device in by_address.items():
                    if f"{address}: streaming" in line:
                        out[device].append(t)
        return out

    def link_gaps(self) -> dict[str, list[tuple[float, float]]]:
        """Each device's times without a link, from the gateway's log: from the watchdog's `no data for
        X s` (X s before it said so), a link error or a failed connect, until it streams again."""
        by_address = {adapter_address(k): f"Chaos{k}" for k in range(1, self.n + 1)}
        down: dict[str, float] = {}
        out: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for line in self.log("gateway").splitlines():
            t = log_time(line)
            address = next((a for a in by_address if f"{a}: " in line), None)
            if t is None or address is None:
                continue
            device = by_address[address]
            if m := re.search(r": no data for ([0-9.]+) s", line):
                down.setdefault(device, t - float(m.group(1)))
            elif ": link error" in line or ": not connected" in line:
                down.setdefault(device, t)
            elif ": streaming (" in line and device in down:
                out[device].append((down.pop(device), t))
        for device, t in down.items():
            out[device].append((t, math.inf))
        return out

    def sim_deaths(self) -> dict[str, tuple[float, str]]:
        """Sims that ended with an error (the CLI's one line `posture sim: …`): device → (about when, why).
        Not a fault of ours: from then on neither stack's data for that device is compared."""
        out = {}
        for k in range(1, self.n + 1):
            text = self.log(f"sim{k}")
            why = next((line for line in text.splitlines() if line.startswith("posture sim: ")), None)
            if why:
                times = [t for line in text.splitlines() if (t := log_time(line)) is not None]
                out[f"Chaos{k}"] = (max(times, default=math.inf), why)
        return out

    def final_stats(self, name: str) -> list[dict[str, Any]]:
        """The JSON summary lines a service printed on clean stops (a kill -9 prints none)."""
        found = []
        for line in self.log(name).splitlines():
            if line.startswith("{") and '"received"' in line:
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return found

    def close(self) -> None:
        for name in list(self.stopped):
            self.signal(name, signal.SIGCONT)
        if self.influx.proc is not None:
            try:
                self.influx.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        for name in [n for n in self.procs if n.startswith("sim")] + ["gateway", "alerts", "bridge"]:
            try:
                self.stop(name, 10)
            except Exception as exc:  # cleanup goes on
                print(f"{self.name}: stopping {name}: {exc}", file=sys.stderr)
        if self.monitor:
            self.monitor.close()
        if self.testbed is not None:
            self.testbed.stop()
        self.broker.kill()
        self.influx.kill()


class Monitor:
    """Our own MQTT client on a stack's broker (a persistent session, so nothing is missed while the broker
    restarts): the dead letters; every real copy of every minute (what the bridge had to choose from); what a
    phone subscribed to `…/alerts` receives and the last retained `…/today`; and the last real payload of each
    stream, as templates for forged ones."""

    def __init__(self, stack: str, port: int):
        self.dead: Counter[str] = Counter()
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.forged: set[bytes] = set()  # our malformed payloads: not copies of anything
        self.copies: dict[str, list[list[float]]] = defaultdict(list)  # "device ts" → each copy's coverage
        self.phone: list[dict[str, Any]] = []  # each alert as the phone got it
        self.today: dict[str, dict[str, Any]] = {}  # device → last `today` document
        self.todays: dict[str, list[dict[str, Any]]] = defaultdict(list)  # device → every `today` received
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-monitor-{stack}",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{PREFIX}/_deadletter", 1),
                                                           (f"{PREFIX}/+/metrics", 1), (f"{PREFIX}/+/events", 1),
                                                           (f"{PREFIX}/+/alerts", 1), (f"{PREFIX}/+/today", 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.5, 2)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:  # our own forged payloads come by too ("[" * 100000): nothing may end paho's thread
            self._take(msg)
        except Exception:
            pass

    def _take(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/_deadletter"):
            try:
                reason = str(json.loads(msg.payload).get("reason", ""))
            except (ValueError, AttributeError):
                reason = "unreadable dead letter"
            self.dead[reason.split(":", 1)[0]] += 1
            return
        if len(msg.payload) > 10_000 or msg.payload in self.forged:
            return
        doc = json.loads(msg.payload)
        stream = msg.topic.rsplit("/", 1)[1]
        if stream == "alerts" and isinstance(doc, dict):
            self.phone.append({"received": time.time(), "dup": bool(msg.dup), "id": doc.get("id"),
                               "device": doc.get("device"), "kind": doc.get("kind"), "ts": doc.get("ts")})
            return
        if stream == "today" and isinstance(doc, dict):
            self.today[str(doc.get("device"))] = doc
            self.todays[str(doc.get("device"))].append({"received": time.time(), "retain": bool(msg.retain),
                                                         "dup": bool(msg.dup), "doc": doc})
            return
        if isinstance(doc, dict) and isinstance(doc.get("device"), str) and f"/{doc['device']}/" in msg.topic:
            self.templates[(doc["device"], stream)] = doc
            if stream == "metrics" and isinstance(doc.get("ts"), int):
                self.copies[f"{doc['device']} {doc['ts']}"].append(list(coverage(doc)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- malformed payloads ------------------------------------------------------------------------------


def fallback_metrics(device: str) -> dict[str, Any]:
    """A minute as a gateway sends it (before the stream has sent one to copy): written out by hand it lacked the
    fields the schema came to require, and the payloads forged from it were refused for that, not for their fault."""
    return payload(device, MinuteMetrics(time.time() // 60 * 60, worn_s=60.0, sitting_s=60.0))


def fallback_event(device: str) -> dict[str, Any]:
    now = time.time() - 60
    return {"schema": 1, "kind": "slouch", "device": device, "ts": int(now * 1000), "start_s": now,
            "end_s": now + 20, "peak_flexion_deg": 25.0, "mean_flexion_deg": 24.0, "duration_s": 20.0}


def malformed_burst(monitor: Monitor, devices: list[str], rng: np.random.Generator) -> list[tuple[str, str, bytes]]:
    """(kind, topic, payload) for one burst on one device's topics: every kind of bad message once."""
    device = devices[int(rng.integers(len(devices)))]
    # Another sensor's name, or with one sensor a name of none (the next of one was itself: `--sensors 1` stored the
    # forged minute as its own, a duplicated minute, and counted one dead letter fewer than it injected).
    other = devices[(devices.index(device) + 1) % len(devices)] if len(devices) > 1 else f"{device}Other"
    metrics = dict(monitor.templates.get((device, "metrics")) or fallback_metrics(device))
    event = dict(monitor.templates.get((device, "events")) or fallback_event(device))
    t_metrics, t_events = f"{PREFIX}/{device}/metrics", f"{PREFIX}/{device}/events"
    # Forged copies get a time of their own (+30 s, +1.5 s): stored, they would be extra points, not overwrites.
    wrong_device = metrics | {"device": other, "ts": metrics["ts"] + 30_000}
    if "minute_start_s" in wrong_device:
        wrong_device["minute_start_s"] = wrong_device["ts"] / 1000
    start_s = time.time() - 30
    # Only end_s moves: every field the schema bounds stays plausible, so only the time check can refuse it.
    future = (event if "end_s" in event else fallback_event(device)) | {
        "ts": int(start_s * 1000), "start_s": start_s, "end_s": start_s + TEN_YEARS_S}
    inf_text = json.dumps(metrics | {"worn_s": 12345.678}).replace("12345.678", "1e400")
    # Every field within its schema bounds, the minute's own device and a time of its own, but slouched longer than it
    # was worn: only the contract's bounds of a minute (check_minute) refuse it, as kind `minute`.
    worn_s = min(float(metrics.get("worn_s") or 0.0), 60.0)
    impossible = metrics | {"ts": metrics["ts"] + 30_000, "minute_start_s": (metrics["ts"] + 30_000) / 1000,
                            "worn_s": worn_s, "slouch_s": worn_s + MINUTE_SLACK_S + 30.0}
    return [
        ("not JSON", t_metrics, b"\x00\xffnot json {"),
        ("deep JSON", t_events, b"[" * 100_000),
        ("1e400", t_metrics, inf_text.encode()),
        ("wrong types", t_metrics, json.dumps(metrics | {"worn_s": "sixty", "rotations_left": [1]}).encode()),
        ("another device", t_metrics, json.dumps(wrong_device).encode()),
        ("end_s ten years ahead", t_events, json.dumps(future).encode()),
        ("huge integers", t_metrics, json.dumps(metrics | {"rotations_left": 10**30, "lost_samples": 2**70}).encode()),
        ("huge ts", t_events, json.dumps(event | {"ts": 10**20}).encode()),
        ("slouch_s beyond worn_s", t_metrics, json.dumps(impossible).encode()),
    ]


def publish(port: int, messages: list[tuple[str, str, bytes]]) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-injector-{os.getpid()}",
                         protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for _, topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
        return sum(info.is_published() for info in infos)
    finally:
        client.disconnect()
        client.loop_stop()


# --- the fault plan --------------------------------------------------------------------------------


@dataclass
class Fault:
    at_s: float  # planned, seconds after the chain started streaming
    kind: str
    hold_s: float  # down, paused or dropped for this long
    sensor: int = 0  # link_drop: which sim
    done_at: float | None = None  # Unix time it was injected
    back_at: float | None = None  # Unix time it was undone
    note: str = ""


def plan_faults(rng: np.random.Generator, duration_s: float, mean_every_s: float, sensors: int) -> list[Fault]:
    """Poisson times in [START_GRACE_S, duration - END_GRACE_S]; every kind at least once."""
    lo, hi = START_GRACE_S, max(START_GRACE_S + 1, duration_s - END_GRACE_S)
    times: list[float] = []
    t = lo
    while (t := t + float(rng.exponential(mean_every_s))) < hi:
        times.append(t)
    while len(times) < len(KINDS):
        times.append(float(rng.uniform(lo, hi)))
    kinds = list(rng.permutation(KINDS)) + [KINDS[i] for i in rng.integers(len(KINDS), size=len(times) - len(KINDS))]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    faults = []
    for at_s, kind in zip(sorted(times), kinds, strict=True):
        hold = {"influx_pause": rng.uniform(10, 60), "link_drop": rng.uniform(5, 30)}.get(kind, rng.uniform(1, 5))
        faults.append(Fault(at_s, str(kind), float(hold), sensor=int(rng.integers(1, sensors + 1))))
    return faults


# --- the run -------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, workdir: Path, fresh: bool = True):
        self.args = args
        self.workdir = workdir
        self.rng = np.random.default_rng(args.seed)
        self.duration_s = args.minutes * 60
        # Scheduled link drops (the sims' own --silence): the same in both stacks, so not product loss.
        self.silences = {k: [(float(self.rng.uniform(0.2, 0.8) * self.duration_s), float(self.rng.uniform(8, 30)))]
                         for k in range(1, args.sensors + 1)}
        self.faults = plan_faults(self.rng, self.duration_s, args.fault_every, args.sensors)
        self.calm = Stack("calm", workdir, args.sensors, args.seed, args.minutes, self.silences)
        self.chaos = Stack("chaos", workdir, args.sensors, args.seed, args.minutes, self.silences)
        self.stacks = (self.calm, self.chaos)
        self.code = snapshot(workdir / "code") if fresh else "?"
        self.dead: dict[str, Counter[str]] = {}  # stack → dead letters by reason, read when the run is over
        self.injected: Counter[str] = Counter()  # malformed kind → published
        self.injected_times: list[tuple[float, int]] = []  # (Unix time, messages) per burst
        self.notes: list[str] = []
        self.t0 = 0.0
        self.gateway_down: list[tuple[float, float]] = []  # chaos gateway: (killed, restarted) Unix times
        self.seen: dict[str, dict[str, Any]] = {}  # stack → what its Monitor saw (Run.SEEN)

    def start(self) -> None:
        for stack in self.stacks:
            stack.start_servers()
            stack.start_services()
            stack.start_sims()
        # Both gateways at once, early in a clock minute: each device's minutes then cover the same
        # scenario time in both stacks (a minute is the clock's).
        while not 3 <= time.time() % 60 <= 10:
            time.sleep(0.2)
        for stack in self.stacks:
            stack.spawn("gateway")
        self.t0 = time.time()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(len(s.streaming_times()) == s.n for s in self.stacks):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("not every sensor streams after 120 s: see the gateway logs in " + str(self.workdir))
        say(f"both stacks streaming, {self.args.sensors} sensors each; {len(self.faults)} faults planned "
            f"over {self.args.minutes:g} min")

    def loop(self) -> None:
        pending = list(self.faults)
        undo: list[tuple[float, Fault]] = []
        db_checked = False
        sims_ended: set[tuple[str, int]] = set()
        while True:
            now = time.time()
            for stack in self.stacks:
                for k in range(1, stack.n + 1):
                    code = stack.procs[f"sim{k}"].poll()
                    if code is not None and (stack.name, k) not in sims_ended:
                        sims_ended.add((stack.name, k))
                        if code != 0:
                            say(f"{stack.name}: sim Chaos{k} died on its own (exit {code}; see sim{k}.log)")
            for stack in self.stacks:
                for name, code in stack.crashed():
                    say(f"{stack.name}: posture {name} exited on its own ({code}); restarting it")
                    self.notes.append(f"{stack.name}: posture {name} exited on its own (code {code}) at "
                                      f"+{now - self.t0:.0f} s and was restarted")
                    time.sleep(1)
                    stack.spawn(name)
            if not db_checked and now - self.t0 > 75:
                db_checked = True
                for stack in self.stacks:
                    if not stack.has_database():
                        stack.influx.create_database(DATABASE)
                        self.notes.append(f"{stack.name}: the bridge had not created database {DATABASE!r} "
                                          f"75 s in; chaos.py created it")
            for when, fault in list(undo):
                if now >= when:
                    undo.remove((when, fault))
                    self.undo(fault)
            if pending and not undo and now - self.t0 >= pending[0].at_s:
                fault = pending.pop(0)
                self.inject(fault)
                undo.append((time.time() + fault.hold_s, fault))
            if not pending and not undo and all(s.sims_done() for s in self.stacks):
                return
            if now - self.t0 > self.duration_s + 300:
                self.notes.append("the sims had not finished 5 min after their scenario's end; stopped")
                return
            time.sleep(0.1)

    def inject(self, f: Fault) -> None:
        c = self.chaos
        f.done_at = time.time()
        if f.kind in ("gateway_kill", "bridge_kill", "alerts_kill"):
            c.kill(f.kind.split("_")[0])
        elif f.kind == "broker_kill":
            c.broker.kill()
        elif f.kind == "influx_kill":
            c.influx.kill()
        elif f.kind == "influx_pause":
            assert c.influx.proc is not None
            c.influx.proc.send_signal(signal.SIGSTOP)
        elif f.kind == "link_drop":
            for stack in self.stacks:
                stack.signal(f"sim{f.sensor}", signal.SIGSTOP)
        elif f.kind == "malformed_burst":
            msgs = malformed_burst(c.monitor, c.devices, self.rng)  # type: ignore[arg-type]
            c.monitor.forged.update(payload for _, _, payload in msgs)  # type: ignore[union-attr]
            try:
                sent = publish(c.broker.port, msgs)
            except OSError as exc:
                sent = 0
                f.note = f"publish failed: {exc}"
            if sent == len(msgs):
                self.injected.update(kind for kind, _, _ in msgs)
            else:  # which ones got through is unknown; counted as not injected, said so
                f.note = f"only {sent} of {len(msgs)} acknowledged"
            self.injected_times.append((f.done_at, sent))
            f.note = f.note or f"{sent} messages on {msgs[0][1].split('/')[1]}'s topics"
            f.hold_s = 0.0
        what = {"link_drop": f"sim Chaos{f.sensor} (both stacks)", "malformed_burst": f.note}.get(f.kind, "")
        say(f"+{f.done_at - self.t0:5.0f} s  {f.kind:<15} {what}")

    def undo(self, f: Fault) -> None:
        c = self.chaos
        if f.kind in ("gateway_kill", "bridge_kill", "alerts_kill"):
            c.spawn(f.kind.split("_")[0])
            if f.kind == "gateway_kill":
                assert f.done_at is not None
                self.gateway_down.append((f.done_at, time.time()))
        elif f.kind == "broker_kill":
            c.broker.start()
        elif f.kind == "influx_kill":
            c.influx.start()
        elif f.kind == "influx_pause":
            assert c.influx.proc is not None
            c.influx.proc.send_signal(signal.SIGCONT)
        elif f.kind == "link_drop":
            for stack in self.stacks:
                stack.signal(f"sim{f.sensor}", signal.SIGCONT)
        f.back_at = time.time()

    def finish(self) -> None:
        """Gateways stopped with SIGTERM (they flush), bridges drained, alerts stopped, bridges stopped."""
        for stack in self.stacks:
            stack.stop("gateway", 60)
        self.drain()
        time.sleep(3)  # the alert service decides on the last minute; the bridge stores that alert
        for stack in self.stacks:
            stack.stop("alerts", 20)
        self.drain()
        for stack in self.stacks:
            stack.stop("bridge", 20)

    def drain(self, quiet_s: float = 8.0, timeout_s: float = 600.0) -> None:
        last: dict[str, tuple[int, float]] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            settled = True
            for stack in self.stacks:
                n, spool = stack.stored(), stack.spool_len()
                if stack.name not in last or last[stack.name][0] != n:
                    last[stack.name] = (n, time.monotonic())
                if spool != 0 or time.monotonic() - last[stack.name][1] < quiet_s:
                    settled = False
            if settled:
                return
            time.sleep(1.0)
        self.notes.append(f"the bridges had not drained after {timeout_s:.0f} s")

    STATE = ("t0", "gateway_down", "injected_times", "notes", "code")
    SEEN = ("phone", "today", "todays", "copies")  # per stack, from its Monitor (seen.json)

    def save_state(self) -> None:
        """What the comparison needs besides the logs and the points, for --reanalyze."""
        self.dead = {s.name: Counter(s.monitor.dead) if s.monitor else Counter() for s in self.stacks}
        state = {name: getattr(self, name) for name in self.STATE} | {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
            "faults": [f.__dict__ for f in self.faults], "injected": dict(self.injected), "dead": self.dead,
            "lives": {s.name: {n: [life.__dict__ for life in ls] for n, ls in s.lives.items()} for s in self.stacks}}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=1))
        seen = {s.name: {k: getattr(s.monitor, k) for k in self.SEEN} for s in self.stacks if s.monitor}
        (self.workdir / "seen.json").write_text(json.dumps(seen))
        self.seen = seen

    def load_state(self) -> None:
        if not (self.workdir / "state.json").exists():  # a run from before state.json: rebuilt from result.json
            self._state_from_result()
        state = json.loads((self.workdir / "state.json").read_text())
        for name in self.STATE:
            setattr(self, name, state[name])
        self.gateway_down = [tuple(x) for x in self.gateway_down]
        self.faults = [Fault(**f) for f in state["faults"]]
        self.injected = Counter(state["injected"])
        self.dead = {k: Counter(v) for k, v in state["dead"].items()}
        for stack in self.stacks:
            lives = state["lives"][stack.name]
            stack.lives = defaultdict(list, {n: [Lifetime(**x) for x in ls] for n, ls in lives.items()})
        seen = self.workdir / "seen.json"  # runs before it have none: the user's view is then not reported
        self.seen = json.loads(seen.read_text()) if seen.exists() else {}
        points = json.loads((self.workdir / "points.json").read_text())
        for stack in self.stacks:
            stack.loaded = points["data"][stack.name]

    def _state_from_result(self) -> None:
        result = json.loads((self.workdir / "result.json").read_text())
        faults = result["faults"]
        for f in faults:
            for key in ("done_at", "back_at", "at_s", "hold_s"):
                f[key] = None if f[key] in (None, "None") else float(f[key])
        t0 = min(f["done_at"] - f["at_s"] for f in faults if f["done_at"])
        state = {"t0": t0, "notes": result["notes"] + ["dead-letter counts were not saved by this run"],
                 "gateway_down": [(f["done_at"], f["back_at"]) for f in faults if f["kind"] == "gateway_kill"],
                 # A burst publishes each kind once: as many messages as kinds (8 before the `minute` kind came).
                 "injected_times": [(f["done_at"], len(result["injected"])) for f in faults
                                    if f["kind"] == "malformed_burst"],
                 "code": "?", "args": vars(self.args), "faults": faults, "injected": result["injected"],
                 "dead": {}, "lives": {s.name: {} for s in self.stacks}}
        (self.workdir / "state.json").write_text(json.dumps(state, default=str))

    def close(self) -> None:
        for stack in self.stacks:
            try:
                stack.close()
            except Exception as exc:
                print(f"closing {stack.name}: {exc}", file=sys.stderr)


# --- the comparison --------------------------------------------------------------------------------


@dataclass
class Row:
    measurement: str
    sent: int = 0
    stored: int = 0
    duplicated: int = 0
    lost_gateway: int = 0  # lost within a gateway crash's documented window
    lost_link: int = 0  # lost where either stack's link to that sensor was down (not product loss)
    lost: int = 0  # lost, unexplained
    extra: int = 0
    differs: int = 0  # minutes: matched, but worn time differs by more than 2 s
    restored: int = 0  # calibration: "restored from the last run", said by a restarted gateway (not extra)
    details: list[str] = field(default_factory=list)


def tag_key(measurement: str, point: dict[str, Any]) -> tuple[str, ...]:
    kind = next((k for k, m in MEASUREMENT.items() if m == measurement), "")
    tags = TAGS.get(kind, ("kind",) if measurement == ALERT_MEASUREMENT else ())
    return (str(point.get("device_id")), *(str(point.get(t)) for t in tags))


class Compare:
    def __init__(self, run: Run):
        self.run = run
        # Each device's sim start in each stack: its first `streaming` in the gateway's log.
        self.start: dict[str, dict[str, float]] = {}
        for stack in run.stacks:
            self.start[stack.name] = {d: min(ts) for d, ts in stack.streaming_times().items()}
        self.offset: dict[str, float] = {}  # device → chaos - calm start correction from events (s)
        self.back = run.chaos.streaming_times()
        self.gaps = {s.name: s.link_gaps() for s in run.stacks}
        self.deaths = {s.name: s.sim_deaths() for s in run.stacks}
        for stack, deaths in self.deaths.items():
            for device, (when, _) in deaths.items():
                self.gaps[stack].setdefault(device, []).append((when - 5, math.inf))

    def link_down(self, device: str, a: float, b: float, margin_s: float = 2.0, most: bool = False) -> bool:
        """Does [a, b] (chaos Unix times) meet a time without link to `device`, in either stack? With
        `most`: is the link down for all but 5 s of it (a minute the gateway then need not report)?"""
        shift = self.start["calm"][device] - self.start["chaos"][device]
        for stack, lo, hi in (("chaos", a, b), ("calm", a + shift, b + shift)):
            gaps = self.gaps[stack].get(device, [])
            if most:
                covered = sum(max(0.0, min(hi, end + margin_s) - max(lo, begin - margin_s)) for begin, end in gaps)
                if covered >= hi - lo - 5:
                    return True
            elif any(lo <= end + margin_s and hi >= begin - margin_s for begin, end in gaps):
                return True
        return False

    def explain(self, row: Row, device: str, a: float, b: float, what: str, most: bool = False) -> None:
        """Count a loss of [a, b] (chaos Unix times) under its exception, or as unexplained."""
        if most and self.link_down(device, a, b, most=True):  # a minute without link: no gateway had samples
            row.lost_link += 1
            row.details.append(f"link down: {what}")
        elif self.gateway_window(device, a, b, margin_s=2.0):
            row.lost_gateway += 1
            row.details.append(f"gateway crash: {what}")
        elif self.link_down(device, a, b, most=most):
            row.lost_link += 1
            row.details.append(f"link down: {what}")
        else:
            row.lost += 1
            row.details.append(f"lost {what} (near {self.nearest_fault((a + b) / 2)})")

    def rel_s(self, stack: str, device: str, t_ms: float) -> float:
        return t_ms / 1000 - self.start[stack].get(device, math.nan)

    def minute_index(self, stack: str, device: str, t_ms: float) -> int:
        ref = self.start[stack].get(device, math.nan) // 60 * 60
        return int((t_ms / 1000 - ref) // 60)

    def window_of(self, device: str, index: int) -> tuple[float, float]:
        ref = self.start["chaos"][device] // 60 * 60
        return ref + 60 * index, ref + 60 * index + 60

    def gateway_window(self, device: str, a: float, b: float, margin_s: float = 0.0) -> bool:
        """Does [a, b] (chaos Unix times) meet a gateway crash: killed → streaming `device` again after restart?"""
        for killed, restarted in self.run.gateway_down:
            resumed = min([t for t in self.back.get(device, []) if t >= restarted], default=restarted)
            if a <= resumed + margin_s and b >= killed - margin_s:
                return True
        return False

    def nearest_fault(self, t: float) -> str:
        best = min(self.run.faults, key=lambda f: abs((f.done_at or 0) - t), default=None)
        if best is None or best.done_at is None:
            return ""
        return f"{best.kind} at +{best.done_at - self.run.t0:.0f} s"

    def minutes(self, calm: list[dict[str, Any]], chaos: list[dict[str, Any]]) -> Row:
        row = Row(MEASUREMENT["metrics"], sent=len(calm), stored=len(chaos))
        a: dict[tuple[str, int], dict[str, Any]] = {}
        b: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for p in calm:
            a[(p["device_id"], self.minute_index("calm", p["device_id"], p["time"]))] = p
        for p in chaos:
            b[(p["device_id"], self.minute_index("chaos", p["device_id"], p["time"]))].append(p)
        for key, ps in sorted(b.items()):
            if len(ps) > 1:
                row.duplicated += len(ps) - 1
                row.details.append(f"duplicated minute {key[0]} #{key[1]}: {len(ps)} points at "
                                   + ", ".join(time.strftime("%H:%M:%S", time.localtime(p["time"] / 1000)) for p in ps))
            if key not in a:
                row.extra += len(ps)
                row.details.append(f"extra minute {key[0]} #{key[1]}")
            elif abs((ps[0].get("worn_s") or 0) - (a[key].get("worn_s") or 0)) > 2:
                row.differs += 1
        for key in sorted(a.keys() - b.keys()):
            start, end = self.window_of(*key)
            self.explain(row, key[0], start, end, f"minute {key[0]} #{key[1]}", most=True)
        return row

    def events(self, measurement: str, calm: list[dict[str, Any]], chaos: list[dict[str, Any]],
               tolerance_s: float) -> Row:
        row = Row(measurement, sent=len(calm), stored=len(chaos))
        groups: dict[tuple[str, ...], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        length: dict[tuple[tuple[str, ...], float], float] = {}  # a calm event's duration (s)
        for p in calm:
            x = self.rel_s("calm", p["device_id"], p["time"])
            groups[tag_key(measurement, p)][0].append(x)
            length[(tag_key(measurement, p), x)] = float(p.get("duration_s") or 0.0)
        restored: set[tuple[tuple[str, ...], float]] = set()  # a restarted gateway's "calibration restored"
        for p in chaos:
            y = self.rel_s("chaos", p["device_id"], p["time"])
            groups[tag_key(measurement, p)][1].append(y)
            if any("restored" in str(v) for v in p.values()):
                restored.add((tag_key(measurement, p), y))
        for key, (xs, ys) in sorted(groups.items()):
            device = key[0]
            ys = [y - self.offset.get(device, 0.0) for y in ys]
            matched: Counter[int] = Counter()
            used: set[int] = set()
            for x in sorted(xs):
                near = [(abs(y - x), j) for j, y in enumerate(ys) if abs(y - x) <= tolerance_s]
                free = [j for _, j in sorted(near) if j not in used]
                if free:
                    used.add(free[0])
                    matched[free[0]] += 1
                else:
                    t_chaos = self.start["chaos"][device] + x
                    self.explain(row, device, t_chaos, t_chaos + length.get((key, x), 0.0),
                                 f"{'/'.join(key)} at +{x:.1f} s of its sim")
            for j, y in enumerate(ys):
                if j in used:
                    continue
                if any(abs(y - x) <= tolerance_s for x in xs):  # a second point for a matched event
                    row.duplicated += 1
                    row.details.append(f"duplicated {'/'.join(key)} at +{y:.1f} s of its sim")
                elif (key, y + self.offset.get(device, 0.0)) in restored:
                    row.restored += 1
                    row.details.append(f"expected: {'/'.join(key)} at +{y:.1f} s of its sim, the restarted gateway "
                                       "saying it restored the calibration")
                else:
                    row.extra += 1
                    t_chaos = self.start["chaos"][device] + y
                    why = "calm's link down then" if self.link_down(device, t_chaos, t_chaos) else \
                        f"near {self.nearest_fault(t_chaos)}"
                    row.details.append(f"extra {'/'.join(key)} at +{y:.1f} s of its sim ({why})")
        return row

    def today(self, data: dict[str, dict[str, list[dict[str, Any]]]]) -> Row:
        """`today` is retained and replaced by the next one: each one the broker delivered (our Monitor saw it, so the
        bridge's persistent session had it queued too) must be stored at its ts, the last one with its fields, nothing
        stored that was never sent; and the last one's sums must be the sums of that day's minutes in InfluxDB, its ts
        the end of the latest of them. Checked in both stacks (the calm stack's failures are no fault's); the row
        counts the chaos stack's. sent: the calm stack's points, stored: the chaos stack's."""
        row = Row(TODAY_MEASUREMENT, sent=len(data["calm"][TODAY_MEASUREMENT]),
                  stored=len(data["chaos"][TODAY_MEASUREMENT]))
        for stack in self.run.stacks:
            seen = self.run.seen.get(stack.name, {}).get("todays")
            if seen is None:
                row.details.append(f"{stack.name}: every `today` sent was not recorded in this run (seen.json)")
                continue
            issues = self.today_issues(stack.name, seen, data[stack.name])
            for kind, text in issues:
                if stack.name == "chaos":
                    setattr(row, kind, getattr(row, kind) + 1)
                    row.details.append(text)
                else:
                    row.details.append(f"calm stack (no fault): {text}")
        return row

    def today_issues(self, stack: str, seen: dict[str, list[dict[str, Any]]],
                     data: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
        """(Row counter, what) for each `today` lost, extra or whose figures are wrong, in one stack."""
        out: list[tuple[str, str]] = []
        stored: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for p in data[TODAY_MEASUREMENT]:
            stored[p["device_id"]][int(p["time"])] = p
        for device in self.run.calm.devices:
            docs = seen.get(device, [])
            if not docs:
                out.append(("lost", f"`today` {device}: none went over the broker"))
                continue
            points = stored.get(device, {})
            sent_ts = {int(d["doc"]["ts"]) for d in docs}
            for ts in sorted(sent_ts - points.keys()):
                at = min(d["received"] for d in docs if d["doc"]["ts"] == ts)
                out.append(("lost", f"`today` {device} of {time.strftime('%H:%M:%S', time.localtime(ts / 1000))} "
                                    f"(received +{at - self.run.t0:.0f} s, near {self.nearest_fault(at)}): not stored"))
            for ts in sorted(points.keys() - sent_ts):
                when = time.strftime('%H:%M:%S', time.localtime(ts / 1000))
                out.append(("extra", f"`today` {device} stored at {when}: never went over the broker"))
            last = docs[-1]["doc"]
            if int(last["ts"]) != max(sent_ts):
                out.append(("differs", f"`today` {device}: the last one received ({last['ts']}) is not the newest "
                                       f"({max(sent_ts)})"))
            if points and max(points) != int(last["ts"]):
                out.append(("differs", f"`today` {device}: the latest stored ({max(points)}) is not the last sent "
                                       f"({last['ts']})"))
            if (point := points.get(int(last["ts"]))) is not None:
                want = {k: last.get(k) if last.get(k) is not None else "" for k in TODAY_FIELDS}
                got = {k: point.get(k) if point.get(k) is not None else "" for k in TODAY_FIELDS}
                if want != got:
                    out.append(("differs", f"`today` {device}: stored {got}, the last one sent says {want}"))
            out += [("differs", f"`today` {device}: {text}") for text in self.today_figures(last, data)]
        return out

    @staticmethod
    def today_figures(today: dict[str, Any], data: dict[str, list[dict[str, Any]]]) -> list[str]:
        """Where a `today` disagrees with its day's minutes as stored (the alert service's zone; none named: ours)."""
        zone = ZoneInfo(today["timezone"]) if today.get("timezone") else None
        minutes = [p for p in data[MEASUREMENT["metrics"]] if p["device_id"] == today["device"]
                   and datetime.fromtimestamp(p["time"] / 1000, zone).astimezone(zone).date().isoformat()
                   == today["date"]]
        if not minutes:
            return [f"{today['date']}: no minute of it stored"]
        out = []
        end_ms = max(int(p["time"]) for p in minutes) + 60_000
        if int(today["ts"]) != end_ms:
            out.append(f"ts {today['ts']}, the latest minute stored ends at {end_ms} "
                       f"({(int(today['ts']) - end_ms) / 60_000:+.0f} min)")
        # As the alert service keeps them (alerts/state.py, add_minute: to hundredths), not as InfluxDB has them: folded
        # unrounded, a day's rotation_si came to -91.04 where the service's -91.05 said -91.1 (seed 846433, calm stack).
        kept = DeviceState()
        for p in minutes:
            kept.add_minute(p | {"ts": int(p["time"])})
        sums = totals_of(day_totals(kept.minutes.values()))
        wrong = {k: (today.get(k), sums[k]) for k in TODAY_SUMS if today.get(k) != sums[k]}
        if wrong:
            out.append(f"over {len(minutes)} minutes stored: " + ", ".join(f"{k} {a} where the minutes give {b}"
                                                                          for k, (a, b) in wrong.items()))
        return out

    def refine_offsets(self, pairs: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
        """The gateway logs `streaming` a little after the sim's clock starts; the median offset of
        near events (±5 s) corrects what differs between the stacks."""
        for device in self.run.calm.devices:
            diffs = []
            for calm, chaos in pairs.values():
                xs = [self.rel_s("calm", device, p["time"]) for p in calm if p["device_id"] == device]
                ys = [self.rel_s("chaos", device, p["time"]) for p in chaos if p["device_id"] == device]
                for x in xs:
                    near = [y - x for y in ys if abs(y - x) <= 5]
                    if near:
                        diffs.append(min(near, key=abs))
            self.offset[device] = float(np.median(diffs)) if diffs else 0.0

    def table(self) -> list[Row]:
        data = {s.name: {m: s.points(m) for m in DURABLE} for s in self.run.stacks}
        self.data = data
        if self.run.calm.loaded is None:
            (self.run.workdir / "points.json").write_text(json.dumps({"start": self.start, "data": data}))
        for stack in data.values():  # an episode is its end: a point with only its start (a crash cut it) is none
            for k in ("slouch", "lean"):
                stack[MEASUREMENT[k]] = [p for p in stack[MEASUREMENT[k]] if p.get("duration_s") is not None]
        events = {MEASUREMENT[k]: (data["calm"][MEASUREMENT[k]], data["chaos"][MEASUREMENT[k]])
                  for k in ("slouch", "rotation", "lean")}
        self.refine_offsets(events)
        rows = [self.minutes(data["calm"][MEASUREMENT["metrics"]], data["chaos"][MEASUREMENT["metrics"]])]
        for kind in EVENT_KINDS:
            m = MEASUREMENT[kind]
            rows.append(self.events(m, data["calm"][m], data["chaos"][m], EVENT_TOLERANCE_S))
        rows.append(self.events(ALERT_MEASUREMENT, data["calm"][ALERT_MEASUREMENT], data["chaos"][ALERT_MEASUREMENT],
                                ALERT_TOLERANCE_S))
        rows.append(self.today(data))
        status = MEASUREMENT["status"]
        rows.append(Row(status, sent=len(data["calm"][status]), stored=len(data["chaos"][status]),
                        details=["status: on change and every gateway.status_heartbeat_s, not matched point by point"]))
        return rows


# --- report ----------------------------------------------------------------------------------------


def render(run: Run, rows: list[Row], compare: Compare) -> str:
    out = ["| measurement | sent (calm) | stored (chaos) | duplicated | lost: gateway crash (documented) "
           "| lost: link down in either stack | lost: unexplained | extra | differs (minutes: worn time by > 2 s; "
           "`today`: from the minutes stored) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.measurement == MEASUREMENT["status"]:
            out.append(f"| {r.measurement} | {r.sent} | {r.stored} | – | – | – | – | – | – |")
            continue
        differs = str(r.differs) if r.measurement in (MEASUREMENT["metrics"], TODAY_MEASUREMENT) else "–"
        duplicated = "–" if r.measurement == TODAY_MEASUREMENT else str(r.duplicated)  # a copy overwrites its point
        extra = f"{r.extra} (+{r.restored} restored)" if r.restored else str(r.extra)
        out.append(f"| {r.measurement} | {r.sent} | {r.stored} | {duplicated} | {r.lost_gateway} | {r.lost_link} "
                   f"| {r.lost} "
                   f"| {extra} | {differs} |")
    out.append("")
    # malformed
    dead, calm_dead = run.dead.get("chaos", Counter()), run.dead.get("calm", Counter())
    injected = sum(run.injected.values())
    alerts_stats = run.chaos.final_stats("alerts")
    last_alerts_start = run.chaos.lives["alerts"][-1].started if run.chaos.lives["alerts"] else run.t0
    since = sum(n for t, n in run.injected_times if t >= last_alerts_start)
    alerts_malformed = dict(alerts_stats[-1].get("malformed", {})) if alerts_stats else {}
    bridge_stats = run.chaos.final_stats("bridge")
    out.append(f"Malformed payloads injected: {injected} in {len(run.injected_times)} bursts "
               f"({', '.join(f'{k} {v}' for k, v in sorted(run.injected.items()))}).")
    out.append(f"Dead letters the chaos bridge published (all its lifetimes, read from `{PREFIX}/_deadletter`): "
               f"{sum(dead.values())} ({', '.join(f'{k} {v}' for k, v in sorted(dead.items())) or 'none'}); "
               f"calm bridge: {sum(calm_dead.values())}.")
    if bridge_stats:
        b = bridge_stats[-1]
        out.append(f"The chaos bridge's last lifetime (its summary on SIGTERM): received {b.get('received')}, "
                   f"points written {b.get('points_written')}, spooled {b.get('points_spooled')}, "
                   f"refused {b.get('points_refused')}, malformed {b.get('malformed')}.")
    out.append(f"Alert service, last lifetime (started +{last_alerts_start - run.t0:.0f} s; a kill -9 prints no "
               f"counts): malformed {sum(alerts_malformed.values())} {alerts_malformed or ''} of {since} injected "
               f"since it started (all on metrics/events topics, which it reads).")
    out.append("")
    for stack, deaths in compare.deaths.items():
        for device, (when, why) in sorted(deaths.items()):
            out.append(f"**The {stack} stack's sim {device} died on its own** at +{when - run.t0:.0f} s ({why}); "
                       "from then on that device's losses count as link down.  ")
    gap = {d: compare.start["chaos"].get(d, math.nan) - compare.start["calm"].get(d, math.nan)
           for d in run.calm.devices}
    out.append("Sims started (first `streaming`), chaos minus calm: "
               + ", ".join(f"{d} {gap[d]:+.1f} s (events {compare.offset.get(d, 0):+.2f} s)" for d in gap) + ".")
    return "\n".join(out)


DAY_FIELDS = ("worn_s", "sitting_s", "standing_s", "walking_s", "lying_s", "slouch_s", "rotations_left",
              "rotations_right")


def truth_totals(path: Path) -> dict[str, float]:
    """What the sim sent, by its ground truth: seconds per context and slouching (activity `slouch`)."""
    out: Counter[str] = Counter()
    if not path.exists():
        return {}
    with open(path) as f:
        header = f.readline().rstrip("\n").split(",")
        i_sent, i_act, i_ctx, i_t = (header.index(k) for k in ("sent", "activity", "context", "t_s"))
        last_t = None
        for line in f:
            cols = line.rstrip("\n").split(",")
            t = float(cols[i_t])
            dt = 0.0 if last_t is None else min(t - last_t, 0.1)
            last_t = t
            if cols[i_sent] != "1":
                continue
            out[f"{cols[i_ctx]}_s"] += dt
            if cols[i_act] == "slouch":
                out["slouch_s"] += dt
    return dict(out)


def listed(items: list[str], sep: str = ", ", most: int = 10) -> str:
    return f" ({sep.join(items[:most])})" if items else ""


def cells(values: list[float | None]) -> str:
    return " | ".join("" if v is None else f"{v:.1f}" for v in values)


def user_view(run: Run, compare: Compare) -> str:
    """What a user sees after the run: each minute once and the fullest copy of it that went over the broker, the
    alerts a phone subscribed to `…/alerts` got (repeats, and alerts stored but never on the phone), and the day's
    totals: InfluxDB's minutes summed, the alert service's last `today`, in both stacks, and the sims' ground truth."""
    if not run.seen:
        return "(no seen.json: the user's view was not recorded in this run)"
    out = []
    data = compare.data
    for stack in run.stacks:
        seen = run.seen.get(stack.name, {})
        copies = seen.get("copies", {})
        stored = data[stack.name][MEASUREMENT["metrics"]]
        by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for p in stored:
            by_key[f"{p['device_id']} {int(p['time'])}"].append(p)
        fullest = less = not_seen = 0
        notes = []
        for key, ps in sorted(by_key.items()):
            have = coverage(ps[0])
            best = max((tuple(c) for c in copies.get(key, [])), default=None)
            if best is None:
                not_seen += 1
            elif have >= best:
                fullest += 1
            else:
                less += 1
                notes.append(f"{key}: stored {have}, fullest copy {best}")
        never = sorted(set(copies) - set(by_key))
        multi = sum(1 for c in copies.values() if len(c) > 1)
        out.append(f"- {stack.name}: {len(stored)} minutes stored; {fullest} the fullest copy sent, {less} a lesser "
                   f"one{listed(notes, '; ')}, {not_seen} with no copy seen on the broker; {multi} minutes went over "
                   f"the broker more than once; {len(never)} sent and not stored{listed(never)}.")
        phone = seen.get("phone", [])
        ids = Counter(a["id"] for a in phone)
        logged = {p.get("alert_id") for p in data[stack.name][ALERT_MEASUREMENT]}
        repeats = {i: n for i, n in ids.items() if n > 1}
        missing = sorted(i for i in logged - set(ids) if i)
        unlogged = sorted(set(ids) - logged)
        out.append(f"  phone: {len(phone)} alerts received, {len(ids)} distinct ids, "
                   f"{sum(repeats.values()) - len(repeats)} repeats"
                   f"{listed([f'{i} x{n}' for i, n in sorted(repeats.items())])}; stored in InfluxDB but never on "
                   f"the phone: {len(missing)}{listed(missing)}; on the phone, not stored: {len(unlogged)}"
                   f"{listed(unlogged)}.")
    out.append("")
    out.append("| device | | " + " | ".join(DAY_FIELDS) + " | alerts |")
    out.append("|---|---|" + "---|" * (len(DAY_FIELDS) + 1))
    for k, device in enumerate(run.calm.devices, 1):
        for stack in run.stacks:
            ms = [p for p in data[stack.name][MEASUREMENT["metrics"]] if p["device_id"] == device]
            sums = [sum(float(p.get(f) or 0) for p in ms) for f in DAY_FIELDS]
            n_alerts = sum(1 for p in data[stack.name][ALERT_MEASUREMENT] if p["device_id"] == device)
            out.append(f"| {device} | {stack.name} InfluxDB | {cells(sums)} | {n_alerts} |")
            # Each rotation counts in the minute it ends in and is an event too: the two must agree.
            sides = Counter(p.get("side") for p in data[stack.name][MEASUREMENT["rotation"]]
                            if p["device_id"] == device)
            counted: list[float | None] = [None] * 6 + [float(sides["left"]), float(sides["right"])]
            mark = "" if counted[-2:] == sums[-2:] else " (not the minutes' count)"
            out.append(f"| {device} | {stack.name} rotation events{mark} | {cells(counted)} | |")
            today = run.seen.get(stack.name, {}).get("today", {}).get(device)
            if today:
                vals = [60 * today.get("worn_min", 0), 60 * today.get("sitting_min", 0), None, None, None,
                        60 * today.get("slouch_min", 0), today.get("rotations_left"), today.get("rotations_right")]
                out.append(f"| {device} | {stack.name} `today` | {cells(vals)} | {today.get('alerts_sent')} |")
        truth = truth_totals(run.calm.dir / f"truth-{k}.csv")
        if truth:
            worn = sum(v for key, v in truth.items() if key in ("sitting_s", "standing_s", "walking_s", "lying_s"))
            vals = [worn, *(truth.get(f) for f in DAY_FIELDS[1:6])]
            out.append(f"| {device} | sim truth (sent) | {cells(vals)} | | | |")
    return "\n".join(out)


def render_faults(run: Run) -> str:
    out = ["| at (s after start) | fault | held (s) | detail |", "|---|---|---|---|"]
    for f in run.faults:
        if f.done_at is None:
            out.append(f"| (+{f.at_s:.0f} planned) | {f.kind} | – | not injected |")
            continue
        held = f"{(f.back_at or f.done_at) - f.done_at:.1f}"
        detail = {"link_drop": f"Chaos{f.sensor}, its calm twin too"}.get(f.kind, f.note)
        out.append(f"| {f.done_at - run.t0:.0f} | {f.kind} | {held} | {detail} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=60.0, help="scenario length of every sim")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=180.0, help="mean seconds between faults (Poisson)")
    parser.add_argument("--workdir", type=Path, help="keep logs and data here (default: a new temp dir, kept)")
    parser.add_argument("--write", action="store_true", help=f"write the results into {DOC}")
    parser.add_argument("--reanalyze", type=Path, metavar="WORKDIR",
                        help="compare again what an earlier run left in WORKDIR (logs, state.json, points.json)")
    args = parser.parse_args()
    if args.reanalyze:
        return reanalyze(args)
    if args.minutes < 10:
        print("note: under 10 minutes the faults crowd together (every kind is injected once all the same)",
              file=sys.stderr)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="posture-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = " ".join(["benchmarks/chaos.py", *sys.argv[1:]])

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a `&` in a script)
    run = Run(args, workdir)
    say(f"work dir {workdir}; {socket.gethostname()}, {os.cpu_count()} cores; code {run.code}")
    try:
        run.start()
        run.loop()
        say("sims done; stopping gateways (SIGTERM) and draining the bridges")
        run.finish()
        run.save_state()
        compare = Compare(run)
        rows = compare.table()
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        run.close()
    report(run, rows, compare, command, args.write)
    return 0


def reanalyze(args: argparse.Namespace) -> int:
    workdir = args.reanalyze
    state = workdir / "state.json"
    saved = json.loads(state.read_text())["args"] if state.exists() else vars(args)  # else: as given now
    for key in ("sensors", "minutes", "seed", "fault_every"):
        setattr(args, key, saved[key])
    run = Run(args, workdir, fresh=False)
    run.load_state()
    command = " ".join(["benchmarks/chaos.py", *(f"--{k.replace('_', '-')} {saved[k]:g}" for k in
                                                  ("sensors", "minutes", "seed"))])
    compare = Compare(run)
    report(run, compare.table(), compare, command, args.write)
    return 0


def report(run: Run, rows: list[Row], compare: Compare, command: str, write: bool) -> None:
    args, workdir = run.args, run.workdir
    text = render(run, rows, compare)
    faults = render_faults(run)
    details = [d for r in rows for d in r.details]
    print(text)
    print(faults)
    print("What a user sees:")
    print(user_view(run, compare))
    print("\n".join(details[:200]))
    for note in run.notes:
        print("note:", note)
    (workdir / "result.json").write_text(json.dumps({
        "rows": [r.__dict__ for r in rows], "faults": [f.__dict__ for f in run.faults], "notes": run.notes,
        "injected": dict(run.injected)}, indent=1, default=str))
    if write:
        stamp = (f"Machine: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; `{command}` "
                 f"({args.sensors} sensors per stack, {args.minutes:g} minutes; code {run.code}).")
        listed = "\n".join(f"- {d}" for d in details[:60]) or "- none"
        notes = "\n".join(f"- {n}" for n in run.notes) or "- none"
        write_section(DOC, "chaos_result", f"{text}\n\nWhat was not matched, one by one:\n\n{listed}\n\n"
                                           f"Notes from the run:\n\n{notes}\n\n{stamp}")
        write_section(DOC, "chaos_faults", f"{faults}\n\n{stamp}")


if __name__ == "__main__":
    sys.exit(main())
