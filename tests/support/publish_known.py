"""A gateway stand-in for the fault tests: publishes N known minutes of metrics through DevicePublisher.

    python tests/support/publish_known.py CONFIG.toml DEVICE N RATE_PER_S PROGRESS_FILE

Each minute k (k = 0..N-1) is a MinuteMetrics with its own timestamp, so InfluxDB must end up
with exactly N points. Progress is recorded after each submit; killed with -9 and started again
it resumes there (a message submitted but not yet recorded is submitted again: a duplicate the
idempotent writes absorb). Exits when all N are submitted and the spool is empty.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gateway.publisher import DevicePublisher
from pipeline.events import MinuteMetrics
from service_io.config import load_config

T0_S = 1_700_000_000.0


def main() -> int:
    config_path, device, n, rate, progress_path = sys.argv[1:6]
    n, rate, progress = int(n), float(rate), Path(progress_path)
    config = load_config(Path(config_path))
    publisher = DevicePublisher.open(config, device, Path(config.gateway.spool_dir))
    publisher.start()
    k = int(progress.read_text()) if progress.exists() else 0
    next_at = time.monotonic()
    while k < n or publisher.backlog:
        if k < n and time.monotonic() >= next_at:
            publisher.submit([MinuteMetrics(minute_start_s=T0_S + 60.0 * k, worn_s=60.0, slouch_s=k % 60,
                                            rotations_left=k % 7)])
            k += 1
            # Atomically: a kill -9 mid-write must leave the old count or the new, not an empty file.
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(str(k))
            tmp.replace(progress)
            next_at += 1.0 / rate
        publisher.pump()
        time.sleep(0.002)
    publisher.stop(offline=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
