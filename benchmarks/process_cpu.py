"""CPU time (user + system, s) of the processes a benchmark measures, as psutil reads it; one that has ended counts
for nothing from then on. Shared by the benchmark scripts (each run as `python benchmarks/<script>.py`, which puts
this directory on the import path)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def cpu_s(procs: Iterable[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total
