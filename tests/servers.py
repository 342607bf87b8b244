"""Real servers for tests, run from Debian's packages: Mosquitto, InfluxDB 1.6.7 and VictoriaMetrics.

Each one is a plain subprocess (no systemd, no docker) with its config, data and log in a work dir,
listening on free ports on 127.0.0.1 only. stop()/start() keep the port and the data dir, so a test
can take a server away and bring it back as a real outage would; kill() is a crash.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from email.message import Message
from pathlib import Path

HOST = "127.0.0.1"


class ServerMissing(RuntimeError):
    """A server binary is not installed; the message names the Debian package."""


class ServerError(RuntimeError):
    """A server did not come up, or answered a request with an error."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def which(binary: str, package: str) -> str:
    # mosquitto lives in /usr/sbin, which a non-root PATH often lacks.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(binary, path=path)
    if found is None:
        raise ServerMissing(f"{binary} not found: apt-get install -y {package}")
    return found


def _die_with_parent() -> None:
    # A test run killed hard (timeout, ^C twice) must not leave servers behind holding ports.
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, Message, bytes]:
    """One HTTP request; an error status is returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class _Server:
    binary = ""
    package = ""
    ready_timeout = 20.0

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.log_path = self.workdir / f"{self.binary}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files; called before every start so a restart picks up changes."""

    def _after_start(self) -> None:
        pass

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> _Server:
        if self.running:
            return self
        exe = which(self.binary, self.package)
        self._prepare()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, *self._args()], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=self._env(), preexec_fn=_die_with_parent,
            )
        began = time.monotonic()
        while not self._ready():
            if self.proc.poll() is not None:
                raise ServerError(f"{self.binary} exited ({self.proc.returncode}) on start:\n{self.log_tail()}")
            if time.monotonic() - began > self.ready_timeout:
                self.kill()
                raise ServerError(f"{self.binary} not ready after {self.ready_timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - began
        self._after_start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM): servers flush their data, as on a clean shutdown."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """A crash (SIGKILL): nothing is flushed."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> _Server:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Mosquitto ---------------------------------------------------------------------------------


def mqtt_connack(host: str, port: int, timeout: float = 1.0) -> int | None:
    """Send a bare MQTT 3.1.1 CONNECT; return the CONNACK code (5 = not authorised) or None."""
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


class Mosquitto(_Server):
    binary = "mosquitto"
    package = "mosquitto"

    def __init__(
        self, workdir: str | os.PathLike[str], *, password_file: str | os.PathLike[str] | None = None,
        acl_file: str | os.PathLike[str] | None = None, tls: dict[str, str] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.password_file = password_file
        self.acl_file = acl_file
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.config_path = self.workdir / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            # Save every second, not only on SIGTERM, so kill() loses no more than a real crash would.
            "autosave_interval 1",
            # As root, mosquitto would drop to user "mosquitto", who cannot enter pytest's 0700 tmp dirs.
            "user root",
            "log_dest stderr",
            "log_timestamp_format %H:%M:%S",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
        ]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            lines.append(f"listener {self.tls_port} {self.host}")
            lines += [f"{key} {self.tls[key]}" for key in ("cafile", "certfile", "keyfile")]
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        self.config_path.write_text(self.config())

    def _args(self) -> list[str]:
        return ["-c", str(self.config_path)]

    def _ready(self) -> bool:
        # Any CONNACK counts: with a password file the anonymous probe is refused, yet the broker is up.
        return mqtt_connack(self.host, self.port) is not None


def make_password_file(path: str | os.PathLike[str], users: dict[str, str]) -> Path:
    exe = which("mosquitto_passwd", "mosquitto")
    for index, (user, password) in enumerate(users.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([exe, "-b", *create, str(path), user, password], check=True, capture_output=True)
    return Path(path)


def make_test_ca(directory: str | os.PathLike[str]) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, in Mosquitto's tls form."""
    openssl = which("openssl", "openssl")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=out, check=True, capture_output=True)

    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-new", *ec, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    # Python checks 127.0.0.1 against the IP SAN; the CN alone is not enough for any TLS client.
    (out / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.crt")
    return {"cafile": str(out / "ca.crt"), "certfile": str(out / "server.crt"), "keyfile": str(out / "server.key")}


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
[logging]
  suppress-logo = true
[ifql]
  enabled = false
[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
"""


class InfluxDB1(_Server):
    binary = "influxd"
    package = "influxdb"

    def __init__(
        self, workdir: str | os.PathLike[str], *, auth_enabled: bool = False,
        admin: tuple[str, str] = ("admin", "admin-secret"),
    ) -> None:
        super().__init__(workdir)
        self.rpc_port = free_port()  # backup/restore service, 127.0.0.1:8088 by default
        self.auth_enabled = auth_enabled
        self.admin = admin
        self.config_path = self.workdir / "influxdb.conf"
        self.version: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> None:
        auth = "true" if self.auth_enabled else "false"
        self.config_path.write_text(_INFLUX_CONFIG.format(
            host=self.host, port=self.port, rpc_port=self.rpc_port, workdir=self.workdir, auth=auth))

    def _args(self) -> list[str]:
        return ["run", "-config", str(self.config_path)]

    def _env(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file (e.g. INFLUXDB_HTTP_BIND_ADDRESS).
        return {key: value for key, value in os.environ.items() if not key.startswith("INFLUXDB_")}

    def _ready(self) -> bool:
        try:
            status, headers, _ = http("GET", f"{self.url}/ping", timeout=1.0)
        except OSError:
            return False
        self.version = headers.get("X-Influxdb-Version")
        return status == 204 and self.version is not None

    def _after_start(self) -> None:
        # With auth on and no user yet, 1.x lets one unauthenticated CREATE USER through; only once.
        if self.auth_enabled and not (self.workdir / "admin-created").exists():
            user, password = self.admin
            self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
            (self.workdir / "admin-created").touch()

    def _params(self, **params: str | None) -> str:
        if self.auth_enabled:
            params["u"], params["p"] = self.admin
        return urllib.parse.urlencode({key: value for key, value in params.items() if value is not None})

    def query(self, q: str, db: str | None = None, *, epoch: str | None = "ms") -> dict:
        """GET /query for reads, POST for the rest (1.x wants POST for statements that change things)."""
        read = q.lstrip().upper().startswith(("SELECT", "SHOW"))
        status, _, body = http("GET" if read else "POST", f"{self.url}/query?{self._params(q=q, db=db, epoch=epoch)}")
        result = json.loads(body or b"{}")
        errors = [r["error"] for r in result.get("results", []) if "error" in r]
        if status != 200 or "error" in result or errors:
            raise ServerError(f"influxdb query {q!r}: HTTP {status}: {result.get('error') or errors}")
        return result

    def rows(self, q: str, db: str) -> list[dict]:
        """The rows of a SELECT as dicts (times in epoch ms), all series concatenated."""
        out = []
        for series in self.query(q, db)["results"][0].get("series", []):
            out += [dict(zip(series["columns"], values)) | series.get("tags", {}) for values in series["values"]]
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write_line_protocol(self, db: str, lines: str | Iterable[str], precision: str = "ms") -> None:
        text = lines if isinstance(lines, str) else "\n".join(lines)
        url = f"{self.url}/write?{self._params(db=db, precision=precision)}"
        status, _, body = http("POST", url, text.encode())
        if status != 204:
            raise ServerError(f"influxdb write: HTTP {status}: {body.decode(errors='replace')}")


# --- VictoriaMetrics ---------------------------------------------------------------------------


class VictoriaMetrics(_Server):
    """Accepts influx line protocol on /write and /api/v2/write.

    A line `m,tag=v f1=1,f2=2` becomes the series m_f1{tag="v"} and m_f2{tag="v"}; a `db` query
    argument (not v2's bucket or org, which are ignored) adds the label db="...".
    """

    binary = "victoria-metrics"
    package = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _args(self) -> list[str]:
        return [
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            # The default 1 month silently drops older points (still 204), e.g. replayed recordings.
            "-retentionPeriod=100y",
            # Fresh points are visible to queries at once, and no cached answer hides them.
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]

    def _ready(self) -> bool:
        try:
            status, _, body = http("GET", f"{self.url}/health", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body.strip() == b"OK"

    def flush(self) -> None:
        """Make ingested points searchable now; VM buffers them for a second or two otherwise."""
        http("GET", f"{self.url}/internal/force_flush")

    def export(self, match: str) -> list[dict]:
        """Raw samples of every series matching a selector, e.g. '{__name__="m_f"}'; duplicates kept."""
        self.flush()
        params = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(int(time.time()) + 2 * 86400)})
        status, _, body = http("GET", f"{self.url}/api/v1/export?{params}")
        if status != 200:
            raise ServerError(f"victoria-metrics export: HTTP {status}: {body.decode(errors='replace')}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def query(self, promql: str) -> list[dict]:
        """An instant PromQL/MetricsQL query at now; the result vector."""
        self.flush()
        status, _, body = http("GET", f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        if status != 200:
            raise ServerError(f"victoria-metrics query: HTTP {status}: {body.decode(errors='replace')}")
        return json.loads(body)["data"]["result"]
