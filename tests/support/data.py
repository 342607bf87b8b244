"""Where data nobody here made lives: shared/data beside the repository (BROAD, x-io's recording)."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def thinned(shared_data: Path) -> Iterator[tuple[str, int, float, np.ndarray, np.ndarray]]:
    """Every BROAD trial (CC BY 4.0: shared/data/broad/README.md) at its rate and thinned 1/2 … 1/11, and x-io's
    recording (MIT) at 100 and 50 Hz: (name, every, rate_hz, acc_g, gyro_dps)."""
    from evaluation.broad import trials
    from pipeline.orientation import G_M_S2

    paths = trials(shared_data / "broad")
    assert len(paths) == 7, "the 7 BROAD trials must be in shared/data/broad"
    for path in paths:
        d = np.load(path)
        for every in range(1, 12):
            yield (path.stem, every, float(d["rate_hz"]) / every, d["acc_m_s2"][::every] / G_M_S2,
                   np.degrees(d["gyr_rad_s"])[::every])
    xio = np.genfromtxt(shared_data / "xio-sensor_data.csv", delimiter=",", skip_header=1)
    for every in (1, 2):
        yield "x-io", every, 100.0 / every, xio[::every, 4:7], xio[::every, 1:4]  # (its gyro columns come first)
