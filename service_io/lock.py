"""One process at a time on a set of files: an exclusive flock on a lock file beside them, which the kernel lets go
of when the process ends, by kill -9 too (no stale lock to clear by hand)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("posture")


def try_lock(path: Path) -> IO[bytes] | None:
    """The lock file, made if need be, held until it is closed (or the process ends); None if another process holds
    it. OSError if it cannot be made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def held(path: Path, busy: str) -> Iterator[None]:
    """Held while inside; RuntimeError(busy) if another process holds it. A lock file the disk refuses (full,
    read-only) stops nothing: said, and the files are used without it."""
    try:
        handle = try_lock(path)
    except OSError as exc:
        log.warning("cannot make the lock file %s (%s); going on without it", path, exc.strerror or exc)
        yield
        return
    if handle is None:
        raise RuntimeError(busy)
    with handle:
        yield
