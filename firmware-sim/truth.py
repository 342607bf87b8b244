"""Ground-truth writer: one CSV row per simulated sample plus an events JSON beside it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from .imu import SimChunk
from .motion import TruthEvents

COLUMNS = (
    "index,t_s,t_sensor_us,sent,flexion_deg,lateral_deg,rotation_deg,heading_deg,activity,context,"
    "acc_x_g,acc_y_g,acc_z_g,gyro_x_dps,gyro_y_dps,gyro_z_dps,roll_deg,pitch_deg,yaw_deg"
).split(",")
INT_COLUMNS = {"index", "t_sensor_us", "sent"}
# %.9f keeps t_s exact to the nanosecond for any day length; %.9g is float32-exact for signals.
ROW_FORMAT = ",".join(["%d", "%.9f", "%d", "%d"] + ["%.9g"] * 4 + ["%s", "%s"] + ["%.9g"] * 9)
TEXT_COLUMNS = {"activity", "context"}


def events_path(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.events.json")


class TruthWriter:
    """Appends chunks to a truth CSV; close() writes the events JSON."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8", newline="\n")
        self._file.write(",".join(COLUMNS) + "\n")
        self._file.flush()

    def write(self, chunk: SimChunk, sent: np.ndarray) -> None:
        """sent: bool per sample of the chunk, whether it went out over the air."""
        sent = np.asarray(sent, dtype=bool)
        if sent.shape != chunk.index.shape:
            raise ValueError(f"sent has shape {sent.shape}, chunk has {chunk.index.shape}")
        columns = [chunk.index, chunk.t_s, chunk.t_sensor_us, sent.astype(np.int64)]
        columns += [chunk.flexion_deg, chunk.lateral_deg, chunk.rotation_deg, chunk.heading_deg, chunk.activity,
                    chunk.context]
        columns += [*chunk.acc_g.T, *chunk.gyro_dps.T, *chunk.euler_deg.T]
        rows = np.empty((len(sent), len(columns)), dtype=object)
        for j, col in enumerate(columns):
            rows[:, j] = col
        np.savetxt(self._file, rows, fmt=ROW_FORMAT)
        self._file.flush()

    def close(self, events: TruthEvents, meta: dict[str, Any]) -> None:
        doc = {"meta": meta, **dataclasses.asdict(events)}
        events_path(self.path).write_text(json.dumps(doc, indent=1, default=_json_default) + "\n", encoding="utf-8")
        self._file.close()

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._file.closed:
            self._file.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_truth(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Columns by name (ints, floats, activity and context as str) and the events JSON (empty if absent)."""
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str, ndmin=2)
    if raw.size == 0:
        raw = np.empty((0, len(COLUMNS)), dtype=str)
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(COLUMNS):
        col = raw[:, j]
        columns[name] = col if name in TEXT_COLUMNS else col.astype(np.int64 if name in INT_COLUMNS else np.float64)
    columns["sent"] = columns["sent"].astype(bool)
    ev_path = events_path(path)
    events = json.loads(ev_path.read_text(encoding="utf-8")) if ev_path.exists() else {}
    return columns, events
