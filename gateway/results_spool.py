"""One device's results on their way into its spool, when the disk may refuse them (full, or failing).

The spool (service_io/spool.py) is what makes results survive a crash, but a full disk can refuse to
open it (a restart during the spell) or to write to it. Results then wait here in memory, in order, and
go into the spool oldest first, a chunk at a time (space freed bit by bit takes what fits), once it
opens and takes writes again, tried at most once a second. Beyond HELD_MAX held, the oldest go, counted.
What is held when the process stops is lost, and said with the count. Failures are logged at most once a
minute a device, with how many are held; the end of a spell is said once.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from service_io.spool import Item, Spool

log = logging.getLogger("posture.gateway")
# A sensor makes about 70 results an hour (a minute's metrics and its events): days of a full disk in a few MB.
HELD_MAX = 10_000
CHUNK = 100  # results a transaction: what a nearly full disk can still take goes in
RETRY_S = 1.0  # a refusing disk is tried again this often (each try is an SQLite transaction on the gateway's loop)
WARN_EVERY_S = 60.0


class ResultsSpool:
    def __init__(self, path: Path, max_items: int, device: str, clock: Callable[[], float] = time.monotonic):
        self.path, self.max_items, self.device, self.clock = path, max_items, device, clock
        self.spool: Spool | None = None
        self.held_dropped = 0  # results dropped beyond HELD_MAX
        self._held: deque[Item] = deque()  # oldest first
        self._lock = threading.Lock()
        self._failing = False
        self._retry_at = 0.0
        self._warned_at = -math.inf
        self.flush(force=True)  # open it now if the disk lets us

    def put(self, rows: list[Item]) -> None:
        with self._lock:
            self._held.extend(rows)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Open the spool if it is not open, and move what is held into it; force: even before the retry time."""
        with self._lock:
            if self.spool is not None and not self._held:
                return
            if self._failing and not force and self.clock() < self._retry_at:
                return
            try:
                if self.spool is None:
                    self.spool = Spool(self.path, self.max_items)
                while self._held:
                    chunk = list(itertools.islice(self._held, CHUNK))
                    self.spool.put(chunk)
                    for _ in chunk:
                        self._held.popleft()
            except OSError as exc:  # SpoolError, or the spool's folder not made (a full disk before the first start)
                self._fail(exc)
                return
            if self._failing:
                self._failing = False
                log.warning("%s: the spool takes results again; none held in memory now", self.device)

    def _fail(self, exc: OSError) -> None:
        self._failing, self._retry_at = True, self.clock() + RETRY_S
        if excess := max(0, len(self._held) - HELD_MAX):
            for _ in range(excess):
                self._held.popleft()
            self.held_dropped += excess
        self.warn(exc)

    def warn(self, exc: OSError) -> None:
        """A spool failure, said at most once a minute (a refused delete too: the sender's)."""
        if self.clock() - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = self.clock()
        log.warning("%s: %s; %d results held in memory until it takes them%s", self.device, exc, len(self._held),
                    f", {self.held_dropped} dropped (more than {HELD_MAX})" if self.held_dropped else "")

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def __len__(self) -> int:
        """Results not yet acknowledged by the broker: spooled or held."""
        with self._lock:
            return (len(self.spool) if self.spool is not None else 0) + len(self._held)

    def close(self) -> None:
        self.flush(force=True)
        with self._lock:
            if self._held:
                log.error("%s: %d results lost: the spool could not take them before the gateway stopped",
                          self.device, len(self._held))
            if self.spool is not None:
                self.spool.close()
