"""Home Assistant's documented discovery keys and values, and a check of one config against them:
used on what discovery_configs() builds and on what the alert service publishes."""

from __future__ import annotations

import json
import re

# Documented configuration variables, as of HA 2025.10:
#   https://www.home-assistant.io/integrations/sensor.mqtt/
#   https://www.home-assistant.io/integrations/binary_sensor.mqtt/
#   https://www.home-assistant.io/integrations/mqtt/ (device, origin and availability blocks)
# object_id is left out on purpose: deprecated in 2025.10 for default_entity_id, ignored from 2026.4.
COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "origin", "payload_available", "payload_not_available", "qos",
    "state_topic", "unique_id", "value_template",
}
ALLOWED_KEYS = {
    "sensor": COMMON_KEYS | {"device_class", "last_reset_value_template", "options", "state_class",
                             "suggested_display_precision", "unit_of_measurement"},
    "binary_sensor": COMMON_KEYS | {"device_class", "off_delay", "payload_off", "payload_on"},
}
REQUIRED_KEYS = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
               "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}
AVAILABILITY_MODES = {"all", "any", "latest"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
ENTITY_CATEGORIES = {"config", "diagnostic"}
# https://www.home-assistant.io/integrations/sensor/#device-class (a subset is enough: the list
# only has to hold what we use, and a typo must still fail)
DEVICE_CLASSES = {
    "sensor": {"battery", "date", "distance", "duration", "enum", "humidity", "power", "signal_strength",
               "speed", "temperature", "timestamp", "voltage"},
    # https://www.home-assistant.io/integrations/binary_sensor/#device-class
    "binary_sensor": {"battery", "connectivity", "motion", "occupancy", "power", "presence", "problem",
                      "running", "safety", "tamper"},
}
TOPIC_RE = re.compile(r"homeassistant/(sensor|binary_sensor)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/config")

KWARGS = dict(prefix="posture", ha_prefix="homeassistant",
              service_availability_topic="posture/_alerts/availability", sw_version="0.1.0")


def check_config(config_topic: str, config: dict) -> None:
    """One discovery config against HA's documented keys and values (also used on what the service publishes)."""
    component = config_topic.split("/")[1]
    assert set(config) <= ALLOWED_KEYS[component], set(config) - ALLOWED_KEYS[component]
    assert REQUIRED_KEYS[component] <= set(config)
    assert "object_id" not in config
    json.dumps(config)  # published as JSON

    assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"]
    assert TOPIC_RE.fullmatch(config_topic), config_topic
    assert config["origin"]["name"] and set(config["origin"]) <= ORIGIN_KEYS
    # HA warns when an entity name repeats its device's name: it prefixes that itself.
    assert not config["name"].lower().startswith(config["device"]["name"].lower())

    assert "availability_topic" not in config  # exclusive with the availability list
    # What passes through `posture alerts` (today) needs it up; what the gateway publishes itself (live, status)
    # is available with the sensor's own status alone.
    if config["state_topic"].endswith("/today"):
        assert config["availability"][0]["topic"] == KWARGS["service_availability_topic"]
    else:
        [entry] = config["availability"]
        assert entry["topic"] == config["state_topic"].rsplit("/", 1)[0] + "/status", entry
    for entry in config["availability"]:
        assert set(entry) <= AVAILABILITY_KEYS and entry["topic"]
    if len(config["availability"]) > 1:
        assert config["availability_mode"] == "all"
    assert config.get("availability_mode", "latest") in AVAILABILITY_MODES

    if "device_class" in config:
        assert config["device_class"] in DEVICE_CLASSES[component]
    if "state_class" in config:
        assert config["state_class"] in STATE_CLASSES
    if "entity_category" in config:
        assert config["entity_category"] in ENTITY_CATEGORIES
    if config.get("device_class") == "enum":
        assert config["options"] and not {"unit_of_measurement", "state_class"} & set(config)
    if config.get("device_class") == "battery":
        assert config["unit_of_measurement"] == "%"
    assert config["qos"] == 1
