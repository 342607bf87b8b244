"""Writing line protocol to InfluxDB: the v2 API (2.x, 3.x, 1.8+) or v1 `/write` (1.x before 1.8).

The v2 path is influxdb-client's. InfluxDB older than 1.8 (Debian's 1.6.7) has only `/write`,
which influxdb-client does not speak and whose own Python client (`influxdb`) has been
unmaintained since 2020, so that one HTTP POST is written here. `/ping`'s X-Influxdb-Version
header decides, unless the config names the API.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

TIMEOUT_S = 10.0


class WriteError(RuntimeError):
    """The database did not store the points (down, refused, …); the message names no secret."""


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
            return reply.headers.get("X-Influxdb-Version", "")
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


class V1Writer:
    def __init__(self, settings: InfluxSettings):
        query = {"db": settings.database, "precision": "ms"}
        self.url = f"{settings.url.rstrip('/')}/write?{urllib.parse.urlencode(query)}"
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            token = base64.b64encode(f"{settings.username}:{settings.password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def write(self, lines: list[str]) -> None:
        request = urllib.request.Request(self.url, data="\n".join(lines).encode(), headers=self.headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
                if reply.status != 204:
                    raise WriteError(f"InfluxDB /write answered {reply.status}")
        except urllib.error.HTTPError as exc:
            raise WriteError(f"InfluxDB /write answered {exc.code}: {exc.read()[:200].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WriteError(f"InfluxDB /write failed: {_reason(exc)}") from None

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
            self._api.write(bucket=self.bucket, org=self.org, record=lines, write_precision=WritePrecision.MS)
        except Exception as exc:  # influxdb-client raises ApiException, urllib3 and socket errors
            raise WriteError(f"InfluxDB /api/v2/write failed: {_reason(exc)}") from None

    def close(self) -> None:
        self._client.close()


def _reason(exc: BaseException) -> str:
    """A one-line reason without URLs' credentials or tokens."""
    text = str(getattr(exc, "reason", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
