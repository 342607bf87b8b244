"""Writing decoded samples to CSV (the format `posture replay` reads; columns in the README)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TextIO

import numpy as np
from bleak.backends.device import BLEDevice

from .link import LinkSettings, SensorLink
from .stream import ImuBatch

CSV_COLUMNS = ("t_s", "t_sensor_s", "acc_x_g", "acc_y_g", "acc_z_g", "gyro_x_dps", "gyro_y_dps", "gyro_z_dps")
# µs on both clocks; the IMU values keep the wire's resolution (finest LSB is 1/4096 g, 1/32 °/s).
CSV_FORMATS = ("%.6f", "%.6f", "%.7g", "%.7g", "%.7g", "%.7g", "%.7g", "%.7g")


class CsvSampleWriter:
    def __init__(self, out: TextIO):
        self.out = out
        self.rows = 0
        out.write(",".join(CSV_COLUMNS) + "\n")

    def write(self, batch: ImuBatch) -> None:
        np.savetxt(self.out, np.column_stack([batch.t_s, batch.t_sensor_s, batch.acc_g, batch.gyro_dps]),
                   fmt=CSV_FORMATS, delimiter=",")
        self.rows += batch.n


def read_samples_csv(path: Path) -> dict[str, np.ndarray]:
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {name: data[:, i] for i, name in enumerate(CSV_COLUMNS)}


async def record(device: BLEDevice, settings: LinkSettings, seconds: float, out_path: Path) -> SensorLink:
    """Stream from `device` into a CSV file for `seconds` after the first connection; returns the link."""
    stop = asyncio.Event()
    with open(out_path, "w") as out:
        link = SensorLink(device, CsvSampleWriter(out).write, settings)
        task = asyncio.create_task(link.run(stop))
        connected = asyncio.create_task(link.connected.wait())
        try:
            await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), seconds)
        finally:
            connected.cancel()
            stop.set()
            await task
    return link
