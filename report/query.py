"""Reading one device's day from InfluxDB with InfluxQL (`/query`, through service_io/influx.py).

`/query` is there on 1.x and, with a DBRP mapping from database to bucket, on 2.x.
One request per measurement: with several statements in one, 1.6 reports a missing database as
"not executed" instead of naming it.

The live stream (posture_live, about a point a second) is read from its own retention policy
(influx.live_policy) as LIVE_STEP_S means: a day is 8640 rows at most, not 86 400. A database
without that policy (older than the live stream, or a bridge that never wrote one) has no live rows.
"""

from __future__ import annotations

import time
from typing import Any

from contract.influx_schema import ALERT_MEASUREMENT, FIELDS, MEASUREMENT, TAGS
from contract.messages import ALERT_DAY_LAG_MS
from contract.validation import EPISODE_MAX_S
from pipeline.events import ACTIVITIES, NOT_WORN
from service_io.influx import NO_POLICY, InfluxSettings, QueryError, query

from .day import LIVE_STEP_S, DayRows

# The times InfluxDB can hold and query (int64 nanoseconds): 1677-09-21T00:12:43Z to 2262-04-11T23:47:16Z.
MIN_TIME_S, MAX_TIME_S = -9_223_372_036.854775806, 9_223_372_036.854775806
MIN_TIME_MS = -9_223_372_036_854  # the first whole ms of it
TIMEOUT_S = 30.0  # for each read
# For all of a day's queries: a server that answers a byte at a time would hold the report for ever. A day is a few
# thousand rows a measurement, which InfluxDB answers in a second or so.
DEADLINE_S = 120.0


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
    "alerts": (ALERT_MEASUREMENT, ("alert_id", "kind", "title", "message", "text")),
}

# The measurements whose day is not the points from local midnight to midnight: ms added to the day's start and end
# when they are read. An alert counts on the day of the millisecond before its ts (contract alert_day, as the alert
# service's daily cap and `alerts_sent` count it): a minute rule's alert on 23:59, stamped 00:00:00.000, is the day
# before's. An episode is stored at its start and counts on each day it ran in (day.py): those that began up to
# EPISODE_MAX_S before the day are read, and DayRows.of_day keeps those that ran into it.
_EPISODE_LOOKBACK_MS = -int(EPISODE_MAX_S * 1000)
DAY_SHIFT_MS: dict[str, tuple[int, int]] = {"alerts": (ALERT_DAY_LAG_MS, ALERT_DAY_LAG_MS),
                                            "slouches": (_EPISODE_LOOKBACK_MS, 0), "leans": (_EPISODE_LOOKBACK_MS, 0)}

__all__ = ["COLUMNS", "DAY_SHIFT_MS", "LIVE_STEP_S", "QueryError", "fetch_day", "known_devices"]


def fetch_day(settings: InfluxSettings, device: str, start_s: float, end_s: float) -> DayRows:
    """The device's points of the day from start_s to end_s (start_s <= time < end_s but for DAY_SHIFT_MS: the
    episodes that ran into it too), and its live stream over that span in LIVE_STEP_S means."""
    start_ms, end_ms = int(round(start_s * 1000)), int(round(end_s * 1000))
    deadline = time.monotonic() + DEADLINE_S
    statements = day_statements(device, start_ms, end_ms)
    rows = {name: parse_rows(query(settings, statement, timeout_s=TIMEOUT_S, deadline=deadline), settings.database)
            for name, statement in zip(COLUMNS, statements)}
    return DayRows(**rows, live=fetch_live(settings, device, start_ms, end_ms, deadline)).of_day(start_s, end_s)


def known_devices(settings: InfluxSettings) -> list[str]:
    """The device ids the database has points of in the report's measurements, sorted (any day: the tag index)."""
    measurements = ", ".join(_ident(measurement) for measurement, _ in COLUMNS.values())
    body = query(settings, f'SHOW TAG VALUES FROM {measurements} WITH KEY = "device_id"', timeout_s=TIMEOUT_S)
    devices: set[str] = set()
    for result in _results(body, settings.database):
        if "error" in result:
            raise QueryError(f"InfluxDB query on {settings.database}: {_one_line(result['error'])}")
        for series in result.get("series") or []:
            values = series.get("values") if isinstance(series, dict) else None
            if not isinstance(values, list) or not all(isinstance(v, list) and v for v in values):
                raise _not_influxdb(settings.database, "tag values that are not rows")
            devices.update(str(v[-1]) for v in values)  # columns key, value
    return sorted(devices)


def _where(device: str, start_ms: int, end_ms: int) -> str:
    return f"\"device_id\" = {influxql_string(device)} AND {_time_range(start_ms, end_ms)}"


def _time_range(start_ms: int, end_ms: int) -> str:
    return f"time >= {start_ms}ms AND time < {end_ms}ms"


def day_statements(device: str, start_ms: int, end_ms: int) -> list[str]:
    statements = []
    for name, (measurement, columns) in COLUMNS.items():
        from_ms, to_ms = DAY_SHIFT_MS.get(name, (0, 0))
        statements.append(f"SELECT {', '.join(_ident(c) for c in columns)} FROM {_ident(measurement)} "
                          f"WHERE {_where(device, max(start_ms + from_ms, MIN_TIME_MS), end_ms + to_ms)}")
    return statements


def fetch_live(settings: InfluxSettings, device: str, start_ms: int, end_ms: int,
               deadline: float | None = None) -> list[dict[str, Any]]:
    """LIVE_STEP_S buckets with angles: time_s (bucket start), flexion_deg, lateral_deg (means), samples (with
    angles), slouching_samples and `<activity>_samples` for each of ACTIVITIES (of those, slouching and in that
    activity; None for none). [] where the live policy does not exist."""
    statement = live_statement(settings.live_policy, device, start_ms, end_ms)
    body = query(settings, statement, timeout_s=TIMEOUT_S, deadline=deadline)
    if any(NO_POLICY in str(result.get("error", "")) for result in _results(body, settings.database)):
        return []  # a database from before the live stream: minutes only
    return parse_rows(body, settings.database)


def live_statement(policy: str, device: str, start_ms: int, end_ms: int, step_s: int = LIVE_STEP_S) -> str:
    # Means over every point with angles (a message's earlier states are points with angles only); the share of
    # slouching over the live states with angles, which are the states with an activity other than not_worn (a
    # sensor off the body has that activity and no angles, calibrated or not; an uncalibrated state on the body has
    # neither). Two subqueries, as one WHERE on activity would leave the earlier states out of the means; one more
    # per activity counts its states (activity is a field, not a tag, so no GROUP BY can): an earlier state (angles
    # only) cannot say whether it lay, so day.live_buckets leaves a bucket with any lying out, and the activity strip
    # draws each bucket as its main activity (a minute's totals cannot say when in it a walk was). fill(none) leaves
    # gaps out.
    source = f"{_ident(policy)}.{_ident(MEASUREMENT['live'])}" if policy else _ident(MEASUREMENT["live"])
    where = _where(device, start_ms, end_ms)
    counts = "".join(f', count("{a}") AS "{a}_samples"' for a in ACTIVITIES)
    per_activity = "".join(f', (SELECT "activity" AS "{a}" FROM {source} WHERE {where} '
                           f'AND "activity" = {influxql_string(a)})' for a in ACTIVITIES)
    return (f'SELECT mean("flexion_deg") AS "flexion_deg", mean("lateral_deg") AS "lateral_deg", '
            f'count("measured") AS "samples", count("slouching_since_s") AS "slouching_samples"{counts} '
            f'FROM (SELECT "flexion_deg", "lateral_deg" FROM {source} WHERE {where}), '
            f'(SELECT "activity" AS "measured", "slouching_since_s" FROM {source} WHERE {where} '
            f"AND \"activity\" != {influxql_string(NOT_WORN)}){per_activity} "
            f"WHERE {_time_range(start_ms, end_ms)} GROUP BY time({step_s}s) fill(none)")


def parse_rows(body: dict[str, Any], database: str) -> list[dict[str, Any]]:
    """`/query?epoch=ms`'s JSON for one statement → rows: column → value, and `time_s` in place of `time`.
    QueryError for an error in it, an answer cut short, or JSON that is not InfluxDB's."""
    rows = []
    for result in _results(body, database):
        if "error" in result:
            raise QueryError(f"InfluxDB query on {database}: {_one_line(result['error'])}")
        series_list = result.get("series") or []
        if not isinstance(series_list, list) or not all(isinstance(series, dict) for series in series_list):
            raise _not_influxdb(database, "series is not a list of series")
        for series in series_list:
            if result.get("partial") or series.get("partial"):
                # 1.x with [http] max-row-limit stops an answer there: drawn, the day would end early without a word.
                raise QueryError(f"InfluxDB on {database} cut its answer short at its [http] max-row-limit: raise "
                                 "it to 10000 or more (a day's live trace is up to 8640 rows), or set 0 for no limit")
            columns, values = series.get("columns"), series.get("values")
            if not (isinstance(columns, list) and "time" in columns and isinstance(values, list)
                    and all(isinstance(row, list) and len(row) == len(columns) for row in values)):
                raise _not_influxdb(database, "a series without time, columns or values")
            for value_list in values:
                row = dict(zip(columns, value_list))
                time_ms = row.pop("time")
                if isinstance(time_ms, bool) or not isinstance(time_ms, int | float):
                    raise _not_influxdb(database, f"a time of {str(time_ms)[:40]!r}, not epoch milliseconds")
                row["time_s"] = time_ms / 1000.0
                rows.append(row)
    return rows


def _results(body: dict[str, Any], database: str) -> list[dict[str, Any]]:
    """The answer's results; QueryError for an error at its top (in a 200 answer too), or none as InfluxDB gives."""
    if "error" in body:
        raise QueryError(f"InfluxDB query on {database}: {_one_line(body['error'])}")
    results = body.get("results")
    if not isinstance(results, list) or not all(isinstance(result, dict) for result in results):
        raise _not_influxdb(database, "no list of results")
    return results


def _not_influxdb(database: str, what: str) -> QueryError:
    return QueryError(f"/query on {database} answered what InfluxDB does not ({what}): is influx.url an InfluxDB?")


def _one_line(error: Any) -> str:
    """InfluxDB's error as one line for the terminal: its lines joined, and not a page of it."""
    return " ".join(str(error).split())[:300]


def influxql_string(text: str) -> str:
    """A single-quoted InfluxQL string literal: a device name cannot end the quote."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
