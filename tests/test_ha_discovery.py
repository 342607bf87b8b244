"""Home Assistant discovery configs: only documented keys and values, valid topics and ids, and
value templates that turn our retained payloads into the states HA should show."""

from __future__ import annotations

import json
import re
from datetime import datetime
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from alerts.homeassistant import POSTURES, discovery_configs
from alerts.service import yesterday
from pipeline.events import LYING, SITTING, STANDING, WALKING
from support.homeassistant import KWARGS, TOPIC_RE, check_config

ID_RE = re.compile(r"[a-z0-9_]+")

TODAY = {
    "schema": 1, "kind": "today", "device": "desk-1", "ts": 1_700_000_000_000, "date": "2023-11-14",
    "worn_min": 300, "slouch_min": 42, "upright_pct": 86.0, "sitting_min": 240, "sitting_now_min": 35,
    "posture": "slouching", "slouching": True, "rotation_si": -7.5, "rotations_left": 40,
    "rotations_right": 33, "lean_left_min": 3, "lean_right_min": 9, "lateral_mean_deg": 1.26,
    "goal_slouch_pct": 15, "goal_met": False, "streak_days": 4, "program_day": 9, "program_days": 28,
    "alerts_sent": 2, "alerts_held": 1, "snoozed_until": None,
}
LIVE = {"schema": 1, "kind": "live", "device": "desk-1", "ts": 1_700_000_000_000, "t_s": 1_700_000_000.0,
        "calibration": "calibrated", "flexion_deg": 23.4, "lateral_deg": -1.2, "rotation_deg": 3.3,
        "activity": "sitting", "slouching_since_s": 1_699_999_950.0, "leaning_since_s": None, "lean_side": None,
        "sitting_since_s": 1_699_998_000.0}
UNCALIBRATED = {**LIVE, "calibration": "uncalibrated", "flexion_deg": None, "lateral_deg": None,
                "rotation_deg": None, "activity": None, "slouching_since_s": None}
STATUS = {"schema": 1, "kind": "status", "device": "desk-1", "ts": 1_700_000_000_000, "online": True,
          "battery_pct": 80, "link_quality_pct": 99.5}


def render(template: str, value_json: dict) -> str:
    """What HA's Jinja would print for the small subset of Jinja our templates use.

    jinja2 is not in the venv and is not worth a dependency: our templates are attribute lookups,
    string literals, `a if c else b`, `is not none` and `| round(n)`, which read the same as Python
    once the lookups become subscripts and the filter a call (Jinja rounds halves away from zero, Python
    to even: the values tested here are no halves). Anything outside that subset fails here instead of
    being guessed.
    """
    match = re.fullmatch(r"\{\{ (.+) \}\}", template)
    assert match, template
    expr = match.group(1)
    tokens = (r"\(value_json\.[a-z_]+ \| round\(\d\)\) \+ 0|value_json\.[a-z_]+|'[A-Za-z_]+'"
              r"|\b(?:if|else|is|not|none|None)\b|\s+")
    assert re.sub(tokens, "", expr) == "", f"template outside the tested Jinja subset: {template}"
    python = re.sub(r"\((value_json\.[a-z_]+) \| round\((\d)\)\) \+ 0", r"(round(\1, \2) + 0)", expr)
    python = re.sub(r"value_json\.([a-z_]+)", r"value_json['\1']", python).replace("is not none", "is not None")
    return str(eval(python, {"__builtins__": {"round": round}}, {"value_json": value_json}))  # Jinja prints str(result)


def by_object(configs: list[tuple[str, dict]]) -> dict[str, dict]:
    return {t.split("/")[-2]: c for t, c in configs}


@pytest.fixture(params=["desk-1", "Desk Sensor:01", "C0:FF:EE:00:00:01"])
def device(request) -> str:
    return request.param


def test_every_config_uses_only_documented_keys_and_values(device):
    configs = discovery_configs(device, **KWARGS)
    assert {c["name"] for _, c in configs} == {
        "Slouch minutes today", "Upright today", "Current posture", "Rotation symmetry index", "Lateral lean",
        "Streak", "Battery", "Slouching", "Trunk flexion", "Activity"}
    for config_topic, config in configs:
        check_config(config_topic, config)
        assert config["device"]["name"] == f"Posture {device}"


def test_topics_and_ids_are_valid_and_unique():
    configs = discovery_configs("desk-1", **KWARGS) + discovery_configs("Desk Sensor:01", **KWARGS)
    unique_ids = [c["unique_id"] for _, c in configs]
    assert len(set(unique_ids)) == len(unique_ids) == 20
    assert len({t for t, _ in configs}) == 20
    for config_topic, config in configs:
        match = TOPIC_RE.fullmatch(config_topic)
        assert match, config_topic
        component, node, obj = match.groups()
        assert config["device"]["identifiers"] == [node]
        assert config["unique_id"] == f"{node}_{obj}"
        assert config["default_entity_id"] == f"{component}.{config['unique_id']}"
        assert ID_RE.fullmatch(config["unique_id"])


def test_odd_device_name_gives_a_clean_node_but_keeps_the_real_state_topic():
    configs = discovery_configs("Desk Sensor:01", **KWARGS)
    topic, config = next((t, c) for t, c in configs if c["name"] == "Slouch minutes today")
    assert topic == "homeassistant/sensor/posture_desk_sensor_01/slouch_minutes_today/config"
    assert config["default_entity_id"] == "sensor.posture_desk_sensor_01_slouch_minutes_today"
    assert config["state_topic"] == "posture/Desk Sensor:01/today"  # our topics keep the device id as is
    assert config["device"]["name"] == "Posture Desk Sensor:01"


def test_configs_are_independent_documents():
    configs = discovery_configs("desk-1", **KWARGS)
    configs[0][1]["device"]["name"] = "changed"
    configs[0][1]["availability"][0]["topic"] = "changed"
    assert all(c["device"]["name"] == "Posture desk-1" for _, c in configs[1:])
    fresh = discovery_configs("desk-1", **KWARGS)
    assert all(c["availability"] == f["availability"] for (_, c), (_, f) in zip(configs[1:], fresh[1:]))
    assert all(c["availability"][0]["topic"] != "changed" for _, c in configs[1:])


def test_state_topics_and_sensor_availability():
    configs = by_object(discovery_configs("desk-1", **KWARGS))
    assert configs["battery"]["state_topic"] == "posture/desk-1/status"
    live = {o for o, c in configs.items() if c["state_topic"] == "posture/desk-1/live"}
    assert live == {"slouching", "trunk_flexion", "activity"}
    today = {o for o, c in configs.items() if c["state_topic"] == "posture/desk-1/today"}
    assert today == set(configs) - {"battery"} - live
    with_service = {o for o, c in configs.items()
                    if KWARGS["service_availability_topic"] in (a["topic"] for a in c["availability"])}
    assert with_service == today  # what the service publishes depends on it …
    with_sensor = {o for o, c in configs.items() if "posture/desk-1/status" in (a["topic"] for a in c["availability"])}
    assert with_sensor == {"battery", "posture"} | live  # … what is going on now needs the sensor online
    # … and what the gateway publishes itself depends on the sensor's status only: `posture alerts` down (its
    # availability offline) does not make live posture or the battery unavailable
    for obj in {"battery"} | live:
        assert configs[obj]["availability"] == [configs["posture"]["availability"][1]]
        assert "availability_mode" not in configs[obj]
    assert configs["posture"]["availability_mode"] == "all"
    sensor_entry = configs["posture"]["availability"][1]
    assert sensor_entry["topic"] == "posture/desk-1/status"
    assert render(sensor_entry["value_template"], STATUS) == sensor_entry["payload_available"] == "online"
    assert render(sensor_entry["value_template"], {**STATUS, "online": False}) == "offline"
    assert sensor_entry["payload_not_available"] == "offline"


def test_value_templates_render_our_payloads():
    configs = by_object(discovery_configs("desk-1", **KWARGS))

    def state(obj: str, doc: dict) -> str:
        return render(configs[obj]["value_template"], doc)

    assert state("slouch_minutes_today", TODAY) == "42"
    assert state("upright_today", TODAY) == "86.0"
    assert state("rotation_symmetry_index", TODAY) == "-7.5"
    assert state("lateral_lean", TODAY) == "1.3"  # to the tenth HA shows
    assert state("streak", TODAY) == "4"
    assert state("battery", STATUS) == "80"
    assert state("slouching", LIVE) == configs["slouching"]["payload_on"]
    assert state("slouching", {**LIVE, "slouching_since_s": None}) == configs["slouching"]["payload_off"]
    # Not measured is unknown, not "no problem" (HA's MQTT binary sensor takes "None" as unknown)
    assert state("slouching", UNCALIBRATED) == "None"
    assert state("trunk_flexion", LIVE) == "23.0" and state("trunk_flexion", {**LIVE, "flexion_deg": -4.6}) == "-5.0"
    # Never a signed zero: HA would show "-0 °" sitting upright, "-0.0 °" for a lean of -0.04°
    assert state("trunk_flexion", {**LIVE, "flexion_deg": -0.3}) == "0.0"
    assert state("lateral_lean", {**TODAY, "lateral_mean_deg": -0.04}) == "0.0"
    assert state("rotation_symmetry_index", {**TODAY, "rotation_si": -0.04}) == "0.0"
    assert configs["trunk_flexion"]["unit_of_measurement"] == "°"
    # Every activity a live state may carry (its schema's), not_worn included: HA refuses a value its enum lacks.
    live_activities = json.loads((resources.files("contract") / "schemas" / "live.json").read_text())
    assert configs["activity"]["options"] == [a for a in live_activities["properties"]["activity"]["enum"] if a]
    assert configs["activity"]["options"][:4] == [SITTING, STANDING, WALKING, LYING]
    for activity in configs["activity"]["options"]:
        assert state("activity", {**LIVE, "activity": activity}) == activity
    for posture in POSTURES:
        assert state("posture", {**TODAY, "posture": posture}) in configs["posture"]["options"]
    assert configs["posture"]["options"] == list(POSTURES)


@pytest.mark.parametrize(("obj", "key", "doc"), [
    ("upright_today", "upright_pct", TODAY), ("rotation_symmetry_index", "rotation_si", TODAY),
    ("lateral_lean", "lateral_mean_deg", TODAY), ("battery", "battery_pct", STATUS),
    ("trunk_flexion", "flexion_deg", LIVE), ("activity", "activity", LIVE)])
def test_null_values_become_unknown(obj, key, doc):
    config = by_object(discovery_configs("desk-1", **KWARGS))[obj]
    assert render(config["value_template"], {**doc, key: None}) == "None"
    # HA (homeassistant/components/mqtt/sensor.py, _update_state) turns "None" into unknown before anything
    # else, for an enum sensor too; releases before that did so only for a sensor it expects to be numeric (a
    # unit or a state_class) and set an enum to the text "None".
    assert {"unit_of_measurement", "state_class"} & set(config) or config.get("device_class") == "enum"


def test_an_uncalibrated_sensor_renders_unknown_not_an_error():
    configs = by_object(discovery_configs("desk-1", **KWARGS))
    for obj in ("trunk_flexion", "activity"):
        assert render(configs[obj]["value_template"], UNCALIBRATED) == "None"


@pytest.mark.parametrize(("zone", "now", "expected"), [
    ("Europe/Berlin", (2026, 3, 30, 0, 30), "2026-03-29"),  # the first hour after a 23-hour day
    ("Europe/Berlin", (2026, 10, 26, 23, 30), "2026-10-25"),  # the evening after a 25-hour day
    ("America/New_York", (2026, 3, 9, 0, 15), "2026-03-08"),
])
def test_a_device_is_announced_with_minutes_of_yesterday_by_the_calendar(zone, now, expected):
    """A day ago by the clock was two days back in the first hour after a 23-hour day: a device last worn the day
    before yesterday was announced again to Home Assistant then."""
    tz = ZoneInfo(zone)
    assert yesterday(datetime(*now, tzinfo=tz).timestamp(), tz) == expected
