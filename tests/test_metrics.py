"""Per-minute metrics (pipeline/metrics.py MinuteAggregator) from synthetic samples and intervals.

A minute is a whole minute of host Unix time; every second of wear, activity, slouch and lean lands in
the minute it happened, however the samples arrive.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.activity import activity_codes
from pipeline.events import LYING, SITTING, SITTING_GAP_S, STANDING, WALKING, MinuteMetrics, RotationExcursion
from pipeline.metrics import LATER, MAXED, MEAN_BY, PER_ROTATION, SUMMED, MinuteAggregator, merge_minutes
from support.signals import batches, during, grid

RATE_HZ = 100.0
DT_S = 1.0 / RATE_HZ
M0_S = 1_700_000_040.0  # a whole minute of Unix time (28 333 334 × 60 s)
HOLD_S = 6.0  # a minute is handed out this long after it ends


def add(agg: MinuteAggregator, t_s: np.ndarray, activity: np.ndarray | str = SITTING, flexion_deg=0.0,
        lateral_deg=0.0, size: int | None = None, now_s: float | None = None) -> list[MinuteMetrics]:
    """Feed samples size at a time, asking for ready minutes after each batch as the pipeline does (activity by
    name here; the aggregator takes the pipeline's codes)."""
    n = len(t_s)
    activity = activity_codes(np.full(n, activity) if isinstance(activity, str) else activity)
    flexion_deg, lateral_deg = np.broadcast_to(flexion_deg, n), np.broadcast_to(lateral_deg, n)
    out = []
    for sl in batches(n, size or n):
        agg.add_samples(t_s[sl], flexion_deg[sl], lateral_deg[sl], activity[sl], DT_S)
        out += agg.ready(float(t_s[sl][-1]) + DT_S if now_s is None else now_s)
    return out


def by_start(minutes: list[MinuteMetrics]) -> dict[float, MinuteMetrics]:
    """Minutes keyed by their start relative to M0_S."""
    return {m.minute_start_s - M0_S: m for m in minutes}


def since(m: MinuteMetrics) -> float | None:
    """sitting_since_s relative to M0_S (an absolute Unix time would make pytest.approx's default ±0.03 min)."""
    return None if m.sitting_since_s is None else m.sitting_since_s - M0_S


def test_samples_are_bucketed_into_whole_minutes_of_unix_time():
    agg = MinuteAggregator(HOLD_S)
    t = grid(90.0, RATE_HZ, M0_S - 20)  # 20 s before the minute, all of it, 10 s after
    flexion = np.select([t < M0_S, t < M0_S + 60], [10.0, 20.0], 30.0)
    minutes = by_start(add(agg, t, flexion_deg=flexion, lateral_deg=-flexion / 10) + agg.flush())
    assert list(minutes) == [-60.0, 0.0, 60.0]
    assert [m.worn_s for m in minutes.values()] == pytest.approx([20.0, 60.0, 10.0])
    assert [m.flexion_mean_deg for m in minutes.values()] == pytest.approx([10.0, 20.0, 30.0])
    assert [m.lateral_mean_deg for m in minutes.values()] == pytest.approx([-1.0, -2.0, -3.0])


def test_worn_and_activity_seconds_add_up_to_the_samples_duration():
    agg = MinuteAggregator(HOLD_S)
    t = grid(157.3, RATE_HZ, M0_S - 13.7)  # not aligned to anything
    rng = np.random.default_rng(4)
    # Runs of 0.5–20 s of each activity.
    labels, durations = rng.choice([SITTING, STANDING, WALKING, LYING], 40), rng.uniform(0.5, 20.0, 40)
    activity = np.repeat(labels, np.round(durations * RATE_HZ).astype(int))[:len(t)]
    assert len(activity) == len(t)
    minutes = add(agg, t, activity, size=100) + agg.flush()
    assert sum(m.worn_s for m in minutes) == pytest.approx(len(t) * DT_S)
    for m in minutes:
        assert m.sitting_s + m.standing_s + m.walking_s + m.lying_s == pytest.approx(m.worn_s)
        assert m.worn_s <= 60.0 + 1e-9
    for name, field in ((SITTING, "sitting_s"), (STANDING, "standing_s"), (WALKING, "walking_s"), (LYING, "lying_s")):
        assert sum(getattr(m, field) for m in minutes) == pytest.approx(np.count_nonzero(activity == name) * DT_S)


def test_slouch_seconds_land_in_each_minute_an_episode_spans():
    agg = MinuteAggregator(HOLD_S)
    add(agg, grid(240.0, RATE_HZ, M0_S - 60), now_s=M0_S)  # nothing handed out yet
    agg.add_interval("slouch", M0_S - 10, M0_S + 25)  # across one boundary
    agg.add_interval("slouch", M0_S + 50, M0_S + 130)  # across two: the end of one minute, all the next, a bit
    minutes = by_start(agg.flush())
    assert {k: m.slouch_s for k, m in minutes.items()} == pytest.approx({-60.0: 10.0, 0.0: 35.0, 60.0: 60.0,
                                                                         120.0: 10.0})


def test_lean_seconds_and_mean_angle_per_side_and_minute():
    agg = MinuteAggregator(HOLD_S)
    add(agg, grid(120.0, RATE_HZ, M0_S), now_s=M0_S)
    agg.add_interval("lean_left", M0_S + 10, M0_S + 20, -6.0)
    agg.add_interval("lean_left", M0_S + 30, M0_S + 60, -10.0)
    agg.add_interval("lean_right", M0_S + 55, M0_S + 65, 8.0)
    first, second = agg.flush()
    assert (first.lean_left_s, first.lean_right_s) == pytest.approx((40.0, 5.0))
    assert first.lean_left_mean_deg == pytest.approx((10 * -6.0 + 30 * -10.0) / 40)  # weighted by time
    assert first.lean_right_mean_deg == pytest.approx(8.0)
    assert (second.lean_left_s, second.lean_right_s) == pytest.approx((0.0, 5.0))
    assert second.lean_left_mean_deg is None  # no lean that side: no value, not 0°
    assert second.lean_right_mean_deg == pytest.approx(8.0)


@pytest.mark.parametrize("rate_hz", (25.0, 200.0))
def test_slouch_and_lean_seconds_are_worn_seconds(rate_hz):
    """Slouch and lean are spans of time, worn seconds samples × the period: a slouch from the minute before up to
    just after the last sample of a minute cut short (the link lost) counted the edge twice, the last sample's period
    in the minute before and the span from the edge to the first sample here (day 1001 of the accuracy run: 26.808 s of
    slouch in 26.805 s worn, which the contract refuses). Sample times stretched by the clock map's slew span more."""
    dt_s = 1.0 / rate_hz
    agg = MinuteAggregator(HOLD_S)
    t_s = grid(50.0, rate_hz, M0_S - 20 + 0.6 * dt_s)  # samples 0.6 of a period after the minute's edge, lost at 30 s
    t_s = np.concatenate([t_s[t_s < M0_S], M0_S + (t_s[t_s >= M0_S] - M0_S) * 1.05])  # … and slewed 5 % apart
    activity_ = activity_codes(np.full(len(t_s), SITTING))
    agg.add_samples(t_s, np.zeros(len(t_s)), np.zeros(len(t_s)), activity_, dt_s)
    end_s = float(t_s[-1]) + dt_s  # where the pipeline ends an episode the link cut off
    agg.add_interval("slouch", M0_S - 10, end_s)
    agg.add_interval("lean_left", M0_S - 10, M0_S + 20, -8.0)
    agg.add_interval("lean_right", M0_S + 20, end_s, 8.0)
    before, cut = agg.flush()
    assert before.slouch_s == pytest.approx(10.0)  # the edge's sliver: its last sample's period, counted worn here
    assert cut.worn_s == pytest.approx(np.count_nonzero(t_s >= M0_S) * dt_s) and cut.worn_s < end_s - M0_S
    assert cut.slouch_s == cut.worn_s
    assert cut.lean_left_s + cut.lean_right_s == pytest.approx(cut.worn_s)
    assert cut.lean_left_s / cut.lean_right_s == pytest.approx(20.0 / (end_s - M0_S - 20.0))  # each its share
    assert (cut.lean_left_mean_deg, cut.lean_right_mean_deg) == pytest.approx((-8.0, 8.0))


def rotation(start_s: float, end_s: float, side: str, peak_deg: float) -> RotationExcursion:
    return RotationExcursion(start_s, end_s, side, peak_deg)


def test_rotation_counts_cumulative_and_peak_statistics_per_side():
    agg = MinuteAggregator(HOLD_S)
    add(agg, grid(120.0, RATE_HZ, M0_S), now_s=M0_S)
    for e in (rotation(M0_S + 5, M0_S + 6, "right", 20.0), rotation(M0_S + 10, M0_S + 11, "left", 40.0),
              rotation(M0_S + 20, M0_S + 21, "right", 30.0), rotation(M0_S + 70, M0_S + 71, "left", 18.0)):
        agg.add_rotation(e)
    first, second = agg.flush()
    assert (first.rotations_right, first.rotations_left) == (2, 1)
    assert first.rotation_right_cumulative_deg == pytest.approx(50.0)  # the sum of peaks
    assert first.rotation_right_peak_mean_deg == pytest.approx(25.0)
    assert first.rotation_right_peak_max_deg == pytest.approx(30.0)
    assert (first.rotation_left_cumulative_deg, first.rotation_left_peak_mean_deg,
            first.rotation_left_peak_max_deg) == pytest.approx((40.0, 40.0, 40.0))
    assert (second.rotations_right, second.rotations_left) == (0, 1)
    assert second.rotation_right_cumulative_deg == 0.0
    assert second.rotation_right_peak_mean_deg is None and second.rotation_right_peak_max_deg is None


def test_a_rotation_across_a_minute_boundary_counts_once_in_the_minute_it_ended():
    """It is reported when it comes back, like its event: once, never split."""
    agg = MinuteAggregator(HOLD_S)
    add(agg, grid(120.0, RATE_HZ, M0_S - 60), now_s=M0_S)
    agg.add_rotation(rotation(M0_S - 0.3, M0_S + 0.2, "left", 25.0))
    before, after = agg.flush()
    assert (before.rotations_left, after.rotations_left) == (0, 1)
    assert after.rotation_left_cumulative_deg == pytest.approx(25.0)


def test_lost_samples_are_counted_in_their_minute():
    agg = MinuteAggregator(HOLD_S)
    add(agg, grid(120.0, RATE_HZ, M0_S), now_s=M0_S)
    most = round(RATE_HZ * 60)
    agg.add_lost(M0_S + 5, 3, most)
    agg.add_lost(M0_S + 50, 2, most)
    agg.add_lost(M0_S + 61, 4, most)
    agg.add_lost(M0_S + 70, 0, most)
    assert [m.lost_samples for m in agg.flush()] == [5, 4]


@pytest.mark.parametrize("rate_hz", [50.0, 200.0])
def test_a_minute_never_counts_more_lost_samples_than_it_holds(rate_hz):
    # An arrival-timed sensor (WT901BLE, Thingy:52) whose notifications stop for 35 min within one connection counts
    # the whole silence lost, in the minute of the next sample: 105,000 at 50 Hz, 420,000 at 200 Hz, which the contract
    # refuses (at most 120 s at the fastest rate), and the wearer's minute was lost. A minute counts at most the samples
    # it holds at the rate asked; a loss of a few packets still counts whole, in the minute it ends in.
    from contract.messages import payload
    from contract.validation import load_validators, parse
    from pipeline.calibration import Calibration
    from pipeline.stream import PipelineSettings, PosturePipeline

    rng = np.random.default_rng(3)
    pipeline = PosturePipeline(PipelineSettings(rate_hz=rate_hz), calibration=Calibration(np.eye(3), True))
    minutes, silence_s, few = [], 2100.0, 7
    # 150 s worn; silent 35 min (all counted lost); 150 s; 150 s more, its first few samples lost.
    for start_s, lost in [(0.0, 0), (150.0 + silence_s, round(silence_s * rate_hz)), (300.0 + silence_s, few)]:
        t_s = M0_S + start_s + np.arange(round(150 * rate_hz)) / rate_hz
        t_s = t_s[few:] if lost == few else t_s
        acc_g = np.tile([0.0, 0.0, 1.0], (len(t_s), 1)) + rng.normal(0, 0.01, (len(t_s), 3))
        minutes += pipeline.update(t_s, acc_g, rng.normal(0, 1, (len(t_s), 3)), lost).metrics
    minutes += pipeline.link_lost().metrics
    assert {m.minute_start_s - M0_S: m.lost_samples for m in minutes if m.lost_samples} == {
        2220.0: round(60 * rate_hz), 2400.0: few}
    validators = load_validators()
    for m in minutes:  # the contract takes every one
        parse("metrics", json.dumps(payload("dev", m)).encode(), validators, now_s=M0_S + 3600)


def test_a_minute_without_samples_gets_no_metrics_and_does_not_hold_up_the_next():
    agg = MinuteAggregator(HOLD_S)
    out = add(agg, grid(30.0, RATE_HZ, M0_S - 30))  # then the link is lost for the whole next minute
    out += add(agg, grid(30.0, RATE_HZ, M0_S + 60), now_s=M0_S + 60 + 2 * 60)  # back; two minutes later
    assert [m.minute_start_s - M0_S for m in out] == [-60.0, 60.0]
    assert [m.worn_s for m in out] == pytest.approx([30.0, 30.0])


def test_a_minute_is_held_back_so_a_slouch_confirmed_after_it_ended_still_lands_in_it():
    agg = MinuteAggregator(HOLD_S)
    assert add(agg, grid(63.0, RATE_HZ, M0_S - 60)) == []  # 3 s into the next minute: still held
    agg.add_interval("slouch", M0_S - 2, M0_S + 3)  # started 2 s before the minute ended, confirmed only now
    [first] = add(agg, grid(4.0, RATE_HZ, M0_S + 3))  # M0 + 7 s: past the hold
    assert first.minute_start_s - M0_S == -60.0 and first.slouch_s == pytest.approx(2.0)
    [second] = agg.flush()
    assert second.slouch_s == pytest.approx(3.0)


def day_activity(t_s: np.ndarray) -> np.ndarray:
    """Standing for the first 30 s, then sitting."""
    return np.where(t_s < t_s[0] + 30 - 1e-6, STANDING, SITTING)


@pytest.mark.parametrize("size", (1, 7, 100, 1_000_000))
def test_minutes_do_not_depend_on_how_the_samples_are_batched(size):
    t = grid(190.0, RATE_HZ, M0_S - 40)
    flexion, lateral = 20.0 * np.sin((t - M0_S) / 7.0), 5.0 * np.cos((t - M0_S) / 3.0)

    def minutes(size: int) -> list[MinuteMetrics]:
        agg = MinuteAggregator(HOLD_S)
        out = add(agg, t, day_activity(t), flexion, lateral, size=size)
        return out + agg.flush()

    expected, got = minutes(len(t)), minutes(size)
    assert len(expected) == 4 and expected[0].sitting_since_s - M0_S == pytest.approx(-10.0)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        for name, value in dataclasses.asdict(b).items():  # sums in pieces differ in the last bits
            assert getattr(a, name) == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), name


def test_sitting_since_is_the_start_of_the_stretch_and_restarts_after_standing_up():
    agg = MinuteAggregator(HOLD_S)
    t = grid(200.0, RATE_HZ, M0_S - 60)
    # Stands for 20 s, sits; in the next minute stands 20–30 s and sits again; in the third, stands from 40 s on.
    standing = during(t, M0_S - 60, M0_S - 40) | during(t, M0_S + 20, M0_S + 30) | (t >= M0_S + 100 - 1e-6)
    minutes = add(agg, t, np.where(standing, STANDING, SITTING), size=100)
    assert [since(m) for m in minutes] == [pytest.approx(-40.0), pytest.approx(30.0), None]


@pytest.mark.parametrize("sitting_before", (True, False))
def test_sitting_since_is_as_it_was_at_the_minutes_end(sitting_before):
    agg = MinuteAggregator(HOLD_S)
    t = grid(70.0, RATE_HZ, M0_S - 60)
    # Sits (or stands) the whole minute, and changes 2 s into the next one, before the minute is handed out.
    changed = t >= M0_S + 2 - 1e-6
    activity = np.where(changed != sitting_before, SITTING, STANDING)
    [minute] = add(agg, t, activity, size=100)[:1]
    assert since(minute) == (pytest.approx(-60.0) if sitting_before else None)


def test_a_minute_says_where_its_data_ends_so_one_cut_short_is_not_read_to_its_end():
    """A link lost 4.5 s into a minute: the minute goes out unfinished (flush), its data ending at its last sample's
    end, not the minute's; a minute seen to its end ends at its end; one whose rest comes later (the link back within
    it), merged, where the later part's data ends."""
    agg = MinuteAggregator(HOLD_S)
    t = grid(64.5, RATE_HZ, M0_S - 60)
    whole, cut = add(agg, t, size=100) + agg.flush()
    assert whole.seen_until_s == M0_S and cut.seen_until_s == pytest.approx(M0_S + 4.5)
    assert cut.seen_until_s - cut.sitting_since_s == pytest.approx(64.5)  # sat for, by where its data ends
    rest = MinuteAggregator(HOLD_S)
    rest.add_samples(t[-50:] + 30.0, np.zeros(50), np.zeros(50), activity_codes(np.full(50, SITTING)), DT_S)
    [later] = rest.flush()
    assert merge_minutes(cut, later).seen_until_s == pytest.approx(M0_S + 34.5)


@pytest.mark.parametrize("size", (100, 1_000_000))
def test_a_long_gap_ends_the_sitting_stretch_and_a_short_one_does_not(size):
    """Sitting before and after: a dropout (or a reconnect) keeps the stretch the long-sitting alert counts from; a
    sensor off for longer than SITTING_GAP_S (a battery that died at the desk) starts a new one after the gap."""
    agg = MinuteAggregator(HOLD_S)
    t = np.concatenate([grid(30.0, RATE_HZ, M0_S - 30),  # sitting
                        grid(90.0, RATE_HZ, M0_S + 2),  # after a 2 s dropout
                        grid(30.0, RATE_HZ, M0_S + 92 + SITTING_GAP_S - 1),  # after a gap just short of the limit
                        grid(30.0, RATE_HZ, M0_S + 86_400 + 30)])  # the next day, after the sensor was off a night
    minutes = by_start(add(agg, t, size=size) + agg.flush())
    kept = [k for k in minutes if k < 86_400]
    assert len(kept) == 5 and all(since(minutes[k]) == pytest.approx(-30.0) for k in kept)
    [next_day] = [m for k, m in minutes.items() if k >= 86_400]
    assert since(next_day) == pytest.approx(86_430.0) and agg.sitting_since_s == next_day.sitting_since_s


def test_a_stretch_after_a_long_gap_starts_at_its_first_sitting_sample():
    agg = MinuteAggregator(HOLD_S)
    add(agg, grid(30.0, RATE_HZ, M0_S - 30))
    after = M0_S + SITTING_GAP_S + 1
    t = grid(20.0, RATE_HZ, after)
    add(agg, t, np.where(t < after + 5, STANDING, SITTING))  # stood for 5 s after the gap, then sat
    assert agg.sitting_since_s - after == pytest.approx(5.0)
    add(agg, grid(10.0, RATE_HZ, after + 20 + SITTING_GAP_S + 1), STANDING)
    assert agg.sitting_since_s is None


def test_the_minute_means_of_the_angles_leave_lying_out():
    """Lying down has angles but no posture: a nap read as minutes bent back 60° to 90° (flexion −90° lying face
    up) with a lateral bend of +77° (undefined at flexion ±90°), in the Live dashboard, the report and Home
    Assistant's lateral lean. The means are over the minute's upright worn seconds; none for a minute lying."""
    agg = MinuteAggregator(HOLD_S)
    t = grid(120.0, RATE_HZ, M0_S)
    lying = t >= M0_S + 40  # 40 s sitting, then lying: the rest of the minute and all the next
    minutes = by_start(add(agg, t, np.where(lying, LYING, SITTING), flexion_deg=np.where(lying, -90.0, 12.0),
                           lateral_deg=np.where(lying, 77.0, -3.0), size=37) + agg.flush())
    assert minutes[0.0].flexion_mean_deg == pytest.approx(12.0) and minutes[0.0].lateral_mean_deg == pytest.approx(-3)
    assert minutes[0.0].lying_s == pytest.approx(20.0) and minutes[0.0].worn_s == pytest.approx(60.0)
    assert minutes[60.0].flexion_mean_deg is None and minutes[60.0].lateral_mean_deg is None
    assert minutes[60.0].lying_s == pytest.approx(60.0)


def test_every_minute_field_has_a_way_to_merge():
    named = [*SUMMED, *MEAN_BY, *MAXED, *PER_ROTATION, *LATER]
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(MinuteMetrics)) and len(set(named)) == len(named)


def test_two_parts_of_a_minute_merge_as_one_run_would_count_them():
    """A gateway stopped and started within a minute sends it in two parts (gateway/service.py, _continued)."""
    agg_one, agg_a, agg_b = MinuteAggregator(), MinuteAggregator(), MinuteAggregator()
    t_s = grid(60.0)
    flexion = np.select([t_s < 25.0, t_s < 52.0], [5.0, 20.0], -90.0)
    lateral = np.where(t_s < 40.0, -2.0, 6.0)
    act = activity_codes(np.select([t_s < 30.0, t_s < 52.0], [SITTING, STANDING], LYING))  # lay down for the last 8 s
    cut = t_s < 33.0
    for agg, sel in ((agg_one, slice(None)), (agg_a, cut), (agg_b, ~cut)):
        agg.add_samples(t_s[sel], flexion[sel], lateral[sel], act[sel], 0.01)
    for agg, parts in ((agg_one, [(25.0, 45.0)]), (agg_a, [(25.0, 33.0)]), (agg_b, [(33.0, 45.0)])):
        for start, end in parts:
            agg.add_interval("slouch", start, end)
            agg.add_interval("lean_right", start, end, 7.0 if start < 33 else 9.0)
    for agg, events in ((agg_one, [(10.0, 30.0), (50.0, 44.0)]), (agg_a, [(10.0, 30.0)]), (agg_b, [(50.0, 44.0)])):
        for end_s, peak in events:
            agg.add_rotation(RotationExcursion(start_s=end_s - 2, end_s=end_s, side="left", peak_deg=peak))
    (one,), (a,), (b,) = agg_one.flush(), agg_a.flush(), agg_b.flush()
    merged = merge_minutes(a, b)
    for name in SUMMED:
        assert getattr(merged, name) == pytest.approx(getattr(one, name)), name
    for name in [*MAXED, "flexion_mean_deg", "lateral_mean_deg", "rotation_left_peak_mean_deg"]:
        assert getattr(merged, name) == pytest.approx(getattr(one, name)), name
    assert merged.lean_right_mean_deg == pytest.approx((8 * 7.0 + 12 * 9.0) / 20)
    assert merged.rotation_right_peak_mean_deg is None and merged.rotation_right_peak_max_deg is None
    with pytest.raises(ValueError, match="not one minute"):
        merge_minutes(a, dataclasses.replace(b, minute_start_s=60.0))
