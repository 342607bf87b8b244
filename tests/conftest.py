"""Fixtures that start real servers: a private dbus-daemon + BlueZoo, and the virtual sensor process.

A missing server binary fails the test with a message naming the package; nothing is skipped
(under CI=true that is the rule, and locally `make test` installs what is needed anyway).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware_sim.testbed import Testbed, TestbedError
from posture.local_servers import InfluxDB1, Mosquitto
from support.data import SHARED_DATA
from support.mqtt import DB, start_or_fail


@pytest.fixture
def shared_data() -> Path:
    """shared/data beside the repository: data for tests that nobody here made."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the shared/ folder must sit beside the repository")
    return SHARED_DATA


@pytest.fixture
def testbed(tmp_path, monkeypatch):
    for binary, package in (("dbus-daemon", "dbus"), ("dbus-send", "dbus"), ("bluetoothctl", "bluez")):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} missing: apt-get install {package} (make test installs it)")
    try:
        bed = Testbed(adapters=3, workdir=tmp_path / "ble").start()
    except TestbedError as exc:
        pytest.fail(str(exc))
    # bleak and our discovery read the system bus address from the environment.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bed.bus_address)
    yield bed
    bed.stop()


@dataclass
class SimProcess:
    proc: subprocess.Popen
    name: str
    truth: Path
    log: Path

    def summary(self) -> dict:
        lines = [ln for ln in self.log.read_text().splitlines() if ln.startswith("{")]
        return json.loads(lines[-1])

    def wait(self, timeout_s: float) -> dict:
        self.proc.wait(timeout_s)
        return self.summary()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def start_sim(testbed, tmp_path):
    """Start `posture sim` on hci1 (or another adapter) of the testbed; returns a SimProcess."""
    started: list[SimProcess] = []

    def start(*args: str, adapter: str = "hci1", name: str = "TestSensor", profile: str = "native",
              scenario: str = "stream-test", seed: int = 7) -> SimProcess:
        truth = tmp_path / f"truth-{name}-{len(started)}.csv"
        log = tmp_path / f"sim-{name}-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "posture.cli", "-v", "sim", "--adapter", adapter, "--name", name,
             "--profile", profile, "--scenario", scenario, "--seed", str(seed), "--truth", str(truth), *args],
            env=testbed.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        sim = SimProcess(proc, name, truth, log)
        started.append(sim)
        _wait_for_log(sim, "advertising", 15)
        return sim

    yield start
    for sim in started:
        sim.stop()


def _wait_for_log(sim: SimProcess, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in sim.log.read_text():
            return
        if sim.proc.poll() is not None:
            pytest.fail(f"posture sim exited early:\n{sim.log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"posture sim did not log {text!r} in {timeout_s} s:\n{sim.log.read_text()}")



@pytest.fixture
def broker(tmp_path):
    server = start_or_fail(Mosquitto(tmp_path / "mosquitto"))
    yield server
    server.kill()


@pytest.fixture
def influx(tmp_path):
    server = start_or_fail(InfluxDB1(tmp_path / "influxdb"))
    server.create_database(DB)
    yield server
    server.kill()


@dataclass
class FilledInflux:
    """An InfluxDB holding a scenario's results: what dashboards and the report are tested on."""
    influx: InfluxDB1
    database: str
    device: str
    start_s: float
    end_s: float


CHAIN_TIMEOUT_S = 900  # the first test to ask for chain_influx waits for the whole scenario (about 5 min)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        if "chain_influx" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(CHAIN_TIMEOUT_S))
            # One xdist worker runs every test of the filled chain: the session fixture is built once.
            item.add_marker(pytest.mark.xdist_group("chain"))
    items.sort(key=_slowness)


# Longest first (xdist hands out work in collection order with --no-loadscope-reorder, as `make test` runs it), so
# no worker starts a five-minute group while the others run out of work: the groups by their wall time, then the
# modules whose tests each stream real time over BlueZoo or run a chain of real servers.
SLOW_GROUPS = ("chain", "live-chain", "accuracy-days", "accuracy-named", "broad")
SLOW_MODULES = ("test_ble_stream", "test_bluez_tools", "test_mqtt_influx", "test_alerts_partitions",
                "test_bridge_sharing", "test_alerts_service")


def _slowness(item: pytest.Item) -> int:
    if (group := item.get_closest_marker("xdist_group")) is not None and group.args[0] in SLOW_GROUPS:
        return SLOW_GROUPS.index(group.args[0])
    module = item.path.stem
    return len(SLOW_GROUPS) + (SLOW_MODULES.index(module) if module in SLOW_MODULES else len(SLOW_MODULES))


GROUPS_IGNORED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """Under --dist loadgroup each grouped test's id must carry its group, or xdist spreads the group over
    workers without a word: each builds the group's expensive fixtures again, and the suite doubles in time."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items
            if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid]
    if lost:
        session.config.stash[GROUPS_IGNORED] = (
            f"pytest-xdist ignored the xdist_group of {len(lost)} tests (e.g. {lost[0]}): this pytest and "
            "pytest-xdist do not agree; see the pin in pyproject.toml")


def pytest_runtest_setup(item):
    if (why := item.config.stash.get(GROUPS_IGNORED, None)) is not None:
        pytest.fail(why, pytrace=False)


@pytest.fixture(scope="session")
def chain_influx(tmp_path_factory):
    """InfluxDB 1.6.7 filled by the whole chain as `posture demo` runs it: the virtual BLE sensor playing
    office-demo, posture run, Mosquitto, posture bridge, posture alerts (demo thresholds)."""
    from posture.chain import DATABASE, DEVICE, Chain, ChainError
    from posture.local_servers import ServerError, ServerMissing

    chain = Chain(tmp_path_factory.mktemp("chain"))
    start_s = time.time()
    try:
        chain.start()
        deadline = time.monotonic() + 480
        while not chain.sensor_done():
            if (failed := chain.failed()) is not None:
                pytest.fail(f"posture {failed} stopped:\n{chain.log(failed)[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the virtual sensor did not finish office-demo in 8 min:\n" + chain.log("gateway")[-2000:])
            time.sleep(1.0)
        chain.finish()
    except (ServerMissing, ServerError, ChainError, TestbedError) as exc:
        chain.close()
        pytest.fail(str(exc))
    except BaseException:
        chain.close()
        raise
    chain.close(keep_influx=True)
    yield FilledInflux(chain.influx, DATABASE, DEVICE, start_s, time.time())
    chain.influx.kill()
