"""The chaos run's check of `today` (benchmarks/chaos.py, Compare.today_issues): the alert service's real `today`
agrees with the minutes it was made of as InfluxDB stores them, and each way it can be wrong is said."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from alerts.catalog import Catalog
from alerts.engine import AlertEngine
from alerts.settings import CalibrationRule, Limits, RecoveryRule, Rules
from contract.influx_schema import MEASUREMENT, TODAY_FIELDS, TODAY_MEASUREMENT

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp()


def minute(k: int) -> dict:
    """Minute k after 10:00, its values varied (a rotation every other minute, some lean, part worn)."""
    return {"schema": 1, "kind": "metrics", "device": "D", "ts": int((T0 + 60 * k) * 1000),
            "minute_start_s": T0 + 60 * k, "worn_s": 60.0 - k, "sitting_s": 50.0 - k, "standing_s": 10.0,
            "walking_s": 0.0, "lying_s": 0.0, "slouch_s": 7.3 * k, "lean_left_s": 2.0 * k, "lean_right_s": 1.5,
            "rotations_left": k % 2, "rotations_right": 1,
            "rotation_left_cumulative_deg": 17.0 * (k % 2), "rotation_right_cumulative_deg": 21.5,
            "sitting_since_s": T0 - 600, "lost_samples": 0, "flexion_mean_deg": 20.0}


def todays(minutes: list[dict]) -> list[dict]:
    """The `today` after each minute, from the alert service's engine."""
    rules = Rules(limits=Limits(quiet_hours=""), calibration=CalibrationRule(enabled=False),
                  recovery=RecoveryRule(enabled=False))
    eng, out = AlertEngine(rules, Catalog.load(), UTC), []
    for m in minutes:
        eng.on_metrics(m, m["ts"] / 1000 + 61)
        out.append(eng.today_state("D"))
    return out


def stored_minute(m: dict) -> dict:
    """As InfluxDB gives it back (Stack.points): its fields, tag and time in ms."""
    return {k: v for k, v in m.items() if k not in ("schema", "kind", "device", "ts", "minute_start_s")} | {
        "device_id": m["device"], "time": m["ts"]}


def stored_today(doc: dict) -> dict:
    return {k: doc[k] if doc[k] is not None else "" for k in TODAY_FIELDS} | {"device_id": doc["device"],
                                                                               "time": doc["ts"]}


def compare():
    from benchmarks.chaos import Compare

    c = Compare.__new__(Compare)  # only what the `today` check reads: no stacks, no logs
    c.run = SimpleNamespace(calm=SimpleNamespace(devices=["D"]), t0=T0, faults=[])
    return c


def test_today_agrees_with_its_minutes_as_stored_and_a_minute_missing_shows():
    from benchmarks.chaos import Compare

    minutes = [minute(k) for k in range(6)]
    today = todays(minutes)[-1]
    data = {MEASUREMENT["metrics"]: [stored_minute(m) for m in minutes]}
    assert Compare.today_figures(today, data) == []
    # A minute in the middle not stored: the sums say so; the latest not stored: its end too.
    data = {MEASUREMENT["metrics"]: [stored_minute(m) for k, m in enumerate(minutes) if k != 3]}
    (wrong,) = Compare.today_figures(today, data)
    assert wrong.startswith("over 5 minutes stored: worn_min 5.8 where the minutes give 4.8, ")
    data = {MEASUREMENT["metrics"]: [stored_minute(m) for m in minutes[:-1]]}
    ts, sums = Compare.today_figures(today, data)
    assert ts.endswith("(+1 min)") and "rotations_left 3 where the minutes give 2" in sums


def test_each_today_sent_must_be_stored_the_last_as_sent_and_nothing_else():
    minutes = [minute(k) for k in range(4)]
    docs = todays(minutes)
    seen = {"D": [{"received": T0 + 61 + 60 * k, "doc": doc} for k, doc in enumerate(docs)]}
    data = {MEASUREMENT["metrics"]: [stored_minute(m) for m in minutes],
            TODAY_MEASUREMENT: [stored_today(doc) for doc in docs]}
    c = compare()
    assert c.today_issues("chaos", seen, data) == []
    # The last one lost: said, and that the latest stored is an older one.
    lost = data | {TODAY_MEASUREMENT: [stored_today(doc) for doc in docs[:-1]]}
    assert [kind for kind, _ in c.today_issues("chaos", seen, lost)] == ["lost", "differs"]
    # One stored that never went over the broker (older than the rest), and the last one with another program day.
    other = stored_today(docs[-1]) | {"program_day": docs[-1]["program_day"] + 1}
    odd = data | {TODAY_MEASUREMENT: [stored_today(doc) for doc in docs[:-1]] + [other, stored_today(docs[0]) | {
        "time": docs[0]["ts"] - 60_000}]}
    assert [kind for kind, _ in c.today_issues("chaos", seen, odd)] == ["extra", "differs"]
    # None sent at all for a device the run had.
    assert c.today_issues("chaos", {}, data) == [("lost", "`today` D: none went over the broker")]
