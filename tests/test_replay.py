"""`posture replay`: recorded CSV → the live pipeline's code path; bad input; gaps; data nobody here made."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from tqdm import tqdm

import replay.replay as replay_module
from evaluation.accuracy import CASES, load_case_scenario
from evaluation.matching import match_intervals
from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import parse_scenario
from pipeline.calibration import Calibration
from pipeline.stream import PosturePipeline
from pipeline.summary import LocalPeriods, Rollups, day_bounds, day_totals, periods_ran_in, ran_in
from replay.replay import ReplayError, replay, stamped_ahead
from report.day import DayRows, build_day_report
from sensor.record import CsvSampleWriter
from sensor.stream import ImuBatch

KINDS = {"calibration", "slouch", "lean", "rotation", "episode_start", "metrics", "summary"}


def write_record_csv(path, chunks) -> None:
    """A file in `posture record`'s format, written by its own writer."""
    with open(path, "w") as f:
        writer = CsvSampleWriter(f)
        for t_s, acc_g, gyro_dps in chunks:
            writer.write(ImuBatch("sim", t_s, t_s, acc_g, gyro_dps))


def case_chunks(name: str, drop=None):
    case = next(c for c in CASES if c.name == name)
    sim = SensorSimulation(load_case_scenario(case), seed=case.seed)
    for ch in sim.chunks(max_samples=3000):
        keep = np.ones(len(ch.t_s), bool) if drop is None else ~drop(ch.t_s)
        yield ch.t_s[keep], ch.acc_g[keep], ch.gyro_dps[keep]
    yield sim


def test_replay_gives_the_live_pipelines_events(tmp_path):
    *chunks, sim = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", chunks)
    live = PosturePipeline()
    live_events = [e for c in chunks for e in live.update(*c).events]
    summary = replay(tmp_path / "rec.csv", tmp_path / "out.jsonl", progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {ln["kind"] for ln in lines} <= KINDS
    replayed = [ln for ln in lines if ln["kind"] in ("slouch", "rotation", "lean")]
    episodes = [e for e in live_events if e.kind in ("slouch", "rotation", "lean")]  # not their starts
    assert [e["kind"] for e in replayed] == [e.kind for e in episodes]
    for e, r in zip(episodes, replayed):
        assert abs(e.start_s - r["start_s"]) < 0.05 and abs(e.end_s - r["end_s"]) < 0.05
    assert summary["slouch_episodes"] == len(sim.events().slouch_episodes)
    assert summary["rotations"]["left"] + summary["rotations"]["right"] == len(sim.events().rotation_excursions)
    minutes = [ln for ln in lines if ln["kind"] == "metrics"]
    assert len(minutes) == pytest.approx(sim.duration_s / 60, abs=1.5)
    assert sum(m["slouch_s"] for m in minutes) == pytest.approx(
        sum(e.end_s - e.start_s for e in sim.events().slouch_episodes), rel=0.02)
    rollups = [ln for ln in lines if ln["kind"] == "summary"]
    assert {r["period"] for r in rollups} == {"hour", "day"}
    day = next(r for r in rollups if r["period"] == "day")
    assert day["slouch_min"] == pytest.approx(summary["slouch_min"]) and day["worn_min"] == summary["worn_min"]


def test_gaps_never_produce_false_events(tmp_path):
    """Three-second holes (a lost link) in the middle of every rotation and slouch: no invented events."""
    *clean, sim = case_chunks("office-short")
    truth = sim.events()
    holes = [((e.start_s + e.end_s) / 2 - 1.5, (e.start_s + e.end_s) / 2 + 1.5)
             for e in [*truth.rotation_excursions, *truth.slouch_episodes]]
    drop = lambda t: np.any([(t >= a) & (t < b) for a, b in holes], axis=0)  # noqa: E731
    *chunks, _ = case_chunks("office-short", drop)
    pipeline = PosturePipeline()
    events = [e for c in chunks for e in pipeline.update(*c).events]
    assert pipeline.gaps_reset == len(holes)
    rot = [e for e in events if e.kind == "rotation"]
    truth_rot = [(e.start_s, e.end_s, e.side) for e in truth.rotation_excursions]
    pairs, _ = match_intervals(truth_rot, [(e.start_s, e.end_s, e.side) for e in rot], min_iou=0.0)
    assert len(pairs) == len(rot), "a rotation excursion was reported that did not happen"
    assert not rot, "an excursion cut by a gap must be dropped, not reported"
    for e in (e for e in events if e.kind == "slouch"):
        assert any(a - 0.1 <= e.start_s and e.end_s <= b + 0.1 for a, b in
                   [(s.start_s, s.end_s) for s in truth.slouch_episodes]), f"invented slouch {e}"


def test_samples_the_pipeline_drops_are_counted_in_the_summary(tmp_path):
    """Rows every reader takes but no worn IMU gives (a lone spike of rotation rate: a bit flipped in the recording)
    are dropped by the pipeline's door: the summary says how many, as a gateway's status does."""
    *chunks, _ = case_chunks("slouch-ideal")
    write_record_csv(tmp_path / "rec.csv", chunks)
    lines = (tmp_path / "rec.csv").read_text().splitlines()
    for row in (2000, 5000, 9000):
        cells = lines[row].split(",")
        gyro_x = lines[0].split(",").index("gyro_x_dps")
        cells[gyro_x] = "2000.0"
        lines[row] = ",".join(cells)
    (tmp_path / "spiked.csv").write_text("\n".join(lines) + "\n")
    good = replay(tmp_path / "rec.csv", None, progress=False)
    hurt = replay(tmp_path / "spiked.csv", None, progress=False)
    assert (good["discarded_samples"], hurt["discarded_samples"], hurt["bad_lines"]) == (0, 3, 0)
    assert hurt["samples"] == good["samples"] and hurt["slouch_episodes"] == good["slouch_episodes"] > 0


def test_bad_lines_are_counted_and_the_replay_goes_on(tmp_path):
    *chunks, _ = case_chunks("slouch-ideal")
    write_record_csv(tmp_path / "rec.csv", chunks)
    lines = (tmp_path / "rec.csv").read_text().splitlines()
    bad = ["garbage", "1.0,2.0", "nan,nan,nan,nan,nan,nan,nan,nan", lines[500]]  # the last one goes back in time
    for k, text in enumerate(bad):
        lines.insert(1000 + 3000 * k, text)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    good = replay(tmp_path / "rec.csv", None, progress=False)
    hurt = replay(tmp_path / "bad.csv", None, progress=False)
    assert hurt["bad_lines"] == 3 and hurt["out_of_order"] == 1
    assert hurt["samples"] == good["samples"]
    assert hurt["slouch_episodes"] == good["slouch_episodes"] > 0


def test_a_time_stamped_far_ahead_costs_its_own_rows_only(tmp_path, monkeypatch):
    """A glitch in the time column (a row stamped years ahead, a block of three) used to make every later row
    'go back in time': the rest of the recording was dropped. Also where the glitch straddles a chunk's end."""
    monkeypatch.setattr(replay_module, "CHUNK_LINES", 4000)
    *chunks, _ = case_chunks("slouch-ideal")
    write_record_csv(tmp_path / "rec.csv", chunks)
    header, *rows = (tmp_path / "rec.csv").read_text().splitlines()
    ahead = lambda row, by: ",".join([str(float(row.split(",")[0]) + by), *row.split(",")[1:]])  # noqa: E731
    glitched = {1000: 1e9, 1001: 3e9, 1002: 2e9, 3999: 1e308, 4000: 4e9, 9000: 3600.0}
    hurt = [ahead(r, glitched[i]) if i in glitched else r for i, r in enumerate(rows)]
    (tmp_path / "bad.csv").write_text("\n".join([header, *hurt]) + "\n")
    good = replay(tmp_path / "rec.csv", None, progress=False)
    bad = replay(tmp_path / "bad.csv", None, progress=False)
    # The row stamped past 2100 is no time in seconds at all: a bad line, the others out of order.
    assert (bad["out_of_order"], bad["bad_lines"]) == (len(glitched) - 1, 1)
    assert bad["samples"] == good["samples"] - len(glitched)
    assert bad["worn_min"] == pytest.approx(good["worn_min"], abs=0.05)
    assert bad["slouch_episodes"] == good["slouch_episodes"] > 0
    assert bad["slouch_min"] == pytest.approx(good["slouch_min"], abs=0.05)


def test_rows_ahead_and_rows_behind_are_told_apart():
    t = np.arange(20.0)
    assert not stamped_ahead(np.empty(0), t, np.empty(0)).any()
    spike = t.copy()
    spike[10] = 1e12
    assert np.flatnonzero(stamped_ahead(np.empty(0), spike, np.empty(0))).tolist() == [10]
    back = t.copy()
    back[10] = -5.0  # a row behind: the row before it is not the glitch
    assert not stamped_ahead(np.empty(0), back, np.empty(0)).any()
    # A clock restarted (a logger rebooted): nothing before it is taken for a glitch.
    assert not stamped_ahead(np.empty(0), np.r_[t, t], np.empty(0)).any()
    # At the start of a file a first row ahead of the rest is a glitch too.
    assert np.flatnonzero(stamped_ahead(np.empty(0), np.r_[1e9, t], np.empty(0))).tolist() == [0]
    # Judged in pieces, with the rows either side as context: the same.
    assert np.flatnonzero(stamped_ahead(spike[:10], spike[10:12], spike[12:])).tolist() == [0]


def test_a_header_written_with_a_byte_order_mark_is_read(tmp_path):
    """Spreadsheet programs save CSV as UTF-8 with a byte order mark: the first column was then unknown."""
    *chunks, _ = case_chunks("slouch-ideal")
    write_record_csv(tmp_path / "rec.csv", chunks)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "rec.csv").read_bytes())
    assert replay(tmp_path / "bom.csv", None, progress=False)["samples"] == \
        replay(tmp_path / "rec.csv", None, progress=False)["samples"]


def test_a_file_without_the_columns_is_one_clear_error(tmp_path):
    (tmp_path / "x.csv").write_text("time,a,b\n1,2,3\n")
    with pytest.raises(ReplayError, match="lacks t_s"):
        replay(tmp_path / "x.csv", None, progress=False)
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "x.csv")],
                         capture_output=True, text=True)
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and "lacks t_s" in cli.stderr


def test_replay_of_a_real_recording_made_elsewhere(tmp_path, shared_data, caplog):
    """x-io Technologies' 100 Hz recording: a sensor on a table, then in the hand, not on a back."""
    path = shared_data / "xio-sensor_data.csv"
    # As it is: the only still hold has the sensor's z up and no bend follows, so calibration is
    # refused (with the reason) and nothing is measured; the replay itself runs to the end.
    with caplog.at_level(logging.WARNING, logger="posture.replay"):
        plain = replay(path, tmp_path / "plain.jsonl", progress=False)
    assert plain["samples"] == 13514 and plain["bad_lines"] == 0 and plain["calibration"] == "not calibrated"
    refusals = [json.loads(ln) for ln in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert refusals and all(r["kind"] == "calibration" and r["status"] == "refused" for r in refusals)
    # Said where the user looks, not only in --out (a newcomer's probe: a summary of zeros and nothing else).
    said = [r.getMessage() for r in caplog.records if "never calibrated" in r.getMessage()]
    assert len(said) == 1 and refusals[-1]["message"] in said[0] and "--axes-are-trunk" in said[0]
    # Its axes are known (flat on the table: x, y, z = forward, left, up), so the whole pipeline runs.
    summary = replay(path, tmp_path / "xio.jsonl", progress=False,
                     calibration=Calibration.sensor_axes_are_trunk_axes())
    lines = [json.loads(ln) for ln in (tmp_path / "xio.jsonl").read_text().splitlines()]
    assert {ln["kind"] for ln in lines} <= KINDS
    # Said as given, not "restored from the last run"; and kept: a hand-held move 135 s in was taken for a
    # calibration bend (and refused; another could have replaced the given axes).
    assert [(ln["status"], ln["message"]) for ln in lines if ln["kind"] == "calibration"] == [
        ("calibrated", "calibration given: the sensor's axes taken as the trunk's")]
    minutes = [ln for ln in lines if ln["kind"] == "metrics"]
    # Its steps are uneven (10.08 ms, and 7.56 ms one in 32): read at their median's rate, each minute held 60.49 s.
    assert [round(m["worn_s"], 2) for m in minutes[:2]] == [60.01, 60.0]
    assert sum(m["worn_s"] for m in minutes) == pytest.approx(13514 / 99.86, rel=0.001)
    assert summary["worn_min"] == pytest.approx(13514 / 99.86 / 60, abs=0.005)
    for m in minutes:
        assert np.isfinite(m["flexion_mean_deg"]) and abs(m["flexion_mean_deg"]) <= 90
    # The first and last stretches are the sensor resting flat: angles near zero there.
    assert abs(minutes[0]["lateral_mean_deg"]) < 30


def test_offline_replay_uses_the_acausal_orientation_and_agrees_with_live(tmp_path):
    """`posture replay --offline`: VQF's offline estimate, cut at long gaps; the same events as live."""
    gap = lambda t: (t > 90.0) & (t < 95.0)  # noqa: E731  (a lost link in the middle)
    *chunks, sim = case_chunks("office-short", drop=gap)
    write_record_csv(tmp_path / "rec.csv", chunks)
    live = replay(tmp_path / "rec.csv", tmp_path / "live.jsonl", progress=False)
    offline = replay(tmp_path / "rec.csv", tmp_path / "off.jsonl", progress=False, offline=True)
    assert offline["samples"] == live["samples"]
    kinds = lambda p: [json.loads(ln)["kind"] for ln in p.read_text().splitlines()  # noqa: E731
                       if json.loads(ln)["kind"] in ("slouch", "rotation")]
    assert kinds(tmp_path / "off.jsonl") == kinds(tmp_path / "live.jsonl")
    assert offline["slouch_episodes"] == len(sim.events().slouch_episodes)
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "rec.csv"), "--offline",
                          "--quiet"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["samples"] == live["samples"]


def test_a_row_that_came_late_costs_itself_not_the_good_rows_before_it():
    """A backward jitter (a row logged a few places late: a logger merging two streams, a BLE retry) was taken for the
    rows before it being stamped ahead: up to GLITCH_ROWS good rows dropped instead of the late one (1% of rows late
    by 1–8 places: 4 355 of 100 000 rows dropped, not 996). That one row goes, the rest stay."""
    t = np.arange(40.0)
    late = np.r_[t[:20], t[21:26], t[20], t[26:]]  # row 20 comes five places late
    assert not stamped_ahead(np.empty(0), late, np.empty(0)).any()
    stats = {"bad_lines": 0, "samples": 0, "backwards": 0}
    data = np.zeros((len(late), len(replay_module.COLUMNS)))
    data[:, 0] = late
    chunks = replay_module._forward_chunks(iter([(data, 0)]), stats, tqdm(disable=True))
    kept = np.concatenate([c[:, 0] for c, _ in chunks])
    assert stats["backwards"] == 1 and kept.tolist() == [x for x in t.tolist() if x != 20.0]


def test_a_time_column_that_restarts_is_said_once(tmp_path, caplog):
    """A logger that rebooted mid-recording starts its time again: the rest of the file cannot be placed in time
    and is skipped, which was only counted; now one line says where."""
    *chunks, _ = case_chunks("slouch-ideal")
    write_record_csv(tmp_path / "rec.csv", chunks)
    header, *rows = (tmp_path / "rec.csv").read_text().splitlines()
    (tmp_path / "restart.csv").write_text("\n".join([header, *rows[:3000], *rows[:3000]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="posture.replay"):
        out = replay(tmp_path / "restart.csv", None, progress=False)
    assert out["out_of_order"] == 3000
    said = [r.getMessage() for r in caplog.records if "out of time order" in r.getMessage()]
    assert len(said) == 1 and "first: t = 0 s after t = 29.99 s" in said[0], said


def test_the_row_out_of_order_is_said_by_a_time_that_finds_it_in_a_file_of_unix_times(tmp_path, caplog):
    """A `posture record` file's times are Unix seconds: said with :g, every one read 1.79656e+09 (the row out of
    order and the one before alike), so the line could not tell which row it was."""
    rows = [f"{1796560000 + i * 0.01:.6f},0,0,1,0,0,0" for i in range(3000)]
    rows[2001], rows[2002] = rows[2002], rows[2001]
    (tmp_path / "swapped.csv").write_text("\n".join(["t_s,acc_x_g,acc_y_g,acc_z_g,gyro_x_dps,gyro_y_dps,gyro_z_dps",
                                                     *rows]) + "\n")
    with caplog.at_level(logging.WARNING, logger="posture.replay"):
        out = replay(tmp_path / "swapped.csv", None, progress=False)
    assert out["out_of_order"] == 1
    said = [r.getMessage() for r in caplog.records if "out of time order" in r.getMessage()]
    assert len(said) == 1 and "first: t = 1796560020.01 s after t = 1796560020.02 s" in said[0], said


def test_a_byte_that_is_not_utf8_costs_its_line_not_the_rest_of_the_file(tmp_path):
    """One bit flipped in a digit (an SD card, a copy gone wrong) made the whole replay stop with a codec error."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", chunks)
    data = bytearray((tmp_path / "rec.csv").read_bytes())
    at = data.index(b"\n", len(data) * 9 // 10) + 1
    data[at] |= 0x80  # '1' → 0xb1, no UTF-8
    (tmp_path / "flipped.csv").write_bytes(bytes(data))
    good = replay(tmp_path / "rec.csv", None, progress=False)
    hurt = replay(tmp_path / "flipped.csv", tmp_path / "out.jsonl", progress=False)
    assert hurt["bad_lines"] == 1 and hurt["samples"] == good["samples"] - 1
    assert hurt["slouch_episodes"] == good["slouch_episodes"] and hurt["rotations"] == good["rotations"]
    assert any(json.loads(ln)["kind"] == "summary" for ln in (tmp_path / "out.jsonl").read_text().splitlines())


@pytest.mark.parametrize("columns, value", [((3,), "1e20"), ((3,), "1e308"), ((6,), "1e300"), ((2, 3, 4), "0")])
def test_a_value_no_sensor_measures_costs_its_row_only(tmp_path, columns, value):
    """One corrupt but finite cell (1e20 g) read the rest of a recording as lying, or lost every rotation after it.
    A failed read (acceleration zero on every axis) was dropped by the pipeline unsaid: now a bad line too."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", chunks)
    header, *rows = (tmp_path / "rec.csv").read_text().splitlines()
    cells = rows[10_000].split(",")
    for column in columns:
        cells[column] = value
    (tmp_path / "bad.csv").write_text("\n".join([header, *rows[:10_000], ",".join(cells), *rows[10_001:]]) + "\n")
    (tmp_path / "without.csv").write_text("\n".join([header, *rows[:10_000], *rows[10_001:]]) + "\n")
    without = replay(tmp_path / "without.csv", None, progress=False)
    bad = replay(tmp_path / "bad.csv", None, progress=False)
    assert bad["bad_lines"] == 1
    assert {k: v for k, v in bad.items() if k not in ("file", "bad_lines")} == \
        {k: v for k, v in without.items() if k not in ("file", "bad_lines")}


def test_rows_stamped_past_2100_cost_their_rows_only(tmp_path):
    """Twenty rows stamped 1e15 s (more than a glitch of GLITCH_ROWS): every row after them was "out of time order",
    and the rest of the recording lost (an attack: worn 3.19 -> 1.33 minutes)."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", chunks)
    header, *rows = (tmp_path / "rec.csv").read_text().splitlines()
    stamped = [",".join(["1000000000000000", *row.split(",")[1:]]) for row in rows[10_000:10_020]]
    (tmp_path / "bad.csv").write_text("\n".join([header, *rows[:10_000], *stamped, *rows[10_020:]]) + "\n")
    (tmp_path / "without.csv").write_text("\n".join([header, *rows[:10_000], *rows[10_020:]]) + "\n")
    without = replay(tmp_path / "without.csv", None, progress=False)
    bad = replay(tmp_path / "bad.csv", None, progress=False)
    assert bad["bad_lines"] == 20 and bad["out_of_order"] == 0
    assert {k: v for k, v in bad.items() if k not in ("file", "bad_lines")} == \
        {k: v for k, v in without.items() if k not in ("file", "bad_lines")}


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_a_time_column_in_ms_or_us_is_one_clear_line(tmp_path, scale):
    """Milliseconds ended in scipy's 'Wn[0] must be less than Wn[1]', microseconds in a ZeroDivisionError traceback."""
    rows = [f"{i * 0.01 * scale:.3f},0,0,1,0,0,0" for i in range(2000)]
    (tmp_path / "ms.csv").write_text("\n".join(["t_s,acc_x_g,acc_y_g,acc_z_g,gyro_x_dps,gyro_y_dps,gyro_z_dps", *rows]))
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "ms.csv"), "--quiet"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "t_s must be in seconds" in cli.stderr, cli.stderr


@pytest.mark.parametrize("midnight_at_s", [100.0, 45.0])
def test_hour_and_day_summaries_count_each_slouch_in_the_periods_it_ran_in(tmp_path, midnight_at_s):
    """A replay hands the pipeline 20,000 rows at a time, whose events came before its minutes: slouches that ended
    after midnight (three of ten at 25 Hz) were counted the day before, and the new day said "not calibrated".
    Midnight 45 s in falls inside office-short's first slouch (36.6 to 55.0 s): counted by its end alone, the day
    before read 0.14 slouch minutes and 0 episodes; it counts on both days now, as `posture report` counts it."""
    *chunks, _ = case_chunks("office-short")
    midnight = 1_733_443_200.0  # 2024-12-06 00:00 UTC, midnight_at_s into the recording
    write_record_csv(tmp_path / "rec.csv", [(t + midnight - midnight_at_s, a, g) for t, a, g in chunks])
    replay(tmp_path / "rec.csv", tmp_path / "out.jsonl", progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    slouches = [(ln["start_s"], ln["end_s"]) for ln in lines if ln["kind"] == "slouch"]
    assert any(end < midnight for _, end in slouches) == (midnight_at_s == 100.0)
    assert any(start < midnight < end for start, end in slouches) == (midnight_at_s == 45.0)
    assert any(start >= midnight for start, _ in slouches)
    days = [ln for ln in lines if ln["kind"] == "summary" and ln["period"] == "day"]
    assert [d["start_s"] for d in days] == [midnight - 86400, midnight]
    for day in days:
        assert day["slouch_min"] > 0
        assert day["slouch_episodes"] == sum(ran_in(start, end, day["start_s"], day["start_s"] + 86400)
                                             for start, end in slouches)
        assert day["calibration"].startswith("calibrated")
    assert [d["slouch_episodes"] for d in days] == ([1, 1] if midnight_at_s == 100.0 else [1, 2])


def test_a_slouch_under_way_holds_the_summaries_of_the_periods_it_ran_in_until_it_ends():
    """Rollups as the pipeline feeds it, a minute at a time: a slouch from 10:58:30 to 12:02:10 is confirmed in hour
    10 and ends in hour 12, after hours 10 and 11 have had their last minute. They are handed out once it ended, each
    counting it, as the day does once; the ranges are ran_in's (an end on the stroke of an hour is not the next's)."""
    from pipeline.events import EpisodeStart, MinuteMetrics, SlouchEpisode
    day_s = 1_733_443_200.0  # 2024-12-06 00:00 UTC
    t0 = day_s + 10 * 3600 + 55 * 60  # 10:55 to 12:05
    start_s, end_s = day_s + 10 * 3600 + 58 * 60 + 30, day_s + 12 * 3600 + 2 * 60 + 10
    rollups, out = Rollups(), []
    for k in range(70):
        minute_s = t0 + 60 * k
        if minute_s <= start_s + 5 < minute_s + 60:  # the batch it is confirmed in: its events before its minute
            rollups.add_event(EpisodeStart("slouch", start_s, 5.0))
        if minute_s <= end_s < minute_s + 60:
            rollups.add_event(SlouchEpisode(start_s, end_s, 30.0, 25.0))
        out += [(minute_s, ln) for ln in rollups.add_minute(MinuteMetrics(minute_s, worn_s=60.0, sitting_s=60.0))]
    out += [(None, ln) for ln in rollups.flush()]
    hours = [(at, ln["start_s"], ln["slouch_episodes"]) for at, ln in out if ln["period"] == "hour"]
    ended = end_s - end_s % 60  # the minute it ended in: its batch's events come before it
    assert hours == [(ended, day_s + 10 * 3600, 1), (ended, day_s + 11 * 3600, 1),
                     (None, day_s + 12 * 3600, 1)]
    assert [ln["slouch_episodes"] for _, ln in out if ln["period"] == "day"] == [1]
    hourly = LocalPeriods(UTC, hourly=True)  # a period is named by the second it starts at
    assert periods_ran_in(day_s, day_s + 3600, hourly) == [day_s]  # to 01:00 sharp: hour 0 only
    assert periods_ran_in(day_s + 3600, day_s + 3600, hourly) == [day_s + 3600]  # no length: where it starts


def test_acceleration_in_m_s2_is_one_clear_line(tmp_path):
    """m/s² under the _g columns calibrated and replayed with 0.6 of 2.5 minutes of sitting read as standing."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", [(t, a * 9.80665, g) for t, a, g in chunks])
    with pytest.raises(ReplayError, match="must be in g"):
        replay(tmp_path / "rec.csv", None, progress=False)


def test_rotation_rate_in_rad_s_is_one_clear_line(tmp_path):
    """rad/s under the _dps columns replayed office-short with no rotation of its 4, calibrated provisionally (its
    bend unseen) and 2.96 of its 3.43 worn minutes, all unsaid."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", [(t, a, np.radians(g)) for t, a, g in chunks])
    with pytest.raises(ReplayError, match=r"must be in °/s \(rad/s × 57.2958\)"):
        replay(tmp_path / "rec.csv", None, progress=False)
    write_record_csv(tmp_path / "dps.csv", chunks)
    assert replay(tmp_path / "dps.csv", None, progress=False)["rotations"] == {"left": 2, "right": 2}


def test_rotation_rate_in_rad_s_is_told_after_a_still_start_too(tmp_path):
    """A recording begun sitting still (250 s: a wearer who starts it, then sits to work) has no window that tilts in
    its first 20,000 rows: the unit was judged there alone, so office-short after it was replayed in rad/s unsaid,
    with none of its 4 rotations and the sensor read as off the body. The rows are held until they tell it."""
    *chunks, _ = case_chunks("office-short")
    n = 25_000
    t_still = chunks[0][0][0] - np.arange(n, 0, -1) / 100.0
    rng = np.random.default_rng(1)
    still = (t_still, chunks[0][1][0] + rng.normal(0, 0.003, (n, 3)), rng.normal(0, 0.3, (n, 3)))
    write_record_csv(tmp_path / "rec.csv", [(t, a, np.radians(g)) for t, a, g in [still, *chunks]])
    with pytest.raises(ReplayError, match=r"must be in °/s \(rad/s × 57.2958\)"):
        replay(tmp_path / "rec.csv", None, progress=False)
    write_record_csv(tmp_path / "dps.csv", [still, *chunks])
    assert replay(tmp_path / "dps.csv", None, progress=False)["rotations"] == {"left": 2, "right": 2}


@pytest.mark.parametrize("out", ["rec.csv", "link.jsonl"])
def test_an_out_file_that_is_the_recording_is_refused_and_the_recording_kept(tmp_path, out):
    """`posture replay rec.csv --out rec.csv` (or --out a link to it) emptied the recording before reading it, then
    said its header lacked every column."""
    *chunks, _ = case_chunks("slouch-ideal")
    write_record_csv(tmp_path / "rec.csv", chunks)
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "rec.csv")
    before = (tmp_path / "rec.csv").read_bytes()
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "rec.csv"), "--quiet",
                          "--out", str(tmp_path / out)], capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "is the recording itself" in cli.stderr, cli.stderr
    assert (tmp_path / "rec.csv").read_bytes() == before


def test_a_recording_that_begins_with_a_chunk_of_unreadable_rows_replays_the_rest(tmp_path):
    """A sensor writing NaN for its first 200 s: the rate was taken from the first 20,000 rows, none readable, and the
    whole file was refused ("cannot tell the sample rate")."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", chunks)
    header, *rows = (tmp_path / "rec.csv").read_text().splitlines()
    blank = [",".join([r.split(",")[0], *["nan"] * 6]) for r in rows[:replay_module.CHUNK_LINES]]
    (tmp_path / "nan.csv").write_text("\n".join([header, *blank, *rows[replay_module.CHUNK_LINES:]]) + "\n")
    (tmp_path / "rest.csv").write_text("\n".join([header, *rows[replay_module.CHUNK_LINES:]]) + "\n")
    rest = replay(tmp_path / "rest.csv", None, progress=False)
    nan = replay(tmp_path / "nan.csv", None, progress=False)
    assert nan["bad_lines"] == replay_module.CHUNK_LINES and nan["samples"] == rest["samples"] > 0
    assert {k: v for k, v in nan.items() if k not in ("file", "bad_lines")} == \
        {k: v for k, v in rest.items() if k not in ("file", "bad_lines")}
    (tmp_path / "one.csv").write_text("\n".join([header, rows[0]]) + "\n")
    with pytest.raises(ReplayError, match="fewer than two readable rows"):
        replay(tmp_path / "one.csv", None, progress=False)


def test_a_recalibration_answered_within_minutes_replays_as_it_read_live(tmp_path):
    """Replay handed the pipeline 20,000 rows at a time. The sensor here sits turned 90° about the spine under the
    calibration given (`--axes-are-trunk`): walking asks for the moves at 26.5 s, the wearer makes them at 66 s, and
    slouches at 95 s. Live (1 s batches) read the slouch; the replay's 200 s chunk measured up to its end with the old
    calibration, and read a lean to the side instead. It now hands the pipeline the gateway's batches."""
    bend = {"activity": "slouch", "duration_s": 2.5, "flexion_deg": 30.0, "ramp_s": 0.8}
    segments = [{"activity": "stand", "duration_s": 5.0}, {"activity": "walk", "duration_s": 40.0, "flexion_deg": 8.0},
                {"activity": "sit_upright", "duration_s": 17.0}, bend, {"activity": "sit_upright", "duration_s": 30.0},
                {"activity": "slouch", "duration_s": 40.0, "flexion_deg": 25.0, "ramp_s": 1.0},
                {"activity": "sit_upright", "duration_s": 20.0}]
    sim = SensorSimulation(parse_scenario({"name": "turned", "segment": segments,
                                           "sensor": {"mount_euler_deg": [90.0, 0.0, 90.0]}}), seed=1)
    t0 = 1_800_000_000.0
    write_record_csv(tmp_path / "rec.csv", [(c.t_s + t0, c.acc_g, c.gyro_dps) for c in sim.chunks(max_samples=3000)])
    replay(tmp_path / "rec.csv", tmp_path / "out.jsonl", progress=False,
           calibration=Calibration.sensor_axes_are_trunk_axes())
    lines = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    said = [(ln["status"], ln["t_s"] - t0) for ln in lines if ln["kind"] == "calibration"]
    assert [s for s, _ in said] == ["calibrated", "recalibrate", "calibrated"], said
    assert 60.0 < said[-1][1] < 70.0
    slouches = [(ln["start_s"] - t0, ln["end_s"] - t0) for ln in lines if ln["kind"] == "slouch"]
    assert len(slouches) == 1 and 93.0 < slouches[0][0] < 97.0 and slouches[0][1] - slouches[0][0] > 35.0, slouches
    assert not [ln for ln in lines if ln["kind"] == "lean"]


@pytest.mark.parametrize("rows, said", [([], "no rows after the header"), (["x,1,2", "nan,0,0,1,0,0,0"],
                                                                           r"no usable rows \(2 bad lines\)"),
                                        (["0,0,0,0,0,0,0", "0.01,0,0,0,0,0,0"], r"no usable rows \(2 bad lines\)")])
def test_a_file_with_nothing_to_replay_is_one_line(tmp_path, rows, said):
    """A header alone, or only unreadable rows: a summary of zeros and exit code 1, with nothing said (a newcomer's
    probe)."""
    (tmp_path / "none.csv").write_text("\n".join(["t_s,acc_x_g,acc_y_g,acc_z_g,gyro_x_dps,gyro_y_dps,gyro_z_dps",
                                                   *rows]) + "\n")
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "none.csv"), "--quiet"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and re.search(said, cli.stderr) and cli.stderr.strip().splitlines()[-1].startswith(
        "posture replay: "), cli.stderr


@pytest.mark.parametrize("order", ["reversed", "one time"])
def test_a_file_whose_times_never_go_forward_says_so(tmp_path, order):
    """Every row readable, in reverse or all at one time: the line said "fewer than two readable rows"."""
    times = [1796560000 + (2999 - i if order == "reversed" else 0) * 0.01 for i in range(3000)]
    (tmp_path / "rec.csv").write_text("\n".join(["t_s,acc_x_g,acc_y_g,acc_z_g,gyro_x_dps,gyro_y_dps,gyro_z_dps",
                                                 *(f"{t:.6f},0,0,1,0,0,0" for t in times)]) + "\n")
    with pytest.raises(ReplayError, match=r"fewer than two readable rows in time order \(2999 out of time order\)$"):
        replay(tmp_path / "rec.csv", None, progress=False)


@pytest.mark.parametrize("every, said", [(8, True), (4, True), (2, False)])
def test_a_recording_slower_than_the_pipeline_is_made_for_is_said(tmp_path, caplog, every, said):
    """office-short at 12.5 samples/s replayed with 2.31 of its 2.51 sitting minutes as standing and no lean, and
    nothing said; a rate the pipeline is made for (above 25, pipeline.rate_hz) is replayed without a word."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", [(t[::every], a[::every], g[::every]) for t, a, g in chunks])
    with caplog.at_level(logging.WARNING, logger="posture.replay"):
        replay(tmp_path / "rec.csv", None, progress=False)
    assert ("samples/s are not above the 25 the pipeline is made" in caplog.text) == said, caplog.text


def test_a_batch_shorter_than_a_sample_still_hands_the_pipeline_every_sample(tmp_path):
    """gateway.pipeline_batch_s below one sample's period (0.004 s at 100 Hz) rounded to batches of 0 samples: the
    replay handed the pipeline nothing and read nothing."""
    *chunks, _ = case_chunks("office-short")
    t, acc, gyro = (np.concatenate(c)[:2500] for c in zip(*chunks, strict=True))
    write_record_csv(tmp_path / "rec.csv", [(t, acc, gyro)])
    read = []
    for batch_s in (1.0, 0.004):
        replay(tmp_path / "rec.csv", tmp_path / "out.jsonl", progress=False, batch_s=batch_s)
        read.append([(ln["kind"], ln.get("status")) for ln in map(json.loads, (tmp_path / "out.jsonl").open())
                     if ln["kind"] == "calibration"])
    assert read[0] and read[1] == read[0]


KOLKATA_MIDNIGHT_S = 1_733_423_400.0  # 2024-12-06 00:00 in Asia/Kolkata (+05:30): 2024-12-05 18:30 UTC


def kolkata_replay(tmp_path, how: str) -> list[dict]:
    """office-short through `posture replay` with the wearer's midnight in Kolkata 45 s in, inside its first slouch
    (36.6 to 55.0 s); the zone named as `how` says: --timezone, alerts.timezone of --config, or the machine's ($TZ)."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", [(t + KOLKATA_MIDNIGHT_S - 45.0, a, g) for t, a, g in chunks])
    (tmp_path / "posture.toml").write_text('[alerts]\ntimezone = "Asia/Kolkata"\n')
    options = {"--timezone": ["--timezone", "Asia/Kolkata"], "config": ["--config", str(tmp_path / "posture.toml")],
               "machine": []}[how]
    env = {k: v for k, v in os.environ.items() if k != "TZDIR"} | {"TZ": "Asia/Kolkata" if how == "machine" else "UTC"}
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "rec.csv"), "--quiet",
                          "--out", str(tmp_path / "out.jsonl"), *options], capture_output=True, text=True, env=env)
    assert cli.returncode == 0, cli.stderr
    return [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("how", ["--timezone", "config", "machine"])
def test_a_replay_counts_the_wearers_days_in_their_zone_as_the_report_does(tmp_path, how):
    """Summaries per UTC day split a wearer's day in Kolkata at 05:30 local, and their totals were not the report's
    for the same minutes. The days now run local midnight to midnight, the hours from it (at :00 local, :30 UTC),
    and each day's totals are those `posture report` folds for that day, episodes counted on each day they ran in."""
    lines = kolkata_replay(tmp_path, how)
    tz = ZoneInfo("Asia/Kolkata")
    days = [ln for ln in lines if ln["kind"] == "summary" and ln["period"] == "day"]
    assert [d["start_s"] for d in days] == [day_bounds(date(2024, 12, 5), tz)[0], KOLKATA_MIDNIGHT_S]
    hours = [ln for ln in lines if ln["kind"] == "summary" and ln["period"] == "hour"]
    assert [h["start_s"] for h in hours] == [KOLKATA_MIDNIGHT_S - 3600, KOLKATA_MIDNIGHT_S]
    minutes = [ln for ln in lines if ln["kind"] == "metrics"]
    slouches = [ln for ln in lines if ln["kind"] == "slouch"]
    assert any(s["start_s"] < KOLKATA_MIDNIGHT_S < s["end_s"] for s in slouches)  # one ran across midnight
    for day, summary in zip((date(2024, 12, 5), date(2024, 12, 6)), days):
        start_s, end_s = day_bounds(day, tz)
        ours = [m for m in minutes if start_s <= m["minute_start_s"] < end_s]
        totals = day_totals(ours)  # the sums of the day's minutes
        assert summary["worn_min"] == round(totals.worn_s / 60, 2) > 0
        assert summary["slouch_min"] == round(totals.slouch_s / 60, 2) > 0
        assert summary["activity_min"] == {k: round(v / 60, 2) for k, v in totals.activity_s.items()}
        assert summary["rotations"] == totals.rotations
        # As `posture report` reads the day: its minutes and the episodes that ran in it, as InfluxDB rows.
        rows = DayRows(minutes=[{"time_s": m["minute_start_s"], **m} for m in ours],
                       slouches=[{"time_s": s["start_s"], **s} for s in slouches])
        report = build_day_report("replay", day, tz, rows)
        assert summary["worn_min"] == round(report.totals.worn_s / 60, 2)
        assert summary["slouch_min"] == round(report.totals.slouch_s / 60, 2)
        assert summary["activity_min"] == {k: round(v / 60, 2) for k, v in report.totals.activity_s.items()}
        assert summary["slouch_episodes"] == len(report.slouches) == sum(
            ran_in(s["start_s"], s["end_s"], start_s, end_s) for s in slouches)
    assert [d["slouch_episodes"] for d in days] == [1, 2]  # the slouch across midnight is on both days


@pytest.mark.parametrize("day, hours", [(date(2026, 3, 8), 23), (date(2026, 11, 1), 25)])
def test_a_day_the_clocks_change_has_23_or_25_hour_summaries_that_sum_to_it(day, hours):
    """New York's days the clocks change, a minute at a time as the pipeline hands them: the day is its 23 or 25 hours
    from local midnight, each an hour summary. A slouch from 01:50 to 01:10 an hour (two) later, across the hour the
    clocks skip or repeat, counts in both hours and once in the day, the hours held until it ends."""
    from pipeline.events import EpisodeStart, MinuteMetrics, SlouchEpisode

    tz = ZoneInfo("America/New_York")
    day_start_s, day_end_s = day_bounds(day, tz)
    assert day_end_s - day_start_s == hours * 3600
    start_s, end_s = day_start_s + 6600, day_start_s + 7800  # 1:50 to 2:10 after midnight
    rollups, out = Rollups(tz), []
    for minute_s in np.arange(day_start_s - 1800, day_end_s + 1800, 60.0):
        if minute_s <= start_s + 5 < minute_s + 60:
            rollups.add_event(EpisodeStart("slouch", start_s, 5.0))
        if minute_s <= end_s < minute_s + 60:
            rollups.add_event(SlouchEpisode(start_s, end_s, 30.0, 25.0))
        slouch_s = max(0.0, min(minute_s + 60, end_s) - max(minute_s, start_s))
        out += [(minute_s, ln) for ln in rollups.add_minute(MinuteMetrics(minute_s, worn_s=60.0, sitting_s=60.0,
                                                                          slouch_s=slouch_s))]
    out += [(None, ln) for ln in rollups.flush()]
    days = {ln["start_s"]: ln for _, ln in out if ln["period"] == "day"}
    assert list(days) == [day_bounds(day - timedelta(days=1), tz)[0], day_start_s, day_end_s]
    ours = [(at, ln) for at, ln in out if ln["period"] == "hour" and day_start_s <= ln["start_s"] < day_end_s]
    assert [ln["start_s"] for _, ln in ours] == [day_start_s + 3600 * h for h in range(hours)]
    assert [ln["slouch_episodes"] for _, ln in ours] == [0, 1, 1] + [0] * (hours - 3)
    assert ours[1][0] == end_s - end_s % 60  # hour 1 waited for the slouch to end
    the_day = days[day_start_s]
    assert the_day["worn_min"] == sum(ln["worn_min"] for _, ln in ours) == hours * 60
    assert the_day["slouch_min"] == pytest.approx(sum(ln["slouch_min"] for _, ln in ours)) == 20.0
    assert the_day["slouch_episodes"] == 1


@pytest.mark.parametrize("zone, day, hours, last_hour_s, on_the_clock", [
    ("Asia/Kolkata", date(2024, 12, 6), 24, 3600, {"00"}),  # at :00 local, :30 UTC
    ("America/New_York", date(2026, 11, 1), 25, 3600, {"00"}),
    # Its clocks go back half an hour at 02:00: a day of 24.5 hours, whose hours after it read :30.
    ("Australia/Lord_Howe", date(2026, 4, 5), 25, 1800, {"00", "30"}),
    ("America/Sao_Paulo", date(2018, 2, 17), 25, 3600, {"00"}),  # back from 24:00 to 23:00: the hour again is its
])
def test_local_hours_are_counted_from_local_midnight_and_end_with_the_day(zone, day, hours, last_hour_s,
                                                                         on_the_clock):
    tz = ZoneInfo(zone)
    day_start_s, day_end_s = day_bounds(day, tz)
    days, hourly = LocalPeriods(tz), LocalPeriods(tz, hourly=True)
    starts, t_s = [], day_start_s
    while t_s < day_end_s:  # each minute of the day is in the day, and in the hour that follows the one before
        start_s, end_s = hourly.bounds(hourly.index(t_s))
        assert start_s == t_s and days.bounds(days.index(start_s)) == (day_start_s, day_end_s)
        assert all(hourly.bounds(hourly.index(m)) == (start_s, end_s) for m in np.arange(start_s, end_s, 60.0))
        starts.append(start_s)
        t_s = end_s
    assert t_s == day_end_s and starts == [day_start_s + 3600 * h for h in range(hours)]
    assert {datetime.fromtimestamp(s, tz).strftime("%M") for s in starts} == on_the_clock
    assert day_end_s - starts[-1] == last_hour_s
    assert periods_ran_in(day_start_s - 60, day_end_s, days) == [days.index(day_start_s - 60), days.index(day_start_s)]


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "UTC"])
def test_times_no_calendar_holds_fall_in_utc_days_and_the_summaries_go_on(zone):
    """A recording stamped past the year 9999 (or before year 1) has no local day: it stopped the replay with a
    ValueError there (before local days it replayed, in UTC days). It still does, in UTC days."""
    from pipeline.events import MinuteMetrics

    rollups, out = Rollups(ZoneInfo(zone)), []
    for k in range(3 * 1440):  # 9999-12-30 to past the end of the calendar, a minute at a time
        out += rollups.add_minute(MinuteMetrics(minute_start_s=253_402_041_600.0 + 60 * k, worn_s=60.0))
    out += rollups.flush()
    days = [d for d in out if d["period"] == "day"]
    assert sum(d["worn_min"] for d in days) == 3 * 1440 and len(days) >= 3
    assert [d["start_s"] for d in out if d["period"] == "hour"] == sorted(d["start_s"] for d in out
                                                                        if d["period"] == "hour")


@pytest.mark.parametrize("options, said", [
    (["--timezone", "Asia/Kolkatta"], "unknown time zone 'Asia/Kolkatta' (did you mean 'Asia/Kolkata'?)"),
    (["--config", "{tmp}/posture.toml"], "config: alerts.timezone: unknown time zone 'asia/kolkata'"),
])
def test_a_zone_that_is_none_is_one_line_before_the_replay(tmp_path, options, said):
    """Refused before the file is read, in one line, as `posture report` refuses it."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "rec.csv", chunks)
    (tmp_path / "posture.toml").write_text('[alerts]\ntimezone = "asia/kolkata"\n')
    cli = subprocess.run([sys.executable, "-m", "posture.cli", "replay", str(tmp_path / "rec.csv"), "--quiet",
                          "--out", str(tmp_path / "out.jsonl"), *(o.format(tmp=tmp_path) for o in options)],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and said in cli.stderr, cli.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("offline", [False, True])
def test_lone_spikes_of_rotation_rate_in_a_recording_change_nothing_it_reads(tmp_path, offline):
    """Glitches of 2,000 °/s (one during the calibration bend: it was refused) are dropped live and left out of VQF's
    offline estimate (which spread each over the seconds around it): the replay reads what it reads without them."""
    *chunks, _ = case_chunks("office-short")
    write_record_csv(tmp_path / "clean.csv", chunks)
    t_s, acc_g, gyro_dps = (np.concatenate(c) for c in zip(*chunks, strict=True))
    at = np.searchsorted(t_s, t_s[0] + np.array([7.66, 30.0, 55.5, 101.0, 150.0]))
    gyro_dps = gyro_dps.copy()
    gyro_dps[at, 1] = 2000.0
    write_record_csv(tmp_path / "spiked.csv", [(t_s, acc_g, gyro_dps)])
    clean = replay(tmp_path / "clean.csv", tmp_path / "clean.jsonl", progress=False, offline=offline)
    spiked = replay(tmp_path / "spiked.csv", tmp_path / "spiked.jsonl", progress=False, offline=offline)
    read = lambda p: [(d["kind"], d.get("status"), round(d.get("start_s", d.get("t_s", 0.0)), 1))  # noqa: E731
                      for d in map(json.loads, p.read_text().splitlines()) if d["kind"] not in ("metrics", "summary")]
    assert read(tmp_path / "spiked.jsonl") == read(tmp_path / "clean.jsonl")
    assert ("calibration", "calibrated", 10.2) in read(tmp_path / "clean.jsonl")
    for key in ("samples", "slouch_min", "rotations", "calibration"):
        assert spiked[key] == clean[key], key
