"""`posture report`: a day drawn from a real InfluxDB filled by the chain (office-short), and the pure parts."""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import math
import re
import struct
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import pytest

from contract.validation import MAX_ROTATIONS_PER_MINUTE, MINUTE_MAX_S
from pipeline.summary import day_bounds
from posture.local_servers import InfluxDB1, http
from report import cli, draw, query
from report import day as report_day
from report.day import DayRows, build_day_report, live_buckets, merge_spans
from report.query import QueryError, influxql_string
from service_io.config import load_config
from service_io.influx import InfluxSettings
from support.mqtt import DB, start_or_fail
from support.servers import write_line_protocol

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def posture_report(*argv: str) -> int:
    """The subcommand as `posture report` runs it: its own parser registered on a fresh one."""
    parser = argparse.ArgumentParser(prog="posture")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    return args.func(args)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG must start with."""
    assert data[:8] == PNG_MAGIC, "not a PNG"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def the_day(chain) -> str:
    """The UTC date of the middle of the data, should it straddle midnight."""
    return datetime.fromtimestamp((chain.start_s + chain.end_s) / 2, UTC).date().isoformat()


def common(chain) -> list[str]:
    return ["--device", chain.device, "--day", the_day(chain), "--timezone", "UTC",
            "--influx-url", chain.influx.url, "--database", chain.database]


def test_png_is_a_full_figure(chain_influx, tmp_path, capsys):
    out = tmp_path / "report.png"
    assert posture_report(*common(chain_influx), "--out", str(out)) == 0
    data = out.read_bytes()
    width, height = png_size(data)
    assert width >= 1000 and height >= 700
    assert len(data) > 30_000, f"{len(data)} bytes: nearly blank"
    assert chain_influx.device in capsys.readouterr().out


def test_html_embeds_the_figure_and_lists_alerts(chain_influx, tmp_path):
    out = tmp_path / "report.html"
    assert posture_report(*common(chain_influx), "--out", str(out)) == 0
    page = out.read_text(encoding="utf-8")
    image = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert image, "no embedded PNG"
    width, height = png_size(base64.b64decode(image.group(1)))
    assert width >= 1000 and height >= 700
    assert chain_influx.device in page
    day_start = int(datetime.fromisoformat(the_day(chain_influx)).replace(tzinfo=UTC).timestamp() * 1000)
    stored = chain_influx.influx.query(  # that day's alerts (the data may straddle midnight)
        f"SELECT \"text\" FROM posture_alert WHERE device_id = '{chain_influx.device}' "
        f"AND time >= {day_start}ms AND time < {day_start + 86_400_000}ms", chain_influx.database)
    texts = [row[1] for s in stored["results"][0].get("series", []) for row in s["values"]]
    assert texts or chain_influx.influx.rows("SELECT count(alert_id) FROM posture_alert", chain_influx.database), \
        "the fixture should hold alerts"
    for text in texts:
        assert html.escape(text) in page


def test_no_data_is_one_line(chain_influx, tmp_path):
    out = tmp_path / "report.png"
    with pytest.raises(ValueError) as caught:
        posture_report("--device", "NoSuchSensor", "--day", the_day(chain_influx), "--timezone", "UTC",
                       "--influx-url", chain_influx.influx.url, "--database", chain_influx.database, "--out", str(out))
    db = chain_influx.database  # its one device named, as `posture report` for a device it does not have says
    assert str(caught.value) == f"no device NoSuchSensor in {db} (its devices: {chain_influx.device})"
    assert not out.exists()


def test_config_file_gives_database_and_zone(chain_influx, tmp_path):
    config = tmp_path / "posture.toml"
    config.write_text(f'[influx]\nurl = "{chain_influx.influx.url}"\ndatabase = "{chain_influx.database}"\n'
                      '[alerts]\ntimezone = "UTC"\n')
    out = tmp_path / "report.png"
    assert posture_report("--config", str(config), "--device", chain_influx.device, "--day", the_day(chain_influx),
                          "--out", str(out)) == 0
    assert png_size(out.read_bytes())[0] >= 1000


def test_write_report_for_the_demo(chain_influx, tmp_path):
    out = tmp_path / "report.html"
    report = cli.write_report(chain_influx.influx.url, chain_influx.database, chain_influx.device,
                              the_day(chain_influx), out, "UTC")
    assert report.totals.worn_s > 0 and report.slouches and report.alerts
    # The chain's bridge keeps the live stream in its policy ("live"): the angles are drawn from it.
    assert len(report.live) > 10 and report.live_step_s == 10
    assert any(b.slouching for b in report.live) and report.slouch_spans
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("argv, message", [
    (["--out", "report.pdf"], "--out must end in .png or .html, not 'report.pdf'"),
    (["--out", "report.png", "--day", "2025-13-01"], "--day must be YYYY-MM-DD, not '2025-13-01'"),
    (["--out", "report.png", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    (["--out", "report.png", "--day", "9999-12-31"], "--day 9999-12-31 is out of range"),  # was a traceback
    # Days InfluxDB cannot hold: they were asked for, and the answer an error about the time.
    (["--out", "report.png", "--day", "2262-04-11"], "--day 2262-04-11 is out of range"),
    (["--out", "report.png", "--day", "1677-09-21"], "--day 1677-09-21 is out of range"),
    # No device has such an id (contract/identity.py): they were asked for too, a newline in the one line said.
    (["--out", "report.png", "--device", ""], "--device must be a device id, 1 to 64 of A-Za-z0-9_.:-, not ''"),
    (["--out", "report.png", "--device", "a\nb"],
     "--device must be a device id, 1 to 64 of A-Za-z0-9_.:-, not 'a\\nb'"),
])
def test_user_mistakes_are_refused_before_any_query(tmp_path, argv, message):
    argv = [str(tmp_path / a) if a.startswith("report.") else a for a in argv]
    # Port 9 (discard): were it asked, the error would be a connection failure, not the one expected.
    with pytest.raises(ValueError, match=re.escape(message)):
        posture_report("--device", "D", "--day", "2025-06-01", "--influx-url", "http://127.0.0.1:9", *argv)


def minute(t_s: float, **fields) -> dict:
    row = {"time_s": t_s, "worn_s": 60.0, "sitting_s": 60.0, "standing_s": 0.0, "walking_s": 0.0, "lying_s": 0.0,
           "slouch_s": 0.0, "lean_left_s": 0.0, "lean_right_s": 0.0, "rotations_left": 0, "rotations_right": 0,
           "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0,
           "flexion_mean_deg": 5.0, "lateral_mean_deg": 0.0}
    return row | fields


def test_day_totals_from_rows():
    utc = UTC
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=utc).timestamp()
    rows = DayRows(
        minutes=[minute(t0, slouch_s=45.0, flexion_mean_deg=22.0, rotations_right=3,
                        rotation_right_cumulative_deg=90.0),
                 minute(t0 + 60, slouch_s=15.0, rotations_left=1, rotation_left_cumulative_deg=30.0, lean_left_s=20.0),
                 minute(t0 + 120, worn_s=60.0, sitting_s=10.0, walking_s=50.0),
                 minute(t0 + 600, worn_s=0.0, sitting_s=0.0, flexion_mean_deg=None, lateral_mean_deg=None)],
        slouches=[{"time_s": t0 + 10, "duration_s": 50.0, "peak_flexion_deg": 28.0}],
        rotations=[{"time_s": t0 + 5, "side": "right", "peak_deg": 30.0}],
        leans=[{"time_s": t0 + 70, "side": "left", "duration_s": 20.0, "mean_lateral_deg": -12.0}],
        alerts=[{"time_s": t0 + 120, "kind": "slouch", "title": "Slouching", "message": "Sit up.", "text": None},
                # Praise and the summary are listed, and not counted: the count is the alert service's alerts_sent
                # (the report said 3 alerts where Home Assistant's "alerts sent" said 1).
                {"time_s": t0 + 180, "kind": "recovered", "title": "Slouch over", "message": "Well done."},
                {"time_s": t0 + 630, "kind": "summary", "title": "Your posture today", "message": "…"}],
    )
    report = build_day_report("Desk", date(2025, 6, 1), utc, rows)
    t = report.totals
    assert len(report.alerts) == 3 and t.alerts == 1
    assert report.alerts_said() == "1 alert (and 2 not counted: recovered, summary)"  # beside the 3 listed
    assert t.slouch_s / 60 == pytest.approx(1.0)  # slouch minutes
    assert t.worn_s == 180.0 and t.slouch_pct_of_worn == pytest.approx(100 / 3)
    assert t.rotations == {"left": 1, "right": 3}
    assert t.rotation_peak_mean_deg == {"left": 30.0, "right": 30.0}
    assert t.rotation_symmetry_index == pytest.approx((90 - 30) / 60 * 100)  # + : right-dominant
    assert t.lean_s["left"] == 20.0 and t.leans == {"left": 1, "right": 0}
    assert [m.activity for m in report.minutes] == ["sitting", "sitting", "walking", None]
    assert report.alerts[0].text == "Slouching: Sit up."  # a row without text gets title: message
    assert report.data_start_s == t0 and report.data_end_s == t0 + 660

    left_heavy = DayRows(minutes=[minute(t0, rotations_left=4, rotation_left_cumulative_deg=160.0,
                                         rotations_right=1, rotation_right_cumulative_deg=40.0)])
    assert build_day_report("Desk", date(2025, 6, 1), utc, left_heavy).totals.rotation_symmetry_index < 0
    little = DayRows(minutes=[minute(t0, rotations_left=1, rotation_left_cumulative_deg=20.0)])
    assert build_day_report("Desk", date(2025, 6, 1), utc, little).totals.rotation_symmetry_index is None


def drawn_blocks(report, color: str) -> list[tuple[float, float]]:
    """The activity strip's bars of one colour as drawn, (start, end) in matplotlib date numbers."""
    from matplotlib.colors import to_rgba

    ax = draw.figure(report).subfigs[0].axes[1]
    blocks = []
    for collection in ax.collections:
        if tuple(collection.get_facecolor()[0]) == to_rgba(color):
            blocks += [(min(p.vertices[:, 0]), max(p.vertices[:, 0])) for p in collection.get_paths()]
    return sorted(blocks)


def test_a_short_walk_in_a_long_sitting_day_shows_in_the_activity_strip():
    """Each minute was drawn as its main activity, a minute wide: a 50 s walk from 12:00:35, 25 s in each of two
    minutes that sat 35 s, was drawn as sitting, and even a whole minute's walk is under a pixel of a long day. A
    minute with WALK_MIN_S of walking is drawn as a walk over the rest, as long as it walked (a 20 s walk was drawn a
    whole minute long, hiding 40 s of sitting, in the demo's report) and at least draw.WALK_MIN_WIDTH of the axis
    wide; a step or two (5 s) is not a walk."""
    t0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC).timestamp()
    walk_start_s = t0 + 4 * 3600
    walked = {walk_start_s: 25.0, walk_start_s + 60: 25.0, t0 + 7200: 5.0}
    rows = DayRows(minutes=[minute(t, sitting_s=60.0 - walked.get(t, 0.0), walking_s=walked.get(t, 0.0))
                            for t in (t0 + 60 * k for k in range(600))])  # 08:00 to 18:00
    report = build_day_report("Desk", date(2025, 6, 1), UTC, rows)
    assert all(m.activity == "sitting" for m in report.minutes)  # the walk is no minute's main activity

    def num(t_s: float) -> float:
        return draw._num(report, t_s)

    walks = drawn_blocks(report, draw.COLOR["walking"])
    assert len(walks) == 1, walks  # the walk, once; not the 5 s at 10:00
    walk = walks[0]
    assert 5.0 < report_day.WALK_MIN_S <= 25.0
    assert report.walk_spans == [(walk_start_s + 35, walk_start_s + 85)]  # where it was, ending and beginning minutes
    span = num(report.data_end_s) - num(report.data_start_s)
    assert walk[0] <= num(walk_start_s + 35) and num(walk_start_s + 85) <= walk[1]
    assert walk[1] - walk[0] == pytest.approx(draw.WALK_MIN_WIDTH * span)  # 2 min of 10 h: widened to be seen
    assert [(round(a, 6), round(b, 6)) for a, b in drawn_blocks(report, draw.COLOR["sitting"])][:1] == [
        (round(num(t0), 6), round(num(t0 + 60), 6))]  # the sitting around it is drawn as before


def test_text_fields_of_another_type_are_text():
    """An alert's text or title, a calibration's message stored as an integer or a boolean: TypeError and
    AttributeError tracebacks (joining the title, escaping the page)."""
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    rows = DayRows(minutes=[minute(t0)], calibrations=[{"time_s": t0, "status": "calibrated", "message": 3}],
                   alerts=[{"time_s": t0 + 1, "kind": "slouch", "text": 5},
                           {"time_s": t0 + 2, "kind": "slouch", "title": True, "message": "m"}])
    report = build_day_report("Desk", date(2025, 6, 1), UTC, rows)
    assert [a.text for a in report.alerts] == ["5", "True: m"] and report.calibrations[0].message == "3"
    assert "<td>True: m</td>" in draw.html_page(report, b"")


def test_a_day_without_minutes_says_it_has_no_totals():
    """Only the live stream and events that day: "worn 0.0 min · slouch 0.0 min" said the sensor was not worn."""
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    rows = DayRows(live=[{"time_s": t0, "flexion_deg": 5.0, "lateral_deg": 0.0, "samples": 10}],
                   alerts=[{"time_s": t0 + 1, "kind": "slouch", "text": "Sit up"}])
    report = build_day_report("Desk", date(2025, 6, 1), UTC, rows)
    assert draw.header_line(report) == "Desk · 2025-06-01 (UTC) · no per-minute totals that day · 1 alert"
    page = draw.html_page(report, b"")
    assert "no per-minute totals that day" in page and "worn" not in page


@pytest.mark.parametrize("device, zone", [("PostureDemo", "America/Argentina/ComodRivadavia"),
                                           ("PostureDemo-living-room-sensor-0042", "Pacific/Honolulu"),
                                           ("D" * 64, "America/Argentina/ComodRivadavia")])  # the longest id
def test_the_title_fits_in_the_figure(device, zone):
    """The title was one line: with a long zone name or device it ran past both edges of the figure and was cut
    ("ostureDemo … recovere"). It is broken into lines between its parts, each within the figure, above the panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    tz = ZoneInfo(zone)
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=tz).timestamp()
    rows = DayRows(minutes=[minute(t0 + 60 * k, slouch_s=30.0) for k in range(60)],
                   alerts=[{"time_s": t0 + 120, "kind": "slouch", "text": "Sit up"},
                           {"time_s": t0 + 180, "kind": "recovered", "text": "Well done"},
                           {"time_s": t0 + 1800, "kind": "summary", "text": "Your day"}])
    report = build_day_report(device, date(2025, 6, 1), tz, rows)
    fig = draw.figure(report)
    fig.set_dpi(draw.DPI)  # as png_bytes saves it
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # constrained layout places the title and the panels here
    (title,) = [t for t in fig.findobj(Text) if t.get_text() == fig.get_suptitle()]
    extent = title.get_window_extent(canvas.get_renderer())
    assert 0 <= extent.x0 and extent.x1 <= fig.bbox.width, (extent, fig.bbox.width)
    assert extent.y1 <= fig.bbox.height
    angles = fig.subfigs[0].axes[0]  # the top panel, its own title and legend included
    assert extent.y0 >= angles.get_tightbbox(canvas.get_renderer()).y1
    assert title.get_text().replace("\n", draw.SEPARATOR) == draw.header_line(report)  # all of it, in order


def test_text_from_the_data_is_drawn_as_written():
    """matplotlib read an alert kind in $…$ as math: "$\\frac{$" stopped the report (ValueError), "$x^2$" drew x²."""
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    rows = DayRows(minutes=[minute(t0)], alerts=[{"time_s": t0 + 1, "kind": "$\\frac{$", "text": "x"},
                                                 {"time_s": t0 + 2, "kind": "$x^2$", "text": "y"}])
    report = build_day_report("Desk", date(2025, 6, 1), UTC, rows)
    assert png_size(draw.png_bytes(report))[0] >= 1000
    texts = [t for t in draw.figure(report).subfigs[0].axes[0].texts if "$" in t.get_text()]
    assert len(texts) == 2 and not any(t.get_parse_math() for t in texts)


def test_alerts_close_together_share_one_label():
    """Two alerts decided in one minute drew their kinds over each other ("sitlean")."""
    day_s = 86_400.0
    alerts = [(100.0, "sitting"), (130.0, "lean"), (160.0, "lean"), (5000.0, "slouch"), (5000.0 + day_s * 0.012, "x")]
    assert draw.alert_labels(alerts, day_s) == [(100.0, "sitting · lean ×2"), (5000.0, "slouch"),
                                                (5000.0 + day_s * 0.012, "x")]
    assert draw.alert_labels([], day_s) == []


def test_day_is_local_midnight_to_midnight():
    start_s, end_s = day_bounds(date(2025, 3, 30), ZoneInfo("Europe/Berlin"))  # clocks go forward: 23 h
    assert start_s == datetime(2025, 3, 29, 23, 0, tzinfo=UTC).timestamp()
    assert end_s - start_s == 23 * 3600


def test_alert_times_on_the_day_the_clocks_go_back_tell_the_two_passes_apart():
    # 2026-10-25 in Berlin has 02:30 twice, an hour apart: the alert table printed both as "02:30:00".
    tz = ZoneInfo("Europe/Berlin")
    start_s, _ = day_bounds(date(2026, 10, 25), tz)
    rows = DayRows(minutes=[{"time_s": start_s + 60 * k, "worn_s": 60.0, "slouch_s": 0.0} for k in range(300)],
                   alerts=[{"time_s": start_s + h * 3600, "kind": "slouch", "alert_id": f"a{h}", "title": "Slouching",
                            "text": "Slouching: …"} for h in (2.5, 3.5)])
    page = draw.html_page(build_day_report("D", date(2026, 10, 25), tz, rows), b"")
    assert re.findall(r"<tr><td>([^<]+)</td><td>slouch", page) == ["02:30:00 CEST", "02:30:00 CET"]
    # A day without a change keeps the plain clock time (the column header names the zone).
    start_s, _ = day_bounds(date(2026, 10, 24), tz)
    rows = DayRows(minutes=[{"time_s": start_s, "worn_s": 60.0, "slouch_s": 0.0}],
                   alerts=[{"time_s": start_s + 9000, "kind": "slouch", "alert_id": "a", "title": "S", "text": "S"}])
    page = draw.html_page(build_day_report("D", date(2026, 10, 24), tz, rows), b"")
    assert re.findall(r"<tr><td>([^<]+)</td><td>slouch", page) == ["02:30:00"]


def test_device_names_cannot_break_the_query():
    assert influxql_string("Bob's \\sensor") == "'Bob\\'s \\\\sensor'"


def test_the_command(chain_influx, tmp_path):
    """`posture report` itself, in its own process: the figure without a display, user errors as one line, exit 2."""
    out = tmp_path / "report.png"
    done = subprocess.run([sys.executable, "-m", "posture.cli", "report", *common(chain_influx), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert png_size(out.read_bytes())[0] >= 1000
    done = subprocess.run([sys.executable, "-m", "posture.cli", "report", *common(chain_influx)[2:],
                           "--device", "NoSuchSensor", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"posture report: no device NoSuchSensor in {chain_influx.database} "
                                          f"(its devices: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_write_that_fails_leaves_the_previous_report(influx, tmp_path):
    """On a full disk the report was written over the previous one in place, leaving a truncated file. A limit on
    file size (RLIMIT_FSIZE) fails the write as a full disk does, without a file system of its own."""
    write_line_protocol(influx, DB, minute_lines("D", datetime(2025, 6, 10, 9, tzinfo=UTC).timestamp(), 10))
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "report.png"
    previous = PNG_MAGIC + b"the previous report" * 1000
    out.write_bytes(previous)
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000)); "
               "from posture.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", limited, "report", "--device", "D", "--day", "2025-06-10",
                           "--timezone", "UTC", "--influx-url", influx.url, "--database", DB, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == f"posture report: cannot write {out}: File too large"
    assert out.read_bytes() == previous
    assert [p.name for p in out.parent.iterdir()] == ["report.png"]  # nor a temporary file left beside it


# --- the live stream: seconds where it was kept, minutes elsewhere ---------------------------------


def write_live(server, db: str, policy: str, lines: list[str]) -> None:
    """Line protocol into a live retention policy, made here as the bridge makes it (7 days)."""
    server.query(f'CREATE RETENTION POLICY "{policy}" ON "{db}" DURATION 7d REPLICATION 1')
    status, _, body = http("POST", f"{server.url}/write?db={db}&rp={policy}&precision=ms", "\n".join(lines).encode())
    assert status == 204, body


def a_recent_day() -> tuple[str, float]:
    """Yesterday (UTC) and its 09:00 in Unix seconds: inside the live policy's 7 days."""
    day = datetime.now(UTC).date() - timedelta(days=1)
    return day.isoformat(), datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC).timestamp()


def minute_lines(device: str, t0_s: float, count: int, flexion_deg: float = 5.0) -> list[str]:
    return [f"posture_minute,device_id={device} worn_s=60,sitting_s=60,standing_s=0,walking_s=0,lying_s=0,"
            f"slouch_s=0,flexion_mean_deg={flexion_deg},lateral_mean_deg=1 {int((t0_s + 60 * i) * 1000)}"
            for i in range(count)]


def lines_by_label(report) -> dict[str, tuple[list[float], list[float]]]:
    """The angle plot's traces, label → (x, y): what the figure is drawn from."""
    ax = draw.figure(report).subfigs[0].axes[0]
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
            if " mean" in line.get_label()}


def test_a_day_with_live_data_for_part_of_it_draws_seconds_there_and_minutes_elsewhere(influx, tmp_path):
    day, t0 = a_recent_day()  # 09:00 UTC
    device = "Desk"
    write_line_protocol(influx, DB, [
        *minute_lines(device, t0, 10),  # 09:00–09:10
        f"posture_slouch,device_id={device} duration_s=20,peak_flexion_deg=25,mean_flexion_deg=22 "
        f"{int((t0 + 420) * 1000)}",  # 09:07:00, ended: counted and shaded
        # Episodes confirmed and not ended (yet): only confirmed_after_s. Not counted, and nothing breaks.
        f"posture_slouch,device_id={device} confirmed_after_s=5 {int((t0 + 480) * 1000)}",
        f"posture_lean,device_id={device},side=right confirmed_after_s=3 {int((t0 + 500) * 1000)}",
    ])
    live = []
    for i in range(180):  # 09:03:00–09:06:00 at 1 Hz, named as the config file names the policy
        t_s = t0 + 180 + i
        fields = 'calibration="calibrated",activity="sitting",lateral_deg=-2'
        if 60 <= i < 90:  # 09:04:00–09:04:30 slouching
            fields += f",flexion_deg=20,slouching_since_s={t0 + 240}"
        else:
            fields += ",flexion_deg=3"
        live.append(f"posture_live,device_id={device} {fields} {int(t_s * 1000) + 150}")
        # The states a 10 Hz live stream's messages carry besides their own: angles only (no activity, no slouch).
        flexion = 20 if 60 <= i < 90 else 3
        live += [f"posture_live,device_id={device} flexion_deg={flexion},lateral_deg=-2,rotation_deg=0 "
                 f"{int(t_s * 1000) + 150 + 80 * j}" for j in range(1, 10)]
    live.append(f'posture_live,device_id=Other flexion_deg=40,calibration="calibrated" {int((t0 + 30) * 1000)}')
    write_live(influx, DB, "fine", live)
    config = tmp_path / "posture.toml"
    config.write_text(f'[influx]\nurl = "{influx.url}"\ndatabase = "{DB}"\nlive_policy = "fine"\n')

    settings = load_config(config).influx
    report = cli.write_day_report(settings, device, day, tmp_path / "report.png", "UTC")

    assert [b.start_s for b in report.live] == [t0 + 180 + 10 * k for k in range(18)]
    assert report.live_step_s == 10
    assert [b.flexion_deg for b in report.live] == [3.0] * 6 + [20.0] * 3 + [3.0] * 9
    assert [b.slouching for b in report.live] == [False] * 6 + [True] * 3 + [False] * 9
    assert [m.start_s for m in report.trace_minutes] == [t0 + 60 * k for k in (0, 1, 2, 6, 7, 8, 9)]
    assert len(report.minutes) == 10  # totals and activity keep every minute
    assert report.slouch_spans == [(t0 + 240, t0 + 270), (t0 + 420, t0 + 440)]
    assert len(report.slouches) == 1 and report.leans == []

    lines = lines_by_label(report)
    x_live, y_live = lines["flexion (10 s mean, live)"]
    assert len(x_live) == 18 and y_live[6:9] == [20.0] * 3
    x_minutes, y_minutes = lines["flexion (per-minute mean)"]
    finite = [y for y in y_minutes if not math.isnan(y)]
    assert finite == [5.0] * 14  # 7 minutes, a step (2 points) each; the live minutes are a gap
    assert x_minutes[5] < x_live[0] and x_live[-1] < x_minutes[7]
    assert draw.figure(report).subfigs[0].axes[0].get_title(loc="left") == (
        "Trunk angles · 10 s means of the live stream, per-minute means elsewhere")


def test_a_day_from_before_the_live_stream_is_drawn_from_minutes(influx, tmp_path):
    """No live retention policy on the database at all: no error, the per-minute trace as before."""
    day, t0 = a_recent_day()
    write_line_protocol(influx, DB, minute_lines("Old", t0, 5))
    assert "fine" not in str(influx.query("SHOW RETENTION POLICIES", DB))
    settings = InfluxSettings(url=influx.url, database=DB, live_policy="live")
    report = cli.write_day_report(settings, "Old", day, tmp_path / "report.html", "UTC")
    assert report.live == [] and report.trace_minutes == report.minutes and len(report.minutes) == 5
    assert report.slouch_spans == []
    assert set(lines_by_label(report)) == {"flexion (per-minute mean)", "lateral bend (per-minute mean)"}


def test_seconds_off_the_body_do_not_thin_a_live_buckets_slouching(influx, tmp_path):
    """A 10 s bucket with the wearer slouching for 3 s, each second's message carrying four earlier states, then the
    sensor judged off the body (a state with activity not_worn and no angles) for 6 s. Counted over every state with
    an activity, 3 of 9 drew the bucket upright; over the states with angles it is 3 of 3. The earlier states still
    count in the mean angles; an uncalibrated bucket is still no bucket."""
    day, t0 = a_recent_day()
    device = "Desk"
    live = []
    for i in range(1, 4):
        t_ms = int((t0 + i) * 1000)
        live.append(f'posture_live,device_id={device} calibration="calibrated",activity="sitting",flexion_deg=30,'
                    f"lateral_deg=0,rotation_deg=0,slouching_since_s={t0 - 60} {t_ms}")
        live += [f"posture_live,device_id={device} flexion_deg=20,lateral_deg=0,rotation_deg=0 {t_ms - 200 * j}"
                 for j in range(1, 5)]
    live += [f'posture_live,device_id={device} calibration="calibrated",activity="not_worn" '
             f"{int((t0 + i) * 1000)}" for i in range(4, 10)]
    live += [f'posture_live,device_id={device} calibration="uncalibrated" {int((t0 + i) * 1000)}'
             for i in range(10, 20)]
    write_live(influx, DB, "live", live)
    settings = InfluxSettings(url=influx.url, database=DB, live_policy="live")
    report = cli.write_day_report(settings, device, day, tmp_path / "report.html", "UTC")
    (bucket,) = report.live
    assert bucket.slouching and bucket.flexion_deg == pytest.approx((3 * 30 + 12 * 20) / 15)
    assert report.slouch_spans == [(t0, t0 + 10)]


def test_the_live_trace_draws_no_angles_while_the_wearer_lay(influx, tmp_path):
    """Lying down, trunk flexion and lean mean nothing, and the minute means leave lying out: the live trace drew a
    nap as −85° of flexion and 40° of lean. A bucket the wearer lay in, even in part, is now a gap in both lines;
    the buckets either side are drawn as before."""
    day, t0 = a_recent_day()
    device = "Desk"
    live = []
    for i in range(80):  # 09:00:00–09:01:20 at 1 Hz: sitting, lying from 09:00:35 to 09:01:00, sitting
        t_ms = int((t0 + i) * 1000)
        lying = 35 <= i < 60
        flexion, lateral = (-85, 40) if lying else (5, -1)
        live.append(f'posture_live,device_id={device} calibration="calibrated",'
                    f'activity="{"lying" if lying else "sitting"}",flexion_deg={flexion},lateral_deg={lateral} '
                    f"{t_ms + 900}")
        # The earlier states of a 10 Hz stream's message: angles only, so only the bucket can say it lay.
        live += [f"posture_live,device_id={device} flexion_deg={flexion},lateral_deg={lateral},rotation_deg=0 "
                 f"{t_ms + 900 - 100 * j}" for j in range(1, 10)]
    write_live(influx, DB, "live", live)
    settings = InfluxSettings(url=influx.url, database=DB, live_policy="live")
    report = cli.write_day_report(settings, device, day, tmp_path / "report.png", "UTC")

    assert [b.start_s for b in report.live] == [t0 + 10 * k for k in range(8)]
    assert [b.flexion_deg for b in report.live] == [5.0] * 3 + [None] * 3 + [5.0] * 2
    assert [b.lateral_deg for b in report.live] == [-1.0] * 3 + [None] * 3 + [-1.0] * 2
    lines = lines_by_label(report)
    for label, upright in (("flexion (10 s mean, live)", 5.0), ("lateral bend (10 s mean, live)", -1.0)):
        drawn = lines[label][1]
        assert drawn[:3] + drawn[6:] == [upright] * 5 and all(math.isnan(y) for y in drawn[3:6]), (label, drawn)


def test_live_buckets_and_spans():
    rows = [{"time_s": 20.0, "flexion_deg": 10.0, "lateral_deg": 0.0, "samples": 10, "slouching_samples": 5},
            {"time_s": 0.0, "flexion_deg": 1.0, "lateral_deg": None, "samples": 10, "slouching_samples": None},
            {"time_s": 10.0, "flexion_deg": None, "lateral_deg": None, "samples": 0, "slouching_samples": None}]
    assert [(b.start_s, b.slouching) for b in live_buckets(rows)] == [(0.0, False), (20.0, True)]
    assert merge_spans([(50, 60), (0, 10), (5, 20), (20.5, 30)]) == [(0, 30), (50, 60)]
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    started = DayRows(minutes=[minute(t0)], slouches=[{"time_s": t0 + 5, "confirmed_after_s": 5.0}],
                      leans=[{"time_s": t0 + 9, "side": "left", "confirmed_after_s": 3.0}])
    report = build_day_report("Desk", date(2025, 6, 1), UTC, started)  # episodes under way: not counted
    assert report.slouches == [] and report.leans == [] and report.slouch_spans == []
    assert report.totals.leans["left"] == 0


# --- answers that are not the whole day ------------------------------------------------------------


class RowLimitedInfluxDB(InfluxDB1):
    max_row_limit = 100


def test_an_answer_cut_at_max_row_limit_is_refused(tmp_path):
    """A server with [http] max-row-limit cuts the answer and says partial: the report drew a short day (1000 of
    1440 minutes at a limit of 1000) without a word."""
    server = start_or_fail(RowLimitedInfluxDB(tmp_path / "influxdb"))
    try:
        server.create_database(DB)
        write_line_protocol(server, DB, minute_lines("D", datetime(2025, 6, 10, 9, tzinfo=UTC).timestamp(), 150))
        with pytest.raises(QueryError, match=r"max-row-limit") as caught:
            cli.write_day_report(InfluxSettings(url=server.url, database=DB), "D", "2025-06-10",
                                 tmp_path / "report.png", "UTC")
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "report.png").exists()
    finally:
        server.kill()


def test_an_alert_on_the_last_minute_counts_on_its_day_as_the_alert_service_counts_it(influx, tmp_path):
    """A minute rule decided on 23:59 is stamped 00:00:00.000: the alert service counted it on that day (`alerts_sent`,
    the cap), the report on the next. Both count an alert on contract alert_day's day now."""
    from alerts.catalog import Catalog
    from alerts.engine import AlertEngine
    from alerts.settings import CalibrationRule, Limits, RecoveryRule, Rules, SittingRule, SlouchRule
    from contract.influx_schema import to_line_protocol

    midnight = datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    eng = AlertEngine(Rules(sitting=SittingRule(max_sitting_min=20), slouch=SlouchRule(enabled=False),
                            calibration=CalibrationRule(enabled=False), recovery=RecoveryRule(enabled=False),
                            limits=Limits(quiet_hours="", max_delay_s=10**9)), Catalog.load(), UTC)
    alerts = []
    for k in range(10):  # 23:50 to 23:59, sitting since 23:40: the rule fires on 23:59, at its end
        start_s = midnight - 600 + 60 * k
        doc = {"schema": 1, "kind": "metrics", "device": "D", "ts": int(start_s * 1000), "minute_start_s": start_s,
               "worn_s": 60.0, "sitting_s": 60.0, "slouch_s": 0.0, "sitting_since_s": midnight - 1200}
        alerts += eng.on_metrics(doc, start_s + 70)
    assert [(a["kind"], a["ts"]) for a in alerts] == [("sitting", int(midnight * 1000))]
    assert eng.today_state("D")["date"] == "2026-11-20" and eng.today_state("D")["alerts_sent"] == 1
    write_line_protocol(influx, DB, [*minute_lines("D", midnight - 600, 15),
                                     *to_line_protocol(alerts[0], "alerts/log")])
    settings = InfluxSettings(url=influx.url, database=DB)
    before = cli.write_day_report(settings, "D", "2026-11-20", tmp_path / "a.png", "UTC")
    after = cli.write_day_report(settings, "D", "2026-11-21", tmp_path / "b.png", "UTC")
    assert (before.totals.alerts, len(before.alerts)) == (1, 1)
    assert (after.totals.alerts, len(after.alerts)) == (0, 0)


def test_an_episode_over_midnight_counts_on_both_days_as_its_minutes_do(influx, tmp_path):
    """Episodes are stored at their start and were counted on that day alone, their minutes by the clock: a lean from
    23:50 to 00:02:42 made the day after read "lean left 2.7 min (0 leans)". Now each day counts it, with its part."""
    midnight = datetime(2025, 6, 11, tzinfo=UTC).timestamp()

    def ms(t_s: float) -> int:
        return int(t_s * 1000)

    lean_s = [60.0] * 12 + [42.0, 0.0, 0.0]  # 23:50 to 00:04
    slouch_s = [0.0] * 8 + [30.0, 60.0, 30.0] + [0.0] * 4
    lines = [f"posture_minute,device_id=D worn_s=60,sitting_s=60,slouch_s={slouch_s[k]},lean_left_s={lean_s[k]} "
             f"{ms(midnight - 600 + 60 * k)}" for k in range(15)]
    lines += [f"posture_lean,device_id=D,side=left duration_s=762,mean_lateral_deg=-12 {ms(midnight - 600)}",
              f"posture_slouch,device_id=D duration_s=120,peak_flexion_deg=25 {ms(midnight - 90)}",
              # Ended the day before, or never ended (a start alone): not the new day's.
              f"posture_slouch,device_id=D duration_s=60,peak_flexion_deg=25 {ms(midnight - 43_200)}",
              f"posture_lean,device_id=D,side=right confirmed_after_s=3 {ms(midnight - 10)}"]
    write_line_protocol(influx, DB, lines)
    settings = InfluxSettings(url=influx.url, database=DB)
    before = cli.write_day_report(settings, "D", "2025-06-10", tmp_path / "a.html", "UTC")
    after = cli.write_day_report(settings, "D", "2025-06-11", tmp_path / "b.html", "UTC")
    assert (before.totals.lean_s["left"], before.totals.leans) == (600.0, {"left": 1, "right": 0})
    assert (after.totals.lean_s["left"], after.totals.leans) == (162.0, {"left": 1, "right": 0})
    assert "<th>lean left</th><td>2.7 min (1 lean)</td>" in (tmp_path / "b.html").read_text(encoding="utf-8")
    assert (len(before.slouches), len(after.slouches)) == (2, 1)
    assert after.slouch_spans == [(midnight, midnight + 30)]  # its part of the day, shaded from midnight
    assert after.data_start_s == midnight  # the time axis starts with the day, not with the lean the day before


def test_an_unknown_device_is_one_line_naming_the_devices_there(influx, tmp_path):
    """"no data for device posturedemo on …" did not say the database knows it as PostureDemo, nor what it knows."""
    t0 = datetime(2025, 6, 10, 9, tzinfo=UTC).timestamp()
    devices = ["PostureDemo", *(f"Desk{k}" for k in range(1, 8))]
    write_line_protocol(influx, DB, [line for d in devices for line in minute_lines(d, t0, 2)])

    def refused(device: str, day: str = "2025-06-10", database: str = DB) -> str:
        with pytest.raises(ValueError) as caught:
            cli.write_day_report(InfluxSettings(url=influx.url, database=database), device, day,
                                 tmp_path / "report.png", "UTC")
        return str(caught.value)

    assert refused("posturedemo") == f"no device posturedemo in {DB} (its devices: PostureDemo, Desk1, Desk2, Desk3, " \
                                     "Desk4, …)"
    assert refused("Desk9") == f"no device Desk9 in {DB} (its devices: Desk1, Desk2, Desk3, Desk4, Desk5, …)"
    assert refused("Desk1", "2025-06-11") == f"no data for device Desk1 on 2025-06-11 in {DB}"
    influx.create_database("empty")
    assert refused("Desk1", database="empty") == "no device Desk1 in empty (it has no device's data)"
    assert not (tmp_path / "report.png").exists()


# --- values no minute can hold, answers InfluxDB would not give --------------------------------------


def test_values_beyond_a_minute_are_bounded(influx, tmp_path):
    """The bridge's schema lets rotations_left reach 2**63-1, and a float 1e308: each gave an OverflowError
    traceback (the bar chart, the header's hours, a slouch span ending past any date)."""
    t0 = datetime(2025, 6, 10, 9, tzinfo=UTC).timestamp()
    minute_ms = [int((t0 + 60 * i) * 1000) for i in range(3)]
    write_line_protocol(influx, DB, [
        f"posture_minute,device_id=D worn_s=60,slouch_s=30,rotations_left=9223372036854775807i,"
        f"rotation_left_cumulative_deg=1e308 {minute_ms[0]}",
        f"posture_minute,device_id=D worn_s=1e308,sitting_s=1e308,slouch_s=1e308,flexion_mean_deg=1e308 {minute_ms[1]}",
        f"posture_minute,device_id=D worn_s=-5,slouch_s=20 {minute_ms[2]}",
        f"posture_slouch,device_id=D duration_s=1e308,peak_flexion_deg=25 {minute_ms[0] + 1000}",
    ])
    out = tmp_path / "report.html"
    report = cli.write_day_report(InfluxSettings(url=influx.url, database=DB), "D", "2025-06-10", out, "UTC")
    t = report.totals
    # a minute holds what the contract lets it (120 s: a sensor clock running fast), slouch no more than worn, rotations
    # as many as excursions of 0.1 s fit in it, each peak at most 180° (contract/validation.py, as the bridge stores)
    assert MINUTE_MAX_S == 120.0 and MAX_ROTATIONS_PER_MINUTE == 1200
    assert (t.worn_s, t.slouch_s, t.activity_s["sitting"]) == (180.0, 150.0, 120.0)
    assert t.rotations["left"] == 1200 and t.rotation_cumulative_deg["left"] == 1200 * 180.0
    assert report.minutes[1].flexion_mean_deg is None  # no trunk angle
    assert report.slouch_spans == [(t0 + 1, report.day_end_s)]  # up to the day's end, where the axis ends
    assert "worn 3.0 min · slouch 2.5 min (83 % of worn time)" in out.read_text(encoding="utf-8")


def test_a_point_under_several_tag_sets_counts_once(influx, tmp_path):
    """The same minute stored under another tag set (a tag such as bridge=b2) comes back as another row: 10 minutes
    stored thrice were drawn as 30 minutes worn."""
    t0 = datetime(2025, 6, 10, 9, tzinfo=UTC).timestamp()
    lines = minute_lines("D", t0, 10)
    lines += [line.replace("device_id=D ", f"device_id=D,{tag} ") for tag in ("bridge=b2", "gateway=g1")
              for line in lines]
    rotation = f"posture_rotation,device_id=D,side=left duration_s=1,peak_deg=30 {int((t0 + 5) * 1000)}"
    lines += [rotation, rotation.replace("side=left", "bridge=b2,side=left"), rotation.replace("left", "right")]
    # Two alerts of one kind at one time (a calibration warning and its info) are two: their ids tell them apart.
    alert = 'posture_alert,device_id=D,kind=calibration,severity={} alert_id="{}",title="t",text="x" {}'
    at_ms = int((t0 + 120) * 1000)
    lines += [alert.format("warning", "D-calibration-1", at_ms), alert.format("info", "D-calibration-2", at_ms)]
    write_line_protocol(influx, DB, lines)
    assert len(influx.rows("SELECT worn_s FROM posture_minute", DB)) == 30
    report = cli.write_day_report(InfluxSettings(url=influx.url, database=DB), "D", "2025-06-10",
                                  tmp_path / "report.png", "UTC")
    assert len(report.minutes) == 10 and report.totals.worn_s == 600.0
    assert sorted(r.side for r in report.rotations) == ["left", "right"]  # a side is a point of its own
    assert len(report.alerts) == 2


@contextlib.contextmanager
def not_influxdb(body: bytes, trickle_s: float = 0.0):
    """A real HTTP server on a free port that answers every request 200 with `body`; with trickle_s, it sends a
    space every trickle_s instead, for ever. Its URL."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if trickle_s:
                self.end_headers()
                with contextlib.suppress(OSError):  # until the client hangs up
                    while True:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(trickle_s)
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def a_minute_at(time_ms: float) -> bytes:
    return (b'{"results": [{"statement_id": 0, "series": [{"name": "posture_minute", "columns": ["time", "worn_s"], '
            b'"values": [[%r, 60]]}]}]}' % time_ms)


def test_an_arithmetic_error_is_one_line(tmp_path):
    """What no bound foresaw (here a time of 1e300 ms from a server that is not InfluxDB) is one line, not an
    OverflowError's traceback."""
    with not_influxdb(a_minute_at(1e300)) as url:
        with pytest.raises(ValueError, match=r"^a value stored for D on 2025-06-10 is out of range \(.*\)$"):
            posture_report("--device", "D", "--day", "2025-06-10", "--timezone", "UTC", "--influx-url", url,
                           "--out", str(tmp_path / "report.png"))


@pytest.mark.timeout(60)
def test_an_answer_that_trickles_meets_one_deadline(tmp_path, monkeypatch):
    """A server sending a byte every few seconds held the report for ever: the socket's timeout is per read."""
    monkeypatch.setattr(query, "DEADLINE_S", 1.0, raising=False)
    with not_influxdb(b"", trickle_s=0.2) as url:
        began = time.monotonic()
        with pytest.raises(QueryError, match=r"did not answer /query: its answer was still coming when the time"):
            cli.write_day_report(InfluxSettings(url=url), "D", "2025-06-10", tmp_path / "report.png", "UTC")
        assert time.monotonic() - began < 5.0


@pytest.mark.parametrize("body, message", [
    (b'{"results": "x"}', "answered what InfluxDB does not (no list of results)"),
    (b'{"results": [{"series": [{"values": [[1, 2]]}]}]}', "(a series without time, columns or values)"),
    (b'{"results": [{"series": [{"columns": ["time", "worn_s"], "values": [["2025-06-10T09:00:00Z", 60]]}]}]}',
     "(a time of '2025-06-10T09:00:00Z', not epoch milliseconds)"),
    # A 200 answer with an error at its top was read as no data.
    (b'{"error": "something\\nbad"}', "InfluxDB query on posture: something bad"),
], ids=["results", "columns", "time", "error"])
def test_json_that_is_not_influxdbs_is_one_line(tmp_path, body, message):
    """Each gave a traceback (AttributeError, KeyError, TypeError), or "no data" for an error."""
    with not_influxdb(body) as url:
        with pytest.raises(QueryError) as caught:
            cli.write_day_report(InfluxSettings(url=url), "D", "2025-06-10", tmp_path / "report.png", "UTC")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_zone_from_the_config_file_that_is_none_is_said_as_its_key(tmp_path):
    """`alerts.timezone = "utc"` in the file, no --timezone given: the report said only "unknown time zone 'utc'",
    and the user looked for a --timezone they had not given. It names the key, and the zone meant."""
    config = tmp_path / "posture.toml"
    config.write_text('[alerts]\ntimezone = "utc"\n')
    args = ["report", "--config", str(config), "--device", "D", "--day", "2025-06-10", "--out", str(tmp_path / "r.png"),
            "--influx-url", "http://127.0.0.1:1"]
    done = subprocess.run([sys.executable, "-m", "posture.cli", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("posture report: config: alerts.timezone: unknown time zone 'utc' (did you mean 'UTC'?)\n")


def test_a_walk_is_drawn_as_long_as_it_was_not_a_minute():
    """The demo's 20 s walk in a minute that sat 40 s was drawn over the whole minute; a walk over whole minutes
    still covers them."""
    t0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC).timestamp()
    walked = {t0 + 120: 20.0, t0 + 300: 60.0, t0 + 360: 60.0, t0 + 420: 30.0}
    rows = DayRows(minutes=[minute(t, sitting_s=60.0 - walked.get(t, 0.0), walking_s=walked.get(t, 0.0))
                            for t in (t0 + 60 * k for k in range(10))])
    report = build_day_report("Desk", date(2025, 6, 1), UTC, rows)
    assert report.walk_spans == [(t0 + 140, t0 + 160), (t0 + 300, t0 + 450)]


def live_row(t_s: float, **samples: float) -> dict:
    """A live bucket as query.fetch_live reads it: angles, and how many of its states were in each activity."""
    return {"time_s": t_s, "flexion_deg": 2.0, "lateral_deg": 0.0, "samples": sum(samples.values()),
            "slouching_samples": None} | {f"{a}_samples": samples.get(a) for a in ("sitting", "standing", "walking",
                                                                                    "lying")}


def test_a_walk_the_live_stream_does_not_cover_is_still_drawn():
    """The live stream is best effort (QoS 0: a bridge restarting loses it). A minute that walked 40 s with only its
    first 10 s in the live stream (sitting) was taken as told by it, and the walk was drawn nowhere; and a 10 s walk
    (WALK_MIN_S) split 5/5 over two buckets with standing was in neither bucket's tie, so not drawn either."""
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    walked = DayRows(minutes=[minute(t0, sitting_s=20.0, walking_s=40.0)], live=[live_row(t0, sitting=10)])
    assert build_day_report("Desk", date(2025, 6, 1), UTC, walked).walk_spans == [(t0 + 10, t0 + 50)]

    split = [live_row(t0 + 10 * k, **({"standing": 5, "walking": 5} if k in (2, 3) else {"sitting": 10}))
             for k in range(6)]
    report = build_day_report("Desk", date(2025, 6, 1), UTC,
                              DayRows(minutes=[minute(t0, sitting_s=40.0, standing_s=10.0, walking_s=10.0)],
                                      live=split))
    assert [b.activity for b in report.live] == ["sitting"] * 2 + ["walking"] * 2 + ["sitting"] * 2
    assert report.walk_spans == [(t0 + 20, t0 + 40)]


def test_a_minute_the_live_stream_tells_is_not_drawn_under_it_as_its_main_activity():
    """The demo's last minute, 44 s worn: standing 12 s, walking 20 s, sitting 12 s, so walking by its totals, and the
    live stream's buckets over its worn 44 s. The minute was still drawn a whole minute wide as walking under the
    buckets: the strip showed a walk after the wearer had sat down, from 44 s to the minute's end."""
    t0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    live = [live_row(t0, standing=10), live_row(t0 + 10, standing=2, walking=8), live_row(t0 + 20, walking=10),
            live_row(t0 + 30, walking=2, sitting=8), live_row(t0 + 40, sitting=4)]
    report = build_day_report("Desk", date(2025, 6, 1), UTC, DayRows(
        minutes=[minute(t0, worn_s=44.0, sitting_s=12.0, standing_s=12.0, walking_s=20.0)], live=live))
    assert [m.activity for m in report.minutes] == ["walking"]  # its totals' main activity
    assert report.strip_minutes == []  # told all through its worn time by the live stream
    assert report.walk_spans == [(t0 + 10, t0 + 30)]
    walks = drawn_blocks(report, draw.COLOR["walking"])
    assert len(walks) == 1 and walks[0][1] < draw._num(report, t0 + 31), walks


def test_where_the_live_stream_says_what_the_wearer_did_the_strip_draws_it_there(influx, tmp_path):
    """The demo's 20 s walk from 09:00:52 to 09:01:11: 8 s in one minute (under WALK_MIN_S: no walk by the minutes)
    and 11 s in the next, the recording's last (29 s worn), drawn in that minute's middle, 09:01:24–09:01:36, after
    the wearer had sat down again; and the standing either side of it was in no minute's majority, so not drawn at
    all. The live stream's states say when: each 10 s bucket is drawn as most of its states were, over the minutes,
    and its walks are the walks, in a minute it covered as long as the minute was worn."""
    day, t0 = a_recent_day()
    device = "Desk"
    write_line_protocol(influx, DB, [
        f"posture_minute,device_id={device} worn_s=60,sitting_s=44,standing_s=8,walking_s=8,lying_s=0,slouch_s=0 "
        f"{int(t0 * 1000)}",
        f"posture_minute,device_id={device} worn_s=29,sitting_s=13,standing_s=5,walking_s=11,lying_s=0,slouch_s=0 "
        f"{int((t0 + 60) * 1000)}",
    ])
    activity = ["sitting"] * 44 + ["standing"] * 8 + ["walking"] * 19 + ["standing"] * 5 + ["sitting"] * 13
    write_live(influx, DB, "live", [f'posture_live,device_id={device} calibration="calibrated",activity="{a}",'
                                    f"flexion_deg=2,lateral_deg=0 {int((t0 + i) * 1000)}"
                                    for i, a in enumerate(activity)])
    settings = InfluxSettings(url=influx.url, database=DB, live_policy="live")
    report = cli.write_day_report(settings, device, day, tmp_path / "report.png", "UTC")

    assert [b.activity for b in report.live] == ["sitting"] * 4 + ["standing", "walking", "walking", "standing",
                                                                    "sitting"]
    assert report.walk_spans == [(t0 + 50, t0 + 70)]
    assert [m.activity for m in report.minutes] == ["sitting", "sitting"]

    def num(t_s: float) -> float:
        return draw._num(report, t_s)

    (walk,) = drawn_blocks(report, draw.COLOR["walking"])
    assert walk[0] <= num(t0 + 50) and num(t0 + 70) <= walk[1] and walk[1] < num(t0 + 84)
    standing = [(round(a, 9), round(b, 9)) for a, b in drawn_blocks(report, draw.COLOR["standing"])]
    assert standing == [(round(num(t0 + 40), 9), round(num(t0 + 50), 9)), (round(num(t0 + 70), 9),
                                                                          round(num(t0 + 80), 9))]


def test_a_day_the_clocks_go_back_labels_the_hour_that_repeats():
    """Europe/Berlin's 2026-10-25: 02:00 to 03:00 comes twice (CEST, then CET). The axis was ticked by the wall clock,
    which names each clock time once: 02:30, then 03:00 an hour and a half later, so a nap from 02:00 CET read as
    02:50. Ticks are now equal steps of time, each with its clock and abbreviation; a day without a change keeps the
    wall-clock ticks."""
    berlin = ZoneInfo("Europe/Berlin")
    start_s = datetime(2026, 10, 25, 1, 30, tzinfo=berlin).timestamp()  # CEST
    rows = DayRows(minutes=[minute(start_s + 60 * k) for k in range(180)])  # to 03:30 CET, three hours on
    report = build_day_report("Desk", date(2026, 10, 25), berlin, rows)
    ax = draw.figure(report).subfigs[0].axes[1]
    ticks = [(datetime.fromtimestamp(mdates.num2date(x).timestamp(), berlin), label.get_text())
             for x, label in zip(ax.get_xticks(), ax.xaxis.get_majorticklabels())]
    labels = [label.replace("\n", " ") for _, label in ticks]
    assert labels == ["01:30 CEST", "02:00 CEST", "02:30 CEST", "02:00 CET", "02:30 CET", "03:00 CET", "03:30 CET"]
    assert {b.timestamp() - a.timestamp() for (a, _), (b, _) in zip(ticks, ticks[1:])} == {1800.0}
    assert draw.clock_time(report, datetime(2026, 10, 25, 2, 10, tzinfo=berlin, fold=1).timestamp()) == "02:10:00 CET"
    # A few minutes that day still have a time on their axis (from 10-minute steps, none fell inside).
    short = build_day_report("Desk", date(2026, 10, 25), berlin,
                             DayRows(minutes=[minute(start_s + 12_000 + 60 * k) for k in range(5)]))
    ax = draw.figure(short).subfigs[0].axes[1]
    assert [label.get_text().replace("\n", " ") for label in ax.xaxis.get_majorticklabels()] == [
        "03:50 CET", "03:51 CET", "03:52 CET", "03:53 CET", "03:54 CET", "03:55 CET"]

    plain_start_s = datetime(2026, 10, 26, 1, 30, tzinfo=berlin).timestamp()
    plain = build_day_report("Desk", date(2026, 10, 26), berlin,
                             DayRows(minutes=[minute(plain_start_s + 60 * k) for k in range(180)]))
    ax = draw.figure(plain).subfigs[0].axes[1]
    assert isinstance(ax.xaxis.get_major_locator(), mdates.AutoDateLocator)
    assert "CET" not in draw.clock_time(plain, plain_start_s)
