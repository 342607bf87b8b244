"""Calibration on simulated wearers: refusing movement, calibrating without a bend, noticing a shifted sensor."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from evaluation.accuracy import CASES, load_case_scenario
from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import load_scenario, parse_scenario
from pipeline.calibration import Calibration, CalibrationSettings
from pipeline.events import CalibrationEvent
from pipeline.orientation import OrientationFilter
from pipeline.stream import PosturePipeline


def run(sim: SensorSimulation, transform=None) -> list:
    pipeline = PosturePipeline()
    events = []
    for ch in sim.chunks(max_samples=1000):
        acc, gyro = ch.acc_g, ch.gyro_dps
        if transform is not None:
            acc, gyro = transform(ch.t_s, acc, gyro)
        events += pipeline.update(ch.t_s, acc, gyro).events
    return [e for e in events if e.kind == "calibration"]


def arrays(sim: SensorSimulation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole simulated stream: times, acceleration, rotation rate."""
    t, acc, gyro = (np.concatenate(x) for x in zip(*((c.t_s, c.acc_g, c.gyro_dps) for c in sim.chunks(100_000))))
    return t, acc, gyro


def up_error_deg(calibration: Calibration, true: Calibration) -> float:
    """Angle between a calibration's up axis and the true one."""
    return float(np.degrees(np.arccos(np.clip(calibration.r_sensor_trunk[:, 2] @ true.r_sensor_trunk[:, 2], -1, 1))))


def recalibrating_in_batches(sim: SensorSimulation, sizes: tuple[int, ...]) -> dict[int, list]:
    """(t_s, status, message up to its colon) of each calibration line, by batch size, for a wearer asked to
    recalibrate under a calibration 2° off; each run must end within 2° of the true up axis (the seated hold's)."""
    true = Calibration(sim.r_trunk_sensor.T, with_bend=True)
    t, acc, gyro = arrays(sim)
    said = {}
    for size in sizes:
        pipeline = PosturePipeline(calibration=Calibration(true.turned(2.0).r_sensor_trunk, True, 30.0))
        pipeline.request_calibration()
        events = [e for i in range(0, len(t), size)
                  for e in pipeline.update(t[i:i + size], acc[i:i + size], gyro[i:i + size]).events
                  if e.kind == "calibration" and "restored" not in e.message]
        said[size] = [(e.t_s, e.status, e.message.split(":")[0]) for e in events]
        assert up_error_deg(pipeline.calibration, true) < 2.0, size
    return said


def test_sensor_shifted_on_the_back_asks_for_recalibration():
    case = next(c for c in CASES if c.name == "office-day")
    sim = SensorSimulation(load_case_scenario(case).truncated(900.0), seed=case.seed)
    assert not [e for e in run(sim) if e.status == "recalibrate"], "false alarm on a sensor that stayed put"

    # At 200 s the sensor slips 25° about the trunk's forward axis (seen in sensor axes).
    forward_in_sensor = sim.r_trunk_sensor.T @ np.array([1.0, 0.0, 0.0])
    slip = Rotation.from_rotvec(np.radians(25.0) * forward_in_sensor).as_matrix()

    def shifted(t_s, acc, gyro):
        after = t_s >= 200.0
        acc, gyro = acc.copy(), gyro.copy()
        acc[after], gyro[after] = acc[after] @ slip, gyro[after] @ slip
        return acc, gyro

    alarms = [e for e in run(sim, shifted) if e.status == "recalibrate"]
    assert len(alarms) == 1 and alarms[0].t_s > 200.0
    assert "recalibrate" in alarms[0].message


def scenario_with_start(segments: list[dict]) -> SensorSimulation:
    rest = [{"activity": "sit_upright", "duration_s": 15}, {"activity": "slouch", "duration_s": 15}]
    return SensorSimulation(parse_scenario({"name": "cal", "segment": segments + rest}), seed=3)


def test_moving_during_the_hold_is_refused_then_calibration_succeeds():
    sim = scenario_with_start([{"activity": "sit_upright", "duration_s": 2.0},
                               {"activity": "fidget", "duration_s": 4.0, "amplitude_deg": 8.0},
                               {"activity": "sit_upright", "duration_s": 5.0},
                               {"activity": "slouch", "duration_s": 2.5, "flexion_deg": 30.0, "ramp_s": 0.8}])
    events = run(sim)
    assert events[0].status == "refused" and "moved during the upright hold" in events[0].message
    done = [e for e in events if e.status == "calibrated"]
    assert len(done) == 1 and done[0].with_bend and done[0].t_s > 6.0


def test_without_a_bend_calibration_falls_back_to_the_hold():
    sim = scenario_with_start([{"activity": "sit_upright", "duration_s": 20.0}])
    events = run(sim)
    done = [e for e in events if e.status == "calibrated"]
    assert len(done) == 1 and not done[0].with_bend and "upright hold only" in done[0].message
    assert "bend forward once" in done[0].message  # it says what would finish it


def test_a_restored_calibration_measures_at_once_like_the_original():
    """A gateway restarted with the stored calibration gives the angles the first one would have."""
    from pipeline.calibration import Calibration

    case = next(c for c in CASES if c.name == "office-short")
    sim = SensorSimulation(load_case_scenario(case), seed=case.seed)
    chunks = list(sim.chunks(max_samples=1000))
    first = PosturePipeline()
    for ch in chunks[:12]:
        first.update(ch.t_s, ch.acc_g, ch.gyro_dps)
    stored = Calibration.from_dict(json.loads(json.dumps(first.calibration.to_dict())))
    second = PosturePipeline(calibration=stored)
    outs = [(first.update(ch.t_s, ch.acc_g, ch.gyro_dps), second.update(ch.t_s, ch.acc_g, ch.gyro_dps))
            for ch in chunks[12:]]
    assert outs[0][1].events[0].kind == "calibration" and "restored" in outs[0][1].events[0].message
    # After the restarted filter has settled (a few seconds), the two agree.
    a = np.concatenate([o[0].flexion_deg for o in outs[1:]])
    b = np.concatenate([o[1].flexion_deg for o in outs[1:]])
    assert np.abs(a - b).max() < 1.0


def test_a_bend_held_still_at_the_bottom_is_no_calibration_bend():
    """Sit still, lean on the desk for a minute, sit up: not the calibration moves, and it says so."""
    sim = SensorSimulation(parse_scenario({"name": "desk", "segment": [
        {"activity": "sit_upright", "duration_s": 4.0},
        {"activity": "slouch", "duration_s": 40.0, "flexion_deg": 25.0, "ramp_s": 0.8},
        {"activity": "sit_upright", "duration_s": 3.0}]}), seed=4)
    events = run(sim)
    assert not [e for e in events if e.status == "calibrated" and e.with_bend]
    assert any("did not come back" in e.message and "sit upright and still" in e.message for e in events)


HOLD = {"activity": "sit_upright", "duration_s": 6.0}
BEND = {"activity": "slouch", "duration_s": 2.5, "flexion_deg": 30.0, "ramp_s": 0.8}
LEAN_BACK = {**BEND, "flexion_deg": -20.0}
FACE_IN = [183.0, 9.0, -50.0]  # roll 180°: the sensor's top against the back, its z into the body


def run_measured(segments: list[dict], mount_euler_deg: list[float],
                 calibrated_on: list[float] | None = None) -> tuple[list, np.ndarray, np.ndarray]:
    """Calibration events, and sample times and flexion measured, for segments then 15 s upright and a 25° slouch.
    calibrated_on: start with the calibration of the sensor mounted so, made with a 30° bend (restored from the last
    run, as the gateway saves it)."""
    scenario = parse_scenario({"name": "cal", "segment": segments + [
        {"activity": "sit_upright", "duration_s": 15}, {"activity": "slouch", "duration_s": 15}]})
    sim = SensorSimulation(scenario, seed=3, mount_euler_deg=mount_euler_deg, mount_max_deg=0.0)
    restored = None if calibrated_on is None else Calibration(SensorSimulation(
        scenario, seed=3, mount_euler_deg=calibrated_on, mount_max_deg=0.0).r_trunk_sensor.T, True, 30.0)
    pipeline, events, t, flexion = PosturePipeline(calibration=restored), [], [], []
    for ch in sim.chunks(max_samples=1000):
        out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        events += [e for e in out.events if e.kind == "calibration"]
        t.append(out.t_s)
        flexion.append(out.flexion_deg)
    return events, np.concatenate(t), np.concatenate(flexion)


def test_a_sensor_worn_face_in_calibrates_when_the_wearer_bends_forward_again_as_asked():
    # Worn face-in, a forward bend goes straight back from where a sensor lying on the back puts forward: the same
    # as a lean back with it face out. Before, it was refused as "backwards or sideways" whatever the wearer did,
    # and the hold alone then calibrated with forward backwards (every slouch read as leaning back).
    events, t, flexion = run_measured([HOLD, BEND, HOLD, BEND, HOLD], FACE_IN)
    assert events[0].status == "refused" and "top faces into your back" in events[0].message
    done = [e for e in events if e.status == "calibrated"]
    assert len(done) == 1 and done[0].with_bend and "face-in" in done[0].message
    assert 12.0 < done[0].t_s < 20.0  # at the second bend
    slouch_end = t[-1]
    assert abs(np.mean(flexion[t > slouch_end - 8.0]) - 25.0) < 2.0  # the 25° slouch, not −25°


def test_one_bend_of_a_face_in_sensor_leaves_it_uncalibrated_and_asked_never_guessed():
    events, t, _ = run_measured([HOLD, BEND, HOLD], FACE_IN)
    assert [e.status for e in events] == ["refused"] and "bend forward once more" in events[0].message
    assert len(t) == 0  # no provisional calibration from the mount's forward against what the bend showed


def test_a_lean_back_then_a_forward_bend_needs_the_forward_bend_confirmed():
    # Face out: the lean back looks like a face-in wearer's forward bend, so the forward bend after it contradicts
    # it and is asked again; the second one calibrates, the right way round.
    events, t, flexion = run_measured([HOLD, LEAN_BACK, HOLD, BEND, HOLD, BEND, HOLD], [0.0, 12.0, 70.0])
    assert [e.status for e in events] == ["refused", "refused", "calibrated"]
    assert "the other way from the one before" in events[1].message
    assert "face-in" not in events[2].message
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0


def test_two_leans_back_taken_for_face_in_are_flagged_by_walking_and_put_right():
    # Face out, two clean leans back in a row (an extension stretch) are the confirmed bend of a face-in sensor:
    # calibrated backwards. Walking then reads leaning back, the flag puts forward's sign in doubt again, and the
    # wearer's forward bend, asked about once, calibrates the right way round.
    walk = [{"activity": "stand", "duration_s": 5}, {"activity": "walk", "duration_s": 60, "flexion_deg": 5.0},
            {"activity": "stand", "duration_s": 5}, {"activity": "sit_upright", "duration_s": 8}]
    events, t, flexion = run_measured([HOLD, LEAN_BACK, HOLD, LEAN_BACK, HOLD, *walk, BEND, HOLD, BEND, HOLD],
                                      [0.0, 12.0, 70.0])
    assert [e.status for e in events] == ["refused", "calibrated", "recalibrate", "refused", "calibrated"]
    assert "face-in" in events[1].message and "leaning back" in events[2].message
    assert "top faces out of your back" in events[3].message and "face-in" not in events[4].message
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0


def test_a_flagged_face_out_calibration_is_not_turned_round_by_leans_back():
    # A hunched hold, flagged by walking: the wearer's forward bend is still the face-out one, so two extension
    # stretches while the flag is pending are refused (only a face-in calibration's sign is put in doubt by a flag).
    hunched = {**HOLD, "flexion_deg": 8.0}
    walk = [{"activity": "stand", "duration_s": 5}, {"activity": "walk", "duration_s": 60, "flexion_deg": 5.0},
            {"activity": "sit_upright", "duration_s": 8, "transition_s": 2.0}]
    events, t, flexion = run_measured([hunched, BEND, hunched, *walk, HOLD, LEAN_BACK, HOLD, LEAN_BACK, HOLD],
                                      [0.0, 12.0, 70.0])
    assert [e.status for e in events] == ["calibrated", "recalibrate", "refused"]
    assert "away from forward (backwards or sideways)" in events[2].message
    assert np.mean(flexion[t > t[-1] - 8.0]) > 10.0  # the slouch still reads forward (8° short: the hunched hold)


def test_extension_stretches_do_not_turn_a_provisional_calibration_round():
    # A provisional calibration measures slouches, a slouch alert may suggest the seated upper-back extension (lean
    # back, hold 5 s, eight times): those leans back are refused, not taken for a face-in sensor's forward bend.
    stretches = [LEAN_BACK, HOLD] * 3
    events, t, flexion = run_measured([{**HOLD, "duration_s": 45.0}, *stretches], [0.0, 12.0, 70.0])
    assert [e.status for e in events][:2] == ["calibrated", "refused"] and not events[0].with_bend
    assert "the other way round: turn it over" in events[1].message
    assert not any("face-in" in e.message for e in events)
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0


def test_a_face_in_provisional_calibration_flagged_by_walking_is_put_right_by_the_bends_asked_for():
    # Sitting still before the first bend gives the hold-only calibration, forward backwards for a face-in sensor;
    # its bends are refused (with the turn-over hint) until walking reads leaning back and flags it. Then the
    # question is asked as at a first calibration, and two bends put it right.
    walk = [{"activity": "stand", "duration_s": 5}, {"activity": "walk", "duration_s": 60, "flexion_deg": 5.0},
            {"activity": "sit_upright", "duration_s": 8, "transition_s": 2.0}]
    events, t, flexion = run_measured([{**HOLD, "duration_s": 45.0}, BEND, HOLD, *walk, HOLD, BEND, HOLD, BEND, HOLD],
                                      FACE_IN)
    statuses = [e.status for e in events]
    assert statuses[0] == "calibrated" and not events[0].with_bend
    assert "turn it over" in events[1].message
    assert "recalibrate" in statuses and statuses[-1] == "calibrated" and "face-in" in events[-1].message
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0


@pytest.mark.parametrize("walk_flexion_deg", [1.0, 8.0], ids=["upright", "inclined"])
def test_walking_that_finds_forward_far_off_lets_the_recalibration_bend_along_it(walk_flexion_deg):
    # A provisional calibration (restored from the last run) whose forward is 90° off: walking flags it, and the
    # recalibration's bend must be judged against walking's forward, not the wrong one (then every true forward bend
    # was refused as 90° "away from forward", and the wearer could not recalibrate). Walking inclined 8°, the
    # calibration check reads it as walking bent sideways and asks for the moves at the very sample walking finds
    # forward (both take 20 s of walking): its request kept the old forward, and the bend was refused.
    walk = [{"activity": "stand", "duration_s": 5},
            {"activity": "walk", "duration_s": 60, "flexion_deg": walk_flexion_deg},
            {"activity": "sit_upright", "duration_s": 8, "transition_s": 2.0}]
    segments = [HOLD, *walk, HOLD, BEND, HOLD, {"activity": "sit_upright", "duration_s": 15},
                {"activity": "slouch", "duration_s": 15}]
    sim = SensorSimulation(parse_scenario({"name": "cal", "segment": segments}), seed=3,
                           mount_euler_deg=[0.0, 12.0, 70.0], mount_max_deg=0.0)
    true = Calibration(sim.r_trunk_sensor.T, with_bend=True)
    pipeline = PosturePipeline(calibration=Calibration(true.turned(90.0).r_sensor_trunk, with_bend=False))
    events, t, flexion = [], [], []
    for ch in sim.chunks(max_samples=1000):
        out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        events += [e for e in out.events if e.kind == "calibration" and "restored" not in e.message]
        t.append(out.t_s)
        flexion.append(out.flexion_deg)
    t, flexion = np.concatenate(t), np.concatenate(flexion)
    assert [e.status for e in events][-2:] == ["recalibrate", "calibrated"], [e.message for e in events]
    if walk_flexion_deg < 5.0:
        assert "walking goes" in events[-2].message and "off the calibrated forward" in events[-2].message
    else:
        assert "sideways" in events[-2].message
    assert events[-1].with_bend
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0


@pytest.mark.parametrize("today", [[0.0, 12.0, 160.0], [0.0, 12.0, -110.0], [180.0, 12.0, 70.0]],
                         ids=["turned-90", "upside-down", "turned-over"])
def test_a_sensor_taped_on_anew_under_the_last_runs_calibration_is_flagged_at_the_first_walk(today):
    # The last run's calibration restored, and the sensor taped on today turned 90° in the plane of the back, upside
    # down or face-in: the calibrated up axis now lies sideways or down, and every sample read lying (no sitting, no
    # slouch) with no flag, as walking labelled lying never reached the walking checks. Steps taken "lying" flag it,
    # and the bend asked for is judged as at a first calibration (face-in: asked to bend again).
    walk = [{"activity": "stand", "duration_s": 5}, {"activity": "walk", "duration_s": 40, "flexion_deg": 5.0},
            {"activity": "sit_upright", "duration_s": 8, "transition_s": 2.0}]
    shallow = {**BEND, "flexion_deg": 10.0}  # not the bend asked for (15° or more), which a first calibration takes
    events, t, flexion = run_measured([{**HOLD, "duration_s": 30.0}, *walk, HOLD, shallow, HOLD, BEND, HOLD, BEND,
                                       HOLD], today, calibrated_on=[0.0, 12.0, 70.0])
    flagged = [e for e in events if e.status == "recalibrate"]
    assert len(flagged) == 1 and "moved or turned on the back" in flagged[0].message
    assert 50.0 < flagged[0].t_s < 65.0  # 20 s into the walk
    assert events[-1].status == "calibrated" and events[-1].with_bend
    assert int(re.search(r"with a (\d+)° forward bend", events[-1].message)[1]) > 20  # the 30° bend, not the 10°
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0


@pytest.mark.parametrize("batch", [1000, 100_000], ids=["10-s-batches", "one-batch"])
@pytest.mark.parametrize("restarted", [False, True], ids=["link-lost", "gateway-restarted"])
@pytest.mark.parametrize("away_s", [8 * 3600.0, 20 * 60.0], ids=["a-night", "a-meeting"])
def test_a_sensor_back_after_a_night_away_asks_for_the_moves_and_takes_them(away_s, restarted, batch):
    # Calibrated yesterday, then no data for a night (switched off or charging, out of reach; the gateway stopped) and
    # clipped on again today, turned 90° on the back: yesterday's calibration measured the new day, nothing said so,
    # and the moves the wearer made were ignored (a calibration with a bend is not watched unless asked for). Back
    # after as long as a night, the moves are asked for as for a sensor picked up off the desk, and they calibrate it;
    # a wearer out of reach in a meeting, still wearing it as before, is not asked.
    night = away_s >= CalibrationSettings().away_recalibrate_s
    assert night == (away_s > 3600.0)  # the bound lies between the two
    day = [HOLD, BEND, HOLD, {"activity": "sit_upright", "duration_s": 15}, {"activity": "slouch", "duration_s": 15}]
    scenario = parse_scenario({"name": "cal", "segment": day})
    yesterday, today = (SensorSimulation(scenario, seed=3, mount_euler_deg=[0.0, 12.0, yaw_deg], mount_max_deg=0.0)
                        for yaw_deg in (70.0, 70.0 + 90.0 * night))
    pipeline, events = PosturePipeline(), []
    for ch in yesterday.chunks(max_samples=1000):
        events += pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps).events
    back_s = pipeline.last_t_s + away_s
    if restarted:  # the gateway's next run, with the calibration it kept and its last sample's time
        last_t_s, pipeline = pipeline.last_t_s, PosturePipeline(calibration=pipeline.calibration)
        pipeline.resume_after(last_t_s)
    t, flexion = [], []
    for ch in today.chunks(max_samples=batch):  # today's moves in the batch the request is made in, or later ones
        out = pipeline.update(ch.t_s + back_s, ch.acc_g, ch.gyro_dps)
        events += out.events
        t.append(out.t_s)
        flexion.append(out.flexion_deg)
    t, flexion = np.concatenate(t), np.concatenate(flexion)
    said = [(e.status, e.message) for e in events if e.kind == "calibration" and e.t_s >= back_s
            and "restored" not in e.message]
    if night:
        assert said[0] == ("recalibrate", "recalibrate: no data for 8 h; sit upright and still for 3 s, bend forward "
                           "once and sit up")
        assert said[-1][0] == "calibrated" and said[-1][1].startswith("recalibrated with a")
        assert back_s + 8.0 < pipeline.calibration.taken_s < back_s + 12.0  # at today's sit-up
    else:
        assert said == [] and pipeline.calibration.taken_s < back_s
    assert abs(np.mean(flexion[t > t[-1] - 8.0]) - 25.0) < 2.0  # today's 25° slouch


@pytest.mark.parametrize("asked", ["a-night-away", "a-day-old"])
def test_moves_asked_for_before_a_gateway_restart_are_watched_for_after_it(asked):
    # Asked for the moves (back after a night: the sensor maybe moved; or the calibration a day old), the gateway
    # restarted 5 s later and the wearer's moves made after it: the pipeline started with the calibration restored but
    # not the request watched for nothing (a full calibration is not watched unless asked for), so the moves
    # calibrated nothing and the old calibration stayed, or the age was asked for again. Started with the request
    # the last run kept (PosturePipeline.request), it watches as the last run did, asks nothing again, and the moves
    # calibrate it.
    chunks = [ch for ch in SensorSimulation(load_scenario("office-short"), seed=3).chunks(max_samples=50)
              if ch.t_s[0] < 40.0]
    start_s = 1_796_292_000.0
    first = PosturePipeline()
    for ch in chunks:  # calibrated by office-short's moves at its start
        first.update(ch.t_s + start_s, ch.acc_g, ch.gyro_dps)
    assert first.calibration is not None and first.request is None
    night = asked == "a-night-away"
    last = PosturePipeline(calibration=first.calibration if night else
                           replace(first.calibration, taken_s=first.calibration.taken_s - 86_400.0))
    back_s = start_s + (8 * 3600.0 if night else 60.0)
    if night:
        last.resume_after(first.last_t_s)
    said = [e.message.split(";")[0] for ch in chunks if ch.t_s[0] >= 22.0  # a slouch: no moves
            for e in last.update(ch.t_s + back_s, ch.acc_g, ch.gyro_dps).events
            if e.kind == "calibration" and e.status == "recalibrate"]
    assert said == ["recalibrate: no data for 8 h" if night else "recalibrate: the calibration is 24 h old"]
    assert last.request is not None and last.request.moved == night
    restarted = PosturePipeline(calibration=last.calibration, request=last.request)  # as the gateway's start does
    assert restarted.armed and restarted.request == last.request
    # The bend judged as before: as at a first calibration (the sensor maybe moved), or against the forward in use.
    hints = restarted.calibrator.forward_hint, last.calibrator.forward_hint
    assert hints == (None, None) if night else np.allclose(*hints)
    assert restarted.calibrator.ask_face_in == last.calibrator.ask_face_in
    restarted.resume_after(last.last_t_s)
    moves_s = last.last_t_s + 5.0
    events = [e for ch in chunks for e in restarted.update(ch.t_s + moves_s, ch.acc_g, ch.gyro_dps).events
              if e.kind == "calibration"]
    assert [(e.status, e.request_pending) for e in events][0] == ("calibrated", True)  # restored, still asked
    assert [e.status for e in events[1:]] == ["calibrated"] and events[1].message.startswith("recalibrated with a")
    assert restarted.request is None and restarted.calibration.taken_s > moves_s


def test_a_calibration_a_day_old_asks_for_the_moves_once_the_wearer_sits_and_takes_them():
    # The wearer calibrated yesterday and has worn the sensor since (a gateway restarted meanwhile restores the
    # calibration with the time it was made: it is as old as that, not as the restart). A day on, the alert service
    # told "Calibration is 24 h old" and the moves, which the calibrator, not watching for them, ignored, and told it
    # again every 4 h. The pipeline asks itself, at the first sample read sitting once the calibration is a day old (in
    # bed, lying, the wearer is not asked: the moves are made seated), and the moves made then recalibrate it, at the
    # same samples however the stream is batched.
    day = [{"activity": "lie", "duration_s": 120.0, "position": "supine"},
           {"activity": "sit_upright", "duration_s": 20.0, "transition_s": 3.0}, HOLD, BEND, HOLD,
           {"activity": "slouch", "duration_s": 15}]
    sim = SensorSimulation(parse_scenario({"name": "age", "segment": day}), seed=3, mount_euler_deg=[0.0, 12.0, 70.0],
                           mount_max_deg=0.0)
    true = Calibration(sim.r_trunk_sensor.T, with_bend=True, bend_deg=30.0)
    start_s = 1_763_700_000.0
    made_s = start_s + 60.0 - CalibrationSettings().max_age_s  # a day old a minute into the data, lying
    t, acc, gyro = arrays(sim)
    said = {}
    for size in (1000, 100_000):
        pipeline = PosturePipeline(calibration=replace(true, taken_s=made_s))
        events = [e for i in range(0, len(t), size)
                  for e in pipeline.update(t[i:i + size] + start_s, acc[i:i + size], gyro[i:i + size]).events
                  if e.kind == "calibration" and "restored" not in e.message]
        said[size] = [(round(e.t_s - start_s, 2), e.status, e.message) for e in events]
        assert pipeline.calibration.taken_s > start_s + 120.0 and up_error_deg(pipeline.calibration, true) < 2.0
    assert said[1000] == said[100_000]
    asked, *_, made = said[1000]
    assert asked[1:] == ("recalibrate", "recalibrate: the calibration is 24 h old; sit upright and still for 3 s, bend "
                                        "forward once and sit up")
    assert 118.0 < asked[0] < 126.0  # as the wearer sits up out of bed (read sitting mid-rise), not at 60 s (lying)
    assert made[1] == "calibrated" and made[2].startswith("recalibrated with a") and made[0] > asked[0]


def test_a_given_calibration_or_one_not_known_when_made_is_not_asked_for_at_an_age():
    # --axes-are-trunk gives a calibration (the data's axes are the trunk's: no moves of the wearer's made it), and a
    # file kept before the time was says none: neither has an age to ask about; a sensor taken off, or back after a
    # night away, still asks (test_a_sensor_back_after_a_night_away_asks_for_the_moves_and_takes_them). Nor is any
    # asked with the age switched off (pipeline.calibration_max_age_h = 0).
    sim = SensorSimulation(parse_scenario({"name": "sit", "segment": [{"activity": "sit_upright", "duration_s": 30}]}),
                           seed=3, mount_euler_deg=[0.0, 0.0, 0.0], mount_max_deg=0.0)
    t, acc, gyro = arrays(sim)
    t = t + 1_763_700_000.0
    old = replace(Calibration(sim.r_trunk_sensor.T, with_bend=True, bend_deg=30.0), taken_s=t[0] - 30 * 86_400)
    never = replace(PosturePipeline().s, calibration=replace(CalibrationSettings(), max_age_s=0.0))
    for pipeline in (PosturePipeline(calibration=Calibration.sensor_axes_are_trunk_axes()),
                     PosturePipeline(calibration=replace(old, taken_s=None)), PosturePipeline(never, old)):
        assert [e.status for e in pipeline.update(t, acc, gyro).events if e.kind == "calibration"] == ["calibrated"]
        assert pipeline.live_state().calibration == "calibrated"
    asked = PosturePipeline(calibration=old)
    assert [e.status for e in asked.update(t, acc, gyro).events if e.kind == "calibration"] == ["calibrated",
                                                                                                  "recalibrate"]


def test_a_restless_night_under_a_right_calibration_is_not_taken_for_a_moved_sensor():
    # Lying restless (80° from upright, moving ten times a minute or more) gives a second or two of "steps" now and
    # then; counted as a share of all steps they flagged this wearer after 15 minutes: only an unbroken walk counts.
    restless = {"activity": "fidget", "duration_s": 1800.0, "flexion_deg": 80.0, "amplitude_deg": 10.0,
                "moves_per_min": 100.0, "transition_s": 3.0}
    walk = [{"activity": "stand", "duration_s": 5}, {"activity": "walk", "duration_s": 60, "flexion_deg": 5.0},
            {"activity": "sit_upright", "duration_s": 10, "transition_s": 2.0}]
    events, _, _ = run_measured([{**HOLD, "duration_s": 10.0}, *walk, restless], [0.0, 12.0, 70.0],
                                calibrated_on=[0.0, 12.0, 70.0])
    assert [e.status for e in events] == ["calibrated"]  # restored, and nothing since


@pytest.mark.parametrize("asked_again", [False, True], ids=["first", "asked-again"])
@pytest.mark.parametrize("slouch_deg", [15.0, 25.0, 35.0])
def test_standing_up_from_a_slouch_held_still_is_no_calibration(asked_again, slouch_deg):
    # A slouch still for 3 s looks like the hold, and standing up bends the trunk forward 20–40° and back through the
    # slouch on its way up: that came back "within 6° of the hold", and the slouch was taken as upright (a random
    # day's recalibration went 24° off, silently). After the sit-up the trunk must not go on past the hold.
    sim = SensorSimulation(parse_scenario({"name": "stand-up", "segment": [
        {"activity": "slouch", "duration_s": 9.0, "flexion_deg": slouch_deg},  # no provisional hold (12 s)
        {"activity": "stand", "duration_s": 20.0, "transition_s": 2.5},
        {"activity": "walk", "duration_s": 5.0}]}), seed=5)
    true = Calibration(sim.r_trunk_sensor.T, with_bend=True)
    pipeline = PosturePipeline(calibration=true if asked_again else None)
    if asked_again:
        pipeline.request_calibration()
    events, errors_deg = [], []
    for ch in sim.chunks(max_samples=100):
        out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        for e in out.events:
            if e.kind == "calibration":
                events.append(e)
                if e.status == "calibrated":
                    errors_deg.append(up_error_deg(pipeline.calibration, true))
    for error_deg in errors_deg:  # none from the slouch (a provisional one from standing still is upright)
        assert error_deg < 5.0
    assert any("went on past where it was held" in e.message for e in events)


@pytest.mark.parametrize(("upright_s", "then"), [
    (0.5, {"activity": "slouch", "flexion_deg": 25.0, "ramp_s": 1.0}),  # reaching forward
    (0.5, {"activity": "lean", "lateral_deg": 15.0}),
    (1.5, {"activity": "stand", "transition_s": 1.5})], ids=["reach", "lean-sideways", "stand-up"])
def test_a_reach_a_lean_sideways_or_a_stand_up_right_after_the_sit_up_still_calibrates(upright_s, then):
    # Going on past the hold the other way from the bend is what a stand-up from a slouch does; these do not.
    events = run(scenario_with_start([HOLD, BEND, {"activity": "sit_upright", "duration_s": upright_s,
                                                   "transition_s": upright_s},
                                      {"transition_s": 0.5, **then, "duration_s": 8.0}]))
    assert [e.status for e in events][:1] == ["calibrated"] and events[0].with_bend


def test_a_face_in_answer_then_a_lean_back_at_once_is_said_and_the_question_stays_open():
    # The second bend answers the face-in question; leaning back at once refuses it, said although the question was
    # said seconds before (the wearer waits for the answer), and the next bend still confirms the first.
    at_once = {"activity": "sit_upright", "duration_s": 1.0}
    lean_back = {"activity": "sit_upright", "duration_s": 2.0, "flexion_deg": -12.0}
    events, _, _ = run_measured([HOLD, BEND, HOLD, BEND, at_once, lean_back, HOLD, BEND, HOLD], FACE_IN)
    assert [e.status for e in events] == ["refused", "refused", "calibrated"]
    assert "went on past" in events[1].message and "face-in" in events[2].message


def test_a_refusal_is_said_at_its_own_sample_however_the_stream_is_batched():
    # Refusals were stamped with their batch's last sample: a bend given up at 14.33 s was said at 14.99 s in 1 s
    # batches, and a reviewer saw one line at 9.56, 9.98 or 33.98 s by batch size.
    sim = SensorSimulation(parse_scenario({"name": "refusals", "segment": [
        {"activity": "sit_upright", "duration_s": 4.0},
        {"activity": "slouch", "duration_s": 13.0, "flexion_deg": 25.0, "ramp_s": 0.8},  # held: not come back
        {"activity": "walk", "duration_s": 65.0},  # moving on past the once-a-minute limit, no hold
        {"activity": "sit_upright", "duration_s": 3.0, "transition_s": 2.5},
        {"activity": "slouch", "duration_s": 9.0, "flexion_deg": 25.0, "ramp_s": 1.0},
        {"activity": "stand", "duration_s": 5.0, "transition_s": 2.5},
        {"activity": "walk", "duration_s": 5.0}]}), seed=4)
    t, acc, gyro = arrays(sim)
    said = {}
    for size in (1, 7, 100, 4000):
        pipeline = PosturePipeline()
        events = [e for i in range(0, len(t), size)
                  for e in pipeline.update(t[i:i + size], acc[i:i + size], gyro[i:i + size]).events]
        said[size] = [(e.t_s, e.message) for e in events if e.kind == "calibration" and e.status == "refused"]
    assert [m.split(":")[0] for _, m in said[1]] == ["the forward bend did not come back within 10 s",
                                                      "moved during the upright hold after 1.9 s"]
    for size in (7, 100, 4000):  # the sample it is said at (a sample's stillness may differ as its first batch did)
        assert [m for _, m in said[size]] == [m for _, m in said[1]]
        assert [t for t, _ in said[size]] == pytest.approx([t for t, _ in said[1]], abs=0.02)


def test_sitting_down_after_a_walk_is_no_recalibration_and_the_seated_moves_after_it_are():
    # Asked to recalibrate (most often by walking, which shows a hunched hold), the wearer stops, stands still and sits
    # down: the standing posture passed for the hold, the sit-down's trunk bend for the bend, and sitting upright for
    # the return. Ten recalibrations of unseen random days went 3–6° off so, silently (standing inclined 2–5°).
    # (Not at a first calibration: before one, sitting and standing are not known well enough to refuse a hold.)
    sim = SensorSimulation(parse_scenario({"name": "sit-down", "segment": [
        {"activity": "stand", "duration_s": 0.5},  # too short to be a hold
        {"activity": "walk", "duration_s": 30.0, "transition_s": 0.5},
        {"activity": "stand", "duration_s": 10.0, "flexion_deg": 5.0},
        {"activity": "sit_upright", "duration_s": 8.0, "transition_s": 2.5},
        BEND, HOLD, {"activity": "slouch", "duration_s": 15.0, "flexion_deg": 25.0}]}), seed=6)
    said = recalibrating_in_batches(sim, (100, 4000))
    refused = [s for s in said[100] if s[1] == "refused"]
    assert [m for _, _, m in refused] == ["that was sitting down or standing up, not the calibration bend"]
    assert 40.0 < refused[0][0] < 46.0  # when the sit-down came back upright and settled
    assert said[100][-1][1] == "calibrated" and said[100][-1][0] > 50.0  # the bend asked for, seated
    # The same lines at the same samples however the stream is batched (a sample's stillness may differ by one).
    assert [s[1:] for s in said[4000]] == [s[1:] for s in said[100]]
    assert np.allclose([s[0] for s in said[4000]], [s[0] for s in said[100]], atol=0.015)


def test_a_seated_wearer_read_standing_can_still_recalibrate():
    # After a 3.5 s stand the classifier misses the sit-down: the wearer sits, read standing. Refusing every hold read
    # standing (a reviewer's probe of the first version) locked such a wearer out of recalibrating: the first seated
    # moves are refused, said (done standing they look the same), and the next are taken.
    sim = SensorSimulation(parse_scenario({"name": "missed-sit-down", "segment": [
        {"activity": "fidget", "duration_s": 10.0, "amplitude_deg": 8.0},
        {"activity": "stand", "duration_s": 3.5, "flexion_deg": 4.0, "transition_s": 1.5},
        {"activity": "sit_upright", "duration_s": 10.0, "transition_s": 1.5},
        BEND, HOLD, {"activity": "sit_upright", "duration_s": 30.0}, BEND, HOLD]}), seed=2)
    true = Calibration(sim.r_trunk_sensor.T, with_bend=True)
    pipeline = PosturePipeline(calibration=Calibration(true.turned(2.0).r_sensor_trunk, True, 30.0))
    pipeline.request_calibration()
    events, t, activity = [], [], []
    for ch in sim.chunks(max_samples=100):
        out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        events += [e for e in out.events if e.kind == "calibration" and "restored" not in e.message]
        t.append(out.t_s)
        activity.append(out.activity)
    t, activity = np.concatenate(t), np.concatenate(activity)
    assert (activity[(t > 20.0) & (t < 26.0)] == "standing").all()  # seated, read standing: the classifier's miss
    assert [(e.status, e.message.split(" (")[0]) for e in events if "upright hold after" not in e.message] == [
        ("refused", "read standing during the upright hold"), ("calibrated", "recalibrated with a 30° forward bend")]
    assert events[-2].t_s < 30.0 < events[-1].t_s  # the first seated moves refused, the next taken
    assert up_error_deg(pipeline.calibration, true) < 2.0


def test_sitting_down_and_settling_into_the_seat_is_no_recalibration():
    # Sitting down and at once settling back into the chair (the trunk still tilting when the calibration is found,
    # 1.5 s after the sit-up): the open movement cannot be judged for good yet (its rest after is a posture change
    # going on), but it has brought the upper back down all the same. Judged only once settled, it was read a
    # sit-down after the calibration had taken the standing posture for upright (5° off, silently).
    sim = SensorSimulation(parse_scenario({"name": "sit-down-settling", "segment": [
        {"activity": "stand", "duration_s": 0.5},
        {"activity": "walk", "duration_s": 20.0, "transition_s": 0.5},
        {"activity": "stand", "duration_s": 5.0, "flexion_deg": 5.0},
        {"activity": "slouch", "duration_s": 12.0, "flexion_deg": -3.0, "ramp_s": 3.0, "transition_s": 1.5},
        {"activity": "sit_upright", "duration_s": 8.0, "transition_s": 1.5}, BEND, HOLD]}), seed=2)
    said = recalibrating_in_batches(sim, (7, 100, 4000))
    assert [s[1] for s in said[100]] == ["refused", "calibrated"]
    assert said[100][0][2] == "that was sitting down or standing up, not the calibration bend"
    assert 26.0 < said[100][0][0] < 29.0 and said[100][-1][0] > 40.0  # the sit-down refused, the seated moves taken
    for size in (7, 4000):
        assert [s[1:] for s in said[size]] == [s[1:] for s in said[100]]



def test_a_provisional_calibration_and_the_bend_that_finishes_it_come_at_their_samples_however_batched():
    # The hold alone was taken at the end of the batch its bend's timeout fell in, and the rest of that batch went
    # unwatched: in one-minute batches (a replay's) a wearer sitting still was uncalibrated for up to a minute longer,
    # and the bend that finishes the calibration, made in the same minute, was never seen.
    sim = SensorSimulation(parse_scenario({"name": "provisional", "segment": [
        {"activity": "sit_upright", "duration_s": 20.0},  # no bend: provisional from the hold, 12 s after it began
        {"activity": "fidget", "duration_s": 4.0, "amplitude_deg": 6.0},
        {"activity": "sit_upright", "duration_s": 5.0},
        {"activity": "slouch", "duration_s": 2.5, "flexion_deg": 30.0, "ramp_s": 0.8},  # the bend that finishes it
        {"activity": "sit_upright", "duration_s": 25.0}]}), seed=5)
    t, acc, gyro = arrays(sim)
    said, kept, calibration = {}, {}, {}
    for size in (1, 7, 100, 6000):
        pipeline = PosturePipeline()
        outs = [pipeline.update(t[i:i + size], acc[i:i + size], gyro[i:i + size]) for i in range(0, len(t), size)]
        said[size] = [(e.t_s, e.status, e.with_bend) for o in outs for e in o.events
                      if e.kind == "calibration" and e.status == "calibrated"]
        kept[size] = sum(len(o.t_s) for o in outs)
        calibration[size] = pipeline.calibration
    assert [(s, b) for _, s, b in said[1]] == [("calibrated", False), ("calibrated", True)]
    assert 14.0 < said[1][0][0] < 17.0  # 12 s after the hold began (3.3 s in)
    for size in (7, 100, 6000):
        assert [(s, b) for _, s, b in said[size]] == [(s, b) for _, s, b in said[1]], size
        assert [x for x, _, _ in said[size]] == pytest.approx([x for x, _, _ in said[1]], abs=0.02), size
        assert kept[size] == kept[1], size  # measured from the same sample on
        # The same hold, to within what the gyro bias the stillness test takes off (the filter's, per batch) moves it.
        np.testing.assert_allclose(calibration[size].r_sensor_trunk, calibration[1].r_sensor_trunk, atol=1e-4)


def test_moves_made_soon_after_the_check_asks_for_them_are_seen_however_batched():
    # The check (walking reads a hunched hold) asked at a sample inside a batch, and the calibrator began watching at
    # the next batch: in a replay's 200 s batches the moves the wearer made at once, sitting down after the walk, were
    # not seen, where the live gateway's 1 s batches took them.
    sim = SensorSimulation(parse_scenario({"name": "asked", "segment": [
        {"activity": "sit_upright", "duration_s": 5.0, "flexion_deg": 8.0},  # a hunched hold
        {"activity": "slouch", "duration_s": 2.5, "flexion_deg": 30.0, "ramp_s": 0.8},
        {"activity": "sit_upright", "duration_s": 5.0, "flexion_deg": 8.0, "transition_s": 0.8},
        {"activity": "stand", "duration_s": 3.0}, {"activity": "walk", "duration_s": 30.0},
        {"activity": "stand", "duration_s": 3.0}, {"activity": "sit_upright", "duration_s": 8.0, "transition_s": 2.5},
        BEND, HOLD]}), seed=7)
    t, acc, gyro = arrays(sim)
    said = {}
    for size in (100, len(t)):
        pipeline = PosturePipeline()
        said[size] = [(e.t_s, e.status, e.message.split(":")[0]) for i in range(0, len(t), size)
                      for e in pipeline.update(t[i:i + size], acc[i:i + size], gyro[i:i + size]).events
                      if e.kind == "calibration"]
    statuses = [s for _, s, _ in said[100]]
    assert statuses[0] == "calibrated" and "recalibrate" in statuses and statuses[-1] == "calibrated", said[100]
    assert [s[1:] for s in said[len(t)]] == [s[1:] for s in said[100]]
    # At the same samples (a sample's stillness may differ by one: the batch's was judged before the request).
    assert np.allclose([s[0] for s in said[len(t)]], [s[0] for s in said[100]], atol=0.015)

def test_a_bend_given_up_at_the_bottom_starts_the_next_hold_however_the_stream_is_batched():
    """A bend held still at the bottom past bend_max_s is given up at the sample it is over; the still samples after
    it in the same batch were dropped with it (the hold is followed per sample, but that batch's were skipped): in
    one-second batches the lean made a hold from the next batch, in a replay's minutes none until the next still run,
    so a provisional calibration (here from the lean, 25° forward) came in seconds and not in minutes."""
    sim = SensorSimulation(parse_scenario({"name": "desk", "segment": [
        {"activity": "sit_upright", "duration_s": 4.0},
        {"activity": "slouch", "duration_s": 40.0, "flexion_deg": 25.0, "ramp_s": 0.8},
        {"activity": "sit_upright", "duration_s": 3.0}]}), seed=4)
    t, acc, gyro = arrays(sim)
    said = {}
    for size in (5, 100, 6000):
        pipeline = PosturePipeline()
        said[size] = [(round(e.t_s, 2), e.status, e.message.split(":")[0]) for i in range(0, len(t), size)
                      for e in pipeline.update(t[i:i + size], acc[i:i + size], gyro[i:i + size]).events
                      if e.kind == "calibration"]
    assert any("did not come back" in m for _, _, m in said[5])
    assert said[100] == said[5] and said[6000] == said[5], said


def test_a_calibration_says_when_the_wearer_made_it_and_a_restored_one_the_same_time():
    """The alert service counts a calibration's age from when the wearer made it: the `calibrated` event of a new one
    says its own time, the one a restarted gateway restores the time it was made (kept in the saved calibration), not
    the restart's; a correction from walking keeps it too. Sent with `calibrated` only, and valid on the wire."""
    from contract.messages import payload
    from contract.validation import load_validators, parse

    case = next(c for c in CASES if c.name == "office-short")
    sim = SensorSimulation(load_case_scenario(case), seed=case.seed)
    chunks = list(sim.chunks(max_samples=1000))
    first = PosturePipeline()
    made = [e for ch in chunks[:12] for e in first.update(ch.t_s, ch.acc_g, ch.gyro_dps).events
            if e.kind == "calibration" and e.status == "calibrated"]
    assert made and all(e.calibrated_s == e.t_s for e in made)
    assert first.calibration.taken_s == made[-1].t_s
    stored = Calibration.from_dict(json.loads(json.dumps(first.calibration.to_dict())))
    restarted = PosturePipeline(calibration=stored)
    [said] = [e for e in restarted.update(chunks[12].t_s, chunks[12].acc_g, chunks[12].gyro_dps).events
              if e.kind == "calibration"]
    assert said.t_s == chunks[12].t_s[0] > said.calibrated_s == made[-1].t_s
    assert first.calibration.turned(5.0).taken_s == first.calibration.with_bias(None).taken_s == made[-1].t_s
    # A file kept before the time was: not known (null), not the restart's time.
    old_file = {k: v for k, v in first.calibration.to_dict().items() if k != "taken_s"}
    [unknown] = [e for e in PosturePipeline(calibration=Calibration.from_dict(old_file)).update(
        chunks[12].t_s, chunks[12].acc_g, chunks[12].gyro_dps).events if e.kind == "calibration"]
    assert unknown.calibrated_s is None
    validators, t0_s = load_validators(), 1_790_000_000.0  # the simulation's clock starts at 0
    def sent(doc: dict) -> dict:
        return parse("events", json.dumps(doc).encode(), validators, doc["ts"] / 1000)

    for event, key in ((said, made[-1].t_s + t0_s), (unknown, None)):
        doc = payload("D", replace(event, t_s=event.t_s + t0_s, calibrated_s=key))
        assert doc["calibrated_s"] == key and sent(doc) == doc
    refused = payload("D", CalibrationEvent(said.t_s + t0_s, "refused", "moving during the hold"))
    assert "calibrated_s" not in refused and sent(refused) == refused


def test_a_calibration_made_while_the_gateways_clock_was_unset_is_said_undated_not_refused():
    """Made at a clock of 1970 (a Raspberry Pi booted without RTC or NTP) and kept with that time: restored after the
    clock was set, its event said calibrated_s 1970, which the schema refuses, so the event of every restart was
    dead-lettered. It says the date is not known (null), as a calibration kept from before calibrated_s does."""
    from contract.messages import payload
    from contract.validation import load_validators, parse
    from pipeline.events import CalibrationEvent

    now = 1_796_000_000.0
    for made_s, said in ((12_345.0, None), (now - 86_400, now - 86_400)):
        body = payload("D", CalibrationEvent(now, "calibrated", "calibrated (restored)", True, made_s))
        assert body["calibrated_s"] == said
        assert parse("events", json.dumps(body).encode(), load_validators(), now)["calibrated_s"] == said


# Turning while bent over: a swivel chair turned 10° at 15 °/s at the bend's bottom (the whole body, no twist).
SWIVEL_BENT = [{"activity": "sit_upright", "duration_s": 8.0},
               {"activity": "slouch", "duration_s": 1.0, "flexion_deg": 30.0, "ramp_s": 0.8},
               {"activity": "swivel", "duration_s": 2.0, "left_count": 1, "right_count": 0, "left_deg": 10.0,
                "speed_dps": 15.0, "hold_s": 0.0, "pause_s": 0.1, "flexion_deg": 30.0, "transition_s": 0.2},
               {"activity": "sit_upright", "duration_s": 10.0}]


@pytest.mark.parametrize(("what", "seed"), [("bias-5dps", 2), ("bias-5dps", 3), ("bias-5dps", 4),
                                            ("swivel-bent", 1), ("swivel-bent", 2), ("swivel-bent", 5)])
def test_the_bends_forward_is_where_the_gyro_turned_the_trunk(what, seed):
    """The bend's direction is the gyro's, less the hold's own bias, from the hold to the bend's deepest point.
    bias-5dps: 5 °/s of bias (an MPU-9250's initial bias, which nothing on the sensor removes), which the orientation
    filter has learnt at one 3 s rest only by the bend: its up axis drifts through the bend (forward 2–7° off on these
    seeds, 8° on `rotations-bias-5dps`). swivel-bent: the chair turned while bent over; the accelerometer at the
    deepest point, read instead for a while, took the turn's acceleration for a sideways bend (2.3–4.2° off on these
    seeds). (bias-5dps: seeds whose stream, fed from its first sample, finds a hold in time for the bend: on others the
    filter learns the bias only 3 s into the 6 s hold and the moves are refused, "moved during the upright hold".)"""
    if what == "bias-5dps":
        case = next(c for c in CASES if c.name == "rotations-bias-5dps")
        sim = SensorSimulation(load_case_scenario(case).truncated(30.0), seed=seed)
    else:
        sim = SensorSimulation(parse_scenario({"name": what, "segment": SWIVEL_BENT}), seed=seed)
    pipeline = PosturePipeline()
    t, acc, gyro = arrays(sim)
    for i in range(0, len(t), 100):  # one-second batches, as the gateway sends them
        pipeline.update(t[i:i + 100], acc[i:i + 100], gyro[i:i + 100])
    assert pipeline.calibration is not None and pipeline.calibration.with_bend
    true_forward = sim.r_trunk_sensor.T[:, 0]
    off_deg = np.degrees(np.arccos(np.clip(pipeline.calibration.r_sensor_trunk[:, 0] @ true_forward, -1.0, 1.0)))
    assert off_deg < 1.5



@pytest.mark.parametrize(("bias_dps", "seed", "quat_given"), [(5.0, 5, False), (3.5, 3, True)])
def test_the_stillness_after_a_calibration_adopted_inside_a_batch_is_judged_with_the_bias_it_handed_the_filter(
        bias_dps, seed, quat_given):
    """Gyro bias; a hold, moving about past the bend's timeout (a provisional calibration, whose hold hands the
    orientation filter its bias), a hold the wearer breaks and a hold and bend that finish it. The stillness test after
    the provisional calibration was the batch's first pass, with the bias before it, where a batch cut there has the
    hold's: in 1 s batches the broken hold was refused ("moved during the upright hold after 1.6 s") and in one batch
    it was not; with the orientation given (quat_wxyz: not filtered, the bias as last set), one batch refused the
    finishing hold and never finished the calibration. Batching must not change what the wearer is told."""
    hold, bend = {"activity": "sit_upright", "duration_s": 6.0}, {"activity": "slouch", "duration_s": 2.5,
                                                                  "flexion_deg": 30.0, "ramp_s": 0.8}
    fidget = {"activity": "fidget", "duration_s": 16.0, "amplitude_deg": 6.0, "moves_per_min": 60.0}
    scenario = parse_scenario({"segment": [hold, fidget, hold, bend, {"activity": "sit_upright", "duration_s": 20.0}],
                               "sensor": {"gyro_bias_dps": bias_dps}}, default_name="bias-after-provisional")
    t, acc, gyro = arrays(SensorSimulation(scenario, seed=seed))
    quat = OrientationFilter().update(gyro, acc) if quat_given else None
    told = []
    for n in (100, len(t)):
        pipeline, said = PosturePipeline(), []
        for i in range(0, len(t), n):
            out = pipeline.update(t[i:i + n], acc[i:i + n], gyro[i:i + n],
                                  quat_wxyz=None if quat is None else quat[i:i + n])
            said += [(round(e.t_s, 2), e.status, e.message) for e in out.events if isinstance(e, CalibrationEvent)]
        told.append(said)
    assert told[0][0][1:] == ("calibrated", "calibrated from the upright hold only, so forward is assumed from how "
                              "the sensor sits: bend forward once (15° or more) and sit up to finish")
    assert told[0][-1][2].startswith("recalibrated with a")
    assert told[1] == told[0]
