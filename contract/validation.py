"""Checking MQTT payloads against the JSON Schemas in schemas/: the bridge and the alert service read the same way."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any, NoReturn

import fastjsonschema

# Topic suffix after <prefix>/<device>/ → schema file.
SCHEMA_FILES = {"metrics": "metrics.json", "events": "event.json", "status": "status.json",
                "alerts/log": "alert.json"}


class Malformed(ValueError):
    pass


Validators = dict[str, Callable[[Any], dict[str, Any]]]  # stream → a compiled JSON Schema check


def load_validators() -> Validators:
    """Schema validators compiled to Python (fastjsonschema: ~8 µs a message where an interpreting
    validator takes ~190 µs, which would cap the bridge at a few thousand messages a second)."""
    root = resources.files("contract") / "schemas"
    return {sub: fastjsonschema.compile(json.loads((root / name).read_text())) for sub, name in SCHEMA_FILES.items()}


def stream_of(topic: str) -> str:
    """`posture/DeskSensor/alerts/log` → `alerts/log`; `posture/DeskSensor/metrics` → `metrics`."""
    parts = topic.split("/")
    return "/".join(parts[-2:]) if parts[-2:] == ["alerts", "log"] else parts[-1]


def _no_constant(name: str) -> NoReturn:
    """Python's json reads NaN and Infinity, which JSON does not have and no measurement is."""
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def parse(stream: str, body: bytes | bytearray,
          validators: Validators) -> dict[str, Any]:
    try:
        doc = json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    try:
        return validators[stream](doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise Malformed(f"schema: {exc.message[:300]}") from None
