"""A scenario's MQTT messages, as the gateway would publish them: simulated sensor → pipeline → payloads.

For tests of what consumes the gateway's output (the alert service), minutes of data in a second.
"""

from __future__ import annotations

import tomllib

from contract.messages import payload
from evaluation.accuracy import CALIBRATION_MOVES
from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import SCENARIO_DIR, parse_scenario
from pipeline.live import LiveClock, live_message
from pipeline.stream import PosturePipeline


def scenario_messages(name: str, device: str, start_s: float, seed: int = 11,
                      extra_segments: list[dict] | None = None,
                      lost_at_s: float | None = None) -> list[tuple[str, dict]]:
    """(stream, payload) in publication order; the sensor's clock starts at start_s (Unix s). lost_at_s: the link is
    lost there (Unix s), as `posture run` finds it lost (pipeline link_lost): no sample from then on."""
    data = tomllib.loads((SCENARIO_DIR / f"{name}.toml").read_text())
    data["segment"] = CALIBRATION_MOVES + data["segment"] * data.pop("repeat", 1) + (extra_segments or [])
    sim = SensorSimulation(parse_scenario(data, default_name=name), seed=seed)
    pipeline = PosturePipeline()
    out = []
    for chunk in sim.chunks(max_samples=5000):
        t_s, acc_g, gyro_dps = chunk.t_s + start_s, chunk.acc_g, chunk.gyro_dps
        if lost_at_s is not None:
            t_s, acc_g, gyro_dps = t_s[t_s < lost_at_s], acc_g[t_s < lost_at_s], gyro_dps[t_s < lost_at_s]
        if len(t_s) == 0:
            break
        result = pipeline.update(t_s, acc_g, gyro_dps)
        out += [(_stream(item), payload(device, item)) for item in [*result.events, *result.metrics]]
    final = pipeline.link_lost() if lost_at_s is not None else pipeline.finish()
    out += [(_stream(item), payload(device, item)) for item in final.events + final.metrics]
    return out


def _stream(item) -> str:
    return "metrics" if item.kind == "metrics" else "events"


def slouchy_minute(device: str, t_s: float) -> dict:
    """A valid metrics payload of a minute worn sitting, 45 s of it slouched."""
    return {"schema": 1, "kind": "metrics", "device": device, "ts": int(t_s * 1000), "minute_start_s": t_s,
            "worn_s": 60.0, "sitting_s": 60.0, "standing_s": 0.0, "walking_s": 0.0, "lying_s": 0.0,
            "slouch_s": 45.0, "lean_left_s": 0.0, "lean_right_s": 0.0, "rotations_left": 0, "rotations_right": 0,
            "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0, "sitting_since_s": t_s,
            "lost_samples": 0, "flexion_mean_deg": 20.0, "lateral_mean_deg": 0.5, "lean_left_mean_deg": None,
            "lean_right_mean_deg": None, "rotation_left_peak_mean_deg": None, "rotation_right_peak_mean_deg": None,
            "rotation_left_peak_max_deg": None, "rotation_right_peak_max_deg": None}


def scenario_stream(name: str, device: str, start_s: float, live_hz: float, batch_s: float = 1.0, seed: int = 11,
                    extra_segments: list[dict] | None = None) -> list[tuple[str, dict]]:
    """(stream, payload) in publication order as `posture run` publishes a scenario: the pipeline handed batch_s of
    samples at a time, and after each batch its results and the live message due (gateway/service.py, pipeline
    live_message: with live_hz × batch_s above 1, the batch's earlier states ride along in `earlier`)."""
    data = tomllib.loads((SCENARIO_DIR / f"{name}.toml").read_text())
    data["segment"] = CALIBRATION_MOVES + data["segment"] * data.pop("repeat", 1) + (extra_segments or [])
    sim = SensorSimulation(parse_scenario(data, default_name=name), seed=seed)
    pipeline, clock = PosturePipeline(), LiveClock(live_hz, batch_s)
    out = []
    for chunk in sim.chunks(max_samples=max(1, round(batch_s * sim.rate_hz))):
        result = pipeline.update(chunk.t_s + start_s, chunk.acc_g, chunk.gyro_dps)
        out += [(_stream(item), payload(device, item)) for item in [*result.events, *result.metrics]]
        state = live_message(pipeline.live_state(), clock, result.t_s, result.flexion_deg, result.lateral_deg,
                             result.rotation_deg)
        if state is not None:
            out.append(("live", payload(device, state)))
    final = pipeline.finish()
    out += [(_stream(item), payload(device, item)) for item in final.events + final.metrics]
    return out
