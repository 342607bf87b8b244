"""Servers and files only the tests need: Mosquitto with accounts and TLS, InfluxDB with authentication and
raw line-protocol writes, VictoriaMetrics (a second line-protocol store, for the v2 write path), password
files and a throwaway TLS CA. The servers the product runs itself (`posture demo`) are in
posture/local_servers.py."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from posture.local_servers import InfluxDB1, LocalServer, Mosquitto, PathLike, ServerError, free_port, http, which
from service_io import influx
from service_io.influx import InfluxSettings


class SecuredMosquitto(Mosquitto):
    """A broker with accounts (password file, ACL); with tls={"cafile", "certfile", "keyfile"} also a TLS
    listener on .tls_port."""

    def __init__(self, workdir: PathLike, *, password_file: PathLike | None = None,
                 acl_file: PathLike | None = None, tls: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.password_file = password_file
        self.acl_file = acl_file
        self.tls = tls
        self.tls_port = free_port() if tls else None

    def _repick_ports(self) -> None:
        super()._repick_ports()
        self.tls_port = free_port() if self.tls else None

    def access(self) -> list[str]:
        lines = [f"allow_anonymous {'false' if self.password_file else 'true'}"]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            lines.append(f"listener {self.tls_port} {self.host}")
            lines += [f"{key} {self.tls[key]}" for key in ("cafile", "certfile", "keyfile")]
        return lines


class SecuredInfluxDB1(InfluxDB1):
    """InfluxDB 1.x with authentication on and an admin created at first start; clients go in as admin."""

    auth_enabled = True

    def __init__(self, workdir: PathLike, *, admin: tuple[str, str] = ("admin", "admin-secret")) -> None:
        super().__init__(workdir)
        self.admin = admin

    def _after_start(self) -> None:
        # With auth on and no user yet, 1.x lets one unauthenticated CREATE USER through; so only once.
        marker = self.workdir / "admin-created"
        if not marker.exists():
            user, password = self.admin
            self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
            marker.touch()

    def settings(self, db: str = "") -> InfluxSettings:
        user, password = self.admin
        return InfluxSettings(url=self.url, api="v1", database=db, username=user, password=password)


def write_line_protocol(server: InfluxDB1, db: str, lines: str | Iterable[str], precision: str = "ms") -> None:
    """Points written straight to the server, not through the bridge."""
    text = [lines] if isinstance(lines, str) else list(lines)
    try:
        influx.V1Writer(server.settings(db), precision).write(text)
    except influx.WriteError as exc:
        raise ServerError(f"influxdb write: {exc}") from None


def make_password_file(path: PathLike, users: dict[str, str]) -> Path:
    exe = which("mosquitto_passwd", "mosquitto")
    for index, (user, password) in enumerate(users.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([exe, "-b", *create, str(path), user, password], check=True, capture_output=True)
    return Path(path)


def make_test_ca(directory: PathLike) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, as Mosquitto's tls=."""
    openssl = which("openssl", "openssl")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=out, check=True, capture_output=True)

    # keyUsage on the CA: strict verifiers (OpenSSL's X509_STRICT, Python >= 3.13) demand it.
    run("req", "-x509", *ec, "-subj", "/CN=test CA", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-new", *ec, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    # Clients check 127.0.0.1 against an IP SAN; a CN alone satisfies none of them.
    (out / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.crt")
    return {key: str(out / name) for key, name in
            (("cafile", "ca.crt"), ("certfile", "server.crt"), ("keyfile", "server.key"))}


# --- VictoriaMetrics ---------------------------------------------------------------------------


class VictoriaMetrics(LocalServer):
    """Takes influx line protocol on /write and /api/v2/write.

    A line `m,tag=v f1=1,f2=2` becomes the series m_f1{tag="v"} and m_f2{tag="v"}; a `db` query
    argument (not v2's bucket or org, which are ignored) adds the label db="...".
    """

    binary = "victoria-metrics"
    package = "victoria-metrics"

    def _args(self) -> list[str]:
        return [
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            # The default of 1 month drops older points silently (still 204), e.g. replayed recordings.
            "-retentionPeriod=100y",
            # Fresh points are seen by queries as soon as can be, and no cached answer hides them.
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

    def _get(self, path: str, params: dict[str, str]) -> bytes:
        self.flush()
        status, _, body = http("GET", f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise ServerError(f"victoria-metrics {path}: HTTP {status}: {body.decode(errors='replace')}")
        return body

    def export(self, match: str) -> list[dict[str, Any]]:
        """Raw samples of every series matching a selector such as '{__name__="m_f"}', duplicates kept."""
        until = str(int(time.time()) + 2 * 86400)  # the default end is now, hiding points stamped later
        body = self._get("/api/v1/export", {"match[]": match, "start": "0", "end": until})
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant PromQL/MetricsQL query (at a unix time, default now); the result vector.

        Near now VM evaluates at least 1 s back, even with -search.latencyOffset=0s, so points
        younger than a second are not seen; export() has no such lag.
        """
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        return cast(list[dict[str, Any]], json.loads(self._get("/api/v1/query", params))["data"]["result"])
