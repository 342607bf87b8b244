"""The one InfluxDB client: line protocol in (the bridge), InfluxQL out (the report, the test servers).

Writes take the v2 API (2.x, 3.x, 1.8+) or v1 `/write` (1.x before 1.8); `/ping`'s
X-Influxdb-Version header decides, unless the config names the API. The v2 path is
influxdb-client's. InfluxDB older than 1.8 (Debian's 1.6.7) has only the v1 API (`/write`,
`/query`), which influxdb-client does not speak and whose own Python client (`influxdb`) has been
unmaintained since 2020, so those HTTP requests are written here, once (`v1_request`).

A write that fails says why, as one of three: the server is down or overloaded (WriteError: try again
later), it refused the points themselves (PointsRefused: 400, sending them again will not help), or
our settings do not work with it (SettingsError: credentials, database, bucket, URL; the message names
the key). A 1.x database that does not exist is created on the first write, as Telegraf does, and so is
the retention policy live points go to (`influx.live_policy`, kept `influx.live_retention`). A live policy or
bucket the settings cannot reach is not asked for again before RETRY_LIVE_SETTINGS_S.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

log = logging.getLogger("posture.influx")
TIMEOUT_S = 10.0
# A live policy or bucket the settings cannot reach (a user who may not create the policy, a 2.x bucket not made)
# waits on a person — an administrator creating it or granting the right — which takes minutes, not the 0.2 s
# between the bridge's flushes. Asking every flush would cost InfluxDB a /write and a CREATE RETENTION POLICY (and
# its log an error each), up to 5 times a second, for points dropped anyway; asked once a minute, the live stream
# loses at most a minute once it is fixed, and the server sees two refused requests a minute.
RETRY_LIVE_SETTINGS_S = 60.0


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


# A 4xx that means "not now" (a timeout, too many requests): an outage, as a 5xx or no answer, not a refusal.
NOT_NOW_STATUSES = (408, 429)


class QueryError(InfluxError):
    """The database did not answer the query: `status` is its HTTP status (an error's, or 200 with an answer that is
    not JSON), None when it did not answer at all (down: an outage, not a refusal)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


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
    # The live stream (about a point a second per device) is kept apart and for a week, not for ever: a 1.x
    # retention policy the bridge creates, or on the v2 API a bucket (empty: <database>/<live_policy>, which
    # 1.8 reads as that policy; 2.x/3.x have no policies, so there a bucket with its own retention is named).
    live_policy: str = "live"  # empty: the database's default policy
    live_retention: str = "7d"  # an InfluxQL duration (at least 1h, InfluxDB's least) or INF
    live_bucket: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"InfluxSettings(url={redact(self.url)!r}, api={self.api!r}, database={self.database!r})"


def live_bucket(settings: InfluxSettings) -> str:
    """The v2 bucket live points go to: influx.live_bucket, else `<database>/<live_policy>` (1.8's name for a
    database's retention policy), else the default bucket."""
    if settings.live_bucket:
        return settings.live_bucket
    if settings.live_policy:
        return f"{settings.database or settings.bucket}/{settings.live_policy}"
    return settings.bucket or settings.database


_DURATION_PART = re.compile(r"(\d+)(ns|us|µs|u|µ|ms|s|m|h|d|w)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "u": 1e-6, "µ": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
           "d": 86400.0, "w": 604800.0}


def duration_s(text: str) -> float | None:
    """An InfluxQL duration (`7d`, `1h30m`; also InfluxDB's own `168h0m0s`) in seconds; INF and 0 (keep for ever)
    are math.inf. None: not a duration."""
    text = text.strip()
    if text.upper() == "INF":
        return math.inf
    if not text or _DURATION_PART.sub("", text):
        return None
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
    return seconds or math.inf


def redact(url: str) -> str:
    """The URL as it may be printed: `http://user:secret@host` → `http://***@host` (`user:secret@host`, with no
    scheme, → `***@host`)."""
    return re.sub(r"(^|//)[^/@]*@", r"\1***@", url)


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


# What an InfluxDB that did not answer raises in urllib. ValueError: a URL urllib cannot read. HTTPException: an answer
# cut off (IncompleteRead: InfluxDB killed while it sent a chunked one, which ended the bridge's thread), or no HTTP.
NO_ANSWER = (urllib.error.URLError, OSError, ValueError, http.client.HTTPException)


def server_version(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ping", timeout=TIMEOUT_S) as reply:
            return cast(str, reply.headers.get("X-Influxdb-Version", ""))
    except NO_ANSWER as exc:
        raise WriteError(f"InfluxDB at {redact(url)} did not answer /ping: {_reason(exc)}") from None


def needs_v1(version: str) -> bool:
    """True for 1.x before 1.8, which has no /api/v2/write."""
    parts = version.lstrip("v").split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return False  # 3.x and others may not send a plain version: they speak v2
    return major == 1 and minor < 8


def make_writer(settings: InfluxSettings, live: bool = False) -> Writer:
    """A writer to the database (its default retention policy) or, live, to the live points' policy or bucket."""
    api = settings.api
    if api == "auto":
        api = "v1" if needs_v1(server_version(_endpoint(settings)[0])) else "v2"
    if api == "v1":
        return V1Writer(settings, live=live)
    if api == "v2":
        return V2Writer(settings, live=live)
    raise ValueError(f"influx.api must be auto, v1 or v2, not {api!r}")


def v1_request(settings: InfluxSettings, method: str, path: str, params: dict[str, str],
               body: bytes | None = None, timeout_s: float = TIMEOUT_S,
               deadline: float | None = None, content_type: str = "text/plain; charset=utf-8") -> tuple[int, bytes]:
    """One request to the v1 API: (status, body). An HTTP error status is returned; an unreachable
    server raises InfluxError. 1.x users go in basic auth; a 2.x token (or 1.8's "user:password") in
    the Token header. timeout_s bounds each read; `deadline` (time.monotonic()), if given, the whole answer."""
    base, user, password = _endpoint(settings)
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    headers = {"Accept": "application/json"} if body is None else {"Content-Type": content_type}
    if user:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif settings.token:
        headers["Authorization"] = f"Token {settings.token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    if deadline is not None:
        timeout_s = max(min(timeout_s, deadline - time.monotonic()), 0.001)
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                return int(reply.status), _read_by(reply, deadline)
        except urllib.error.HTTPError as exc:
            return exc.code, _read_by(exc, deadline)  # its body too may come too slowly
    except NO_ANSWER as exc:
        raise InfluxError(f"InfluxDB at {redact(base)} did not answer {path}: {_reason(exc)}") from None


def _read_by(reply: Any, deadline: float | None) -> bytes:
    """The body, read by `deadline`: a socket's timeout is per read, so a server sending a byte now and then held
    its reader for ever."""
    if deadline is None:
        return bytes(reply.read())
    parts = []
    while part := reply.read1(64 * 1024):  # what one read brings: read(n) would wait for all n bytes
        parts.append(part)
        if time.monotonic() > deadline:
            raise TimeoutError("its answer was still coming when the time allowed ran out")
    return b"".join(parts)


def query(settings: InfluxSettings, q: str, *, epoch: str | None = "ms",
          timeout_s: float = TIMEOUT_S, deadline: float | None = None, in_body: bool = False) -> dict[str, Any]:
    """An InfluxQL statement on settings.database over `/query`: its JSON. GET for reads, POST for the
    rest (1.x wants POST for statements that change things). A statement's own error stays in the
    answer (`results[i].error`) for the caller to word; HTTP errors and silence raise QueryError, and so does an
    answer unfinished at `deadline` (time.monotonic()). `in_body`: POSTed as a form, for a statement that may be long
    (a GET's URL is limited: InfluxDB 1.x answers 431 past 1 MB, a proxy often 414 past 8 KB)."""
    statement = q.lstrip().upper()
    reads = statement.startswith("SHOW") or (statement.startswith("SELECT") and " INTO " not in statement)
    method = "GET" if reads and not in_body else "POST"
    params = ({"db": settings.database} if settings.database else {}) | ({"epoch": epoch} if epoch else {})
    form = urllib.parse.urlencode({"q": q}).encode() if in_body else None
    params = params if in_body else {"q": q} | params
    try:
        status, body = v1_request(settings, method, "/query", params, form, timeout_s=timeout_s, deadline=deadline,
                                  content_type="application/x-www-form-urlencoded")
    except InfluxError as exc:
        raise QueryError(str(exc)) from None
    try:
        answer = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # not JSON; or an integer past int()'s 4300 digits, nesting past the parser's
        answer = None
    if status != 200:
        raise QueryError(f"InfluxDB /query at {redact(settings.url)} answered {status}: {_error_text(answer, body)}",
                         status)
    if not isinstance(answer, dict):  # status 200: it answered, with something else (a proxy's page): not an outage
        raise QueryError(f"InfluxDB at {redact(settings.url)}: /query did not answer JSON", status)
    return answer


def write_failure(settings: InfluxSettings, where: str, status: int, reason: str, live: bool = False) -> WriteError:
    """What an HTTP error status on a write means: an outage, refused points, or settings to fix (named)."""
    said = f"InfluxDB {where} at {redact(settings.url)} answered {status} ({reason})"
    if live and NO_POLICY in reason:  # still, after the bridge tried to create it
        return SettingsError(f"{said}: influx.live_policy {settings.live_policy!r} does not exist on "
                             f"influx.database {settings.database!r}")
    if NO_POLICY in reason:  # the database's default policy dropped (`DROP RETENTION POLICY autogen`): 1.x answers 500
        return SettingsError(f"{said}: influx.database {settings.database!r} has no default retention policy: "
                             f"make one (CREATE RETENTION POLICY \"autogen\" ON {_ident(settings.database)} "
                             f"DURATION INF REPLICATION 1 DEFAULT)")
    if status in (401, 403):
        # What was sent is what was refused: a user (influx.username, or in the URL) went as basic auth, else a token
        # (on /write too: 2.x's v1 API and 1.8 take "Token …"); with neither, 1.x's /write wants the pair.
        if _endpoint(settings)[1] or (where == "/write" and not settings.token):
            who = "influx.username and influx.password"
        else:
            who = "influx.token (or influx.username and influx.password)"
        return SettingsError(f"{said}: check {who}, and that the user may write to influx.database")
    if status == 404:
        if "database not found" in reason:
            return SettingsError(f"{said}: influx.database {settings.database!r} does not exist")
        if "bucket" in reason and live:
            return SettingsError(f"{said}: influx.live_bucket {live_bucket(settings)!r} does not exist: on "
                                 f"InfluxDB 2.x/3.x create a bucket for live points (7 d retention) and name it there")
        if "bucket" in reason:
            key = "influx.bucket" if settings.bucket else "influx.database"
            return SettingsError(f"{said}: {key} {settings.bucket or settings.database!r} does not exist")
        if "organization" in reason:
            return SettingsError(f"{said}: influx.org {settings.org!r} does not exist")
        return SettingsError(f"{said}: check influx.url and influx.api")
    if status in NOT_NOW_STATUSES or not 400 <= status < 500:  # not now, a server error, or an answer not asked for
        return WriteError(said)
    return PointsRefused(reason)


def create_database(settings: InfluxSettings) -> None:
    """CREATE DATABASE (1.x; a no-op when it exists). A user who may not: SettingsError naming the key."""
    _, error = _statement(settings, f"CREATE DATABASE {_ident(settings.database)}")
    if error:
        raise SettingsError(f"influx.database {settings.database!r} does not exist at {redact(settings.url)} and "
                            f"could not be created ({str(error)[:200]}): create it, or name one that exists")
    log.info("created InfluxDB database %r at %s", settings.database, redact(settings.url))


NO_POLICY = "retention policy not found"  # 1.x's answer to a write to a policy that does not exist


def _statement(settings: InfluxSettings, q: str) -> tuple[list[dict[str, Any]], str]:
    """One InfluxQL statement that must be done now, on behalf of a write: (its results, its error or "").
    Silence or a 5xx is an outage (WriteError)."""
    try:
        status, body = v1_request(dataclasses.replace(settings, database=""), "POST", "/query", {"q": q})
    except InfluxError as exc:
        raise WriteError(str(exc)) from None  # down between the write and this: an outage
    try:
        answer = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # as in query()
        answer = None
    results = answer.get("results", []) if isinstance(answer, dict) else []
    error = _error_text(answer, body) if status != 200 else next((r["error"] for r in results if "error" in r), "")
    if status >= 500:
        raise WriteError(f"InfluxDB /query at {redact(settings.url)} answered {status} ({error})")
    return results, str(error)


def create_retention_policy(settings: InfluxSettings) -> bool:
    """CREATE RETENTION POLICY influx.live_policy DURATION influx.live_retention (1.x), when a write found none:
    True if made, False if it exists after all. A user who may not: SettingsError naming the key."""
    policy, duration = _ident(settings.live_policy), settings.live_retention.strip()
    _, error = _statement(settings, f"CREATE RETENTION POLICY {policy} ON {_ident(settings.database)} "
                                    f"DURATION {duration} REPLICATION 1")
    if error and "already exists" not in error:  # exists (made meanwhile, differently): check_retention_policy says
        raise SettingsError(f"influx.live_policy {settings.live_policy!r} does not exist on influx.database "
                            f"{settings.database!r} at {redact(settings.url)} and could not be created "
                            f"({error[:200]}): create it (DURATION {duration}), or name one that exists")
    if error:
        return False
    # Said at the default log level: it changes the user's database, and they should find why.
    log.warning("created InfluxDB retention policy %r on %r (influx.live_policy, DURATION %s) for live points",
                settings.live_policy, settings.database, duration)
    return True


def check_retention_policy(settings: InfluxSettings) -> None:
    """Says once in the log if the live policy exists with a duration other than influx.live_retention: it is left
    as it is (someone chose it). Best effort: a server or user that cannot answer SHOW is not asked again."""
    try:
        results, error = _statement(settings, f"SHOW RETENTION POLICIES ON {_ident(settings.database)}")
    except WriteError:
        return
    series = results[0].get("series", []) if results and not error else []
    for s in series:
        for row in s.get("values", []):
            policy = dict(zip(s.get("columns", []), row))
            if policy.get("name") != settings.live_policy:
                continue
            have, want = duration_s(str(policy.get("duration", ""))), duration_s(settings.live_retention)
            if have != want:
                log.warning("InfluxDB retention policy %r on %r keeps live points %s, not influx.live_retention %s: "
                            "left as it is (ALTER RETENTION POLICY to change it)", settings.live_policy,
                            settings.database, policy.get("duration"), settings.live_retention)


class _LiveRefusal:
    """A live writer's last SettingsError, remembered: until RETRY_LIVE_SETTINGS_S have passed, a write raises it
    again without asking InfluxDB (the caller drops and counts the points, as when it asked)."""

    def __init__(self) -> None:
        self.at = -math.inf  # time.monotonic() of the refusal
        self.message = ""

    def guard(self, write: Callable[[list[str]], None], lines: list[str]) -> None:
        if time.monotonic() - self.at < RETRY_LIVE_SETTINGS_S:
            raise SettingsError(self.message)
        try:
            write(lines)
        except SettingsError as exc:
            self.at = time.monotonic()
            self.message = f"{exc} (not asked again for {RETRY_LIVE_SETTINGS_S:g} s)"
            raise SettingsError(self.message) from None


def _ident(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class V1Writer:
    """`/write` to the database's default retention policy or, live, to influx.live_policy (`rp`)."""

    def __init__(self, settings: InfluxSettings, precision: str = "ms", live: bool = False):
        _require_database(settings)
        self.settings = settings
        self.live = live
        self.policy = settings.live_policy if live else ""
        self.params = {"db": settings.database, "precision": precision} | ({"rp": self.policy} if self.policy else {})
        self._checked = not self.policy  # the live policy's duration: looked at once, on the first write
        self._refusal = _LiveRefusal()

    def write(self, lines: list[str]) -> None:
        if self.live:
            self._refusal.guard(self._write, lines)
        else:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        status, reason = self._post(lines)
        if status == 404 and "database not found" in reason:  # a fresh server: make the database, once
            create_database(self.settings)
            status, reason = self._post(lines)
        if self.policy and NO_POLICY in reason:  # a fresh database: make the live policy, once
            self._checked = create_retention_policy(self.settings)  # made as configured: nothing to check
            status, reason = self._post(lines)
        if status != 204:
            raise write_failure(self.settings, "/write", status, reason, self.live)
        if not self._checked:
            self._checked = True
            check_retention_policy(self.settings)

    def _post(self, lines: list[str]) -> tuple[int, str]:
        try:
            status, body = v1_request(self.settings, "POST", "/write", self.params, "\n".join(lines).encode())
        except InfluxError as exc:
            raise WriteError(str(exc)) from None
        try:
            answer = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # as in query()
            answer = None
        return status, _error_text(answer, body) if status != 204 else ""

    def close(self) -> None:
        pass


class V2Writer:
    """`/api/v2/write` to the bucket (influx.bucket, else influx.database) or, live, to live_bucket()."""

    def __init__(self, settings: InfluxSettings, live: bool = False):
        _require_database(settings)
        self.settings = settings
        self.live = live
        self.bucket = live_bucket(settings) if live else settings.bucket or settings.database
        # <database>/<policy>: on 1.8 a retention policy, which the bridge creates as on 1.x.
        self.policy = settings.live_policy if live and not settings.live_bucket and settings.live_policy else ""
        self._checked = not self.policy
        self._refusal = _LiveRefusal()
        self.org = settings.org
        base, user, password = _endpoint(settings)
        token = settings.token or (f"{user}:{password}" if user else "")  # 1.8: "user:password" is the token
        self._client = InfluxDBClient(url=base, token=token, org=settings.org, timeout=int(TIMEOUT_S * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        if self.live:
            self._refusal.guard(self._write, lines)
        else:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        status, reason = self._post(lines)
        if status == 404 and "database not found" in reason:  # InfluxDB 1.8 through its v2 API: a 1.x database
            create_database(self.settings)
            status, reason = self._post(lines)
        if self.policy and NO_POLICY in reason:  # 1.8: `<database>/<policy>` names a policy to create
            self._checked = create_retention_policy(self.settings)
            status, reason = self._post(lines)
        if status:
            raise write_failure(self.settings, "/api/v2/write", status, reason, self.live)
        if not self._checked:
            self._checked = True
            check_retention_policy(self.settings)

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
