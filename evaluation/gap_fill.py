"""How much heading a lost packet inside a twist costs, by the way the gap is filled.

A twist's rotation rate follows a minimum-jerk bell (12–45° in 0.12–0.6 s, with gyro noise); one
notification (as many samples as the client asks the native profile for at that rate: 2 at 50 Hz,
5 at 100 and 200 Hz) is lost somewhere inside it, and the angle integrated over the gap is
compared with the truth. Linear interpolation against pipeline/gaps.py's fill (a cubic for the rate
through two real samples either side). Figures in docs/pipeline.md ("gaps").
`python -m evaluation.gap_fill`
"""

from __future__ import annotations

import numpy as np

from pipeline.gaps import GYRO_COLUMNS, fill_gap
from sensor.profiles import samples_per_notification


def twist_errors(rate_hz: float, trials: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dt = 1.0 / rate_hz
    packet = samples_per_notification(rate_hz)
    t = np.arange(0.0, 2.0, dt)
    out: dict[str, list[float]] = {"linear": [], "pipeline": []}
    for _ in range(trials):
        dur_s, peak_deg = rng.uniform(0.12, 0.6), rng.uniform(12.0, 45.0)
        u = np.clip((t - 0.5) / dur_s, 0.0, 1.0)
        rate = peak_deg / dur_s * 30 * u**2 * (1 - u) ** 2 + rng.normal(0.0, 0.1, len(t))
        first = int(rng.integers(round(0.5 * rate_hz) - packet, round((0.5 + dur_s) * rate_hz)))
        lost = slice(first, first + packet)
        keep = np.ones(len(t), bool)
        keep[lost] = False
        x = np.zeros((keep.sum(), 6))
        x[:, 5] = rate[keep]
        i = first - 1  # the last real sample before the gap, among the kept ones
        truth = rate[lost].sum() * dt
        out["linear"].append(np.interp(t[lost], t[keep], rate[keep]).sum() * dt - truth)
        out["pipeline"].append(fill_gap(t[keep], x, i, t[lost], GYRO_COLUMNS, dt)[:, 5].sum() * dt - truth)
    return {k: np.abs(np.array(v)) for k, v in out.items()}


def main() -> None:
    print("| rate Hz | fill | mean ° | p95 ° | max ° |")
    print("|---|---|---|---|---|")
    for rate_hz in (50.0, 100.0, 200.0):
        for name, err in twist_errors(rate_hz).items():
            print(f"| {rate_hz:.0f} | {name} | {err.mean():.2f} | {np.percentile(err, 95):.2f} | {err.max():.1f} |")


if __name__ == "__main__":
    main()
