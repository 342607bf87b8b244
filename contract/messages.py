"""What travels over MQTT: the pipeline's events and metrics as versioned JSON payloads.

Every payload has `schema` (the version of its layout), `kind`, `device` and `ts` (sensor time of
the thing reported, Unix milliseconds), so late delivery is harmless and a consumer can tell
layouts apart. JSON Schemas for each kind are in schemas/; docs/mqtt.md shows examples.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date as Date
from datetime import datetime, tzinfo
from importlib import resources
from typing import Any, cast

from pipeline.events import (
    CalibrationEvent,
    EarlierState,
    EpisodeStart,
    Event,
    LeanInterval,
    LiveState,
    MinuteMetrics,
    RotationExcursion,
    SlouchEpisode,
)

SCHEMA_VERSION = 1
EVENT_KINDS = ("slouch", "rotation", "lean", "calibration", "episode_start")
# Alerts (contract/schemas/alert.json) that are no posture nudge: praise for having done it, the day's summary, and a
# calibration request, an instruction about the sensor (hold still again, the sensor moved, its calibration is old),
# which the wearer needs whatever posture nudges the day has had: counted, a newcomer's fidgety first hold, refused 2 s
# in, used up one of the day's nudges, and one sent after the cap was up was held till the next day. Its own
# cooldown (calibration.cooldown_min) still limits it. "Alerts" counted anywhere (the daily cap and its pace,
# `alerts_sent` in the day so far, the day report) are the others.
PRAISE_KINDS = ("recovery", "recovered")
NOT_NUDGE_KINDS = (*PRAISE_KINDS, "summary", "calibration")


def is_nudge(alert_kind: str) -> bool:
    return alert_kind not in NOT_NUDGE_KINDS


# How much of its minute a copy of a minute (a metrics payload) saw. The gateway sends some minutes twice, unfinished
# (at a stop, when the link is lost) and later whole, and the older copy can arrive last (resent from a spool after a
# restart, through a share group). A later copy of a minute counts at least the seconds and samples its earlier one
# did (pipeline/metrics.py: a minute's seconds only add up, merge_minutes sums them): worn seconds, then, for a minute
# whose rest was off the body or not received, its lost samples. Compared in this order, as tuples: of two copies the
# one with the larger coverage is the fuller. The one definition, for the bridge (what InfluxDB keeps,
# contract/influx_schema.py) and the alert service (the minute a device's day counts, alerts/state.py).
COVERAGE_FIELDS = ("worn_s", "lost_samples")
Coverage = tuple[float, ...]


def coverage(minute: Mapping[str, Any]) -> Coverage:
    """A copy of a minute's coverage: its COVERAGE_FIELDS' values, an absent one 0."""
    return tuple(float(minute.get(name) or 0) for name in COVERAGE_FIELDS)


# An alert's ts is the end of the data it was decided on (a minute rule's at the minute's end, an episode's at its
# end, the live nudge where its delay was met), so it counts on the day that data ends in: the local day of the
# millisecond before its ts. A minute rule decided on 23:59 is stamped 00:00:00.000 and is the day before's. The one
# definition of an alert's day: the daily cap and `alerts_sent` (alerts/) and the day report's count (report/).
ALERT_DAY_LAG_MS = 1


def alert_day(ts_ms: int, tz: tzinfo | None) -> Date:
    """The local day (tz None: the machine's) an alert stamped ts_ms counts on."""
    return datetime.fromtimestamp((ts_ms - ALERT_DAY_LAG_MS) / 1000, tz).date()


@dataclass(frozen=True)
class Status:
    online: bool
    battery_pct: int | None = None
    link_quality_pct: float | None = None  # received / (received + lost) over the last minute
    lost_samples: int = 0  # since the gateway started
    malformed_packets: int = 0
    duplicate_packets: int = 0  # the stack delivered a notification again (a stale subscription): dropped
    discarded_samples: int = 0  # received, and dropped by the pipeline (its samples_discarded); like the counters above
    reconnects: int = 0
    rssi_dbm: int | None = None
    # The sensor's advertised name; `device` is the id derived from it (contract/identity.py). Not `name`: a
    # keyword in InfluxQL, where every query would have to quote it.
    sensor_name: str | None = None
    # The broker's last will for a gateway that vanished. It was composed when the gateway connected, so its
    # `ts` says nothing about when the gateway was last heard: a consumer stamps it on arrival (stamp_will).
    will: bool = False
    kind: str = "status"


def _ms(t_s: float) -> int:
    return int(round(t_s * 1000))


def topic(prefix: str, device: str, kind: str) -> str:
    """prefix/device/metrics, …/events, …/status, …/live, …/imu."""
    sub = "events" if kind in EVENT_KINDS else kind
    return f"{prefix}/{device}/{sub}"


def schema(name: str) -> dict[str, Any]:
    """A JSON Schema of schemas/, as a dict (here, not in validation.py, which imports this module)."""
    return cast(dict[str, Any], json.loads((resources.files("contract") / "schemas" / name).read_text()))


# The times schemas/event.json takes for calibrated_s (the one definition): a payload made from a calibration dated
# outside them says its date is not known instead.
_CALIBRATED_S = schema("event.json")["properties"]["calibrated_s"]
CALIBRATED_S_RANGE = (float(_CALIBRATED_S["minimum"]), float(_CALIBRATED_S["maximum"]))


def payload(device: str, item: Event | MinuteMetrics | Status | LiveState,
            now_s: float | None = None) -> dict[str, Any]:
    """The JSON object for an event, a minute of metrics, a live state or a status."""
    body = {k: v for k, v in asdict(item).items() if k != "kind"}
    if isinstance(item, MinuteMetrics):
        ts = item.minute_start_s
    elif isinstance(item, (SlouchEpisode, RotationExcursion, LeanInterval)):
        ts = item.start_s
        body["duration_s"] = item.end_s - item.start_s
    elif isinstance(item, LiveState):
        ts = item.t_s
        # Compact: [ms before ts, *EARLIER_VALUES] each; hundredths of a degree are plenty. None: no key.
        body["earlier"] = [[round((e.t_s - item.t_s) * 1000), *(round(getattr(e, name), 2) for name in EARLIER_VALUES)]
                           for e in item.earlier]
        if not body["earlier"]:
            del body["earlier"]
    elif isinstance(item, CalibrationEvent):
        ts = item.t_s
        for part in ("reason", "ask"):  # a refusal's or request's parts (events.asking); none has them otherwise
            if body[part] is None:
                del body[part]
        if not item.request_pending:  # sent only where it is so: a bridge or alert service older than it refuses it
            del body["request_pending"]
        if item.status != "calibrated":  # when the calibration in use was made: said where one is taken (or restored)
            del body["calibrated_s"]
        elif (made_s := body["calibrated_s"]) is not None and not (
                CALIBRATED_S_RANGE[0] <= made_s <= CALIBRATED_S_RANGE[1]):
            # Made while the gateway's clock was unset (a Raspberry Pi booted without RTC or NTP: 1970), and kept with
            # that time: its date is not known. Sent so, every restart's "restored" event was refused by the schema.
            body["calibrated_s"] = None
    elif isinstance(item, EpisodeStart):
        ts = item.start_s
    elif isinstance(item, Status):
        if now_s is None:
            raise ValueError("a status needs the time it describes")
        ts = now_s
    else:
        raise TypeError(f"no MQTT payload for {type(item).__name__}")
    return {"schema": SCHEMA_VERSION, "kind": item.kind, "device": device, "ts": _ms(ts), **body}


def stamp_will(doc: dict[str, Any], received_s: float) -> dict[str, Any]:
    """A validated status as it should be stored: a will at the time it arrived (the broker sends it when
    the gateway's keepalive ran out), so the newest stored status of a crashed gateway says offline."""
    return {**doc, "ts": _ms(received_s)} if doc.get("kind") == "status" and doc.get("will") else doc


# What a payload carries besides its own fields: the envelope, and the times `ts` is made of.
ENVELOPE = ("schema", "kind", "device", "ts")
TIME_FIELDS = frozenset({"minute_start_s", "start_s", "end_s", "t_s"})
# … and what is no value of its own: a live state's earlier states (each its own point, influx_schema.py), each
# [ms before the state's ts, *EARLIER_VALUES].
NESTED_FIELDS = frozenset({"earlier"})
EARLIER_VALUES = tuple(f.name for f in fields(EarlierState) if f.name not in TIME_FIELDS)
PAYLOAD_CLASS: dict[str, type] = {"metrics": MinuteMetrics, "slouch": SlouchEpisode, "rotation": RotationExcursion,
                                  "lean": LeanInterval, "calibration": CalibrationEvent, "status": Status,
                                  "episode_start": EpisodeStart, "live": LiveState}


def value_fields(kind: str) -> dict[str, type]:
    """The payload's values of one kind and their one type (int, float, bool or str), from its dataclass:
    what InfluxDB stores as fields and the alert service and the report read. Times are not values."""
    cls = PAYLOAD_CLASS[kind]
    hints = typing.get_type_hints(cls)
    out = {f.name: _base(hints[f.name]) for f in fields(cls)
           if f.name != "kind" and f.name not in TIME_FIELDS | NESTED_FIELDS}
    if "end_s" in hints:  # an interval: payload() sends its length
        out["duration_s"] = float
    return out


def _base(hint: Any) -> type:
    """int | None → int: a value may be absent, but when there it has one type."""
    if isinstance(hint, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.cast(type, hint)
