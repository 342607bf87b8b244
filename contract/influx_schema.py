"""MQTT payloads → InfluxDB points (docs/influx.md is the schema).

One measurement per kind of result; tags are only `device_id` and, where it is the point's
identity, `side` or `status` (low cardinality); every field has one fixed type; the timestamp is
the sensor's, in milliseconds. A resent payload gives the same measurement, tags and time, so
InfluxDB overwrites the point with itself: writes are idempotent. An episode's start (episode_start)
writes to the point its end writes, with a field the end never has: InfluxDB merges the two, so an
episode is one point whatever arrives, in whichever order, how often.
"""

from __future__ import annotations

import typing
from typing import Any

# influxdb_client ships py.typed but leaves Point unannotated: typed code here may call it all the same.
# mypy: untyped-calls-exclude=influxdb_client
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from contract.messages import value_fields

MEASUREMENT = {"metrics": "posture_minute", "slouch": "posture_slouch", "rotation": "posture_rotation",
               "lean": "posture_lean", "calibration": "posture_calibration", "status": "posture_status",
               # In its own retention policy (influx.live_policy): the bridge sends live points there.
               "live": "posture_live"}
ALERT_MEASUREMENT = "posture_alert"
SUMMARY_FIELDS = {"streak_days": int, "program_day": int, "goal_met": bool, "slouch_pct": float, "worn_min": float}
# activity, calibration and lean_side of a live point are string fields, not tags: one series per device.
TAGS = {"rotation": ("side",), "lean": ("side",), "calibration": ("status",), "episode_start": ("side",)}
# episode_start has no measurement of its own: its `episode` names the kind whose point it adds to.
MEASURED_BY = {"episode_start": "episode"}
# A payload's values are its fields; its tags and times are not (contract/messages.py says which are values).
FIELDS: dict[str, dict[str, type]] = {
    kind: {name: t for name, t in value_fields(kind).items()
           if name not in TAGS.get(kind, ()) and name != MEASURED_BY.get(kind)}
    for kind in (*MEASUREMENT, *MEASURED_BY)}


def to_points(payload: dict[str, Any], stream: str = "") -> list[Point]:
    """Points for one validated payload (contract/messages.py; `stream` alerts/log: an alert)."""
    if stream == "alerts/log":
        return [_alert_point(payload)]
    kind = payload["kind"]
    # An episode's start: its episode's measurement and tags (a slouch has no side), at the same time (start_s).
    target = payload[MEASURED_BY[kind]] if kind in MEASURED_BY else kind
    point = Point(MEASUREMENT[target]).tag("device_id", payload["device"])
    for tag in TAGS.get(target, ()):
        point = point.tag(tag, payload[tag])
    for name, cast in FIELDS[kind].items():
        if payload.get(name) is not None:  # absent means "no value this minute", not zero
            point = point.field(name, cast(payload[name]))
    return [point.time(payload["ts"], WritePrecision.MS)]


def _alert_point(alert: dict[str, Any]) -> Point:
    """One point per alert: Grafana shows `text` as an annotation; `kind` and `severity` are its tags."""
    stretch = alert.get("stretch") or {}
    point = (Point(ALERT_MEASUREMENT).tag("device_id", alert["device"]).tag("kind", alert["kind"])
             .tag("severity", alert["severity"]).field("alert_id", alert["id"]).field("title", alert["title"])
             .field("message", alert["message"]).field("text", f"{alert['title']}: {alert['message']}"))
    if stretch.get("name"):
        point = point.field("stretch", stretch["name"])
    for name, cast in SUMMARY_FIELDS.items():  # the habit program, for dashboards (daily summaries only)
        if alert["kind"] == "summary" and alert["evidence"].get(name) is not None:
            point = point.field(name, cast(alert["evidence"][name]))
    return typing.cast(Point, point.time(alert["ts"], WritePrecision.MS))


DEAD_LETTER_MEASUREMENT = "posture_deadletter"
DEAD_LETTER_PAYLOAD_CHARS = 32 * 1024  # InfluxDB 1.x keeps string fields up to 64 KiB


def dead_letter_line(topic: str, reason: str, payload: str, t_ms: int) -> str:
    """A message the bridge could not store as it came, kept with why: `kind` (the reason's first word:
    not JSON, schema, time, device, error, refused …) is its tag. Raw newlines become spaces (JSON payloads
    mean the same; line protocol ends a point at a newline)."""
    kind = reason.split(":", 1)[0][:40]
    point = (Point(DEAD_LETTER_MEASUREMENT).tag("kind", kind).field("topic", _one_line(topic[:1000]))
             .field("reason", _one_line(reason[:2000]))
             .field("payload", _one_line(payload[:DEAD_LETTER_PAYLOAD_CHARS])))
    return str(point.time(t_ms, WritePrecision.MS).to_line_protocol())


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def to_line_protocol(payload: dict[str, Any], stream: str = "") -> list[str]:
    return [p.to_line_protocol() for p in to_points(payload, stream)]
