"""`posture demo`: the whole product on the virtual sensor, no hardware needed.

Runs posture/chain.py — Mosquitto, InfluxDB, BlueZoo, the virtual sensor playing a compressed
office day, `posture run`, `posture bridge`, `posture alerts` with demo thresholds — prints what
travels over MQTT as it happens (events with their angles, each minute, alerts with their
stretch, and one line of the live state kept up to date), then a summary of this run from InfluxDB
and a report PNG of the day. Ctrl-C, or the scenario's end, stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contract.influx_schema import ALERT_MEASUREMENT, MEASUREMENT
from contract.messages import is_nudge
from firmware_sim.scenario import load_scenario
from pipeline.summary import day_totals

from .chain import DATABASE, DEVICE, Chain
from .local_servers import InfluxDB1


def _stopped(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: the chain stops every process it started


def run(args: argparse.Namespace) -> int:
    # Stopped otherwise than by Ctrl-C (kill, a closed terminal, `timeout`), the demo died alone and left the bridge,
    # the alert service, the gateway, the sensor, dbus-daemon and BlueZoo running for good (a newcomer's probe).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stopped)
    # A scenario the sensor cannot read (a typo'd name) is said now, in one line with the names it knows: the demo
    # started every server and service, ran 40 s with no sensor and ended "nothing reached InfluxDB", the reason in
    # sim.log.
    load_scenario(args.scenario)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="posture-demo-"))
    print(f"posture demo: work dir {workdir} (logs, data, report)", flush=True)
    with Chain(workdir, args.scenario, args.profile) as chain:
        print("starting Mosquitto, InfluxDB, posture bridge, posture alerts, BlueZoo, the virtual sensor, "
              "posture run …", flush=True)
        started_s = time.time()
        chain.start()
        console = Console(sys.stdout)
        watcher = _watch(chain.broker.port, console)
        started = time.monotonic()
        try:
            while not chain.sensor_done():
                if (failed := chain.failed()) is not None:
                    raise RuntimeError(f"posture {failed} stopped:\n{chain.log(failed)[-1500:]}")
                if args.seconds and time.monotonic() - started > args.seconds:
                    break
                time.sleep(0.5)
            if chain.sensor_failed():  # not its scenario's end: said with why, not as "scenario over"
                raise RuntimeError(f"posture sim stopped:\n{chain.log('sim')[-1500:]}")
            console.line("scenario over: stopping the sensor and flushing the last minute …")
            chain.finish()
        finally:
            watcher.loop_stop()
            console.close()
        _summary(chain, started_s)
        return _report(chain, workdir)


class Console:
    """The demo's output: lines that stay (events, minutes, alerts) and one live-state line that changes.

    On a terminal the live line is rewritten in place (carriage return, clear to end of line) and kept
    below the others: a line that stays first wipes it, is printed, and the live line is drawn again.
    Elsewhere (a CI log) nothing is rewritten, so the live line is printed as a line of its own, only
    when its state changes (activity, calibration, slouching, leaning) or every QUIET_S otherwise.
    """

    QUIET_S = 30.0  # without a terminal: the longest a live line is held back when its state stays the same
    CLEAR = "\r\x1b[K"  # back to the line's start, erase to its end

    def __init__(self, out: TextIO, *, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.terminal = out.isatty() if terminal is None else terminal
        self.clock = clock
        self.lock = threading.Lock()
        self.live_text = ""  # on a terminal: the live line now on screen ("" when none)
        self.live_key: object = None
        self.live_printed_s = -float("inf")

    def line(self, text: str) -> None:
        with self.lock:
            if self.live_text:
                self.out.write(self.CLEAR)
            self.out.write(text + "\n")
            if self.live_text:
                self.out.write(self.live_text)
            self.out.flush()

    def live(self, text: str, key: object) -> None:
        """The live state now; `key` is its discrete part (a change prints it at once without a terminal)."""
        with self.lock:
            if self.terminal:
                width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be rewritten in place
                self.live_text = text[:max(width, 20)]
                self.out.write(self.CLEAR + self.live_text)
            elif key != self.live_key or self.clock() - self.live_printed_s >= self.QUIET_S:
                self.live_key, self.live_printed_s = key, self.clock()
                self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        """Leave the last live state on screen as a line of its own."""
        with self.lock:
            if self.live_text:
                self.out.write("\n")
                self.out.flush()
            self.live_text = ""


def _watch(port: int, console: Console) -> mqtt.Client:
    """Print what the phone, the database and Home Assistant get, as it arrives."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="posture-demo-watch")
    last_status_s = [0.0]

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.split("/", 2)[-1]
        if kind == "status":  # every 10 s on the wire; once a minute is enough to read
            if time.monotonic() - last_status_s[0] < 60:
                return
            last_status_s[0] = time.monotonic()
        try:
            doc = json.loads(msg.payload)
            if kind == "live":
                console.live(describe_live(doc), live_key(doc))
                return
            line = _describe(kind, doc)
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if line:
            console.line(line)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe([(f"posture/{DEVICE}/events", 1), (f"posture/{DEVICE}/metrics", 1),
                      (f"posture/{DEVICE}/alerts", 1), (f"posture/{DEVICE}/status", 0), ("posture/+/live", 0)])
    client.loop_start()
    return client


def describe_live(d: dict[str, Any]) -> str:
    """One line of a live state: time, activity, flexion, slouching (since when, how long), leaning, calibration."""
    at = _clock(d["ts"])
    flexion = d.get("flexion_deg")
    parts = [d.get("activity") or "–", "flexion –" if flexion is None else f"flexion {flexion:+.0f}°"]
    if (since := d.get("slouching_since_s")) is not None:
        parts.append(f"slouching since {_clock(since * 1000)} ({d['ts'] / 1000 - since:.0f} s)")
    elif flexion is not None:
        parts.append("upright")
    if (since := d.get("leaning_since_s")) is not None:
        parts.append(f"leaning {d.get('lean_side') or ''} since {_clock(since * 1000)}".replace("  ", " "))
    parts.append(d["calibration"])
    return f"{at}  now       " + ", ".join(parts)


def live_key(d: dict[str, Any]) -> tuple[Any, ...]:
    """The discrete part of a live state: what, when it changes, is worth a line in a log."""
    return (d.get("device"), d.get("activity"), d.get("calibration"), d.get("slouching_since_s") is not None,
            d.get("lean_side") if d.get("leaning_since_s") is not None else None)


def _clock(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%H:%M:%S")


def _describe(kind: str, d: dict[str, Any]) -> str | None:
    at = _clock(d["ts"])
    if kind == "events" and d["kind"] == "calibration":
        return f"{at}  calibration {d['status']}: {d['message']}"
    if kind == "events" and d["kind"] == "slouch":
        return f"{at}  slouch    {d['duration_s']:5.1f} s, flexion up to {d['peak_flexion_deg']:.0f}° (+ forward)"
    if kind == "events" and d["kind"] == "rotation":
        return f"{at}  rotation  {d['side']:5s} {d['peak_deg']:4.0f}°"
    if kind == "events" and d["kind"] == "episode_start":  # confirmed while it goes on; its end comes later
        side = f" {d['side']}" if d.get("side") else ""
        return f"{at}  {d['episode']:9s} under way{side} (confirmed after {d['confirmed_after_s']:.0f} s)"
    if kind == "events" and d["kind"] == "lean":
        return f"{at}  lean      {d['side']:5s} {d['duration_s']:5.1f} s at {d['mean_lateral_deg']:+.0f}° (+ right)"
    if kind == "metrics":
        flexion = "–" if d["flexion_mean_deg"] is None else f"{d['flexion_mean_deg']:+.1f}°"
        return (f"{at}  minute    worn {d['worn_s']:.0f} s, slouched {d['slouch_s']:.0f} s, "
                f"sitting {d['sitting_s']:.0f} s, mean flexion {flexion}, "
                f"rotations L{d['rotations_left']}/R{d['rotations_right']}")
    if kind == "alerts":
        stretch = (f"\n          → {d['stretch']['name']}: {' '.join(d['stretch']['steps'][:2])} …"
                   if d["stretch"] else "")
        return f"{at}  ALERT     {d['title']}: {d['message']}{stretch}"
    if kind == "status" and d.get("online"):
        return f"{at}  sensor    battery {d['battery_pct']}%, link {d['link_quality_pct']}%"
    return None


def _summary(chain: Chain, started_s: float) -> None:
    lines = summary_lines(chain.rows, started_s)
    if not lines:
        print("summary: nothing reached InfluxDB; see the logs in the work dir")
        return
    print("\nsummary (from InfluxDB):", *lines, sep="\n")
    print(kept_line(chain.influx))


def kept_line(influx: InfluxDB1) -> str:
    """Where the data is once the demo has ended. "It stays in InfluxDB at http://127.0.0.1:… until the demo ends"
    was printed as the demo ended: the address answered nothing by the time anyone read it."""
    return (f"  all of it stays in InfluxDB database {DATABASE!r} in {influx.workdir}; to read it after the demo, "
            f"`influxd run -config {influx.config_path}` serves it again at {influx.url}")


def summary_lines(rows: Callable[[str], list[dict[str, Any]]], started_s: float) -> list[str]:
    """This run's totals and alerts, read back from InfluxDB with `rows` (a query's rows); [] when none arrived.

    This run's only: a --workdir used before holds the runs before in its InfluxDB, which the summary counted as
    this one's. Its points begin with the minute it started in (a minute's time is its start)."""
    where = f"WHERE device_id = '{DEVICE}' AND time >= {int(started_s // 60 * 60)}s"
    minutes = rows(f"SELECT * FROM {MEASUREMENT['metrics']} {where}")
    alerts = rows(f"SELECT kind, text FROM {ALERT_MEASUREMENT} {where}")
    if not minutes:
        return []
    t = day_totals(minutes)
    si = t.rotation_symmetry_index
    nudges, other = [a for a in alerts if is_nudge(a["kind"])], [a for a in alerts if not is_nudge(a["kind"])]
    return [
        f"  worn {t.worn_s / 60:.1f} min, sitting {t.activity_s['sitting'] / 60:.1f} min, "
        f"slouched {t.slouch_s / 60:.1f} min ({t.slouch_pct_of_worn:.0f}% of worn time)"
        if t.slouch_pct_of_worn is not None else "  not worn",
        f"  trunk rotations left {t.rotations['left']}, right {t.rotations['right']}, symmetry index "
        f"{'–' if si is None else f'{si:+.0f}%'} (+ right-dominant); "
        f"lean left {t.lean_s['left']:.0f} s, right {t.lean_s['right']:.0f} s",
        f"  alerts {len(nudges)}" + (": " + ", ".join(sorted({a['kind'] for a in nudges})) if nudges else "")
        + (f"; and {len(other)} not counted as alerts: " + ", ".join(sorted({a['kind'] for a in other}))
           if other else ""),
    ]


def _report(chain: Chain, workdir: Path) -> int:
    from report.cli import write_report  # matplotlib loads only here

    out = workdir / "report.png"
    day = datetime.now().date().isoformat()
    try:
        write_report(chain.influx.url, DATABASE, DEVICE, day, out, None)
    except (ValueError, RuntimeError) as exc:  # no data; InfluxDB not answering
        print(f"report: {exc}")
        return 1
    print(f"report: {out}")
    return 0
