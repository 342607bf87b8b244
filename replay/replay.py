"""`posture replay`: a recorded CSV through the same pipeline live data goes through.

Reads the file in chunks (memory stays flat however long it is) and hands the pipeline the batches `posture run`
does (`gateway.pipeline_batch_s`), writes events and per-minute metrics as JSON lines, and returns a summary. Reads
`posture record` CSVs and, for data made elsewhere, the x-io Technologies layout (Time (s), Gyroscope X (deg/s), …,
Accelerometer X (g), …).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, tzinfo
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from contract.messages import payload
from pipeline.calibration import Calibration
from pipeline.events import RATE_HZ_RANGE, CalibrationEvent, Event, MinuteMetrics
from pipeline.orientation import offline_quaternions
from pipeline.spikes import lone_spikes
from pipeline.stream import (
    MAX_ACC_G,
    MAX_GYRO_DPS,
    MAX_T_S,
    PipelineSettings,
    PosturePipeline,
    moves_forward,
    plausible,
)
from pipeline.summary import Rollups, Summary
from sensor.profiles import samples_per_notification
from service_io.config import GatewaySettings, PipelineConfig

log = logging.getLogger("posture.replay")

COLUMNS = ("t_s", "acc_x_g", "acc_y_g", "acc_z_g", "gyro_x_dps", "gyro_y_dps", "gyro_z_dps")
# Header names other tools use for the same columns.
ALIASES = {
    "Time (s)": "t_s",
    "Accelerometer X (g)": "acc_x_g", "Accelerometer Y (g)": "acc_y_g", "Accelerometer Z (g)": "acc_z_g",
    "Gyroscope X (deg/s)": "gyro_x_dps", "Gyroscope Y (deg/s)": "gyro_y_dps", "Gyroscope Z (deg/s)": "gyro_z_dps",
}
CHUNK_LINES = 20_000
# Up to this many rows in a row stamped ahead of the rows after them are taken as a glitch in the time column.
GLITCH_ROWS = 8


class ReplayError(ValueError):
    pass


def _columns(header: str) -> list[int]:
    names = [ALIASES.get(h.strip(), h.strip()) for h in header.strip().split(",")]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ReplayError(f"CSV header lacks {', '.join(missing)} (has: {header.strip()[:200]})")
    return [names.index(c) for c in COLUMNS]


def read_chunks(f: io.TextIOBase, stats: dict[str, int]) -> Iterator[tuple[np.ndarray, int]]:
    """((n, 7) array of t_s, acc xyz g, gyro xyz °/s; characters read); bad lines counted and skipped."""
    cols = _columns(f.readline())
    while lines := list(islice(f, CHUNK_LINES)):
        size = sum(map(len, lines))
        try:
            data = np.loadtxt(lines, delimiter=",", usecols=cols, ndmin=2)
        except ValueError:
            data = _parse_leniently(lines, cols, stats)
        good = np.isfinite(data).all(axis=1)
        if not good.all():
            _bad(stats, int((~good).sum()), "non-finite value")
            data = data[good]
        # (A run of rows stamped past 2100 is no time in seconds: longer than GLITCH_ROWS, it made the rest of the file
        # "out of time order".)
        readings = plausible(data[:, 0], data[:, 1:4], data[:, 4:7])
        if not readings.all():
            _bad(stats, int((~readings).sum()), f"value out of range (acceleration over {MAX_ACC_G:g} g, rotation "
                 f"rate over {MAX_GYRO_DPS:g} °/s, a time past {MAX_T_S:.0f} s, 2100) or a failed read "
                 f"(acceleration zero on every axis)")
            data = data[readings]
        yield data, size


def _parse_leniently(lines: list[str], cols: list[int], stats: dict[str, int]) -> np.ndarray:
    rows = []
    for line in lines:
        parts = line.split(",")
        try:
            rows.append([float(parts[c]) for c in cols])
        except (ValueError, IndexError):
            _bad(stats, 1, f"unreadable line {line.strip()[:80]!r}")
    return np.array(rows, dtype=float).reshape(-1, len(cols))


def _bad(stats: dict[str, int], n: int, what: str, kind: str = "bad_lines") -> None:
    """Skipped input of a kind, counted; the first of each kind said (a time column that restarted, a logger
    rebooted, skips the rest of the file: its first row out of order is where)."""
    if stats[kind] == 0:
        log.warning("skipping bad input (%s); further ones are only counted", what)
    stats[kind] += n


# The slowest recording the pipeline can read (its step-frequency band needs 2.7 samples/s); far slower is a time
# column in milliseconds or microseconds, which was read as 0.1 or 0.0001 samples/s and failed with scipy's
# "Wn[0] must be less than Wn[1]" or a ZeroDivisionError traceback.
MIN_RATE_HZ = 5.0


# A step longer than this many times the usual one is a gap (samples lost), not the sensor's pace.
GAP_STEPS = 1.5


def estimate_rate_hz(t_s: np.ndarray) -> float:
    """The rate the steps between rows keep on average, gaps left out. Their median alone was a rate the samples do not
    keep where the steps are uneven: x-io's recording steps 10.08 ms mostly and 7.56 ms one time in 32 (99.86 samples/s
    in all), read at the median's 99.21 each of its minutes held 60.49 s worn."""
    steps = np.diff(t_s)
    steps = steps[steps > 0]
    if len(steps) == 0:
        raise ReplayError("cannot tell the sample rate: timestamps do not increase")
    rate_hz = float(1.0 / steps[steps <= GAP_STEPS * np.median(steps)].mean())
    if rate_hz < MIN_RATE_HZ:
        raise ReplayError(f"the time column gives {rate_hz:.3g} samples/s (a step of {np.median(steps):g}); t_s "
                          f"must be in seconds (milliseconds or microseconds?) and the rate at least {MIN_RATE_HZ:g} "
                          "samples/s")
    return rate_hz


def replay(path: Path, out_path: Path | None, device: str = "replay", progress: bool = True,
           calibration: Calibration | None = None, offline: bool = False,
           tuning: PipelineConfig | None = None,
           batch_s: float = GatewaySettings().pipeline_batch_s, tz: tzinfo = UTC) -> dict[str, Any]:
    """calibration: a known sensor → trunk alignment; None to find it in the recording.
    tuning: the config's [pipeline] values; the sample rate is the recording's own.
    batch_s: the pipeline is handed this many seconds of samples at a time, as `posture run` hands it
    (`gateway.pipeline_batch_s`; 0: a notification's worth), so that a recording reads as it read live. Handed a
    200 s chunk at once, a calibration made in the chunk a recalibration was asked in measured from the next chunk:
    up to 26° of flexion apart, a slouch read as a lean (docs/pipeline.md, "The same day however it is batched").

    tz: the zone of the wearer's days, which the hour and day summaries are of (Rollups).

    offline: orientation from VQF's offline estimate of the whole recording (acausal: more accurate
    than the live filter, docs/accuracy.md); the recording is then held in memory (~300 bytes a sample).
    """
    tuning = tuning or PipelineConfig()
    # Opened for writing, --out truncated the recording it names (a slip of tab completion, or a link to it) before a
    # line of it was read: the recording was gone, and the line said its header was empty.
    if out_path is not None and out_path.exists() and path.exists() and os.path.samefile(path, out_path):
        raise ReplayError(f"--out {out_path} is the recording itself: writing there would empty it before it is read")
    stats = {"bad_lines": 0, "samples": 0, "backwards": 0}
    summary, rollups = Summary(), Rollups(tz)
    pipeline: PosturePipeline | None = None
    # errors="replace": a byte that is not UTF-8 (a bit flipped on an SD card, a note in Latin-1) makes its line
    # unreadable, counted and skipped like any bad line, instead of ending the replay where it stands.
    with open(path, encoding="utf-8-sig", errors="replace") as f, \
            (open(out_path, "w") if out_path else io.StringIO()) as out, \
            tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=None if progress else True,
                 desc=path.name) as bar:
        chunks: Iterator[tuple[np.ndarray, np.ndarray | None]] = _forward_chunks(read_chunks(f, stats), stats, bar)
        if offline:
            chunks = _with_offline_orientation(list(chunks))
        held: list[tuple[np.ndarray, np.ndarray | None]] = []  # read, not yet handed to a pipeline
        rate_hz: float | None = None
        step = 0  # the pipeline's batch, in rows (start)
        last_refusal = ""

        def start(rate_hz: float) -> tuple[PosturePipeline, int]:
            if rate_hz <= RATE_HZ_RANGE[0]:
                log.warning("the recording's %g samples/s are not above the %g the pipeline is made and measured "
                            "for (pipeline.rate_hz): its activities may be misread (at 12.5 samples/s office-short "
                            "read 2.31 of its 2.51 sitting minutes as standing, and its leans as none; at 6.25 its "
                            "walk as standing)", rate_hz, RATE_HZ_RANGE[0])
            return (PosturePipeline(tuning.settings(rate_hz), calibration,
                                    "calibration given: the sensor's axes taken as the trunk's"),
                    max(1, round(batch_s * rate_hz)) if batch_s > 0 else samples_per_notification(rate_hz))

        def feed(pipeline: PosturePipeline, step: int, data: np.ndarray, quat: np.ndarray | None) -> str:
            stats["samples"] += len(data)
            refusal = ""
            for i in range(0, len(data), step):
                batch = data[i:i + step]
                result = pipeline.update(batch[:, 0], batch[:, 1:4], batch[:, 4:7],
                                         quat_wxyz=None if quat is None else quat[i:i + step])
                _emit(out, device, result.events, result.metrics, summary, rollups)
                said = [e.message for e in result.events if isinstance(e, CalibrationEvent) and e.status == "refused"]
                refusal = said[-1] if said else refusal
            return refusal

        for data, quat in chunks:
            if pipeline is not None:
                last_refusal = feed(pipeline, step, data, quat) or last_refusal
                continue
            held.append((data, quat))
            if rate_hz is None:
                # A file that begins with a chunk of unreadable rows (a sensor writing NaN at first) has no rate to
                # tell there: the rows after it do.
                first = np.concatenate([d for d, _ in held])
                if len(first) < 2:
                    continue
                held = [(first, None if quat is None else np.concatenate([q for _, q in held if q is not None]))]
                _check_units(first)
                rate_hz = round(estimate_rate_hz(first[:, 0]), 3)
            # Held until the rotation rate's unit is told (or UNIT_HOLD_ROWS): a recording that begins sitting still
            # for its first 20,000 rows (200 s) had nothing to tell it by there, and was replayed in rad/s unsaid.
            if not _check_rotation_units(np.concatenate([d for d, _ in held]), rate_hz) and \
                    sum(len(d) for d, _ in held) < UNIT_HOLD_ROWS:
                continue
            pipeline, step = start(rate_hz)
            for d, q in held:
                last_refusal = feed(pipeline, step, d, q) or last_refusal
            held = []
        if pipeline is None and rate_hz is not None:  # the whole file held, too little tilting in it to tell the unit
            pipeline, step = start(rate_hz)
            for d, q in held:
                last_refusal = feed(pipeline, step, d, q) or last_refusal
            held = []
        if pipeline is None and held:
            # Say what the others were: a file whose times all go back (rows in reverse) or stand still has every
            # row readable, and "fewer than two readable rows" sent the user looking for a broken file.
            skipped = [f"{n} {what}" for n, what in ((stats["backwards"], "out of time order"),
                                                     (stats["bad_lines"], "bad lines")) if n]
            raise ReplayError("cannot tell the sample rate: fewer than two readable rows in time order"
                              + (f" ({', '.join(skipped)})" if skipped else ""))
        if pipeline is None:  # a summary of zeros and exit 1, unsaid (a newcomer's probe)
            # (Bad lines: unreadable, not numbers, past what an IMU measures, failed reads; the first was said.)
            raise ReplayError(f"no usable rows ({stats['bad_lines']} bad lines)" if stats["bad_lines"] else
                              "no rows after the header")
        if pipeline is not None:
            final = pipeline.finish()
            _emit(out, device, final.events, final.metrics, summary, rollups)
            if pipeline.calibration is None:  # nothing measured: said, or the summary's zeros look like a quiet day
                log.warning("never calibrated, so nothing was measured%s. A recording needs the calibration moves "
                            "(README); one whose sensor x, y, z point forward, left and up: --axes-are-trunk",
                            f" (last: {last_refusal})" if last_refusal else "")
        for line in rollups.flush():
            out.write(json.dumps({"device": device, **line}) + "\n")
    return {"file": str(path), "samples": stats["samples"], "bad_lines": stats["bad_lines"],
            "out_of_order": stats["backwards"], "discarded_samples": pipeline.samples_discarded, **summary.as_dict()}


def _check_units(data: np.ndarray) -> None:
    """Acceleration in m/s² under the _g columns (a phone app's, most loggers') reads gravity as 9.8 g: the replay
    went on and silently moved sitting into standing (office-short: 2.51 → 1.91 min sitting, 0.22 → 0.82 standing)."""
    g = float(np.median(np.linalg.norm(data[:, 1:4], axis=1)))
    if g > 3.0:
        raise ReplayError(f"the acceleration columns read {g:.3g} at their median, gravity is 1 g: they must be in g "
                          f"(m/s² / 9.80665)")


# Rotation rate in rad/s under the _dps columns (phones', most IMU libraries' and BROAD's unit) turns the sensor 57
# times less than it turned: the replay went on and silently read office-short's 4 rotations as none, its 30° bend as
# no bend (calibrated provisionally) and 0.47 of 3.43 worn minutes as not worn. The direction of gravity tells how far
# the sensor tilted, which it cannot have done by more than the rotation rate turned it: over the 1 s windows that
# begin and end still (|acc| within STILL_G of 1 g) and tilt at least TILT_MIN_DEG, turned / tilted has a median of
# 0.71 to 1.23 on every named case's first 20,000 rows, 1.0 on x-io's recording, 1.5 to 3.5 on BROAD's, and 0.02 to 0.06
# in rad/s.
TURN_WINDOW_S = 1.0
STILL_EDGE_S = 0.1  # gravity's direction at a window's start and end: the mean of this long
STILL_G = 0.1
TILT_MIN_DEG = 10.0
MIN_TILTED_WINDOWS = 3  # fewer: too little tilting to tell yet
# Rows read (and held from the pipeline) at most to find MIN_TILTED_WINDOWS: 33 min at 100 samples/s, ~11 MB. A file
# with fewer such windows in them is taken as it is.
UNIT_HOLD_ROWS = 10 * CHUNK_LINES
MIN_TURNED_PER_TILTED = 0.25


def _check_rotation_units(data: np.ndarray, rate_hz: float) -> bool:
    """Refuse rotation-rate columns that turn the sensor far less than gravity's direction says it tilted: rad/s.
    Returns whether the rows tilt enough to tell (False: too few windows yet)."""
    t_s, acc_g, gyro_dps = data[:, 0], data[:, 1:4], data[:, 4:7]
    window, edge = max(2, round(rate_hz * TURN_WINDOW_S)), max(1, round(rate_hz * STILL_EDGE_S))
    n = len(t_s) // window
    if n < MIN_TILTED_WINDOWS:
        return False
    # A gap in the file turns nothing: each sample's rate counts for at most two periods.
    dt_s = np.clip(np.diff(t_s, append=t_s[-1]), 0.0, 2.0 / rate_hz)[:n * window]
    turned_deg = (np.linalg.norm(gyro_dps[:n * window], axis=1) * dt_s).reshape(n, window).sum(axis=1)
    windows = acc_g[:n * window].reshape(n, window, 3)
    first, last = windows[:, :edge].mean(axis=1), windows[:, -edge:].mean(axis=1)
    first_g, last_g = np.linalg.norm(first, axis=1), np.linalg.norm(last, axis=1)
    still = (np.abs(first_g - 1.0) < STILL_G) & (np.abs(last_g - 1.0) < STILL_G)
    cos = np.clip((first * last).sum(axis=1) / np.maximum(first_g * last_g, 1e-12), -1.0, 1.0)
    tilted_deg = np.degrees(np.arccos(cos))
    judged = still & (tilted_deg >= TILT_MIN_DEG)
    if judged.sum() < MIN_TILTED_WINDOWS:
        return False
    ratio = float(np.median(turned_deg[judged] / tilted_deg[judged]))
    if ratio < MIN_TURNED_PER_TILTED:
        raise ReplayError(f"the rotation-rate columns turn the sensor {ratio:.2g} times as far as gravity's direction "
                          f"says it tilted ({int(judged.sum())} windows of {TURN_WINDOW_S:g} s): they must be in °/s "
                          f"(rad/s × 57.2958), or the gyroscope reads next to nothing")
    return True


def _forward_chunks(chunks: Iterable[tuple[np.ndarray, int]], stats: dict[str, int],
                    bar: tqdm) -> Iterator[tuple[np.ndarray, None]]:
    """Time must go forward; a row that goes back is bad input, not a reason to stop. The last GLITCH_ROWS + 1 rows
    of a chunk wait for the next: whether a row's time is a glitch is told by the rows after it."""
    last_t = -np.inf
    held, before = np.empty((0, len(COLUMNS))), np.empty(0)
    for data, size in chain(chunks, [(None, 0)]):
        bar.update(size)
        rows = held if data is None else np.vstack([held, data])
        n_judged = len(rows) if data is None else max(0, len(rows) - GLITCH_ROWS - 1)
        judged, held = rows[:n_judged], rows[n_judged:]
        glitch = stamped_ahead(before, judged[:, 0], held[:, 0])
        before = np.concatenate([before, judged[:, 0]])[-GLITCH_ROWS:]
        judged = judged[~glitch]
        forward = moves_forward(last_t, judged[:, 0])
        if not forward.all() or glitch.any():
            at = int(np.argmin(forward)) if not forward.all() else None
            _bad(stats, int((~forward).sum() + glitch.sum()), "rows out of time order" if at is None else
                 f"rows out of time order, first: t = {_time_said(judged[at, 0])} s after t = "
                 f"{_time_said(max(last_t, judged[:at, 0].max(initial=-np.inf)))} s", kind="backwards")
            judged = judged[forward]
        if len(judged):
            last_t = judged[-1, 0]
            yield judged, None


def _time_said(t_s: float) -> str:
    """A time of the file as it can be found in it: to the microsecond, no trailing zeros. With :g, Unix times (a
    `posture record` file's) all read 1.79656e+09: the row that went back could not be told from the one before."""
    return f"{t_s:.6f}".rstrip("0").rstrip(".")


def stamped_ahead(before: np.ndarray, t: np.ndarray, after: np.ndarray, k: int = GLITCH_ROWS) -> np.ndarray:
    """Per time in t: later than two or more of the next k + 1 times, which go on from the k before — a row stamped
    ahead of its neighbours (a glitch, a far-future time), not the recording moving on. Kept, such a row makes
    every row after it look backwards: one bad time would drop the rest of the recording. Later than one of them
    only, it is that one row that came late (a backward jitter): it alone goes, as out of order, not the up to k
    good rows before it.

    before/after: up to k (after: k + 1) times either side of t, for context (none before the start or after the end
    of the file). A time that goes back past the rows before (a logger's clock restarted) is no glitch of the row
    ahead of it.
    """
    times = np.concatenate([before, t, after])
    if len(times) < 2:
        return np.zeros(len(t), bool)
    following = sliding_window_view(np.concatenate([times[1:], np.full(k + 1, np.inf)]), k + 1)[:len(times)]
    next_min = following.min(axis=1)
    prev_min = sliding_window_view(np.concatenate([np.full(k, np.inf), times[:-1]]), k).min(axis=1)
    if not len(before):  # the file's first row: nothing before it to go on from
        prev_min[0] = -np.inf
    ahead: np.ndarray = ((following < times[:, None]).sum(axis=1) >= 2) & (next_min > prev_min)
    return ahead[len(before):len(before) + len(t)]


def _with_offline_orientation(
        chunks: list[tuple[np.ndarray, np.ndarray | None]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The chunks again, each with VQF's offline orientation of its samples.

    offlineVQF wants one uniformly sampled stretch: the recording is cut at gaps longer than the
    pipeline bridges, and shorter gaps are filled on the sample grid (as the pipeline does) for it,
    as are lone spikes, which the pipeline drops (pipeline/spikes.py): offline VQF
    spreads one over the seconds around it, before and after.
    """
    if not chunks:
        return
    data = np.vstack([c for c, _ in chunks])
    settings = PipelineSettings.for_rate(round(estimate_rate_hz(data[:, 0]), 3))
    dt_s = 1.0 / settings.rate_hz
    quat = np.empty((len(data), 4))
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(data[:, 0]) > settings.max_fill_s) + 1, [len(data)]])
    for a, b in zip(cuts[:-1], cuts[1:]):
        t = data[a:b, 0]
        grid = np.round((t - t[0]) / dt_s).astype(np.int64)
        real = ~lone_spikes(t, data[a:b, 1:4], data[a:b, 4:7], dt_s)
        filled = np.column_stack([np.interp(np.arange(grid[-1] + 1), grid[real], data[a:b, j][real])
                                  for j in range(1, 7)])
        quat[a:b] = offline_quaternions(filled[:, 3:6], filled[:, 0:3], settings.orientation)[grid]
    start = 0
    for c, _ in chunks:
        yield c, quat[start:start + len(c)]
        start += len(c)


def _emit(out: io.TextIOBase, device: str, events: list[Event], metrics: list[MinuteMetrics], summary: Summary,
          rollups: Rollups) -> None:
    for e in events:
        summary.add_event(e)
        rollups.add_event(e)
        out.write(json.dumps(payload(device, e)) + "\n")
    for m in metrics:
        summary.add_minute(m)
        for line in rollups.add_minute(m):
            out.write(json.dumps({"device": device, **line}) + "\n")
        out.write(json.dumps(payload(device, m)) + "\n")
