"""`posture demo`'s output: the live-state line rewritten in place on a terminal, held back in a log, and
the other lines never mixed into it."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from posture.demo import Console, _describe, describe_live, live_key

T_MS = 1_764_000_000_000  # sensor time of the samples below


def live(**fields) -> dict:
    return {"schema": 1, "kind": "live", "device": "PostureDemo", "ts": T_MS, "t_s": T_MS / 1000,
            "calibration": "calibrated", "flexion_deg": 4.2, "lateral_deg": -1.0, "rotation_deg": 0.0,
            "activity": "sitting"} | fields


def screen(text: str) -> list[str]:
    """What a terminal shows for the text written: \\r returns to the line's start, ESC[K erases to its end."""
    lines = [""]
    column = 0
    for token in re.findall(r"\r|\n|\x1b\[K|[^\r\n\x1b]+", text):
        if token == "\r":
            column = 0
        elif token == "\n":
            lines.append("")
            column = 0
        elif token == "\x1b[K":
            lines[-1] = lines[-1][:column]
        else:
            lines[-1] = lines[-1][:column] + token + lines[-1][column + len(token):]
            column += len(token)
    return lines


def test_live_line_says_time_activity_flexion_slouching_and_calibration():
    since_s = T_MS / 1000 - 42
    text = describe_live(live(flexion_deg=23.6, slouching_since_s=since_s))
    assert re.fullmatch(r"\d\d:\d\d:\d\d  now       sitting, flexion \+24°, slouching since \d\d:\d\d:\d\d \(42 s\), "
                        r"calibrated", text), text
    assert describe_live(live()).endswith("sitting, flexion +4°, upright, calibrated")
    bare = describe_live(live(calibration="uncalibrated", flexion_deg=None, activity=None))
    assert bare.endswith("now       –, flexion –, uncalibrated")
    leaning = describe_live(live(leaning_since_s=T_MS / 1000 - 5, lean_side="right"))
    assert "upright, leaning right since " in leaning


def test_on_a_terminal_the_live_line_is_rewritten_in_place_and_other_lines_go_above_it(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = io.StringIO()
    console = Console(out, terminal=True)
    console.live("09:00:01  now       sitting, flexion +4°, upright, calibrated", key=1)
    console.live("09:00:02  now       sitting, flexion +5°, upright, calibrated", key=1)
    console.line("09:00:02  slouch     under way (confirmed after 5 s)")
    console.live("09:00:03  now       sitting, flexion +25°, slouching since 09:00:00 (3 s), calibrated", key=2)
    assert screen(out.getvalue()) == ["09:00:02  slouch     under way (confirmed after 5 s)",
                                      "09:00:03  now       sitting, flexion +25°, slouching since 09:00:00 (3 s), "
                                      "calibrated"]
    console.line("scenario over")
    console.close()  # the last state stays, as a line of its own
    assert screen(out.getvalue()) == ["09:00:02  slouch     under way (confirmed after 5 s)", "scenario over",
                                      "09:00:03  now       sitting, flexion +25°, slouching since 09:00:00 (3 s), "
                                      "calibrated", ""]
    assert console.live_text == ""


def test_on_a_narrow_terminal_the_live_line_is_cut_not_wrapped(monkeypatch):
    """A wrapped line would leave its first row behind when rewritten."""
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    console = Console(out, terminal=True)
    console.live("x" * 100, key=1)
    console.live("y" * 100, key=1)
    assert screen(out.getvalue()) == ["y" * 39]


def test_in_a_log_the_live_line_comes_on_a_change_or_every_30_s():
    now = [0.0]
    out = io.StringIO()
    console = Console(out, terminal=False, clock=lambda: now[0])
    for second in range(70):  # a state a second, the same state for 70 s: three lines, 30 s apart
        now[0] = float(second)
        console.live(f"t={second}", key=("sitting", "calibrated", False))
    now[0] = 70.5
    console.live("slouching", key=("sitting", "calibrated", True))  # a change: at once
    console.line("an event")
    console.close()
    assert out.getvalue() == "t=0\nt=30\nt=60\nslouching\nan event\n"
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_live_key_is_the_discrete_state():
    assert live_key(live(flexion_deg=3.0)) == live_key(live(flexion_deg=9.0))  # angles alone: no new line
    assert live_key(live()) != live_key(live(slouching_since_s=1.0))
    assert live_key(live()) != live_key(live(activity="standing"))
    assert live_key(live()) != live_key(live(calibration="recalibrate"))
    assert live_key(live()) != live_key(live(leaning_since_s=1.0, lean_side="left"))


def test_episode_start_is_an_event_line():
    line = _describe("events", {"kind": "episode_start", "ts": T_MS, "episode": "lean", "side": "right",
                                "confirmed_after_s": 3.0, "start_s": T_MS / 1000})
    assert line is not None and line.endswith("lean      under way right (confirmed after 3 s)")


def _running_with(text: str) -> list[str]:
    """Command lines of the processes that name `text` (a work dir) in theirs."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not a process
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_a_demo_killed_stops_every_process_it_started(tmp_path):
    """Killed (SIGTERM; SIGHUP, a closed terminal, is handled the same) the demo died alone: the bridge, the alert
    service, the gateway, the sensor, dbus-daemon and BlueZoo went on running for good (a newcomer's probe)."""
    workdir = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "posture.cli", "demo", "--seconds", "300",
                             "--workdir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        # Running once the gateway is (the bridge, the alert service, dbus-daemon, the sensor, posture run).
        while len(_running_with(str(workdir))) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert len(_running_with(str(workdir))) >= 5, proc.poll()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 20
    while (left := _running_with(str(workdir))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left


def test_the_summary_is_this_runs_not_the_databases(influx):
    """`posture demo --workdir DIR` a second time keeps the first run's points in its InfluxDB: the summary counted
    both runs' minutes and alerts as this one's (worn 10 min for a 5-minute run)."""
    from posture.demo import summary_lines
    from support.mqtt import DB
    from support.servers import write_line_protocol

    first_s, second_s = 1_764_000_000 // 60 * 60, 1_764_000_000 // 60 * 60 + 3600  # the second run an hour later
    lines = [f"posture_minute,device_id=PostureDemo worn_s=60,sitting_s=60,slouch_s={slouch} {int(t * 1000)}"
             for start_s, slouch in ((first_s, 60), (second_s, 15)) for t in range(start_s, start_s + 300, 60)]
    lines += [f'posture_alert,device_id=PostureDemo,kind={kind},severity=info alert_id="{kind}",text="t" '
              f"{int(t * 1000)}" for kind, t in (("slouch", first_s + 120), ("sitting", second_s + 240))]
    write_line_protocol(influx, DB, lines)
    said = summary_lines(lambda q: influx.rows(q, DB), second_s + 20)  # started 20 s into its first minute
    assert said[0] == "  worn 5.0 min, sitting 5.0 min, slouched 1.2 min (25% of worn time)"
    assert said[2] == "  alerts 1: sitting"
    assert summary_lines(lambda q: influx.rows(q, DB), second_s + 600) == []  # nothing of a run yet: said so


def test_a_scenario_the_sensor_cannot_read_is_one_line_before_anything_starts(tmp_path):
    """`posture demo --scenario office-dmeo` (a typo) started Mosquitto, InfluxDB, BlueZoo and every service, ran 40 s
    with no sensor, said "scenario over" and ended "nothing reached InfluxDB" with exit code 1; why was in sim.log."""
    workdir = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "posture.cli", "demo", "--scenario", "office-dmeo",
                           "--workdir", str(workdir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.startswith("posture demo: cannot read scenario 'office-dmeo'")
    assert "office-demo" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not workdir.exists()  # nothing was started


def test_a_negative_demo_length_is_refused():
    """`--seconds -1` started every server and the sensor and stopped them at once, with nothing to show."""
    done = subprocess.run([sys.executable, "-m", "posture.cli", "demo", "--seconds", "-1"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "argument --seconds: 0 (the scenario's end) or more seconds, got '-1'" in done.stderr


def test_the_last_line_says_how_to_read_the_data_once_the_demo_has_ended(influx):
    """The demo printed "all of it stays in InfluxDB … at http://127.0.0.1:… until the demo ends" as it ended: the
    address answered nothing by then. The line now gives the command that serves the work dir's data again."""
    import json
    import shlex
    import urllib.parse
    import urllib.request

    from posture.demo import kept_line
    from support.mqtt import DB
    from support.servers import write_line_protocol

    write_line_protocol(influx, DB, ["posture_minute,device_id=PostureDemo worn_s=60 1764000000000"])
    influx.stop()
    said = kept_line(influx)
    assert str(influx.workdir) in said and "'posture'" in said and influx.url in said
    command = shlex.split(said.split("`")[1])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = urllib.parse.urlencode({"db": DB, "q": "SELECT worn_s FROM posture_minute"})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{influx.url}/query?{query}", timeout=2) as answer:
                    rows = json.load(answer)["results"][0]["series"][0]["values"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the command said did not serve the data again"
                time.sleep(0.2)
        assert [value for _, value in rows] == [60]
    finally:
        server.kill()
        server.wait(10)
