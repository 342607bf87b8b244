"""Pipeline building blocks on their own: run finding across batches, symmetry measures, hysteresis."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.activity import ACTIVITY_NAMES, activity_codes
from pipeline.axial import AxialSettings, FacingBaseline
from pipeline.detectors import hysteresis, hysteresis_rows
from pipeline.events import ACTIVITIES
from pipeline.runs import RunFinder
from pipeline.symmetry import symmetry_angle, symmetry_index
from support.signals import batches, grid, ramps


def test_run_finder_gives_the_same_runs_however_the_stream_is_cut():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = np.repeat(rng.random(rng.integers(1, 300)) < 0.6, rng.integers(1, 4))
        finder, runs, i = RunFinder(), [], 0
        while i < len(mask):
            k = int(rng.integers(1, 20))
            runs += finder.feed(mask[i:i + k])
            i += k
        runs += finder.feed(np.zeros(1, bool))
        edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
        expected = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))
        assert [(r.start, r.end) for r in runs] == expected


def test_hysteresis_enters_above_and_leaves_below():
    x = np.array([0, 16, 14, 13, 11, 14, 16, 2], float)
    assert hysteresis(x, 15, 12, False).tolist() == [False, True, True, True, False, False, True, False]
    assert hysteresis(np.array([13.0, 13.0]), 15, 12, True).tolist() == [True, True]


def test_hysteresis_of_rows_is_hysteresis_of_each_row():
    rng = np.random.default_rng(2)
    for _ in range(50):
        x = rng.normal(0.0, 10.0, (3, int(rng.integers(1, 200))))
        enter, exit_, was_high = rng.uniform(0, 10, 3), rng.uniform(-10, 0, 3), rng.random(3) < 0.5
        rows = hysteresis_rows(x, enter, exit_, was_high)
        for k in range(3):
            assert rows[k].tolist() == hysteresis(x[k], enter[k], exit_[k], bool(was_high[k])).tolist()


def test_activity_codes_and_names_are_inverse():
    names = np.array([*ACTIVITIES, ACTIVITIES[2], ACTIVITIES[0]])
    assert ACTIVITY_NAMES[activity_codes(names)].tolist() == names.tolist()
    with pytest.raises(ValueError, match="not an activity"):
        activity_codes(np.array(["sitting", "dancing"]))


def test_symmetry_index_and_angle_signs_and_guard():
    assert symmetry_index(150.0, 50.0) == pytest.approx(100.0)  # right-dominant is positive
    assert symmetry_index(50.0, 150.0) == pytest.approx(-100.0)
    assert symmetry_index(100.0, 100.0) == 0.0
    assert symmetry_index(20.0, 10.0) is None  # too little rotation to mean anything
    assert symmetry_angle(100.0, 0.0) == pytest.approx(50.0)
    assert symmetry_angle(0.0, 100.0) == pytest.approx(-50.0)
    assert symmetry_angle(100.0, 100.0) == pytest.approx(0.0)


def test_the_pipeline_gives_the_same_results_however_the_stream_is_batched():
    """A notification at a time (1–15 samples), the gateway's one-second batches, or a file's chunks."""
    from evaluation.accuracy import CASES, load_case_scenario
    from firmware_sim.imu import SensorSimulation
    from pipeline.stream import PosturePipeline

    case = next(c for c in CASES if c.name == "office-short")
    sim = SensorSimulation(load_case_scenario(case), seed=case.seed)
    chunks = list(sim.chunks(max_samples=100_000))
    t = np.concatenate([c.t_s for c in chunks])
    acc, gyro = np.vstack([c.acc_g for c in chunks]), np.vstack([c.gyro_dps for c in chunks])
    keep = np.random.default_rng(1).random(len(t) // 5).repeat(5)[:len(t)] > 0.03  # lost notifications
    keep[(t > 100) & (t < 112)] = False  # and an outage
    t, acc, gyro = t[keep], acc[keep], gyro[keep]
    results = []
    for size in (5, 100, 997):
        p = PosturePipeline()
        outs = [p.update(t[i:i + size], acc[i:i + size], gyro[i:i + size]) for i in range(0, len(t), size)]
        outs.append(p.finish())
        results.append((np.concatenate([o.activity for o in outs]), np.concatenate([o.flexion_deg for o in outs]),
                        [e for o in outs for e in o.events], [m for o in outs for m in o.metrics]))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0][0], other[0])
        np.testing.assert_allclose(results[0][1], other[1], atol=1e-9)  # a walking correction too: at its sample
        assert [(e.kind, round(getattr(e, "start_s", getattr(e, "t_s", 0)), 6)) for e in results[0][2]] == \
            [(e.kind, round(getattr(e, "start_s", getattr(e, "t_s", 0)), 6)) for e in other[2]]
        assert [round(m.slouch_s, 6) for m in results[0][3]] == [round(m.slouch_s, 6) for m in other[3]]


def test_a_packet_lost_inside_a_twist_costs_less_heading_than_a_straight_line():
    from evaluation.gap_fill import twist_errors
    for rate_hz in (50.0, 100.0):
        err = twist_errors(rate_hz, trials=400, seed=7)
        assert err["pipeline"].mean() < 0.7 * err["linear"].mean(), rate_hz
        assert np.percentile(err["pipeline"], 95) < np.percentile(err["linear"], 95), rate_hz


def test_gap_fill_uses_only_near_context():
    from pipeline.gaps import GYRO_COLUMNS, fill_gap
    t_gap = np.array([0.03, 0.04, 0.05, 0.06, 0.07])
    t = np.array([0.0, 0.01, 0.02, 0.08, 0.09])
    x = np.zeros((5, 6))
    x[:, 5] = [0.0, 10.0, 20.0, 20.0, 10.0]
    assert fill_gap(t, x, 2, t_gap, GYRO_COLUMNS, 0.01)[:, 5].max() > 20.0  # a bell through the gap, not a flat line
    t[4] = 0.11  # the sample after next lies beyond another lost one: it says nothing of this one
    np.testing.assert_allclose(fill_gap(t, x, 2, t_gap, GYRO_COLUMNS, 0.01)[:, 5], 20.0)
    # A gap longer than three notifications is filled linearly: a cubic from four samples would wander.
    t, t_gap = np.array([0.0, 0.01, 0.02, 0.5, 0.51]), np.arange(0.03, 0.495, 0.01)
    np.testing.assert_allclose(fill_gap(t, x, 2, t_gap, GYRO_COLUMNS, 0.01)[:, 5], 20.0)


def test_a_resting_level_takes_no_nan_and_is_the_same_however_the_stream_is_batched():
    """RestLevel._judge iterates until the block levels repeat: a NaN level never equals itself, so one NaN among the
    first samples (a sensor's unreadable reading handed to the pipeline) made every later call loop for ever. A sample
    that is not a number is not eligible: not at rest, and not in the level."""
    from pipeline.running import RestLevel

    rng = np.random.default_rng(3)
    x = 1.0 + 0.002 * rng.standard_normal(5000) + np.where(np.arange(5000) > 2500, 0.01, 0.0)
    x[[5, 700, 3100]] = np.nan
    eligible = rng.random(5000) > 0.1
    eligible[[5, 700, 3100]] = True
    read = {}
    for size in (1, 37, 100, 5000):
        level = RestLevel(100, 1.0 / 1000, 0.03, 100)
        read[size] = np.concatenate([level.at_rest(x[i:i + size], eligible[i:i + size]) for i in range(0, 5000, size)])
        assert level.level is not None and np.isfinite(level.level)
    assert not read[100][[5, 700, 3100]].any()
    for size in (1, 37, 5000):
        np.testing.assert_array_equal(read[size], read[100])


def test_a_band_pass_given_no_samples_keeps_its_state():
    """scipy's lfilter, given no samples, hands back uninitialised memory for the filter's state (1.17.1: -1.6e131 seen
    by a review, or zeros): an empty slice handed to a band-pass must change nothing that comes after it."""
    from pipeline.running import Band

    x = np.random.default_rng(4).standard_normal((3, 400))
    one, one_with_empties = Band(100.0), Band(100.0)
    three, three_with_empties = Band(100.0, channels=3, settled=True), Band(100.0, channels=3, settled=True)
    plain, plain_all, read, read_all = [], [], [], []
    for i in range(0, 400, 100):
        plain.append(one.update(x[0, i:i + 100]))
        plain_all.append(three.update_all(x[:, i:i + 100]))
        assert one_with_empties.update(x[0, i:i]).shape == (0,)
        assert three_with_empties.update_all(x[:, i:i]).shape == (3, 0)
        read.append(one_with_empties.update(x[0, i:i + 100]))
        read_all.append(three_with_empties.update_all(x[:, i:i + 100]))
    np.testing.assert_array_equal(np.concatenate(read), np.concatenate(plain))
    np.testing.assert_array_equal(np.concatenate(read_all, axis=1), np.concatenate(plain_all, axis=1))


def test_a_sample_that_is_not_a_number_is_dropped_and_counted():
    """One NaN reading (an API caller's, a decoder gone wrong) made the sit/stand test's resting level NaN for good, or
    every later sample of its batch "moving": dropped at the door and counted, the rest reads as without it."""
    from pipeline.calibration import Calibration
    from pipeline.stream import PosturePipeline

    t = np.arange(0, 60, 0.01)
    acc = np.tile([0.0, 0.0, 1.0], (len(t), 1)) + 0.001 * np.random.default_rng(1).standard_normal((len(t), 3))
    gyro = 0.05 * np.random.default_rng(2).standard_normal((len(t), 3))
    bad_acc = acc.copy()
    bad_acc[[150, 3000], 1] = np.nan
    keep = np.ones(len(t), bool)
    keep[[150, 3000]] = False
    # Calibrated: an uncalibrated pipeline hands out no samples, and the comparison of times would be of nothing.
    clean, dirty = (PosturePipeline(calibration=Calibration(np.eye(3), True)) for _ in range(2))
    t_k, acc_k, gyro_k = t[keep], acc[keep], gyro[keep]
    a = [clean.update(t_k[i:i + 100], acc_k[i:i + 100], gyro_k[i:i + 100]) for i in range(0, len(t_k), 100)]
    b = [dirty.update(t[i:i + 100], bad_acc[i:i + 100], gyro[i:i + 100]) for i in range(0, len(t), 100)]
    assert dirty.samples_not_finite == 2 and clean.samples_not_finite == 0
    assert [e for o in b for e in o.events] == [e for o in a for e in o.events]
    assert np.array_equal(np.concatenate([o.t_s for o in b]), np.concatenate([o.t_s for o in a]))
    assert np.array_equal(np.concatenate([o.activity for o in b]), np.concatenate([o.activity for o in a]))
    assert len(np.concatenate([o.t_s for o in b])) == len(t) - 2


def test_a_sample_past_what_any_imu_measures_is_dropped_and_counted():
    """A finite value no sensor reads (a corrupt cell, a caller's bug): one gyro sample of 1e300 °/s made the
    orientation NaN and every later batch raise, two accelerometer samples of 1e20 g changed the activity of 38 % of
    ten minutes. Dropped at the door and counted, the rest reads as without them."""
    from pipeline.calibration import Calibration
    from pipeline.stream import MAX_ACC_G, MAX_GYRO_DPS, PosturePipeline

    t = np.arange(0, 60, 0.01)
    acc = np.tile([0.0, 0.0, 1.0], (len(t), 1)) + 0.001 * np.random.default_rng(1).standard_normal((len(t), 3))
    gyro = 0.05 * np.random.default_rng(2).standard_normal((len(t), 3))
    bad_acc, bad_gyro = acc.copy(), gyro.copy()
    bad_gyro[150, 2], bad_acc[3000, 0] = 1e300, -1e20
    bad_acc[4000, 1], bad_gyro[5000, 0] = 1.01 * MAX_ACC_G, -2 * MAX_GYRO_DPS
    bad_acc[4500:4503, 2] = MAX_ACC_G  # at the bound: kept (three in a row: no lone spike, pipeline/spikes.py)
    bad_acc[4700] = 0.0  # a failed read (an attack: one such sample read 110 s of sitting as standing)
    keep = np.ones(len(t), bool)
    keep[[150, 3000, 4000, 4700, 5000]] = False
    # Calibrated: an uncalibrated pipeline hands out no samples, and the comparisons below would be of nothing.
    clean, dirty = (PosturePipeline(calibration=Calibration(np.eye(3), True)) for _ in range(2))
    t_k, acc_k, gyro_k = t[keep], bad_acc[keep], gyro[keep]
    a = [clean.update(t_k[i:i + 100], acc_k[i:i + 100], gyro_k[i:i + 100]) for i in range(0, len(t_k), 100)]
    b = [dirty.update(t[i:i + 100], bad_acc[i:i + 100], bad_gyro[i:i + 100]) for i in range(0, len(t), 100)]
    assert (dirty.samples_out_of_range, dirty.samples_not_finite) == (5, 0)
    assert [e for o in b for e in o.events] == [e for o in a for e in o.events]
    assert np.array_equal(np.concatenate([o.t_s for o in b]), np.concatenate([o.t_s for o in a]))
    assert np.array_equal(np.concatenate([o.activity for o in b]), np.concatenate([o.activity for o in a]))
    assert len(np.concatenate([o.t_s for o in b])) == len(t) - 5


def test_a_time_past_2100_or_an_orientation_that_is_none_is_dropped_and_the_stream_goes_on():
    """One sample stamped 1e15 s (a time in ns, a corrupt cell) made every sample after it "out of order": the rest of
    the stream dropped. One zero quaternion (a caller's orientation) made every batch after it raise."""
    from pipeline.calibration import Calibration
    from pipeline.stream import MAX_T_S, PosturePipeline

    t = 1.79e9 + np.arange(0, 60, 0.01)
    acc = np.tile([0.0, 0.0, 1.0], (len(t), 1)) + 0.001 * np.random.default_rng(1).standard_normal((len(t), 3))
    gyro = 0.05 * np.random.default_rng(2).standard_normal((len(t), 3))
    # Unit quaternions of every heading (w, x, y near 0 at half a turn: a norm of w, x, y alone dropped them, 179
    # samples of the x-io recording replayed --offline).
    half = np.radians(np.linspace(0.0, 360.0, len(t))) / 2.0
    quat = np.column_stack([np.cos(half), np.zeros(len(t)), np.zeros(len(t)), np.sin(half)])
    bad_t, bad_quat = t.copy(), quat.copy()
    bad_t[[1000, 2000]] = [1e15, MAX_T_S * 1.01]
    bad_quat[[3099, 4050]] = 0.0  # the last sample of a batch, and one inside one
    keep = np.ones(len(t), bool)
    keep[[1000, 2000, 3099, 4050]] = False
    clean, dirty = (PosturePipeline(calibration=Calibration(np.eye(3), True)) for _ in range(2))
    a = [clean.update(t[keep][i:i + 100], acc[keep][i:i + 100], gyro[keep][i:i + 100], quat_wxyz=quat[keep][i:i + 100])
         for i in range(0, keep.sum(), 100)]
    b = [dirty.update(bad_t[i:i + 100], acc[i:i + 100], gyro[i:i + 100], quat_wxyz=bad_quat[i:i + 100])
         for i in range(0, len(t), 100)]
    assert (dirty.samples_out_of_range, dirty.samples_out_of_order) == (4, 0)
    assert len(np.concatenate([o.t_s for o in b])) == len(t) - 4
    assert np.array_equal(np.concatenate([o.t_s for o in b]), np.concatenate([o.t_s for o in a]))
    assert np.array_equal(np.concatenate([o.flexion_deg for o in b]), np.concatenate([o.flexion_deg for o in a]))
    assert [m.flexion_mean_deg for o in b for m in o.metrics] == [m.flexion_mean_deg for o in a for m in o.metrics]


def test_samples_lost_before_a_batch_the_door_drops_whole_are_still_counted():
    """A batch all of whose samples are dropped (not numbers, out of order) still says how many were lost before it:
    those went uncounted (4 of 10 in a review's case); now the next batch's minute counts them."""
    from pipeline.calibration import Calibration
    from pipeline.stream import PosturePipeline

    t = np.arange(0, 30, 0.01)
    acc, gyro = np.tile([0.0, 0.0, 1.0], (len(t), 1)), np.zeros((len(t), 3))
    p = PosturePipeline(calibration=Calibration(np.eye(3), True))
    p.update(t[:1000], acc[:1000], gyro[:1000])
    nan = acc[1000:1100].copy()
    nan[:, 0] = np.nan
    p.update(t[1000:1100], nan, gyro[1000:1100], lost_samples=4)  # all dropped
    p.update(t[990:1000], acc[990:1000], gyro[990:1000], lost_samples=3)  # all out of order
    p.update(t[1100:], acc[1100:], gyro[1100:], lost_samples=2)
    assert sum(m.lost_samples for m in p.finish().metrics) == 9


def test_a_batch_of_the_wrong_shape_is_said_in_one_line_and_the_stream_goes_on():
    from pipeline.stream import PosturePipeline

    t = np.arange(0, 2, 0.01)
    acc, gyro = np.tile([0.0, 0.0, 1.0], (len(t), 1)), np.zeros((len(t), 3))
    p = PosturePipeline()
    for args, said in [((t, acc[:, :2], gyro), "acc_g (n, 3)"), ((t, acc, gyro.T), "gyro_dps (n, 3)"),
                       ((t, acc[:-1], gyro), "acc_g (n, 3)"), ((t[:, None], acc, gyro), "t_s (n,)")]:
        with pytest.raises(ValueError, match=re.escape(said)):
            p.update(*args)
    for lost in (-1, 1.5, float("nan"), "3", True):
        with pytest.raises(ValueError, match="lost_samples must be a whole number"):
            p.update(t[:100], acc[:100], gyro[:100], lost)
    with pytest.raises(ValueError, match=re.escape("quat_wxyz must be (n, 4)")):
        p.update(t[:100], acc[:100], gyro[:100], quat_wxyz=np.ones((100, 3)))
    p.update(t[:100], acc[:100], gyro[:100], np.int64(2))
    p.update(t[100:], acc[100:], gyro[100:])
    assert p.last_t_s == t[-1] and p.samples_out_of_order == 0


@pytest.mark.parametrize("given_first", [True, False])
def test_an_orientation_given_and_then_not_across_lost_packets_fills_the_gaps(given_first):
    """A caller that gives the sensor's orientation for some batches and not others (an offline estimate for part of a
    recording): a packet lost where it changed made the gap filling raise (the history had 10 columns, the batch 6)."""
    from pipeline.calibration import Calibration
    from pipeline.stream import PosturePipeline

    t = np.arange(0, 10, 0.01)
    acc, gyro, quat = np.tile([0.0, 0.0, 1.0], (len(t), 1)), np.zeros((len(t), 3)), np.tile([1.0, 0, 0, 0], (len(t), 1))
    p = PosturePipeline(calibration=Calibration(np.eye(3), True))
    shown = 0
    for k, (a, b) in enumerate([(0, 500), (520, 700), (720, 900), (903, 1000)]):
        given = (k % 2 == 0) == given_first
        shown += len(p.update(t[a:b], acc[a:b], gyro[a:b], quat_wxyz=quat[a:b] if given else None).t_s)
    shown += len(p.finish().t_s)
    assert (shown, p.gaps_filled, p.samples_discarded, p.last_t_s) == (957, 3, 0, t[999])


def measured_after_gap(yaw_deg: np.ndarray, walking: np.ndarray, size: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Through a baseline reset as after a lost link, size samples at a time: the rotation and jumps as finally measured
    (the held samples as measured again when the hold ended), the rotation as the output shows it, and how each hold
    ended."""
    baseline = FacingBaseline(AxialSettings())
    baseline.reset(hold=True)
    final, jumps, shown, found = [], [], [], []
    for sl in batches(len(yaw_deg), size):
        rotation, jumped = baseline.update(yaw_deg[sl], walking[sl])
        shown.append(rotation)
        if (ended := baseline.found) is not None:
            found.append(ended)
            if ended.rotation_deg is not None:
                final, jumps, shown[-1] = [ended.rotation_deg], [ended.jumped], ended.shown_deg
        final.append(rotation)
        jumps.append(jumped)
    return np.concatenate(final), np.concatenate(jumps), np.concatenate(shown), found


def test_after_a_lost_link_the_held_headings_are_measured_from_the_one_held_settle_s():
    """The link back with the trunk 27° to the left: provisionally that is facing forward (0°); once the trunk has held
    0° for 15 s (at 24 s), the samples since the gap are measured again from there, however the stream was batched.
    The output shows the provisional measure up to there, the same in any batching."""
    t = grid(40.0)
    yaw = ramps(t, (8.0, -27.0), (9.0, 0.0))
    shown = []
    for size in (37, 100, 997):
        final, jumped, shown_now, found = measured_after_gap(yaw, np.zeros(len(t), bool), size)
        assert len(found) == 1 and found[0].rotation_deg is not None
        # The facing direction starts afresh at the first sample: an excursion out before it was not seen whole.
        assert jumped.tolist() == [True] + [False] * (len(t) - 1)
        np.testing.assert_allclose(final[t < 8.0], -27.0, atol=0.5)
        np.testing.assert_allclose(final[t > 9.0], 0.0, atol=0.5)
        shown.append(shown_now)
    np.testing.assert_allclose(shown[0][t < 8.0], 0.0, atol=1e-9)
    np.testing.assert_allclose(shown[0][(t > 9.0) & (t < 23.0)], 27.0, atol=0.5)  # the way back, provisionally
    np.testing.assert_allclose(shown[0][t > 25.0], 0.0, atol=0.5)
    np.testing.assert_array_equal(shown[1], shown[0])
    np.testing.assert_array_equal(shown[2], shown[0])


@pytest.mark.parametrize(("walk_from_s", "how_long_s"), [(5.0, 5.0), (None, AxialSettings().hold_max_s)])
def test_a_hold_after_a_lost_link_ends_as_provisional_at_a_walk_or_after_hold_max_s(walk_from_s, how_long_s):
    """Walking shows the facing direction but not where it was before the walk; a trunk that never holds one heading
    15 s shows none: the provisional measure stands, from the end of the hold on as before it."""
    t = grid(AxialSettings().hold_max_s + 30.0)
    yaw = 10.0 * np.sign(np.sin(2 * np.pi * t / 4.0))  # ±10° every 2 s: never steady within near_deg
    walking = t >= walk_from_s if walk_from_s is not None else np.zeros(len(t), bool)
    final, _, shown, found = measured_after_gap(yaw, walking, 100)
    assert [(f.rotation_deg, f.jumped, f.shown_deg) for f in found] == [(None, None, None)]
    np.testing.assert_array_equal(final, shown)
    baseline = FacingBaseline(AxialSettings())
    baseline.reset(hold=True)
    ended_s = next(sl.stop / 100.0 for sl in batches(len(t), 100) if baseline.update(yaw[sl], walking[sl])
                   and baseline.found is not None)
    assert ended_s == pytest.approx(how_long_s, abs=1.0)
