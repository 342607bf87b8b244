"""The message contract has one source: the payload dataclasses. The JSON Schemas, InfluxDB's fields, the
alert service's minutes and the report's columns must all follow them, so adding a field is one edit
plus its schema entry, and a field forgotten anywhere fails here."""

from __future__ import annotations

import json
from dataclasses import fields
from importlib import resources

import pytest

from alerts.state import MINUTE_FIELDS
from contract.influx_schema import FIELDS, MEASURED_BY, MEASUREMENT, TAGS
from contract.messages import ENVELOPE, PAYLOAD_CLASS, TIME_FIELDS, payload, value_fields
from contract.validation import Malformed, load_validators, parse
from pipeline.events import EpisodeStart, LiveState
from report.query import COLUMNS

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
    path.write_text("[pipeline]\nrate_hz = 50\nslouch_threshold_deg = 12.5\nlean_dwell_s = 8\n")
    settings = load_config(path, env={}).pipeline.settings()
    assert settings.rate_hz == 50 and settings.slouch.rate_hz == 50 and settings.orientation.rate_hz == 50
    assert settings.slouch.threshold_deg == 12.5 and settings.lean.dwell_s == 8
    for bad in ("slouch_threshold_deg = -3", "slouch_threshold_deg = 2", "lean_threshold_deg = 1.5",
                "rotation_min_peak_deg = 75", "rate_hz = 0", "slouch_dwell_s = 0"):
        path.write_text(f"[pipeline]\n{bad}\n")
        with pytest.raises(ConfigError, match=f"pipeline.{bad.split()[0]}: must be above"):
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
