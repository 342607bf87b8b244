"""The time zone a wearer's days are counted in: one reading for the alert service and the report.

Both count days, quiet hours and the summary time in `alerts.timezone` (an IANA name), else in the
machine's zone as the C library reads it (`time.localtime`, what `date` prints): `$TZ` (a zone name, a
file, or a POSIX rule such as "CET-1CEST,M3.5.0,M10.5.0/3"), else /etc/localtime.
"""

from __future__ import annotations

import difflib
import functools
import io
import os
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError, available_timezones

LOCALTIME = Path("/etc/localtime")
GLIBC_TZDIR = "/usr/share/zoneinfo"  # where glibc looks for a zone named in $TZ, unless $TZDIR says
_EPOCH = datetime(1970, 1, 1)


class CLibraryZone(tzinfo):
    """`$TZ` as the C library reads it, for what zoneinfo cannot name (a POSIX rule, a file outside the zone
    database): every instant's offset is time.localtime's, and a wall time's is the one Python's naive local
    time gives it. Not dateutil's tzlocal: it knows only two offsets, so Ireland's winter (flagged as daylight
    saving) came out an hour off all year, and a midnight the clocks skip an hour early (a helper's probe)."""

    def __init__(self, key: str):
        self.key = key  # named like ZoneInfo's, so a report can say which zone its times are in

    def fromutc(self, dt: datetime) -> datetime:
        t_s = (dt.replace(tzinfo=None) - _EPOCH).total_seconds()
        offset = timedelta(seconds=time.localtime(t_s).tm_gmtoff)
        local = (dt + offset).replace(tzinfo=self)
        # The hour the clocks go back shows twice: its second pass is fold 1 (PEP 495), or it reads an hour early.
        return local if local.utcoffset() == offset else local.replace(fold=1)

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        if dt is None:
            return None
        wall = dt.replace(tzinfo=None)
        return (wall - _EPOCH) - timedelta(seconds=wall.timestamp())  # naive: the C library's, fold included

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None  # not known apart from the offset; nothing here asks

    def tzname(self, dt: datetime | None) -> str:
        return self.key if dt is None else time.localtime(dt.replace(tzinfo=None).timestamp()).tm_zone

    def __repr__(self) -> str:
        return f"CLibraryZone({self.key!r})"


def zone(name: str | None) -> tzinfo:
    """An IANA zone by name (ValueError names an unknown one, and the zone it resembles); without a name, the
    machine's."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} ({_zone_hint(name)})") from None
    return machine_zone()


def wearer_zone(given: str | None, configured: str | None) -> tzinfo:
    """The zone a wearer's days are counted in, as `posture report` and `posture replay` take it: the one given
    (--timezone), else alerts.timezone of the config, else the machine's. ValueError, one line, for an unknown name;
    the config's said as the file's key: "unknown time zone 'utc'" alone sent a user who had given no --timezone
    looking for one."""
    if given:
        return zone(given)
    try:
        return zone(configured)
    except ValueError as exc:
        raise ValueError(f"config: alerts.timezone: {exc}") from None


def _zone_hint(name: str) -> str:
    """What a zone name that is none was likely meant to be: "utc", "europe/berlin" and "Europe/Berlin " (a space
    copied with it) were refused with only "an IANA name such as Europe/Berlin", which they look like."""
    wanted = name.strip().casefold()
    names = sorted(_zone_names())
    if (same := next((n for n in names if n.casefold() == wanted), None)) is not None:
        return f"did you mean {same!r}?"
    if close := difflib.get_close_matches(name.strip(), names, n=1, cutoff=0.8):
        return f"did you mean {close[0]!r}?"
    return "an IANA name such as Europe/Berlin"


def iana_name(tz: tzinfo | None) -> str | None:
    """The zone's IANA name, which InfluxQL's tz() and Grafana take (the Daily dashboard's days); None for a zone
    that has none (a POSIX rule; a zone file read as a file, whose key is its path) or no zone given."""
    if tz is UTC:
        return "UTC"
    key = tz.key if isinstance(tz, ZoneInfo) else None
    return key if key in _zone_names() else None


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())  # reads the zone folders: once


def machine_zone() -> tzinfo:
    """The machine's zone with its daylight-saving rules, as time.localtime has it; named where it can be."""
    if "TZ" in os.environ:
        name = os.environ["TZ"].removeprefix(":")  # as glibc: one colon
        if not name:
            return UTC  # glibc reads an empty TZ as UTC
        # A name is a file of glibc's zone directory, not of zoneinfo's search path (which takes the tzdata
        # package too, where glibc finds no file and says UTC).
        path = Path(name) if name.startswith("/") else Path(os.environ.get("TZDIR") or GLIBC_TZDIR) / name
        return _named(path) or CLibraryZone(name)  # no zone file: a POSIX rule, or what glibc takes as UTC
    return _named(LOCALTIME) or CLibraryZone("localtime")


def _named(path: Path) -> ZoneInfo | None:
    """The zone in this file, None if it holds none: by its name where it is the file ZoneInfo reads for that name
    (a report can say which zone its times are in), else read from the file."""
    try:
        target = path.resolve(strict=True)
        if not target.is_file():
            return None
        for root in map(Path, TZPATH):
            if target.is_relative_to(root):
                name = str(target.relative_to(root))
                found = next((r / name for r in map(Path, TZPATH) if (r / name).is_file()), None)
                if found is not None and found.resolve() == target:
                    return ZoneInfo(name)
        return ZoneInfo.from_file(io.BytesIO(target.read_bytes()), key=str(path))
    except (OSError, RuntimeError, ZoneInfoNotFoundError, ValueError):  # RuntimeError: a symlink loop
        return None
