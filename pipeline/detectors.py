"""Slouch episodes, lateral-lean intervals and trunk-rotation excursions from trunk angles.

Each detector: a settings dataclass with units in the names, `update(batch)` returning the events
that finished in that batch, and `close()` for the end of the data (a long gap, the end of a
recording): a slouch or lean then ends at the last sample seen, a rotation cut short is dropped.
Thresholds use hysteresis (enter above `enter`, leave below `exit`); an event starts where the
angle crossed `enter` and ends where it fell below `exit`, not where the dwell time confirmed it,
so durations are not shortened by the dwell and the per-minute time (counted while it is open)
adds up to the events. A slouch or lean also says when its dwell confirmed it, while it goes on
(`starts`: an EpisodeStart per run, at the first sample that completes the dwell — the test its end
must pass too — so every reported episode had exactly one start, whatever the batching).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import EpisodeStart, LeanInterval, RotationExcursion, SlouchEpisode
from .runs import RunFinder


def hysteresis(x: np.ndarray, enter: float, exit_: float, was_high: bool) -> np.ndarray:
    """Schmitt trigger, vectorised: high from x > enter until x < exit_."""
    # Most batches cross no threshold: a low trigger with nothing above enter stays low, a high one with nothing
    # below exit stays high, and the trigger need not run.
    if len(x) == 0 or ((x.min() >= exit_) if was_high else (x.max() <= enter)):
        return np.full(len(x), bool(was_high))
    above = x > enter
    decided = np.flatnonzero(above | (x < exit_))  # the samples that set the state; the others keep it
    verdict = above[decided]
    # The state flips where a decided sample says other than the one before it (the first: than was_high): flips
    # marked, and their running parity is the state. Fewer passes than carrying each sample's last decision.
    flips = np.zeros(len(x), bool)
    flips[decided[verdict != np.concatenate([[was_high], verdict[:-1]])]] = True
    high: np.ndarray = np.logical_xor.accumulate(flips)
    return ~high if was_high else high


def hysteresis_rows(x: np.ndarray, enter: np.ndarray, exit_: np.ndarray, was_high: np.ndarray) -> np.ndarray:
    """`hysteresis` for each row of x (k × n) with its own thresholds and state (k,). Row by row: a row that
    crosses nothing costs a min or a max, and numpy's running maximum along the rows of a 2-d array was slower
    than three rows one after another."""
    high = np.empty(x.shape, bool)
    for k in range(len(x)):
        high[k] = hysteresis(x[k], float(enter[k]), float(exit_[k]), bool(was_high[k]))
    return high


@dataclass
class _Open:
    """Running statistics of a run that may span batches."""

    peak: float = 0.0
    peak_signed: float = 0.0
    total: float = 0.0
    count: int = 0
    start_t_s: float = 0.0
    end_t_s: float = 0.0  # just after the last sample in the run so far
    tainted: bool = False  # walked, lay down, or the facing direction jumped during the run
    confirmed: bool = False  # the dwell has been reached (its start was reported): set by _confirm only


@dataclass(frozen=True)
class _Confirmed:
    """A run the dwell confirmed: where it started, the time it was confirmed, its sum of x until then."""

    start_t_s: float
    at_t_s: float
    total: float


class _RunDetector:
    def __init__(self, enter: float, exit_: float, rate_hz: float, dwell_s: float | None = None):
        self.enter, self.exit, self.dt_s = enter, exit_, 1.0 / rate_hz
        self.dwell_s = dwell_s  # None: runs are not confirmed while they go on (rotations)
        self._runs = RunFinder()
        self._high = False
        self._open = _Open()
        self._offset = 0
        self.high_mask = np.zeros(0, bool)
        self._confirmed: list[_Confirmed] = []  # in the last batch

    def _feed(self, t_s: np.ndarray, x: np.ndarray, magnitude: np.ndarray, allowed: np.ndarray,
              taint: np.ndarray | None) -> list[tuple[_Open, float]]:
        """Completed runs as (stats, end_t_s)."""
        # Where a run is not allowed (walking, say) the trigger is reset: a run after it must cross
        # `enter` again. Masking only the output kept the trigger's state across a batch boundary
        # but not inside a batch, so the events depended on how the stream was batched.
        high = hysteresis(np.where(allowed, magnitude, -np.inf), self.enter, self.exit, self._high)
        return self._take(t_s, x, magnitude, taint, high)

    def _take(self, t_s: np.ndarray, x: np.ndarray, magnitude: np.ndarray, taint: np.ndarray | None,
              high: np.ndarray) -> list[tuple[_Open, float]]:
        """Completed runs, given where the trigger is high (`_feed`, or `feed_together` for all three at once)."""
        self._high = bool(high[-1]) if len(high) else self._high
        self.high_mask = high
        self._confirmed = []
        done = []
        off = self._offset
        for run in self._runs.feed(high):
            a = max(run.start, off) - off
            stats = self._open if run.start < off else _Open(start_t_s=float(t_s[a]))
            self._confirm(stats, t_s[a:run.end - off], x[a:run.end - off])
            self._accumulate(stats, t_s[a:run.end - off], x[a:run.end - off], magnitude[a:run.end - off],
                             None if taint is None else taint[a:run.end - off])
            done.append((stats, float(t_s[run.end - off - 1]) + self.dt_s if run.end > off else stats.end_t_s))
            self._open = _Open()
        if self._runs.open_start is not None:
            a = max(self._runs.open_start, off) - off
            if self._runs.open_start >= off:
                self._open = _Open(start_t_s=float(t_s[a]))
            self._confirm(self._open, t_s[a:], x[a:])
            self._accumulate(self._open, t_s[a:], x[a:], magnitude[a:], None if taint is None else taint[a:])
        self._offset += len(t_s)
        return done

    def _confirm(self, o: _Open, t_s: np.ndarray, x: np.ndarray) -> None:
        """Note the run as confirmed at its first sample here that completes the dwell (sample + dt − start ≥
        dwell). The one definition of "confirmed": the flag decides whether a run is reported when it ends
        (`_episodes`, `_intervals`) and whether it is in progress (`_confirmed_open`), so a run reported at its
        end was confirmed exactly once, at a sample that does not depend on the batching."""
        if self.dwell_s is None or o.confirmed or len(t_s) == 0:
            return
        reached = (t_s + self.dt_s) - o.start_t_s >= self.dwell_s  # times increase: False, then True
        if not reached[-1]:
            return
        i = int(np.argmax(reached))
        o.confirmed = True
        self._confirmed.append(_Confirmed(o.start_t_s, float(t_s[i]) + self.dt_s, o.total + float(x[:i + 1].sum())))

    def _accumulate(self, o: _Open, t_s: np.ndarray, x: np.ndarray, magnitude: np.ndarray,
                    taint: np.ndarray | None) -> None:
        if len(x) == 0:
            return
        o.end_t_s = float(t_s[-1]) + self.dt_s
        k = int(np.argmax(magnitude))
        if magnitude[k] > o.peak:
            o.peak, o.peak_signed = float(magnitude[k]), float(x[k])
        o.total += float(x.sum())
        o.count += len(x)
        o.tainted |= taint is not None and bool(taint.any())

    def _confirmed_open(self) -> _Open | None:
        """The run in progress, once its dwell confirmed it (`_confirm`: the one test, so what is open here is
        exactly what has had its start and not yet its end)."""
        if self._runs.open_start is not None and self._open.confirmed:
            return self._open
        return None

    def _close(self) -> list[tuple[_Open, float]]:
        """End the open run at the last sample seen (a long gap, the end of the data)."""
        done = [(self._open, self._open.end_t_s)] if self._runs.open_start is not None else []
        self._runs.close()
        self._high = False
        self._open = _Open()
        return done


@dataclass(frozen=True)
class SlouchSettings:
    rate_hz: float = 100.0
    threshold_deg: float = 15.0  # flexion beyond calibrated upright (products use ~10–15°)
    hysteresis_deg: float = 3.0  # leave only below threshold − this: no flicker around the line
    dwell_s: float = 5.0  # held at least this long (products use ~5 s)


class SlouchDetector(_RunDetector):
    def __init__(self, settings: SlouchSettings = SlouchSettings()):
        super().__init__(settings.threshold_deg, settings.threshold_deg - settings.hysteresis_deg, settings.rate_hz,
                         settings.dwell_s)
        self.settings = settings
        self.starts: list[EpisodeStart] = []  # slouches the dwell confirmed in the last update, in order

    def update(self, t_s: np.ndarray, flexion_deg: np.ndarray, allowed: np.ndarray) -> list[SlouchEpisode]:
        """Slouches that ended in this batch; those confirmed in it are in `starts`."""
        return self._ended(self._feed(t_s, flexion_deg, flexion_deg, allowed, None))

    def _ended(self, runs: list[tuple[_Open, float]]) -> list[SlouchEpisode]:
        self.starts = [EpisodeStart("slouch", c.start_t_s, c.at_t_s - c.start_t_s) for c in self._confirmed]
        return self._episodes(runs)

    def close(self) -> list[SlouchEpisode]:
        return self._episodes(self._close())

    def in_progress(self, now_s: float) -> SlouchEpisode | None:
        """The slouch going on at now_s, as it would be if it ended then, once the dwell confirmed it."""
        o = self._confirmed_open()
        return None if o is None else SlouchEpisode(o.start_t_s, now_s, o.peak, o.total / o.count)

    def _episodes(self, runs: list[tuple[_Open, float]]) -> list[SlouchEpisode]:
        return [SlouchEpisode(o.start_t_s, end_s, o.peak, o.total / o.count)
                for o, end_s in runs if o.confirmed]



@dataclass(frozen=True)
class LeanSettings:
    rate_hz: float = 100.0
    threshold_deg: float = 6.0  # |lateral bend| beyond calibrated upright
    hysteresis_deg: float = 2.0
    dwell_s: float = 5.0


class LeanDetector(_RunDetector):
    def __init__(self, settings: LeanSettings = LeanSettings()):
        super().__init__(settings.threshold_deg, settings.threshold_deg - settings.hysteresis_deg, settings.rate_hz,
                         settings.dwell_s)
        self.settings = settings
        self.starts: list[EpisodeStart] = []  # leans the dwell confirmed in the last update, in order

    def update(self, t_s: np.ndarray, lateral_deg: np.ndarray, sitting: np.ndarray) -> list[LeanInterval]:
        """Lean intervals that ended in this batch; those confirmed in it are in `starts`."""
        return self._ended(self._feed(t_s, lateral_deg, np.abs(lateral_deg), sitting, None))

    def _ended(self, runs: list[tuple[_Open, float]]) -> list[LeanInterval]:
        self.starts = [EpisodeStart("lean", c.start_t_s, c.at_t_s - c.start_t_s, _side(c.total))
                       for c in self._confirmed]
        return self._intervals(runs)

    def close(self) -> list[LeanInterval]:
        return self._intervals(self._close())

    def _intervals(self, runs: list[tuple[_Open, float]]) -> list[LeanInterval]:
        return [_lean(o, end_s) for o, end_s in runs if o.confirmed]

    def in_progress(self, now_s: float) -> LeanInterval | None:
        """The lean going on at now_s, as it would be if it ended then, once the dwell confirmed it."""
        o = self._confirmed_open()
        return None if o is None else _lean(o, now_s)


def _lean(o: _Open, end_s: float) -> LeanInterval:
    return LeanInterval(o.start_t_s, end_s, _side(o.total), o.total / o.count)


def _side(total_deg: float) -> str:
    return "right" if total_deg > 0 else "left"


@dataclass(frozen=True)
class RotationSettings:
    rate_hz: float = 100.0
    enter_deg: float = 12.0  # an excursion starts beyond this …
    exit_deg: float = 4.0  # … and is over when the trunk is back within this
    min_peak_deg: float = 15.0
    max_peak_deg: float = 60.0  # seated axial trunk rotation reaches ~45° a side: beyond, the pelvis turned too
    min_s: float = 0.1  # a brisk 20° twist is out and back in a quarter of a second
    max_s: float = 15.0  # held longer, it is a new facing direction (pipeline/axial.py waits as long)


class RotationDetector(_RunDetector):
    """Out-and-back axial rotations within the trunk's range; any that overlap walking or a facing-direction
    jump are dropped. One back IMU sees the upper trunk turn against the facing direction: a swivel
    chair turned out and back by less than max_peak_deg looks the same, and is counted (docs/pipeline.md)."""

    def __init__(self, settings: RotationSettings = RotationSettings()):
        super().__init__(settings.enter_deg, settings.exit_deg, settings.rate_hz)
        self.settings = settings

    def update(self, t_s: np.ndarray, rotation_deg: np.ndarray, excluded: np.ndarray) -> list[RotationExcursion]:
        """excluded: walking, lying, or the facing direction jumped: an excursion touching these is dropped."""
        return self._ended(self._feed(t_s, rotation_deg, np.abs(rotation_deg), np.ones(len(t_s), bool), excluded))

    def _ended(self, runs: list[tuple[_Open, float]]) -> list[RotationExcursion]:
        out = []
        s = self.settings
        for o, _ in runs:
            # The excursion is over when it is back inside exit_deg: its end is the run's end.
            end_s = o.start_t_s + o.count * self.dt_s
            if (o.tainted or not s.min_peak_deg <= o.peak <= s.max_peak_deg
                    or not s.min_s <= end_s - o.start_t_s <= s.max_s):
                continue
            out.append(RotationExcursion(o.start_t_s, end_s, "right" if o.peak_signed > 0 else "left", o.peak))
        return out

    def close(self) -> list[RotationExcursion]:
        """A rotation cut off by a gap never came back in sight: not an out-and-back excursion."""
        self._close()
        return []


def feed_together(t_s: np.ndarray, slouch: SlouchDetector, flexion_deg: np.ndarray, upright: np.ndarray,
                  lean: LeanDetector, lateral_deg: np.ndarray, sitting: np.ndarray, rotation: RotationDetector,
                  rotation_deg: np.ndarray, excluded: np.ndarray
                  ) -> tuple[list[SlouchEpisode], list[LeanInterval], list[RotationExcursion]]:
    """The three detectors' `update`s in one pass: the three angles gated as rows of one array, as the
    pipeline's batches are small enough that each numpy call costs more than its arithmetic."""
    # Rows filled in place: np.stack's own overhead is a good part of a 100-sample batch's cost.
    magnitude, allowed = np.empty((3, len(t_s))), np.empty((3, len(t_s)), bool)
    magnitude[0] = flexion_deg
    np.abs(lateral_deg, out=magnitude[1])
    np.abs(rotation_deg, out=magnitude[2])
    allowed[0], allowed[1], allowed[2] = upright, sitting, True
    gated = np.where(allowed, magnitude, -np.inf)
    detectors = (slouch, lean, rotation)
    enter, exit_ = np.array([d.enter for d in detectors]), np.array([d.exit for d in detectors])
    high = hysteresis_rows(gated, enter, exit_, np.array([d._high for d in detectors]))
    return (slouch._ended(slouch._take(t_s, flexion_deg, magnitude[0], None, high[0])),
            lean._ended(lean._take(t_s, lateral_deg, magnitude[1], None, high[1])),
            rotation._ended(rotation._take(t_s, rotation_deg, magnitude[2], excluded, high[2])))
