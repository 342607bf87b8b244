"""Pipeline replay throughput on one core against VQF alone and ahrs' Madgwick, and memory over 24 hours.

    .venv/bin/python benchmarks/pipeline_throughput.py [--minutes 60] [--batch-minutes 10] [--hours 24] [--write]

Throughput: an hour of the office-day scenario (360 000 samples at 100 Hz), generated once, fed
in one-minute batches (a replay's chunking) to the whole pipeline, to VQF alone, and to ahrs'
Madgwick filter, in the same process. By batch size: the first `--batch-minutes` of the same data
fed a notification (5 samples), a quarter second, the gateway's batch (`gateway.pipeline_batch_s`,
1 s: 100 samples) and a minute at a time, to the pipeline and to VQF alone: the pipeline's cost per
call, which the live gateway pays, against VQF's. Memory: a 24-hour day generated and fed chunk by
chunk; resident memory (pipeline and simulator) is read every simulated hour and must stay flat.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as the issue asks

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from evaluation.doc_sections import write_measurement  # noqa: E402
from firmware_sim.imu import SensorSimulation  # noqa: E402
from firmware_sim.scenario import load_scenario, parse_scenario  # noqa: E402
from pipeline.orientation import OrientationFilter  # noqa: E402
from pipeline.stream import PosturePipeline  # noqa: E402
from service_io.config import GatewaySettings  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BATCH = 6000  # one minute at 100 Hz
RATE_HZ = 100.0
GATEWAY_BATCH = round(GatewaySettings().pipeline_batch_s * RATE_HZ)  # what `posture run` hands the pipeline
BATCH_SIZES = (5, 25, GATEWAY_BATCH, BATCH)  # a notification, a quarter second, the gateway's batch, a minute


def office_hours(minutes: float):
    base = load_scenario("office-day")
    return base.truncated(minutes * 60.0)


def timed(fn, n: int) -> float:
    """Samples per second of CPU time, the best of three runs."""
    best = np.inf
    for _ in range(3):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return n / best


def whole_pipeline(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray, batch: int) -> None:
    p = PosturePipeline()
    for i in range(0, len(t), batch):
        p.update(t[i:i + batch], acc[i:i + batch], gyro[i:i + batch])
    p.finish()


def vqf_alone(acc: np.ndarray, gyro: np.ndarray, batch: int) -> None:
    f = OrientationFilter()
    for i in range(0, len(acc), batch):
        f.update(gyro[i:i + batch], acc[i:i + batch])


def office_samples(minutes: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = SensorSimulation(office_hours(minutes), seed=1)
    chunk = next(sim.chunks(max_samples=sim.n_samples))
    return chunk.t_s, chunk.acc_g, chunk.gyro_dps


def throughput(minutes: float) -> dict:
    t, acc, gyro = office_samples(minutes)
    n = len(t)
    pipeline_sps = timed(partial(whole_pipeline, t, acc, gyro, BATCH), n)
    vqf_sps = timed(partial(vqf_alone, acc, gyro, BATCH), n)
    from ahrs.filters import Madgwick

    m = 60_000  # Madgwick in ahrs is a Python loop per sample: time a minute's worth … ten of them
    start = time.process_time()
    Madgwick(gyr=np.radians(gyro[:m]), acc=acc[:m] * 9.80665, frequency=100.0)
    madgwick_sps = m / (time.process_time() - start)
    return {"samples": n, "pipeline_samples_per_s": pipeline_sps, "vqf_samples_per_s": vqf_sps,
            "madgwick_samples_per_s": madgwick_sps, "ratio_pipeline_to_vqf": pipeline_sps / vqf_sps,
            "ratio_pipeline_to_madgwick": pipeline_sps / madgwick_sps}


def by_batch_size(minutes: float) -> list[dict]:
    """Per batch size: µs per update() call of the pipeline and of VQF alone, and their throughput ratio."""
    t, acc, gyro = office_samples(minutes)
    n, rows = len(t), []
    for batch in BATCH_SIZES:
        pipeline_sps = timed(partial(whole_pipeline, t, acc, gyro, batch), n)
        vqf_sps = timed(partial(vqf_alone, acc, gyro, batch), n)
        rows.append({"batch": batch, "pipeline_us_per_call": batch / pipeline_sps * 1e6,
                     "vqf_us_per_call": batch / vqf_sps * 1e6, "ratio_pipeline_to_vqf": pipeline_sps / vqf_sps,
                     "core_pct_per_sensor_at_100hz": RATE_HZ / pipeline_sps * 100})
        print(rows[-1], flush=True)
    return rows


def memory(hours: float) -> dict:
    day = parse_scenario({"name": "day", "repeat": max(1, round(hours * 10)),
                          "segment": [dict(activity=s.activity, duration_s=s.duration_s)
                                      for s in office_hours(6.0).segments]})
    sim = SensorSimulation(day, seed=2)
    p = PosturePipeline()
    me = psutil.Process()
    rss_mb, next_mark, samples = [], 3600.0, 0
    start = time.monotonic()
    for ch in sim.chunks(max_samples=BATCH):
        p.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        samples += len(ch.t_s)
        if ch.t_s[-1] + 1.0 / sim.rate_hz >= next_mark:
            rss_mb.append(me.memory_info().rss / 2**20)  # resident now (the simulator's too)
            next_mark += 3600.0
    p.finish()
    return {"hours": sim.duration_s / 3600, "samples": samples, "peak_rss_mb_by_hour": rss_mb,
            "wall_s": time.monotonic() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the throughput data")
    parser.add_argument("--batch-minutes", type=float, default=10.0, help="length of the data fed by batch size")
    parser.add_argument("--hours", type=float, default=24.0, help="length of the memory run")
    parser.add_argument("--write", action="store_true", help=f"write the results into {DOC}")
    args = parser.parse_args()
    mem = memory(args.hours)  # first: nothing else has grown the process yet
    print(mem, flush=True)
    tp = throughput(args.minutes)
    print(tp, flush=True)
    sizes = by_batch_size(args.batch_minutes)
    rss = mem["peak_rss_mb_by_hour"]
    text = (f"| what | samples/s (one core) |\n|---|---|\n"
            f"| whole pipeline (1-minute batches) | {tp['pipeline_samples_per_s']:,.0f} |\n"
            f"| VQF alone, same data, same batches | {tp['vqf_samples_per_s']:,.0f} |\n"
            f"| ahrs Madgwick (per-sample Python loop) | {tp['madgwick_samples_per_s']:,.0f} |\n\n"
            f"Pipeline / VQF = {tp['ratio_pipeline_to_vqf']:.2f} (goal ≥ 0.6, issue 14; ≥ 0.8 earlier); "
            f"pipeline / Madgwick = "
            f"{tp['ratio_pipeline_to_madgwick']:.0f}×; {tp['samples']:,} samples of the office-day scenario.\n\n"
            f"By batch size ({args.batch_minutes:g} minutes of the same data; `posture run` hands the pipeline "
            f"{GATEWAY_BATCH} samples a call, where the goal is pipeline / VQF ≥ 0.3):\n\n"
            f"| samples per call | pipeline µs per call | VQF alone µs per call | pipeline / VQF "
            f"| pipeline, % of a core per sensor at 100 Hz |\n|---|---|---|---|---|\n"
            + "".join(f"| {r['batch']} | {r['pipeline_us_per_call']:,.0f} | {r['vqf_us_per_call']:,.1f} "
                      f"| {r['ratio_pipeline_to_vqf']:.3f} | {r['core_pct_per_sensor_at_100hz']:.3f} |\n"
                      for r in sizes) + "\n"
            f"{mem['hours']:g}-hour replay at 100 Hz ({mem['samples']:,} samples, {mem['wall_s']:.0f} s): "
            f"resident memory by hour "
            f"{', '.join(f'{x:.0f}' for x in rss)} MB — first hour {rss[0]:.0f} MB, last {rss[-1]:.0f} MB.\n")
    print(text)
    if args.write:
        write_measurement(DOC, "pipeline_throughput", text,
                          f"benchmarks/pipeline_throughput.py --minutes {args.minutes:g} "
                          f"--batch-minutes {args.batch_minutes:g} --hours {args.hours:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
