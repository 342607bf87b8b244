"""The one InfluxDB client: line protocol in (the bridge), InfluxQL out (the report, the test servers).

Writes take the v2 API (2.x, 3.x, 1.8+) or v1 `/write` (1.x before 1.8); `/ping`'s
X-Influxdb-Version header decides, unless the config names the API. The v2 path is
influxdb-client's. InfluxDB older than 1.8 (Debian's 1.6.7) has only the v1 API (`/write`,
`/query`), which influxdb-client does not speak and whose own Python client (`influxdb`) has been
unmaintained since 2020, so those HTTP requests are written here, once (`v1_request`).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol, cast

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

TIMEOUT_S = 10.0


class InfluxError(RuntimeError):
    """InfluxDB did not do what was asked (down, refused, bad credentials); the message names no secret."""


class WriteError(InfluxError):
    """The database did not store the points."""


class QueryError(InfluxError):
    """The database did not answer the query."""


@dataclass(frozen=True)
class InfluxSettings:
    url: str = "http://127.0.0.1:8086"
    api: str = "auto"  # "auto" (ask /ping), "v1" (/write) or "v2" (/api/v2/write)
    database: str = "posture"  # v1 database; for v2, the bucket when `bucket` is empty
    bucket: str = ""
    org: str = "-"
    token: str = ""  # v2 token; for 1.8+ compatibility "user:password"
    username: str = ""  # v1
    password: str = ""  # v1

    def __repr__(self) -> str:  # never print secrets
        return f"InfluxSettings(url={self.url!r}, api={self.api!r}, database={self.database!r})"


class Writer(Protocol):
    def write(self, lines: list[str]) -> None: ...

    def close(self) -> None: ...


def server_version(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ping", timeout=TIMEOUT_S) as reply:
            return cast(str, reply.headers.get("X-Influxdb-Version", ""))
    except (urllib.error.URLError, OSError) as exc:
        raise WriteError(f"InfluxDB at {url} did not answer /ping: {_reason(exc)}") from None


def needs_v1(version: str) -> bool:
    """True for 1.x before 1.8, which has no /api/v2/write."""
    parts = version.lstrip("v").split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return False  # 3.x and others may not send a plain version: they speak v2
    return major == 1 and minor < 8


def make_writer(settings: InfluxSettings) -> Writer:
    api = settings.api
    if api == "auto":
        api = "v1" if needs_v1(server_version(settings.url)) else "v2"
    if api == "v1":
        return V1Writer(settings)
    if api == "v2":
        return V2Writer(settings)
    raise ValueError(f"influx.api must be auto, v1 or v2, not {api!r}")


def v1_request(settings: InfluxSettings, method: str, path: str, params: dict[str, str],
               body: bytes | None = None, timeout_s: float = TIMEOUT_S) -> tuple[int, bytes]:
    """One request to the v1 API: (status, body). An HTTP error status is returned; an unreachable
    server raises InfluxError. 1.x users go in basic auth; a 2.x token (or 1.8's "user:password") in
    the Token header."""
    url = f"{settings.url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    headers = {"Accept": "application/json"} if body is None else {"Content-Type": "text/plain; charset=utf-8"}
    if settings.username:
        pair = base64.b64encode(f"{settings.username}:{settings.password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif settings.token:
        headers["Authorization"] = f"Token {settings.token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, bytes(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        raise InfluxError(f"InfluxDB at {settings.url} did not answer {path}: {_reason(exc)}") from None


def query(settings: InfluxSettings, q: str, *, epoch: str | None = "ms",
          timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """An InfluxQL statement on settings.database over `/query`: its JSON. GET for reads, POST for the
    rest (1.x wants POST for statements that change things). A statement's own error stays in the
    answer (`results[i].error`) for the caller to word; HTTP errors and silence raise QueryError."""
    statement = q.lstrip().upper()
    reads = statement.startswith("SHOW") or (statement.startswith("SELECT") and " INTO " not in statement)
    method = "GET" if reads else "POST"
    params = {"q": q} | ({"db": settings.database} if settings.database else {}) | ({"epoch": epoch} if epoch else {})
    try:
        status, body = v1_request(settings, method, "/query", params, timeout_s=timeout_s)
    except InfluxError as exc:
        raise QueryError(str(exc)) from None
    try:
        answer = json.loads(body or b"{}")
    except json.JSONDecodeError:
        answer = None
    if status != 200:
        raise QueryError(f"InfluxDB /query at {settings.url} answered {status}: {_error_text(answer, body)}")
    if not isinstance(answer, dict):
        raise QueryError(f"InfluxDB at {settings.url}: /query did not answer JSON")
    return answer


class V1Writer:
    def __init__(self, settings: InfluxSettings, precision: str = "ms"):
        self.settings = settings
        self.params = {"db": settings.database, "precision": precision}

    def write(self, lines: list[str]) -> None:
        try:
            status, body = v1_request(self.settings, "POST", "/write", self.params, "\n".join(lines).encode())
        except InfluxError as exc:
            raise WriteError(str(exc)) from None
        if status != 204:
            raise WriteError(f"InfluxDB /write answered {status}: {body[:200].decode(errors='replace')}")

    def close(self) -> None:
        pass


class V2Writer:
    def __init__(self, settings: InfluxSettings):
        self.bucket = settings.bucket or settings.database
        self.org = settings.org
        self._client = InfluxDBClient(url=settings.url, token=settings.token, org=settings.org,
                                      timeout=int(TIMEOUT_S * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=lines,
                            write_precision=WritePrecision.MS)  # type: ignore[arg-type]  # its members are str
        except Exception as exc:  # influxdb-client raises ApiException, urllib3 and socket errors
            raise WriteError(f"InfluxDB /api/v2/write failed: {_reason(exc)}") from None

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # influxdb-client: unannotated


def _error_text(answer: Any, raw: bytes) -> str:
    """The first line of InfluxDB's own `error`, else of the raw answer."""
    text = answer.get("error") if isinstance(answer, dict) and answer.get("error") else raw.decode(errors="replace")
    return str(text).splitlines()[0][:200] if str(text).strip() else "no reason given"


def _reason(exc: BaseException) -> str:
    """A one-line reason without URLs' credentials or tokens."""
    text = str(getattr(exc, "reason", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
