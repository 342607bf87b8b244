"""`python -m evaluation.accuracy`'s exit code: 1 only for worse than docs/accuracy.md says (regressions()), not for
the targets the page lists as not met. Fast: the one case run end to end is a few seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from evaluation.accuracy import (
    DAY_KNOWN_MISSES,
    DAYS_WHERE,
    DOC,
    KNOWN_MISSES,
    documented_figures,
    known_misses_text,
    regressions,
)

ROOT = Path(__file__).resolve().parents[1]
PAGE = documented_figures(DOC.read_text())


def judge(where: str, **figures: float | None) -> list[str]:
    """regressions() for a case (or the random days) missing exactly these targets, with these figures."""
    known = DAY_KNOWN_MISSES if where == DAYS_WHERE else KNOWN_MISSES.get(where, {})
    missed = {name: f"{name} = {value}" for name, value in figures.items()}
    return regressions(where, missed, figures, known, PAGE.get(where, {}))


def test_every_known_miss_has_its_figure_on_the_page_and_alone_is_no_regression():
    for where, known in [*KNOWN_MISSES.items(), (DAYS_WHERE, DAY_KNOWN_MISSES)]:
        assert set(known) <= set(PAGE[where]), (where, PAGE.get(where))
        assert judge(where, **{name: PAGE[where][name] for name in known}) == []
    assert PAGE["slip"] == {"flexion_rmse_deg": 2.75}  # as the accuracy table's "meets targets" says it
    assert PAGE[DAYS_WHERE]["calibrations silently off"] == 5


def test_a_regression_is_a_miss_not_listed_or_a_known_one_further_off_than_the_page_says():
    assert judge("rotations") == []  # meets every target
    assert judge("rotations", calibrated=None) == ["rotations: calibrated = None (not a known miss)"]
    assert judge("slip", flexion_rmse_deg=2.75, lateral_rmse_deg=1.2) == [
        "slip: lateral_rmse_deg = 1.2 (not a known miss)"]
    # a known miss a little worse (within 5 % of its distance from the target: seeded runs on another machine) …
    assert judge("slip", flexion_rmse_deg=2.8) == [] and judge("slip", flexion_rmse_deg=1.2) == []
    # … and beyond it, whichever way the target points
    assert judge("slip", flexion_rmse_deg=2.9) == ["slip: flexion_rmse_deg = 2.9, worse than docs/accuracy.md's 2.75"]
    assert judge("out-of-reach-standing", sitting_error_pct=36.3, activity_balanced_accuracy=0.73) == []
    assert judge("out-of-reach-standing", sitting_error_pct=36.3, activity_balanced_accuracy=0.72) == [
        "out-of-reach-standing: activity_balanced_accuracy = 0.72, worse than docs/accuracy.md's 0.734"]
    assert judge("cal-hunched", flexion_rmse_deg=9.0, slouch_duration_error_pct=5.85) == [
        "cal-hunched: flexion_rmse_deg = 9.0, worse than docs/accuracy.md's 8.17"]
    days = {name: PAGE[DAYS_WHERE][name] for name in DAY_KNOWN_MISSES}
    assert judge(DAYS_WHERE, **days | {"calibrations silently off": 6}) == [
        "random days: calibrations silently off = 6, worse than docs/accuracy.md's 5"]
    assert judge(DAYS_WHERE, **days | {"slouch F1": 0.97})[0].endswith("(not a known miss)")
    # a known miss without a figure on the page is what the page lists: no figure to hold it to
    assert regressions("slip", {"flexion_rmse_deg": "…"}, {"flexion_rmse_deg": 9.0}, KNOWN_MISSES["slip"], {}) == []


def test_docs_list_the_known_misses():
    assert known_misses_text() in DOC.read_text()


def test_a_case_with_known_misses_alone_exits_0_and_says_them():
    """`python -m evaluation.accuracy` exited 1 on the misses docs/accuracy.md lists ("Targets not met"), so a
    clean run looked like a failure (a newcomer's reading, after evaluation.broad's): exit 1 is for worse than the page
    says."""
    done = subprocess.run([sys.executable, "-m", "evaluation.accuracy", "--case", "cal-hunched", "--no-days",
                           "--workers", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "known miss (docs/accuracy.md): cal-hunched: flexion_rmse_deg = 8.17 (target ≤ 1.0) (listed at 8.17)",
        "known miss (docs/accuracy.md): cal-hunched: slouch_duration_error_pct = 5.85 (target ≤ 2.0) (listed at 5.85)"]
    assert "| cal-hunched |" in done.stdout
