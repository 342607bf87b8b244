"""Grafana dashboards (dashboards/) and docker-compose.yml: structure, and every panel query run on real InfluxDB.

The structural tests are pure and fast. test_every_panel_query_returns_data runs each query, with
Grafana's macros substituted as Grafana would, against InfluxDB 1.6.7 filled by the real chain
(the session fixture chain_influx in conftest.py).

The venv has no PyPI YAML parser and this file adds no dependency for one: the few YAML values
checked here (a uid, a path, compose mounts) are read line by line with regular expressions.

Helpers for other tests: panel_queries(), substitute_macros(), EXPECTED_COLUMNS.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_mqtt_influx import bridge_ready, start_bridge, write_config

from alerts.catalog import Catalog
from alerts.engine import AlertEngine
from alerts.settings import CalibrationRule, Habit, Limits, RecoveryRule, Rules, SlouchRule
from contract.influx_schema import to_line_protocol
from contract.validation import load_validators
from pipeline.summary import day_bounds, day_totals
from pipeline.symmetry import MIN_TOTAL_DEG
from posture.local_servers import ServerError, http
from report.day import build_day_report, live_buckets
from report.query import fetch_day, fetch_live
from service_io.config import load_config
from service_io.influx import InfluxSettings
from support.day_messages import scenario_stream
from support.mqtt import DB, client, wait_for
from support.servers import write_line_protocol

ROOT = Path(__file__).resolve().parents[1]
JSON_DIR = ROOT / "dashboards" / "json"
DATASOURCE_YAML = ROOT / "dashboards" / "provisioning" / "datasources" / "posture.yaml"
PROVIDER_YAML = ROOT / "dashboards" / "provisioning" / "dashboards" / "posture.yaml"
COMPOSE_YAML = ROOT / "docker-compose.yml"

DASHBOARD_FILES = ("live.json", "daily.json", "devices.json")
DEVICE_FILTERED = ("live.json", "daily.json")  # every query of these must honour the device variable
ANNOTATED = ("live.json", "daily.json")  # alerts shown as annotations
DEVICE_MATCH = '"device_id" =~ /^$device$/'
LIVE_SOURCE = '"live"."posture_live"'  # the bridge's live retention policy (influx.live_policy, default "live")
# The device picker: Live also lists devices that so far have only live data.
DEVICE_QUERY = {name: 'SHOW TAG VALUES FROM "posture_minute" WITH KEY = "device_id" WHERE $timeFilter'
                for name in DASHBOARD_FILES}
DEVICE_QUERY["live.json"] = ('SHOW TAG VALUES FROM "posture_minute", "live"."posture_live" WITH KEY = "device_id" '
                             'WHERE $timeFilter')
GRID_COLUMNS = 24
RESULT_FORMATS = {"time_series", "table"}

# (dashboard file, panel title, refId) → columns each series of InfluxDB's /query answer must have.
# Tags a query groups by are not columns: InfluxDB returns them in each series' "tags".
EXPECTED_COLUMNS: dict[tuple[str, str, str], set[str]] = {
    ("live.json", "Now", "A"): {"time", "activity", "calibration", "flexion", "slouching_since", "lean_side",
                                 "leaning_since", "sitting_since"},
    ("live.json", "Trunk angles (live)", "A"): {"time", "flexion", "lateral", "rotation"},
    ("live.json", "Trunk angles (live)", "B"): {"time", "slouching"},
    ("live.json", "State", "A"): {"time", "slouching"},
    ("live.json", "State", "B"): {"time", "activity", "calibration"},
    ("live.json", "Current alert", "A"): {"time", "text", "kind", "severity"},
    ("live.json", "Rotation excursions", "A"): {"time", "peak"},
    ("live.json", "Trunk angles (per-minute means)", "A"): {"time", "flexion", "lateral"},
    ("live.json", "annotation: Alerts", "Anno"): {"time", "text", "kind"},
    ("daily.json", "Slouch minutes per hour", "A"): {"time", "slouch_min"},
    ("daily.json", "Slouch minutes per day", "A"): {"time", "slouch_min"},
    ("daily.json", "Upright per day", "A"): {"time", "upright_pct"},
    ("daily.json", "Habit streak", "A"): {"time", "streak_days"},
    ("daily.json", "Habit streak", "B"): {"time", "program_day"},
    ("daily.json", "Rotations left vs right per day", "A"): {"time", "left", "right"},
    ("daily.json", "Rotation symmetry index per hour", "A"): {"time", "si_pct"},
    ("daily.json", "Lean minutes per day", "A"): {"time", "left_min", "right_min"},
    ("daily.json", "Sitting minutes per hour", "A"): {"time", "sitting_min"},
    ("daily.json", "annotation: Alerts", "Anno"): {"time", "text", "kind"},
    ("devices.json", "Battery", "A"): {"time", "battery_pct"},
    ("devices.json", "Last seen", "A"): {"time", "online"},
    ("devices.json", "Link quality", "A"): {"time", "link_quality_pct"},
    ("devices.json", "Battery over time", "A"): {"time", "battery_pct"},
    ("devices.json", "Lost samples", "A"): {"time", "lost_samples"},
    ("devices.json", "Link counters", "A"): {"time", "lost_samples", "malformed_packets", "duplicate_packets",
                                             "discarded_samples", "reconnects"},
}

# Live-stream traces (GROUP BY time($__interval) with a 1 s minimum): over 15 minutes they draw seconds.
LIVE_TRACES: set[tuple[str, str, str]] = {
    ("live.json", "Trunk angles (live)", "A"),
    ("live.json", "Trunk angles (live)", "B"),
    ("live.json", "State", "A"),
    ("live.json", "State", "B"),
}



# --- reading the files ----------------------------------------------------------------------------


def load_dashboard(name: str) -> dict:
    return json.loads((JSON_DIR / name).read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def panel_intervals() -> dict[tuple[str, str], str]:
    """(dashboard file, panel title) → the panel's minimum interval ("1s", "1m"), where it sets one."""
    return {(name, panel["title"]): panel["interval"] for name in DASHBOARD_FILES
            for panel in all_panels(load_dashboard(name)) if panel.get("interval")}


def annotation_target(annotation: dict) -> dict:
    """The query Grafana 10/11 runs (`target`); older Grafana reads the same fields at the top."""
    return annotation.get("target") or annotation


def panel_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, raw InfluxQL) of every panel target and annotation query.

    Annotations appear with the title "annotation: <name>". Macros ($timeFilter, $__interval,
    $device) are left in: substitute_macros() fills them as Grafana does.
    """
    out = []
    for name in DASHBOARD_FILES:
        dashboard = load_dashboard(name)
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                out.append((name, panel["title"], target["refId"], target["query"]))
        for annotation in dashboard.get("annotations", {}).get("list", []):
            target = annotation_target(annotation)
            if target.get("query"):
                out.append((name, f"annotation: {annotation['name']}", target.get("refId", "Anno"), target["query"]))
    return out


_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _interval_ms(interval: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", interval)
    if not match:
        raise ValueError(f"interval {interval!r}: expected a number and ms, s, m, h, d or w")
    return int(match[1]) * _UNIT_MS[match[2]]


def grafana_regex_escape(value: str) -> str:
    """Grafana's escapeRegex: a variable value put inside /…/ in InfluxQL."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m[0], value)


def substitute_macros(query: str, start_ms: int, end_ms: int, device: str, interval: str = "1m",
                      timezone: str = "") -> str:
    """What Grafana sends to InfluxDB for one device over [start_ms, end_ms] (Unix ms).

    $timeFilter → time >= {start}ms and time <= {end}ms; $__interval and $interval → interval;
    $__interval_ms → the interval in ms; $device / ${device} → the device, regex-escaped as Grafana
    does for a multi-value variable (the dashboards use it as /^$device$/); $timezone → the zone as it is
    (a single-value variable outside /…/: Grafana leaves it unescaped; "" while no summary has named one).
    """
    out = query.replace("$timeFilter", f"time >= {int(start_ms)}ms and time <= {int(end_ms)}ms")
    out = re.sub(r"\$__interval_ms\b", str(_interval_ms(interval)), out)
    out = re.sub(r"\$(__interval|interval)\b", interval, out)
    escaped = grafana_regex_escape(device)
    out = re.sub(r"\$\{device\}|\$device\b", lambda _: escaped, out)
    out = re.sub(r"\$\{timezone\}|\$timezone\b", lambda _: timezone, out)
    return out


def yaml_scalars(path: Path, key: str) -> list[str]:
    """Values of `key: value` lines anywhere in a YAML file, quotes and trailing comments removed."""
    pattern = re.compile(rf"^\s*(?:-\s+)?{re.escape(key)}:\s*(?P<v>\"[^\"]*\"|'[^']*'|[^#\s][^#]*?)\s*(?:#.*)?$")
    return [m["v"].strip("\"'") for line in path.read_text().splitlines() if (m := pattern.match(line))]


def compose_mounts() -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount written `- ./host:/container[:ro]` in the compose file."""
    pattern = re.compile(r"^\s*-\s*[\"']?(\./[^:\"'\s]+):([^:\"'\s]+)(?::r[ow])?[\"']?\s*(?:#.*)?$")
    return [(m[1], m[2]) for line in COMPOSE_YAML.read_text().splitlines() if (m := pattern.match(line))]


def provisioned_uid() -> str:
    uids = yaml_scalars(DATASOURCE_YAML, "uid")
    assert len(uids) == 1, f"{DATASOURCE_YAML} should provision exactly one datasource uid, found {uids}"
    return uids[0]


# --- structure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_parses_with_fixed_uid_title_and_time(name):
    dashboard = load_dashboard(name)
    expected = {"live.json": ("posture-live", "now-15m", "5s"), "daily.json": ("posture-daily", "now-6d/d", None),
                "devices.json": ("posture-devices", "now-24h", None)}[name]
    uid, time_from, refresh = expected
    assert dashboard["uid"] == uid
    assert dashboard["title"].startswith("Posture")
    assert dashboard["time"] == {"from": time_from, "to": "now"}
    assert dashboard["schemaVersion"] >= 36  # Grafana 9.x+ layout: datasource refs by uid, fieldConfig
    assert "id" not in dashboard or dashboard["id"] is None  # an id would clash in someone else's Grafana
    if refresh:
        assert dashboard["refresh"] == refresh
    assert all_panels(dashboard), f"{name} has no panels"


def test_dashboard_uids_and_titles_are_distinct():
    dashboards = [load_dashboard(name) for name in DASHBOARD_FILES]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_panel_ids_unique_and_grid_inside_24_columns_without_overlap(name):
    panels = all_panels(load_dashboard(name))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0, f"{name} panel {p['title']!r}: empty gridPos {g}"
        assert g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= GRID_COLUMNS, f"{name} {p['title']!r}: {g}"
        boxes.append((p["title"], g))
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1:]:
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            assert not overlap, f"{name}: panels {title_a!r} {a} and {title_b!r} {b} overlap"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_datasource_is_the_provisioned_one(name):
    uid = provisioned_uid()
    dashboard = load_dashboard(name)
    refs = []
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        refs.append((panel["title"], panel.get("datasource")))
        refs += [(f"{panel['title']} {t['refId']}", t.get("datasource")) for t in panel["targets"]]
    refs += [(f"variable {v['name']}", v.get("datasource")) for v in dashboard["templating"]["list"]
             if v["type"] == "query"]
    for annotation in dashboard["annotations"]["list"]:
        refs.append((f"annotation {annotation['name']}", annotation.get("datasource")))
        if "target" in annotation:
            refs.append((f"annotation {annotation['name']} target", annotation["target"].get("datasource")))
    for where, ref in refs:
        assert ref == {"type": "influxdb", "uid": uid}, f"{name} {where}: datasource {ref}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_no_import_placeholders(name):
    text = (JSON_DIR / name).read_text()
    assert "${DS_" not in text and "__inputs" not in text and "__requires" not in text


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_targets_are_raw_influxql_with_time_filter(name):
    for panel in all_panels(load_dashboard(name)):
        for target in panel.get("targets", []):
            where = f"{name} {panel['title']!r} {target['refId']}"
            assert target.get("rawQuery") is True, where
            assert target.get("resultFormat") in RESULT_FORMATS, where
            assert target["query"].lstrip().upper().startswith("SELECT "), where


def test_every_query_has_time_filter_and_live_and_daily_filter_by_device():
    queries = panel_queries()
    assert len(queries) == len(EXPECTED_COLUMNS)
    for name, title, ref, query in queries:
        assert "$timeFilter" in query, f"{name} {title!r} {ref}: no $timeFilter"
        if name in DEVICE_FILTERED:
            assert DEVICE_MATCH in query, f"{name} {title!r} {ref}: not filtered by {DEVICE_MATCH}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_panels_have_a_one_line_description(name):
    for panel in all_panels(load_dashboard(name)):
        if panel["type"] == "row":
            continue
        description = panel.get("description", "")
        assert description.strip() and "\n" not in description, f"{name} {panel['title']!r}: {description!r}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_aliases_name_only_tags_the_query_groups_by(name):
    for panel in all_panels(load_dashboard(name)):
        for target in panel.get("targets", []):
            group_by = target["query"].partition("GROUP BY")[2]
            for tag in re.findall(r"\$tag_(\w+)", target.get("alias", "")):
                assert f'"{tag}"' in group_by, f"{name} {panel['title']!r}: alias uses $tag_{tag}, not grouped by"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_device_variable(name):
    variables = {v["name"]: v for v in load_dashboard(name)["templating"]["list"]}
    device = variables["device"]
    assert device["type"] == "query"
    # Bounded by the dashboard's range: without one InfluxDB 3 lists only the last day's devices.
    # Refreshed on every range change (2), so the list follows the range.
    assert device["query"] == DEVICE_QUERY[name]
    assert device["refresh"] == 2
    assert device["multi"] is True and device["includeAll"] is True and device["allValue"] == ".*"


def test_device_variable_runs_on_influxdb_1(influx):
    """InfluxDB 1.6.7 takes the time bound (and, unlike 3.x, ignores it): a device seen 40 days ago is still listed.
    Live lists a device with only live data too, and still answers on a database without the live policy."""
    now_ms = int(time.time() * 1000)
    write_line_protocol(influx, DB, [f"posture_minute,device_id=recent worn_s=60 {now_ms - 3_600_000}",
                                           f"posture_minute,device_id=old worn_s=60 {now_ms - 40 * 86_400_000}"])

    def listed(name: str) -> set[str]:
        query = {v["name"]: v for v in load_dashboard(name)["templating"]["list"]}["device"]["query"]
        sql = substitute_macros(query, now_ms - 7 * 86_400_000, now_ms, "unused")
        result = influx.query(sql, DB)["results"][0]
        assert "error" not in result, (name, sql, result)
        return {value for s in result.get("series", []) for _, value in s["values"]}

    for name in DASHBOARD_FILES:  # no live policy yet: an old database
        assert listed(name) >= {"recent"}, name
    write_live(influx, DB, [f'posture_live,device_id=live-only calibration="uncalibrated" {now_ms - 60_000}'])
    assert listed("live.json") >= {"recent", "live-only"}


# --- the Daily dashboard's days: the alert service's and the report's --------------------------------

ZONE_QUERY = 'SELECT last("timezone") FROM "posture_today" WHERE "device_id" =~ /^$device$/'


def test_daily_groups_in_the_zone_of_the_latest_day_so_far():
    dashboard = load_dashboard("daily.json")
    zone = {v["name"]: v for v in dashboard["templating"]["list"]}["timezone"]
    # Not bounded by the range: a range without the device's data in it (a week away) keeps the zone.
    assert zone["type"] == "query" and zone["query"] == ZONE_QUERY
    assert zone["multi"] is False and zone["includeAll"] is False
    grouped = [(panel["title"], t["query"]) for panel in all_panels(dashboard) for t in panel.get("targets", [])
               if "GROUP BY time(" in t["query"]]
    assert len(grouped) == 7 and all(q.endswith(" tz('$timezone')") for _, q in grouped), grouped


def metrics_minute(device: str, t_s: float, slouch_s: float) -> dict:
    return {"schema": 1, "kind": "metrics", "device": device, "ts": int(t_s * 1000), "minute_start_s": t_s,
            "worn_s": 60.0, "sitting_s": 60.0, "standing_s": 0.0, "walking_s": 0.0, "lying_s": 0.0,
            "slouch_s": slouch_s, "lean_left_s": 0.0, "lean_right_s": 0.0, "rotations_left": 0,
            "rotations_right": 0, "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0,
            "sitting_since_s": None, "lost_samples": 0}


def day_so_far(eng: AlertEngine, device: str) -> list[str]:
    """The device's `today` as the alert service publishes it, stored as the bridge stores it."""
    doc = eng.today_state(device)
    load_validators()["today"](doc)
    return to_line_protocol(doc, "today")


def test_daily_days_are_the_days_of_the_alert_service_and_the_report(influx):
    """A wearer in Los Angeles, worn 06:00-22:00 on two days: from 16:00 their day is the next UTC day. The alert
    service's day so far (`today`) names its zone, the Daily dashboard groups in it, and each day's slouch minutes are
    the report's for that local day. Grouped in UTC days, as before, they were not."""
    tz, device = ZoneInfo("America/Los_Angeles"), "LA-wearer"
    eng = AlertEngine(Rules(slouch=SlouchRule(enabled=False), calibration=CalibrationRule(enabled=False),
                            recovery=RecoveryRule(enabled=False), limits=Limits(quiet_hours="", max_delay_s=600),
                            habit=Habit(summary_time="18:00", min_worn_min=30)), Catalog.load(), tz)
    days = [date(2026, 11, 30), date(2026, 12, 1)]
    lines, summaries = [], []
    for n, day in enumerate(days):
        start_s = datetime(day.year, day.month, day.day, 6, tzinfo=tz).timestamp()
        for k in range(16 * 60):
            doc = metrics_minute(device, start_s + 60 * k, slouch_s=6.0 * (k // 60 % 5 + n))
            lines += to_line_protocol(doc)
            eng.on_metrics(doc, start_s + 60 * k + 66)
            if k % 60 == 59:  # (the service publishes it each minute: an hour's last will do)
                lines += day_so_far(eng, device)
        summaries += eng.tick(start_s + 16 * 3600)
    assert [s["evidence"]["timezone"] for s in summaries] == ["America/Los_Angeles"] * 2
    for summary in summaries:
        load_validators()["alerts/log"](summary)
        lines += to_line_protocol(summary, "alerts/log")
    write_line_protocol(influx, DB, lines)

    start_ms = int(datetime(2026, 11, 29, tzinfo=UTC).timestamp() * 1000)
    end_ms = int(datetime(2026, 12, 3, tzinfo=UTC).timestamp() * 1000)
    zone = zone_variable(influx, device, start_ms, end_ms)
    assert zone == "America/Los_Angeles"
    [per_day] = [t["query"] for panel in all_panels(load_dashboard("daily.json")) for t in panel.get("targets", [])
                 if panel["title"] == "Slouch minutes per day"]

    def slouch_min_by_bucket(timezone: str) -> dict[datetime, float]:
        answer = influx.query(substitute_macros(per_day, start_ms, end_ms, device, timezone=timezone), DB)
        return {datetime.fromtimestamp(t / 1000, tz): value for s in answer["results"][0]["series"]
                for t, value in s["values"]}

    settings = InfluxSettings(url=influx.url, database=DB)
    report = {datetime.combine(day, datetime.min.time(), tz):
              build_day_report(device, day, tz, fetch_day(settings, device, *day_bounds(day, tz))).totals.slouch_s / 60
              for day in days}
    assert slouch_min_by_bucket(zone) == pytest.approx(report)
    utc_days = slouch_min_by_bucket("")  # no zone known: UTC days, as every day was grouped before
    assert len(utc_days) == 3 and sorted(utc_days.values()) != pytest.approx(sorted(report.values()))
    # The service moved to a zone with no IANA name ($TZ a POSIX rule): its `today` clears the zone, not keeps LA's.
    today = eng.today_state(device)
    write_line_protocol(influx, DB, to_line_protocol(today | {"ts": today["ts"] + 86_400_000, "timezone": None},
                                                     "today"))
    assert zone_variable(influx, device, start_ms, end_ms) == ""


def test_a_new_wearers_first_day_is_in_their_zone_and_after_midnight_the_program_day_is_todays(influx):
    """A wearer in Kolkata (UTC+05:30), worn from 04:00 on their first day. Before: the Daily dashboard took its zone
    from the first daily summary (18:00), so the morning was grouped in UTC: hours from :30 and a day split at 05:30.
    Now the zone comes with the day so far (`today`), from the first minute. And the Habit streak panel showed the
    latest summary's program day: after midnight "day 1" where `today` (Home Assistant) said day 2; it reads `today`
    now, so the two agree."""
    tz, device = ZoneInfo("Asia/Kolkata"), "Kolkata-wearer"
    eng = AlertEngine(Rules(slouch=SlouchRule(enabled=False), calibration=CalibrationRule(enabled=False),
                            recovery=RecoveryRule(enabled=False), limits=Limits(quiet_hours="", max_delay_s=600),
                            habit=Habit(summary_time="18:00", min_worn_min=30)), Catalog.load(), tz)
    first = date(2026, 12, 2)
    start_s = datetime(first.year, first.month, first.day, 4, tzinfo=tz).timestamp()
    lines = []
    for k in range(5 * 60):  # 04:00-09:00, hours before the first summary
        doc = metrics_minute(device, start_s + 60 * k, slouch_s=6.0 * (k // 60 + 1))
        lines += to_line_protocol(doc)
        assert eng.on_metrics(doc, start_s + 60 * k + 66) == []
        if k % 60 == 59:  # (the service publishes it each minute: an hour's last will do)
            lines += day_so_far(eng, device)
    write_line_protocol(influx, DB, lines)
    start_ms, end_ms = int((start_s - 86400) * 1000), int((start_s + 2 * 86400) * 1000)
    zone = zone_variable(influx, device, start_ms, end_ms)
    assert zone == "Asia/Kolkata"
    queries = {(panel["title"], t["refId"]): t["query"] for panel in all_panels(load_dashboard("daily.json"))
               for t in panel.get("targets", [])}

    def answer(title: str, ref: str = "A") -> list[tuple[datetime, float]]:
        sql = substitute_macros(queries[title, ref], start_ms, end_ms, device, timezone=zone)
        return [(datetime.fromtimestamp(t / 1000, tz), value)
                for s in influx.query(sql, DB)["results"][0]["series"] for t, value in s["values"]]

    hours = answer("Slouch minutes per hour")
    assert [(t.hour, t.minute, v) for t, v in hours] == [(4 + h, 0, pytest.approx(6.0 * (h + 1))) for h in range(5)]
    day_start = datetime(first.year, first.month, first.day, tzinfo=tz)
    assert answer("Slouch minutes per day") == [(day_start, pytest.approx(6.0 * 15))]  # one day, not split at 05:30

    # The evening, its summary (day 1), and the next day begun, with none of its data yet (00:04, the service's clock).
    evening_s = datetime(first.year, first.month, first.day, 9, tzinfo=tz).timestamp()
    lines = []
    for k in range(10 * 60):
        doc = metrics_minute(device, evening_s + 60 * k, slouch_s=0.0)
        lines += to_line_protocol(doc)
        eng.on_metrics(doc, evening_s + 60 * k + 66)
        if k % 60 == 59:
            lines += day_so_far(eng, device)
    [summary] = eng.tick(datetime(first.year, first.month, first.day, 18, 5, tzinfo=tz).timestamp())
    lines += to_line_protocol(summary, "alerts/log")
    after_midnight_s = datetime(first.year, first.month, first.day + 1, 0, 4, tzinfo=tz).timestamp()
    assert eng.days_begun(after_midnight_s) == [device]
    lines += day_so_far(eng, device)
    write_line_protocol(influx, DB, lines)
    today = eng.today_state(device)
    assert (summary["evidence"]["program_day"], today["program_day"]) == (1, 2)
    shown = {ref: answer("Habit streak", ref)[-1][1] for ref in ("A", "B")}
    assert shown == {"A": today["streak_days"], "B": today["program_day"]}


def zone_variable(influx, device: str, start_ms: int, end_ms: int) -> str:
    """The Daily dashboard's zone as Grafana sets it: the query's one value, if the variable's regex lets it through
    ("": no option, and tz('') is UTC)."""
    variable = {v["name"]: v for v in load_dashboard("daily.json")["templating"]["list"]}["timezone"]
    answer = influx.query(substitute_macros(variable["query"], start_ms, end_ms, device), DB)["results"][0]
    values = {value for s in answer.get("series", []) for _, value in s["values"]}
    assert len(values) <= 1, values
    allowed = re.compile(variable["regex"][1:-1].replace("\\/", "/"))  # a JavaScript /…/ literal
    return next((v for v in values if allowed.fullmatch(v)), "")


def test_a_zone_that_is_no_zone_name_is_refused():
    """The zone goes into tz('…') of every Daily query: a quote or a space in it is refused at the bridge, in the day
    so far (`today`, which the dashboard reads) and in the summary."""
    eng = AlertEngine(Rules(habit=Habit(summary_time="18:00", min_worn_min=1)), Catalog.load(), UTC)
    eng.on_metrics(metrics_minute("D", datetime(2026, 11, 20, 9, tzinfo=UTC).timestamp(), 0.0),
                   datetime(2026, 11, 20, 9, 2, tzinfo=UTC).timestamp())
    today = eng.today_state("D")
    [summary] = eng.tick(datetime(2026, 11, 20, 18, 30, tzinfo=UTC).timestamp())
    assert summary["evidence"]["timezone"] == today["timezone"] == "UTC"
    validators = load_validators()
    validators["alerts/log"](summary)
    validators["today"](today)
    variable = {v["name"]: v for v in load_dashboard("daily.json")["templating"]["list"]}["timezone"]
    allowed = re.compile(variable["regex"][1:-1].replace("\\/", "/"))
    for bad in ("UTC') fill(none", "Europe/Berlin ", "../etc/passwd", "/etc/localtime", "x" * 65, 1):
        with pytest.raises(ValueError, match="timezone"):
            validators["alerts/log"](summary | {"evidence": summary["evidence"] | {"timezone": bad}})
        with pytest.raises(ValueError, match="timezone"):
            validators["today"](today | {"timezone": bad})
        if isinstance(bad, str) and len(bad) <= 64:  # written around the bridge: the variable keeps it out of queries
            assert not allowed.fullmatch(bad), bad
    assert allowed.fullmatch("America/Argentina/Buenos_Aires") and allowed.fullmatch("Etc/GMT+5")
    # From an alert service before `today` said its zone (the bridge upgraded first): taken, and said as no zone.
    older = {k: v for k, v in today.items() if k != "timezone"}
    validators["today"](older)
    assert to_line_protocol(older, "today")[0].split(" ")[1].endswith(',timezone=""')


@pytest.mark.parametrize("name", ANNOTATED)
def test_alerts_are_annotations(name):
    annotations = load_dashboard(name)["annotations"]["list"]
    alerts = [a for a in annotations if "posture_alert" in annotation_target(a).get("query", "")]
    assert len(alerts) == 1, f"{name}: expected one alert annotation, found {len(alerts)}"
    annotation = alerts[0]
    assert annotation["enable"] is True
    for fields in (annotation, annotation["target"]):  # the same for old and new Grafana
        assert fields["query"].startswith('SELECT "text", "kind" FROM "posture_alert" WHERE ')
        assert DEVICE_MATCH in fields["query"] and "$timeFilter" in fields["query"]
        assert fields["textColumn"] == "text" and fields["tagsColumn"] == "kind"
    assert annotation["target"]["fromAnnotations"] is True
    assert annotation["target"]["query"] == annotation["query"]


def test_expected_columns_match_the_queries_and_none_waits_for_a_summary():
    """No panel reads the daily summary alone: a new wearer has none until habit.summary_time (the Habit streak
    panel was empty all their first day, and said yesterday's program day after midnight)."""
    queries = {(name, title, ref): query for name, title, ref, query in panel_queries()}
    assert set(queries) == set(EXPECTED_COLUMNS)
    assert not [key for key, query in queries.items() if "\"kind\" = 'summary'" in query]
    for key, query in queries.items():
        for column in EXPECTED_COLUMNS[key] - {"time"}:
            # Columns come from AS aliases or plainly selected fields, so they are predictable.
            assert f'AS "{column}"' in query or f'"{column}"' in query.partition(" FROM ")[0], (key, column)


def test_live_queries_read_seconds_from_the_live_policy(influx):
    """Every query on the live stream, against line protocol written to a "live" retention policy: 1 s buckets,
    slouching 1 / upright 0 / unknown null, the latest state per device, and the device filter."""
    end_ms = (int(time.time()) - 120) * 1000
    t0_ms = end_ms - 120_000
    since_s = (t0_ms + 60_000) / 1000
    lines = []
    for i in range(120):  # 1 Hz with some jitter (under 0.3 s, so one sample per 1 s bucket)
        if 40 <= i < 50:
            continue  # the link lost ten seconds
        fields = ['calibration="uncalibrated"'] if i < 5 else [
            f"flexion_deg={10 + i / 10}", "lateral_deg=-3.5", "rotation_deg=4", 'activity="sitting"',
            'calibration="calibrated"', f"sitting_since_s={t0_ms / 1000 - 300}"]
        if 60 <= i < 80:
            fields.append(f"slouching_since_s={since_s}")
        if 100 <= i:
            fields += ['lean_side="right"', f"leaning_since_s={(t0_ms + 100_000) / 1000}"]
        lines.append(f"posture_live,device_id=Desk.1 {','.join(fields)} {t0_ms + i * 1000 + (i * 37) % 300}")
    lines.append(f'posture_live,device_id=Other flexion_deg=50,calibration="calibrated" {t0_ms + 30_000}')
    write_live(influx, DB, lines)

    live = {(name, title, ref): query for name, title, ref, query in panel_queries() if LIVE_SOURCE in query}
    assert set(live) >= LIVE_TRACES | {("live.json", "Now", "A")}
    intervals = panel_intervals()
    answers = {}
    for (name, title, ref), query in live.items():
        interval = intervals.get((name, title), "1m")
        sql = substitute_macros(query, t0_ms, end_ms - 1, "Desk.1", interval)
        result = influx.query(sql, DB)["results"][0]
        assert "error" not in result, (title, ref, result)
        (series,) = result["series"]  # one device: "Other" is filtered out
        assert series["tags"] == {"device_id": "Desk.1"}
        assert EXPECTED_COLUMNS[(name, title, ref)] <= set(series["columns"]), (title, ref, series["columns"])
        answers[(title, ref)] = [dict(zip(series["columns"], row)) for row in series["values"]]

    for key in LIVE_TRACES:
        assert intervals[key[:2]] == "1s", key
        rows = answers[key[1:]]
        assert len(rows) == 120 and all(b["time"] - a["time"] == 1000 for a, b in zip(rows, rows[1:])), key
    flexion = [r["flexion"] for r in answers[("Trunk angles (live)", "A")]]
    assert flexion[:5] == [None] * 5 and flexion[40:50] == [None] * 10
    assert flexion[5] == pytest.approx(10.5) and flexion[119] == pytest.approx(21.9)
    slouching = [r["slouching"] for r in answers[("Trunk angles (live)", "B")]]
    assert slouching == [None] * 5 + [0] * 35 + [None] * 10 + [0] * 10 + [1] * 20 + [0] * 40
    assert [r["slouching"] for r in answers[("State", "A")]] == slouching
    states = answers[("State", "B")]
    assert [r["activity"] for r in states[:6]] == [None] * 5 + ["sitting"]
    assert [r["calibration"] for r in states[3:6]] == ["uncalibrated", "uncalibrated", "calibrated"]
    assert states[45]["calibration"] is None  # the gap stays a gap

    (now,) = answers[("Now", "A")]
    assert now["time"] == t0_ms + 119 * 1000 + (119 * 37) % 300
    assert (now["activity"], now["calibration"], now["lean_side"]) == ("sitting", "calibrated", "right")
    assert now["flexion"] == pytest.approx(21.9) and now["slouching_since"] is None
    assert now["leaning_since"] == t0_ms + 100_000 and now["sitting_since"] == t0_ms - 300_000
    at_slouch = substitute_macros(live[("live.json", "Now", "A")], t0_ms, t0_ms + 70_500, "Desk.1")
    (row,) = influx.query(at_slouch, DB)["results"][0]["series"][0]["values"]
    assert row[4] == since_s * 1000  # slouching since, in ms for Grafana's dateTimeFromNow


def now_row(server, start_ms: int, end_ms: int, device: str) -> dict:
    """The Live dashboard's Now table for one device over [start_ms, end_ms]: its one row, by column."""
    (query,) = [q for name, title, ref, q in panel_queries() if (name, title, ref) == ("live.json", "Now", "A")]
    (series,) = server.query(substitute_macros(query, start_ms, end_ms, device), DB)["results"][0]["series"]
    (row,) = series["values"]
    return dict(zip(series["columns"], row))


def test_now_shows_no_angle_while_the_wearer_lies(influx):
    """The Now table showed the newest state's flexion whatever the wearer did: about −89° beside "lying", a nap read
    as the worst slouch (the trace and the report draw no angle while lying). Now it has none for a lying state, and
    the one measured for any other; a message's earlier states (angles only) do not stand in for its state."""
    validate = load_validators()["live"]
    end_ms = (int(time.time()) - 120) * 1000
    t0_ms = end_ms - 60_000

    flexion_deg = {"sitting": 15.0, "lying": -89.0}  # lying supine, as measured

    def states(device: str, activities: list[str | None]) -> list[str]:
        """A state a second from t0 (None: not calibrated yet), a measured one with an earlier state 0.5 s before."""
        lines = []
        for k, activity in enumerate(activities):
            ts = t0_ms + 1000 * k
            angle = flexion_deg.get(activity or "")
            doc = {"schema": 1, "kind": "live", "device": device, "ts": ts, "t_s": ts / 1000,
                   "calibration": "calibrated" if activity else "uncalibrated", "flexion_deg": angle,
                   "lateral_deg": None if angle is None else 1.0, "rotation_deg": None if angle is None else 2.0,
                   "activity": activity, "slouching_since_s": None, "leaning_since_s": None, "lean_side": None,
                   "sitting_since_s": t0_ms / 1000 if activity == "sitting" else None}
            if angle is not None:
                doc["earlier"] = [[-500, angle + 0.5, 1.0, 2.0]]
            validate(doc)
            lines += to_line_protocol(doc, "live")
        return lines

    write_live(influx, DB, states("Napper", ["sitting"] * 5 + ["lying"] * 5)  # sat, then lay down
               + states("Riser", ["lying"] * 5 + ["sitting"] * 5)  # lay, then sat up
               + states("Doffed", ["sitting"] * 5 + ["not_worn"] * 5)
               + states("Fresh", [None] * 3))

    def now(device: str, until_ms: int = end_ms) -> dict:
        return now_row(influx, t0_ms, until_ms, device)

    lying = now("Napper")
    assert (lying["time"], lying["activity"], lying["flexion"]) == (t0_ms + 9000, "lying", None)
    assert lying["calibration"] == "calibrated" and lying["sitting_since"] is None
    sitting = now("Napper", t0_ms + 4000)  # before lying down: its angle
    assert (sitting["time"], sitting["activity"], sitting["flexion"]) == (t0_ms + 4000, "sitting", 15.0)
    assert sitting["sitting_since"] == t0_ms
    risen = now("Riser")
    assert (risen["time"], risen["activity"], risen["flexion"]) == (t0_ms + 9000, "sitting", 15.0)
    getting_up = now("Riser", t0_ms + 4600)  # the sitting state's earlier state (0.5 s before it) is newer: angles only
    assert (getting_up["time"], getting_up["activity"], getting_up["flexion"]) == (t0_ms + 4000, "lying", None)
    doffed = now("Doffed")
    assert (doffed["time"], doffed["activity"], doffed["flexion"]) == (t0_ms + 9000, "not_worn", None)
    fresh = now("Fresh")  # never measured: still listed, as not calibrated
    assert (fresh["time"], fresh["activity"], fresh["calibration"], fresh["flexion"]) == (
        t0_ms + 2000, None, "uncalibrated", None)
    # Grafana shows the missing angle as a dash, not an empty cell.
    (panel,) = [p for p in load_dashboard("live.json")["panels"] if p["title"] == "Now"]
    (flexion,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "flexion"]
    assert {"id": "mappings", "value": [{"type": "special", "options": {
        "match": "null", "result": {"text": "—", "index": 0}}}]} in flexion["properties"]


def test_substitute_macros():
    query = ('SELECT mean("x") AS "x" FROM "m" WHERE "device_id" =~ /^$device$/ AND $timeFilter '
             'GROUP BY time($__interval) LIMIT $__interval_ms')
    assert substitute_macros(query, 1000, 2000, "Desk.Sensor-1", "10s") == (
        'SELECT mean("x") AS "x" FROM "m" WHERE "device_id" =~ /^Desk\\.Sensor-1$/ AND '
        'time >= 1000ms and time <= 2000ms GROUP BY time(10s) LIMIT 10000')
    assert substitute_macros("$interval ${device}", 0, 1, "a/b") == "1m a\\/b"
    for _, _, _, query in panel_queries():
        filled = substitute_macros(query, 0, 1, "D")
        assert not re.search(r"\$\{?[A-Za-z_]", filled), f"a macro is left in {filled!r}"


# --- provisioning and compose agree ---------------------------------------------------------------


def test_datasource_provisioning():
    assert provisioned_uid() == "posture-influxdb"
    assert yaml_scalars(DATASOURCE_YAML, "type") == ["influxdb"]
    assert yaml_scalars(DATASOURCE_YAML, "version") == ["InfluxQL"]
    assert yaml_scalars(DATASOURCE_YAML, "dbName") == ["posture"]
    assert yaml_scalars(DATASOURCE_YAML, "httpMode") == ["GET"]
    assert yaml_scalars(DATASOURCE_YAML, "url") == ["http://influxdb:8086"]
    assert yaml_scalars(DATASOURCE_YAML, "apiVersion") == ["1"]


def test_dashboard_provider_path_is_where_compose_mounts_the_json():
    paths = yaml_scalars(PROVIDER_YAML, "path")
    assert paths == ["/var/lib/grafana/dashboards/posture"]
    assert yaml_scalars(PROVIDER_YAML, "folder") == ["Posture"]
    assert yaml_scalars(PROVIDER_YAML, "type") == ["file"]
    mounts = dict(compose_mounts())
    assert mounts.get("./dashboards/json") == paths[0]
    assert mounts.get("./dashboards/provisioning/datasources") == "/etc/grafana/provisioning/datasources"
    assert mounts.get("./dashboards/provisioning/dashboards") == "/etc/grafana/provisioning/dashboards"
    for host, _ in compose_mounts():
        assert (ROOT / host).exists(), f"docker-compose.yml mounts {host}, which does not exist"


def test_compose_services_and_posture_config_agree():
    text = COMPOSE_YAML.read_text()
    services_block = text.partition("\nservices:\n")[2].partition("\nvolumes:\n")[0]
    services = re.findall(r"^  ([a-z][\w-]*):\s*$", services_block, re.MULTILINE)
    assert services == ["mosquitto", "influxdb", "grafana", "bridge", "alerts"]
    assert yaml_scalars(COMPOSE_YAML, "INFLUXDB_DB") == ["posture"]
    assert yaml_scalars(COMPOSE_YAML, "dockerfile") == ["deploy/compose/Dockerfile"]
    assert (ROOT / "deploy" / "compose" / "Dockerfile").is_file()
    for command in ("bridge", "alerts"):
        assert f'command: ["posture", "{command}", "--config", "/config/posture.toml"]' in text
    assert ("./deploy/compose/posture.toml", "/config/posture.toml") in compose_mounts()
    cfg = load_config(ROOT / "deploy" / "compose" / "posture.toml", env={})  # a bad key would raise here
    assert cfg.mqtt.host == "mosquitto"
    assert cfg.influx.url == "http://influxdb:8086" and cfg.influx.database == "posture"
    assert cfg.bridge.spool_path.startswith("/data/") and cfg.alerts.state_path.startswith("/data/")
    broker = (ROOT / "deploy" / "compose" / "mosquitto.conf").read_text()
    assert "\nmax_queued_messages 1000000\n" in broker and "\npersistence true\n" in broker


def test_the_image_gets_every_package_it_installs():
    """`pip install .` in the image needs every package pyproject.toml lists, through .dockerignore too."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {p.split(".")[0] for p in project["packages"]}
    folders = {project["package-dir"].get(top, top) for top in tops}  # firmware_sim lives in firmware-sim/
    dockerfile = (ROOT / "deploy" / "compose" / "Dockerfile").read_text()
    ignore = (ROOT / "deploy" / "compose" / "Dockerfile.dockerignore").read_text().splitlines()
    for folder in folders:
        assert f"COPY {folder}/ {folder}/" in dockerfile.splitlines(), folder
        assert f"!{folder}/" in ignore, folder


# --- every query against real data ----------------------------------------------------------------


def test_every_panel_query_returns_data(chain_influx):
    start_ms = int((chain_influx.start_s - 3600) * 1000)
    end_ms = int((chain_influx.end_s + 3600) * 1000)
    aliases = {(name, panel["title"], t["refId"]): t.get("alias", "") for name in DASHBOARD_FILES
               for panel in all_panels(load_dashboard(name)) for t in panel.get("targets", [])}
    # Grafana's $__interval over a 15-minute range is under a second: the panel's minimum interval wins.
    intervals = panel_intervals()
    failures = []
    for name, title, ref, query in panel_queries():
        key = (name, title, ref)
        sql = substitute_macros(query, start_ms, end_ms, chain_influx.device, intervals.get((name, title), "1m"))
        try:
            result = chain_influx.influx.query(sql, chain_influx.database)["results"][0]
        except ServerError as exc:  # InfluxDB's error names the problem; collect them all
            failures.append(f"{key}: {exc}")
            continue
        series = result.get("series", [])
        if not series:
            failures.append(f"{key}: no series for {sql}")
            continue
        for s in series:
            if missing := EXPECTED_COLUMNS[key] - set(s["columns"]):
                failures.append(f"{key}: columns {s['columns']} lack {sorted(missing)}")
            if not any(v is not None for row in s["values"] for v in row[1:]):
                failures.append(f"{key}: only nulls in {s}")
            for tag in re.findall(r"\$tag_(\w+)", aliases.get(key, "")):
                if tag not in s.get("tags", {}):
                    failures.append(f"{key}: alias needs tag {tag}, series has {s.get('tags')}")
            if key in LIVE_TRACES:  # second-level: most filled buckets follow one a second before
                filled = [row[0] for row in s["values"] if any(v is not None for v in row[1:])]
                steps = [b - a for a, b in zip(filled, filled[1:])]
                if len(filled) < 60 or steps.count(1000) < len(steps) / 2:
                    failures.append(f"{key}: not a trace of seconds: {len(filled)} filled, steps {steps[:20]}")
    assert not failures, "\n".join(failures)


def write_live(server, db: str, lines: list[str], policy: str = "live") -> None:
    """Line protocol into the live retention policy (made here, 7 days, as the bridge makes it)."""
    server.query(f'CREATE RETENTION POLICY "{policy}" ON "{db}" DURATION 7d REPLICATION 1')
    status, _, body = http("POST", f"{server.url}/write?db={db}&rp={policy}&precision=ms", "\n".join(lines).encode())
    assert status == 204, body


def test_live_slouching_is_not_upright_where_a_second_holds_only_earlier_states(influx):
    """gateway.live_hz × gateway.pipeline_batch_s above 1 (here 1 state a second, 2 s batches): a message every 2 s,
    its earlier state a point with the three angles only (docs/influx.md). A second holding only that had
    max(flexion) * 0 + 0 / 0 = 0: the wearer slouching throughout was drawn upright every other second, on the
    trace and the State timeline. Only states that say whether the wearer slouched count: such a second is empty
    (bridged, up to 3 s, like a lost second) and every second with a state says slouching."""
    validate = load_validators()["live"]
    end_ms = (int(time.time()) - 120) * 1000
    t0_ms = end_ms - 60_000
    lines = []
    for k in range(1, 31):  # the batch's latest sample every 2 s; slouching (confirmed) from before the range
        ts = t0_ms + 2000 * k
        doc = {"schema": 1, "kind": "live", "device": "Desk", "ts": ts, "t_s": ts / 1000, "calibration": "calibrated",
               "flexion_deg": 31.0, "lateral_deg": 1.0, "rotation_deg": 2.0, "activity": "sitting",
               "slouching_since_s": t0_ms / 1000 - 30, "leaning_since_s": None, "lean_side": None,
               "sitting_since_s": t0_ms / 1000 - 600,
               "earlier": [[-1000, 30.1, 1.0, 2.0]]}
        validate(doc)
        lines += to_line_protocol(doc, "live")
    write_live(influx, DB, lines)
    intervals = panel_intervals()
    for name, title, ref, query in panel_queries():
        if (name, title, ref) not in {("live.json", "Trunk angles (live)", "B"), ("live.json", "State", "A")}:
            continue
        sql = substitute_macros(query, t0_ms + 1000, end_ms, "Desk", intervals[(name, title)])
        (series,) = influx.query(sql, DB)["results"][0]["series"]
        values = [v for _, v in series["values"]]
        assert len(values) == 60 and 0 not in values, (title, values)
        assert values.count(1) == 30, (title, values)  # each second with a state: slouching


def test_live_slouching_share_is_of_the_measured_states_not_of_seconds_off_the_body(influx):
    """A range wide enough for 10 s buckets: a wearer slouching for 4 s, then the sensor judged off the body (a state
    with activity not_worn and no angles). The share counted every state with an activity: 4 / 10 drew the bucket
    upright. Over the states with angles it is 4 / 4."""
    end_ms = (int(time.time()) - 120) * 1000
    t0_ms = (end_ms - 60_000) // 10_000 * 10_000
    measured = 'calibration="calibrated",activity="sitting",flexion_deg=30,lateral_deg=0,rotation_deg=0'
    lines = [f"posture_live,device_id=Desk {measured},slouching_since_s={t0_ms / 1000 - 60} {t0_ms + 1000 * i}"
             for i in range(4)]
    lines += [f'posture_live,device_id=Desk calibration="calibrated",activity="not_worn" {t0_ms + 1000 * i}'
              for i in range(4, 20)]
    lines += [f"posture_live,device_id=Desk {measured} {t0_ms + 1000 * i}" for i in range(20, 30)]  # upright
    write_live(influx, DB, lines)
    for name, title, ref, query in panel_queries():
        if (name, title, ref) in {("live.json", "Trunk angles (live)", "B"), ("live.json", "State", "A")}:
            sql = substitute_macros(query, t0_ms, t0_ms + 29_999, "Desk", "10s")
            (series,) = influx.query(sql, DB)["results"][0]["series"]
            assert [v for _, v in series["values"]] == [1, None, 0], (title, series["values"])


def documented_share_statements() -> list[str]:
    """docs/influx.md's way to the share of an interval spent slouching: a statement in its examples, or an expression
    in its text (run as a statement over the last hour's minutes)."""
    text = (ROOT / "docs" / "influx.md").read_text()
    statements = re.findall(r'^(SELECT .*count\("slouching_since_s"\) /.*)$', text, re.M)
    return statements + [f'SELECT {expression} FROM "live"."posture_live" WHERE time > now() - 1h '
                         f'GROUP BY time(1m), "device_id"'
                         for expression in re.findall(r'`(count\("slouching_since_s"\) /[^`]*)`', text)]


def test_the_documented_share_of_slouching_is_the_live_dashboards(influx):
    """docs/influx.md told to divide by count("calibration"): a minute with the wearer slouching for 3 s and the
    sensor then off the body drew 5 % (every off state has a calibration), a minute holding only uncalibrated
    states or only a message's earlier states 0 (InfluxQL's count of nothing is 0, and 0 / 0 is 0). What the docs
    give is what the State panel draws."""
    t0_ms = (int(time.time()) - 900) // 60 * 60_000
    measured = 'calibration="calibrated",activity="sitting",flexion_deg=30,lateral_deg=0,rotation_deg=0'
    lines = [f"posture_live,device_id=Desk {measured},slouching_since_s={t0_ms / 1000 - 60} {t0_ms + 1000 * i}"
             for i in range(3)]
    lines += [f"posture_live,device_id=Desk flexion_deg=20,lateral_deg=0,rotation_deg=0 {t0_ms + 1000 * i + 500}"
              for i in range(3)]
    lines += [f'posture_live,device_id=Desk calibration="calibrated",activity="not_worn" {t0_ms + 1000 * i}'
              for i in range(3, 120)]
    lines += [f'posture_live,device_id=Desk calibration="uncalibrated" {t0_ms + 1000 * i}' for i in range(120, 180)]
    lines += [f"posture_live,device_id=Desk flexion_deg=20,lateral_deg=0,rotation_deg=0 {t0_ms + 1000 * i}"
              for i in range(180, 240)]
    lines += [f"posture_live,device_id=Desk {measured} {t0_ms + 1000 * i}" for i in range(240, 300)]  # upright
    write_live(influx, DB, lines)
    minutes = [t0_ms + 60_000 * k for k in range(5)]
    (state,) = [q for name, title, ref, q in panel_queries() if (name, title, ref) == ("live.json", "State", "A")]
    (series,) = influx.query(substitute_macros(state, t0_ms, t0_ms + 299_999, "Desk", "1m"), DB)["results"][0]["series"]
    drawn = dict(series["values"])
    assert [drawn[t] for t in minutes] == [1, None, None, None, 0]
    statements = documented_share_statements()
    assert statements, "docs/influx.md gives no share of slouching"
    for statement in statements:
        (series,) = influx.query(statement, DB)["results"][0]["series"]
        values = dict(series["values"])
        assert [values.get(t) for t in minutes] == [1, None, None, None, 0], statement
        assert {v for t, v in values.items() if t not in minutes} <= {None}, statement


def test_daily_rotations_per_day_are_the_reports_and_the_alert_services(influx):
    """The rotations a day counts are its minutes' (rotations_left/right), as the report, the alert service's `today`
    and the daily totals count them (pipeline/summary.py). Counted from the excursions instead (posture_rotation, at
    their start), the panel disagreed: an excursion begun before local midnight is in the next day's minute (it counts
    at its end), and the excursions of a minute the gateway lost (killed -9 with it open: its events were sent at once,
    the minute never) are in no minute at all."""
    tz, device = ZoneInfo("Pacific/Auckland"), "Desk"
    days = [date(2026, 12, 5), date(2026, 12, 6)]
    midnight_s = datetime(2026, 12, 6, tzinfo=tz).timestamp()
    minutes = {midnight_s + 60 * k: metrics_minute(device, midnight_s + 60 * k, slouch_s=0.0) for k in range(-30, 30)}
    excursions = [(midnight_s - 600, "left"), (midnight_s - 1.5, "right"), (midnight_s + 300, "left")]
    lines = []
    for start_s, side in excursions:
        end_s = start_s + 3.0  # the one begun 1.5 s before midnight ends in the next day's first minute
        lines += to_line_protocol({"schema": 1, "kind": "rotation", "device": device, "ts": int(start_s * 1000),
                                   "start_s": start_s, "end_s": end_s, "side": side, "peak_deg": 30.0,
                                   "duration_s": 3.0})
        minute = minutes[end_s // 60 * 60]
        minute[f"rotations_{side}"] += 1
        minute[f"rotation_{side}_cumulative_deg"] += 30.0
    lost = midnight_s + 300  # the gateway's minute of that excursion: the restarted run measured none of it
    minutes[lost] |= {"rotations_left": 0, "rotation_left_cumulative_deg": 0.0, "worn_s": 20.0, "sitting_s": 20.0}
    for doc in minutes.values():
        lines += to_line_protocol(doc)
    write_line_protocol(influx, DB, lines)

    [query] = [t["query"] for panel in all_panels(load_dashboard("daily.json")) for t in panel.get("targets", [])
               if panel["title"] == "Rotations left vs right per day"]
    start_ms = int(datetime(2026, 12, 4, tzinfo=tz).timestamp() * 1000)
    end_ms = int(datetime(2026, 12, 8, tzinfo=tz).timestamp() * 1000)
    answer = influx.query(substitute_macros(query, start_ms, end_ms, device, timezone=tz.key), DB)["results"][0]
    panel: dict[date, dict[str, float]] = {}
    for series in answer["series"]:
        for row in series["values"]:
            values = dict(zip(series["columns"], row))
            day = datetime.fromtimestamp(values.pop("time") / 1000, tz).date()
            panel.setdefault(day, {}).update({k: v for k, v in values.items() if v is not None})
    settings = InfluxSettings(url=influx.url, database=DB)
    report = {day: build_day_report(device, day, tz, fetch_day(settings, device, *day_bounds(day, tz))).totals.rotations
              for day in days}
    assert report == {days[0]: {"left": 1, "right": 0}, days[1]: {"left": 0, "right": 1}}
    assert panel == {day: {"left": counts["left"], "right": counts["right"]} for day, counts in report.items()}


# --- the live trace while lying, stored by the real bridge -------------------------------------------------------


def publish_through_bridge(tmp_path: Path, broker, influx, device: str, messages: list[tuple[str, dict]]) -> None:
    """The messages published as the gateway publishes them (live at QoS 0, the rest at QoS 1) to a real `posture
    bridge`, which stores them in InfluxDB; returns once every live point is stored."""
    config = write_config(tmp_path / "posture.toml", broker, influx.url)
    bridge = start_bridge(config, tmp_path / "bridge.log")
    try:
        bridge_ready(broker, influx)
        publisher = client(broker.port)
        for k, (stream, doc) in enumerate(messages):
            publisher.publish(f"posture/{device}/{stream}", json.dumps(doc), qos=0 if stream == "live" else 1)
            if k % 20 == 19:
                time.sleep(0.02)  # QoS 0 is not queued for a busy subscriber: at a gateway's pace, or near it
        live_points = sum(" flexion_deg=" in line or ",flexion_deg=" in line for stream, doc in messages
                          if stream == "live" for line in to_line_protocol(doc, "live"))

        def stored() -> int:
            try:
                rows = influx.rows(f"SELECT count(\"flexion_deg\") FROM {LIVE_SOURCE} WHERE \"device_id\" = '{device}'",
                                   DB)
            except ServerError:  # the bridge makes the live policy with its first live point
                return 0
            return rows[0]["count"] if rows else 0

        wait_for(lambda: stored() >= live_points, 60,
                 lambda: f"{live_points} live points stored, have {stored()}:\n{(tmp_path / 'bridge.log').read_text()}")
        publisher.loop_stop()
    finally:
        bridge.terminate()
        bridge.wait(30)


@pytest.mark.parametrize(("live_hz", "batch_s"), [(4.0, 1.0), (1.0, 2.0)])
def test_live_angles_are_none_while_lying_and_keep_the_earlier_states(tmp_path, broker, influx, live_hz, batch_s):
    """A wearer lying down for a minute (the `lying` scenario, through the pipeline as `posture run` feeds it) and the
    live states stored by the real bridge. The trace drew the lying angles (−90° of flexion: a nap as the worst
    slouch); a filter on activity dropped the earlier states a message carries (gateway.live_hz × pipeline_batch_s
    above 1: angles only). Now a bucket in which the wearer lay at all, or with no state that says what they did, is
    empty, and every other bucket is the mean of all its angles, earlier states included: the report's live trace
    (report/day.py, live_buckets), bucket for bucket."""
    device = "Napper"
    start_s = float(int(time.time()) - 900)  # inside the live policy's 7 days
    messages = scenario_stream("lying", device, start_s, live_hz=live_hz, batch_s=batch_s,
                               extra_segments=[{"activity": "sit_upright", "duration_s": 40}])
    publish_through_bridge(tmp_path, broker, influx, device, messages)

    buckets: dict[int, dict[str, list]] = {}  # second (ms) → its points' flexion, and its states' activities
    for stream, doc in messages:
        if stream != "live":
            continue
        second = buckets.setdefault(doc["ts"] // 1000 * 1000, {"flexion": [], "activity": []})
        second["activity"].append(doc["activity"])
        if doc["flexion_deg"] is not None:
            second["flexion"].append(doc["flexion_deg"])
        for offset_ms, flexion, *_ in doc.get("earlier", ()):
            buckets.setdefault((doc["ts"] + offset_ms) // 1000 * 1000, {"flexion": [], "activity": []})[
                "flexion"].append(flexion)
    lying = {t for t, b in buckets.items() if "lying" in b["activity"]}
    drawn_expected = {t: sum(b["flexion"]) / len(b["flexion"]) for t, b in buckets.items()
                      if t not in lying and b["flexion"] and any(a not in (None, "not_worn") for a in b["activity"])}
    assert len(lying) >= 50 / batch_s
    if live_hz >= 2:  # several states a second: seconds whose mean has earlier states in
        assert sum(len(b["flexion"]) > 1 for b in buckets.values()) >= 20
    else:  # a message every 2 s: every other second holds only an earlier state, lying or not
        assert sum(not b["activity"] for b in buckets.values()) >= 20

    [query] = [q for name, title, ref, q in panel_queries()
               if (name, title, ref) == ("live.json", "Trunk angles (live)", "A")]
    start_ms, end_ms = int(start_s * 1000) - 60_000, int(start_s * 1000) + 600_000
    answer = influx.query(substitute_macros(query, start_ms, end_ms, device, "1s"), DB)["results"][0]
    assert "series" in answer, (answer, substitute_macros(query, start_ms, end_ms, device, "1s"))
    (series,) = answer["series"]
    drawn = {row[0]: row[1] for row in series["values"] if row[1] is not None}
    assert not set(drawn) & lying, sorted((t, drawn[t]) for t in set(drawn) & lying)[:5]
    assert drawn == pytest.approx(drawn_expected)

    # Wider ranges draw means of 10 s: the report's live trace of that day, which draws no angle while lying either.
    (series,) = influx.query(substitute_macros(query, start_ms, end_ms, device, "10s"), DB)["results"][0]["series"]
    drawn = {row[0] / 1000: row[1] for row in series["values"] if row[1] is not None}
    settings = InfluxSettings(url=influx.url, database=DB)
    report = {b.start_s: b.flexion_deg for b in live_buckets(fetch_live(settings, device, start_ms, end_ms))
              if b.flexion_deg is not None}
    assert len(report) >= 5 and drawn == pytest.approx(report)
    # docs/influx.md's way to angles without lying is this trace's, over the last hour (the day above is in it).
    (statement,) = re.findall(r'^(SELECT mean\("flexion"\) AS "flexion" FROM \(.*"lying" = 0.*)$',
                              (ROOT / "docs" / "influx.md").read_text(), re.M)
    (series,) = influx.query(statement, DB)["results"][0]["series"]
    assert {t / 1000: v for t, v in series["values"] if v is not None} == pytest.approx(drawn)

    # The Now table while the wearer lay (its range ending at the last lying state) has no angle; sitting up again at
    # the end, the one measured.
    states = [doc for stream, doc in messages if stream == "live"]
    last_lying_ms = max(doc["ts"] for doc in states if doc["activity"] == "lying")
    row = now_row(influx, start_ms, last_lying_ms, device)
    assert (row["time"], row["activity"], row["flexion"]) == (last_lying_ms, "lying", None)
    row = now_row(influx, start_ms, end_ms, device)
    assert (row["time"], row["activity"]) == (states[-1]["ts"], "sitting")
    assert row["flexion"] == pytest.approx(states[-1]["flexion_deg"])


def test_daily_symmetry_per_hour_is_the_pipelines_and_none_without_rotation(influx):
    """The Rotation symmetry index per hour is the pipeline's own hour summary (pipeline/summary.py): an hour with
    rotations its index, an hour worn without any (lying, the sensor off the body for the rest of it) none, nor one
    with under MIN_TOTAL_DEG of rotation in all. InfluxQL's 0 / 0 is 0: an hour without rotation drew 0 %, perfectly
    symmetric, where the replay's summary of it says null; two small turns to the right drew +200 %."""
    device, hour_s = "Desk", datetime(2026, 10, 25, 0, tzinfo=UTC).timestamp()  # Europe/Berlin's long day, too
    minutes = []
    for k in range(240):
        doc = metrics_minute(device, hour_s + 60 * k, slouch_s=0.0)
        if k < 60 and k % 6 == 0:  # the first hour: a turn left every 6 min, one right every 12
            doc |= {"rotations_left": 1, "rotation_left_cumulative_deg": 30.0}
            if k % 12 == 0:
                doc |= {"rotations_right": 1, "rotation_right_cumulative_deg": 45.0}
        if k in (120, 150):  # the third hour: two turns right, 50° in all; the fourth: 35° each way, 70° in all
            doc |= {"rotations_right": 1, "rotation_right_cumulative_deg": 25.0}
        if k in (190, 200):
            doc |= {"rotations_left": 1, "rotation_left_cumulative_deg": 35.0} if k == 190 else \
                {"rotations_right": 1, "rotation_right_cumulative_deg": 35.0}
        minutes.append(doc)
    write_line_protocol(influx, DB, [line for doc in minutes for line in to_line_protocol(doc)])
    expected = {hour_s + 3600 * h: day_totals(minutes[60 * h:60 * h + 60]).rotation_symmetry_index
                for h in range(4)}
    # The second hour has no rotation, the third too little to mean anything (pipeline/symmetry.py, MIN_TOTAL_DEG):
    # drawn, it was +200 %, all right-dominant, from two turns.
    assert list(expected.values()) == [pytest.approx(100 * (225 - 300) / 262.5), None, None, 0.0]

    [query] = [t["query"] for panel in all_panels(load_dashboard("daily.json")) for t in panel.get("targets", [])
               if panel["title"] == "Rotation symmetry index per hour"]
    assert f'"right" + "left" >= {MIN_TOTAL_DEG:g} ' in query  # the pipeline's threshold, not a copy that drifts
    for zone in ("", "Europe/Berlin", "Pacific/Honolulu"):
        sql = substitute_macros(query, int(hour_s * 1000) - 86_400_000, int(hour_s * 1000) + 86_400_000, device,
                                timezone=zone)
        (series,) = influx.query(sql, DB)["results"][0]["series"]
        drawn = {t / 1000: v for t, v in series["values"]}
        assert drawn == pytest.approx({t: v for t, v in expected.items() if v is not None}), (zone, drawn)
