"""Samples stamped before the minutes a device already sent are dropped, not sent over them.

A Raspberry Pi has no clock of its own: it boots on the time it saved last (fake-hwclock, hourly) and is set by NTP
a minute or so later. A gateway that streams in between stamps the wearer's first samples with the saved clock, up
to an hour behind the minutes it sent before the power went, and the bridge and the alert service keep the newest
record of a minute: a helper's probe overwrote yesterday's 21:00 and 21:01 (worn 60 s, slouched 45 s each) with 51
and 30 s worn, 0 slouched, 90 s of data before NTP. Where the minutes sent end is kept beside the device's
spool, or their last sample if the last went out unfinished (a stop's, a lost link's): until the host clock passes
it, samples stamped before it are dropped and counted (a floor at the start of the last minute sent let a clock behind
into that minute replace it: a whole minute after a power loss; the stop's part, there being no stop to add to on a
clock behind it). A restart's samples after a stop's last one are added to its minute by the stopped-minute files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.kept import read_kept, write_kept
from gateway.publisher import device_file
from sensor.stream import ImuBatch

log = logging.getLogger("posture.gateway")
SUFFIX = ".sent.json"
# Further behind than this, the minutes sent before more likely carried the wrong clock (set ahead by hand) than this
# one: the samples go on. A saved clock is at most an hour old (fake-hwclock) plus the downtime's last hour.
MAX_BEHIND_S = 86400.0


@dataclass
class SentFloor:
    spool_dir: Path
    device: str
    floor_s: float | None = None  # samples before this are dropped; None once the clock passed it
    kept_s: float | None = None  # the floor on disk
    dropped: int = 0
    write_failed: bool = False

    @classmethod
    def load(cls, spool_dir: Path, device: str) -> SentFloor:
        def checked(doc: dict[str, float]) -> float:
            # "minute_start_s": the start of the last minute sent, as kept before the floor was where it ends
            floor_s = float(doc["floor_s"] if "floor_s" in doc else doc["minute_start_s"])
            if not math.isfinite(floor_s):
                raise ValueError(f"floor_s {floor_s}")
            return floor_s
        kept_s = read_kept(spool_dir, device, SUFFIX, checked, "last minute sent")
        return cls(spool_dir, device, kept_s, kept_s)

    def admit(self, batch: ImuBatch) -> ImuBatch | None:
        """The batch's samples stamped after the floor (all of them once the clock has passed it)."""
        if self.floor_s is None:
            return batch
        keep = batch.t_s > self.floor_s  # a stop's last sample is its minute's: the next run goes on after it
        if not self.dropped and self.floor_s - float(batch.t_s[0]) > MAX_BEHIND_S:
            log.warning("%s: host clock reads %s, more than a day behind the minutes already sent (up to %s): taken "
                        "as right", self.device, _local(float(batch.t_s[0])), _local(self.floor_s))
            keep[:] = True
            self.kept_s = None  # the minutes sent from now on are the floor (kept, that one held the next run back)
        if not keep.all():
            if not self.dropped:
                log.warning("%s: host clock reads %s, behind the minutes already sent (up to %s): samples stamped "
                            "before that are dropped, not sent over them, until the clock passes it (set by NTP at "
                            "boot?); if those minutes' clock was the wrong one, delete %s", self.device,
                            _local(float(batch.t_s[0])), _local(self.floor_s),
                            device_file(self.spool_dir, self.device, SUFFIX))
            self.dropped += int((~keep).sum())
            if not keep.any():
                return None
        if self.dropped:
            log.warning("%s: host clock past the minutes already sent: %d samples stamped before were dropped",
                        self.device, self.dropped)
        self.floor_s = None  # the clock has passed it: host times only go on from here
        if keep.all():
            return batch
        return ImuBatch(batch.device, batch.t_s[keep], batch.t_sensor_s[keep], batch.acc_g[keep],
                        batch.gyro_dps[keep], 0)

    def sent(self, floor_s: float) -> None:
        """Minutes went to the spool, up to floor_s: kept (atomically) if it is the newest, once a minute at most."""
        if self.kept_s is not None and floor_s <= self.kept_s:
            return
        try:
            write_kept(self.spool_dir, self.device, SUFFIX, {"floor_s": floor_s})
        except OSError as exc:  # the disk full: only this guard is weaker for it
            if not self.write_failed:
                log.warning("%s: the last minute sent not kept (a restart on a clock behind may send over it): %s",
                            self.device, exc)
            self.write_failed = True
            return
        self.kept_s, self.write_failed = floor_s, False


def _local(t_s: float) -> str:
    return datetime.fromtimestamp(t_s).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
