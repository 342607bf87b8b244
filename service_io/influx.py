"""The one InfluxDB client: line protocol in (the bridge), InfluxQL out (the report, the test servers).

Writes take the v2 API (2.x, 3.x, 1.8+) or v1 `/write` (1.x before 1.8); `/ping`'s
X-Influxdb-Version header decides, unless the config names the API. The v2 path is
influxdb-client's. InfluxDB older than 1.8 (Debian's 1.6.7) has only the v1 API (`/write`,
`/query`), which influxdb-client does not speak and whose own Python client (`influxdb`) has been
unmaintained since 2020, so those HTTP requests are written here, once (`v1_request`).

A write that fails says why, as one of three: the server is down or overloaded (WriteError: try again
later), it refused the points themselves (PointsRefused: 400, sending them again will not help), or
our settings do not work with it (SettingsError: credentials, database, bucket, URL; the message names
the key). A 1.x database that does not exist is created on the first write, as Telegraf does.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol, cast

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

log = logging.getLogger("posture.influx")
TIMEOUT_S = 10.0


class InfluxError(RuntimeError):
    """InfluxDB did not do what was asked (down, refused, bad credentials); the message names no secret."""


class WriteError(InfluxError):
    """The database did not store the points; as itself: it is down or overloaded, try again later."""


class PointsRefused(WriteError):
    """The server refused the points themselves (unparsable, a field type conflict, a time out of range): the
    same points will be refused again. In a batch, 1.x stores the others (a "partial write")."""


class SettingsError(WriteError):
    """The server answered, but the settings do not work with it (credentials, database, bucket, URL): the
    message names the key to fix."""


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
        return f"InfluxSettings(url={redact(self.url)!r}, api={self.api!r}, database={self.database!r})"


def redact(url: str) -> str:
    """The URL as it may be printed: `http://user:secret@host` → `http://***@host`."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def _endpoint(settings: InfluxSettings) -> tuple[str, str, str]:
    """(base URL without user:password@, user, password): credentials in the URL work as influx.username and
    influx.password do, and never reach a library that might print the URL."""
    parts = urllib.parse.urlsplit(settings.url)
    if parts.username is None:
        return settings.url.rstrip("/"), settings.username, settings.password
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    return bare.rstrip("/"), settings.username or user, settings.password or password


class Writer(Protocol):
    def write(self, lines: list[str]) -> None: ...

    def close(self) -> None: ...


def server_version(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ping", timeout=TIMEOUT_S) as reply:
            return cast(str, reply.headers.get("X-Influxdb-Version", ""))
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a URL urllib cannot read
        raise WriteError(f"InfluxDB at {redact(url)} did not answer /ping: {_reason(exc)}") from None


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
        api = "v1" if needs_v1(server_version(_endpoint(settings)[0])) else "v2"
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
    base, user, password = _endpoint(settings)
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    headers = {"Accept": "application/json"} if body is None else {"Content-Type": "text/plain; charset=utf-8"}
    if user:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif settings.token:
        headers["Authorization"] = f"Token {settings.token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, bytes(exc.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a URL urllib cannot read
        raise InfluxError(f"InfluxDB at {redact(base)} did not answer {path}: {_reason(exc)}") from None


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
        raise QueryError(f"InfluxDB /query at {redact(settings.url)} answered {status}: {_error_text(answer, body)}")
    if not isinstance(answer, dict):
        raise QueryError(f"InfluxDB at {redact(settings.url)}: /query did not answer JSON")
    return answer


def write_failure(settings: InfluxSettings, where: str, status: int, reason: str) -> WriteError:
    """What an HTTP error status on a write means: an outage, refused points, or settings to fix (named)."""
    said = f"InfluxDB {where} at {redact(settings.url)} answered {status} ({reason})"
    if status in (401, 403):
        who = "influx.username and influx.password" if settings.username else "influx.token (or credentials)"
        return SettingsError(f"{said}: check {who}, and that the user may write to influx.database")
    if status == 404:
        if "database not found" in reason:
            return SettingsError(f"{said}: influx.database {settings.database!r} does not exist")
        if "bucket" in reason:
            key = "influx.bucket" if settings.bucket else "influx.database"
            return SettingsError(f"{said}: {key} {settings.bucket or settings.database!r} does not exist")
        if "organization" in reason:
            return SettingsError(f"{said}: influx.org {settings.org!r} does not exist")
        return SettingsError(f"{said}: check influx.url and influx.api")
    if status in (408, 429) or not 400 <= status < 500:  # a timeout, too many requests, a server error
        return WriteError(said)
    return PointsRefused(reason)


def create_database(settings: InfluxSettings) -> None:
    """CREATE DATABASE (1.x; a no-op when it exists). A user who may not: SettingsError naming the key."""
    name = settings.database.replace("\\", "\\\\").replace('"', '\\"')
    try:
        status, body = v1_request(dataclasses.replace(settings, database=""), "POST", "/query",
                                  {"q": f'CREATE DATABASE "{name}"'})
    except InfluxError as exc:
        raise WriteError(str(exc)) from None  # down between the write and this: an outage
    try:
        answer = json.loads(body or b"{}")
    except json.JSONDecodeError:
        answer = None
    results = answer.get("results", []) if isinstance(answer, dict) else []
    error = _error_text(answer, body) if status != 200 else next((r["error"] for r in results if "error" in r), "")
    if status >= 500:
        raise WriteError(f"InfluxDB /query at {redact(settings.url)} answered {status} ({error})")
    if error:
        raise SettingsError(f"influx.database {settings.database!r} does not exist at {redact(settings.url)} and "
                            f"could not be created ({str(error)[:200]}): create it, or name one that exists")
    log.info("created InfluxDB database %r at %s", settings.database, redact(settings.url))


class V1Writer:
    def __init__(self, settings: InfluxSettings, precision: str = "ms"):
        _require_database(settings)
        self.settings = settings
        self.params = {"db": settings.database, "precision": precision}

    def write(self, lines: list[str]) -> None:
        status, reason = self._post(lines)
        if status == 404 and "database not found" in reason:  # a fresh server: make the database, once
            create_database(self.settings)
            status, reason = self._post(lines)
        if status != 204:
            raise write_failure(self.settings, "/write", status, reason)

    def _post(self, lines: list[str]) -> tuple[int, str]:
        try:
            status, body = v1_request(self.settings, "POST", "/write", self.params, "\n".join(lines).encode())
        except InfluxError as exc:
            raise WriteError(str(exc)) from None
        try:
            answer = json.loads(body or b"{}")
        except json.JSONDecodeError:
            answer = None
        return status, _error_text(answer, body) if status != 204 else ""

    def close(self) -> None:
        pass


class V2Writer:
    def __init__(self, settings: InfluxSettings):
        _require_database(settings)
        self.settings = settings
        self.bucket = settings.bucket or settings.database
        self.org = settings.org
        base, user, password = _endpoint(settings)
        token = settings.token or (f"{user}:{password}" if user else "")  # 1.8: "user:password" is the token
        self._client = InfluxDBClient(url=base, token=token, org=settings.org, timeout=int(TIMEOUT_S * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        status, reason = self._post(lines)
        if status == 404 and "database not found" in reason:  # InfluxDB 1.8 through its v2 API: a 1.x database
            create_database(self.settings)
            status, reason = self._post(lines)
        if status:
            raise write_failure(self.settings, "/api/v2/write", status, reason)

    def _post(self, lines: list[str]) -> tuple[int, str]:
        """(0, "") when written, else the HTTP status and the server's reason."""
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=lines,
                            write_precision=WritePrecision.MS)  # type: ignore[arg-type]  # its members are str
        except ApiException as exc:
            reason = str(getattr(exc, "message", None) or exc.reason or "no reason given").splitlines()[0]
            return int(exc.status or 0) or 599, redact(reason)[:200]
        except Exception as exc:  # influxdb-client lets urllib3 and socket errors through
            raise WriteError(f"InfluxDB /api/v2/write at {redact(self.settings.url)} failed: {_reason(exc)}") from None
        return 0, ""

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # influxdb-client: unannotated


def _require_database(settings: InfluxSettings) -> None:
    """Without one, every write would be refused (400 "database is required") and look like bad points."""
    if not (settings.database or settings.bucket):
        raise SettingsError("influx.database is empty: name the database (or influx.bucket) to write to")


def _error_text(answer: Any, raw: bytes) -> str:
    """The first line of InfluxDB's own `error`, else of the raw answer."""
    text = answer.get("error") if isinstance(answer, dict) and answer.get("error") else raw.decode(errors="replace")
    return str(text).splitlines()[0][:200] if str(text).strip() else "no reason given"


def _reason(exc: BaseException) -> str:
    """A one-line reason without URLs' credentials or tokens."""
    text = str(getattr(exc, "reason", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(text)[:200]
