"""Home Assistant MQTT discovery: one HA device per posture sensor, its entities read our topics.

Pure: `discovery_configs` returns (topic, config) pairs and the alert service publishes each
retained at QoS 1, so Home Assistant finds the entities again after either side restarts.
Keys are spelled out (no abbreviations) as documented at
https://www.home-assistant.io/integrations/mqtt/ (device, origin, availability),
/integrations/sensor.mqtt/ and /integrations/binary_sensor.mqtt/.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from alerts.engine import POSTURES
from contract.messages import topic
from pipeline.events import LYING, NOT_WORN, SITTING, STANDING, WALKING

ORIGIN_NAME = "posture-companion"


def _value(key: str) -> str:
    return f"{{{{ value_json.{key} }}}}"


def _nullable(key: str, digits: int | None = None) -> str:
    # HA sets a sensor to unknown when its template renders "None"; spelled out so a null stays
    # visibly deliberate rather than an accident of how Jinja prints None (or a filter's error on it).
    # Rounded to what HA shows (digits), + 0: a small negative value would round to -0.0, shown "-0.0 °".
    value = f"value_json.{key}" if digits is None else f"(value_json.{key} | round({digits})) + 0"
    return f"{{{{ {value} if value_json.{key} is not none else None }}}}"


@dataclass(frozen=True)
class _Entity:
    component: str  # HA platform: "sensor" or "binary_sensor"
    object: str  # after the device's node id: topic segment, unique_id and entity id
    name: str  # entity name only; HA prefixes the device name itself
    source: str  # which of the device's topics holds the value: "today", "live" or "status"
    fields: dict[str, Any]  # the platform's own keys: value_template, unit, classes
    needs_sensor: bool = False  # also unavailable while the gateway reports the sensor offline

    @property
    def from_gateway(self) -> bool:
        """Its state is the gateway's own message: available when the sensor is, whether or not we are up."""
        return self.source != "today"


ENTITIES = (
    _Entity("sensor", "slouch_minutes_today", "Slouch minutes today", "today",
            {"value_template": _value("slouch_min"), "unit_of_measurement": "min",
             # total_increasing: the midnight reset reads as a new cycle, not a negative step
             "device_class": "duration", "state_class": "total_increasing"}),
    _Entity("sensor", "upright_today", "Upright today", "today",
            {"value_template": _nullable("upright_pct", 1), "unit_of_measurement": "%",
             "state_class": "measurement", "suggested_display_precision": 1}),
    _Entity("sensor", "posture", "Current posture", "today",
            {"value_template": _value("posture"), "device_class": "enum", "options": list(POSTURES)},
            needs_sensor=True),
    _Entity("sensor", "rotation_symmetry_index", "Rotation symmetry index", "today",
            {"value_template": _nullable("rotation_si", 1), "unit_of_measurement": "%",
             "state_class": "measurement", "suggested_display_precision": 1}),  # + = right-dominant
    _Entity("sensor", "lateral_lean", "Lateral lean", "today",
            {"value_template": _nullable("lateral_mean_deg", 1), "unit_of_measurement": "°",
             "state_class": "measurement", "suggested_display_precision": 1}),  # + = right
    _Entity("sensor", "streak", "Streak", "today",
            {"value_template": _value("streak_days"), "unit_of_measurement": "d"}),
    _Entity("sensor", "battery", "Battery", "status",
            {"value_template": _nullable("battery_pct"), "unit_of_measurement": "%",
             "device_class": "battery", "state_class": "measurement", "entity_category": "diagnostic"},
            needs_sensor=True),
    # From the live state (about once a second): what is going on now. Its values are null until the sensor is
    # calibrated: they render "None", which HA shows as unknown — Slouching too (HA's binary sensors take "None"):
    # "off" would tell the wearer all is well while nothing is measured.
    _Entity("binary_sensor", "slouching", "Slouching", "live",
            {"value_template": "{{ 'ON' if value_json.slouching_since_s is not none else 'OFF' "
                               "if value_json.flexion_deg is not none else 'None' }}",
             "payload_on": "ON", "payload_off": "OFF", "device_class": "problem"},
            needs_sensor=True),
    _Entity("sensor", "trunk_flexion", "Trunk flexion", "live",
            # whole degrees: HA records every change, and tenths would change nearly every second
            {"value_template": _nullable("flexion_deg", 0),
             "unit_of_measurement": "°", "state_class": "measurement", "suggested_display_precision": 0},
            needs_sensor=True),  # + forward
    _Entity("sensor", "activity", "Activity", "live",
            {"value_template": _nullable("activity"), "device_class": "enum",
             "options": [SITTING, STANDING, WALKING, LYING, NOT_WORN]},
            needs_sensor=True),
)


def ha_node(device: str) -> str:
    """The device's HA node id (in its entities' ids and discovery topics). HA allows only [a-z0-9_] there; device
    ids may carry A-Z ':' '-' '.', so ids that differ only in those (Desk-1, desk_1) share a node."""
    return "posture_" + re.sub(r"[^a-z0-9_]", "_", device.lower())


def discovery_configs(device: str, *, prefix: str, ha_prefix: str, service_availability_topic: str,
                      sw_version: str, name: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) pairs for Home Assistant MQTT discovery of one device.

    `name` is the sensor's human name (from its status) when known; the device id otherwise, which for an
    unusual name carries a hash (contract/identity.py). The service publishes each retained, QoS 1.
    """
    node = ha_node(device)
    device_block = {"identifiers": [node], "name": f"Posture {name or device}", "manufacturer": ORIGIN_NAME,
                    "model": "Back-worn posture sensor", "sw_version": sw_version}
    service = {"topic": service_availability_topic, "payload_available": "online",
               "payload_not_available": "offline"}
    # The gateway's status says whether the sensor itself is connected; today's totals stay
    # meaningful while it is away, live posture and battery do not. Entities read from the gateway's
    # own topics (live, status) depend on the sensor only: `posture alerts` being down does not
    # stop their values; those read from our `today` depend on us (and "Current posture" on both).
    sensor_online = {"topic": topic(prefix, device, "status"), "payload_available": "online",
                     "payload_not_available": "offline",
                     "value_template": "{{ 'online' if value_json.online else 'offline' }}"}
    configs = []
    for entity in ENTITIES:
        entity_id = f"{node}_{entity.object}"
        if entity.from_gateway:
            availability = [sensor_online]
        else:
            availability = [service, sensor_online] if entity.needs_sensor else [service]
        config: dict[str, Any] = {
            "name": entity.name,
            "unique_id": entity_id,
            "default_entity_id": f"{entity.component}.{entity_id}",  # HA 2025.10: replaces object_id
            "state_topic": topic(prefix, device, entity.source),
            **entity.fields,
            "qos": 1,
            "availability": availability,
            "device": device_block,
            "origin": {"name": ORIGIN_NAME, "sw_version": sw_version},
        }
        if len(availability) > 1:
            config["availability_mode"] = "all"  # available only when the service and the sensor both are
        # a deep copy: each config is its own document, editing one must not change the others
        config_topic = f"{ha_prefix}/{entity.component}/{node}/{entity.object}/config"
        configs.append((config_topic, copy.deepcopy(config)))
    return configs
