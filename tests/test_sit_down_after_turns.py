"""Sitting straight down after a walk of tight turns (pipeline/activity.py, `_up_both_ways`) or into fidgeting
(`_close_if_quiet`), through the virtual sensor and the whole pipeline, and the gyro's turns the first is built on
(pipeline/gyro_turns.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import parse_scenario
from pipeline.angles import SensorAttitude
from pipeline.calibration import Calibration
from pipeline.gyro_turns import turn_quaternion, turns_to_last
from pipeline.stream import PosturePipeline


def test_the_turns_to_the_last_sample_carry_a_world_direction_back_to_each_sample():
    rng = np.random.default_rng(3)
    turn = rng.normal(0.0, 0.02, (500, 3))  # rad a sample: about 1 rad/s at 50 Hz
    attitude = [Rotation.identity()]
    for step in turn[1:]:  # row i is the turn from sample i − 1 to i, in the sensor's own axes
        attitude.append(attitude[-1] * Rotation.from_rotvec(step))
    up = np.array([r.inv().apply([0.0, 0.0, 1.0]) for r in attitude])  # world up in sensor axes
    to_last = turns_to_last(turn)
    r = SensorAttitude.of(to_last)
    assert np.abs(np.column_stack([r.row0 @ up[-1], r.row1 @ up[-1], r.row2 @ up[-1]]) - up).max() < 1e-12
    back = r.row0 * up[:, :1] + r.row1 * up[:, 1:2] + r.row2 * up[:, 2:]  # Rᵀ: each sample's axes to the last's
    assert np.abs(back - up[-1]).max() < 1e-12
    assert np.abs(np.abs(turn_quaternion(turn[1:]) @ to_last[0]) - 1.0) < 1e-12  # the whole turn, the same way


# Walks of tight turns all to one side at a brisk pace (the centripetal acceleration of each turn pulls the orientation
# filter's tilt, and the gyro bias it then learns is off by up to 2 °/s), ending straight in a chair: a sensor of
# random biases (seeds and figures of a sweep of 40 such walks, in the docstring of `_up_both_ways`), where the
# filter's up alone read the 0.45 m fall as 0.1-0.19 m and the wearer stayed "standing" for the whole sitting bout.
TIGHT_TURNS = [  # (seed, walk, sit-down s, sensor)
    (803, dict(duration_s=293, turn_every_s=6.5, turn_deg=164, turn_side="left", turn_s=1.4, speed_m_s=1.4,
               step_hz=1.84, flexion_deg=8.6), 3.3, dict(gyro_bias_dps=0.86, acc_bias_g=0.027, gyro_scale_error=0.008)),
    (821, dict(duration_s=277, turn_every_s=8.6, turn_deg=174, turn_side="right", turn_s=1.1, speed_m_s=1.55,
               step_hz=1.84, flexion_deg=13.6), 2.7, dict(gyro_bias_dps=1.36, acc_bias_g=0.001, acc_scale_error=0.01)),
    (828, dict(duration_s=242, turn_every_s=7.5, turn_deg=177, turn_side="right", turn_s=1.5, speed_m_s=1.56,
               step_hz=1.73, flexion_deg=18.5), 2.1,
     dict(gyro_bias_dps=1.46, acc_bias_g=0.005, gyro_scale_error=0.003)),
    (837, dict(duration_s=279, turn_every_s=5.2, turn_deg=143, turn_side="right", turn_s=1.0, speed_m_s=1.51,
               step_hz=1.88, flexion_deg=0.9), 3.4, dict(gyro_bias_dps=0.15, acc_bias_g=0.03, acc_scale_error=0.01)),
]


def _activity(seed: int, sensor: dict, walk: dict, *after: dict) -> tuple[np.ndarray, np.ndarray]:
    """Time and activity of a calibrated pipeline fed the gateway's one-second batches: seated 20 s, standing 10 s,
    the walk from 30 s, then what comes after it."""
    sim = SensorSimulation(parse_scenario({"name": "walk", "sensor": sensor, "segment": [
        {"activity": "sit_upright", "duration_s": 20.0},
        {"activity": "stand", "duration_s": 10.0, "transition_s": 2.0},
        {"activity": "walk", "transition_s": 1.0, **walk}, *after]}), seed=seed)
    pipeline = PosturePipeline(calibration=Calibration(sim.r_trunk_sensor.T, with_bend=True))
    t, activity = [], []
    for chunk in sim.chunks(max_samples=100):
        out = pipeline.update(chunk.t_s, chunk.acc_g, chunk.gyro_dps)
        t.append(out.t_s)
        activity.append(out.activity)
    return np.concatenate(t), np.concatenate(activity)


@pytest.mark.parametrize(("seed", "walk", "sit_s", "sensor"), TIGHT_TURNS)
def test_sitting_straight_down_after_a_walk_of_tight_turns_is_seen(seed, walk, sit_s, sensor):
    t_s, names = _activity(seed, sensor, walk, {"activity": "sit_upright", "duration_s": 40.0, "transition_s": sit_s})
    walk_end_s = 30.0 + walk["duration_s"]
    assert (names[(t_s > walk_end_s - 60.0) & (t_s < walk_end_s - 10.0)] == "walking").mean() > 0.9
    assert (names[t_s > walk_end_s + 15.0] == "sitting").all()


# Stops on the feet after a walk, where the gyro's up is not to be trusted (found by a review and an attack of the
# change): a trunk twist in the second after the stop, and a standing fidget, whose turning in the rest after, taken
# off as gyro bias, tilted the gyro's up by 8-40° and read a 0.3-1.3 m fall: the wearer "sitting" all the while.
STOPS_ON_THE_FEET = [  # (seed, walk, what follows the walk on the feet, sensor)
    (2, dict(duration_s=60, turn_every_s=10, turn_deg=90, speed_m_s=1.3, flexion_deg=20),
     {"activity": "rotate", "duration_s": 15.0, "standing": True, "left_count": 1, "right_count": 0,
      "left_peak_deg": 60, "speed_dps": 60, "pause_s": 2.5, "hold_s": 5.0, "flexion_deg": 0},
     dict(gyro_bias_dps=0.3, acc_bias_g=0.01)),
    (818, dict(duration_s=131, turn_every_s=6.5, turn_deg=121, turn_side="right", turn_s=1.5, speed_m_s=1.38,
               flexion_deg=4.0),
     {"activity": "fidget", "duration_s": 15.0, "standing": True, "amplitude_deg": 6.1, "moves_per_min": 43.6},
     dict(gyro_bias_dps=1.47)),
]


@pytest.mark.parametrize(("seed", "walk", "then", "sensor"), STOPS_ON_THE_FEET)
def test_a_stop_on_the_feet_after_a_walk_stays_standing(seed, walk, then, sensor):
    t_s, names = _activity(seed, sensor, walk, {"transition_s": 1.0, **then},
                           {"activity": "stand", "duration_s": 30.0, "transition_s": 1.0})
    walk_end_s = 30.0 + walk["duration_s"]
    assert (names[(t_s > walk_end_s + 3.0) & (t_s < walk_end_s + 40.0)] == "standing").all()


# A walk, then (B) a stand of 8.7 s, then sitting down straight into fidgeting (shifting about on the seat, the trunk
# tilting 4.5-4.7° back and forth 32-45 times a minute): the trunk never settled, the movement was never judged, and the
# whole sitting bout read standing (these 5 of 16 seeds of the two, the simulator's default sensor; none now).
WALK_TO_A_FIDGET = dict(duration_s=95.0, speed_m_s=1.08, step_hz=1.9, flexion_deg=1.8, turn_every_s=9.0,
                        turn_deg=154.0, turn_s=2.3)
STAND_TO_A_FIDGET = dict(duration_s=60.0, speed_m_s=1.14, step_hz=2.0, flexion_deg=7.4, turn_every_s=4.5,
                         turn_deg=120.0, turn_side="left", turn_s=1.5)
INTO_FIDGETING = [  # (seed, walk, what comes between, sit-down s, fidget amplitude °, fidget moves a minute)
    (2, WALK_TO_A_FIDGET, [], 1.76, 4.5, 45.3),
    (5, WALK_TO_A_FIDGET, [], 1.76, 4.5, 45.3),
    (1, STAND_TO_A_FIDGET, [{"activity": "stand", "duration_s": 8.7, "transition_s": 1.0}], 2.7, 4.7, 31.9),
    (2, STAND_TO_A_FIDGET, [{"activity": "stand", "duration_s": 8.7, "transition_s": 1.0}], 2.7, 4.7, 31.9),
    (7, STAND_TO_A_FIDGET, [{"activity": "stand", "duration_s": 8.7, "transition_s": 1.0}], 2.7, 4.7, 31.9),
]


@pytest.mark.parametrize(("seed", "walk", "between", "sit_s", "amplitude_deg", "per_min"), INTO_FIDGETING)
def test_sitting_straight_down_into_fidgeting_is_seen(seed, walk, between, sit_s, amplitude_deg, per_min):
    t_s, names = _activity(seed, {}, walk, *between, {"activity": "fidget", "duration_s": 40.0, "transition_s": sit_s,
                                                      "amplitude_deg": amplitude_deg, "moves_per_min": per_min})
    sit_down_s = 30.0 + walk["duration_s"] + sum(b["duration_s"] for b in between)
    assert (names[t_s > sit_down_s + 15.0] == "sitting").all()
