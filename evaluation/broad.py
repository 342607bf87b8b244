"""The orientation stage on real data: BROAD (Laidig, Caruso, Cereatti, Seel 2021, CC BY 4.0).

Seven trials of a hand-held IMU with optical ground truth (`../shared/data/broad/`, see its README
for the attribution and how BROAD scores). Scored the way BROAD does: inclination error
2·acos(√(e_w² + e_z²)) of e = q_est ⊗ conj(q_opt), RMSE over the `movement` samples where the
optical quaternion exists. Three estimates per trial: the pipeline's orientation stage live (fed in
the gateway's one-second batches), its offline estimate (`posture replay --offline`), and plain VQF
with its defaults, for reference. `python -m evaluation.broad --write` puts the table and the
known misses in docs/accuracy.md. Exit code 1: worse than docs/accuracy.md says (regressions());
the known misses alone are no failure.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from vqf import VQF

from pipeline.orientation import G_M_S2, OrientationFilter, OrientationSettings, offline_quaternions

from .doc_sections import write_section

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"
DOC = Path(__file__).resolve().parents[1] / "docs" / "accuracy.md"
LIVE_BATCH_S = 1.0
TARGETS = {"live_mean_deg": 0.70, "live_max_deg": 1.5, "offline_max_deg": 1.0}
# Targets the live stage does not meet, and why (`--write` puts them in docs/accuracy.md).
KNOWN_MISSES = {
    "live_mean_deg": "trial 08 (fast rotation with breaks) alone lifts the mean; see live_max_deg",
    "live_max_deg": "trial 08: rotations up to 1300 °/s, far beyond a trunk's; VQF's fixed accelerometer time "
                    "constant trades this trial against the translation trials and walking (a shorter one that "
                    "fixes 08 makes 10, 15 and walking worse); only the acausal offline estimate gets 08 under 1°",
}
# What a known miss is held to all the same (tests/test_broad.py, and the exit code): no trial's live estimate this far
# off, and the live stage no worse than plain VQF by more than noise.
LIVE_TRIAL_LIMIT_DEG = 2.0
LIVE_OVER_VQF_DEG = 0.02


@dataclass(frozen=True)
class TrialResult:
    trial: str
    minutes: float
    live_deg: float
    offline_deg: float
    vqf_default_deg: float


def inclination_rmse_deg(q_est: np.ndarray, q_opt: np.ndarray, movement: np.ndarray) -> float:
    w1, x1, y1, z1 = q_est.T
    w2, x2, y2, z2 = q_opt.T
    x2, y2, z2 = -x2, -y2, -z2  # conj(q_opt)
    ew = w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2
    ez = w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2
    err = 2.0 * np.arccos(np.clip(np.sqrt(ew**2 + ez**2), -1.0, 1.0))
    keep = movement.astype(bool) & np.isfinite(q_opt).all(axis=1)
    return float(np.degrees(np.sqrt(np.mean(err[keep] ** 2))))


def score_trial(path: Path) -> TrialResult:
    d = np.load(path)
    rate_hz = float(d["rate_hz"])
    gyro_dps = np.degrees(d["gyr_rad_s"].astype(float))
    acc_g = d["acc_m_s2"].astype(float) / G_M_S2
    settings = replace(OrientationSettings(), rate_hz=rate_hz)
    live = OrientationFilter(settings)
    step = max(1, round(LIVE_BATCH_S * rate_hz))
    q_live = np.vstack([live.update(gyro_dps[i:i + step], acc_g[i:i + step]) for i in range(0, len(acc_g), step)])
    q_off = offline_quaternions(gyro_dps, acc_g, settings)
    q_vqf = VQF(1.0 / rate_hz).updateBatch(np.ascontiguousarray(d["gyr_rad_s"], float),
                                           np.ascontiguousarray(d["acc_m_s2"], float))["quat6D"]
    q_opt, movement = d["opt_quat_wxyz"].astype(float), d["movement"]
    return TrialResult(path.stem, len(acc_g) / rate_hz / 60.0, inclination_rmse_deg(q_live, q_opt, movement),
                       inclination_rmse_deg(q_off, q_opt, movement), inclination_rmse_deg(q_vqf, q_opt, movement))


def trials(data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted(data_dir.glob("*.npz"))


def summary(results: list[TrialResult]) -> dict[str, float]:
    return {"live_mean_deg": float(np.mean([r.live_deg for r in results])),
            "live_max_deg": max(r.live_deg for r in results),
            "offline_mean_deg": float(np.mean([r.offline_deg for r in results])),
            "offline_max_deg": max(r.offline_deg for r in results),
            "vqf_default_mean_deg": float(np.mean([r.vqf_default_deg for r in results]))}


def misses(results: list[TrialResult]) -> dict[str, str]:
    """The targets not met: name → what was measured."""
    s = summary(results)
    return {k: f"{k} = {s[k]:.2f} (target ≤ {v})" for k, v in TARGETS.items() if s[k] > v}


def regressions(results: list[TrialResult]) -> list[str]:
    """Worse than docs/accuracy.md says: a target missed that is not a known miss, or a known one beyond its bounds."""
    s = summary(results)
    out = [why for k, why in misses(results).items() if k not in KNOWN_MISSES]
    out += [f"{r.trial}: live {r.live_deg:.2f}° (at most {LIVE_TRIAL_LIMIT_DEG}°)" for r in results
            if not r.live_deg < LIVE_TRIAL_LIMIT_DEG]
    if not s["live_mean_deg"] <= s["vqf_default_mean_deg"] + LIVE_OVER_VQF_DEG:
        out.append(f"live_mean_deg = {s['live_mean_deg']:.2f}, above plain VQF's {s['vqf_default_mean_deg']:.2f} by "
                   f"more than {LIVE_OVER_VQF_DEG}°")
    return out


def known_misses_text() -> str:
    rows = ["| BROAD target not met | why |", "|---|---|"]
    rows += [f"| {k} ≤ {TARGETS[k]}° | {why} |" for k, why in KNOWN_MISSES.items()]
    return "\n".join(rows)


def table(results: list[TrialResult]) -> str:
    rows = ["| BROAD trial | min | pipeline live ° | pipeline offline ° | plain VQF (defaults, online) ° |",
            "|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.trial} | {r.minutes:.1f} | {r.live_deg:.2f} | {r.offline_deg:.2f} "
                    f"| {r.vqf_default_deg:.2f} |")
    s = summary(results)
    rows.append(f"| **mean** | | **{s['live_mean_deg']:.2f}** | **{s['offline_mean_deg']:.2f}** "
                f"| **{s['vqf_default_mean_deg']:.2f}** |")
    rows.append(f"| **worst** | | **{s['live_max_deg']:.2f}** | **{s['offline_max_deg']:.2f}** | |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="Orientation stage on BROAD (real IMU data, optical truth)")
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOC}")
    args = parser.parse_args()
    paths = trials(args.data)
    if not paths:
        print(f"no BROAD trials in {args.data}", file=sys.stderr)
        return 2
    results = [score_trial(p) for p in paths]
    print(table(results))
    # Exit 1 only for worse than documented: the known misses are what the docs say, not a failure of this run.
    missed = misses(results)
    for k, why in missed.items():
        if k in KNOWN_MISSES:
            print(f"known miss (docs/accuracy.md): {why}: {KNOWN_MISSES[k]}", file=sys.stderr)
    for k in KNOWN_MISSES.keys() - missed.keys():
        print(f"{k}: now met; take it out of evaluation.broad.KNOWN_MISSES", file=sys.stderr)
    worse = regressions(results)
    for why in worse:
        print(f"regression: {why}", file=sys.stderr)
    if args.write:
        write_section(DOC, "broad table", table(results))
        write_section(DOC, "broad known misses", known_misses_text())
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
