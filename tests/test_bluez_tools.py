"""The virtual sensor seen by BlueZ's own bluetoothctl, and the `posture scan` / `posture record` CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from firmware_sim.testbed import adapter_address
from sensor.record import CSV_COLUMNS, read_samples_csv

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x01\x02]")


def bluetoothctl(env: dict, commands: list[tuple[str, float]]) -> str:
    """Drive interactive bluetoothctl as a person would: a command, then a pause for the answer."""
    proc = subprocess.Popen(["bluetoothctl"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for command, wait_s in commands:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        time.sleep(wait_s)
    return ANSI.sub("", proc.communicate(timeout=15)[0])


def test_bluetoothctl_sees_advertisement_and_lists_services(testbed, start_sim):
    start_sim(name="CtlSensor", profile="witmotion", scenario="sit-upright")
    sensor = adapter_address(1)
    out = bluetoothctl(testbed.env, [
        (f"select {adapter_address(0)}", 1), ("scan on", 3), ("scan off", 0.5), ("devices", 0.5),
        (f"connect {sensor}", 3), ("menu gatt", 0.5), (f"list-attributes {sensor}", 1), ("back", 0.5),
        (f"disconnect {sensor}", 1), ("quit", 0.5)])
    assert f"Device {sensor} CtlSensor" in out
    assert "Connected: yes" in out
    for uuid in ("0000ffe5-0000-1000-8000-00805f9a34fb", "0000ffe4-0000-1000-8000-00805f9a34fb",
                 "0000ffe9-0000-1000-8000-00805f9a34fb", "0000180f-0000-1000-8000-00805f9b34fb",
                 "0000180a-0000-1000-8000-00805f9b34fb"):
        assert uuid in out, f"bluetoothctl did not list {uuid}"


def test_scan_and_record_cli(testbed, start_sim, tmp_path):
    start_sim(name="CliSensor", profile="thingy52", scenario="sit-upright")
    posture = [sys.executable, "-m", "posture.cli"]
    scan = subprocess.run([*posture, "scan", "--adapter", "hci0", "--timeout", "3"], env=testbed.env,
                          capture_output=True, text=True, timeout=60)
    assert scan.returncode == 0, scan.stderr
    line = next(ln for ln in scan.stdout.splitlines() if "CliSensor" in ln)
    assert adapter_address(1) in line and "thingy52" in line

    out = tmp_path / "rec.csv"
    rec = subprocess.run([*posture, "record", "--adapter", "hci0", "--name", "CliSensor", "--seconds", "5",
                          "--out", str(out)], env=testbed.env, capture_output=True, text=True, timeout=90)
    assert rec.returncode == 0, rec.stderr
    assert out.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    samples = read_samples_csv(out)
    assert 450 <= len(samples["t_s"]) <= 560
    # Sitting upright with the sensor on the back: about 1 g in total, and little rotation.
    acc = np.column_stack([samples["acc_x_g"], samples["acc_y_g"], samples["acc_z_g"]])
    assert np.allclose(np.linalg.norm(acc, axis=1).mean(), 1.0, atol=0.03)
    assert abs(samples["t_s"][0] - time.time()) < 120


def test_replay_of_a_file_recorded_over_ble(testbed, start_sim, tmp_path):
    """office-short begins with the calibration moves and slouches from ~22 s to ~42 s."""
    start_sim(name="ReplaySensor", profile="native", scenario="office-short")
    posture = [sys.executable, "-m", "posture.cli"]
    rec = subprocess.run([*posture, "record", "--adapter", "hci0", "--name", "ReplaySensor", "--seconds", "50",
                          "--out", str(tmp_path / "rec.csv")], env=testbed.env, capture_output=True, text=True,
                         timeout=120)
    assert rec.returncode == 0, rec.stderr
    out = tmp_path / "events.jsonl"
    replay = subprocess.run([*posture, "replay", str(tmp_path / "rec.csv"), "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    summary = json.loads(replay.stdout)
    assert summary["calibration"].startswith("calibrated with a")
    events = [json.loads(line) for line in out.read_text().splitlines()]
    slouches = [e for e in events if e["kind"] == "slouch"]
    assert len(slouches) == 1 and 14 <= slouches[0]["end_s"] - slouches[0]["start_s"] <= 22


def test_no_d_bus_is_one_line_that_says_so(tmp_path):
    """Without the D-Bus system bus (dbus not running) `posture scan` and `posture run` said only
    "[Errno 2] No such file or directory"."""
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"}
    for command in (["scan", "--timeout", "1"], ["run"], ["sim", "--scenario", "stream-test"]):
        run = subprocess.run([sys.executable, "-m", "posture.cli", *command], capture_output=True, text=True,
                             timeout=60, env=env, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "D-Bus system bus" in lines[0] and "no-bus" in lines[0], run.stderr


def test_the_virtual_sensor_on_an_adapter_bluez_lacks_is_one_line(testbed, tmp_path):
    """`posture sim --adapter hci7` printed a traceback ending in dbus_fast's "Unknown object '/org/bluez/hci7'"."""
    run = subprocess.run([sys.executable, "-m", "posture.cli", "sim", "--adapter", "hci7", "--scenario", "stream-test"],
                         capture_output=True, text=True, timeout=60, env=testbed.env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "hci7" in lines[0] and "bluetoothctl list" in lines[0], run.stderr
