"""`posture <cmd> --help` and argument parsing import only what parsing needs (issue 14).

Each subcommand's heavy modules load when it runs; here, in a fresh interpreter per subcommand,
the help is printed and nothing heavy may be in sys.modules afterwards. Nothing is timed: what
--help costs is measured by hand (docs/benchmarks.md), what it imports is held here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware_sim import cli as sim_cli
from firmware_sim.profiles import PROFILE_NAMES

COMMANDS = ("sim", "scan", "record", "replay", "run", "bridge", "alerts", "report", "demo")

# Third-party libraries that take from tens of milliseconds (numpy) to a second (scipy.signal, matplotlib)
# to load, and our modules that bring them in.
HEAVY = ("numpy", "scipy", "vqf", "paho", "bleak", "bleak_retry_connector", "dbus_fast", "influxdb_client",
         "matplotlib", "tqdm", "fastjsonschema", "pipeline", "service_io.config", "service_io.influx",
         "service_io.mqtt", "gateway.service", "bridge.service", "alerts.service", "replay.replay", "posture.demo")

# Runs `posture ARGS` as the console script does, then lists the modules loaded.
PROBE = """
import contextlib, io, json, sys
from posture.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def loaded_by(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def heavy_in(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_imports_nothing_heavy(command):
    probe = loaded_by(command, "--help")
    assert probe["code"] == 0 and probe["help"].startswith(f"usage: posture {command}")
    assert heavy_in(probe["modules"]) == []


def test_top_level_help_lists_every_command_and_imports_nothing_heavy():
    probe = loaded_by("--help")
    assert probe["code"] == 0
    assert all(f"    {command} " in probe["help"] for command in COMMANDS)
    assert heavy_in(probe["modules"]) == []


def test_a_command_that_runs_loads_its_modules(tmp_path):
    """The checks above are not vacuous: run (here on a missing file), replay loads the pipeline."""
    probe = loaded_by("replay", str(tmp_path / "missing.csv"))
    assert probe["code"] == 2  # one line on stderr: the file is missing
    assert {"numpy", "scipy", "pipeline", "replay.replay", "service_io.config"} <= set(heavy_in(probe["modules"]))


# The signal stack: seconds of imports (scipy.signal alone about 0.8 s here) that a service restarted after a crash
# waits for before it reads its first message.
SIGNAL_STACK = ("scipy", "vqf")


@pytest.mark.parametrize("service", ("bridge.service", "alerts.service", "report.day", "report.query"))
def test_services_that_read_messages_start_without_the_signal_stack(service):
    """The bridge, the alert service and the report read the pipeline's messages, not its signals: its vocabulary
    (pipeline/events.py) and the config load no scipy or vqf (they did: 1.2 and 1.8 s to import)."""
    probe = f"import json, sys, {service}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)
    assert service in modules
    assert [m for m in modules if m.split(".")[0] in SIGNAL_STACK] == []


def test_sim_profile_choices_are_the_simulators_profiles():
    """`posture sim --profile` (and `posture demo --profile`) list the profiles without importing them."""
    assert sim_cli.PROFILE_NAMES == PROFILE_NAMES
