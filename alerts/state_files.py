"""The alert service's state files under alerts.partitions: one file for one service, `<state_path>.p<k>` for each
partition; a start under another number of partitions than the files were kept for is refused.

A device's partition depends on the number of partitions: under another number its day, cooldowns and sent alert
ids would be looked for in another file, found missing, and started afresh (alerts already sent decided again).
"""

from __future__ import annotations

import contextlib
import glob
import sqlite3
from pathlib import Path
from urllib.request import pathname2url

from service_io.config import ConfigError

PARTITIONS_KEY = "partitions"  # in a partition's state file (meta): the number of partitions it was kept for
AGAIN = "set it as it was, or move the state files away to start afresh"


def check_file(file: Path, meta: dict[str, bytes], partitions: int) -> None:
    """ConfigError if the state file whose meta was just read was kept for another number of partitions. No number
    written is a new file (any number will do) or a single service's (1). check_state_layout has looked at every
    file at start; a service checks its own again as it opens it (it may have appeared since)."""
    kept = int(value) if (value := meta.get(PARTITIONS_KEY)) else 1 if meta else partitions
    if kept != partitions:
        raise ConfigError(f"alerts.partitions is {partitions}, but {file} holds the state of {kept} partition(s): "
                          f"{AGAIN}")


def check_state_layout(path: Path, partitions: int) -> None:
    """ConfigError, in one line naming a file, if the state files next to `path` were kept for another number."""
    split = {int(f.name[len(path.name) + 2:]): f for f in path.parent.glob(f"{glob.escape(path.name)}.p[0-9]*")
             if f.name[len(path.name) + 2:].isdigit()}
    if partitions == 1 and split:
        raise ConfigError(f"alerts.partitions is 1, but {split[min(split)]} holds the state of a partition: {AGAIN}")
    if partitions > 1 and path.exists():
        raise ConfigError(f"alerts.partitions is {partitions}, but {path} holds the state of a single service: {AGAIN}")
    for k, file in sorted(split.items()):
        kept = _meta_partitions(file)
        if k >= partitions or (kept is not None and kept != partitions):
            raise ConfigError(f"alerts.partitions is {partitions}, but {file} holds the state of partition {k} of "
                              f"{kept or 'more'}: {AGAIN}")


def _meta_partitions(file: Path) -> int | None:
    """What a partition's file says it was kept for; None if it says nothing (or cannot be read: opening it says)."""
    with contextlib.suppress(sqlite3.Error, ValueError), \
            contextlib.closing(sqlite3.connect(f"file:{pathname2url(str(file))}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (PARTITIONS_KEY,)).fetchone()
        return int(row[0]) if row else None
    return None
