"""Local servers from Debian's packages — Mosquitto, InfluxDB 1.6.7 — for `posture demo` and the tests.

Each one is a plain subprocess (no systemd, no docker) with its config, data and log in a work dir,
listening on free ports on 127.0.0.1 only. stop()/start() keep the port and the data dir, so a test
can take a server away and bring it back as a real outage would; kill() is a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any, Self, cast

from service_io import influx
from service_io.influx import InfluxSettings

HOST = "127.0.0.1"
PathLike = str | os.PathLike[str]


class ServerMissing(RuntimeError):
    """A binary is not installed; the message names the Debian package."""


class ServerError(RuntimeError):
    """A server did not come up, or answered a request with an error."""


class PortTaken(Exception):
    """The server exited because another process took its port between free_port() and its bind."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return cast(int, sock.getsockname()[1])


def which(binary: str, package: str) -> str:
    # mosquitto lives in /usr/sbin, which a non-root PATH often lacks.
    found = shutil.which(binary, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise ServerMissing(f"{binary} not found: apt-get install -y {package}")
    return found


def _die_with_parent() -> list[str]:
    """A command prefix: a test run killed hard must not leave servers behind holding ports.

    setpriv (util-linux, essential) rather than a preexec_fn, which is unsafe next to paho's threads.
    The signal follows the thread that started the server: start servers from the main thread.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _server_env() -> dict[str, str]:
    # INFLUXDB_* variables would override influxd's config file (e.g. INFLUXDB_HTTP_BIND_ADDRESS).
    return {key: value for key, value in os.environ.items() if not key.startswith("INFLUXDB_")}


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0,
         ) -> tuple[int, Message, bytes]:
    """One HTTP request; an error status is returned, not raised."""
    request = urllib.request.Request(url, body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class LocalServer:
    binary = ""
    package = ""
    scheme = "http"
    ready_timeout = 20.0

    def __init__(self, workdir: PathLike) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.log_path = self.workdir / f"{self.binary}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Runs before every start, so a restart picks up a changed config."""

    def _after_start(self) -> None:
        pass

    def _repick_ports(self) -> None:
        """New free ports, for a first start whose port another process took after free_port() let it go."""
        self.port = free_port()

    def start(self) -> Self:
        if self.running:
            return self
        for attempt in range(3):
            try:
                return self._start_once()
            except PortTaken:
                # Only before anyone knows the port: a restart must come back where its clients reconnect.
                if self.startup_seconds is not None or attempt == 2:
                    raise ServerError(f"{self.binary}: port taken:\n{self.log_tail()}") from None
                self._repick_ports()
        raise AssertionError("unreachable")

    def _start_once(self) -> Self:
        exe = which(self.binary, self.package)
        self._prepare()
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # appended, so a restart keeps the earlier runs' lines
            self.proc = subprocess.Popen(
                [*_die_with_parent(), exe, *self._args()], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir, env=_server_env(),
            )
        began = time.monotonic()
        while not self._ready():
            if self.proc.poll() is not None:
                with open(self.log_path, "rb") as log:
                    log.seek(logged)
                    if b"address already in use" in log.read().lower():
                        self.proc = None
                        raise PortTaken(self.binary)
                raise ServerError(f"{self.binary} exited ({self.proc.poll()}):\n{self.log_tail()}")
            if time.monotonic() - began > self.ready_timeout:
                self.kill()
                raise ServerError(f"{self.binary} not ready in {self.ready_timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - began
        self._after_start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: the server saves its state, as on a clean shutdown."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is saved on the way out."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Mosquitto ---------------------------------------------------------------------------------


def mqtt_connack(host: str, port: int, timeout: float = 1.0) -> int | None:
    """Send a bare MQTT 3.1.1 CONNECT; the CONNACK's return code (5 = not authorised), or None."""
    client_id = b"ready-probe"
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            reply = sock.makefile("rb").read(4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs no error
    except OSError:
        return None
    return reply[3] if len(reply) == 4 and reply[0] == 0x20 else None


class Mosquitto(LocalServer):
    """A broker on .port, anonymous (tests/support/servers.py adds accounts and TLS)."""

    binary = "mosquitto"
    package = "mosquitto"
    scheme = "mqtt"

    def __init__(self, workdir: PathLike) -> None:
        super().__init__(workdir)
        self.config_path = self.workdir / "mosquitto.conf"

    def config(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            # Saved every second, not only on SIGTERM, so kill() loses no more than a real crash would.
            "autosave_interval 1",
            # Mosquitto's default (1000) silently drops QoS 1 messages queued for a slow or offline
            # subscriber beyond it; docs/mqtt.md asks users for a large value, and so do the tests.
            "max_queued_messages 1000000",
            "set_tcp_nodelay true",  # as deploy/mosquitto/mosquitto.conf.example: replies without Nagle's wait
            # As root, mosquitto would drop to user "mosquitto", who cannot enter pytest's 0700 tmp dirs.
            "user root",
            "log_dest stderr",
            "log_timestamp_format %H:%M:%S",
            *self.access(),
        ]
        return "\n".join(lines) + "\n"

    def access(self) -> list[str]:
        """Who may connect, and on which further listeners."""
        return ["allow_anonymous true"]

    def _prepare(self) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        self.config_path.write_text(self.config())

    def _args(self) -> list[str]:
        return ["-c", str(self.config_path)]

    def _ready(self) -> bool:
        # Any CONNACK will do: with a password file the anonymous probe is refused, yet the broker is up.
        return mqtt_connack(self.host, self.port) is not None


# --- InfluxDB 1.6.7 ----------------------------------------------------------------------------

_INFLUX_CONFIG = """\
reporting-enabled = false
bind-address = "{host}:{rpc_port}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[http]
  bind-address = "{host}:{port}"
  auth-enabled = {auth}
  log-enabled = false
  max-row-limit = {max_row_limit}
[logging]
  suppress-logo = true
[ifql]
  enabled = false
""" + "".join(f"[[{name}]]\n  enabled = false\n" for name in ("graphite", "collectd", "opentsdb", "udp"))


class InfluxDB1(LocalServer):
    """InfluxDB 1.x without authentication (tests/support/servers.py has one with it)."""

    binary = "influxd"
    package = "influxdb"
    auth_enabled = False
    max_row_limit = 0  # [http] max-row-limit: 0 answers whole; many installations set one, which cuts answers short

    def __init__(self, workdir: PathLike) -> None:
        super().__init__(workdir)
        self.rpc_port = free_port()  # the backup/restore service, else 127.0.0.1:8088 for every instance
        self.config_path = self.workdir / "influxdb.conf"
        self.version: str | None = None

    def _repick_ports(self) -> None:
        super()._repick_ports()
        self.rpc_port = free_port()

    def _prepare(self) -> None:
        self.config_path.write_text(_INFLUX_CONFIG.format(
            host=self.host, port=self.port, rpc_port=self.rpc_port, workdir=self.workdir,
            auth=str(self.auth_enabled).lower(), max_row_limit=self.max_row_limit,
        ))

    def _args(self) -> list[str]:
        return ["run", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            status, headers, _ = http("GET", f"{self.url}/ping", timeout=1.0)
        except OSError:
            return False
        self.version = headers.get("X-Influxdb-Version")
        return status == 204 and self.version is not None

    def settings(self, db: str = "") -> InfluxSettings:
        """How a client reaches this server."""
        return InfluxSettings(url=self.url, api="v1", database=db)

    def query(self, q: str, db: str | None = None, *, epoch: str | None = "ms") -> dict[str, Any]:
        """The answer to one InfluxQL statement; any error in it raises ServerError."""
        try:
            result = influx.query(self.settings(db or ""), q, epoch=epoch)
        except influx.QueryError as exc:
            raise ServerError(f"influxdb query {q!r}: {exc}") from None
        errors = [r["error"] for r in result.get("results", []) if "error" in r]
        if "error" in result or errors:
            raise ServerError(f"influxdb query {q!r}: {result.get('error') or errors}")
        return result

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """A SELECT's rows as dicts, tags included, times in epoch ms; all series one after another."""
        series = self.query(q, db)["results"][0].get("series", [])
        return [dict(zip(s["columns"], values)) | s.get("tags", {}) for s in series for values in s["values"]]

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')
