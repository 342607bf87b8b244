"""The time zone a wearer's days are counted in: one reading for the alert service and the report.

Both count days, quiet hours and the summary time in `alerts.timezone` (an IANA name), else in the
machine's zone as the C library reads it (`time.localtime`, what `date` prints). The two used to read
the machine's zone differently: the report fell back to /etc/localtime where `$TZ` held a POSIX rule
("CET-1CEST,M3.5.0,M10.5.0/3") or a file path, which zoneinfo cannot take, while the alert service used
the C library's local time, so a day's totals and its alerts could fall on different days.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.tz import tzlocal

LOCALTIME = Path("/etc/localtime")


class CLibraryZone(tzlocal):
    """`$TZ` as the C library reads it, for what zoneinfo cannot read; dateutil asks time.localtime for each instant."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key  # named like ZoneInfo's, so a report can say which zone its times are in

    def __repr__(self) -> str:
        return f"CLibraryZone({self.key!r})"


def zone(name: str | None) -> tzinfo:
    """An IANA zone by name (ValueError names an unknown one); without a name, the machine's."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None
    return machine_zone()


def machine_zone() -> tzinfo:
    """The machine's zone with its daylight-saving rules, as time.localtime has it; named where it can be."""
    if "TZ" in os.environ:
        name = os.environ["TZ"].lstrip(":")
        try:
            return ZoneInfo(name or "UTC")  # glibc reads an empty TZ as UTC
        except (ZoneInfoNotFoundError, ValueError):
            return CLibraryZone(name)  # a POSIX rule, a file path, or a name glibc takes as UTC with that abbreviation
    try:
        target = str(LOCALTIME.resolve())
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
        with LOCALTIME.open("rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ZoneInfoNotFoundError, ValueError):
        return CLibraryZone("localtime")
