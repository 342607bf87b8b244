"""One evaluation run: a scenario through the virtual sensor, the link and the client, into the pipeline.

The pipeline is fed exactly as `posture run` feeds it: notifications decoded by the client
(`evaluation/live_feed.py`), collected into `gateway.pipeline_batch_s` batches by the gateway's own
`BatchCollector` (0 s: every notification on its own). Everything the pipeline says is kept, with
the truth of every sample, for `evaluation/accuracy.py` to score.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from firmware_sim.imu import SensorSimulation
from firmware_sim.randomday import parse_spec, random_day
from firmware_sim.scenario import SCENARIO_DIR, Scenario, parse_scenario
from pipeline.events import CalibrationEvent, MinuteMetrics
from pipeline.stream import PipelineOutput, PipelineSettings, PosturePipeline
from sensor.batching import BatchCollector
from sensor.stream import ImuBatch

from .live_feed import HOST_EPOCH_S, Fed, LinkModel, LinkStats, LiveLink

# The calibration the app asks for (sit upright and still, bend forward once, sit up), and the ways
# wearers really do it. Each list is prepended to a named case's scenario.
_HOLD = {"activity": "sit_upright", "duration_s": 6.0}
_BEND = {"activity": "slouch", "duration_s": 2.5, "flexion_deg": 30.0, "ramp_s": 0.8}
CALIBRATIONS: dict[str, list[dict[str, Any]]] = {
    "good": [_HOLD, _BEND, {"activity": "sit_upright", "duration_s": 6.0}],
    "hunched": [{**_HOLD, "flexion_deg": 8.0}, _BEND,
                {"activity": "sit_upright", "duration_s": 6.0, "flexion_deg": 8.0}],
    "shallow": [_HOLD, {**_BEND, "flexion_deg": 11.0}, {"activity": "sit_upright", "duration_s": 6.0}],
    "moving": [{"activity": "sit_upright", "duration_s": 1.5},
               {"activity": "fidget", "duration_s": 6.0, "amplitude_deg": 4.0, "moves_per_min": 40.0},
               _HOLD, _BEND, {"activity": "sit_upright", "duration_s": 6.0}],
    "sideways": [_HOLD, {**_BEND, "lean_deg": 12.0}, {"activity": "sit_upright", "duration_s": 6.0}],
    # Under the 8° a bend must reach: no calibration yet, and the hold after it is the next one's.
    "too-shallow": [_HOLD, {**_BEND, "flexion_deg": 6.0}, {"activity": "sit_upright", "duration_s": 6.0}],
}
CALIBRATION_MOVES = CALIBRATIONS["good"]


@dataclass(frozen=True)
class Case:
    name: str
    scenario: str  # a scenario name, or random:SEED:HOURS
    seed: int
    what: str = ""
    sensor: dict[str, Any] = field(default_factory=dict)  # [sensor] overrides
    loss_p: float = 0.0  # each notification lost independently
    outages_s: tuple[tuple[float, float], ...] = ()  # out of range (start_s, duration_s)
    profile: str = "native"
    calibration: str | None = "good"  # moves prepended; None: the scenario brings its own
    batch_s: float = 1.0  # the gateway's pipeline batch (0: every notification)


def load_case_scenario(case: Case) -> Scenario:
    if (spec := parse_spec(case.scenario)) is not None:
        return random_day(*spec)  # its own calibration; sensor overrides go to the simulation
    path = SCENARIO_DIR / f"{case.scenario}.toml"
    data = tomllib.loads(path.read_text())
    moves = CALIBRATIONS[case.calibration] if case.calibration else []
    data["segment"] = moves + data["segment"] * data.pop("repeat", 1)
    shift_s = sum(m["duration_s"] for m in moves)
    for slip in data.get("slip", []):
        slip["start_s"] = slip["start_s"] + shift_s
    data["sensor"] = {**data.get("sensor", {}), **case.sensor}
    if "mount_euler_deg" in case.sensor:
        data["sensor"]["mount_max_deg"] = 0.0
    return parse_scenario(data, default_name=case.name, where=str(path))


@dataclass
class Calibrated:
    """A calibration event, with the pipeline's sensor → trunk estimate when it calibrated."""

    t_s: float  # simulation time
    status: str
    message: str
    r_sensor_trunk: np.ndarray | None


@dataclass
class Run:
    case: Case
    sim: SensorSimulation
    dt_s: float
    truth: dict[str, np.ndarray]  # every sample: t_s, flexion_deg, lateral_deg, rotation_deg, context
    received: np.ndarray  # bool per sample: reached the pipeline
    out_index: np.ndarray  # sample index of every sample the pipeline measured
    out: dict[str, np.ndarray]  # flexion_deg, lateral_deg, rotation_deg, activity (per out_index)
    events: list[Any]  # pipeline events, times converted to simulation seconds
    metrics: list[MinuteMetrics]
    calibrations: list[Calibrated]
    link: LinkStats
    pipeline: PosturePipeline


def run_case(case: Case, link: LinkModel | None = None) -> Run:
    sim = SensorSimulation(load_case_scenario(case), seed=case.seed,
                           **({} if parse_spec(case.scenario) is None else case.sensor))
    link = link or LinkModel(profile=case.profile, loss_p=case.loss_p, outages_s=case.outages_s, seed=case.seed)
    feed = LiveLink(sim.rate_hz, link)
    pipeline = PosturePipeline(PipelineSettings.for_rate(sim.rate_hz))
    collector = BatchCollector(case.batch_s, sim.rate_hz)
    n = sim.n_samples
    truth = {"t_s": np.empty(n), "flexion_deg": np.empty(n, np.float32), "lateral_deg": np.empty(n, np.float32),
             "rotation_deg": np.empty(n, np.float32), "context": np.empty(n, "<U8")}
    received = np.zeros(n, bool)
    host_t, host_idx = [], []
    outs: list[PipelineOutput] = []
    calibrations: list[Calibrated] = []
    last_arrival = -np.inf

    def process(batch: ImuBatch) -> None:
        before = pipeline.calibration
        res = pipeline.update(batch.t_s, batch.acc_g, batch.gyro_dps, batch.lost_before)
        outs.append(res)
        for e in res.events:
            if isinstance(e, CalibrationEvent):
                cal = pipeline.calibration if e.status == "calibrated" and pipeline.calibration is not before else None
                calibrations.append(Calibrated(e.t_s, e.status, e.message,
                                               None if cal is None else cal.r_sensor_trunk.copy()))

    def take(fed: Fed, last_arrival: float) -> float:
        # The gateway's pump lets go of held samples once the link has been quiet for a batch.
        if fed.arrival_s - last_arrival > case.batch_s and (held := collector.take()) is not None:
            process(held)
        received[fed.index] = True
        host_t.append(fed.batch.t_s)
        host_idx.append(fed.index)
        if (ready := collector.add(fed.batch)) is not None:
            process(ready)
        return fed.arrival_s

    for chunk in sim.chunks(max_samples=20_000):
        sl = slice(int(chunk.index[0]), int(chunk.index[-1]) + 1)
        truth["t_s"][sl], truth["context"][sl] = chunk.t_s, chunk.context
        for k in ("flexion_deg", "lateral_deg", "rotation_deg"):
            truth[k][sl] = getattr(chunk, k)
        for fed in feed.feed(chunk):
            last_arrival = take(fed, last_arrival)
    for fed in feed.finish():
        last_arrival = take(fed, last_arrival)
    if (held := collector.take()) is not None:
        process(held)
    outs.append(pipeline.finish())

    host_t_all, host_idx_all = np.concatenate(host_t), np.concatenate(host_idx)
    out_t = np.concatenate([o.t_s for o in outs])
    out_index = _index_of(out_t, host_t_all, host_idx_all)
    to_sim = _time_map(host_t_all, truth["t_s"][host_idx_all])
    events = [_to_sim_time(e, to_sim) for o in outs for e in o.events]
    for c in calibrations:
        c.t_s = float(to_sim(c.t_s))
    return Run(case, sim, 1.0 / sim.rate_hz, truth, received, out_index,
               {k: np.concatenate([getattr(o, k) for o in outs])
                for k in ("flexion_deg", "lateral_deg", "rotation_deg", "activity")},
               events, [m for o in outs for m in o.metrics], calibrations, feed.stats, pipeline)


def _index_of(out_t: np.ndarray, host_t: np.ndarray, host_idx: np.ndarray) -> np.ndarray:
    """Sample index of each measured sample: the pipeline passes real samples' times through unchanged."""
    if np.all(np.diff(host_t) > 0):
        pos = np.searchsorted(host_t, out_t)
        pos = np.clip(pos, 0, len(host_t) - 1)
        if np.array_equal(host_t[pos], out_t):
            return host_idx[pos]
    lookup = {t: i for t, i in zip(host_t.tolist(), host_idx.tolist())}
    return np.array([lookup[t] for t in out_t.tolist()], dtype=np.int64)


def _time_map(host_t: np.ndarray, sim_t: np.ndarray) -> Callable[[float | np.ndarray], float | np.ndarray]:
    """Host time → simulation time, by the samples that went through (the clock map's own error included)."""
    order = np.argsort(host_t, kind="stable")
    h, s = host_t[order], sim_t[order]

    def to_sim(t: float | np.ndarray) -> float | np.ndarray:
        return np.interp(t, h, s, left=np.nan, right=np.nan) if np.ndim(t) else (
            float(np.interp(t, h, s)) if h[0] <= t <= h[-1] else float(t - HOST_EPOCH_S))
    return to_sim


def _to_sim_time(event: Any, to_sim: Callable[[float | np.ndarray], float | np.ndarray]) -> Any:
    fields = {k: to_sim(getattr(event, k)) for k in ("t_s", "start_s", "end_s") if hasattr(event, k)}
    return replace(event, **fields)
