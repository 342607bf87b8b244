"""MQTT payloads → InfluxDB points (docs/influx.md is the schema).

One measurement per kind of result; tags are only `device_id` and, where it is the point's
identity, `side` or `status` (low cardinality); every field has one fixed type; the timestamp is
the sensor's, in milliseconds. A resent payload gives the same measurement, tags and time, so
InfluxDB overwrites the point with itself: writes are idempotent. An episode's start (episode_start)
writes to the point its end writes, with a field the end never has: InfluxDB merges the two, so an
episode is one point whatever arrives, in whichever order, how often.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

# How much of its minute a copy of a minute saw (the bridge keeps the fuller copy: InfluxDB keeps the last write) is
# contract/messages.py's coverage (absent fields 0), one definition for the bridge and the alert service.
from contract.messages import COVERAGE_FIELDS, EARLIER_VALUES, Coverage, value_fields

MEASUREMENT = {"metrics": "posture_minute", "slouch": "posture_slouch", "rotation": "posture_rotation",
               "lean": "posture_lean", "calibration": "posture_calibration", "status": "posture_status",
               # In its own retention policy (influx.live_policy): the bridge sends live points there.
               "live": "posture_live"}
ALERT_MEASUREMENT = "posture_alert"
# The day's zone too, as the summary's day had it (the Daily dashboard groups its days in today's: TODAY_FIELDS).
SUMMARY_FIELDS = {"streak_days": int, "program_day": int, "goal_met": bool, "slouch_pct": float, "worn_min": float,
                  "timezone": str}
# A summary (or a today) whose zone has no name stores "" (tz('') is UTC), or the dashboard would keep an older zone.
SUMMARY_DEFAULTS = {"timezone": ""}
# The day so far (`<prefix>/<device>/today`, the alert service's, stream "today"): the habit program and the zone as the
# day stands now, which the Daily dashboard shows. A summary's are as of its day's summary_time, so its zone came only
# at a new wearer's first summary (their first day grouped in UTC hours until 18:00), and just after midnight its
# program day was yesterday's where `today` said the new day's. Its ts is the end of its latest minute (its midnight
# before one): a later copy of the same `today` overwrites the point with what changed.
TODAY_MEASUREMENT = "posture_today"
TODAY_FIELDS = {"streak_days": int, "program_day": int, "program_days": int, "timezone": str}
# activity, calibration and lean_side of a live point are string fields, not tags: one series per device.
TAGS = {"rotation": ("side",), "lean": ("side",), "calibration": ("status",), "episode_start": ("side",)}
# episode_start has no measurement of its own: its `episode` names the kind whose point it adds to.
MEASURED_BY = {"episode_start": "episode"}
# A payload's values are its fields; its tags and times are not (contract/messages.py says which are values).
FIELDS: dict[str, dict[str, type]] = {
    kind: {name: t for name, t in value_fields(kind).items()
           if name not in TAGS.get(kind, ()) and name != MEASURED_BY.get(kind)}
    for kind in (*MEASUREMENT, *MEASURED_BY)}
DEAD_LETTER_MEASUREMENT = "posture_deadletter"
DEAD_LETTER_PAYLOAD_CHARS = 32 * 1024  # InfluxDB 1.x keeps string fields up to 64 KiB


# Line protocol, written here: influxdb-client's Point took ~20 µs a point, the largest cost of a message in the
# bridge, where this takes a few. Byte for byte what Point wrote (tests/test_contract.py compares the two over
# generated payloads, hostile strings included), so points stored before and after are the same points. Its rules:
# tags and fields sorted by key; a tag or field without a value left out, and a line without fields is "".
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_STRING_ESCAPES = str.maketrans({'"': r'\"', "\\": r"\\"})  # inside a string field's double quotes
_isfinite = math.isfinite  # looked up once: it runs for every float field of every message


def escape_key(name: str) -> str:
    """A tag key or field key."""
    return name.translate(_KEY_ESCAPES)


def tag_value(value: object) -> str:
    """A tag's value. One ending in a backslash gets a space, so that the backslash escapes it, not the separator
    after it."""
    text = str(value).translate(_KEY_ESCAPES)
    return text + " " if text.endswith("\\") else text


def float_field(value: Any) -> str | None:
    """A float: Python's shortest repr, a whole number without its ".0" (an integer would need the `i`). Not finite:
    None, left out (InfluxDB has no NaN or infinity)."""
    number = float(value)
    if not _isfinite(number):
        return None
    text = repr(number)
    return text[:-2] if text.endswith(".0") else text


def int_field(value: Any) -> str:
    return f"{int(value)}i"


def bool_field(value: Any) -> str:
    return "true" if value else "false"


def str_field(value: Any) -> str:
    return '"' + str(value).translate(_STRING_ESCAPES) + '"'


FIELD_WRITERS: dict[type, Callable[[Any], str | None]] = {float: float_field, int: int_field, bool: bool_field,
                                                          str: str_field}


def field_value(value: object) -> str | None:
    """A field's value by its type (a bool is no int here); None: left out."""
    if value is None:
        return None
    for kind in (float, bool, int, str):  # bool before int: True is an int to Python, `true` to InfluxDB
        if isinstance(value, kind):
            return FIELD_WRITERS[kind](value)
    raise ValueError(f"a field of type {type(value).__name__} cannot be stored")


def line(measurement: str, tags: dict[str, Any], fields: dict[str, Any], t_ms: int) -> str:
    """One point in line protocol at millisecond precision."""
    tag_text = "".join(f",{key}={value}" for key, value in
                       ((escape_key(k), tag_value(v)) for k, v in sorted(tags.items()) if v is not None)
                       if key and value)
    field_text = ",".join(f"{escape_key(k)}={text}" for k, v in sorted(fields.items())
                          if (text := field_value(v)) is not None)
    if not field_text:
        return ""
    return f"{measurement.translate(_MEASUREMENT_ESCAPES)}{tag_text} {field_text} {int(t_ms)}"


class _Layout(NamedTuple):
    """How one kind of payload becomes its line: the escaped measurement, its tags (payload key, `,key=`) and
    fields (payload key, `key=`, writer for its one type), each sorted as line() sorts them."""
    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, str, Callable[[Any], str | None]], ...]


@cache
def _layout(kind: str, target: str) -> _Layout:
    tags = {"device_id": "device"} | {tag: tag for tag in TAGS.get(target, ())}
    return _Layout(MEASUREMENT[target].translate(_MEASUREMENT_ESCAPES),
                   tuple((source, f",{escape_key(tag)}=") for tag, source in sorted(tags.items())),
                   tuple((name, f"{escape_key(name)}=", FIELD_WRITERS[cast])
                         for name, cast in sorted(FIELDS[kind].items())))


def to_line_protocol(payload: dict[str, Any], stream: str = "") -> list[str]:
    """The lines for one validated payload (contract/messages.py; `stream` alerts/log: an alert)."""
    if stream == "alerts/log":
        return [_alert_line(payload)]
    if stream == "today":
        return [line(TODAY_MEASUREMENT, {"device_id": payload["device"]}, _named(payload, TODAY_FIELDS), payload["ts"])]
    kind = payload["kind"]
    # An episode's start: its episode's measurement and tags (a slouch has no side), at the same time (start_s).
    layout = _layout(kind, payload[MEASURED_BY[kind]] if kind in MEASURED_BY else kind)
    tags = "".join([key + tag for source, key in layout.tags
                    if (value := payload[source]) is not None and (tag := tag_value(value))])
    get = payload.get
    fields = ",".join([key + field for name, key, write in layout.fields
                       if (value := get(name)) is not None and (field := write(value)) is not None])
    if not fields:  # no field has a value: no point
        return [""]
    ts = int(payload["ts"])
    lines = [f"{layout.measurement}{tags} {fields} {ts}"]
    for offset_ms, *values in payload.get("earlier", ()):  # a live state's earlier states: a point each
        earlier = ",".join([f"{name}={text}" for name, value in zip(EARLIER_VALUES, values, strict=True)
                            if (text := float_field(value)) is not None])
        if earlier:
            lines.append(f"{layout.measurement}{tags} {earlier} {ts + int(offset_ms)}")
    return lines


def minute_coverage(line_text: str) -> tuple[str, int, Coverage] | None:
    """A posture_minute line's (device, time in ms, coverage: COVERAGE_FIELDS' values); None for any other line. Its
    device needs no unescaping (contract/identity.py allows none of line protocol's special characters), and its
    fields are numbers, no strings with spaces. Only the coverage fields are read (every minute the bridge stores
    passes here: splitting all ~20 fields into a dict was most of the bridge thread's time a message)."""
    if not line_text.startswith(_MINUTE_PREFIX):
        return None
    head, field_text, t_ms = line_text.split(" ")
    field_text = "," + field_text
    values = []
    for key in _COVERAGE_KEYS:
        start = field_text.find(key)
        if start < 0:
            values.append(0.0)
            continue
        start += len(key)
        end = field_text.find(",", start)
        values.append(float(field_text[start:end if end >= 0 else None].rstrip("i")))
    return head[len(_MINUTE_PREFIX):], int(t_ms), tuple(values)


_COVERAGE_KEYS = tuple(f",{name}=" for name in COVERAGE_FIELDS)
_MINUTE_PREFIX = f"{MEASUREMENT['metrics']},device_id="


def _alert_line(alert: dict[str, Any]) -> str:
    """One point per alert: Grafana shows `text` as an annotation; `kind` and `severity` are its tags."""
    stretch = alert.get("stretch") or {}
    fields = {"alert_id": alert["id"], "title": alert["title"], "message": alert["message"],
              "text": f"{alert['title']}: {alert['message']}"}
    if stretch.get("name"):
        fields["stretch"] = stretch["name"]
    if alert["kind"] == "summary":  # the habit program and the day's zone, for dashboards
        fields |= _named(alert["evidence"], SUMMARY_FIELDS)
    return line(ALERT_MEASUREMENT, {"device_id": alert["device"], "kind": alert["kind"],
                                    "severity": alert["severity"]}, fields, alert["ts"])


def _named(values: dict[str, Any], names: dict[str, type]) -> dict[str, Any]:
    """The values of these names, cast; one without a value left out, or its default (SUMMARY_DEFAULTS) stored."""
    fields = {}
    for name, cast in names.items():
        value = values.get(name)
        if (value := SUMMARY_DEFAULTS.get(name) if value is None else value) is not None:
            fields[name] = cast(value)
    return fields


def dead_letter_line(topic: str, reason: str, payload: str, t_ms: int, bridge: str = "") -> str:
    """A message the bridge could not store as it came, kept with why: `kind` (the reason's first word:
    not JSON, schema, time, device, error, refused …) is its tag. Raw newlines become spaces (JSON payloads
    mean the same; line protocol ends a point at a newline). `bridge`, a member of a share group's client id, is a
    tag too: each bridge spaces its own dead letters a millisecond apart, and two members' at the same millisecond
    would otherwise be one point, the other lost."""
    tags = {"kind": reason.split(":", 1)[0][:40]} | ({"bridge": bridge} if bridge else {})
    return line(DEAD_LETTER_MEASUREMENT, tags,
                {"topic": _one_line(topic[:1000]), "reason": _one_line(reason[:2000]),
                 "payload": _one_line(payload[:DEAD_LETTER_PAYLOAD_CHARS])}, t_ms)


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
