"""Reading one device's day from InfluxDB with InfluxQL over HTTP (`/query`).

`/query` is there on 1.x and, with a DBRP mapping from database to bucket, on 2.x; influxdb-client
has no v1 query path, so as for `/write` (pipeline/influx_writers.py) the HTTP GET is written here.
One request per measurement: with several statements in one, 1.6 reports a missing database as
"not executed" instead of naming it.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from pipeline.influx_writers import InfluxSettings

from .day import DayRows

TIMEOUT_S = 30.0

# DayRows field → (measurement, columns read); tags are selected like fields and come back as columns.
COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "minutes": ("posture_minute", (
        "flexion_mean_deg", "lateral_mean_deg", "worn_s", "slouch_s", "sitting_s", "standing_s", "walking_s",
        "lying_s", "lean_left_s", "lean_right_s", "rotations_left", "rotations_right",
        "rotation_left_cumulative_deg", "rotation_right_cumulative_deg",
        "rotation_left_peak_mean_deg", "rotation_right_peak_mean_deg")),
    "slouches": ("posture_slouch", ("duration_s", "peak_flexion_deg")),
    "rotations": ("posture_rotation", ("side", "peak_deg")),
    "leans": ("posture_lean", ("side", "duration_s", "mean_lateral_deg")),
    "calibrations": ("posture_calibration", ("status", "message")),
    "alerts": ("posture_alert", ("kind", "title", "message", "text")),
}


class QueryError(RuntimeError):
    """InfluxDB did not answer the query (down, refused, bad credentials); the message names no secret."""


def fetch_day(settings: InfluxSettings, device: str, start_s: float, end_s: float) -> DayRows:
    """The device's points with start_s <= time < end_s."""
    statements = day_statements(device, int(round(start_s * 1000)), int(round(end_s * 1000)))
    return DayRows(**{name: parse_rows(_get(settings, statement), settings.database)
                      for name, statement in zip(COLUMNS, statements)})


def day_statements(device: str, start_ms: int, end_ms: int) -> list[str]:
    where = f"\"device_id\" = {influxql_string(device)} AND time >= {start_ms}ms AND time < {end_ms}ms"
    return [f"SELECT {', '.join(_ident(c) for c in columns)} FROM {_ident(measurement)} WHERE {where}"
            for measurement, columns in COLUMNS.values()]


def parse_rows(body: dict, database: str) -> list[dict]:
    """`/query?epoch=ms`'s JSON for one statement → rows: column → value, and `time_s` in place of `time`."""
    rows = []
    for result in body.get("results") or []:
        if "error" in result:
            raise QueryError(f"InfluxDB query on {database}: {result['error']}")
        for series in result.get("series") or []:
            for values in series["values"]:
                row = dict(zip(series["columns"], values))
                row["time_s"] = row.pop("time") / 1000.0
                rows.append(row)
    return rows


def influxql_string(text: str) -> str:
    """A single-quoted InfluxQL string literal: a device name cannot end the quote."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _get(settings: InfluxSettings, q: str) -> dict:
    params = urllib.parse.urlencode({"db": settings.database, "q": q, "epoch": "ms"})
    url = f"{settings.url.rstrip('/')}/query?{params}"
    headers = {"Accept": "application/json"}
    # 1.x users go in basic auth; a 2.x token (or 1.8's "user:password") in the Token header.
    if settings.username:
        pair = base64.b64encode(f"{settings.username}:{settings.password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif settings.token:
        headers["Authorization"] = f"Token {settings.token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as reply:
            return json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise QueryError(f"InfluxDB /query at {settings.url} answered {exc.code}: {_error_text(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise QueryError(f"InfluxDB at {settings.url} did not answer /query: {_reason(exc)}") from None
    except json.JSONDecodeError:
        raise QueryError(f"InfluxDB at {settings.url}: /query did not answer JSON") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()[:500].decode(errors="replace")
    try:
        return str(json.loads(raw).get("error", raw)).splitlines()[0][:200]
    except (ValueError, AttributeError, IndexError):
        return raw.splitlines()[0][:200] if raw else exc.reason


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__
