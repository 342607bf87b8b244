"""MQTT payloads → InfluxDB points (docs/influx.md is the schema).

One measurement per kind of result; tags are only `device_id` and, where it is the point's
identity, `side` or `status` (low cardinality); every field has one fixed type; the timestamp is
the sensor's, in milliseconds. A resent payload gives the same measurement, tags and time, so
InfluxDB overwrites the point with itself: writes are idempotent.
"""

from __future__ import annotations

from influxdb_client import Point, WritePrecision

MEASUREMENT = {"metrics": "posture_minute", "slouch": "posture_slouch", "rotation": "posture_rotation",
               "lean": "posture_lean", "calibration": "posture_calibration", "status": "posture_status"}
ALERT_MEASUREMENT = "posture_alert"
SUMMARY_FIELDS = {"streak_days": int, "program_day": int, "goal_met": bool, "slouch_pct": float, "worn_min": float}
TAGS = {"rotation": ("side",), "lean": ("side",), "calibration": ("status",)}
_METRIC_INTS = ("rotations_left", "rotations_right", "lost_samples")
FIELDS: dict[str, dict[str, type]] = {
    "metrics": {**{k: float for k in (
        "worn_s", "sitting_s", "standing_s", "walking_s", "lying_s", "slouch_s", "lean_left_s", "lean_right_s",
        "lean_left_mean_deg", "lean_right_mean_deg", "flexion_mean_deg", "lateral_mean_deg",
        "rotation_left_peak_mean_deg", "rotation_right_peak_mean_deg", "rotation_left_peak_max_deg",
        "rotation_right_peak_max_deg", "rotation_left_cumulative_deg", "rotation_right_cumulative_deg",
        "sitting_since_s")}, **{k: int for k in _METRIC_INTS}},
    "slouch": {"duration_s": float, "peak_flexion_deg": float, "mean_flexion_deg": float},
    "rotation": {"duration_s": float, "peak_deg": float},
    "lean": {"duration_s": float, "mean_lateral_deg": float},
    "calibration": {"message": str, "with_bend": bool},
    "status": {"online": bool, "battery_pct": int, "link_quality_pct": float, "lost_samples": int,
               "malformed_packets": int, "reconnects": int, "rssi_dbm": int},
}


def to_points(payload: dict, stream: str = "") -> list[Point]:
    """Points for one validated payload (pipeline/messages.py; `stream` alerts/log: an alert)."""
    if stream == "alerts/log":
        return [_alert_point(payload)]
    kind = payload["kind"]
    point = Point(MEASUREMENT[kind]).tag("device_id", payload["device"])
    for tag in TAGS.get(kind, ()):
        point = point.tag(tag, payload[tag])
    for name, cast in FIELDS[kind].items():
        if payload.get(name) is not None:  # absent means "no value this minute", not zero
            point = point.field(name, cast(payload[name]))
    return [point.time(payload["ts"], WritePrecision.MS)]


def _alert_point(alert: dict) -> Point:
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
    return point.time(alert["ts"], WritePrecision.MS)


def to_line_protocol(payload: dict, stream: str = "") -> list[str]:
    return [p.to_line_protocol() for p in to_points(payload, stream)]
