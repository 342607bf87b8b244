"""`posture report`: one device's day from InfluxDB, as a PNG or a self-contained HTML page."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import tempfile
from datetime import date as Date
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from service_io.zones import wearer_zone, zone

if TYPE_CHECKING:
    from service_io.influx import InfluxSettings

    from .day import DayReport

FORMATS = (".png", ".html")
DEVICES_SHOWN = 5  # of the database's devices, in the line that says it has not the one asked for


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="draw a device's day from InfluxDB: angles, slouch, rotation, lean, alerts")
    p.add_argument("--device", required=True, help="device id (the device_id tag; docs/mqtt.md)")
    p.add_argument("--day", required=True, metavar="YYYY-MM-DD", help="the local day, midnight to midnight")
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="report.png (the figure) or report.html (a page with the figure, totals and alerts)")
    p.add_argument("--config", type=Path, help="TOML config file; its [influx] section (docs/mqtt.md)")
    p.add_argument("--influx-url", help="InfluxDB base URL (influx.url, default http://127.0.0.1:8086)")
    p.add_argument("--database", help="InfluxDB database; on 2.x one with a DBRP mapping (influx.database, "
                                      "default posture)")
    p.add_argument("--timezone", help="IANA time zone of the day and the times shown (default: alerts.timezone, "
                                      "else the machine's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, like the drawing below: the config brings in the pipeline and the InfluxDB client.
    from service_io.config import ConfigError, load_config

    try:
        config = load_config(args.config, overrides={"influx": {"url": args.influx_url, "database": args.database}})
    except ConfigError as exc:
        raise ValueError(f"config: {exc}") from None
    tz = wearer_zone(args.timezone, config.alerts.timezone)
    try:
        report = write_day_report(config.influx, args.device, args.day, args.out, tz)
    except ArithmeticError as exc:  # a value day.py's bounds did not foresee: one line, not a traceback
        raise ValueError(f"a value stored for {args.device} on {args.day} is out of range ({exc})") from None
    live = f", {len(report.live) * report.live_step_s / 60:.1f} min of live trace" if report.live else ""
    print(f"{args.out}: {report.device} {report.day.isoformat()}, {len(report.minutes)} minutes{live}, "
          f"{len(report.slouches)} slouch episodes, {report.alerts_said()}")
    return 0


def write_report(influx_url: str, database: str, device: str, day: str, out: Path,
                 timezone: str | None = None) -> DayReport:
    """The report without a config file (posture demo): an InfluxDB without authentication."""
    from service_io.influx import InfluxSettings

    return write_day_report(InfluxSettings(url=influx_url, database=database), device, day, Path(out), timezone)


def write_day_report(influx: InfluxSettings, device: str, day: str, out: Path,
                     timezone: str | tzinfo | None) -> DayReport:
    """Read the day (YYYY-MM-DD, local midnight to midnight in `timezone`, a zone or its name, default the
    machine's), write `out`.

    ValueError for what the user can fix (file suffix, date, zone, no data); query.QueryError when
    InfluxDB does not answer.
    """
    # Imported here: matplotlib takes a second to load, which `--help` and the other subcommands should not pay.
    from contract.identity import ID_CHARS, ID_PATTERN, MAX_ID_LEN
    from pipeline.summary import day_bounds

    from .day import build_day_report
    from .draw import html_page, png_bytes
    from .query import MAX_TIME_S, MIN_TIME_S, QueryError, fetch_day, known_devices

    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out must end in .png or .html, not {out.name!r}")
    if not ID_PATTERN.fullmatch(device):  # as every topic and tag has it: anything else has no data
        raise ValueError(f"--device must be a device id, 1 to {MAX_ID_LEN} of {ID_CHARS}, not {device[:70]!r}")
    try:
        date = Date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"--day must be YYYY-MM-DD, not {day!r}") from None
    tz = timezone if isinstance(timezone, tzinfo) else zone(timezone)  # as the alert service counts the day
    try:
        bounds = day_bounds(date, tz)
    except (OverflowError, OSError, ValueError):  # 9999-12-31 ends past what a datetime holds; 0001-01-01 too, east
        raise ValueError(f"--day {day} is out of range") from None
    if not MIN_TIME_S <= bounds[0] < bounds[1] <= MAX_TIME_S:
        raise ValueError(f"--day {day} is out of range")
    rows = fetch_day(influx, device, *bounds)
    if rows.empty():
        try:
            devices = known_devices(influx)
        except QueryError:  # an InfluxDB without SHOW TAG VALUES: what it said at first
            devices = [device]
        if device in devices:
            raise ValueError(f"no data for device {device} on {date.isoformat()} in {influx.database}")
        raise ValueError(f"no device {device} in {influx.database} ({devices_said(device, devices)})")
    report = build_day_report(device, date, tz, rows)
    png = png_bytes(report)
    write_whole(out, png if suffix == ".png" else html_page(report, png).encode("utf-8"))
    return report


def devices_said(device: str, devices: list[str]) -> str:
    """The database's devices for a line: a handful, those whose ids are like `device` first (a typo, a letter's
    case), then "…" for the rest."""
    if not devices:
        return "it has no device's data"
    like = set(difflib.get_close_matches(device.lower(), [d.lower() for d in devices], n=len(devices)))
    shown = sorted(devices, key=lambda d: d.lower() not in like)[:DEVICES_SHOWN]  # stable: sorted within each
    return "its devices: " + ", ".join(shown) + (", …" if len(devices) > DEVICES_SHOWN else "")


def write_whole(out: Path, data: bytes) -> None:
    """`out` holds `data`, or what it held: a full disk or a kill midway left a truncated file in place of the
    previous report. Written beside it and renamed over it; a FIFO or a device is written to, never replaced."""
    target = Path(os.path.realpath(out))  # through a link, as open() goes
    if target.exists() and not target.is_file():
        target.write_bytes(data)
        return
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except PermissionError:  # a folder we may not add to (a web root) holding a file we may write: in place, as before
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise OSError(f"cannot write {out}: {exc.strerror or exc}") from None
        return
    except OSError as exc:
        raise OSError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temp, 0o666 & ~_umask())  # as open() would have made it: mkstemp's 0600 hides it from a web server
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise OSError(f"cannot write {out}: {exc.strerror or exc}") from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


