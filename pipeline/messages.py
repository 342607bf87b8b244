"""What travels over MQTT: the pipeline's events and metrics as versioned JSON payloads.

Every payload has `schema` (the version of its layout), `kind`, `device` and `ts` (sensor time of
the thing reported, Unix milliseconds), so late delivery is harmless and a consumer can tell
layouts apart. JSON Schemas for each kind are in schemas/; docs/mqtt.md shows examples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .events import CalibrationEvent, LeanInterval, MinuteMetrics, RotationExcursion, SlouchEpisode

SCHEMA_VERSION = 1
EVENT_KINDS = ("slouch", "rotation", "lean", "calibration")


@dataclass(frozen=True)
class Status:
    online: bool
    battery_pct: int | None = None
    link_quality_pct: float | None = None  # received / (received + lost) over the last minute
    lost_samples: int = 0  # since the gateway started
    malformed_packets: int = 0
    reconnects: int = 0
    rssi_dbm: int | None = None
    kind: str = "status"


def _ms(t_s: float) -> int:
    return int(round(t_s * 1000))


def topic(prefix: str, device: str, kind: str) -> str:
    """prefix/device/metrics, …/events, …/status, …/imu."""
    sub = "events" if kind in EVENT_KINDS else kind
    return f"{prefix}/{device}/{sub}"


def payload(device: str, item, now_s: float | None = None) -> dict:
    """The JSON object for an event, a minute of metrics or a status."""
    body = {k: v for k, v in asdict(item).items() if k != "kind"}
    if isinstance(item, MinuteMetrics):
        ts = item.minute_start_s
    elif isinstance(item, (SlouchEpisode, RotationExcursion, LeanInterval)):
        ts = item.start_s
        body["duration_s"] = item.end_s - item.start_s
    elif isinstance(item, CalibrationEvent):
        ts = item.t_s
    elif isinstance(item, Status):
        if now_s is None:
            raise ValueError("a status needs the time it describes")
        ts = now_s
    else:
        raise TypeError(f"no MQTT payload for {type(item).__name__}")
    return {"schema": SCHEMA_VERSION, "kind": item.kind, "device": device, "ts": _ms(ts), **body}
