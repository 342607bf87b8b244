"""The whole product on one machine with no hardware: what `posture demo` runs and the dashboard tests fill from.

In a work dir: Mosquitto and InfluxDB (Debian's packages, on free ports), a private dbus-daemon
with BlueZoo, the virtual sensor on hci1, and the real services as processes — `posture bridge`,
`posture alerts` (demo thresholds), `posture run` on hci0. Closing the Chain stops every process
it started, in the order that loses nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from contract.influx_schema import MEASUREMENT
from firmware_sim.testbed import Testbed

from .local_servers import InfluxDB1, Mosquitto

DEVICE = "PostureDemo"
DATABASE = "posture"


class ChainError(RuntimeError):
    pass


class Chain:
    def __init__(self, workdir: Path, scenario: str = "office-demo", profile: str = "native", seed: int = 3,
                 rules: Path | None = None, settings: dict[str, dict[str, Any]] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scenario, self.profile, self.seed = scenario, profile, seed
        self.rules = rules or Path(str(resources.files("posture") / "demo_rules.toml"))
        self.broker = Mosquitto(self.workdir / "mosquitto")
        self.influx = InfluxDB1(self.workdir / "influxdb")
        self.testbed: Testbed | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config = self.workdir / "posture.toml"
        self.settings = settings or {}  # config keys beyond the chain's own, by section: {"gateway": {"live_hz": 2.0}}

    # start ----------------------------------------------------------------------------
    def start(self) -> Chain:
        """Servers, then the services that must hold a session before data flows, then sensor and gateway."""
        self.broker.start()
        self.influx.start()
        self.influx.create_database(DATABASE)
        self._write_config()
        self._service("bridge", "bridge")
        self._service("alerts", "alerts")
        for name in ("bridge", "alerts"):
            self._wait_for_log(name, "connected to MQTT", 30)
        self.testbed = Testbed(adapters=2, workdir=self.workdir / "ble").start()
        self._service("sim", "sim", "--adapter", "hci1", "--name", DEVICE, "--profile", self.profile,
                      "--scenario", self.scenario, "--seed", str(self.seed), "--truth", str(self.workdir / "truth.csv"),
                      env=self.testbed.env)
        self.start_gateway()
        return self

    def start_gateway(self) -> None:
        assert self.testbed is not None  # start() brings the BLE testbed up first
        self._service("gateway", "run", "--sensor", DEVICE, "--adapter", "hci0", env=self.testbed.env)

    def kill(self, name: str) -> None:
        """kill -9 of one service (a crash): it saves nothing and says goodbye to no one."""
        self.procs[name].kill()
        self.procs[name].wait(10)

    def _write_config(self) -> None:
        w = self.workdir
        sections: dict[str, dict[str, Any]] = {
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port},
            "influx": {"url": self.influx.url, "database": DATABASE},
            "bridge": {"spool_path": str(w / "bridge.spool"), "flush_interval_s": 0.2},
            "gateway": {"spool_dir": str(w / "gateway-spool")},
            "alerts": {"state_path": str(w / "alerts.db"), "rules_path": str(self.rules)},
        }
        for name, values in self.settings.items():
            sections.setdefault(name, {}).update(values)
        self.config.write_text("\n".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                                         for name, values in sections.items()))

    def _service(self, name: str, command: str, *args: str, env: dict[str, str] | None = None) -> None:
        config = [] if command == "sim" else ["--config", str(self.config)]
        log = open(self.workdir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", command, *config, *args],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def _wait_for_log(self, name: str, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.1)
        raise ChainError(f"posture {name} did not start; its log ({self.workdir / (name + '.log')}):\n"
                         + self.log(name)[-1500:])

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # run ------------------------------------------------------------------------------
    def sensor_done(self) -> bool:
        return self.procs["sim"].poll() is not None

    def sensor_failed(self) -> bool:
        """The virtual sensor ended with an error (its log says which), not at its scenario's end."""
        return self.procs["sim"].poll() not in (None, 0)

    def failed(self) -> str | None:
        """The name of a service that died on its own, if any."""
        return next((n for n, p in self.procs.items() if n != "sim" and p.poll() not in (None, 0)), None)

    def finish(self, timeout_s: float = 60.0) -> None:
        """Stop the sensor and the gateway (it flushes the unfinished minute), let bridge and alerts
        take in the rest, then stop them too."""
        self._stop("sim", 10)
        self._stop("gateway", timeout_s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.rows(
                f"SELECT online FROM {MEASUREMENT['status']} WHERE device_id = '{DEVICE}' AND online = false"):
            time.sleep(0.2)  # the gateway's last word: everything it sent before is stored too
        time.sleep(2.0)  # the alert service decides on the last minute; the bridge stores that alert
        self._stop("alerts", 15)
        time.sleep(0.5)
        self._stop("bridge", 15)

    def rows(self, query: str) -> list[dict[str, Any]]:
        return self.influx.rows(query, DATABASE)

    def _stop(self, name: str, timeout_s: float) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self, keep_influx: bool = False) -> None:
        for name in ("sim", "gateway", "alerts", "bridge"):
            self._stop(name, 10)
        if self.testbed is not None:
            self.testbed.stop()
        self.broker.kill()
        if not keep_influx:
            self.influx.kill()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
