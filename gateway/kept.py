"""Small JSON files a device's run keeps beside its spool for the next one (calibration, stopped minute, the last
minute sent): read without ever failing a start, written atomically; and the lock that keeps them one run's."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.publisher import device_file
from service_io.lock import held

log = logging.getLogger("posture.gateway")
T = TypeVar("T")


def read_kept(spool_dir: Path, device: str, suffix: str, read: Callable[[Any], T], what: str) -> T | None:
    """What the last run kept beside the device's spool; None if nothing, or not readable (said)."""
    path = device_file(spool_dir, device, suffix)
    try:
        return read(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # a start must not fail on it
        log.warning("%s: ignoring %s %s: %s", device, what, path, exc)
        return None


def write_kept(spool_dir: Path, device: str, suffix: str, doc: dict[str, Any], durable: bool = False) -> None:
    """durable: on disk before the rename (fsync), for the rare writes whose loss costs the wearer (the calibration,
    the sensor off the body): without it a power cut after the rename can leave an empty file where the old one was
    (XFS, or ext4 mounted noauto_da_alloc). Not for the minute kept every 10 s: it runs on the event loop with every
    sensor's notifications, where an SD card's fsync can stall for 100 ms or more, and a crash loses one minute."""
    path = device_file(spool_dir, device, suffix)
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("w") as f:
            f.write(json.dumps(doc))
            if durable:
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(path)  # atomic: a crash leaves the old file or the new one, never half of one
    except OSError:
        tmp.unlink(missing_ok=True)  # half a file on a full disk: its space back
        raise


def lock_device(spool_dir: Path, device: str) -> contextlib.AbstractContextManager[None]:
    """This run's hold on a device's files in spool_dir (spool, calibration, stopped minute): a second `posture run`
    on the same spool_dir and sensor is refused in one line. Two ran side by side: both spooled into one file and
    sent from it, wrote each other's calibration and minute, and took the broker session from each other every
    second (one client id), each minute's record from two pipelines."""
    return held(device_file(spool_dir, device, ".lock"),
                f"{device}: gateway.spool_dir {str(spool_dir)!r} is in use by another posture run for this sensor; "
                f"stop it, or give each gateway its own spool_dir")
