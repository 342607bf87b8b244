"""The machine's zone, read once for the alert service and the report, agrees with the C library's local time."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest

from alerts.service import new_engine
from report.day import day_bounds
from service_io.config import Config
from service_io.zones import machine_zone, zone

# Around both 2026 switches in Europe and North America, and plain days.
INSTANTS_S = [datetime(2026, m, d, h, tzinfo=UTC).timestamp()
              for m, d in ((1, 15), (3, 8), (3, 29), (7, 1), (10, 25), (11, 1)) for h in range(0, 24, 3)]


@pytest.fixture
def tz_env(monkeypatch):
    def set_tz(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("TZ", raising=False)
        else:
            monkeypatch.setenv("TZ", value)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("tz", [None, "", ":", "Europe/Berlin", ":Asia/Tokyo", "/usr/share/zoneinfo/America/Chicago",
                                "CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT", "<+0530>-5:30", "Nowhere/Land"])
def test_machine_zone_is_the_c_librarys_local_time(tz_env, tz):
    tz_env(tz)
    here = machine_zone()
    for t_s in INSTANTS_S:
        assert datetime.fromtimestamp(t_s, here).timetuple()[:6] == time.localtime(t_s)[:6], (tz, t_s)
    # A day of the report starts at the local midnight the alert service counts the day from.
    engine = new_engine(Config())
    for day in (date(2026, 3, 29), date(2026, 7, 1), date(2026, 11, 1)):
        start_s, end_s = day_bounds(day, engine.tz)
        assert start_s == time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))
        assert datetime.fromtimestamp(end_s, here).date() == day + timedelta(days=1)
        assert engine._date(start_s) == day.isoformat() and engine._date(end_s - 1) == day.isoformat()


def test_a_named_zone_is_taken_and_an_unknown_one_refused():
    assert str(zone("Europe/Berlin")) == "Europe/Berlin"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")
