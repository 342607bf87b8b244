"""The message contract has one source: the payload dataclasses. The JSON Schemas, InfluxDB's fields, the
alert service's minutes and the report's columns must all follow them, so adding a field is one edit
plus its schema entry, and a field forgotten anywhere fails here."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from importlib import resources
from zoneinfo import ZoneInfo, available_timezones

import fastjsonschema
import pytest

from alerts.state import MINUTE_FIELDS
from contract.influx_schema import FIELDS, MEASURED_BY, MEASUREMENT, TAGS, to_line_protocol
from contract.messages import ENVELOPE, PAYLOAD_CLASS, TIME_FIELDS, payload, value_fields
from contract.validation import Malformed, load_validators, parse
from pipeline.events import EpisodeStart, LiveState
from report.query import COLUMNS
from service_io.zones import iana_name

SCHEMA_OF = {"metrics": "metrics.json", "status": "status.json", "slouch": "event.json", "rotation": "event.json",
             "lean": "event.json", "calibration": "event.json", "episode_start": "event.json", "live": "live.json"}


def schema(name: str) -> dict:
    return json.loads((resources.files("contract") / "schemas" / name).read_text())


def payload_keys(kind: str) -> set[str]:
    names = {f.name for f in fields(PAYLOAD_CLASS[kind])} - {"kind"}
    return set(ENVELOPE) | names | set(value_fields(kind))


@pytest.mark.parametrize("kind", list(PAYLOAD_CLASS))
def test_every_payload_key_is_in_its_schema_and_every_schema_key_is_some_payloads(kind):
    properties = set(schema(SCHEMA_OF[kind])["properties"])
    assert payload_keys(kind) <= properties, payload_keys(kind) - properties
    sharing = [k for k, name in SCHEMA_OF.items() if name == SCHEMA_OF[kind]]
    assert properties == set().union(*(payload_keys(k) for k in sharing))


@pytest.mark.parametrize("kind", list(PAYLOAD_CLASS))
def test_influx_fields_are_the_payload_values_less_tags(kind):
    chooser = {MEASURED_BY[kind]} if kind in MEASURED_BY else set()  # names the measurement: not stored
    assert set(FIELDS[kind]) | set(TAGS.get(kind, ())) | chooser == set(value_fields(kind))
    assert not set(FIELDS[kind]) & TIME_FIELDS


def test_an_episode_start_adds_to_its_end_point_and_never_overwrites_it():
    """Start and end land on one point (same measurement, tags, time); the start writes only fields the end
    never writes, so either order, twice each, leaves the end's values and one point per episode."""
    for episode in ("slouch", "lean"):
        assert TAGS.get(episode, ()) == tuple(t for t in TAGS["episode_start"] if episode == "lean")
        assert not set(FIELDS["episode_start"]) & set(FIELDS[episode])
        assert "duration_s" in FIELDS[episode]  # what episodes are counted by (docs/influx.md)


def test_the_alert_service_and_the_report_read_what_is_stored():
    assert set(MINUTE_FIELDS) <= set(FIELDS["metrics"])
    for measurement, columns in COLUMNS.values():
        kind = next(k for k, m in MEASUREMENT.items() if m == measurement) if measurement in MEASUREMENT.values() \
            else None
        if kind is not None:
            assert set(columns) <= set(FIELDS[kind]) | set(TAGS.get(kind, ())), (measurement, columns)


def test_the_pipeline_section_reaches_the_pipeline(tmp_path):
    from pipeline.stream import PipelineSettings
    from service_io.config import ConfigError, load_config

    assert load_config(None, env={}).pipeline.settings() == PipelineSettings()  # defaults are the pipeline's
    path = tmp_path / "posture.toml"
    path.write_text("[pipeline]\nrate_hz = 50\nslouch_threshold_deg = 12.5\nlean_dwell_s = 8\n"
                    "calibration_max_age_h = 12\n")
    settings = load_config(path, env={}).pipeline.settings()
    assert settings.rate_hz == 50 and settings.slouch.rate_hz == 50 and settings.orientation.rate_hz == 50
    assert settings.slouch.threshold_deg == 12.5 and settings.lean.dwell_s == 8
    assert settings.calibration.max_age_s == 12 * 3600
    for bad in ("slouch_threshold_deg = -3", "slouch_threshold_deg = 2", "lean_threshold_deg = 1.5",
                "rotation_min_peak_deg = 75", "rate_hz = 0", "slouch_dwell_s = 0"):
        path.write_text(f"[pipeline]\n{bad}\n")
        with pytest.raises(ConfigError, match=f"pipeline.{bad.split()[0]}: must be above"):
            load_config(path, env={})
    path.write_text("[pipeline]\ncalibration_max_age_h = 0\n")
    assert load_config(path, env={}).pipeline.settings().calibration.max_age_s == 0  # never
    for bad in ("-1", "0.1", "nan", "inf"):  # -1: a request after every calibration made; nan: never, unsaid
        path.write_text(f"[pipeline]\ncalibration_max_age_h = {bad}\n")
        with pytest.raises(ConfigError, match="pipeline.calibration_max_age_h: must be 0"):
            load_config(path, env={})


# The live state and an episode's start (issue 13) -------------------------------------------------------------

T0_S = 1_700_000_000.0


def live_body(**changes) -> dict:
    state = LiveState(t_s=T0_S, calibration="calibrated", flexion_deg=24.5, lateral_deg=-3.0, rotation_deg=12.0,
                      activity="sitting", slouching_since_s=T0_S - 12.0, leaning_since_s=None, lean_side=None,
                      sitting_since_s=T0_S - 1800.0)
    return payload("DeskSensor", state) | changes


def start_body(**changes) -> dict:
    return payload("DeskSensor", EpisodeStart("slouch", T0_S - 5.0, 5.0)) | changes


def check(stream: str, body: dict) -> dict:
    return parse(stream, json.dumps(body).encode(), load_validators(), now_s=T0_S + 60)


def test_live_states_and_episode_starts_as_the_pipeline_makes_them_pass():
    assert check("live", live_body())["ts"] == int(T0_S * 1000)
    uncalibrated = live_body(calibration="uncalibrated", flexion_deg=None, lateral_deg=None, rotation_deg=None,
                             activity=None, slouching_since_s=None, sitting_since_s=None)
    check("live", uncalibrated)
    check("live", live_body(leaning_since_s=T0_S - 8.0, lean_side="left", activity="standing"))
    assert check("events", start_body())["side"] is None
    check("events", start_body(episode="lean", side="right", confirmed_after_s=30.0))


@pytest.mark.parametrize("changes, reason", [
    ({"flexion_deg": 720.0}, "schema"),
    ({"rotation_deg": -181.0}, "schema"),
    ({"lateral_deg": "12"}, "schema"),
    ({"calibration": "hacked"}, "schema"),
    ({"activity": "flying"}, "schema"),
    ({"lean_side": "up"}, "schema"),
    ({"ts": 10 ** 19}, "schema"),
    ({"t_s": 1.0}, "schema"),
    ({"slouching_since_s": 1e12}, "schema"),
    ({"sitting_since_s": -5.0}, "schema"),
    ({"device": "desk 1"}, "schema"),
    ({"kind": "metrics"}, "schema"),
    ({"extra": 1}, "schema"),
    ({"flexion_deg": None, "slouching_since_s": None, "activity": None, "calibration": None}, "schema"),
    ({"slouching_since_s": T0_S - 3 * 86400}, "time"),  # a day and more from its ts
    ({"leaning_since_s": T0_S + 2 * 86400, "lean_side": "left"}, "time"),
    ({"sitting_since_s": T0_S - 2 * 86400}, "time"),
    ({"ts": int((T0_S + 3 * 86400) * 1000), "t_s": T0_S + 3 * 86400, "slouching_since_s": None,
      "sitting_since_s": None}, "time"),  # from the future of the receiver's clock
])
def test_hostile_live_states_are_refused(changes, reason):
    with pytest.raises(Malformed, match=f"^{reason}:"):
        check("live", live_body(**changes))


def test_a_live_state_must_carry_every_value():
    body = live_body()
    del body["lean_side"]
    with pytest.raises(Malformed, match="^schema:"):
        check("live", body)


@pytest.mark.parametrize("changes, reason", [
    ({"episode": "sit"}, "schema"),
    ({"episode": "lean"}, "schema"),  # a lean's start names its side
    ({"side": "left"}, "schema"),  # a slouch has none
    ({"confirmed_after_s": -1.0}, "schema"),
    ({"confirmed_after_s": 1e9}, "schema"),
    ({"start_s": None}, "schema"),
    ({"duration_s": 5.0, "extra": True}, "schema"),
    ({"start_s": T0_S - 3 * 86400}, "time"),
])
def test_hostile_episode_starts_are_refused(changes, reason):
    with pytest.raises(Malformed, match=f"^{reason}:"):
        check("events", start_body(**changes))


def test_rotations_and_leans_still_need_a_side():
    rotation = {"schema": 1, "kind": "rotation", "device": "d", "ts": int(T0_S * 1000), "start_s": T0_S,
                "end_s": T0_S + 2, "side": None, "peak_deg": 30.0, "duration_s": 2.0}
    with pytest.raises(Malformed, match="^schema:"):
        check("events", rotation)
    lean = {k: v for k, v in rotation.items() if k != "peak_deg"} | {"kind": "lean", "mean_lateral_deg": -8.0}
    check("events", lean | {"side": "left"})
    with pytest.raises(Malformed, match="^schema:"):
        check("events", lean)


def test_every_schema_takes_the_same_device_ids_and_times():
    """live.json beside the others: one device pattern (contract/identity.py) and one range of times."""
    first = schema("metrics.json")["properties"]
    for name in {*SCHEMA_OF.values(), "alert.json"}:
        properties = schema(name)["properties"]
        assert properties["device"] == first["device"] | ({"description": properties["device"]["description"]}
                                                           if "description" in properties["device"] else {}), name
        assert (properties["ts"]["minimum"], properties["ts"]["maximum"]) == (first["ts"]["minimum"],
                                                                                first["ts"]["maximum"]), name


# The bridge's fast path (issue 14): orjson reads as json did, and line protocol is what influxdb-client wrote ---------

def reference_lines(payload: dict, stream: str = "") -> list[str]:
    """The points as the bridge wrote them before issue 14, with influxdb-client's Point: the reference the line
    protocol written by contract/influx_schema.py must equal byte for byte."""
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

    from contract.influx_schema import ALERT_MEASUREMENT, SUMMARY_DEFAULTS, SUMMARY_FIELDS

    if stream == "alerts/log":
        stretch = payload.get("stretch") or {}
        point = (Point(ALERT_MEASUREMENT).tag("device_id", payload["device"]).tag("kind", payload["kind"])
                 .tag("severity", payload["severity"]).field("alert_id", payload["id"])
                 .field("title", payload["title"]).field("message", payload["message"])
                 .field("text", f"{payload['title']}: {payload['message']}"))
        if stretch.get("name"):
            point = point.field("stretch", stretch["name"])
        for name, cast in SUMMARY_FIELDS.items():
            value = payload["evidence"].get(name)
            value = SUMMARY_DEFAULTS.get(name) if value is None else value
            if payload["kind"] == "summary" and value is not None:
                point = point.field(name, cast(value))
        return [point.time(payload["ts"], WritePrecision.MS).to_line_protocol()]
    kind = payload["kind"]
    target = payload[MEASURED_BY[kind]] if kind in MEASURED_BY else kind
    point = Point(MEASUREMENT[target]).tag("device_id", payload["device"])
    for tag in TAGS.get(target, ()):
        point = point.tag(tag, payload[tag])
    for name, cast in FIELDS[kind].items():
        if payload.get(name) is not None:
            point = point.field(name, cast(payload[name]))
    return [point.time(payload["ts"], WritePrecision.MS).to_line_protocol()]


def reference_dead_letter(topic: str, reason: str, payload: str, t_ms: int) -> str:
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

    def one_line(text: str) -> str:
        return text.replace("\r", " ").replace("\n", " ")

    point = (Point("posture_deadletter").tag("kind", reason.split(":", 1)[0][:40])
             .field("topic", one_line(topic[:1000])).field("reason", one_line(reason[:2000]))
             .field("payload", one_line(payload[:32 * 1024])))
    return str(point.time(t_ms, WritePrecision.MS).to_line_protocol())


# What line protocol must escape, and what it must not touch: quotes, backslashes (a trailing one too), line
# ends, commas, spaces, equals signs, tabs, a NUL, accents, a degree sign, an emoji, a right-to-left mark.
HOSTILE = ['"', "\\", "\n", "\r", "\t", ",", " ", "=", "\x00", "é", "°", "😀", "\u200f", "a", "Z", "9", "_", "-", "{"]


def hostile_text(rng, max_len: int = 12) -> str:
    return "".join(rng.choice(HOSTILE) for _ in range(rng.randrange(max_len + 1)))


def number(rng):
    """Floats of every shape repr gives (whole, tiny, huge, negative zero), and ints where a float is declared
    (JSON's 60 for 60.0)."""
    choice = rng.randrange(8)
    if choice == 0:
        return float(rng.randrange(-200, 200))
    if choice == 1:
        return rng.uniform(-1, 1) * 10 ** rng.randrange(-30, 30)
    if choice == 2:
        return rng.choice([0.0, -0.0, 1e16, 1e-5, 123456789012345.0, 5e-324, 1.7976931348623157e308])
    if choice == 3:
        return rng.randrange(-10 ** 6, 10 ** 6)
    return round(rng.uniform(-180, 180), rng.randrange(1, 17))


def value_of(rng, cast: type):
    if rng.random() < 0.15:
        return None
    if cast is float:
        return number(rng)
    if cast is int:  # JSON Schema's integer: 3.0 is one too
        return rng.choice([0, 1, rng.randrange(2 ** 63), -rng.randrange(2 ** 63), float(rng.randrange(1000))])
    if cast is bool:
        return rng.random() < 0.5
    return hostile_text(rng)


def generated_payloads(seed: int = 14, per_kind: int = 300):
    import random

    from contract.influx_schema import SUMMARY_FIELDS

    rng = random.Random(seed)
    tag_values = lambda: rng.choice([hostile_text(rng), "left", "right", "", None, "a\\", "x,y=z w"])  # noqa: E731
    for kind in PAYLOAD_CLASS:
        targets = ["slouch", "lean"] if kind in MEASURED_BY else [kind]
        for i in range(per_kind):
            target = targets[i % len(targets)]
            payload = {"schema": 1, "kind": kind, "device": rng.choice(["DeskSensor", hostile_text(rng) or "d"]),
                       "ts": rng.randrange(946684800000, 4102444800000)}
            if kind in MEASURED_BY:
                payload[MEASURED_BY[kind]] = target
            for tag in TAGS.get(target, ()):
                payload[tag] = tag_values()
            payload |= {name: value_of(rng, cast) for name, cast in FIELDS[kind].items()}
            yield payload, ""
    for i in range(per_kind):
        kind = rng.choice(["summary", "slouch", "lean", "recovered"])
        evidence = {name: value_of(rng, cast) for name, cast in SUMMARY_FIELDS.items()}
        alert = {"kind": kind, "device": rng.choice(["DeskSensor", hostile_text(rng) or "d"]),
                 "severity": rng.choice(["info", "warning", hostile_text(rng)]), "id": hostile_text(rng, 40),
                 "title": hostile_text(rng, 40), "message": hostile_text(rng, 80), "ts": 1_700_000_000_000 + i,
                 "stretch": rng.choice([None, {}, {"name": hostile_text(rng)}, {"name": ""}]), "evidence": evidence}
        yield alert, "alerts/log"


def test_line_protocol_is_what_influxdb_client_wrote_for_every_payload_hostile_strings_included():
    from contract.influx_schema import to_line_protocol

    compared = 0
    for doc, stream in generated_payloads():
        assert to_line_protocol(doc, stream) == reference_lines(doc, stream), doc
        compared += 1
    assert compared > 2500


def test_every_field_is_left_out_or_written_with_its_one_type():
    """Nothing at all to write is no point, as influxdb-client had it; a float that is not finite is left out."""
    from contract.influx_schema import to_line_protocol

    empty = {"schema": 1, "kind": "slouch", "device": "d", "ts": 1_700_000_000_000} | dict.fromkeys(FIELDS["slouch"])
    assert to_line_protocol(empty) == reference_lines(empty) == [""]
    odd = empty | {"duration_s": float("nan"), "peak_flexion_deg": float("inf"), "mean_flexion_deg": 3}
    assert to_line_protocol(odd) == reference_lines(odd) == ["posture_slouch,device_id=d mean_flexion_deg=3 "
                                                             "1700000000000"]


def test_a_whole_number_ts_sent_as_a_float_is_stored_at_that_millisecond():
    """JSON Schema's integer takes 1700000000000.0; influxdb-client raised on it (the message was dead-lettered
    with the number as its reason); written directly it is the same point as the integer's."""
    from contract.influx_schema import to_line_protocol

    status = {"schema": 1, "kind": "status", "device": "d", "ts": 1_700_000_000_000, "online": True}
    assert to_line_protocol(status | {"ts": 1.7e12}) == to_line_protocol(status) == reference_lines(status)


def test_a_whole_number_ts_sent_as_a_float_is_read_as_the_integer():
    """The alert service keys a day's minutes by ts: 1.7e12 and 1700000000000 were two minutes there (counted
    twice), and the float key then crashed its pruning on every restart."""
    from alerts.state import DeviceState

    state = DeviceState()
    for body in (live_body(), live_body(ts=float(live_body()["ts"]))):
        doc = check("live", body)
        assert type(doc["ts"]) is int and doc["ts"] == live_body()["ts"]
        state.add_minute(doc)
    assert list(state.minutes) == [str(live_body()["ts"])]


def test_dead_letters_are_what_influxdb_client_wrote():
    import random

    from contract.influx_schema import dead_letter_line

    rng = random.Random(7)
    cases = [("posture/d/metrics", "not JSON: Expecting value", "{", 1), ("t", ":no kind", "x", 2),
             ("t", "refused by InfluxDB: partial write: field type conflict", 'a,b=c d="e\\"f" 1', 3),
             ("t", "schema: x", "[" * 40_000, 4)]
    cases += [(hostile_text(rng, 30), hostile_text(rng, 60), hostile_text(rng, 200), k) for k in range(500)]
    for topic, reason, body, t_ms in cases:
        assert dead_letter_line(topic, reason, body, t_ms) == reference_dead_letter(topic, reason, body, t_ms)


def reference_json(body: bytes):
    """How parse() read a payload before issue 14: Python's json, NaN, Infinity and 1e400 refused."""
    import math

    def constant(name):
        raise ValueError(name)

    def finite(text):
        if not math.isfinite(value := float(text)):
            raise ValueError(text)
        return value

    doc = json.loads(body, parse_constant=constant, parse_float=finite)
    json.dumps(doc, ensure_ascii=False).encode()  # a lone surrogate: refused since (no UTF-8 text holds one)
    return doc


def same_json(ours, theirs) -> bool:
    """Equal, where an integer beyond 64 bits may be orjson's float for it (the schemas refuse both)."""
    if isinstance(theirs, int) and not isinstance(theirs, bool) and not -2 ** 63 <= theirs < 2 ** 64:
        return isinstance(ours, float) and ours == float(theirs)
    if isinstance(theirs, dict):
        return (isinstance(ours, dict) and list(ours) == list(theirs)
                and all(same_json(ours[k], theirs[k]) for k in theirs))
    if isinstance(theirs, list):
        return isinstance(ours, list) and len(ours) == len(theirs) and all(map(same_json, ours, theirs))
    return type(ours) is type(theirs) and ours == theirs


def test_orjson_takes_and_refuses_what_json_did():
    """Numbers of every shape, documents with hostile strings, and thousands of mangled payloads of ours (bytes
    changed, cut, inserted: numbers, escapes, invalid UTF-8) read as Python's json read them: the same document, or
    refused as not JSON."""
    import random

    from contract.validation import decode

    rng = random.Random(14)
    live = json.dumps(live_body()).encode()
    bodies = [live, json.dumps(start_body()).encode(), b'{"a": [1, 2.5, -0, -0.0, 1E2, "\\u00e9\\ud83d\\ude00"]}']
    pieces = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"123456789012345678901234567890",
              b"18446744073709551615", b"-9223372036854775809", b'"\\ud800"', b"\xff", b"\xc3", b"\\", b'"', b",", b"]",
              b"}", b"{", b"[", b"0", b"01", b"1.", b".5", b"+1", b"-", b"e5", b"true", b"nul", b"\x00", b" ", b"\t",
              b"\n", b"\xef\xbb\xbf", b'"\\u0000"', b'"\\x"']
    cases: list[bytes] = []
    for _ in range(3000):  # numbers, well-formed or not, of every length and exponent
        text = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 30)))
        text = rng.choice(["", "-", "+"]) + text + rng.choice(["", f".{rng.randrange(10 ** 6)}", "."])
        text += rng.choice(["", f"e{rng.randrange(-400, 400)}", f"E+{rng.randrange(400)}", "e"])
        cases.append(b'{"v": ' + text.encode() + b"}")
    for _ in range(1000):  # well-formed documents with hostile strings, escaped or not
        doc = {hostile_text(rng): [hostile_text(rng), number(rng), {"n": None, "b": True}] for _ in range(3)}
        cases.append(json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode())
    for _ in range(4000):  # and mangled
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randrange(1, 4)):
            at, piece = rng.randrange(len(body) + 1), rng.choice(pieces)
            action = rng.randrange(3)
            if action == 0:
                body[at:at] = piece
            elif action == 1:
                del body[at:at + rng.randrange(1, 4)]
            else:
                body[at:at + len(piece)] = piece
        if rng.random() < 0.05:  # mangled further later
            bodies.append(bytes(body))
        cases.append(bytes(body))
    taken = 0
    for body in cases:
        try:
            theirs = reference_json(body)
        except (ValueError, RecursionError):  # UnicodeEncodeError (a lone surrogate) is a ValueError
            with pytest.raises(Malformed, match="^not JSON"):
                decode(body)
            continue
        assert same_json(decode(body), theirs), body
        taken += 1
    assert taken > 1000 and len(cases) - taken > 1000  # both ways, often


@pytest.mark.parametrize("body, read", [
    (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a byte-order mark: json took it, orjson does not
    ('{"a": "é"}'.encode("utf-16"), {"a": "é"}),  # json reads UTF-16 too
    (b'{"a": 18446744073709551615}', {"a": 2 ** 64 - 1}),
])
def test_what_json_took_that_orjson_does_not_is_still_taken(body, read):
    from contract.validation import decode

    assert decode(body) == read


@pytest.mark.parametrize("body, reason", [
    (b'{"a": NaN}', "not JSON: NaN is not a JSON number"),
    (b'{"a": Infinity}', "not JSON: Infinity is not a JSON number"),
    (b'{"a": -Infinity}', "not JSON: -Infinity is not a JSON number"),
    (b'{"a": 1e400}', "not JSON: 1e400 is not a finite number"),
    (b'{"a": -1e400}', "not JSON: -1e400 is not a finite number"),
    # Past Python's int() (4300 digits): its own ValueError, which the services took for a bug or a kind of its words.
    pytest.param(b'{"a": ' + b"9" * 5000 + b"}", "not JSON: an integer of 5000 digits", id="5000 digits"),
    pytest.param(b'{"a": [-' + b"9" * 4301 + b"]}", "not JSON: an integer of 4301 digits", id="-4301 digits"),
    (b"[" * 1025 + b"]" * 1025, "not JSON: nested too deep"),  # past orjson's depth
    (b"[" * 5000, "not JSON: nested too deep"),
    (b'{"a": "\xff"}', "not JSON: 'utf-8' codec can't decode byte 0xff"),
    (b"", "not JSON: Expecting value"),
    (b'{"a": "\\ud800"}', "not JSON: a lone surrogate"),  # json takes it; no UTF-8 text holds it
    (b'{"\\udfff": 1}', "not JSON: a lone surrogate"),
    (b'{"a": ["x\\ud83dy"]}', "not JSON: a lone surrogate"),
    ('{"a": "\\ud800"}'.encode("utf-16"), "not JSON: a lone surrogate"),
])
def test_what_json_refused_is_refused_in_its_words(body, reason):
    from contract.validation import decode

    with pytest.raises(Malformed, match=f"^{reason}"):
        decode(body)


def test_an_integer_past_64_bits_is_refused_by_the_schema_as_before():
    for value in (2 ** 64, 2 ** 70, 10 ** 30, -(2 ** 64)):
        body = json.dumps(live_body(ts=value)).encode()
        with pytest.raises(Malformed, match="^schema:"):
            parse("live", body, load_validators(), now_s=T0_S + 60)


def test_a_live_state_carries_its_batchs_earlier_states_compactly_and_each_is_a_point():
    from pipeline.events import EarlierState

    earlier = tuple(EarlierState(1_700_000_000.0 + j / 10, 10.0 + j, -1.234567, 179.5) for j in range(9))
    live = LiveState(1_700_000_000.99, "calibrated", 19.0, -1.0, 3.0, "sitting", earlier=earlier)
    doc = payload("Desk", live)
    assert doc["earlier"][0] == [-990, 10.0, -1.23, 179.5] and len(doc["earlier"]) == 9
    assert "earlier" not in payload("Desk", LiveState(1_700_000_000.99, "uncalibrated"))  # none: no key
    parsed = parse("live", json.dumps(doc).encode(), load_validators(), 1_700_000_001.0)
    lines = to_line_protocol(parsed, "live")
    assert len(lines) == 10 and lines[2] == "posture_live,device_id=Desk flexion_deg=11,lateral_deg=-1.23," \
                                           "rotation_deg=179.5 1700000000100"


@pytest.mark.parametrize("earlier", [
    [[10, 1.0, 2.0, 3.0]],  # after the state itself
    [[0, 1.0, 2.0, 3.0]],  # at the state's own time: its point, written over by the earlier state's angles
    [[-10, 1.0, 2.0]],  # an angle missing
    [[-10, 1.0, 2.0, 3.0, 4.0]],
    [[-10, 1.0, 2.0, 181.0]],
    [[-10.5, 1.0, 2.0, 3.0]],
    [[-10, 1.0, 2.0, 3.0]] * 101,
    [[-10, None, 2.0, 3.0]],
])
def test_earlier_states_out_of_the_contract_are_refused(earlier):
    doc = payload("Desk", LiveState(1_700_000_000.99, "calibrated", 19.0, -1.0, 3.0, "sitting"))
    with pytest.raises(Malformed):
        parse("live", json.dumps({**doc, "earlier": earlier}).encode(), load_validators(), 1_700_000_001.0)


@pytest.mark.parametrize("stream, doc", [
    ("status", {"schema": 1, "kind": "status", "device": "dev", "ts": 1_700_000_000_000, "online": True,
                "sensor_name": "x\ud800y"}),
    ("events", {"schema": 1, "kind": "calibration", "device": "dev", "ts": 1_700_000_000_000, "t_s": 1_700_000_000.0,
                "status": "refused", "message": "bad \ud800 bend", "with_bend": False}),
])
def test_a_lone_surrogate_in_a_string_field_is_refused_not_taken(stream, doc):
    """json.dumps writes it as the escape "\\ud800", which json.loads took: the bridge's line protocol, and the alert
    service's text mirror of the alert it made of it, could not be encoded as UTF-8. The UnicodeEncodeError ended the
    bridge (and the alert service) with the message unacknowledged, so every restart met it again: nothing more was
    stored (or alerted) until someone removed the session."""
    body = json.dumps(doc).encode()
    assert b"\\ud800" in body
    with pytest.raises(Malformed, match="^not JSON: a lone surrogate"):
        parse(stream, body, load_validators(), now_s=1_700_000_100.0)


@pytest.mark.parametrize("message, taken", [("recalibrated with a 30° forward bend", True),
                                            ("bad bend\n2026-12-05 09:00:00,000 WARNING posture.alerts: FORGED", False),
                                            ("a NUL\x00 here", False), ("an escape \x1b[31m", False)])
def test_an_event_message_is_one_printable_line(message, taken):
    """A refused calibration's message went into the alert service's log (a newline forged a whole line there), to
    the phone and into InfluxDB; the status's sensor_name already refused control characters."""
    doc = {"schema": 1, "kind": "calibration", "device": "dev", "ts": 1_700_000_000_000, "t_s": 1_700_000_000.0,
           "status": "refused", "message": message, "with_bend": False}
    body = json.dumps(doc).encode()
    if taken:
        assert parse("events", body, load_validators(), now_s=1_700_000_100.0)["message"] == message
    else:
        with pytest.raises(Malformed):
            parse("events", body, load_validators(), now_s=1_700_000_100.0)


def test_minute_coverage_reads_a_minute_line_as_coverage_reads_its_payload():
    """The bridge reads only the coverage fields of each minute's line (splitting all of them was most of its own
    thread's time a message); what it reads is what contract.messages.coverage reads of the payload, an absent field
    0, an integer's `i` dropped, a field whose name ends like one of them not taken for it."""
    from contract.influx_schema import minute_coverage
    from contract.influx_schema import to_line_protocol as lines_of
    from contract.messages import coverage, payload
    from pipeline.events import MinuteMetrics

    for worn_s, lost in ((60.0, 0), (20.25, 7), (0.0, 0), (59.999, 123456)):
        doc = json.loads(json.dumps(payload("dev.1:a-b_C", MinuteMetrics(1_700_000_040.0, worn_s=worn_s,
                                                                           lost_samples=lost))))
        assert minute_coverage(lines_of(doc, "metrics")[0]) == ("dev.1:a-b_C", 1_700_000_040_000, coverage(doc))
    assert minute_coverage("posture_minute,device_id=d xworn_s=5,sitting_s=1 60000") == ("d", 60000, (0.0, 0.0))
    assert minute_coverage("posture_minute,device_id=d worn_s=5,lost_samples=2i 60000") == ("d", 60000, (5.0, 2.0))
    assert minute_coverage("posture_slouch,device_id=d duration_s=5 60000") is None


# What a minute can hold (contract/validation.py check_minute, metrics.json) -------------------------------------

def test_a_minutes_bounds_are_derived_from_what_bounds_them():
    from contract.validation import MAX_PEAK_DEG, MAX_ROTATIONS_PER_MINUTE, MINUTE_MAX_S
    from pipeline.detectors import RotationSettings
    from pipeline.events import RATE_HZ_RANGE
    from pipeline.metrics import SECONDS_IN_MINUTE

    minute = schema("metrics.json")["properties"]
    assert {minute[name]["maximum"] for name in SECONDS_IN_MINUTE} == {MINUTE_MAX_S}
    # An excursion lasts min_s or more and the next begins after it ended: a minute's seconds hold so many.
    for side in ("left", "right"):
        assert minute[f"rotations_{side}"]["maximum"] == MAX_ROTATIONS_PER_MINUTE
        assert MAX_ROTATIONS_PER_MINUTE == round(MINUTE_MAX_S / RotationSettings().min_s)
        assert minute[f"rotation_{side}_cumulative_deg"]["maximum"] == MAX_ROTATIONS_PER_MINUTE * MAX_PEAK_DEG
        for peak in (f"rotation_{side}_peak_mean_deg", f"rotation_{side}_peak_max_deg"):
            assert (minute[peak]["minimum"], minute[peak]["maximum"]) == (0, MAX_PEAK_DEG)  # a magnitude
    assert schema("event.json")["properties"]["peak_deg"]["minimum"] == 0
    assert minute["lost_samples"]["maximum"] == RATE_HZ_RANGE[1] * MINUTE_MAX_S  # the fastest rate, a minute's worth


def minute_body(**changes) -> dict:
    from pipeline.events import MinuteMetrics

    m = MinuteMetrics(minute_start_s=T0_S, worn_s=60.0, sitting_s=50.0, standing_s=10.0, slouch_s=20.0,
                      lean_left_s=5.0, lean_right_s=3.0, rotations_left=2, rotations_right=1,
                      rotation_left_cumulative_deg=60.0, rotation_right_cumulative_deg=25.0, lost_samples=12)
    return payload("DeskSensor", m) | changes


@pytest.mark.parametrize("changes, reason", [
    ({"slouch_s": 60.0, "worn_s": 1.0, "sitting_s": 1.0, "standing_s": 0.0}, "minute: slouch"),
    ({"lean_left_s": 40.0, "lean_right_s": 40.0}, "minute: lean"),
    ({"walking_s": 60.0}, "minute: activity"),
    ({"rotations_left": 10 ** 9}, "schema"),
    ({"rotations_left": 700, "rotations_right": 700}, "minute: 1400 rotations"),
    ({"rotation_left_cumulative_deg": 1e6}, "schema"),
    ({"rotation_left_cumulative_deg": 361.0}, "minute: rotation_left_cumulative_deg 361 is more than rotations_left 2"),
    ({"rotation_right_cumulative_deg": 1.0, "rotations_right": 0}, "minute: rotation_right_cumulative_deg"),
    ({"lost_samples": 2 ** 63 - 1}, "schema"),
    ({"rotation_left_peak_max_deg": -30.0}, "schema"),
    ({"seen_until_s": T0_S + 61.0}, "minute: seen_until_s"),  # read so, its wearer sat a minute more than seen
    ({"seen_until_s": T0_S - 1.0}, "minute: seen_until_s"),
])
def test_a_minute_no_pipeline_makes_is_refused(changes, reason):
    """What the report bounded when it read (bounded_minute) and the dashboards and the alert service's day summed:
    one such minute put 1004 rotations on the Daily dashboard against 124 in the report."""
    check("metrics", minute_body())
    with pytest.raises(Malformed, match=f"^{re.escape(reason)}"):
        check("metrics", minute_body(**changes))


def test_a_minute_an_older_gateway_sent_is_taken():
    """Gateways before the slouch and lean seconds were bounded by the worn ones (pipeline/metrics.py) sent a little
    more than worn (an accuracy day: 26.808 s of slouch in 26.805 s worn): they wait in spools and sessions."""
    check("metrics", minute_body(worn_s=26.805, sitting_s=26.805, standing_s=0.0, slouch_s=26.808092117309577,
                                 lean_left_s=26.808, lean_right_s=0.0))


def test_a_minute_from_a_gateway_before_seen_until_s_is_taken():
    """Optional, as calibrated_s was: the minutes of older gateways wait in spools and sessions (read to their end)."""
    old = minute_body(sitting_since_s=T0_S - 600.0)
    del old["seen_until_s"]
    check("metrics", old)
    check("metrics", minute_body(seen_until_s=T0_S + 4.5))
    check("metrics", minute_body(seen_until_s=T0_S + 60.0))


def copies_and_parts(case) -> list:
    """The minutes a gateway sends for `case`, copies included: at each lost link (a reconnect) the minute it was lost
    in goes out unfinished and later whole (pipeline.link_lost), and a restart halfway through sends the stopped
    minute's part and then both parts merged (gateway/service.py, _continued)."""
    from evaluation.harness import load_case_scenario
    from evaluation.live_feed import LinkModel, LiveLink
    from firmware_sim.imu import SensorSimulation
    from pipeline.metrics import merge_minutes
    from pipeline.stream import PipelineSettings, PosturePipeline
    from sensor.batching import BatchCollector

    sim = SensorSimulation(load_case_scenario(case), seed=case.seed, **case.sensor)
    feed = LiveLink(sim.rate_hz, LinkModel(loss_p=case.loss_p, outages_s=case.outages_s, seed=case.seed))
    settings = PipelineSettings.for_rate(sim.rate_hz)
    pipeline, collector = PosturePipeline(settings), BatchCollector(1.0, sim.rate_hz)
    restart_s, stopped, minutes, reconnects = None, None, [], 0
    for chunk in sim.chunks(max_samples=20_000):
        for fed in feed.feed(chunk):
            if feed.stats.reconnects > reconnects:  # the link was lost before this batch
                reconnects = feed.stats.reconnects
                minutes += pipeline.link_lost().metrics
            if (batch := collector.add(fed.batch)) is None:
                continue
            restart_s = restart_s or float(batch.t_s[0]) + sim.duration_s / 2
            if batch.t_s[0] >= restart_s and pipeline.calibration is not None:
                out = pipeline.finish()  # a restart: the stopped minute goes out unfinished, the next run adds to it
                minutes += out.metrics
                stopped, last_t_s = (out.metrics or [None])[-1], pipeline.last_t_s
                pipeline, restart_s = PosturePipeline(settings, pipeline.calibration), float("inf")
                if stopped is not None and last_t_s is not None:
                    pipeline.minutes.resume(stopped.sitting_since_s, last_t_s)
            new = pipeline.update(batch.t_s, batch.acc_g, batch.gyro_dps, batch.lost_before).metrics
            if stopped is not None and new:
                new = [merge_minutes(stopped, m) if m.minute_start_s == stopped.minute_start_s else m for m in new]
                stopped = None
            minutes += new
    return minutes + pipeline.finish().metrics


# Short random days at each rate a random day draws, lossy and out of reach now and then.
DAY_CASES = [(seed, rate_hz) for seed, rate_hz in ((2001, 50.0), (2002, 100.0), (2003, 200.0), (1001, 200.0))]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed, rate_hz", DAY_CASES)
def test_every_minute_the_pipeline_sends_passes_the_contract(seed, rate_hz):
    """Whole, unfinished at a lost link, a stop's part and two parts merged: a real minute refused is a minute lost.
    (Every named case and the thirty accuracy days are held to it too: tests/test_accuracy.py.)"""
    from evaluation.accuracy import refused_minutes
    from evaluation.harness import Case

    case = Case(f"day-{seed}", f"random:{seed}:0.25", seed, loss_p=0.04, outages_s=((200.0, 4.0), (430.0, 45.0)),
                sensor={"rate_hz": rate_hz})
    minutes = copies_and_parts(case)
    starts = [m.minute_start_s for m in minutes]
    assert len(minutes) >= 12 and len(set(starts)) < len(starts)  # copies of some minutes among them
    assert refused_minutes(minutes) == []
    for m in minutes:  # by construction, not by the contract's slack for older gateways
        assert m.slouch_s <= m.worn_s and m.lean_left_s + m.lean_right_s <= m.worn_s * (1 + 1e-12), m
        # Its data ends in it, and a sitting stretch it shows began by then: sat for no less than nothing.
        assert m.seen_until_s is None or m.minute_start_s < m.seen_until_s <= m.minute_start_s + 60.0, m
        assert m.sitting_since_s is None or (m.seen_until_s is not None and m.sitting_since_s < m.seen_until_s), m


def test_every_zone_name_the_services_send_fits_both_schemas_alike():
    """The zone of `alert` (summary) and `today` is one fact written in two schemas: they agree, and every IANA name
    iana_name can return passes, as nothing else does (the Daily dashboard puts it in InfluxQL's tz('…'))."""
    alert = schema("alert.json")["properties"]["evidence"]["properties"]["timezone"]  # a summary's
    today = schema("today.json")["properties"]["timezone"]
    assert {k: v for k, v in alert.items() if k != "description"} == \
        {k: v for k, v in today.items() if k != "description"}
    zone = fastjsonschema.compile(alert)  # as the services read it (its "$" is the string's end: no newline after)

    def passes(name: str) -> bool:
        try:
            zone(name)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True
    names = [n for n in available_timezones() if iana_name(ZoneInfo(n)) == n] + ["UTC"]
    assert len(names) > 300 and [n for n in names if not passes(n)] == []
    assert not any(map(passes, ("UTC') GROUP BY *--", "Europe/Paris\n", "../etc", "a b", "", "E" * 65)))
