"""Running statistics carried from batch to batch, vectorised within a batch.

One home for what several stages need: a moving mean over the last k samples (the tail of the
previous batch carried over, or a history kept by the caller), an exponential mean over selected
samples in closed form, and the band-pass that walking detection and the walking direction use at step
frequency and the wear test at breathing's.
"""

from __future__ import annotations

import copy
from typing import cast

import numpy as np
from scipy.signal import butter, lfilter, lfilter_zi

STEP_BAND_HZ = (1.2, 4.0)  # walking's step frequency (1.25–3.3 steps/s) and its first harmonic


def exp_mean(mean: float, alpha: float, x: np.ndarray) -> float:
    """`mean` after len(x) exponential steps m ← (1 − α) m + α xᵢ, in closed form."""
    return float(mean * (1.0 - alpha) ** len(x) + alpha * (_decay(alpha, len(x)) @ x))


DECAY_KEPT = 1 << 16  # powers kept per α: a replay's minute batches fit; a longer batch computes its own


_DECAYS: dict[float, np.ndarray] = {}  # α → (1 − α)^(m−1) … (1 − α)^0 for the longest m needed so far


def _decay(alpha: float, n: int) -> np.ndarray:
    """(1 − α)^(n−1) … (1 − α)^0: the last n of one table per α, the same powers whatever its length. The
    number of samples selected (at rest, sitting) changes from batch to batch, and a table per length was
    computed again nearly every call."""
    table = _DECAYS.get(alpha)
    if table is None or len(table) < n:
        if n > DECAY_KEPT:
            return (1.0 - alpha) ** np.arange(n - 1, -1, -1)
        m = min(DECAY_KEPT, max(1024, 1 << (n - 1).bit_length()))
        table = _DECAYS[alpha] = (1.0 - alpha) ** np.arange(m - 1, -1, -1)
        table.flags.writeable = False
    return table[len(table) - n:]


def _sums_from_zero(x: np.ndarray) -> np.ndarray:
    """0, x[0], x[0] + x[1], …: the sum of any run of x is a difference of two of these."""
    c = np.empty(len(x) + 1)
    c[0] = 0.0
    np.cumsum(x, out=c[1:])
    return c


def trailing_mean(x: np.ndarray, n: int, window: int) -> np.ndarray:
    """For each of x's last n values, the mean of it and the window − 1 values before it (fewer where x begins)."""
    c = _sums_from_zero(x)
    first = len(x) - n + 1  # where the first of them ends in c
    if first >= window:  # each has a whole window behind it (most calls): slices, no index arrays
        return cast(np.ndarray, (c[first:] - c[first - window:len(c) - window]) / window)
    end = np.arange(len(x) - n, len(x)) + 1
    lo = np.maximum(end - window, 0)
    return cast(np.ndarray, (c[end] - c[lo]) / (end - lo))


class MovingMean:
    """Mean over the last `window` samples (fewer at the very start), continuing across batches. Its state is
    rebound, never changed in place, so `copy` is a snapshot to go back to."""

    def __init__(self, window: int):
        self.window = max(1, window)
        self._tail = np.zeros(0)

    def update(self, x: np.ndarray) -> np.ndarray:
        both = np.concatenate([self._tail, x])
        w, full = self.window, len(self._tail) == self.window - 1
        self._tail = both[-(w - 1):] if w > 1 else np.zeros(0)
        if not full:
            return trailing_mean(both, len(x), w)
        # Every sample has a whole window behind it (all but the first batch): no index arrays needed.
        c = _sums_from_zero(both)
        return cast(np.ndarray, (c[w:] - c[:-w]) / w)

    def copy(self) -> MovingMean:
        return copy.copy(self)


class Band:
    """Band-pass (2nd-order Butterworth), by default at step frequency, with its state carried across batches."""

    def __init__(self, rate_hz: float, band_hz: tuple[float, float] = STEP_BAND_HZ, channels: int = 1,
                 settled: bool = False):
        nyquist = rate_hz / 2.0
        band = [min(f, 0.45 * rate_hz) / nyquist for f in band_hz]
        self._b, self._a = butter(2, band, "bandpass")
        self._zi = np.zeros((channels, len(lfilter_zi(self._b, self._a))))
        # settled: the first samples taken as having lasted for ever (a gyro's bias rings for seconds from zero)
        self._settle = lfilter_zi(self._b, self._a) if settled else None

    def update(self, x: np.ndarray, channel: int = 0) -> np.ndarray:
        if not len(x):  # scipy's lfilter hands back no state for no samples, but uninitialised memory (1.17.1)
            return np.zeros(0)
        y, self._zi[channel] = lfilter(self._b, self._a, x, zi=self._zi[channel])
        return cast(np.ndarray, y)

    def update_all(self, x: np.ndarray) -> np.ndarray:
        """Every channel at once (x: channels × n): one call, as each costs more than its filtering."""
        if not x.shape[-1]:  # (as in update)
            return np.zeros(x.shape)
        if self._settle is not None:
            self._zi, self._settle = np.outer(x[:, 0], self._settle), None
        y, self._zi = lfilter(self._b, self._a, x, axis=-1, zi=self._zi)
        return cast(np.ndarray, y)

    def state(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Where the filter stands, to go back to (`restore`) and filter fewer samples."""
        return self._zi.copy(), self._settle

    def restore(self, state: tuple[np.ndarray, np.ndarray | None]) -> None:
        self._zi, self._settle = state[0].copy(), state[1]


class RestLevel:
    """A signal's level at rest, for telling movement from rest by how far a sample is from it, the same however the
    stream is batched: the median of the first `first_n` eligible samples, then the exponential mean (weight `alpha`
    a sample) of the samples judged at rest, taken up at the end of each block of `block_n` samples counted from the
    first one it is given, so that a sample is judged against the level as of its block's start. (Followed batch by
    batch, a one-minute batch was judged against a level a minute old, and the first against its own median: a
    recording replayed in minutes read sit-downs and calibration holds that the same data in seconds did not.) Until
    the first level is known every eligible sample is at rest. Its state is rebound, never changed in place, so
    `copy` is a snapshot to go back to."""

    def __init__(self, first_n: int, alpha: float, tol: float, block_n: int):
        self.first_n, self.alpha, self.tol, self.block_n = first_n, alpha, tol, block_n
        self.level: float | None = None
        self._first = np.zeros(0)
        self._n = 0  # samples seen
        self._carry = (1.0, 0.0)  # the block under way so far: at its end, level ← a · level + b
        self._powers = (1.0 - alpha) ** np.arange(block_n + 1)  # (1 − α)^k for the k samples of a block, looked up

    def copy(self) -> RestLevel:
        return copy.copy(self)

    def reset(self, level: float) -> None:
        """A new level from here on (the samples of the block under way so far are not followed)."""
        self.level, self._carry = level, (1.0, 0.0)

    def at_rest(self, x: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """Per sample: eligible and within tol of the level. A sample that is not a number is not eligible: in the first
        median or a block's mean it would make the level NaN for good."""
        eligible = eligible & np.isfinite(x)
        n, k, rest = len(x), 0, eligible.copy()
        if self.level is None:
            take = np.flatnonzero(eligible)[:self.first_n - len(self._first)]
            self._first = np.concatenate([self._first, x[take]])
            if len(self._first) < self.first_n:
                self._n += n
                return rest
            self.reset(float(np.median(self._first)))
            self._first, k = np.zeros(0), int(take[-1]) + 1
        if k < n:
            rest[k:] = self._judge(x[k:], eligible[k:], self._n + k)
        self._n += n
        return rest

    def _judge(self, x: np.ndarray, eligible: np.ndarray, first: int) -> np.ndarray:
        """Samples from absolute index first on, the level known: each block's level depends only on the blocks before
        it, so judging all against the levels the last pass gave settles block by block (one pass more, as a rule)."""
        assert self.level is not None
        done = (first + len(x)) % self.block_n == 0  # the last block ends with this batch
        if first // self.block_n == (first + len(x) - 1) // self.block_n:  # one block (the gateway's 1 s batches)
            rest_in_block: np.ndarray = eligible & (np.abs(x - self.level) <= self.tol)
            v = x[rest_in_block]
            step = float(self._powers[len(v)])
            gain = self.alpha * float(self._powers[len(v) - 1::-1] @ v) if len(v) else 0.0
            step, gain = step * self._carry[0], step * self._carry[1] + gain
            if done:
                self.level, self._carry = step * self.level + gain, (1.0, 0.0)
            else:
                self._carry = (step, gain)
            return rest_in_block
        block = (first + np.arange(len(x))) // self.block_n
        block -= block[0]
        levels = np.full(int(block[-1]) + 1, self.level)
        while True:
            off = np.abs(x - levels[block])
            rest: np.ndarray = eligible & (off <= self.tol)
            a, b = self._blocks(x[rest], block[rest], len(levels))
            a[0], b[0] = a[0] * self._carry[0], a[0] * self._carry[1] + b[0]
            new = levels.copy()
            for j in range(len(levels) - 1):  # the level each block starts at (a few dozen floats a minute of data)
                new[j + 1] = a[j] * new[j] + b[j]
            moved = float(np.abs(new - levels).max())
            if not moved > 0.0:  # (nor a NaN level from reset: no pass changes it)
                break
            # No sample as near the tolerance as the levels moved: judged against them, none changes side (most calls).
            if not (np.abs(off[eligible] - self.tol) <= moved).any():
                levels = new
                break
            levels = new
        last = len(levels) - 1
        if done:
            self.level, self._carry = float(a[last] * levels[last] + b[last]), (1.0, 0.0)
        else:
            self.level, self._carry = float(levels[last]), (float(a[last]), float(b[last]))
        return rest

    def _blocks(self, v: np.ndarray, block: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
        """Per block, (a, b) of the exponential steps over its samples v in order: level ← a · level + b."""
        m = np.bincount(block, minlength=nb)
        after = (np.cumsum(m) - 1)[block] - np.arange(len(v))  # samples of the same block after each
        # (bincount of no samples is an integer array, whatever the weights)
        return self._powers[m], np.bincount(block, self.alpha * self._powers[after] * v, nb).astype(float)
