"""How late the real-time slouch nudge reaches the phone, through the real chain.

The whole chain as `posture demo` runs it (virtual BLE sensor through BlueZoo → `posture run` →
Mosquitto → `posture alerts`), on a scenario of N slouches each held past the wearer's delay. A
phone subscriber on `<prefix>/<device>/alerts` notes when each nudge arrives (this machine's clock);
the nudge's `ts` is the moment the delay was met in sensor time (host Unix time, as the gateway stamps
samples). Latency = arrival − ts: the gateway's batch, the pipeline, MQTT twice and the alert service.

    .venv/bin/python benchmarks/nudge_latency.py [--slouches 30] [--delay-s 8] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from evaluation.doc_sections import write_measurement
from posture.chain import DEVICE, Chain

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
OTHER_RULES = ("slouch", "rotation", "lean", "sitting", "calibration", "recovery")
CALIBRATION = """
[[segment]]
activity = "sit_upright"
duration_s = 6

[[segment]]
activity = "slouch"
duration_s = 2.5
flexion_deg = 30
ramp_s = 0.8

[[segment]]
activity = "sit_upright"
duration_s = 12
"""


def scenario(slouches: int, slouch_s: float, upright_s: float, seed: int) -> str:
    """Slouches of varied depth and onset: the delay is met at a different point of a batch each time."""
    rng = np.random.default_rng(seed)
    parts = ['name = "nudge-latency"', 'description = "slouches held past the delay"', "", "[sensor]",
             "gyro_bias_dps = 0.5", CALIBRATION]
    for _ in range(slouches):
        parts.append(f'[[segment]]\nactivity = "slouch"\nduration_s = {slouch_s + rng.uniform(0, 3):.2f}\n'
                     f"flexion_deg = {rng.uniform(22, 35):.1f}\nramp_s = {rng.uniform(1, 3):.2f}\n")
        parts.append(f'[[segment]]\nactivity = "sit_upright"\nduration_s = {upright_s + rng.uniform(0, 3):.2f}\n'
                     "transition_s = 2\n")
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slouches", type=int, default=30)
    ap.add_argument("--delay-s", type=float, default=8.0, help="the wearer's delay (slouch_now.delay_s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write", action="store_true", help="put the figures into docs/benchmarks.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nudge-latency-"))
    (work / "scenario.toml").write_text(scenario(args.slouches, args.delay_s + 10, 12, args.seed))
    rules = work / "rules.toml"
    # Only the nudge under test: no other rule, cap or quiet hours may hold one back or send another.
    rules.write_text("".join(f"[{section}]\nenabled = false\n" for section in OTHER_RULES)
                     + '[limits]\ndaily_cap = 10000\nquiet_hours = ""\n[habit]\nsummary_time = ""\n'
                     + f"[slouch_now]\ndelay_s = {args.delay_s}\ncooldown_min = 0.1\n")
    arrivals: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            arrivals.append((time.time(), json.loads(msg.payload)))

    with Chain(work / "chain", scenario=str(work / "scenario.toml"), rules=rules) as chain:
        chain.start()
        phone = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-phone", protocol=mqtt.MQTTv5)
        phone.on_message = on_message
        phone.connect("127.0.0.1", chain.broker.port)
        phone.subscribe(f"posture/{DEVICE}/alerts", 1)
        phone.loop_start()
        while not chain.sensor_done():
            if (failed := chain.failed()) is not None:
                print(chain.log(failed)[-2000:], file=sys.stderr)
                return 1
            time.sleep(1)
        chain.finish()
        phone.loop_stop()
    with lock:
        nudges = [(at, a) for at, a in arrivals if a["kind"] == "slouch_now"]
    if len(nudges) != args.slouches:
        # Each slouch is held past the delay: a missing nudge means the run broke (the virtual sensor
        # or BlueZoo stalled under load, seen once), and percentiles of the rest would hide that.
        print(f"{len(nudges)} nudges for {args.slouches} slouches; work dir {work}", file=sys.stderr)
        return 1
    latency_s = np.array([at - a["ts"] / 1000 for at, a in nudges])
    p50, p99 = np.percentile(latency_s, [50, 99])
    text = (f"| slouches | nudges | delay_s | p50 s | p99 s | max s |\n|---|---|---|---|---|---|\n"
            f"| {args.slouches} | {len(nudges)} | {args.delay_s:g} | {p50:.2f} | {p99:.2f} | {latency_s.max():.2f} |")
    print(text)
    if args.write:
        write_measurement(DOC, "nudge_latency", text,
                          f"benchmarks/nudge_latency.py --slouches {args.slouches} --delay-s {args.delay_s:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
