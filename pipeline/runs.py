"""Runs of a condition in a stream of samples, found batch by batch with numpy.

Slouch episodes, lean intervals and rotation excursions are all "the condition held from sample a
to sample b"; this finds those runs with vectorised edge detection inside a batch and carries an
unfinished run into the next batch, so memory stays O(batch) however long the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def trailing_run(mask: np.ndarray, before: float) -> np.ndarray:
    """Per sample, how many samples in a row up to and including it have mask set (0 where it is not), counting
    `before` such samples just ahead of the batch."""
    pos = np.arange(len(mask))
    last_not = np.maximum.accumulate(np.where(~mask, pos, -1))
    return np.where(last_not >= 0, pos - last_not, before + pos + 1)


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in one array."""
    if not mask.any():
        return []
    # Where the mask changes, with a False before and after it: starts and ends alternate.
    edges = (np.flatnonzero(mask[1:] != mask[:-1]) + 1).tolist()
    edges = ([0] if mask[0] else []) + edges + ([len(mask)] if mask[-1] else [])
    return list(zip(edges[::2], edges[1::2]))


@dataclass
class Run:
    start: int  # absolute sample index of the first sample in the run
    end: int  # absolute index one past the last sample


class RunFinder:
    def __init__(self) -> None:
        self._open_start: int | None = None
        self._offset = 0  # absolute index of the next batch's first sample

    @property
    def open_start(self) -> int | None:
        return self._open_start

    @property
    def open_length(self) -> int:
        """Samples in the run still going at the end of the last batch (0: none)."""
        return 0 if self._open_start is None else self._offset - self._open_start

    def feed(self, mask: np.ndarray) -> list[Run]:
        """Runs that ended in this batch. A run still going at the batch end stays open."""
        mask = np.asarray(mask, dtype=bool)
        if len(mask) == 0:
            return []
        was_open = self._open_start is not None
        if mask.all() if was_open else not mask.any():  # most batches: no edge, the state goes on
            self._offset += len(mask)
            return []
        # Where the mask changes (from the state before the batch at its first sample): a rise starts a run, a fall
        # ends one.
        edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
        if mask[0] != was_open:
            edges = np.concatenate([[0], edges])
        rises = mask[edges]
        starts = (self._offset + edges[rises]).tolist()
        if was_open:
            assert self._open_start is not None  # was_open
            starts.insert(0, self._open_start)
        ends = (self._offset + edges[~rises]).tolist()
        runs = [Run(a, b) for a, b in zip(starts, ends)]  # starts and ends alternate
        self._open_start = starts[len(ends)] if mask[-1] else None
        self._offset += len(mask)
        return runs

    def close(self) -> None:
        """Forget an open run (a gap in the data: no event may straddle it)."""
        self._open_start = None
