"""Home Assistant discovery configs: only documented keys and values, valid topics and ids, and
value templates that turn our retained payloads into the states HA should show."""

from __future__ import annotations

import re

import pytest

from alerts.homeassistant import POSTURES, discovery_configs
from support.homeassistant import KWARGS, TOPIC_RE, check_config

ID_RE = re.compile(r"[a-z0-9_]+")

TODAY = {
    "schema": 1, "kind": "today", "device": "desk-1", "ts": 1_700_000_000_000, "date": "2023-11-14",
    "worn_min": 300, "slouch_min": 42, "upright_pct": 86.0, "sitting_min": 240, "sitting_now_min": 35,
    "posture": "slouching", "slouching": True, "rotation_si": -7.5, "rotations_left": 40,
    "rotations_right": 33, "lean_left_min": 3, "lean_right_min": 9, "lateral_mean_deg": 1.25,
    "goal_slouch_pct": 15, "goal_met": False, "streak_days": 4, "program_day": 9, "program_days": 28,
    "alerts_sent": 2, "alerts_held": 1, "snoozed_until": None,
}
STATUS = {"schema": 1, "kind": "status", "device": "desk-1", "ts": 1_700_000_000_000, "online": True,
          "battery_pct": 80, "link_quality_pct": 99.5}


def render(template: str, value_json: dict) -> str:
    """What HA's Jinja would print for the small subset of Jinja our templates use.

    jinja2 is not in the venv and is not worth a dependency: our templates are attribute lookups,
    string literals, `a if c else b` and `is not none`, which read the same as Python once the
    lookups become subscripts. Anything outside that subset fails here instead of being guessed.
    """
    match = re.fullmatch(r"\{\{ (.+) \}\}", template)
    assert match, template
    expr = match.group(1)
    tokens = r"value_json\.[a-z_]+|'[A-Za-z_]+'|\b(?:if|else|is|not|none|None)\b|\s+"
    assert re.sub(tokens, "", expr) == "", f"template outside the tested Jinja subset: {template}"
    python = re.sub(r"value_json\.([a-z_]+)", r"value_json['\1']", expr).replace("is not none", "is not None")
    return str(eval(python, {"__builtins__": {}}, {"value_json": value_json}))  # Jinja prints str(result)


def by_object(configs: list[tuple[str, dict]]) -> dict[str, dict]:
    return {t.split("/")[-2]: c for t, c in configs}


@pytest.fixture(params=["desk-1", "Desk Sensor:01", "C0:FF:EE:00:00:01"])
def device(request) -> str:
    return request.param


def test_every_config_uses_only_documented_keys_and_values(device):
    configs = discovery_configs(device, **KWARGS)
    assert {c["name"] for _, c in configs} == {
        "Slouch minutes today", "Upright today", "Current posture", "Rotation symmetry index", "Lateral lean",
        "Streak", "Battery", "Slouching"}
    for config_topic, config in configs:
        check_config(config_topic, config)
        assert config["device"]["name"] == f"Posture {device}"


def test_topics_and_ids_are_valid_and_unique():
    configs = discovery_configs("desk-1", **KWARGS) + discovery_configs("Desk Sensor:01", **KWARGS)
    unique_ids = [c["unique_id"] for _, c in configs]
    assert len(set(unique_ids)) == len(unique_ids) == 16
    assert len({t for t, _ in configs}) == 16
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
    assert all(c["availability"][0]["topic"] == KWARGS["service_availability_topic"] for _, c in configs[1:])


def test_state_topics_and_sensor_availability():
    configs = by_object(discovery_configs("desk-1", **KWARGS))
    assert configs["battery"]["state_topic"] == "posture/desk-1/status"
    today = {o for o, c in configs.items() if c["state_topic"] == "posture/desk-1/today"}
    assert today == set(configs) - {"battery"}
    with_sensor = {o for o, c in configs.items() if len(c["availability"]) == 2}
    assert with_sensor == {"battery", "posture", "slouching"}
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
    assert state("lateral_lean", TODAY) == "1.25"
    assert state("streak", TODAY) == "4"
    assert state("battery", STATUS) == "80"
    assert state("slouching", TODAY) == configs["slouching"]["payload_on"]
    assert state("slouching", {**TODAY, "slouching": False}) == configs["slouching"]["payload_off"]
    for posture in POSTURES:
        assert state("posture", {**TODAY, "posture": posture}) in configs["posture"]["options"]
    assert configs["posture"]["options"] == list(POSTURES)


@pytest.mark.parametrize(("obj", "key", "doc"), [
    ("upright_today", "upright_pct", TODAY), ("rotation_symmetry_index", "rotation_si", TODAY),
    ("lateral_lean", "lateral_mean_deg", TODAY), ("battery", "battery_pct", STATUS)])
def test_null_values_become_unknown(obj, key, doc):
    config = by_object(discovery_configs("desk-1", **KWARGS))[obj]
    assert render(config["value_template"], {**doc, key: None}) == "None"
    # HA turns "None" into unknown only for a sensor it expects to be numeric (a unit or a
    # state_class; homeassistant/components/mqtt/sensor.py), otherwise the state is the text "None".
    assert {"unit_of_measurement", "state_class"} & set(config)
