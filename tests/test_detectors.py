"""Slouch, lean and rotation detectors (pipeline/detectors.py) on synthetic angle traces.

What a wearer sees of them: an episode per held posture, starting where the angle crossed the enter
threshold and ending where it fell below the exit one; none for a posture held shorter than the dwell;
no flicker around the line; the same events however the stream is cut into batches; and a rotation
counted only when it is a trunk twist (in range, out and back in time, clear of walking).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detectors import (
    LeanDetector,
    LeanSettings,
    RotationDetector,
    RotationSettings,
    SlouchDetector,
    SlouchSettings,
    feed_together,
)
from pipeline.events import EpisodeStart, LeanInterval, RotationExcursion, SlouchEpisode
from support.signals import batches, during, grid, held, ramps

RATE_HZ = 100.0
DT_S = 1.0 / RATE_HZ
T0_S = 1_700_000_000.0  # host Unix time: detectors never see t = 0
# Spelled out rather than taken from the defaults, so the traces below say what they test.
SLOUCH = SlouchSettings(rate_hz=RATE_HZ, threshold_deg=15.0, hysteresis_deg=3.0, dwell_s=5.0)  # leave below 12°
LEAN = LeanSettings(rate_hz=RATE_HZ, threshold_deg=6.0, hysteresis_deg=2.0, dwell_s=5.0)  # leave below 4°
ROTATION = RotationSettings(rate_hz=RATE_HZ, enter_deg=12.0, exit_deg=4.0, min_peak_deg=15.0, max_peak_deg=60.0,
                            min_s=0.1, max_s=15.0)
BATCH_SIZES = (1, 7, 100, 1_000_000)  # a sample at a time, odd cuts, the gateway's second, all at once


def feed(detector, t_s: np.ndarray, angle_deg: np.ndarray, context: np.ndarray, size: int | None = None,
         close: bool = True) -> list:
    """Events from the whole trace, fed size samples at a time, then close() (the end of the data)."""
    events = []
    for sl in batches(len(t_s), size or len(t_s)):
        events += detector.update(t_s[sl], angle_deg[sl], context[sl])
    return events + detector.close() if close else events


def slouches(t_s, flexion_deg, allowed=None, size=None, close=True) -> list[SlouchEpisode]:
    allowed = np.ones(len(t_s), bool) if allowed is None else allowed
    return feed(SlouchDetector(SLOUCH), t_s, flexion_deg, allowed, size, close)


def leans(t_s, lateral_deg, sitting=None, size=None) -> list[LeanInterval]:
    sitting = np.ones(len(t_s), bool) if sitting is None else sitting
    return feed(LeanDetector(LEAN), t_s, lateral_deg, sitting, size)


def rotations(t_s, rotation_deg, excluded=None, size=None) -> list[RotationExcursion]:
    excluded = np.zeros(len(t_s), bool) if excluded is None else excluded
    return feed(RotationDetector(ROTATION), t_s, rotation_deg, excluded, size)


def assert_same_events(got: list, expected: list) -> None:
    """Equal field by field: times and sides exactly, angles to rounding (a sum in pieces differs in the last bit)."""
    assert len(got) == len(expected), (got, expected)
    for a, b in zip(got, expected):
        assert type(a) is type(b)
        for name, value in vars(b).items():
            angle = isinstance(value, float) and name.endswith("_deg")
            assert getattr(a, name) == (pytest.approx(value, rel=1e-12) if angle else value), name


def spans(events) -> list[tuple[float, float]]:
    """(start, end) relative to T0_S, rounded well below a sample."""
    return [(round(e.start_s - T0_S, 6), round(e.end_s - T0_S, 6)) for e in events]


# --- slouch -----------------------------------------------------------------------------------------------------


def test_a_held_slouch_is_one_episode_with_its_peak_and_mean():
    t = grid(30.0, RATE_HZ, T0_S)
    # 18° from 10 s to 20 s, with one second at 24° (reaching for something) in the middle.
    flexion = held(t, (T0_S + 10, T0_S + 20, 18.0), (T0_S + 14, T0_S + 15, 24.0))
    [episode] = slouches(t, flexion)
    assert spans([episode]) == [(10.0, 20.0)]
    assert episode.duration_s == pytest.approx(10.0)
    assert episode.peak_flexion_deg == pytest.approx(24.0)
    assert episode.mean_flexion_deg == pytest.approx((9 * 18.0 + 1 * 24.0) / 10)  # time-weighted over the episode


def test_an_episode_runs_from_crossing_the_threshold_to_falling_below_the_exit_not_from_the_dwell():
    t = grid(30.0, RATE_HZ, T0_S)
    # Up from 0° to 20° over 10–11 s (crosses 15° at 10.75 s), down to 0° over 18–20 s (below 12° at 18.8 s).
    flexion = ramps(t, (T0_S + 10, 0.0), (T0_S + 11, 20.0), (T0_S + 18, 20.0), (T0_S + 20, 0.0))
    [episode] = slouches(t, flexion)
    # The dwell confirms it only at 15.75 s; the episode still starts where the slouch did.
    assert episode.start_s - T0_S == pytest.approx(10.75, abs=DT_S)
    assert episode.end_s - T0_S == pytest.approx(18.8, abs=DT_S)
    assert episode.peak_flexion_deg == pytest.approx(20.0, abs=0.01)


@pytest.mark.parametrize(("held_s", "expected"), [(4.5, 0), (4.98, 0), (5.02, 1), (5.5, 1)])
def test_a_slouch_shorter_than_the_dwell_is_no_episode(held_s, expected):
    t = grid(30.0, RATE_HZ, T0_S)
    flexion = held(t, (T0_S + 10, T0_S + 10 + held_s, 25.0))
    assert len(slouches(t, flexion)) == expected


def test_dipping_between_exit_and_enter_does_not_split_an_episode():
    t = grid(40.0, RATE_HZ, T0_S)
    # Slouched, then sitting up a little (13°: below the threshold, above the exit) for 2 s, then slouched again.
    flexion = held(t, (T0_S + 10, T0_S + 16, 20.0), (T0_S + 16, T0_S + 18, 13.0), (T0_S + 18, T0_S + 24, 20.0))
    assert spans(slouches(t, flexion)) == [(10.0, 24.0)]


def test_breathing_around_the_threshold_is_one_episode_not_a_flicker():
    t = grid(60.0, RATE_HZ, T0_S)
    # Held at 15° ± 2° of breathing (4 s a breath): crosses the threshold every few seconds, never below 12°.
    flexion = np.where(during(t, T0_S + 10, T0_S + 40), 15.0 + 2.0 * np.sin(2 * np.pi * (t - T0_S) / 4.0), 0.0)
    [episode] = slouches(t, flexion)
    first_above = t[flexion > 15.0][0] - T0_S
    assert spans([episode]) == [(round(first_above, 6), 40.0)]


def test_falling_below_the_exit_ends_an_episode():
    t = grid(40.0, RATE_HZ, T0_S)
    # Sitting up to 11° (below the 12° exit) for 2 s between two 6 s slouches: two episodes.
    flexion = held(t, (T0_S + 10, T0_S + 16, 20.0), (T0_S + 16, T0_S + 18, 11.0), (T0_S + 18, T0_S + 24, 20.0))
    assert spans(slouches(t, flexion)) == [(10.0, 16.0), (18.0, 24.0)]


def test_hovering_between_exit_and_enter_without_crossing_the_threshold_is_no_slouch():
    t = grid(40.0, RATE_HZ, T0_S)
    assert slouches(t, held(t, (T0_S + 5, T0_S + 35, 14.0))) == []


def test_walking_ends_a_slouch_and_is_not_counted_in_it():
    t = grid(40.0, RATE_HZ, T0_S)
    flexion = held(t, (T0_S + 10, T0_S + 30, 20.0))
    allowed = ~during(t, T0_S + 18, T0_S + 19)  # a few steps while bent forward (walking: not measured)
    assert spans(slouches(t, flexion, allowed)) == [(10.0, 18.0), (19.0, 30.0)]


def slouch_day(t_s: np.ndarray) -> np.ndarray:
    """Episodes of every shape: held, breathing, dipping between the thresholds, too short, and one open at the end."""
    rel = t_s - T0_S
    flexion = held(t_s, (T0_S + 5, T0_S + 12, 22.0), (T0_S + 12, T0_S + 14, 13.0), (T0_S + 14, T0_S + 20, 18.0),
                   (T0_S + 30, T0_S + 33, 30.0), (T0_S + 70, T0_S + 90, 20.0))
    breathing = during(t_s, T0_S + 40, T0_S + 60)
    flexion[breathing] = 15.0 + 2.5 * np.sin(2 * np.pi * rel[breathing] / 3.7)
    return flexion


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_slouch_episodes_do_not_depend_on_how_the_stream_is_batched(size):
    t = grid(90.0, RATE_HZ, T0_S)
    flexion = slouch_day(t)
    whole = slouches(t, flexion)
    assert len(whole) == 3  # the held/dipping one, the breathing one, and the one the end of the data closed
    assert_same_events(slouches(t, flexion, size=size), whole)


def test_an_episode_open_at_a_batch_end_carries_its_statistics_over():
    t = grid(40.0, RATE_HZ, T0_S)
    flexion = held(t, (T0_S + 10, T0_S + 30, 20.0), (T0_S + 12, T0_S + 13, 30.0), (T0_S + 27, T0_S + 28, 26.0))
    detector = SlouchDetector(SLOUCH)
    cut = np.searchsorted(t, T0_S + 20)  # in the middle of the episode, after its peak
    assert detector.update(t[:cut], flexion[:cut], np.ones(cut, bool)) == []  # still going: nothing yet
    [episode] = detector.update(t[cut:], flexion[cut:], np.ones(len(t) - cut, bool))
    assert spans([episode]) == [(10.0, 30.0)]
    assert episode.peak_flexion_deg == pytest.approx(30.0)  # the peak was in the first batch
    assert episode.mean_flexion_deg == pytest.approx((18 * 20.0 + 30.0 + 26.0) / 20)


def test_a_slouch_confirmed_by_the_dwell_is_reported_open_from_its_start():
    """The per-minute slouch time counts an episode while it is open, once the dwell has confirmed it."""
    t = grid(30.0, RATE_HZ, T0_S)
    flexion = held(t, (T0_S + 10, T0_S + 30, 20.0))
    detector = SlouchDetector(SLOUCH)
    cut = np.searchsorted(t, T0_S + 14)
    detector.update(t[:cut], flexion[:cut], np.ones(cut, bool))
    assert detector.in_progress(T0_S + 14.0) is None  # 4 s: not yet a slouch
    rest = slice(cut, np.searchsorted(t, T0_S + 16))
    detector.update(t[rest], flexion[rest], np.ones(rest.stop - rest.start, bool))
    confirmed = detector.in_progress(T0_S + 16.0)
    assert confirmed is not None and (confirmed.start_s - T0_S, confirmed.end_s - T0_S) == pytest.approx((10.0, 16.0))
    assert confirmed.peak_flexion_deg == pytest.approx(20.0)


def test_closing_ends_an_open_slouch_at_the_last_sample_seen():
    t = grid(20.0, RATE_HZ, T0_S)
    flexion = held(t, (T0_S + 10, T0_S + 30, 20.0))  # still slouched when the data stops at 20 s
    detector = SlouchDetector(SLOUCH)
    assert detector.update(t, flexion, np.ones(len(t), bool)) == []
    [episode] = detector.close()
    assert spans([episode]) == [(10.0, 20.0)]  # the last sample is at 19.99 s and lasts a sample
    assert detector.close() == []  # once


def test_closing_drops_a_slouch_shorter_than_the_dwell():
    t = grid(14.0, RATE_HZ, T0_S)
    detector = SlouchDetector(SLOUCH)
    detector.update(t, held(t, (T0_S + 10, T0_S + 30, 20.0)), np.ones(len(t), bool))
    assert detector.close() == []  # 4 s seen: not a slouch, whatever came after the gap


def test_after_closing_the_next_data_starts_afresh():
    """A lost link closes what was open: nothing carries over the gap, not even the hysteresis."""
    before, after = grid(20.0, RATE_HZ, T0_S), grid(20.0, RATE_HZ, T0_S + 60)
    detector = SlouchDetector(SLOUCH)
    detector.update(before, held(before, (T0_S + 10, T0_S + 20, 20.0)), np.ones(len(before), bool))
    assert spans(detector.close()) == [(10.0, 20.0)]
    # After the gap: 13° (between exit and enter) does not resume the slouch; 20° starts a new one.
    flexion = held(after, (T0_S + 60, T0_S + 70, 13.0), (T0_S + 70, T0_S + 80, 20.0))
    assert spans(detector.update(after, flexion, np.ones(len(after), bool)) + detector.close()) == [(70.0, 80.0)]


def test_a_slouch_still_going_after_a_close_is_a_new_episode_from_the_first_sample_after():
    before, after = grid(8.0, RATE_HZ, T0_S + 10), grid(8.0, RATE_HZ, T0_S + 30)
    detector = SlouchDetector(SLOUCH)
    detector.update(before, np.full(len(before), 20.0), np.ones(len(before), bool))
    first = detector.close()
    second = detector.update(after, np.full(len(after), 20.0), np.ones(len(after), bool)) + detector.close()
    assert spans(first + second) == [(10.0, 18.0), (30.0, 38.0)]  # no episode straddles the gap


@pytest.mark.parametrize("size", (7, 100))
def test_slouch_episodes_around_walking_do_not_depend_on_batching(size):
    t = grid(30.0, RATE_HZ, T0_S)
    # Slouched (20°), then 13° (between exit and enter) with a second of walking in it, until 25 s.
    flexion = held(t, (T0_S + 2, T0_S + 4, 20.0), (T0_S + 4, T0_S + 25, 13.5))
    allowed = ~during(t, T0_S + 10, T0_S + 11)
    assert spans(slouches(t, flexion, allowed, size=size)) == spans(slouches(t, flexion, allowed))
    # Walking ended the episode; 13.5° after it never crossed the threshold again: no new one.
    assert spans(slouches(t, flexion, allowed)) == [(2.0, 10.0)]


def fed_with_starts(detector, t_s, angle_deg, context, size) -> list[tuple[int, object]]:
    """(batch number, event) for every start and end, in the order a batch gives them (starts first), then close()."""
    out = []
    for k, sl in enumerate(batches(len(t_s), size)):
        ends = detector.update(t_s[sl], angle_deg[sl], context[sl])
        out += [(k, e) for e in [*detector.starts, *ends]]
    return out + [(-1, e) for e in detector.close()]


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_a_slouch_says_it_started_once_in_the_batch_where_its_dwell_is_reached(size):
    t = grid(90.0, RATE_HZ, T0_S)
    flexion = slouch_day(t)
    events = fed_with_starts(SlouchDetector(SLOUCH), t, flexion, np.ones(len(t), bool), size)
    starts = [(k, e) for k, e in events if isinstance(e, EpisodeStart)]
    ends = [e for _, e in events if isinstance(e, SlouchEpisode)]
    assert [e.start_s for _, e in starts] == [e.start_s for e in ends] and len(ends) == 3  # one each, same start_s
    for (k, start), end in zip(starts, ends):
        assert (start.episode, start.side) == ("slouch", None)
        # Confirmed at the first sample that completes 5 s (the sample's own period included), in its batch.
        assert start.confirmed_after_s == pytest.approx(SLOUCH.dwell_s, abs=1e-6)
        confirming = np.searchsorted(t, start.start_s + start.confirmed_after_s - DT_S - 1e-6)
        assert k == confirming // size
        assert [i for i, (_, e) in enumerate(events) if e is start][0] < [i for i, (_, e) in enumerate(events)
                                                                           if e is end][0]


@pytest.mark.parametrize(("held_s", "started"), [(4.98, 0), (5.0, 1), (5.5, 1)])
def test_a_slouch_shorter_than_the_dwell_never_starts(held_s, started):
    t = grid(30.0, RATE_HZ, T0_S)
    flexion = held(t, (T0_S + 10, T0_S + 10 + held_s, 25.0))
    events = fed_with_starts(SlouchDetector(SLOUCH), t, flexion, np.ones(len(t), bool), len(t))
    assert sum(isinstance(e, EpisodeStart) for _, e in events) == started
    assert sum(isinstance(e, SlouchEpisode) for _, e in events) == started  # started and ended in one batch


def test_a_slouch_the_end_of_the_data_closes_was_started_before_and_not_again():
    t = grid(20.0, RATE_HZ, T0_S)
    detector = SlouchDetector(SLOUCH)
    detector.update(t, held(t, (T0_S + 10, T0_S + 30, 20.0)), np.ones(len(t), bool))
    [start] = detector.starts
    [episode] = detector.close()
    assert start.start_s == episode.start_s
    later = grid(2.0, RATE_HZ, T0_S + 60)  # after a close nothing of the old run is left to start
    detector.update(later, np.full(len(later), 20.0), np.ones(len(later), bool))
    assert detector.starts == []


# --- lean -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lateral_deg", "side"), [(9.0, "right"), (-9.0, "left")])
def test_a_lean_has_its_side_and_signed_mean(lateral_deg, side):
    t = grid(30.0, RATE_HZ, T0_S)
    # Held for 10 s, the last 2 s of it 3° further over.
    lateral = held(t, (T0_S + 10, T0_S + 20, lateral_deg), (T0_S + 18, T0_S + 20, lateral_deg * 4 / 3))
    [interval] = leans(t, lateral)
    assert (interval.side, spans([interval])) == (side, [(10.0, 20.0)])
    assert interval.mean_lateral_deg == pytest.approx(lateral_deg * (8 + 2 * 4 / 3) / 10)  # + right, − left


def test_a_lean_dipping_between_the_thresholds_stays_one_interval_and_too_short_is_none():
    t = grid(60.0, RATE_HZ, T0_S)
    # Left 8°, easing to 5° (inside the 4–6° band) for 2 s, back to 8°; later a 3 s lean to the right.
    lateral = held(t, (T0_S + 5, T0_S + 10, -8.0), (T0_S + 10, T0_S + 12, -5.0), (T0_S + 12, T0_S + 17, -8.0),
                   (T0_S + 30, T0_S + 33, 10.0))
    [interval] = leans(t, lateral)
    assert (interval.side, spans([interval])) == ("left", [(5.0, 17.0)])


def test_a_lean_counts_only_while_sitting():
    t = grid(40.0, RATE_HZ, T0_S)
    lateral = held(t, (T0_S + 5, T0_S + 35, 10.0))
    sitting = ~during(t, T0_S + 5, T0_S + 20)  # standing for the first 15 s of it: a bag on one shoulder
    assert spans(leans(t, lateral, sitting)) == [(20.0, 35.0)]


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_lean_intervals_do_not_depend_on_how_the_stream_is_batched(size):
    t = grid(80.0, RATE_HZ, T0_S)
    lateral = held(t, (T0_S + 5, T0_S + 12, -9.0), (T0_S + 12, T0_S + 13, -5.0), (T0_S + 13, T0_S + 20, -7.0),
                   (T0_S + 30, T0_S + 41, 12.0), (T0_S + 60, T0_S + 80, 7.0))
    whole = leans(t, lateral)
    assert [e.side for e in whole] == ["left", "right", "right"]
    assert_same_events(leans(t, lateral, size=size), whole)
    # Each says once which side it started leaning to, with its end's start_s, however it is batched.
    events = fed_with_starts(LeanDetector(LEAN), t, lateral, np.ones(len(t), bool), size)
    starts = [e for _, e in events if isinstance(e, EpisodeStart)]
    assert [(e.episode, e.start_s, e.side) for e in starts] == [("lean", e.start_s, e.side) for e in whole]
    assert all(e.confirmed_after_s == pytest.approx(LEAN.dwell_s, abs=1e-6) for e in starts)


# --- rotation -----------------------------------------------------------------------------------------------------


def twist(t_s: np.ndarray, start_s: float, peak_deg: float, out_s: float, hold_s: float = 0.0) -> np.ndarray:
    """Out to peak_deg (signed: + right) in out_s, held hold_s, back in out_s: a piecewise-linear out-and-back."""
    knots = [(start_s, 0.0), (start_s + out_s, peak_deg), (start_s + out_s + hold_s, peak_deg),
             (start_s + 2 * out_s + hold_s, 0.0)]
    return ramps(t_s, *(knots if hold_s else knots[:2] + knots[3:]))


def test_rotation_side_follows_the_sign_convention_and_the_peak_is_absolute():
    """docs/conventions.md: rotation_deg + is to the right."""
    t = grid(20.0, RATE_HZ, T0_S)
    rotation = twist(t, T0_S + 2, 30.0, 0.5, 1.0) + twist(t, T0_S + 10, -25.0, 0.5, 1.0)
    right, left = rotations(t, rotation)
    assert (right.side, left.side) == ("right", "left")
    assert right.peak_deg == pytest.approx(30.0, abs=0.01) and left.peak_deg == pytest.approx(25.0, abs=0.01)
    # Out past 12° to back within 4°: right twist 2 + 0.5·12/30 s to 3.5 + 0.5·26/30 s.
    assert right.start_s - T0_S == pytest.approx(2.2, abs=DT_S)
    assert right.end_s - T0_S == pytest.approx(3.5 + 0.5 * 26 / 30, abs=DT_S)


@pytest.mark.parametrize(("peak_deg", "out_s", "hold_s", "counted"), [
    (14.0, 0.5, 1.0, False),  # past 12° but peaking below min_peak_deg (15°): sway, not a twist
    (16.0, 0.5, 1.0, True),
    (-58.0, 0.5, 1.0, True),  # near the trunk's range, either side
    (65.0, 0.5, 1.0, False),  # beyond max_peak_deg (60°): the pelvis turned too (a chair, the whole body)
    (-65.0, 0.5, 1.0, False),
    (20.0, 0.125, 0.0, True),  # a brisk 20° twist, out and back in a quarter of a second: 0.15 s above the line
    (20.0, 0.04, 0.0, False),  # a 0.05 s blip: shorter than min_s (0.1 s), a knock not a twist
    (30.0, 0.5, 14.0, True),  # held 14 s
    (30.0, 0.5, 16.0, False),  # held past max_s (15 s): a new facing direction, not an excursion
])
def test_only_rotations_within_the_peak_and_duration_limits_count(peak_deg, out_s, hold_s, counted):
    t = grid(30.0, RATE_HZ, T0_S)
    found = rotations(t, twist(t, T0_S + 5, peak_deg, out_s, hold_s))
    assert len(found) == int(counted)
    if counted:  # the peak as sampled (a brisk twist's tip falls between samples)
        assert found[0].peak_deg == pytest.approx(np.abs(twist(t, T0_S + 5, peak_deg, out_s, hold_s)).max())


def test_a_rotation_easing_between_exit_and_enter_is_one_excursion_with_the_larger_peak():
    t = grid(20.0, RATE_HZ, T0_S)
    # Out to 25°, back to 8° (inside the 4–12° band), out to 35°, back: one look over the shoulder, twice.
    rotation = ramps(t, (T0_S + 2, 0.0), (T0_S + 2.5, 25.0), (T0_S + 3, 8.0), (T0_S + 3.5, 35.0), (T0_S + 4, 0.0))
    [excursion] = rotations(t, rotation)
    assert excursion.peak_deg == pytest.approx(35.0, abs=0.01) and excursion.side == "right"


def test_a_rotation_touching_walking_is_dropped_but_one_beside_it_is_not():
    t = grid(20.0, RATE_HZ, T0_S)
    rotation = twist(t, T0_S + 2, 30.0, 0.5, 1.0) + twist(t, T0_S + 10, 30.0, 0.5, 1.0)
    excluded = during(t, T0_S + 3, T0_S + 3.01) | during(t, T0_S + 13, T0_S + 15)  # one sample of the first
    [kept] = rotations(t, rotation, excluded)
    assert kept.start_s - T0_S == pytest.approx(10.2, abs=DT_S)


def test_a_rotation_cut_off_by_the_end_of_the_data_is_dropped():
    """Nobody saw it come back: not an out-and-back excursion."""
    t = grid(3.0, RATE_HZ, T0_S)
    detector = RotationDetector(ROTATION)
    assert detector.update(t, twist(t, T0_S + 1, 30.0, 0.5, 5.0), np.zeros(len(t), bool)) == []
    assert detector.close() == []
    # The next data starts afresh: a twist after the gap is counted on its own, from where it starts.
    later = grid(5.0, RATE_HZ, T0_S + 60)
    [after] = detector.update(later, twist(later, T0_S + 61, -20.0, 0.5, 1.0), np.zeros(len(later), bool))
    assert after.side == "left" and after.start_s - T0_S == pytest.approx(61.3, abs=DT_S)


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_rotations_do_not_depend_on_how_the_stream_is_batched(size):
    t = grid(60.0, RATE_HZ, T0_S)
    rotation = sum(twist(t, T0_S + start, peak, 0.4, hold) for start, peak, hold in [
        (2, 30.0, 0.5), (5, -20.0, 0.0), (8, 14.0, 1.0), (11, 70.0, 1.0), (15, -40.0, 2.0), (20, 25.0, 16.0),
        (40, 22.0, 0.3), (44, -18.0, 0.0), (50, 30.0, 1.0)])
    excluded = during(t, T0_S + 44.3, T0_S + 44.4)  # walking during one of them
    whole = rotations(t, rotation, excluded)
    assert [(e.side, round(e.peak_deg)) for e in whole] == [("right", 30), ("left", 20), ("left", 40), ("right", 22),
                                                            ("right", 30)]
    assert_same_events(rotations(t, rotation, excluded, size=size), whole)


def test_the_three_detectors_fed_together_give_what_each_gives_alone():
    """The pipeline feeds the three in one pass (feed_together): the same events and starts as one at a time."""
    rng = np.random.default_rng(5)
    t = grid(600.0, RATE_HZ, T0_S)
    # Random walks wandering across every threshold, with contexts switching every few seconds.
    flexion, lateral, rotation = (np.cumsum(rng.normal(0.0, scale, len(t))) for scale in (0.4, 0.2, 0.8))
    upright, sitting, excluded = (np.repeat(rng.random(len(t) // 300 + 1) < p, 300)[:len(t)] for p in (0.8, 0.7, 0.1))
    alone = (SlouchDetector(SLOUCH), LeanDetector(LEAN), RotationDetector(ROTATION))
    together = (SlouchDetector(SLOUCH), LeanDetector(LEAN), RotationDetector(ROTATION))
    got: list = []
    expected: list = []
    for sl in batches(len(t), 137):
        expected += alone[0].update(t[sl], flexion[sl], upright[sl]) + alone[0].starts
        expected += alone[1].update(t[sl], lateral[sl], sitting[sl]) + alone[1].starts
        expected += alone[2].update(t[sl], rotation[sl], excluded[sl])
        slouch, lean, rotated = feed_together(t[sl], together[0], flexion[sl], upright[sl], together[1], lateral[sl],
                                              sitting[sl], together[2], rotation[sl], excluded[sl])
        got += slouch + together[0].starts + lean + together[1].starts + rotated
    assert len(expected) > 20 and {type(e) for e in expected} == {SlouchEpisode, LeanInterval, RotationExcursion,
                                                                  EpisodeStart}
    assert got == expected
