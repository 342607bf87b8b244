"""Impulses (pipeline/impulses.py): a tap on the sensor's case that rings over a few samples is bridged before
sit/stand's double integral; real motion never is."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import load_scenario
from pipeline.activity import _zupt_rise_m
from pipeline.impulses import bridged, impulses, landings_kept
from pipeline.orientation import G_M_S2
from pipeline.spikes import SPIKE_G, lone_spikes
from pipeline.stream import PosturePipeline
from support.data import thinned


def ringing_taps(shared_data, every: int) -> tuple[float, list[np.ndarray]]:
    """BROAD's tapping trial (CC BY 4.0: ../shared/data/broad/README.md) thinned 1/every: its rate, and each tap that
    the door's lone-spike test does not drop (it rings over several samples), less the motion around it (the median
    of 11 samples), from the sample before to the sample after."""
    d = np.load(shared_data / "broad" / "24_disturbed_tapping_A.npz")
    rate_hz = float(d["rate_hz"]) / every
    acc, gyro = d["acc_m_s2"][::every] / G_M_S2, np.degrees(d["gyr_rad_s"][::every])
    median = np.median(sliding_window_view(np.pad(acc, ((5, 5), (0, 0)), mode="edge"), 11, axis=0), axis=-1)
    far = np.linalg.norm(acc - median, axis=1) > SPIKE_G
    edges = np.flatnonzero(np.diff(np.concatenate([[0], far.astype(int), [0]])))
    lone = lone_spikes(np.arange(len(acc)) / rate_hz, acc, gyro, 1.0 / rate_hz)
    return rate_hz, [(acc - median)[a - 1:b + 1] for a, b in zip(edges[::2], edges[1::2]) if not lone[a:b].any()]


def test_taps_that_ring_over_several_samples_no_longer_read_a_seated_wearer_standing(shared_data):
    """Each of BROAD's ringing taps at 95 Hz, along each of the sensor's axes in turn, added to office-short (seed 8,
    100 Hz) as the wearer sits up from the calibration's bend: 14 of the 33 read the next 110 s of sitting as standing
    before sit/stand bridged impulses, one pointing mostly across the back among them."""
    rate_hz, taps = ringing_taps(shared_data, 3)
    assert round(rate_hz) == 95 and len(taps) == 11
    sim = SensorSimulation(load_scenario("office-short"), seed=8)
    c = next(sim.chunks(max_samples=4000))

    def sitting_samples(acc_g: np.ndarray) -> int:
        p = PosturePipeline()
        outs = [p.update(c.t_s[i:i + 100], acc_g[i:i + 100], c.gyro_dps[i:i + 100]) for i in range(0, len(c.t_s), 100)]
        return sum(int((o.activity == "sitting").sum()) for o in outs + [p.finish()])

    clean = sitting_samples(c.acc_g)
    assert clean > 2500
    for k, tap in enumerate(taps):
        for axes in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
            acc = c.acc_g.copy()
            acc[859:859 + len(tap)] += tap[:, axes]
            assert abs(sitting_samples(acc) - clean) <= 5, (k, axes)


def test_no_sample_of_real_motion_is_an_impulse_but_taps_that_ring_are(shared_data):
    """BROAD's fast rotation and translation and a phone vibrating, and x-io's recording, at their rates and thinned
    to 26 Hz: no sample lies 3 g from its median (1.80 g at most). Every ringing tap is found."""
    for name, every, rate_hz, acc_g, _ in thinned(shared_data):
        found = impulses(acc_g, rate_hz)
        if "tapping" not in name:
            assert not found.any(), f"{name} at 1/{every}"
    for every in (1, 3, 6):
        rate_hz, taps = ringing_taps(shared_data, every)
        assert taps
        for tap in taps:
            quiet = np.zeros((40, 3))
            found = impulses(np.vstack([quiet, tap, quiet]), rate_hz)
            assert found[40:40 + len(tap)].sum() >= len(tap) - 2 and not found[:38].any() and not found[-38:].any()


@pytest.mark.parametrize("rate_hz", [25, 50, 100, 200])
def test_a_hard_landing_in_a_chair_is_no_impulse(rate_hz):
    """Dropping 0.2 m into a seat stopped in 100 ms (a half-sine peaking 3.2 g over gravity): the body's motion, kept
    (one stopped in 50 ms, 6.3 g, is not: a fall more than a sit-down, docs/pipeline.md)."""
    t = np.arange(-2.0, 3.0, 1.0 / rate_hz)
    fall_s, stop_s = np.sqrt(2 * 0.2 / G_M_S2), 0.1
    peak_g = fall_s * np.pi / (2 * stop_s)  # (in g: the speed at impact, fall_s × 1 g, stopped over stop_s)
    vertical = np.ones_like(t)
    vertical[(t >= 0) & (t < fall_s)] = 0.0
    stopping = (t >= fall_s) & (t < fall_s + stop_s)
    vertical[stopping] = 1.0 + peak_g * np.sin(np.pi * (t[stopping] - fall_s) / stop_s)
    acc = np.column_stack([np.zeros_like(t), np.zeros_like(t), vertical])
    assert peak_g > 3.1 and not impulses(acc, rate_hz).any()


def test_bridged_samples_lie_on_the_line_between_their_neighbours():
    x = np.array([0.0, 1.0, 9.0, -7.0, 4.0, 5.0])
    out = np.array([False, False, True, True, False, False])
    assert bridged(x, out).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert bridged(x, np.zeros(6, bool)) is x
    ends = np.array([True, False, False, False, False, True])
    assert bridged(x, ends).tolist() == [1.0, 1.0, 9.0, -7.0, 4.0, 4.0]


@pytest.mark.parametrize("rate_hz", [50, 100, 200])
def test_a_landing_bridged_as_an_impulse_is_put_back_for_it_stops_the_fall(rate_hz):
    """A fall of 0.2 m stopped in 40 ms (7.9 g over gravity) lies far from its median, like a tap, but its impact is
    what brings the body to rest: bridged, the fall never stopped, and the integral (at rest at its end) read it as a
    rise of a metre (an attack: hard sit-downs stopped in 30-80 ms read as stand-ups). A tap's ringing, bridged, stays
    bridged."""
    dt_s = 1.0 / rate_hz
    t = np.arange(-2.0, 3.0, dt_s)
    fall_s, stop_s = np.sqrt(2 * 0.2 / G_M_S2), 0.04
    x = np.zeros_like(t)  # vertical acceleration less 1 g
    x[(t >= 0) & (t < fall_s)] = -1.0
    stopping = (t >= fall_s) & (t < fall_s + stop_s)
    x[stopping] = fall_s * np.pi / (2 * stop_s) * np.sin(np.pi * (t[stopping] - fall_s) / stop_s)
    tap = np.zeros_like(t)
    tap[np.searchsorted(t, 2.0) + np.arange(3)] = [-7.7, -7.7, -2.7]
    # The landing as sampled (a 40 ms stop in 2-8 samples, the integral of its samples as far off as the sampling makes
    # it), and the tap bridged: no rise.
    for signal, rise_m in ((x, _zupt_rise_m(x * G_M_S2, dt_s)), (tap, 0.0)):
        acc = np.column_stack([np.zeros_like(t), np.zeros_like(t), signal + 1.0])
        gone = impulses(acc, rate_hz)
        assert gone.any()
        kept = bridged(signal, gone)
        acc_m_s2 = landings_kept(kept * G_M_S2, (signal - kept) * G_M_S2, 0.0, dt_s)
        assert _zupt_rise_m(acc_m_s2, dt_s) == pytest.approx(rise_m, abs=1e-9)
    # Bridged alone, nowhere near: a fall four times as deep here, a rise where the impact lies later in the window.
    unstopped_m = _zupt_rise_m(bridged(x, impulses(np.column_stack([0 * t, 0 * t, x + 1]), rate_hz)) * G_M_S2, dt_s)
    assert abs(unstopped_m + 0.2) > 0.5 and -0.4 < _zupt_rise_m(x * G_M_S2, dt_s) < -0.15

