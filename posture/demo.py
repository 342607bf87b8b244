"""`posture demo`: the whole product on the virtual sensor, no hardware needed.

Runs posture/chain.py — Mosquitto, InfluxDB, BlueZoo, the virtual sensor playing a compressed
office day, `posture run`, `posture bridge`, `posture alerts` with demo thresholds — prints what
travels over MQTT as it happens (events with their angles, each minute, alerts with their
stretch), then a summary of the day from InfluxDB and a report PNG. Ctrl-C, or the scenario's
end, stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contract.influx_schema import ALERT_MEASUREMENT, MEASUREMENT
from pipeline.summary import day_totals

from .chain import DATABASE, DEVICE, Chain


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="the whole chain on the virtual sensor: BLE → pipeline → MQTT → InfluxDB, alerts")
    p.add_argument("--scenario", default="office-demo", help="scenario name or TOML file (default office-demo)")
    p.add_argument("--profile", default="native", choices=("native", "witmotion", "thingy52"))
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (default: the scenario's end)")
    p.add_argument("--workdir", type=Path, help="keep logs, data and the report here (default: a temp dir)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="posture-demo-"))
    print(f"posture demo: work dir {workdir} (logs, data, report)", flush=True)
    with Chain(workdir, args.scenario, args.profile) as chain:
        print("starting Mosquitto, InfluxDB, posture bridge, posture alerts, BlueZoo, the virtual sensor, "
              "posture run …", flush=True)
        chain.start()
        watcher = _watch(chain.broker.port)
        started = time.monotonic()
        try:
            while not chain.sensor_done():
                if (failed := chain.failed()) is not None:
                    raise RuntimeError(f"posture {failed} stopped:\n{chain.log(failed)[-1500:]}")
                if args.seconds and time.monotonic() - started > args.seconds:
                    break
                time.sleep(0.5)
            print("scenario over: stopping the sensor and flushing the last minute …", flush=True)
            chain.finish()
        finally:
            watcher.loop_stop()
        _summary(chain)
        return _report(chain, workdir)


def _watch(port: int) -> mqtt.Client:
    """Print what the phone, the database and Home Assistant get, as it arrives."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="posture-demo-watch")
    lock = threading.Lock()
    last_status_s = [0.0]

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.split("/", 2)[-1]
        if kind == "status":  # every 10 s on the wire; once a minute is enough to read
            if time.monotonic() - last_status_s[0] < 60:
                return
            last_status_s[0] = time.monotonic()
        try:
            line = _describe(kind, json.loads(msg.payload))
        except (ValueError, KeyError, TypeError):
            return
        if line:
            with lock:
                print(line, flush=True)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe([(f"posture/{DEVICE}/events", 1), (f"posture/{DEVICE}/metrics", 1),
                      (f"posture/{DEVICE}/alerts", 1), (f"posture/{DEVICE}/status", 0)])
    client.loop_start()
    return client


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


def _summary(chain: Chain) -> None:
    where = f"WHERE device_id = '{DEVICE}'"
    minutes = chain.rows(f"SELECT * FROM {MEASUREMENT['metrics']} {where}")
    alerts = chain.rows(f"SELECT kind, text FROM {ALERT_MEASUREMENT} {where}")
    if not minutes:
        print("summary: nothing reached InfluxDB; see the logs in the work dir")
        return
    t = day_totals(minutes)
    si = t.rotation_symmetry_index
    print("\nsummary (from InfluxDB):")
    print(f"  worn {t.worn_s / 60:.1f} min, sitting {t.activity_s['sitting'] / 60:.1f} min, "
          f"slouched {t.slouch_s / 60:.1f} min ({t.slouch_pct_of_worn:.0f}% of worn time)"
          if t.slouch_pct_of_worn is not None else "  not worn")
    print(f"  trunk rotations left {t.rotations['left']}, right {t.rotations['right']}, symmetry index "
          f"{'–' if si is None else f'{si:+.0f}%'} (+ right-dominant); "
          f"lean left {t.lean_s['left']:.0f} s, right {t.lean_s['right']:.0f} s")
    print(f"  alerts {len(alerts)}: " + ", ".join(sorted({a['kind'] for a in alerts})))
    print(f"  all of it stays in InfluxDB database {DATABASE!r} at {chain.influx.url} until the demo ends")


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
