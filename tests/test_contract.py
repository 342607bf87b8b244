"""The message contract has one source: the payload dataclasses. The JSON Schemas, InfluxDB's fields, the
alert service's minutes and the report's columns must all follow them, so adding a field is one edit
plus its schema entry, and a field forgotten anywhere fails here."""

from __future__ import annotations

import json
from dataclasses import fields
from importlib import resources

import pytest

from alerts.state import MINUTE_FIELDS
from contract.influx_schema import FIELDS, MEASUREMENT, TAGS
from contract.messages import ENVELOPE, PAYLOAD_CLASS, TIME_FIELDS, value_fields
from report.query import COLUMNS

SCHEMA_OF = {"metrics": "metrics.json", "status": "status.json", "slouch": "event.json", "rotation": "event.json",
             "lean": "event.json", "calibration": "event.json"}


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
    assert set(FIELDS[kind]) | set(TAGS.get(kind, ())) == set(value_fields(kind))
    assert not set(FIELDS[kind]) & TIME_FIELDS


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
