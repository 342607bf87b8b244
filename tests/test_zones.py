"""The machine's zone, read once for the alert service and the report, agrees with the C library's local time."""

from __future__ import annotations

import re
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from alerts.service import new_engine
from contract.influx_schema import to_line_protocol
from contract.validation import load_validators
from pipeline.summary import day_bounds
from service_io.config import AlertsSettings, Config, ConfigError
from service_io.zones import iana_name, machine_zone, zone

ZONEINFO = "/usr/share/zoneinfo"
HALF_HOURS_2026_S = [datetime(2026, 1, 1, tzinfo=UTC).timestamp() + 1800 * k for k in range(365 * 48)]
DAYS_2026 = [date(2026, 1, 1) + timedelta(days=k) for k in range(365)]
TZ_VALUES = [
    None, "", ":", "Europe/Berlin", ":Asia/Tokyo", f"{ZONEINFO}/America/Chicago", "EST5EDT", "<+0530>-5:30",
    "Nowhere/Land", "CET-1CEST,M3.5.0,M10.5.0/3",
    # Ireland's winter time is its "daylight saving" (negative DST): a class that knows two offsets swapped them.
    "IST-1GMT0,M10.5.0,M3.5.0/1", f":{ZONEINFO}/Europe/Dublin", "copy:Europe/Dublin",
    # Clocks that jump at midnight: a day starting an hour early counted an hour twice.
    "CST5CDT,M3.2.0/0,M11.1.0/1", "<-04>4<-03>,M9.1.6/24,M4.1.6/24", "EET-2EEST,M4.5.5/0,M10.5.4/24",
    "copy:America/Santiago", "copy:Africa/Casablanca",
    "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",  # Lord Howe: half an hour of daylight saving
    "::Europe/Berlin",  # glibc takes one colon off: a name it does not know, UTC
    f":{ZONEINFO}/Nowhere/Land", f"{ZONEINFO}/Europe",  # no file, a directory: UTC to glibc (they raised)
    "no-tzdir:Europe/Berlin",  # no such file where glibc looks (zoneinfo would take the tzdata package's): UTC
    "copy:Asia/Tokyo:zoneinfo/Europe/Berlin",  # named by where it lies, not by what it holds, it was Berlin
]


@pytest.fixture
def tz_env(monkeypatch, tmp_path):
    def set_tz(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("TZ", raising=False)
        else:
            if value.startswith("no-tzdir:"):
                (tmp_path / "empty").mkdir()
                monkeypatch.setenv("TZDIR", str(tmp_path / "empty"))
                value = value.removeprefix("no-tzdir:")
            if value.startswith("copy:"):  # a zone file outside the zone database: zoneinfo cannot name it
                source, _, where = value[5:].partition(":")
                (tmp_path / (where or "zone")).parent.mkdir(parents=True, exist_ok=True)
                value = str(shutil.copy(f"{ZONEINFO}/{source}", tmp_path / (where or "zone")))
            monkeypatch.setenv("TZ", value)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


def _first_instant_of(day: date) -> float:
    """Where the C library's local date turns to `day` (to the second; midnight itself may not exist)."""
    lo = time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1)) - 3 * 3600
    hi = lo + 6 * 3600
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if time.localtime(mid)[:3] < (day.year, day.month, day.day) else (lo, mid)
    return hi


@pytest.mark.parametrize("tz", TZ_VALUES)
def test_machine_zone_is_the_c_librarys_local_time(tz_env, tz):
    tz_env(tz)
    here = machine_zone()
    for t_s in HALF_HOURS_2026_S:
        local = datetime.fromtimestamp(t_s, here)
        assert local.timetuple()[:6] == time.localtime(t_s)[:6], (tz, t_s)
        # The hour the clocks go back read an hour early on its second pass (no fold): the report drew it twice.
        assert local.utcoffset() == timedelta(seconds=time.localtime(t_s).tm_gmtoff), (tz, t_s)
        assert local.timestamp() == t_s, (tz, t_s)
    # Each day of the report is the day the alert service counts, from the instant the local date turns.
    engine = new_engine(Config())
    for day in DAYS_2026:
        start_s, end_s = day_bounds(day, engine.tz)
        assert (start_s, end_s) == (_first_instant_of(day), _first_instant_of(day + timedelta(days=1))), (tz, day)
        assert engine._date(start_s) == engine._date(end_s - 1) == day.isoformat() != engine._date(start_s - 1)


NAMED = {"": "UTC", ":": "UTC", "Europe/Berlin": "Europe/Berlin", ":Asia/Tokyo": "Asia/Tokyo", "EST5EDT": "EST5EDT",
         f"{ZONEINFO}/America/Chicago": "America/Chicago", f":{ZONEINFO}/Europe/Dublin": "Europe/Dublin"}


@pytest.mark.parametrize("tz", TZ_VALUES[1:])  # None: this machine's own zone, whatever it is
def test_the_summary_names_its_zone_only_where_it_has_an_iana_name(tz_env, tz):
    """The daily summary's `timezone` goes into tz('…') of the Daily dashboard: the zone's IANA name, or null (the
    bridge stores "": UTC days). A zone file read as a file once gave its path, which the schema refused: every
    summary became a dead letter."""
    tz_env(tz)
    engine = new_engine(Config())
    noon_s = datetime(2026, 6, 1, 9, tzinfo=engine.tz).timestamp()
    doc = {"schema": 1, "kind": "metrics", "device": "D", "ts": int(noon_s * 1000), "minute_start_s": noon_s,
           "worn_s": 60.0, "sitting_s": 0.0, "standing_s": 60.0, "walking_s": 0.0, "lying_s": 0.0, "slouch_s": 0.0,
           "lean_left_s": 0.0, "lean_right_s": 0.0, "rotations_left": 0, "rotations_right": 0,
           "rotation_left_cumulative_deg": 0.0, "rotation_right_cumulative_deg": 0.0, "sitting_since_s": None,
           "lost_samples": 0}
    engine.on_metrics(doc, noon_s + 66)
    [summary] = engine.tick(datetime(2026, 6, 1, 23, tzinfo=engine.tz).timestamp())
    load_validators()["alerts/log"](summary)
    name = summary["evidence"]["timezone"]
    assert name == NAMED.get(tz), tz
    [line] = to_line_protocol(summary, "alerts/log")
    assert f'timezone="{name or ""}"' in line
    if name:  # the zone the name says is the one the service counts in
        assert all(datetime.fromtimestamp(t_s, ZoneInfo(name)).utcoffset().total_seconds()
                   == time.localtime(t_s).tm_gmtoff for t_s in HALF_HOURS_2026_S[::47]), tz


def test_iana_name():
    assert iana_name(ZoneInfo("America/Los_Angeles")) == "America/Los_Angeles"
    assert iana_name(UTC) == iana_name(ZoneInfo("UTC")) == "UTC"
    assert iana_name(None) is None
    with open(f"{ZONEINFO}/Europe/Berlin", "rb") as f:
        assert iana_name(ZoneInfo.from_file(f, key="/etc/localtime")) is None  # a copy read as a file: its path


def test_a_named_zone_is_taken_and_an_unknown_one_refused():
    assert str(zone("Europe/Berlin")) == "Europe/Berlin"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


@pytest.mark.parametrize(("given", "meant"), [("utc", "UTC"), ("europe/berlin", "Europe/Berlin"),
                                             ("Europe/Berlin ", "Europe/Berlin"), ("Europe/Berln", "Europe/Berlin")])
def test_a_zone_name_a_little_off_is_refused_naming_the_one_it_resembles(given, meant):
    """"utc", a name in the wrong case or with a space copied along was refused with only "an IANA name such as
    Europe/Berlin", which it looks like; the alert service's line (alerts.timezone) did not even say that."""
    with pytest.raises(ValueError, match=re.escape(f"unknown time zone {given!r} (did you mean {meant!r}?)")):
        zone(given)
    config = Config(alerts=AlertsSettings(timezone=given))
    with pytest.raises(ConfigError, match=re.escape(f"alerts.timezone: unknown time zone {given!r} (did you mean "
                                                    f"{meant!r}?)")):
        new_engine(config)


def test_a_localtime_that_names_no_file_is_read_as_the_c_library_reads_it(tz_env, tmp_path, monkeypatch):
    """/etc/localtime pointing at a zone file not installed (a Debian image without tzdata): a StopIteration out of
    the look for its name stopped the alert service and the report at start."""
    import service_io.zones as zones

    tz_env(None)
    (tmp_path / "localtime").symlink_to(f"{ZONEINFO}/Not/Installed")
    monkeypatch.setattr(zones, "LOCALTIME", tmp_path / "localtime")
    assert repr(machine_zone()) == "CLibraryZone('localtime')"
