"""Which partition a device belongs to, and which running instance owns a partition: pure functions, the same
answer in every process on every machine (docs/scaling.md).

A device's partition is a stable hash of its id (CRC-32: Python's own hash() differs between processes), so it
never moves while `alerts.partitions` stays the same. Partitions are shared out evenly among the instances running
(assignment): when an instance stops, mostly its partitions move; when it comes back, the same ones move back.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Partition:
    """The devices one service handles when several split them: those of partition `index` of `count`."""
    index: int
    count: int

    def client_id(self, base: str) -> str:
        return f"{base}-p{self.index}"  # an instance's own connection is <base>-instance-<name>: never this

    def state_path(self, base: str) -> Path:
        return Path(f"{base}.p{self.index}")


def partition_of(device: str, partitions: int) -> int:
    return zlib.crc32(device.encode()) % partitions


def assignment(instances: Iterable[str], partitions: int) -> dict[int, str]:
    """Partition → the running instance that owns it. Rendezvous hashing with a cap: each partition goes to the
    instance scoring highest for it that still has room, and each has room for partitions/instances, rounded down or
    (as many as the remainder) up. Plain rendezvous hashing would give one of two instances 11 of 16 partitions, or
    both of 2; the cap keeps the split even, and moves little more than the partitions of an instance that stops."""
    names = sorted(set(instances))
    if not names:
        return {}
    base, extra = divmod(partitions, len(names))
    load = dict.fromkeys(names, 0)
    out = {}
    for k in range(partitions):
        for name in sorted(names, key=lambda n: _score(n, k), reverse=True):
            if load[name] < base or (load[name] == base and extra > 0):
                extra -= load[name] == base
                load[name] += 1
                out[k] = name
                break
    return out


def owned(me: str, instances: Iterable[str], partitions: int) -> set[int]:
    """The partitions `me` owns when `instances` (with or without me) are running."""
    return {k for k, name in assignment({*instances, me}, partitions).items() if name == me}


def device_of(topic: str, prefix: str) -> str | None:
    """The device level of `<prefix>/<device>/…`, or None for a topic outside the prefix."""
    if not topic.startswith(prefix + "/"):
        return None
    device, sep, _ = topic[len(prefix) + 1:].partition("/")
    return device if sep else None


def _score(name: str, partition: int) -> bytes:
    # blake2b, not CRC-32: a score must spread names that differ in one character (node-1, node-2) evenly.
    return hashlib.blake2b(f"{name}/{partition}".encode(), digest_size=8).digest()
