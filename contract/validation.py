"""Checking MQTT payloads against the JSON Schemas in schemas/: the bridge and the alert service read the same way."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import fastjsonschema
import orjson

from contract.messages import TIME_FIELDS, schema
from pipeline.events import ACTIVITIES, MINUTE_S, RATE_HZ_RANGE, SIDES
from sensor.timeline import ClockMap

# Topic suffix after <prefix>/<device>/ → schema file.
SCHEMA_FILES = {"metrics": "metrics.json", "events": "event.json", "status": "status.json",
                "live": "live.json", "alerts/log": "alert.json", "today": "today.json"}


class Malformed(ValueError):
    """Refused with a reason "<kind>: <detail>"; services count refusals by kind."""


# Our largest payload, an alert with its stretch, is about 2 kB: a message 30 times that is no payload of ours,
# and parsing it first would let one message cost the bridge megabytes and seconds.
MAX_PAYLOAD_BYTES = 64 * 1024
# A payload's ts may be at most this far ahead of the receiver's clock (clocks of two hosts disagree by
# seconds, not days): the alert service's day would otherwise move to the future and every real minute
# after it be "late".
MAX_AHEAD_S = 86_400.0
# The times a payload carries (an episode's start and end, a minute's start, where sitting began) lie within
# this of its ts, and an episode lasts no longer: a longer one is a wrong clock or a forged message.
MAX_SPAN_S = 86_400.0
# Times checked against ts: the ones ts is made of, and the open states' starts (a minute's or the live state's
# sitting start, the live slouch and lean), which alerts count from.
_WINDOWED = TIME_FIELDS | {"sitting_since_s", "slouching_since_s", "leaning_since_s"}


# What a minute can hold, as schemas/metrics.json bounds it (the one definition; the report reads minutes so bounded).
_MINUTE = schema("metrics.json")["properties"]
MINUTE_MAX_S = float(_MINUTE["worn_s"]["maximum"])  # a minute's seconds: room for a sensor clock running fast
MAX_ROTATIONS_PER_MINUTE = int(_MINUTE["rotations_left"]["maximum"])  # of a side, and of both (check_minute)
MAX_PEAK_DEG = float(_MINUTE["rotation_left_peak_max_deg"]["maximum"])  # a rotation's peak: an angle's range
# An episode's longest, as schemas/event.json bounds duration_s.
EPISODE_MAX_S = float(schema("event.json")["properties"]["duration_s"]["maximum"])
# How far a minute's slouch, lean or activity seconds may pass its worn seconds (check_minute). Gateways before
# 2026-12-06 counted slouch and lean as spans of time against worn samples × the period (pipeline/metrics.py now
# bounds them by construction) and sent up to this much more: the period of the last sample before the minute (1/25 s
# at the slowest rate) and the clock map's slew, which stretches sample times by less than JUMP_S in all. Their minutes
# wait in spools and broker sessions: refused, a real minute would be lost. It also takes the alert service's rounding
# of a minute it keeps (hundredths, alerts/state.py).
MINUTE_SLACK_S = ClockMap.JUMP_S + 1 / RATE_HZ_RANGE[0]
_SECONDS_OF_WORN = {"slouch": ("slouch_s",), "lean": tuple(f"lean_{side}_s" for side in SIDES),
                    "activity": tuple(f"{a}_s" for a in ACTIVITIES)}  # each group's seconds add up to worn ones at most

Validators = dict[str, Callable[[Any], dict[str, Any]]]  # stream → a compiled JSON Schema check


def load_validators() -> Validators:
    """Schema validators compiled to Python (fastjsonschema: ~8 µs a message where an interpreting
    validator takes ~190 µs, which would cap the bridge at a few thousand messages a second)."""
    return {sub: fastjsonschema.compile(schema(name)) for sub, name in SCHEMA_FILES.items()}


def stream_of(topic: str) -> str:
    """`posture/DeskSensor/alerts/log` → `alerts/log`; `posture/DeskSensor/metrics` → `metrics`."""
    parts = topic.split("/")
    return "/".join(parts[-2:]) if parts[-2:] == ["alerts", "log"] else parts[-1]


def _no_constant(name: str) -> NoReturn:
    """Python's json reads NaN and Infinity, which JSON does not have and no measurement is."""
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def _finite(text: str) -> float:
    """Python's json reads 1e400 as inf, which InfluxDB would refuse and no measurement is."""
    value = float(text)
    if not math.isfinite(value):
        raise Malformed(f"not JSON: {text[:40]} is not a finite number")
    return value


def _integer(text: str) -> int:
    """Python's int() refuses an integer of more digits than sys.get_int_max_str_digits() (4300) with a ValueError of
    its own, which passed every refusal by: the alert service took it for a bug of its own (a traceback, counted in
    errors), and the bridge dead-lettered it under a kind made of Python's words. No number is near it: as 1e400."""
    try:
        return int(text)
    except ValueError:
        raise Malformed(f"not JSON: an integer of {len(text.lstrip('-'))} digits is beyond any number") from None


def decode(body: bytes | bytearray) -> Any:
    """A payload's JSON, read by orjson (about 1 µs for a payload of ours, where json takes 7 µs).

    What orjson refuses the standard json module reads again, so it is refused, or taken, as it always was,
    in the same words: NaN, Infinity and numbers beyond a double (1e400) are "not JSON", and so are integers of
    more digits than Python reads (4300) and invalid UTF-8; a byte-order mark and UTF-16, which json takes and orjson
    does not, are still taken. A lone surrogate (`"\\ud800"`), which json takes too, is "not JSON": no UTF-8 text
    holds one, so the line protocol, the spool and the phone's text of a payload that carried one could not be
    written, and the message killed the bridge or the alert service at every start.
    Nesting deeper than orjson's limit (1024) is "not JSON: nested too deep", as Python's parser said past its
    own (about 1000; a document nested 1000 to 1024 deep now meets the schema, which no payload of ours nests
    in). Where the two read one document differently: an integer beyond 64 bits is a float to orjson (the same
    float json's integer becomes), which the schemas refuse as they refused the integer: every integer field has
    int64 bounds (one edge: an alert's program_day, bounded by -2**63 itself, takes -2**63 - 1 to -2**63 - 1024,
    which round to it)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Past orjson's depth limit Python's parser fails too (below, should orjson word it otherwise one day).
        if "depth limit" in str(exc):
            raise Malformed("not JSON: nested too deep") from None
    try:
        doc = json.loads(body, parse_constant=_no_constant, parse_float=_finite, parse_int=_integer)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    except RecursionError:  # nested past Python's own limit (about 1000), should orjson not have said so
        raise Malformed("not JSON: nested too deep") from None
    _refuse_lone_surrogates(doc)
    return doc


def _refuse_lone_surrogates(doc: Any) -> None:
    """Every string of a document json read (orjson refuses lone surrogates itself) must be UTF-8 text."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError as exc:
                raise Malformed(f"not JSON: a lone surrogate ({item[exc.start]!a}) is no Unicode text") from None


def parse(stream: str, body: bytes | bytearray, validators: Validators, now_s: float | None = None) -> dict[str, Any]:
    """A payload checked as the bridge and the alert service both check it: size, JSON, schema, then its
    times (check_times) against the receiver's clock `now_s` (default: this machine's)."""
    if len(body) > MAX_PAYLOAD_BYTES:
        raise Malformed(f"too large: {len(body)} bytes, more than the {MAX_PAYLOAD_BYTES} a payload may have")
    doc = decode(body)
    try:
        doc = validators[stream](doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise Malformed(f"schema: {exc.message[:300]}") from None
    # JSON Schema's "integer" takes 1796292000000.0 too: one minute must have one key, whatever the sender wrote.
    doc["ts"] = int(doc["ts"])
    check_times(doc, time.time() if now_s is None else now_s)
    if stream == "metrics":
        check_minute(doc)
    return doc


def check_times(doc: dict[str, Any], now_s: float) -> None:
    """What a schema cannot say: ts not far ahead of now, the payload's other times near its ts, and an
    episode's start before its end."""
    ts_s = doc["ts"] / 1000
    times = {name: doc[name] for name in _WINDOWED & doc.keys() if doc[name] is not None}
    for name, t_s in times.items():
        if abs(t_s - ts_s) > MAX_SPAN_S:
            raise Malformed(f"time: {name} {t_s} is more than {MAX_SPAN_S:g} s from ts {doc['ts']}")
    if (latest_s := max([ts_s, *times.values()])) > now_s + MAX_AHEAD_S:
        raise Malformed(f"time: {latest_s - now_s:.0f} s ahead of this clock (ts {doc['ts']})")
    if "start_s" in doc and "end_s" in doc and not 0 <= doc["end_s"] - doc["start_s"] <= MAX_SPAN_S:
        raise Malformed(f"time: from start_s {doc['start_s']} to end_s {doc['end_s']} is no episode")


def check_minute(minute: Mapping[str, Any]) -> None:
    """What a schema cannot say of a minute (metrics.json bounds each field alone): where its data ends lies in it; its
    slouch, its lean (one side at a time) and its activities are seconds it was worn; its rotations, which do not
    overlap, fit in it together; a side's peaks summed are at most its rotations × the largest peak. A field absent (a
    minute the alert service kept leaves None out) is 0."""
    def value(name: str) -> Any:
        return minute.get(name) or 0

    worn_s = value("worn_s")
    # Where its data ends lies in it (read as its end where absent: alerts/rules.py, sitting_s): one beyond made a
    # wearer "sitting" for as long as it said. (A minute the alert service kept has no minute_start_s.)
    if (until_s := minute.get("seen_until_s")) is not None and (start_s := minute.get("minute_start_s")) is not None \
            and not start_s <= until_s <= start_s + MINUTE_S:
        raise Malformed(f"minute: seen_until_s {until_s:g} is not in the minute from minute_start_s {start_s:g}")
    for what, names in _SECONDS_OF_WORN.items():
        if (seconds := sum(value(name) for name in names)) > worn_s + MINUTE_SLACK_S:
            raise Malformed(f"minute: {what} ({' + '.join(names)}) {seconds:g} s is more than worn_s {worn_s:g}")
    if (rotations := value("rotations_left") + value("rotations_right")) > MAX_ROTATIONS_PER_MINUTE:
        raise Malformed(f"minute: {rotations} rotations, more than the {MAX_ROTATIONS_PER_MINUTE} a minute holds")
    for side in SIDES:
        if (summed := value(f"rotation_{side}_cumulative_deg")) > (count := value(f"rotations_{side}")) * MAX_PEAK_DEG:
            raise Malformed(f"minute: rotation_{side}_cumulative_deg {summed:g} is more than rotations_{side} "
                            f"{count} × {MAX_PEAK_DEG:g}°")
