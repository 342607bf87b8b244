"""Lone spikes of rotation rate or acceleration (pipeline/spikes.py): dropped at the pipeline's door, whatever the
batches; real motion never taken for one."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import load_scenario
from pipeline.calibration import Calibration
from pipeline.spikes import SPIKE_G, lone_spikes, spike_dps
from pipeline.stream import PipelineSettings, PosturePipeline
from support.data import thinned


def fed(p: PosturePipeline, t_s: np.ndarray, acc_g: np.ndarray, gyro_dps: np.ndarray, size: int) -> dict:
    outs = [p.update(t_s[i:i + size], acc_g[i:i + size], gyro_dps[i:i + size]) for i in range(0, len(t_s), size)]
    outs.append(p.finish())
    return {"t_s": np.concatenate([o.t_s for o in outs]), "flexion": np.concatenate([o.flexion_deg for o in outs]),
            "rotation": np.concatenate([o.rotation_deg for o in outs]), "events": [e for o in outs for e in o.events],
            "metrics": [m for o in outs for m in o.metrics]}


def test_a_lone_spike_during_the_calibration_bend_no_longer_refuses_the_calibration():
    """One sample of 2,000 °/s half-way down the calibration bend (office-short, seed 3) turned the estimate by 20°: the
    bend 'did not come back', every later move was refused as a bend and the day measured no minute."""
    sim = SensorSimulation(load_scenario("office-short"), seed=3)
    c = next(sim.chunks(max_samples=sim.n_samples))
    gyro = c.gyro_dps.copy()
    gyro[766, 1] = 2000.0
    clean, dirty = PosturePipeline(), PosturePipeline()
    a, b = fed(clean, c.t_s, c.acc_g, c.gyro_dps, 100), fed(dirty, c.t_s, c.acc_g, gyro, 100)
    said = [(e.status, e.message) for e in b["events"] if e.kind == "calibration"]
    assert said == [(e.status, e.message) for e in a["events"] if e.kind == "calibration"]
    assert said[0][0] == "calibrated"
    assert len(b["metrics"]) == len(a["metrics"]) == 4
    assert (dirty.samples_spiked, dirty.samples_discarded, clean.samples_spiked) == (1, 1, 0)
    assert np.array_equal(b["t_s"], a["t_s"])  # (the spike came before the calibration: no angles then)


@pytest.mark.parametrize("size", [1, 2, 5, 7, 100, 6000])
def test_spikes_anywhere_in_any_batches_are_dropped_and_the_rest_reads_as_without_them(size):
    """A spike that is the last sample of a batch is judged when the next batch shows its neighbour: every batching
    gives what the stream without the spikes gives, and counts each spike once. (Not to the last bit: a gap at a
    batch's end is filled linearly, inside one through two samples either side, and the spike moves batch ends.)"""
    rng = np.random.default_rng(4)
    t = np.arange(0, 60, 0.01)
    # Twists of 35° every 6 s, left and right in turn (out in 0.5 s, held 1 s, back), about the spine (upright: the
    # sensor's z is up here), with noise.
    phase_s = t % 6.0
    shape = np.clip(np.minimum(phase_s - 2.0, 4.0 - phase_s) / 0.5, 0.0, 1.0)
    yaw_deg = 35.0 * np.where((t // 6.0) % 2 == 0, 1.0, -1.0) * (0.5 - 0.5 * np.cos(np.pi * shape))
    gyro = np.column_stack([np.zeros(len(t)), np.zeros(len(t)), np.gradient(yaw_deg, t)])
    gyro += 0.3 * rng.standard_normal((len(t), 3))
    acc = np.tile([0.0, 0.0, 1.0], (len(t), 1)) + 0.002 * rng.standard_normal((len(t), 3))
    at = np.array([99, 200, 699, 1420, 3000, 4999, 5001])  # batch ends and starts at sizes 5 and 100, and inside
    bad = gyro.copy()
    bad[at] += rng.choice([-1, 1], (len(at), 3)) * [900.0, 1500.0, 2500.0]
    keep = np.ones(len(t), bool)
    keep[at] = False
    calibration = Calibration(np.eye(3), True)
    dirty = PosturePipeline(calibration=calibration)
    b = fed(dirty, t, acc, bad, size)
    a = fed(PosturePipeline(calibration=calibration), t[keep], acc[keep], gyro[keep], size)
    assert dirty.samples_spiked == len(at) and dirty.samples_discarded == len(at)
    assert np.array_equal(b["t_s"], a["t_s"]) and len(b["t_s"]) == keep.sum()
    assert np.allclose(b["rotation"], a["rotation"], atol=0.05) and np.allclose(b["flexion"], a["flexion"], atol=0.05)
    assert np.abs(b["rotation"]).max() > 30.0 and np.abs(gyro[1420, 2]) > 40  # (one spike fell inside a twist)
    when = [(e.kind, e.start_s, e.end_s) for e in a["events"] if e.kind == "rotation"]
    assert [(e.kind, e.start_s, e.end_s) for e in b["events"] if e.kind == "rotation"] == when and len(when) >= 8
    assert [e.kind for e in b["events"]] == [e.kind for e in a["events"]]
    assert [(m.rotations_left, m.rotations_right) for m in b["metrics"]] == [
        (m.rotations_left, m.rotations_right) for m in a["metrics"]]


def test_what_is_not_a_lone_spike_passes():
    dt_s = 0.01
    t = np.arange(8) * dt_s
    still = np.tile([0.0, 0.0, 1.0], (8, 1))
    step = np.zeros((8, 3))
    step[4:, 0] = 2000.0  # a jump that stays (a knock that turned the sensor, a real start): motion
    pair = np.zeros((8, 3))
    pair[3:5, 1] = 2000.0  # two bad samples in a row: not lone (said in spikes.py)
    small = np.zeros((8, 3))
    small[3, 2] = 0.99 * spike_dps(dt_s)  # under the bound: harmless (under 5° of turn at 100 Hz)
    for gyro in (step, pair, small):
        assert not lone_spikes(t, still, gyro, dt_s).any()
    acc_small = still.copy()
    acc_small[3, 1] = 0.99 * SPIKE_G  # (4 g changed nothing measured: spikes.py)
    assert not lone_spikes(t, acc_small, np.zeros((8, 3)), dt_s).any()
    lone = np.zeros((8, 3))
    lone[3, 2] = 1.01 * spike_dps(dt_s)
    assert lone_spikes(t, still, lone, dt_s).tolist() == [i == 3 for i in range(8)]
    acc_lone = still.copy()
    acc_lone[5, 2] = 1.0 + 1.01 * SPIKE_G
    assert lone_spikes(t, acc_lone, np.zeros((8, 3)), dt_s).tolist() == [i == 5 for i in range(8)]
    apart = t.copy()
    apart[4:] += 1.0  # its next neighbour across a lost second: no neighbour, not judged
    assert not lone_spikes(apart, still, lone, dt_s).any()
    assert [spike_dps(1 / rate_hz) for rate_hz in (25, 50, 100, 200)] == pytest.approx([600, 300, 500, 1000])


def test_one_sample_of_16_g_no_longer_reads_a_seated_wearer_standing():
    """An attack on the first version (rotation rate only): one sample of 16 g (a tap on the case, a glitch) added 1.5
    m/s to the double integral sit/stand is told by, and 125 s of sitting read standing (office-short, seed 8)."""
    sim = SensorSimulation(load_scenario("office-short"), seed=8)
    c = next(sim.chunks(max_samples=sim.n_samples))
    acc = c.acc_g.copy()
    acc[859, 1] = 16.0
    clean, dirty = PosturePipeline(), PosturePipeline()
    a, b = fed(clean, c.t_s, c.acc_g, c.gyro_dps, 5), fed(dirty, c.t_s, acc, c.gyro_dps, 5)
    seconds = lambda out, what: sum(getattr(m, what) for m in out["metrics"])  # noqa: E731
    for what in ("sitting_s", "standing_s", "walking_s", "slouch_s"):
        assert seconds(b, what) == pytest.approx(seconds(a, what), abs=0.05), what
    assert seconds(a, "sitting_s") > 100.0 and dirty.samples_spiked == 1


def test_a_sample_withheld_at_the_end_of_the_data_is_measured():
    """A last sample that jumped may be a spike until its next one shows; the data ending there, it is a reading."""
    t = np.arange(0, 5, 0.01)
    acc, gyro = np.tile([0.0, 0.0, 1.0], (len(t), 1)), np.zeros((len(t), 3))
    gyro[-1, 2] = 900.0
    p = PosturePipeline(calibration=Calibration(np.eye(3), True))
    out = p.update(t, acc, gyro)
    assert out.t_s[-1] == t[-2] and p.last_t_s == t[-2]
    end = p.finish()
    assert end.t_s.tolist() == [t[-1]] and p.last_t_s == t[-1] and p.samples_spiked == 0


def test_no_sample_of_real_motion_is_taken_for_a_spike_but_taps_on_the_case_are(shared_data):
    """Real IMU data (BROAD, CC BY 4.0: ../shared/data/broad/README.md; x-io's recording, MIT): fast rotation,
    translation, a phone vibrating, at their rates and thinned down to 26 Hz (the least rate the gateway takes is 25
    Hz; there a sample's rotation rate jumps farthest from its neighbours, 547 °/s: the bound grows with the step),
    not one sample is a lone spike. Taps on the sensor's case that show in one sample are, by their acceleration alone
    (16-17 g): no motion of a trunk, and one such sample read 125 s of sitting as standing. (Most taps ring over 2-5
    samples and pass: spikes.py.)"""
    for name, every, rate_hz, acc_g, gyro_dps in thinned(shared_data):
        t = np.arange(len(gyro_dps)) / rate_hz
        spikes = lone_spikes(t, acc_g, gyro_dps, 1.0 / rate_hz)
        by_gyro = lone_spikes(t, np.zeros_like(acc_g), gyro_dps, 1.0 / rate_hz)
        assert not by_gyro.any(), f"{name} at 1/{every}"
        if "tapping" in name:
            assert 5 <= spikes.sum() <= 100, f"{name} at 1/{every}: {spikes.sum()} taps"  # (those in one sample)
        else:
            assert not spikes.any(), f"{name} at 1/{every}"


def test_the_door_drops_spikes_at_every_rate_the_pipeline_takes():
    """At 50 Hz a step is twice as long: a spike of 490 °/s is 10° (it refused the calibration at 50 Hz)."""
    for rate_hz in (25.0, 50.0, 200.0):
        t = np.arange(0, 10, 1.0 / rate_hz)
        acc, gyro = np.tile([0.0, 0.0, 1.0], (len(t), 1)), np.zeros((len(t), 3))
        gyro[len(t) // 2, 1] = 1.2 * spike_dps(1.0 / rate_hz)
        p = PosturePipeline(PipelineSettings.for_rate(rate_hz), calibration=Calibration(np.eye(3), True))
        fed(p, t, acc, gyro, 25)
        assert p.samples_spiked == 1, rate_hz


@pytest.mark.parametrize("split", [4, 5, 6])
def test_the_door_judges_a_sample_against_the_one_given_before_it_whatever_the_batching(split):
    """Two spikes with one sample between them (the same bit flipped twice): the sample between was judged against the
    first spike inside a batch, and against the last sample kept when a batch ended after it (2 dropped, not 3). And a
    sample held back is the pipeline's own: a caller refilling its buffer for the next batch changed it."""
    t = 100 + np.arange(10) * 0.01
    acc, gyro = np.tile([0.0, 0.0, 1.0], (10, 1)), np.zeros((10, 3))
    gyro[[3, 5], 0] = 900.0
    whole = PosturePipeline(calibration=Calibration(np.eye(3), True))
    fed(whole, t, acc, gyro, 10)
    p = PosturePipeline(calibration=Calibration(np.eye(3), True))
    a, g = acc[:split].copy(), gyro[:split].copy()
    out = [p.update(t[:split], a, g)]
    a[:], g[:] = 0.0, 0.0  # (the caller's buffers, reused)
    out += [p.update(t[split:], acc[split:], gyro[split:]), p.finish()]
    assert p.samples_spiked == whole.samples_spiked == 3
    assert np.concatenate([o.t_s for o in out]).tolist() == t[[0, 1, 2, 6, 7, 8, 9]].tolist()
