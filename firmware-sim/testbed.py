"""A private BLE world: a dbus-daemon on a socket in a temp dir plus BlueZoo serving org.bluez on it.

Used by the tests, `make demo` and the benchmarks. Nothing here touches the machine's real
system bus: every process started gets DBUS_SYSTEM_BUS_ADDRESS pointing at the private bus.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Enough policy for a private bus: anyone connected may own names and talk to anyone.
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="max_connections_per_user">1000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
</busconfig>
"""


class TestbedError(RuntimeError):
    """A server the testbed needs is missing or did not come up."""


def adapter_address(index: int) -> str:
    return f"C0:FF:EE:00:{index // 256:02X}:{index % 256:02X}"


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise TestbedError(f"{binary} not found: {hint}")
    return path


def bluezoo_command() -> list[str]:
    """BlueZoo with the reconnect fix in firmware_sim.bluezoo_fixes, on this interpreter."""
    if importlib.util.find_spec("bluezoo") is None:
        raise TestbedError("BlueZoo is not installed: pip install bluezoo (it is in the test extras)")
    return [sys.executable, "-m", "firmware_sim.bluezoo_fixes"]


class Testbed:
    """dbus-daemon + BlueZoo with ``adapters`` virtual adapters hci0..hciN-1 that see each other."""

    def __init__(self, adapters: int = 2, workdir: str | os.PathLike | None = None,
                 scan_interval_s: int = 1):
        self.n_adapters = adapters
        self.scan_interval_s = scan_interval_s
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="posture-testbed-"))
        self.bus_address = ""
        self._procs: list[subprocess.Popen] = []
        self._socket_dir: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for a child that should use this private bus as its system bus."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}

    def start(self) -> Testbed:
        dbus_daemon = _require("dbus-daemon", "apt-get install dbus (make test does this)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # dbus-daemon refuses socket paths of 100 characters or more ("Socket name too long"),
        # which a deep workdir (pytest's tmp_path) reaches: the socket lives in a short dir of its own.
        self._socket_dir = tempfile.mkdtemp(prefix="ptb-")
        socket = Path(self._socket_dir) / "bus"
        config = self.workdir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=socket))
        # Its only complaint as non-systemd root (fd limit) goes to the log, not the user's terminal.
        daemon = subprocess.Popen([dbus_daemon, f"--config-file={config}", "--nofork", "--print-address"],
                                  stdout=subprocess.PIPE, stderr=open(self.workdir / "dbus.log", "w"), text=True)
        self._procs.append(daemon)
        self.bus_address = daemon.stdout.readline().strip()
        if not self.bus_address:
            self.stop()
            log = (self.workdir / "dbus.log").read_text().strip().splitlines()
            raise TestbedError(f"dbus-daemon did not print its address: {log[-1] if log else 'no log'}")
        self._start_bluez("w")
        return self

    def _start_bluez(self, mode: str) -> None:
        log = open(self.workdir / "bluezoo.log", mode)
        cmd = [*bluezoo_command(), "--auto-enable", "--scan-interval", str(self.scan_interval_s)]
        for i in range(self.n_adapters):
            cmd += ["-a", adapter_address(i)]
        self._procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log))
        self._wait_for_adapters()

    def restart_bluez(self) -> None:
        """BlueZ killed and started again, as bluetoothd after a crash or an upgrade: its objects are new ones (the
        peripherals registered on it are gone with it)."""
        bluez = self._procs.pop()
        bluez.kill()
        bluez.wait()
        self._start_bluez("a")

    def _wait_for_adapters(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = f"hci{self.n_adapters - 1}"
        while time.monotonic() < deadline:
            if self._procs[-1].poll() is not None:
                raise TestbedError(f"BlueZoo exited: see {self.workdir / 'bluezoo.log'}")
            probe = subprocess.run(
                ["dbus-send", f"--bus={self.bus_address}", "--print-reply", "--dest=org.bluez",
                 f"/org/bluez/{last}", "org.freedesktop.DBus.Properties.Get",
                 "string:org.bluez.Adapter1", "string:Powered"],
                capture_output=True, text=True)
            if probe.returncode == 0 and "true" in probe.stdout:
                return
            time.sleep(0.1)
        self.stop()
        raise TestbedError(f"BlueZoo adapters did not come up in {timeout_s} s")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self._procs.clear()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
