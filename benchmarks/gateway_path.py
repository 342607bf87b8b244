"""Our own code's share of `posture run`'s CPU per sensor: notifications decoded, batched and processed, no radio.

`benchmarks/gateway_cpu.py` measures the whole gateway (bleak, D-Bus, asyncio, paho, kernel); this measures only
what our code does per sensor, so the two say where the rest goes. A random day of the simulator (its calibration
moves included, so the pipeline runs calibrated) is encoded by the native wire profile into the notifications a
sensor sends at 100 Hz (5 samples each), with arrival times; then, timed with the process's CPU clock, each
notification goes through the client's StreamDecoder, the gateway's BatchCollector (1 s batches) and the pipeline,
with a live state per batch, as `posture run` does per notification.

    .venv/bin/python benchmarks/gateway_path.py [--minutes 30] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import time

from firmware_sim.imu import SensorSimulation
from firmware_sim.profiles import StreamSettings, get_profile
from firmware_sim.scenario import load_scenario
from pipeline.stream import PipelineSettings, PosturePipeline
from sensor.batching import BatchCollector
from sensor.profiles import PROFILES, samples_per_notification
from sensor.stream import StreamDecoder

RATE_HZ = 100.0
HOST_EPOCH_S = 1_772_438_400.0
LATENCY_S = 0.0125  # a connection interval's worth: arrival after the last sample of a notification


def notifications(minutes: float, seed: int) -> list[tuple[bytes, float]]:
    sim = SensorSimulation(load_scenario(f"random:{seed}:{minutes / 60:g}"), seed=seed, rate_hz=RATE_HZ)
    wire = get_profile("native")
    settings = StreamSettings(rate_hz=RATE_HZ, samples_per_packet=samples_per_notification(RATE_HZ))
    per = wire.samples_per_packet(settings)
    out, seq = [], 0
    for chunk in sim.chunks(max_samples=20_000):
        packets = wire.encode_chunk(seq, chunk.t_sensor_us, chunk.acc_g, chunk.gyro_dps, chunk.euler_deg, settings)
        seq += len(packets)
        for k, packet in enumerate(packets):
            last = min((k + 1) * per, len(chunk)) - 1
            out.append((packet, HOST_EPOCH_S + float(chunk.t_s[last]) + LATENCY_S))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="of sensor data")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    feed = notifications(args.minutes, args.seed)
    sensor_s = feed[-1][1] - feed[0][1]
    decoder, collector = StreamDecoder("bench", PROFILES["native"], RATE_HZ), BatchCollector(1.0, RATE_HZ)
    pipeline = PosturePipeline(PipelineSettings.for_rate(RATE_HZ))
    decode_s = pipeline_s = 0.0
    for packet, arrival_s in feed:
        t0 = time.process_time()
        batch = decoder.feed(packet, arrival_s)
        ready = collector.add(batch) if batch is not None else None
        t1 = time.process_time()
        decode_s += t1 - t0
        if ready is not None:
            pipeline.update(ready.t_s, ready.acc_g, ready.gyro_dps, ready.lost_before)
            pipeline.live_state()
            pipeline_s += time.process_time() - t1
    calibrated = pipeline.calibration is not None
    print(f"{len(feed):,} notifications, {sensor_s / 60:.1f} min of sensor data at {RATE_HZ:g} Hz, "
          f"calibrated: {calibrated}")
    print("| part | % of a core per sensor | µs per notification |\n|---|---|---|")
    for name, used_s in (("decode + batch (sensor/)", decode_s), ("pipeline + live state", pipeline_s),
                         ("together", decode_s + pipeline_s)):
        print(f"| {name} | {100 * used_s / sensor_s:.3f} | {1e6 * used_s / len(feed):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
