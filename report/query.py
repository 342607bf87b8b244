"""Reading one device's day from InfluxDB with InfluxQL (`/query`, through service_io/influx.py).

`/query` is there on 1.x and, with a DBRP mapping from database to bucket, on 2.x.
One request per measurement: with several statements in one, 1.6 reports a missing database as
"not executed" instead of naming it.
"""

from __future__ import annotations

from typing import Any

from contract.influx_schema import ALERT_MEASUREMENT, FIELDS, MEASUREMENT, TAGS
from service_io.influx import InfluxSettings, QueryError, query

from .day import DayRows

TIMEOUT_S = 30.0


def _columns(kind: str) -> tuple[str, tuple[str, ...]]:
    """A payload kind's measurement and every column it stores (tags are selected like fields)."""
    return MEASUREMENT[kind], (*TAGS.get(kind, ()), *FIELDS[kind])


# DayRows field → (measurement, columns read), from the contract: a new field is read without an edit here.
COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "minutes": _columns("metrics"),
    "slouches": _columns("slouch"),
    "rotations": _columns("rotation"),
    "leans": _columns("lean"),
    "calibrations": _columns("calibration"),
    "alerts": (ALERT_MEASUREMENT, ("kind", "title", "message", "text")),
}

__all__ = ["COLUMNS", "QueryError", "fetch_day"]


def fetch_day(settings: InfluxSettings, device: str, start_s: float, end_s: float) -> DayRows:
    """The device's points with start_s <= time < end_s."""
    statements = day_statements(device, int(round(start_s * 1000)), int(round(end_s * 1000)))
    return DayRows(**{name: parse_rows(query(settings, statement, timeout_s=TIMEOUT_S), settings.database)
                      for name, statement in zip(COLUMNS, statements)})


def day_statements(device: str, start_ms: int, end_ms: int) -> list[str]:
    where = f"\"device_id\" = {influxql_string(device)} AND time >= {start_ms}ms AND time < {end_ms}ms"
    return [f"SELECT {', '.join(_ident(c) for c in columns)} FROM {_ident(measurement)} WHERE {where}"
            for measurement, columns in COLUMNS.values()]


def parse_rows(body: dict[str, Any], database: str) -> list[dict[str, Any]]:
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
