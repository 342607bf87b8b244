"""A DayReport drawn: one matplotlib figure as PNG bytes, and a self-contained HTML page around it (pure).

The figure is built on matplotlib's object API (Figure, no pyplot), so it needs no display and
no global backend state. Times are shown in the report's time zone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime
from typing import cast

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Patch
from matplotlib.textpath import text_to_path
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator

from pipeline.events import ACTIVITIES, SIDES, WALKING
from pipeline.symmetry import MIN_TOTAL_DEG

from .day import MINUTE_S, DayReport

FIGURE_SIZE_IN = (14.0, 10.0)
DPI = 120
LABEL_ROOM = 0.012  # of the time axis: about the width of one 8-point label turned upright on the figure
DAY_S = 86400.0  # matplotlib's date numbers count days
# A walk's narrowest in the activity strip, of the time axis: about 5 pixels of the figure at DPI. A minute of a day
# is under one, and a short walk was lost in the sitting around it.
WALK_MIN_WIDTH = 0.004
TITLE_FONT = FontProperties(size=13, weight="bold")
# A title line at most 94 % of the figure's width (72 points an inch): constrained layout keeps a margin at each
# edge, and the Agg renderer's hinting draws text a little wider than the font's outlines measure.
TITLE_WIDTH_PT = FIGURE_SIZE_IN[0] * 72.0 * 0.94
SEPARATOR = " · "  # between the header's parts; a title too wide for one line is broken there instead

# A day with only the live stream or events: its totals would read "worn 0.0 min", as if it had not been worn.
NO_MINUTES = "no per-minute totals that day"

COLOR = {"flexion": "#1f4e9a", "lateral": "#d9771e", "slouch": "#e15759", "alert": "#7b3294",
         "calibration": "#6b6b6b", "left": "#4e79a7", "right": "#f28e2b",
         "sitting": "#4e79a7", "standing": "#59a14f", "walking": "#edc948", "lying": "#b07aa1"}


def png_bytes(report: DayReport, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    figure(report).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure(report: DayReport) -> Figure:
    fig = Figure(figsize=FIGURE_SIZE_IN, layout="constrained")
    # Text from the data (the device, alert kinds) is drawn as written: matplotlib reads $…$ as math, and
    # refuses what it cannot parse.
    fig.suptitle(wrapped(header_parts(report), TITLE_WIDTH_PT), fontproperties=TITLE_FONT, parse_math=False)
    # 2 × 1 subfigures come as an array; matplotlib's stub allows a single SubFigure here as well.
    top, bottom = cast(np.ndarray, fig.subfigures(2, 1, height_ratios=[1.55, 1.0]))
    ax_angles, ax_activity = top.subplots(2, 1, sharex=True, height_ratios=[4.0, 0.8])
    _draw_angles(ax_angles, report)
    _draw_activity(ax_activity, report)
    _time_axis(ax_activity, report)
    rotation_fig, lean_fig = bottom.subfigures(1, 2, width_ratios=[2.0, 1.0])
    _draw_rotation(rotation_fig, report)
    _draw_lean(lean_fig.subplots(), report)
    return fig


def header_line(report: DayReport) -> str:
    return SEPARATOR.join(header_parts(report))


def header_parts(report: DayReport) -> list[str]:
    t = report.totals
    slouch = f"slouch {format_duration(t.slouch_s)}"
    if t.slouch_pct_of_worn is not None:
        slouch += f" ({t.slouch_pct_of_worn:.0f} % of worn time)"
    totals = [f"worn {format_duration(t.worn_s)}", slouch] if report.minutes else [NO_MINUTES]
    return [report.device, f"{report.day.isoformat()} ({zone_name(report)})", *totals, report.alerts_said()]


def wrapped(parts: list[str], width_pt: float, font: FontProperties = TITLE_FONT) -> str:
    """The parts joined by SEPARATOR, a line (at most width_pt wide in `font`) filled with as many as fit before the
    next begins; a part too wide for a line of its own is broken at its spaces. In one line, a long zone name or
    device pushed the figure's title past both edges ("ostureDemo … recovere")."""
    def fits(line: str) -> bool:
        return text_to_path.get_text_width_height_descent(line, font, ismath=False)[0] <= width_pt

    lines: list[str] = []
    for part in parts:
        if lines and fits(joined := lines[-1] + SEPARATOR + part):
            lines[-1] = joined
            continue
        lines.append("")
        for word in part.split(" "):
            if lines[-1] and not fits(lines[-1] + " " + word):
                lines.append("")
            lines[-1] += (" " if lines[-1] else "") + word
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    minutes = seconds / 60.0
    if minutes < 10:
        return f"{minutes:.1f} min"
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _degrees(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}°"


def zone_name(report: DayReport) -> str:
    return getattr(report.tz, "key", None) or str(report.tz)


def clock_time(report: DayReport, t_s: float) -> str:
    """A time of the report's day as its wearer's clock read it; with the zone's abbreviation on a day the clocks
    changed (Europe/Berlin's 2026-10-25 shows 02:30 twice, an hour apart: CEST, then CET)."""
    at = datetime.fromtimestamp(t_s, report.tz)
    return f"{at:%H:%M:%S}" + (f" {at:%Z}" if clocks_changed(report) else "")


def _num(report: DayReport, t_s: float) -> float:
    """Unix seconds → matplotlib date number (days); it is UTC-based, and the locator and formatter add the zone."""
    date = datetime.fromtimestamp(t_s, report.tz)
    return cast(float, mdates.date2num(date))  # type: ignore[no-untyped-call]  # matplotlib.dates is unannotated


def _draw_angles(ax: Axes, report: DayReport) -> None:
    step = f"{report.live_step_s:g} s"
    if report.live:  # the fine trace where the live stream was kept
        times, flexion, lateral = live_trace(report)
        ax.plot(times, flexion, color=COLOR["flexion"], lw=1.0, label=f"flexion ({step} mean, live)")
        ax.plot(times, lateral, color=COLOR["lateral"], lw=1.0, label=f"lateral bend ({step} mean, live)")
    if report.trace_minutes:  # per-minute means where it was not
        times, flexion, lateral = _steps(report)
        ax.plot(times, flexion, color=COLOR["flexion"], lw=1.6, ls="--" if report.live else "-",
                label="flexion (per-minute mean)")
        ax.plot(times, lateral, color=COLOR["lateral"], lw=1.6, ls="--" if report.live else "-",
                label="lateral bend (per-minute mean)")
    ax.axhline(0.0, color="black", lw=0.6)
    for start_s, end_s in report.slouch_spans:
        ax.axvspan(_num(report, start_s), _num(report, end_s), color=COLOR["slouch"], alpha=0.18, lw=0)
    # Labels sit just under the top edge, in axes coordinates, so they stay put whatever the angles.
    label_y = ax.get_xaxis_transform()
    for c in report.calibrations:
        ax.axvline(_num(report, c.time_s), color=COLOR["calibration"], ls=":", lw=1.2)
        ax.text(_num(report, c.time_s), 0.02, " calibration", transform=label_y, rotation=90, va="bottom",
                ha="left", fontsize=8, color=COLOR["calibration"])  # right of its line: it is often the first
    for a in report.alerts:
        ax.axvline(_num(report, a.time_s), color=COLOR["alert"], ls="--", lw=1.1)
    for time_s, label in alert_labels([(a.time_s, a.kind) for a in report.alerts],
                                      report.data_end_s - report.data_start_s):
        ax.text(_num(report, time_s), 0.98, f"{label} ", transform=label_y, rotation=90, va="top", ha="right",
                fontsize=8, color=COLOR["alert"], parse_math=False)
    ax.set_ylabel("trunk angle (°)\nflexion + forward · lateral + right")
    resolution = f"{step} means of the live stream" if report.live else "per-minute means"
    if report.live and report.trace_minutes:
        resolution += ", per-minute means elsewhere"
    ax.set_title(f"Trunk angles · {resolution}", loc="left", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=COLOR["slouch"], alpha=0.25, label="slouching"),
                ax.plot([], [], color=COLOR["alert"], ls="--", lw=1.1, label="alert (kind)")[0]]
    # Outside the plot, beside it: inside it would hide the alert labels along the top edge.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(_num(report, report.data_start_s), _num(report, report.data_end_s))


def alert_labels(alerts: list[tuple[float, str]], span_s: float) -> list[tuple[float, str]]:
    """(time_s, label) for (time_s, kind) alerts in time order: one label for a run of alerts each less than
    LABEL_ROOM of the time axis after the one before, at the first, naming each kind once (×n for more). Two alerts
    decided in one minute drew their labels over each other ("sitlean", a newcomer's demo report)."""
    labels: list[tuple[float, list[str]]] = []
    last_s = -math.inf
    for time_s, kind in alerts:
        if time_s - last_s >= LABEL_ROOM * span_s or not labels:
            labels.append((time_s, []))
        labels[-1][1].append(kind)
        last_s = time_s
    return [(time_s, " · ".join(k if (n := kinds.count(k)) == 1 else f"{k} ×{n}" for k in dict.fromkeys(kinds)))
            for time_s, kinds in labels]


def live_trace(report: DayReport) -> tuple[list[float], list[float], list[float]]:
    """The live buckets as a line through their middles (matplotlib date numbers, degrees); a gap of more than
    two buckets (the link lost, not worn, not calibrated) breaks the line."""
    times: list[float] = []
    flexion: list[float] = []
    lateral: list[float] = []
    step_s = report.live_step_s
    for i, b in enumerate(report.live):
        if i and b.start_s - report.live[i - 1].start_s > 2 * step_s:
            times.append(_num(report, report.live[i - 1].start_s + step_s))
            flexion.append(math.nan)
            lateral.append(math.nan)
        times.append(_num(report, b.start_s + step_s / 2))
        flexion.append(math.nan if b.flexion_deg is None else b.flexion_deg)
        lateral.append(math.nan if b.lateral_deg is None else b.lateral_deg)
    return times, flexion, lateral


def _steps(report: DayReport) -> tuple[list[float], list[float], list[float]]:
    """The trace minutes' means as steps across their minute; a missing minute (not worn, no data, or drawn from
    the live stream) breaks the line."""
    times: list[float] = []
    flexion: list[float] = []
    lateral: list[float] = []
    minutes = report.trace_minutes
    for i, m in enumerate(minutes):
        f = math.nan if m.flexion_mean_deg is None else m.flexion_mean_deg
        la = math.nan if m.lateral_mean_deg is None else m.lateral_mean_deg
        end_s = m.start_s + MINUTE_S
        times += [_num(report, m.start_s), _num(report, end_s)]
        flexion += [f, f]
        lateral += [la, la]
        following = minutes[i + 1].start_s if i + 1 < len(minutes) else None
        if following is None or following > end_s + 1.0:
            times.append(_num(report, end_s))
            flexion.append(math.nan)
            lateral.append(math.nan)
    return times, flexion, lateral


def _draw_activity(ax: Axes, report: DayReport) -> None:
    width = MINUTE_S / DAY_S
    for activity in ACTIVITIES:
        blocks = [(_num(report, m.start_s), width) for m in report.strip_minutes if m.activity == activity]
        if blocks:
            ax.broken_barh(blocks, (0.0, 1.0), facecolors=COLOR[activity], edgecolor="none")
    # The live stream's buckets over the minutes: it says when in a minute the wearer stood or sat.
    step = report.live_step_s / DAY_S
    for activity in ACTIVITIES:
        blocks = [(_num(report, b.start_s), step) for b in report.live if b.activity == activity != WALKING]
        if blocks:
            ax.broken_barh(blocks, (0.0, 1.0), facecolors=COLOR[activity], edgecolor="none", zorder=2)
    # Walks over the minutes' main activity, and never narrower than WALK_MIN_WIDTH: a break from sitting is what
    # the strip is looked at for.
    walks = [(_num(report, start_s), (end_s - start_s) / DAY_S) for start_s, end_s in walk_blocks(report)]
    if walks:
        ax.broken_barh(walks, (0.0, 1.0), facecolors=COLOR[WALKING], edgecolor="none", zorder=3, gid="walks")
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([])
    ax.set_ylabel("activity", rotation=0, ha="right", va="center")
    ax.legend(handles=[Patch(color=COLOR[a], label=a) for a in ACTIVITIES], loc="upper left",
              bbox_to_anchor=(1.0, 1.15), fontsize=8, frameon=False)


def walk_blocks(report: DayReport) -> list[tuple[float, float]]:
    """(start_s, end_s) of each walk as drawn: widened about its middle to WALK_MIN_WIDTH of the time axis."""
    least_s = WALK_MIN_WIDTH * (report.data_end_s - report.data_start_s)
    blocks = []
    for start_s, end_s in report.walk_spans:
        widen_s = max(least_s - (end_s - start_s), 0.0) / 2
        blocks.append((start_s - widen_s, end_s + widen_s))
    return blocks


def _time_axis(ax: Axes, report: DayReport) -> None:
    if clocks_changed(report):
        # Ticks by the wall clock skip the hour that repeats (Europe/Berlin's 2026-10-25 was labelled 02:30, then
        # 03:00 an hour and a half later, its nap at 02:00 CET read as 02:50): on such a day they are steps of time
        # from local midnight, labelled with the clock and its abbreviation (02:30 CEST … 02:30 CET).
        ticks = clock_change_ticks(report)
        ax.xaxis.set_major_locator(FixedLocator([_num(report, t_s) for t_s in ticks]))
        ax.xaxis.set_major_formatter(FixedFormatter([clock_tick(report, t_s) for t_s in ticks]))
        ax.set_xlabel(f"local time ({zone_name(report)}; the clocks changed this day)")
        return
    # matplotlib.dates is unannotated: its two constructors are untyped calls (ignored below).
    locator = mdates.AutoDateLocator(tz=report.tz, minticks=4, maxticks=12)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=report.tz, show_offset=False)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel(f"local time ({zone_name(report)})")


# On a day the clocks changed: 1 min to 3 h (from 10 min, a report of a few minutes had no tick: its axis no time)
TICK_STEPS_S = (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0)
MAX_TICKS = 12


def clocks_changed(report: DayReport) -> bool:
    """Whether the zone's offset from UTC changed during the report's day (a DST change)."""
    return len({datetime.fromtimestamp(t, report.tz).utcoffset()
                for t in (report.day_start_s, report.day_end_s - 1)}) > 1


def clock_change_ticks(report: DayReport) -> list[float]:
    """Ticks over the axis's span, equal steps of time from local midnight (at most MAX_TICKS)."""
    span_s = report.data_end_s - report.data_start_s
    step_s = next((s for s in TICK_STEPS_S if span_s / s <= MAX_TICKS), TICK_STEPS_S[-1])
    first = math.ceil((report.data_start_s - report.day_start_s) / step_s)
    last = math.floor((report.data_end_s - report.day_start_s) / step_s)
    return [report.day_start_s + k * step_s for k in range(first, last + 1)]


def clock_tick(report: DayReport, t_s: float) -> str:
    """A tick's label on a day the clocks changed: the wall clock and its abbreviation (02:30 CEST, 02:30 CET)."""
    at = datetime.fromtimestamp(t_s, report.tz)
    return f"{at:%H:%M}\n{at:%Z}"


def _draw_rotation(subfig: SubFigure, report: DayReport) -> None:
    t = report.totals
    si = t.rotation_symmetry_index
    if si is None:
        si_text = f"SI n/a (under {MIN_TOTAL_DEG:.0f}° of rotation in all)"
    else:
        leaning = "right-dominant" if si > 0 else "left-dominant" if si < 0 else "balanced"
        si_text = f"SI {si:+.0f} ({leaning})"
    subfig.suptitle(f"Trunk rotation, left vs right · {si_text}", fontsize=11)
    ax_count, ax_peak = subfig.subplots(1, 2)
    x = range(len(SIDES))
    colors = [COLOR[s] for s in SIDES]
    counts = [t.rotations[s] for s in SIDES]
    bars = ax_count.bar(x, counts, color=colors)
    ax_count.bar_label(bars, padding=2)
    ax_count.set_title("excursions", fontsize=10)
    ax_count.set_ylabel("count")
    ax_count.set_ylim(0, max(counts + [1]) * 1.2)
    ax_count.yaxis.set_major_locator(MaxNLocator(integer=True))
    means = [t.rotation_peak_mean_deg[s] or 0.0 for s in SIDES]
    bars = ax_peak.bar(x, means, color=colors, alpha=0.85)
    # Inside the bar: above it the excursion dots would cover the number.
    ax_peak.bar_label(bars, labels=[f"mean {m:.0f}°" if t.rotation_peak_mean_deg[s] else ""
                                    for s, m in zip(SIDES, means)], label_type="center", color="white",
                      fontweight="bold")
    for i, side in enumerate(SIDES):  # each excursion's peak, spread a little sideways so they do not hide
        peaks = [r.peak_deg for r in report.rotations if r.side == side]
        offsets = [0.5 * ((k % 7) / 6 - 0.5) for k in range(len(peaks))]
        ax_peak.scatter([i + o for o in offsets], peaks, s=14, color="black", zorder=3)
    ax_peak.set_title("mean peak (dots: each excursion)", fontsize=10)
    ax_peak.set_ylabel("peak rotation (°)")
    ax_peak.set_ylim(0, max([r.peak_deg for r in report.rotations] + means + [10.0]) * 1.2)
    for ax in (ax_count, ax_peak):
        ax.set_xticks(list(x), list(SIDES))
        ax.grid(True, axis="y", alpha=0.3)


def _draw_lean(ax: Axes, report: DayReport) -> None:
    t = report.totals
    x = range(len(SIDES))
    minutes = [t.lean_s[s] / 60.0 for s in SIDES]
    bars = ax.bar(x, minutes, color=[COLOR[s] for s in SIDES])
    ax.bar_label(bars, labels=[f"{m:.1f} min\n{plural(t.leans[s], 'lean')}"
                               for s, m in zip(SIDES, minutes)], padding=2, fontsize=9)
    ax.set_xticks(list(x), list(SIDES))
    ax.set_ylabel("minutes")
    ax.set_ylim(0, max(minutes + [0.5]) * 1.35)
    ax.set_title("Lean: minutes per side", fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)


def html_page(report: DayReport, png: bytes) -> str:
    """One file with everything in it: the figure as a data URI, the totals, the alerts."""
    t, e = report.totals, html.escape
    image = base64.b64encode(png).decode("ascii")
    si = "n/a" if t.rotation_symmetry_index is None else f"{t.rotation_symmetry_index:+.0f}"
    totals = [
        ("worn", format_duration(t.worn_s)),
        *((a, format_duration(t.activity_s[a])) for a in ACTIVITIES),
        ("slouch", format_duration(t.slouch_s) + ("" if t.slouch_pct_of_worn is None
                                                   else f" ({t.slouch_pct_of_worn:.0f} % of worn time)")),
        *((f"lean {s}", f"{format_duration(t.lean_s[s])} ({plural(t.leans[s], 'lean')})") for s in SIDES),
        *((f"rotations {s}", f"{t.rotations[s]}, mean peak {_degrees(t.rotation_peak_mean_deg[s])}") for s in SIDES),
        ("rotation symmetry index (+ right-dominant)", si),
    ] if report.minutes else [("totals", NO_MINUTES)]
    totals.append(("alerts", report.alerts_said()))
    rows = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in totals)
    alerts = "\n".join(f"<tr><td>{clock_time(report, a.time_s)}</td>"
                       f"<td>{e(a.kind)}</td><td>{e(a.text)}</td></tr>" for a in report.alerts)
    alerts = alerts or '<tr><td colspan="3">none</td></tr>'
    title = e(f"Posture report: {report.device}, {report.day.isoformat()}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; font-weight: normal; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{e(header_line(report))}</p>
<img src="data:image/png;base64,{image}" alt="{e(header_line(report))}">
<h2>Totals</h2>
<table>
{rows}
</table>
<h2>Alerts, and the praise and summaries sent with them</h2>
<table>
<tr><th>time ({e(zone_name(report))})</th><th>kind</th><th>text</th></tr>
{alerts}
</table>
</body>
</html>
"""
