"""The alert engine without MQTT: rules, cooldowns, the daily cap, quiet hours, snooze, habit program."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.catalog import Catalog
from alerts.engine import MAX_BEHIND_DAYS, AlertEngine, FarBehind
from alerts.settings import (
    CalibrationRule,
    Habit,
    LeanRule,
    Limits,
    RecoveryRule,
    RotationRule,
    Rules,
    SittingRule,
    SlouchRule,
    load_rules,
)
from contract.validation import load_validators
from service_io.config import ConfigError

DAY = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
FAR = 10**9  # staleness off: these tests feed data time, not wall time


def minute(t_s: float, device: str = "D", worn_s: float = 60.0, slouch_s: float = 0.0, sitting_since_s=None,
           **fields) -> dict:
    doc = {"schema": 1, "kind": "metrics", "device": device, "ts": int(t_s * 1000), "minute_start_s": t_s,
           "worn_s": worn_s, "sitting_s": worn_s if sitting_since_s is not None else 0.0, "standing_s": 0.0,
           "walking_s": 0.0, "lying_s": 0.0, "slouch_s": slouch_s, "lean_left_s": 0.0, "lean_right_s": 0.0,
           "rotations_left": 0, "rotations_right": 0, "rotation_left_cumulative_deg": 0.0,
           "rotation_right_cumulative_deg": 0.0, "sitting_since_s": sitting_since_s, "lost_samples": 0}
    return doc | fields


def engine(**sections) -> AlertEngine:
    base = {"limits": Limits(max_delay_s=600 if "habit" in sections else FAR, quiet_hours=""),
            "calibration": CalibrationRule(enabled=False),
            "recovery": RecoveryRule(enabled=False)}
    return AlertEngine(Rules(**(base | sections)), Catalog.load(), UTC)


def feed(eng: AlertEngine, docs: list[dict], now_s: float | None = None) -> list[dict]:
    out = []
    for doc in docs:
        out += eng.on_metrics(doc, now_s if now_s is not None else doc["ts"] / 1000 + 60)
    return out


def test_an_event_just_after_midnight_leaves_the_last_minute_of_the_day_in_it():
    # Minutes go out 6 s after their end, events at once: a rotation at 00:00:01 comes before the 23:59 minute.
    eng = engine()
    midnight = DAY + 86_400
    feed(eng, [minute(midnight - 180 + 60 * k, slouch_s=20.0) for k in range(2)])
    eng.on_event({"schema": 1, "kind": "rotation", "device": "D", "ts": int((midnight + 3) * 1000),
                  "start_s": midnight + 1, "end_s": midnight + 3, "side": "left", "peak_deg": 30.0}, midnight + 4)
    feed(eng, [minute(midnight - 60, slouch_s=20.0)])
    today = eng.today_state("D")
    assert (today["date"], today["worn_min"], eng.devices["D"].late_minutes) == ("2026-11-20", 3.0, 0)
    feed(eng, [minute(midnight)])
    assert eng.today_state("D")["date"] == "2026-11-21"


def test_a_kept_minute_the_contract_refuses_is_dropped_when_the_state_is_read():
    """A state saved before the contract bounded a minute may keep one no pipeline makes (taken then): read again, it
    is left out, so `today`, the day's totals and the rules count it no more than one arriving now."""
    eng = engine()
    feed(eng, [minute(DAY + 60 * k, slouch_s=20.0, rotations_left=1, rotation_left_cumulative_deg=30.0)
               for k in range(3)])
    saved = eng.devices["D"].to_dict()  # a record of before, holding its minutes
    kept = saved["minutes"][str(int(DAY * 1000))]
    saved["minutes"][str(int(DAY * 1000))] = kept | {"worn_s": 1.0, "slouch_s": 60.0}
    saved["minutes"][str(int((DAY + 60) * 1000))] = kept | {"rotations_left": 10 ** 9}
    old = saved["minutes"][str(int((DAY + 120) * 1000))] = kept | {"slouch_s": 60.4}  # an older gateway's: taken
    fresh = engine()
    assert fresh.load({"device/D": json.dumps(saved).encode()}) == {}
    assert list(fresh.devices["D"].minutes.values()) == [old] and fresh.devices["D"].minutes_refused == 2
    today = fresh.today_state("D")
    assert (today["worn_min"], today["rotations_left"]) == (1.0, 1)


def test_a_random_day_written_minute_by_minute_is_the_day_read_and_folded_afresh():
    """The engine keeps today's totals minute by minute (not folded again for each) and writes only what a minute
    changed (engine.changes: the device's record and that minute's), not the whole day each time. Over a random day,
    with minutes late and out of order, copies of a minute (the unfinished one first, or last), the next day beginning
    and restarts from what was written: each `today` and each alert is the same, to the byte, as an engine's that was
    never restarted and as an engine's that read the file written so far (folding the day afresh)."""
    rng = random.Random(14)
    docs, start = [], DAY + 20 * 3600  # 8 h, over midnight
    for k in range(480):
        worn = rng.choice([60.0, 60.0, 59.98, rng.uniform(0, 60)])
        lean = rng.uniform(0, worn) if rng.random() < 0.3 else 0.0
        left, right = rng.randint(0, 2), rng.randint(0, 2)
        doc = minute(start + 60 * k, worn_s=worn, slouch_s=rng.uniform(0, worn) if rng.random() < 0.4 else 0.0,
                     sitting_s=rng.uniform(0, worn), **{rng.choice(["lean_left_s", "lean_right_s"]): lean},
                     rotations_left=left, rotations_right=right,
                     rotation_left_cumulative_deg=left * rng.uniform(15, 60),
                     rotation_right_cumulative_deg=right * rng.uniform(15, 60), lost_samples=rng.randint(0, 3))
        if rng.random() < 0.1:  # its unfinished copy too (a lost link), before or after the whole one
            part = doc | {"worn_s": doc["worn_s"] / 2, "slouch_s": doc["slouch_s"] / 2, "sitting_s": 0.0,
                          "lean_left_s": 0.0, "lean_right_s": 0.0}
            docs += [part, doc] if rng.random() < 0.5 else [doc, part]
        else:
            docs.append(doc)
    for k in range(0, len(docs) - 5, 5):  # some come a few minutes late
        if rng.random() < 0.2:
            docs[k:k + 5] = rng.sample(docs[k:k + 5], 5)
    file: dict[str, bytes] = {}  # the state file's records, as the service writes them

    def write(eng: AlertEngine) -> None:
        for key, value in eng.changes({"D"}).items():
            if value is None:
                del file[key]
            else:
                file[key] = value

    def read() -> AlertEngine:
        fresh = engine(rotation=RotationRule(min_excursions=10), lean=LeanRule(min_lean_min=5.0))
        assert fresh.load(file) == {}
        return fresh

    kept, restarted = read(), read()
    for k, doc in enumerate(docs):
        said = kept.on_metrics(doc, doc["ts"] / 1000 + 60)
        assert restarted.on_metrics(doc, doc["ts"] / 1000 + 60) == said
        write(restarted)
        today = json.dumps(kept.today_state("D"))
        assert json.dumps(restarted.today_state("D")) == today
        if k % 7 == 0 or k == len(docs) - 1:
            fresh = read()
            assert json.dumps(fresh.today_state("D")) == today, k
            # and the day's totals as they are, before `today` rounds them: folded in the same order, to the same bits
            assert fresh._folded["D"] == kept._folded["D"] == restarted._folded["D"], k
        if k % 50 == 0:  # a restart from the file: what it reads goes on as the engine kept would
            restarted = read()
    assert kept.devices["D"].day == "2026-11-21" and kept.devices["D"].days["2026-11-20"]["worn_min"] > 100
    assert set(file) == {"device/D"} | {f"minute/D/{key}" for key in kept.devices["D"].minutes}
    assert kept.devices["D"].minutes_superseded > 0


def test_a_state_written_whole_before_is_read_and_written_minute_by_minute():
    """A state file of before holds each device's minutes in its record: read as it was, and with the device's next
    write each minute gets its own record and the device's record no longer holds them."""
    eng = engine()
    feed(eng, [minute(DAY + 3600 + 60 * k, slouch_s=10.0 * k) for k in range(3)])
    before = {"device/D": json.dumps(eng.devices["D"].to_dict()).encode(), "minute/D/1": b"[0, {}]"}
    fresh = engine()
    assert fresh.load(before) == {} and fresh.today_state("D") == eng.today_state("D")
    feed(fresh, [minute(DAY + 3600 + 60 * 3)])
    written = fresh.changes({"D"})
    assert "minutes" not in json.loads(written["device/D"]) and written["minute/D/1"] is None
    assert [json.loads(written[f"minute/D/{int((DAY + 3600 + 60 * k) * 1000)}"])[0] for k in range(4)] == [0, 1, 2, 3]
    assert fresh.changes({"D"}) == {"device/D": written["device/D"]}  # nothing new since


def test_a_value_that_rounds_to_zero_is_shown_without_a_sign():
    # -0.004 rounded is -0.0, which JSON keeps: Home Assistant's "Lateral lean" showed "-0.0 °".
    eng = engine()
    feed(eng, [minute(DAY + 3600, lateral_mean_deg=-0.004)])
    assert json.dumps(eng.today_state("D")["lateral_mean_deg"]) == "0.0"


def hhmm(alert: dict) -> str:
    return datetime.fromtimestamp(alert["ts"] / 1000, UTC).strftime("%H:%M")


def test_packaged_rules_file_is_the_documented_defaults(tmp_path):
    assert load_rules(Path("alerts/rules.toml")) == Rules()
    # A copy of the file of before, with the age rule's key at its default, starts as before.
    copied = tmp_path / "rules.toml"
    copied.write_text("[calibration]\nenabled = true\nmax_age_h = 24.0\ncooldown_min = 240.0\n")
    assert load_rules(copied) == Rules()


def test_a_bad_rules_file_is_one_line_naming_the_key(tmp_path):
    bad = tmp_path / "rules.toml"
    for text, expected in (("[slouch]\nshare_pct = 'lots'\n", "slouch.share_pct"),
                           ("[slouch]\nwindow = 3\n", "unknown key slouch.window"),
                           ("[limits]\nquiet_hours = '22-7'\n", "limits.quiet_hours"),
                           ("[moods]\nx = 1\n", "unknown section [moods]"),
                           ("[habit]\nsummary_time = '00:00'\n", "habit.summary_time: 00:00"),
                           # The age is the gateway's to ask about now: a value meant is said where it goes.
                           ("[calibration]\nmax_age_h = 0.0\n", "calibration.max_age_h: the gateway asks for the "
                                                                  "moves at the calibration's age now")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[")) as info:
            load_rules(bad)
        assert "\n" not in str(info.value)


def test_a_start_refused_for_a_bad_rules_file_leaves_no_lock_file(tmp_path):
    """The lock on alerts.state_path was taken before the rules were read: `posture alerts --rules bad.toml` said the
    one line and exited 2, and left alerts.db.lock behind (an earlier attack's probe). The rules are read first."""
    (tmp_path / "rules.toml").write_text("[slouch]\nwindow = 3\n")
    done = subprocess.run([sys.executable, "-m", "posture.cli", "alerts", "--state", str(tmp_path / "alerts.db"),
                           "--rules", str(tmp_path / "rules.toml"), "--mqtt-port", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("posture alerts: config: unknown key slouch.window"), \
        done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.toml"]


def test_cooldown_and_daily_cap():
    eng = engine(slouch=SlouchRule(window_min=5, share_pct=50, min_worn_min=3, episode_min=1000, cooldown_min=10),
                 sitting=SittingRule(max_sitting_min=20, cooldown_min=15),
                 limits=Limits(daily_cap=4, pace=False, max_delay_s=FAR, quiet_hours=""))
    start = DAY + 10 * 3600
    alerts = feed(eng, [minute(start + 60 * k, slouch_s=40, sitting_since_s=start) for k in range(60)])
    assert [(a["kind"], hhmm(a)) for a in alerts] == [
        ("slouch", "10:03"), ("slouch", "10:13"), ("sitting", "10:20"), ("slouch", "10:23")]
    state = eng.devices["D"]
    assert state.sent_today == 4 and state.held_today["daily_cap"] >= 3  # 10:33 slouch, 10:35 sitting, …
    validate = load_validators()["alerts/log"]
    for a in alerts:
        validate(a)
        assert len(a["message"]) <= 240 and a["stretch"]["safety"]
    assert alerts[0]["stretch"]["id"] != alerts[1]["stretch"]["id"]  # the same stretch does not repeat
    assert alerts[2]["stretch"]["id"] in {s.id for s in Catalog.load().for_deficit("sitting")}
    # a new day: the cap starts again
    assert [a["kind"] for a in feed(eng, [minute(DAY + 86400 + 9 * 3600 + 60 * k, slouch_s=40) for k in range(5)])] \
        == ["slouch"]


def test_quiet_hours_hold_nudges_and_the_first_comes_when_they_end():
    eng = engine(slouch=SlouchRule(window_min=5, share_pct=50, min_worn_min=3, episode_min=1000),
                 limits=Limits(quiet_hours="22:00-07:00", max_delay_s=FAR))
    start = DAY + 6 * 3600 + 50 * 60
    alerts = feed(eng, [minute(start + 60 * k, slouch_s=45) for k in range(20)])
    assert [hhmm(a) for a in alerts] == ["07:00"]
    assert eng.devices["D"].held_today == {"quiet_hours": 1}


def test_snooze_holds_everything_until_it_ends_or_is_cancelled():
    eng = engine(slouch=SlouchRule(window_min=5, share_pct=50, min_worn_min=3, episode_min=1000, cooldown_min=5))
    start = DAY + 14 * 3600
    eng.snooze("D", 30, from_s=start)
    assert feed(eng, [minute(start + 60 * k, slouch_s=45) for k in range(20)], now_s=start + 20 * 60) == []
    assert feed(eng, [minute(start + 60 * k, slouch_s=45) for k in range(20, 25)], now_s=start + 31 * 60)
    eng.snooze("D", 60, from_s=start + 31 * 60)
    eng.snooze("D", 0, from_s=start + 32 * 60)  # cancelled
    assert feed(eng, [minute(start + 60 * k, slouch_s=45) for k in range(25, 35)], now_s=start + 35 * 60)


@pytest.mark.parametrize("body, minutes", [(b"30", 30.0), (b'{"minutes": 0}', 0.0), (b"[" * 60_000, None),
                                           (b"1e999", None), (b"-5", None), (b"true", None), (b"\xff", None),
                                           (b"NaN", None), (b'{"minutes": 30, "minutes": 1e9}', None),
                                           (b"30" + b" " * 1000, 30.0), (b"30" + b" " * 70_000, "too large")])
def test_a_snooze_command_is_minutes_or_a_one_line_refusal(body, minutes):
    """Nested past the parser's depth it raised RecursionError: logged with a traceback and counted as a bug. One
    larger than any payload may be (contract MAX_PAYLOAD_BYTES) was decoded, copied and parsed whole."""
    from alerts.service import parse_snooze
    from contract.validation import Malformed

    if minutes == "too large":
        with pytest.raises(Malformed, match="^snooze: too large: 70002 bytes"):
            parse_snooze(body)
    elif minutes is None:
        with pytest.raises(Malformed, match="^snooze: expected minutes"):
            parse_snooze(body)
    else:
        assert parse_snooze(body).minutes == minutes


@pytest.mark.parametrize("body, sent_s", [(b'{"minutes": 30, "sent_s": 1796536800.5}', 1796536800.5),
                                          (b'{"minutes": 30, "sent_s": null}', None), (b'{"minutes": 30}', None),
                                          (b'{"minutes": 30, "sent_s": 12}', "refused"),
                                          (b'{"minutes": 30, "sent_s": true}', "refused"),
                                          (b'{"minutes": 30, "sent_s": "now"}', "refused"),
                                          (b'{"minutes": 30, "sent_s": 1e999}', "refused"),
                                          (b'{"minutes": 30, "sent_s": 1' + b'0' * 400 + b'}', "refused")])
def test_a_snooze_may_say_when_the_phone_sent_it(body, sent_s):
    from alerts.service import parse_snooze
    from contract.validation import Malformed

    if sent_s == "refused":
        with pytest.raises(Malformed, match="^snooze: sent_s .* no plausible Unix time"):
            parse_snooze(body)
    else:
        assert parse_snooze(body) == (30.0, sent_s)


def test_stale_data_is_not_pushed():
    eng = engine(slouch=SlouchRule(window_min=5, share_pct=50, min_worn_min=3, episode_min=1000),
                 limits=Limits(max_delay_s=600, quiet_hours=""))
    start = DAY + 9 * 3600
    assert feed(eng, [minute(start + 60 * k, slouch_s=45) for k in range(10)], now_s=start + 3 * 3600) == []
    assert eng.devices["D"].held_today == {"stale": 1}


def live(t_s: float, device: str = "D") -> dict:
    """A live state as the engine reads it (the service validated it): upright, sitting."""
    return {"schema": 1, "kind": "live", "device": device, "ts": int(round(t_s * 1000)), "t_s": t_s,
            "calibration": "calibrated", "flexion_deg": 3.0, "lateral_deg": 0.0, "rotation_deg": 0.0,
            "activity": "sitting", "slouching_since_s": None, "leaning_since_s": None, "lean_side": None,
            "sitting_since_s": t_s - 900}


def walked(t_s: float, device: str = "D") -> dict:
    return minute(t_s, device, walking_s=60.0)


def test_a_late_minute_says_nothing_of_now_by_the_gateways_clock_as_its_live_states_show_it():
    """The policy: a "now" kind on data older than limits.max_late_s by the gateway's clock (the service's less the
    offset live states showed) is held as late; the day's imbalances and a calibration request are not; with no offset
    known, or one older than OFFSET_KEPT_S, as before (stale only)."""
    from alerts.policy import OFFSET_KEPT_S, held_reason
    from alerts.rules import Finding
    from alerts.state import DeviceState

    limits, now = Limits(quiet_hours="", max_delay_s=600, max_late_s=180), DAY + 10 * 3600
    for ahead_s in (420.0, -420.0, 0.0):  # the gateway's clock 7 min ahead, 7 min behind, right
        state = DeviceState(clock_offset_s=-ahead_s + 0.4, clock_offset_at_s=now - 5)

        def reason(kind: str, late_s: float, st: DeviceState = state, ahead_s: float = ahead_s) -> str | None:
            return held_reason(st, Finding(kind, now + ahead_s - late_s, "warning", {}), limits, UTC, now)

        for kind in ("sitting", "slouch", "recovery", "recovered"):
            assert reason(kind, 7) is None, (ahead_s, kind)  # a minute goes out 6 s after its end
            assert reason(kind, 130) is None, (ahead_s, kind)  # … up to 2 min after a lost link's return
            # (7 min behind, 9 min late is 16 min old by the service's clock: stale, as before)
            assert reason(kind, 9 * 60) == ("stale" if ahead_s < 0 else "late"), (ahead_s, kind)
        assert reason("sitting", 4 * 60) == ("stale" if ahead_s < 0 else "late")
        before = "stale" if ahead_s < 0 else None  # what the service's clock alone says of data 4 min late
        for kind in ("rotation", "lean", "calibration", "slouch_now"):
            assert reason(kind, 4 * 60) == before, (ahead_s, kind)
        assert reason("sitting", 4 * 60, DeviceState()) == before  # no live stream: as before
        old = DeviceState(clock_offset_s=-ahead_s, clock_offset_at_s=now - OFFSET_KEPT_S - 1)
        assert reason("sitting", 4 * 60, old) == before


@pytest.mark.parametrize("ahead_s", [420.0, 240.0, -420.0])
def test_a_backlog_of_sitting_minutes_nudges_nothing_and_the_next_real_time_minute_decides(ahead_s):
    """A gateway whose clock is off (a Raspberry Pi without RTC): its live states teach the engine the offset, real-time
    minutes nudge as before, and a burst of minutes 13 to 5 min old (an outage's backlog) nudges nothing, however its
    clock reads; they count for the day, the hold counts as `late`, and the next real-time minute is decided as ever."""
    eng = engine(sitting=SittingRule(), limits=Limits(quiet_hours="", max_delay_s=600, pace=False))
    now = DAY + 10 * 3600 + 30.0  # (service clock)
    gateway = now + ahead_s  # the same moment by the gateway's clock
    since = gateway - 3 * 3600  # sitting since long before: the sitting rule fires at every minute sitting
    for device in ("Live", "Backlog"):
        for k in range(5):  # about 1 s apart, each arriving 0.3 s after its time
            assert eng.on_live(live(gateway - 5 + k, device), now - 5 + k + 0.3) == ([], False)
    real_time = minute(gateway // 60 * 60 - 60, "Live", sitting_since_s=since)
    assert [a["kind"] for a in eng.on_metrics(real_time, now)] == ["sitting"]

    backlog = [minute(gateway // 60 * 60 - 60 * k, "Backlog", sitting_since_s=since) for k in range(14, 5, -1)]
    backlog += [walked(gateway // 60 * 60 - 60 * k, "Backlog") for k in range(5, 1, -1)]
    assert [a for doc in backlog for a in eng.on_metrics(doc, now)] == []
    state = eng.devices["Backlog"]
    assert state.held_today == ({"stale": 1} if ahead_s < -120 else {"late": 1})  # by the service's clock: stale
    assert len(state.minutes) == 13 and eng.summary_evidence(state)["sitting_min"] == 9.0
    # Sitting again, in real time: decided as ever (the hold left no cooldown)
    again = minute(gateway // 60 * 60 - 60, "Backlog", sitting_since_s=since)
    assert [a["ts"] for a in eng.on_metrics(again, now)] == [again["ts"] + 60_000]


def test_an_offset_follows_a_step_of_the_gateways_clock_within_seconds_and_survives_a_restart():
    eng = engine()
    now = DAY + 10 * 3600
    for k in range(20):  # one live state a second, one held up 30 s on its way
        eng.on_live(live(now + k - 600), now + k + (30 if k == 10 else 0.2))
    assert eng.devices["D"].clock_offset_s == 600.2  # the median: the state held up moves it none
    for k in range(20, 26):  # NTP sets the gateway's clock right
        eng.on_live(live(now + k), now + k + 0.2)
    assert eng.devices["D"].clock_offset_s == 0.2  # the median of the latest 9, within 5 s of the step
    restarted = engine()
    restarted.load(eng.dump({"D"}))
    assert restarted.devices["D"].clock_offset_s == 0.2
    restarted.on_live(live(now), now + 7200, retained=True)  # the broker's retained copy tells no offset
    assert restarted.devices["D"].clock_offset_s == 0.2


def test_a_message_delivered_twice_counts_once_and_alerts_once():
    eng = engine(slouch=SlouchRule(window_min=5, share_pct=50, min_worn_min=3, episode_min=1000))
    docs = [minute(DAY + 9 * 3600 + 60 * k, slouch_s=45) for k in range(6)]
    first = feed(eng, docs)
    again = feed(eng, docs)
    assert len(first) == 1 and again == []
    assert eng.summary_evidence(eng.devices["D"])["worn_min"] == 6.0


@pytest.mark.parametrize("order", ["unfinished last", "unfinished first"])
def test_of_two_copies_of_a_minute_the_fuller_counts_whatever_the_order(order):
    # The gateway sends a minute unfinished at a stop or a lost link (here 20 s worn, 20 s slouched) and then whole
    # (60 s, 50 s slouched); resent from its spool after a restart, the unfinished copy can come last. It replaced the
    # whole minute in the day: today, the summary and the rules' windows lost 40 s worn and 30 s slouched.
    rule = SlouchRule(window_min=5, share_pct=60, min_worn_min=3, episode_min=1000)
    start = DAY + 9 * 3600
    whole = [minute(start + 60 * k, slouch_s=50.0) for k in range(5)]
    unfinished = minute(start + 60 * 4, worn_s=20.0, slouch_s=20.0, lost_samples=3)
    alone = engine(slouch=rule)
    expected = feed(alone, whole)
    eng = engine(slouch=rule)
    copies = whole + [unfinished] if order == "unfinished last" else whole[:4] + [unfinished, whole[4]]
    alerts = feed(eng, copies)
    assert [a["id"] for a in alerts] == [a["id"] for a in expected] != []  # the share nudge, once
    assert eng.today_state("D") == alone.today_state("D")
    assert eng.summary_evidence(eng.devices["D"])["worn_min"] == 5.0
    assert eng.devices["D"].window(int((start + 300) * 1000), 5) == alone.devices["D"].window(
        int((start + 300) * 1000), 5)
    assert eng.devices["D"].minutes_superseded == (order == "unfinished last")
    # As many seconds worn: the copy that saw more samples (lost ones too: the later copy) is the fuller.
    eng.on_metrics(minute(start + 60 * 4, slouch_s=40.0, lost_samples=9), FAR)
    assert eng.devices["D"].minutes[str(int((start + 240) * 1000))]["slouch_s"] == 40.0
    eng.on_metrics(minute(start + 60 * 4, slouch_s=10.0, lost_samples=2), FAR)
    assert eng.devices["D"].minutes[str(int((start + 240) * 1000))]["slouch_s"] == 40.0
    fresh = engine(slouch=rule)
    fresh.load(eng.dump({"D"}))
    assert fresh.today_state("D") == eng.today_state("D")


def test_the_day_so_far_kept_minute_by_minute_is_the_day_folded_afresh():
    # The engine adds each new minute to today's totals instead of folding the day again: after minutes, a minute
    # sent again with other values, an event that begins the next day and that day's minutes, the retained `today`
    # is what an engine loaded from the saved state (folding afresh) says.
    eng = engine()
    docs = [minute(DAY + 23 * 3600 + 60 * k, slouch_s=10.0 * (k % 3), rotations_left=k % 2,
                   rotation_left_cumulative_deg=20.0 * (k % 2)) for k in range(50)]
    feed(eng, docs)
    # replaces its first copy: as many seconds worn, more samples seen (lost ones: it was sent later)
    feed(eng, [minute(DAY + 23 * 3600 + 60 * 7, slouch_s=59.0, lost_samples=4)])
    first = eng.today_state("D")
    fresh = engine()
    fresh.load(eng.dump({"D"}))
    assert first == fresh.today_state("D")
    eng.on_event({"kind": "calibration", "device": "D", "ts": int((DAY + 86_400 + 5) * 1000),
                  "t_s": DAY + 86_400 + 5, "status": "calibrated"}, DAY + 86_460)
    feed(eng, [minute(DAY + 86_400 + 60 * k, slouch_s=30.0) for k in range(3)])
    second = eng.today_state("D")
    fresh = engine()
    fresh.load(eng.dump({"D"}))
    assert second == fresh.today_state("D")
    # 50 minutes; 490 s slouched, minute 7's 10 s now 59 s; 25 rotations, minute 7's one gone
    assert (first["worn_min"], first["slouch_min"], first["rotations_left"]) == (50.0, round(539 / 60, 1), 24)
    assert (second["date"], second["worn_min"], second["slouch_min"]) == ("2026-11-21", 3.0, 1.5)


def test_long_unbroken_slouch_and_a_long_episode_event():
    eng = engine(slouch=SlouchRule(window_min=30, share_pct=90, min_worn_min=25, episode_min=4))
    start = DAY + 9 * 3600
    alerts = feed(eng, [minute(start + 60 * k, slouch_s=58) for k in range(5)])
    assert [(a["kind"], a["evidence"]["episode_min"]) for a in alerts] == [("slouch", 4)]
    eng2 = engine(slouch=SlouchRule(episode_min=0.25))
    event = {"schema": 1, "kind": "slouch", "device": "E", "ts": int(start * 1000), "start_s": start,
             "end_s": start + 20, "duration_s": 20.0, "peak_flexion_deg": 27.0, "mean_flexion_deg": 24.0}
    [alert] = eng2.on_event(event, now_s=start + 21)
    assert alert["kind"] == "slouch" and alert["evidence"]["peak_flexion_deg"] == 27.0


def test_an_unbroken_slouch_says_how_long_it_has_gone_on():
    """Looking back episode_min + 1 minutes only, a slouch nudged at 5 min and again after the cooldown was told
    "You have been slouching for 6 min." at its 35th minute; and minutes either side of one missing (the sensor off or
    out of reach: the pipeline ends a slouch there too) were taken as back to back: "slouching for 5 min" over 6."""
    eng = engine()
    start = DAY + 9 * 3600
    alerts = feed(eng, [minute(start + 60 * k, slouch_s=60.0, sitting_since_s=start) for k in range(40)])
    assert [(a["ts"] / 1000 - start, a["message"].split(".")[0]) for a in alerts] == [
        (300.0, "You have been slouching for 5 min"), (2100.0, "You have been slouching for 35 min")]
    gap = engine(slouch=SlouchRule(share_pct=100))
    assert feed(gap, [minute(start + 60 * k, slouch_s=60.0, sitting_since_s=start) for k in (0, 1, 3, 4, 5)]) == []
    after = [minute(start + 60 * k, slouch_s=60.0, sitting_since_s=start) for k in (6, 7)]
    assert [a["evidence"]["episode_min"] for a in feed(gap, after)] == [5]  # minutes 3 to 7


def test_the_slouch_share_says_it_is_of_the_time_worn():
    """The share is of the worn time: with the sensor off 10 of the last 30 min, 6 min slouched (30 % of 20) read
    "You slouched 30% of the last 30 min", 9 min."""
    eng = engine()
    start = DAY + 9 * 3600
    [alert] = feed(eng, [minute(start + 60 * k, slouch_s=18.0, sitting_since_s=start) for k in range(10, 30)])
    assert alert["message"].startswith("You slouched 30% of the 20 min worn in the last 30. Try: ")
    whole = [minute(start + 60 * k, slouch_s=50.0 if k > 18 else 0.0, sitting_since_s=start) for k in range(30)]
    [worn] = feed(engine(), whole)  # worn throughout: 550 s of 30 min
    assert worn["message"].startswith("You slouched 31% of the last 30 min. Try: ")


def test_rotation_and_lean_asymmetry_suggest_the_side_to_favour():
    eng = engine()
    start = DAY + 9 * 3600
    docs = [minute(start + 60 * k, rotations_right=2, rotations_left=1, rotation_right_cumulative_deg=80.0,
                   rotation_left_cumulative_deg=28.0, lean_right_s=40.0) for k in range(20)]
    alerts = {a["kind"]: a for a in feed(eng, docs)}
    rot, lean = alerts["rotation"], alerts["lean"]
    assert rot["stretch"]["side"] == "left" and "trunk rotation" in rot["stretch"]["name"].lower()
    assert rot["evidence"]["rotations_left"] >= 1 and rot["evidence"]["rotation_si"] > 25
    assert hhmm(rot) == "09:07"  # 7 minutes × 3 = 21 excursions ≥ 20
    assert lean["evidence"]["lean_side"] == "right" and lean["stretch"]["side"] == "left"
    assert "side bend" in lean["stretch"]["name"].lower() and hhmm(lean) == "09:15"  # 15 × 40 s = 10 min


def test_the_summary_suggests_a_rotation_stretch_only_once_the_rotations_mean_anything():
    """The rotation rule waits for rotation.min_excursions before the symmetry index means anything: the summary's
    stretch waits as well (random day 2010 of the alert truth check: three rotations, all to the left, SI -200,
    and the summary told the wearer to favour the right side)."""
    for n, stretch in ((3, None), (20, "right")):
        eng = engine(slouch=SlouchRule(enabled=False), rotation=RotationRule(enabled=False),
                     habit=Habit(summary_time="18:00"))
        start = DAY + 17 * 3600
        docs = [minute(start + 60 * k, rotations_left=1 if k < n else 0, rotation_left_cumulative_deg=40.0 if k < n
                       else 0.0) for k in range(70)]
        feed(eng, docs)
        [summary] = eng.tick(DAY + 18 * 3600 + 5)
        assert summary["evidence"]["rotation_si"] == -200.0
        assert (summary["stretch"] and summary["stretch"]["side"]) == stretch


def slouching_all_day(start_s: float, hours: int) -> list[dict]:
    """A wearer slouched 40 s a minute, leaning left and turning left, from start_s on; standing up on the hour."""
    return [minute(start_s + 60 * k, slouch_s=40, sitting_since_s=start_s + 3600 * (k // 60), lean_left_s=30,
                   rotations_left=1, rotation_left_cumulative_deg=30) for k in range(hours * 60)]


def test_the_daily_cap_is_spread_over_the_waking_day(tmp_path):
    """Unpaced, a wearer slouching from 08:00 used the cap of 8 by 09:50 and heard nothing for the rest of the day
    (a helper's random day: by 09:41, then 8 h 20 min silent with 138 min slouched). Past the day's first two, the
    nudges left are spread over the waking day left (to quiet hours at 22:00), and the kind told longest ago goes
    first, so one kind found every minute does not take every turn."""
    start = DAY + 8 * 3600
    unpaced = feed(engine(limits=Limits(max_delay_s=FAR, pace=False)), slouching_all_day(start, 14))
    assert max(hhmm(a) for a in unpaced) == "09:50"
    eng = engine(limits=Limits(max_delay_s=FAR))  # the defaults: daily cap 8, quiet hours 22:00-07:00
    alerts = feed(eng, slouching_all_day(start, 14))
    times = [a["ts"] / 1000 for a in alerts]
    assert len(alerts) == 8 and hhmm(alerts[0]) == hhmm(alerts[1]) == "08:20"
    gaps_h = [(b - a) / 3600 for a, b in zip(times[1:], times[2:])]
    assert all(1.9 <= gap <= 2.0 for gap in gaps_h), gaps_h  # (22:00 - 08:20) / 7, then as evenly again
    assert "19:00" < hhmm(alerts[-1]) < "21:00"
    # (The rotation, all to the left from the first, -200, is told once: it cannot get worse.)
    assert [a["kind"] for a in alerts[:2]] == ["slouch", "rotation"] and {a["kind"] for a in alerts[2:]} == {
        "slouch", "lean"}
    assert set(eng.devices["D"].held_today) == {"paced", "daily_cap"}
    # Held for the pace, a kind is counted once between two nudges sent (once a cooldown, 41 here, 80-89 on a day of
    # 23 h): six waits, four kinds waiting (slouch, sitting, lean, rotation).
    assert eng.devices["D"].held_today["paced"] <= 6 * 4
    # Worn from 21:20 only, quiet from 22:00: the two free, then never closer than 15 min (it was a minute apart).
    late = feed(engine(limits=Limits(max_delay_s=FAR)), slouching_all_day(DAY + 21 * 3600 + 20 * 60, 1)[:40])
    assert [hhmm(a) for a in late] == ["21:40", "21:40", "21:55"]
    # A request to recalibrate is not held for the pace (the cap still counts it).
    recal = {"schema": 1, "kind": "calibration", "device": "D", "ts": int((start + 3 * 3600) * 1000),
             "t_s": start + 3 * 3600, "status": "recalibrate", "message": "walking reads 20° forward: moved?"}
    eng = engine(limits=Limits(max_delay_s=FAR), calibration=CalibrationRule())
    assert len(feed(eng, slouching_all_day(start, 3))) == 3
    assert [a["kind"] for a in eng.on_event(recal, now_s=start + 3 * 3600)] == ["calibration"]
    # No quiet hours: the waking day ends at midnight, and the cap's day with it.
    alerts = feed(engine(limits=Limits(max_delay_s=FAR, quiet_hours="")), slouching_all_day(start, 16))
    assert len(alerts) == 8 and "21:00" < hhmm(alerts[-1]) < "23:00"
    (tmp_path / "rules.toml").write_text("[limits]\npace = false\n")
    assert load_rules(tmp_path / "rules.toml").limits.pace is False


def test_the_pace_counts_waking_time_past_quiet_hours_that_end_within_the_day():
    """Quiet hours 01:00-09:00: the new day's waking time is the hour after midnight and 09:00 to midnight. Spread over
    the time to the next quiet hours only, a wearer up after midnight was nudged five times by 00:45 (the cap left
    spread over the hour to 01:00) and had three left for the day from 09:00."""
    start = DAY + 9 * 3600
    eng = engine(limits=Limits(max_delay_s=FAR, quiet_hours="01:00-09:00"))
    after_midnight = [a for a in feed(eng, slouching_all_day(start, 26)) if a["ts"] / 1000 >= DAY + 86_400]
    assert [hhmm(a) for a in after_midnight][:2] == ["00:01", "00:20"]  # the day's first two, as they come
    # The third waits a seventh of the waking time left at 00:20 (40 min + 15 h): 2 h 14 min of it: at the
    # minute after, 10:35.
    assert [hhmm(a) for a in after_midnight][2:] == ["10:35"]


def test_an_imbalance_is_told_again_only_when_there_is_more_of_it_and_to_a_wearer_up():
    """Lean and rotation nudges judge the day's totals, which stay over the line once they are: the same imbalance of
    the morning was told every cooldown (2 h) all day — a wearer who leaned from 09:00 to 09:12 only was told again at
    11:10, lying down ("Seated side bend"). Again only after as much more as the first nudge needed; and only at a
    minute the wearer is up (worn, not lying)."""
    start = DAY + 9 * 3600
    leaning = [minute(start + 60 * k, lean_left_s=60.0) for k in range(12)]
    upright = [minute(start + 60 * k) for k in range(12, 130)]
    lying = [minute(start + 60 * k, lying_s=60.0) for k in range(130, 140)]
    eng = engine(limits=Limits(max_delay_s=FAR, quiet_hours="", pace=False))
    alerts = feed(eng, leaning + upright + lying)
    assert [(a["kind"], hhmm(a)) for a in alerts] == [("lean", "09:10")]
    # Ten minutes more leaning (22 in all, 10 more than at the nudge): told again.
    alerts = feed(eng, [minute(start + 60 * k, lean_left_s=60.0) for k in range(140, 150)])
    assert [(a["kind"], hhmm(a), a["evidence"]["lean_left_min"]) for a in alerts] == [("lean", "11:28", 20.0)]
    # Rotations: told at the 20th, then only once the imbalance is worse (below); turning all one way it cannot be,
    # however many more rotations the cooldown lets through.
    turning = [minute(start + 60 * k, rotations_left=1, rotation_left_cumulative_deg=30.0) for k in range(60)]
    eng = engine(limits=Limits(max_delay_s=FAR, quiet_hours="", pace=False), rotation=RotationRule(cooldown_min=5))
    alerts = feed(eng, turning)
    assert [a["evidence"]["rotations_left"] for a in alerts] == [20]


def test_a_rotation_imbalance_is_told_again_only_when_it_is_worse():
    """The rotation rule told the day's imbalance again after every 20 more rotations (at each cooldown, 2 h): a wearer
    turning twice as often right as left all day heard "SI +67%" at the 20th rotation, the 40th, the 60th…, the same
    imbalance, and more often the more they moved. It is told again only when the index is worse by as much as the
    first nudge needed (rotation.si_pct further from balance), or has gone over to the other side (the other stretch
    side); a new day tells it from nothing."""
    start = DAY + 8 * 3600

    def turning(first: int, n: int, right: int, left: int, day: float = 0.0) -> list[dict]:  # rotations of 40°
        return [minute(start + day + 60 * k, rotations_right=right, rotations_left=left,
                       rotation_right_cumulative_deg=40.0 * right, rotation_left_cumulative_deg=40.0 * left,
                       lying_s=45.0 if (day, k) == (0.0, 6) else 0.0) for k in range(first, first + n)]

    eng = engine(limits=Limits(max_delay_s=FAR, quiet_hours="", pace=False))
    # Two right, one left a minute, for 6 hours: SI +66.7 from the 7th minute's 21 rotations, a minute the wearer lay
    # down (no posture to stretch from), so told at the next, 08:08; not again at 10:08 and 12:08, as it was (each
    # cooldown, 20 and more rotations later, the same +66.7).
    alerts = feed(eng, turning(0, 360, 2, 1))
    assert [(hhmm(a), a["evidence"]["rotation_si"], a["stretch"]["side"]) for a in alerts] == [("08:08", 66.7, "left")]
    # Then two right a minute: worse, but not 25 worse than +66.7 by 16:00 (+90.9) …
    assert feed(eng, turning(360, 120, 2, 0)) == []
    # … and at 16:05 (+91.7), told.
    alerts = feed(eng, turning(480, 60, 2, 0))
    assert [(hhmm(a), a["evidence"]["rotation_si"]) for a in alerts] == [("16:05", 91.7)]
    # Six left a minute: the day's index falls, less imbalance, told nothing; over to the left: favour the right, told.
    alerts = feed(eng, turning(540, 240, 0, 6))
    assert [(hhmm(a), a["evidence"]["rotation_si"], a["stretch"]["side"]) for a in alerts] == [
        ("19:52", -25.2, "right")]
    # The next day the same two to one is told again, once.
    alerts = feed(eng, turning(0, 300, 2, 1, day=86_400.0))
    assert [(hhmm(a), a["evidence"]["rotation_si"]) for a in alerts] == [("08:07", 66.7)]


def test_spans_are_said_as_a_wearer_counts_them():
    """Rounded, 150 s read "2 min" and 210 s "4 min", 119.6 s "120 s" (which is "2 min"), and a long sitting "Sitting
    for 136 min"."""
    from alerts.compose import _span

    said = {s: _span(s) for s in (45, 119.4, 119.6, 150, 210, 179.4, 7199, 7200, 8160, 10800)}
    assert said == {45: "45 s", 119.4: "119 s", 119.6: "2 min", 150: "2 min", 210: "3 min", 179.4: "2 min",
                    7199: "119 min", 7200: "2 h", 8160: "2 h 16 min", 10800: "3 h"}
    eng = engine(limits=Limits(max_delay_s=FAR, quiet_hours=""), sitting=SittingRule(max_sitting_min=45))
    start = DAY + 9 * 3600
    alerts = feed(eng, [minute(start + 60 * k, sitting_since_s=start - 7200) for k in range(3)])
    assert alerts[0]["message"].startswith("Sitting for 2 h 1 min.")
    episode = {"schema": 1, "kind": "slouch", "device": "D", "ts": int(start * 1000), "start_s": start,
               "end_s": start + 7518, "duration_s": 7518.0, "peak_flexion_deg": 31.0, "mean_flexion_deg": 24.0}
    [told] = engine(limits=Limits(max_delay_s=FAR, quiet_hours="")).on_event(episode, now_s=start + 7600)
    assert told["message"].startswith("You slouched for 2 h 5 min without a break (up to 31°).")


def test_calibration_alerts_and_recovery_feedback():
    eng = engine(calibration=CalibrationRule(cooldown_min=30), recovery=RecoveryRule(upright_min=3),
                 slouch=SlouchRule(window_min=3, share_pct=50, min_worn_min=3, episode_min=1000, cooldown_min=60),
                 limits=Limits(pace=False))
    start = DAY + 9 * 3600
    [recal] = eng.on_event({"schema": 1, "kind": "calibration", "device": "D", "ts": int(start * 1000), "t_s": start,
                            "status": "recalibrate", "message": "walking reads 20° forward: the sensor may have moved"},
                           now_s=start)
    assert recal["kind"] == "calibration" and "Sit upright" in recal["message"]
    eng.on_event({"schema": 1, "kind": "calibration", "device": "D", "ts": int(start * 1000), "t_s": start + 1,
                  "status": "calibrated", "message": "ok"}, now_s=start)
    slouchy = [minute(start + 60 * k, slouch_s=45) for k in range(3)]
    upright = [minute(start + 60 * k, slouch_s=2) for k in range(3, 8)]
    assert [a["kind"] for a in feed(eng, slouchy + upright)] == ["slouch", "recovery"]
    # The calibration's age is the pipeline's to ask about (a `recalibrate` event, where the moves are watched for):
    # the service told "Calibration is 24 h old" on its own, and the moves it asked for were ignored.
    assert feed(eng, [minute(start + 86_400 + 60 * k) for k in range(3)]) == []


def test_lying_down_after_a_slouch_nudge_is_not_praised_as_upright():
    """A body lying has no posture (the pipeline measures no slouch there): five minutes lying down after the nudge
    were praised "Upright for the last 5 min. Keep it up!". Sitting up is praised, and so is walking (upright as the
    pipeline counts it: worn and not lying)."""
    start = DAY + 9 * 3600
    slouched = [minute(start + 60 * k, slouch_s=60.0, sitting_since_s=start) for k in range(5)]
    after = {"lying": {"lying_s": 60.0}, "sitting": {"sitting_since_s": start + 300}, "walking": {"walking_s": 60.0}}
    praised = {}
    for activity, fields in after.items():
        eng = engine(recovery=RecoveryRule(), sitting=SittingRule(enabled=False))
        alerts = feed(eng, slouched + [minute(start + 60 * k, **fields) for k in range(5, 12)])
        praised[activity] = [a["message"] for a in alerts if a["kind"] == "recovery"]
    assert praised == {"lying": [], "sitting": ["Upright for the last 5 min. Keep it up!"],
                       "walking": ["Upright for the last 5 min. Keep it up!"]}


def test_habit_program_streak_and_daily_summary():
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30,
                                                               summary_time="18:00"))
    for day, slouch_s in enumerate((5, 5, 30, 5, 5, 5)):  # day 3 misses the goal (50 %)
        start = DAY + day * 86400 + 9 * 3600
        feed(eng, [minute(start + 60 * k, slouch_s=slouch_s) for k in range(40)], now_s=start + 2400)
        assert eng.tick(DAY + day * 86400 + 17 * 3600) == []  # not yet 18:00
        # taken off at 09:40: the summary waits for data that may still be on its way, then goes
        assert eng.tick(DAY + day * 86400 + 18 * 3600 + 5) == []
        [summary] = eng.tick(DAY + day * 86400 + 18 * 3600 + 600)
        assert eng.tick(DAY + day * 86400 + 19 * 3600) == []  # once a day
    e = summary["evidence"]
    assert summary["kind"] == "summary" and e["program_day"] == 6 and e["program_days"] == 31
    assert e["goal_met"] is True and e["streak_days"] == 3 and e["days_met"] == 5
    assert "Streak 3 d" in summary["message"] and "day 6 of 31" in summary["message"]
    load_validators()["alerts/log"](summary)


def test_a_day_missed_ends_the_streak_at_once_as_its_summary_says():
    """Five days met, a weekend not worn, a day worn too little, then a day 50 % slouched: its summary said "goal
    missed. Streak 5 d" and `today` streak_days 5 all evening, and the next morning the streak was 0. A missed day
    ends the streak when it is judged so; a day not worn, or worn too little, does not."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=60,
                                                               summary_time="18:00"))
    plan = {0: 6, 1: 6, 2: 6, 3: 6, 4: 6, 7: None, 8: 30, 9: 6}  # slouch_s a minute; None: 40 min, too little
    told = {}
    for day, slouch_s in plan.items():
        start = DAY + day * 86400 + 9 * 3600
        worn = 40 if slouch_s is None else 480
        feed(eng, [minute(start + 60 * k, slouch_s=slouch_s or 6) for k in range(worn)])
        [summary] = eng.tick(DAY + day * 86400 + 18 * 3600 + 600)
        told[day] = summary["evidence"]["goal_met"], summary["evidence"]["streak_days"], eng.today_state("D")
    assert [told[d][:2] for d in (4, 7)] == [(True, 5), (None, 5)]  # the weekend and a short day break nothing
    met, streak, today = told[8]
    assert (met, streak, today["goal_met"], today["streak_days"]) == (False, 0, False, 0)
    assert told[9][:2] == (True, 1)
    # Before the summary the day is judged so far, but a slouched first hour ends no streak yet; met, it counts.
    feed(eng, [minute(DAY + 10 * 86400 + 9 * 3600 + 60 * k, slouch_s=50) for k in range(60)])
    assert (eng.today_state("D")["goal_met"], eng.today_state("D")["streak_days"]) == (False, 1)
    feed(eng, [minute(DAY + 10 * 86400 + 10 * 3600 + 60 * k, slouch_s=0) for k in range(240)])
    assert (eng.today_state("D")["goal_met"], eng.today_state("D")["streak_days"]) == (True, 2)


def test_a_day_its_summary_could_not_judge_ends_no_streak_before_midnight():
    """Worn 30 min by 18:00 (too little): the summary told "too little wear to count. Streak 3 d", and the evening,
    judged whole at midnight, first slouched then upright: `today` went 3, 0, 4 d. Missed only so far, a day its
    summary did not judge ends nothing yet, as before a summary."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=60,
                                                               summary_time="18:00"))
    for day in range(3):
        feed(eng, [minute(DAY + day * 86400 + 9 * 3600 + 60 * k, slouch_s=6) for k in range(480)])
        eng.tick(DAY + day * 86400 + 18 * 3600 + 600)
    day3 = DAY + 3 * 86400
    feed(eng, [minute(day3 + 17 * 3600 + 60 * k, slouch_s=6) for k in range(30)])
    [summary] = eng.tick(day3 + 18 * 3600 + 600)
    assert (summary["evidence"]["goal_met"], summary["evidence"]["streak_days"]) == (None, 3)
    feed(eng, [minute(day3 + 19 * 3600 + 60 * k, slouch_s=30) for k in range(60)])
    assert (eng.today_state("D")["goal_met"], eng.today_state("D")["streak_days"]) == (False, 3)
    feed(eng, [minute(day3 + 20 * 3600 + 60 * k, slouch_s=0) for k in range(180)])
    assert (eng.today_state("D")["goal_met"], eng.today_state("D")["streak_days"]) == (True, 4)


def test_a_streak_longer_than_the_days_kept_goes_on_counting():
    # Only KEEP_DAYS finished days are kept: the streak stopped at 63 and Home Assistant showed "63 d" for good.
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30, summary_time=""))
    for day in range(70):
        start = DAY + day * 86400 + 9 * 3600
        feed(eng, [minute(start + 60 * k, slouch_s=5) for k in range(31)])
    assert eng.today_state("D")["streak_days"] == 70
    feed(eng, [minute(DAY + 70 * 86400 + 9 * 3600 + 60 * k, slouch_s=50) for k in range(31)])  # missed: it ends
    feed(eng, [minute(DAY + 71 * 86400 + 9 * 3600 + 60 * k, slouch_s=5) for k in range(31)])
    assert eng.today_state("D")["streak_days"] == 1


def test_a_summary_during_a_backlog_covers_the_day_up_to_its_time():
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    start = DAY + 17 * 3600
    backlog = [minute(start + 60 * k, slouch_s=6) for k in range(90)]  # 17:00–18:30, delivered at 18:05
    feed(eng, backlog[:30], now_s=DAY + 18 * 3600 + 300)
    assert eng.tick(DAY + 18 * 3600 + 300) == []  # its data has not reached 18:00 yet
    feed(eng, backlog[30:], now_s=DAY + 18 * 3600 + 300)
    [summary] = eng.tick(DAY + 18 * 3600 + 301)
    assert summary["evidence"]["worn_min"] == 60.0 and summary["evidence"]["slouch_pct"] == 10.0
    assert "day 1 of 31" in summary["message"]


def test_the_day_is_judged_as_its_summary_told():
    """Slouching 10 % until the 18:00 summary ("goal met") and 60 % after: the closed day was judged on the whole
    day (missed), so every summary said "Streak 1 d" and the program counted none of the days it called met (a
    helper's 33 days); the `today` document said "missed" each evening after the summary said "met"."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30,
                                                               summary_time="18:00"))
    for day in range(3):
        start = DAY + day * 86400 + 8 * 3600
        feed(eng, [minute(start + 60 * k, slouch_s=6 if k < 600 else 36) for k in range(14 * 60)],
             now_s=start + 10 * 3600 + 30)  # 08:00-22:00, all of it in by 18:00:30 (a gateway's backlog)
        [summary] = eng.tick(DAY + day * 86400 + 18 * 3600 + 60)
        e = summary["evidence"]
        assert e["slouch_pct"] == 10.0 and e["goal_met"] is True and e["streak_days"] == day + 1
        assert e["days_met"] == day + 1
        after = eng.today_state("D")
        assert after["slouch_min"] > e["slouch_min"] and after["goal_met"] is True
        assert after["streak_days"] == day + 1
    assert [d["goal_met"] for d in eng.devices["D"].days.values()] == [True, True]
    # A summary that could not judge (worn 30 min by 18:00): the whole day is judged at its end.
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=60,
                                                               summary_time="18:00"))
    start = DAY + 17.5 * 3600
    feed(eng, [minute(start + 60 * k, slouch_s=6) for k in range(4 * 60)], now_s=start + 1800 + 30)
    [summary] = eng.tick(DAY + 18 * 3600 + 60)
    assert summary["evidence"]["goal_met"] is None
    assert eng.today_state("D")["goal_met"] is True  # 4 h by 21:30
    feed(eng, [minute(DAY + 86400 + 9 * 3600, slouch_s=6)])
    assert [d["goal_met"] for d in eng.devices["D"].days.values()] == [True]
    # Without a summary the whole day is judged.
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30, summary_time=""))
    for day in range(2):
        start = DAY + day * 86400 + 8 * 3600
        feed(eng, [minute(start + 60 * k, slouch_s=6 if k < 600 else 36) for k in range(14 * 60)])
    assert [d["goal_met"] for d in eng.devices["D"].days.values()] == [False]


def test_today_shows_the_new_day_once_it_has_begun_without_data():
    """Home Assistant's `today` kept yesterday's totals as today's until the sensor's first minute, hours later, and
    a restart did not change it. From 3 minutes after midnight a device with none of the new day's data shows that
    day, empty, with the streak and program the closed day leaves; the day before still takes late minutes."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30,
                                                               summary_time="18:00"))
    feed(eng, [minute(DAY + 9 * 3600 + 60 * k, slouch_s=6) for k in range(8 * 60)])  # 09:00-17:00
    assert [s["evidence"]["goal_met"] for s in eng.tick(DAY + 18 * 3600 + 600)] == [True]
    assert eng.days_begun(DAY + 20 * 3600) == [] and eng.today_state("D")["worn_min"] == 480.0
    midnight = DAY + 86400
    assert eng.days_begun(midnight + 179) == []  # a sensor worn over midnight moves by its own first minute
    assert eng.days_begun(midnight + 181) == ["D"] and eng.days_begun(midnight + 300) == []
    new_day = eng.today_state("D")
    assert new_day["date"] == "2026-11-21" and new_day["ts"] == midnight * 1000
    assert (new_day["worn_min"], new_day["slouch_min"], new_day["sitting_now_min"]) == (0.0, 0.0, 0.0)
    assert new_day["posture"] == "not_worn" and new_day["slouching"] is False and new_day["alerts_sent"] == 0
    assert (new_day["streak_days"], new_day["program_day"], new_day["goal_met"]) == (1, 2, None)
    feed(eng, [minute(DAY + 23 * 3600, slouch_s=6)], now_s=midnight + 400)  # a late minute of the day before
    assert eng.today_state("D") == new_day
    restarted = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30))
    restarted.load(eng.dump({"D"}))
    assert restarted.days_begun(midnight + 3600) == ["D"] and restarted.today_state("D") == new_day
    feed(eng, [minute(midnight + 9 * 3600, slouch_s=6)])
    assert eng.today_state("D")["worn_min"] == 1.0 and eng.devices["D"].days["2026-11-20"]["worn_min"] == 481.0


def test_a_verdict_sent_on_the_fallback_takes_the_data_that_came_later():
    """The gateway offline 12:00-20:00, the service listening: the 18:10 summary judged the morning ("goal met", 12
    of 240 min) and that became the day's verdict, though the backlog up to 18:00 brought it to 47 %."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30,
                                                               summary_time="18:00"))
    feed(eng, [minute(DAY + 8 * 3600 + 60 * k, slouch_s=3) for k in range(240)])  # 08:00-12:00, 5 %
    [summary] = eng.tick(DAY + 18 * 3600 + 600)
    assert summary["evidence"]["goal_met"] is True and eng.today_state("D")["goal_met"] is True
    feed(eng, [minute(DAY + 12 * 3600 + 60 * k, slouch_s=50) for k in range(8 * 60)], now_s=DAY + 20 * 3600)
    assert eng.today_state("D")["goal_met"] is False and eng.today_state("D")["streak_days"] == 0
    feed(eng, [minute(DAY + 86400 + 9 * 3600)])
    assert eng.devices["D"].days["2026-11-20"]["goal_met"] is False


def test_a_day_without_its_summary_is_judged_as_the_summary_would_have_told():
    """The service away from 17:00 until the next morning, the broker holding the evening: 10 % slouched to 18:00, 50 %
    after (20 % whole: missed). Running, it told "goal met" at 18:00 and the streak went on; away, the day was judged
    whole and the streak ended. Both runs now close the day alike; worn too little by 18:00, the whole day is judged."""
    def run(away: bool, first_min: int = 9 * 60) -> AlertEngine:
        eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=60,
                                                                   summary_time="18:00"))
        feed(eng, [minute(DAY + 9 * 3600 + 60 * k, slouch_s=6) for k in range(480)])  # day 1: met
        eng.tick(DAY + 18 * 3600 + 600)
        day2 = DAY + 86400
        live = [minute(day2 + 60 * m, slouch_s=6 if m < 18 * 60 else 30) for m in range(first_min, 21 * 60)]
        if away:
            feed(eng, [d for d in live if d["ts"] < (day2 + 17 * 3600) * 1000])
            saved = eng.dump({"D"})  # restarted the next morning from its state
            eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=60,
                                                                       summary_time="18:00"))
            eng.load(saved)
            morning = DAY + 2 * 86400 + 8 * 3600
            assert eng.tick(morning, listening_since_s=morning) == []
            feed(eng, [d for d in live if d["ts"] >= (day2 + 17 * 3600) * 1000], now_s=morning + 1)
            assert eng.tick(morning + 2, listening_since_s=morning) == []  # no summary for a day gone
        else:
            for doc in live:
                feed(eng, [doc])
                eng.tick(doc["ts"] / 1000 + 65)
        feed(eng, [minute(DAY + 2 * 86400 + 9 * 3600, slouch_s=6)])
        return eng

    for away in (False, True):
        eng = run(away)
        assert eng.devices["D"].days["2026-11-21"]["goal_met"] is True, away
        assert eng.today_state("D")["streak_days"] == 2, away  # the third day, one minute worn, is not judged yet
    # 40 min by 18:00 (too little to judge): the whole day, 220 min 43 % slouched, misses the goal either way.
    for away in (False, True):
        assert run(away, first_min=17 * 60 + 20).devices["D"].days["2026-11-21"]["goal_met"] is False, away


def test_a_link_that_keeps_dropping_does_not_put_the_summary_off():
    """Reconnects every 9 minutes after 18:00, the sensor off since 17:00: each reconnect started the wait anew,
    and no summary went out that day."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    feed(eng, [minute(DAY + 16 * 3600 + 60 * k) for k in range(60)])
    due = DAY + 18 * 3600
    assert eng.tick(due + 60, listening_since_s=due - 300) == []
    assert eng.tick(due + 599, listening_since_s=due + 540) == []
    assert [s["kind"] for s in eng.tick(due + 600, listening_since_s=due + 540)] == ["summary"]


def test_a_day_begun_by_an_event_shows_no_minute_of_the_day_before():
    """A calibration at 07:00 before the first minute begins the day: `today` showed yesterday's last minute as now
    (slouching, sitting for 180 min) with its time going back an hour."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time=""))
    feed(eng, [minute(DAY + 20 * 3600 + 60 * k, slouch_s=50, sitting_since_s=DAY + 20 * 3600) for k in range(180)])
    seven = DAY + 86400 + 7 * 3600
    eng.on_event({"schema": 1, "kind": "calibration", "device": "D", "ts": int(seven * 1000), "t_s": seven,
                  "status": "calibrated", "message": "calibrated", "with_bend": True}, seven + 1)
    shown = eng.today_state("D")
    assert shown["date"] == "2026-11-21" and shown["ts"] == (DAY + 86400) * 1000
    assert (shown["posture"], shown["slouching"], shown["sitting_now_min"], shown["worn_min"]) == \
        ("not_worn", False, 0.0, 0.0)


def test_a_summary_after_the_service_was_away_waits_for_the_backlog():
    """Down at 18:00 and back at 19:00 (more than max_delay_s after it): the summary was built from the first
    batch of the broker's backlog (6 of 61 min worn, "goal met" for a day 43 % slouched). It waits max_delay_s
    from when the service could listen, unless the data reaches 18:00 first."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    back = DAY + 19 * 3600
    backlog = [minute(DAY + 12 * 3600 + 60 * k, slouch_s=6 if k < 120 else 40) for k in range(6 * 60)]
    feed(eng, backlog[:10], now_s=back + 1)
    assert eng.tick(back + 1, listening_since_s=back) == []
    feed(eng, backlog[10:], now_s=back + 3)
    [summary] = eng.tick(back + 3, listening_since_s=back)
    assert summary["evidence"]["worn_min"] == 360.0 and summary["evidence"]["goal_met"] is False
    # A backlog that never reaches 18:00 (the sensor was off): the summary goes max_delay_s after listening began.
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    feed(eng, backlog[:60], now_s=back + 1)
    assert eng.tick(back + 599, listening_since_s=back) == []
    [summary] = eng.tick(back + 600, listening_since_s=back)
    assert summary["evidence"]["worn_min"] == 60.0


def test_a_device_set_aside_by_the_summary_is_looked_at_again_by_a_late_minute_and_a_restart():
    # tick looks only at devices that may still owe today's summary (at every step, all of them cost a fleet's
    # service most of its time): one with no minute before 18:00 yet is set aside until such a minute arrives.
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    after = DAY + 18 * 3600 + 600
    feed(eng, [minute(after + 60 * k, device="E") for k in range(3)], now_s=after + 180)  # worn from 18:10 only
    feed(eng, [minute(DAY + 9 * 3600 + 60 * k, device="M") for k in range(40)], now_s=after)
    assert [s["device"] for s in eng.tick(after + 200)] == ["M"]
    assert eng.tick(after + 300) == []
    late = [minute(DAY + 17 * 3600 + 60 * k, device="E") for k in range(40)]  # E's morning, from a gateway's spool
    feed(eng, late, now_s=after + 400)
    [summary] = eng.tick(after + 401)
    assert summary["device"] == "E" and summary["evidence"]["worn_min"] == 40.0
    restarted = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    eng.devices["M"].summary_sent_day = None  # as if M's summary had not gone out before the restart
    restarted.load(eng.dump(set(eng.devices)))
    assert [s["device"] for s in restarted.tick(after + 500)] == ["M"]
    # A clock that ran a day ahead and is set back: the day set aside then is still owed its summary.
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(summary_time="18:00", min_worn_min=30))
    feed(eng, [minute(DAY + 16 * 3600 + 60 * k, device="J") for k in range(60)], now_s=DAY + 17 * 3600)
    assert eng.tick(DAY + 86400 + 18 * 3600 + 300) == []  # "tomorrow": J's day is not today
    assert [s["device"] for s in eng.tick(DAY + 18 * 3600 + 600)] == ["J"]


def test_the_first_event_of_a_day_starts_its_cap_and_events_before_any_minute_work():
    eng = engine(limits=Limits(daily_cap=1, quiet_hours="", max_delay_s=FAR), calibration=CalibrationRule())
    start = DAY + 9 * 3600
    request = {"schema": 1, "kind": "calibration", "device": "N", "ts": int(start * 1000), "t_s": start,
               "status": "recalibrate", "message": "recalibrate: moved"}
    assert [a["kind"] for a in eng.on_event(request, now_s=start)] == ["calibration"]  # no minute yet
    assert eng.on_event(request | {"t_s": start + 1}, now_s=start) == []  # cooldown

    def episode(end_s: float) -> dict:
        return {"schema": 1, "kind": "slouch", "device": "N", "ts": int((end_s - 400) * 1000), "start_s": end_s - 400,
                "end_s": end_s, "duration_s": 400.0, "peak_flexion_deg": 30.0, "mean_flexion_deg": 25.0}

    # A calibration request is no nudge (contract is_nudge): the day's one nudge is left to the slouch.
    assert [a["kind"] for a in eng.on_event(episode(start + 600), now_s=start + 600)] == ["slouch"]
    assert eng.on_event(episode(start + 3 * 3600), now_s=start + 3 * 3600) == []  # the cap, not the cooldown
    assert eng.devices["N"].held_today == {"daily_cap": 1}
    next_day = start + 86400
    again = request | {"ts": int(next_day * 1000), "t_s": next_day}
    assert [a["kind"] for a in eng.on_event(again, now_s=next_day)] == ["calibration"]
    assert [a["kind"] for a in eng.on_event(episode(next_day + 600), now_s=next_day + 600)] == [
        "slouch"]  # yesterday's cap is gone
    assert eng.devices["N"].day == "2026-11-21" and eng.devices["N"].program_start == "2026-11-20"
    assert eng.tick(next_day + 12 * 3600) == []  # summary time, and a device with events only


def test_a_gateway_clock_far_behind_neither_starts_the_program_nor_opens_an_old_day():
    # A gateway on a Raspberry Pi booted without RTC or NTP stamps its minutes a month back (times before 2000 the
    # contract refuses, before 2020 the service; not these). A new wearer's first such minute set the program's start
    # a month back: at their first real minute the program was over ("day 31 of 31", then 32). A device worn last two
    # months ago had that old day opened and closed with a verdict the streak counted.
    habit = Habit(goal_slouch_pct=20, min_worn_min=30, summary_time="")
    eng = engine(slouch=SlouchRule(enabled=False), habit=habit)
    now = DAY + 10 * 3600
    behind = DAY - 30 * 86400 + 9 * 3600
    with pytest.raises(FarBehind, match="2026-10-21 is 30 days before this clock's 2026-11-20"):
        eng.on_metrics(minute(behind), now)
    with pytest.raises(FarBehind):
        eng.on_event({"schema": 1, "kind": "calibration", "device": "D", "ts": int(behind * 1000), "t_s": behind,
                      "status": "calibrated", "message": "calibrated"}, now)
    assert "D" not in eng.devices  # no state made
    feed(eng, [minute(DAY + 9 * 3600 + 60 * k, slouch_s=5) for k in range(40)], now_s=now)
    today = eng.today_state("D")
    assert (today["date"], today["program_day"], today["worn_min"]) == ("2026-11-20", 1, 40.0)
    # Once it has a day, one behind it is late, as before; one of that day is counted in it.
    assert eng.on_metrics(minute(behind), now) == [] and eng.devices["D"].late_minutes == 1
    # A device whose latest day is older than the clock's bound: no day between opened by a clock behind.
    old = DAY - 60 * 86400 + 9 * 3600
    feed(eng, [minute(old + 60 * k, device="E", slouch_s=5) for k in range(40)])
    with pytest.raises(FarBehind):
        eng.on_metrics(minute(behind, device="E"), now)
    feed(eng, [minute(DAY + 9 * 3600 + 60 * k, device="E", slouch_s=5) for k in range(40)], now_s=now)
    assert list(eng.devices["E"].days) == ["2026-09-21"] and eng.today_state("E")["streak_days"] == 2
    # Within the bound a backlog (a gateway or this service away for days) opens its days as it always did.
    fresh = engine(slouch=SlouchRule(enabled=False), habit=habit)
    feed(fresh, [minute(DAY - MAX_BEHIND_DAYS * 86400 + 60 * k, slouch_s=5) for k in range(40)], now_s=now)
    assert fresh.devices["D"].program_start == "2026-11-13"


def test_the_machines_own_time_zone_works_too():
    eng = AlertEngine(Rules(slouch=SlouchRule(window_min=5, share_pct=50, min_worn_min=3, episode_min=1000),
                            limits=Limits(quiet_hours="", max_delay_s=FAR)), Catalog.load(), tz=None)
    assert [a["kind"] for a in feed(eng, [minute(DAY + 60 * k, slouch_s=45) for k in range(5)])] == ["slouch"]
    assert eng.today_state("D")["date"] == datetime.fromtimestamp(DAY).date().isoformat()


def test_rule_values_that_make_no_sense_are_refused(tmp_path):
    bad = tmp_path / "rules.toml"
    for text in ("[lean]\nmin_lean_min = 0\n", "[slouch]\nepisode_min = 0\n", "[recovery]\nupright_min = 0\n",
                 "[slouch]\nshare_pct = 120\n", "[limits]\ndaily_cap = -1\n", "[slouch_now]\ndelay_s = -1\n",
                 "[slouch_now]\ncooldown_min = -5\n"):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=text.split("\n")[1].split(" ")[0]):
            load_rules(bad)


def test_a_recalibrate_alert_says_the_instructions_once():
    """The pipeline's message carries its own instructions, and the alert added its own after them: the phone read
    "recalibrate: the sensor was off the body for 2 min; sit upright and still for 3 s, bend forward once and sit up
    Sit upright and still for 3 s, then bend forward once and sit up." (seen in `posture demo`)."""
    from pipeline.calibration import CalibrationSettings

    eng = engine(calibration=CalibrationRule(cooldown_min=30))
    start = DAY + 9 * 3600
    message = f"recalibrate: the sensor was off the body for 2 min; {CalibrationSettings().instructions}"
    [recal] = eng.on_event({"schema": 1, "kind": "calibration", "device": "D", "ts": int(start * 1000), "t_s": start,
                            "status": "recalibrate", "message": message}, now_s=start)
    assert recal["message"].startswith("The sensor was off the body for 2 min. Sit upright and still for 3 s, bend ")
    assert recal["message"].lower().count("sit upright") == 1 and "recalibrate:" not in recal["message"]


def test_a_recalibrate_alert_says_what_the_pipeline_asks_for():
    """The pipeline's instructions were replaced with the alert's own ("Sit upright and still for 3 s, then bend forward
    once and sit up"), and with them what the reason needs: a wearer whose sensor was the wrong way round was told to
    repeat the moves it refuses, not to turn it over; a pipeline holding 5 s was said as 3 s."""
    from pipeline.calibration import CalibrationSettings

    eng = engine(calibration=CalibrationRule(cooldown_min=0))
    start = DAY + 9 * 3600
    turned = ("that bend went 172° away from forward (backwards or sideways): sit upright and still, bend straight "
              "forward once and sit up; if you did bend forward, the sensor is worn the other way round: turn it over "
              "and calibrate again")
    slow = f"recalibrate: the sensor was off the body for 2 min; {CalibrationSettings(hold_s=5.0).instructions}"
    said = []
    for k, (status, message) in enumerate([("refused", turned), ("recalibrate", slow)]):
        [alert] = eng.on_event({"schema": 1, "kind": "calibration", "device": f"D{k}", "ts": int(start * 1000),
                                "t_s": start, "status": status, "message": message}, now_s=start)
        said.append(alert["message"])
    assert said[0] == ("That bend went 172° away from forward (backwards or sideways). Sit upright and still, bend "
                       "straight forward once and sit up; if you did bend forward, the sensor is worn the other way "
                       "round: turn it over and calibrate again.")
    assert said[1] == ("The sensor was off the body for 2 min. Sit upright and still for 5 s, bend forward once and "
                       "sit up.")


def test_a_calibration_alert_says_the_reason_and_the_ask_the_event_carries_apart():
    """The alert service cut the pipeline's message at the words "sit upright" to tell why from what to do, and where
    they were not (a bend to make again, a sensor to tape flat) it added the whole moves after the message: "The bend
    was not one straight movement: bend straight forward once and sit up. Sit upright and still for 3 s, then bend
    forward once and sit up." The pipeline's events say the two apart (reason, ask): the alert says them as they are.
    A gateway from before them sends its message alone, read as before."""
    from contract.messages import payload
    from firmware_sim.imu import SensorSimulation
    from firmware_sim.scenario import parse_scenario
    from pipeline.events import CalibrationEvent, asking
    from pipeline.stream import PosturePipeline

    validate = load_validators()["events"]
    start = DAY + 9 * 3600

    def told(event: CalibrationEvent | dict) -> str:
        doc = event if isinstance(event, dict) else payload("D", event)
        validate(doc)
        [alert] = engine(calibration=CalibrationRule()).on_event(doc, now_s=doc["t_s"])
        return alert["message"]

    # A pipeline's own refusal (a lean on the desk held still, then sit up: no calibration bend), through its payload.
    sim = SensorSimulation(parse_scenario({"name": "desk", "segment": [
        {"activity": "sit_upright", "duration_s": 4.0},
        {"activity": "slouch", "duration_s": 40.0, "flexion_deg": 25.0, "ramp_s": 0.8},
        {"activity": "sit_upright", "duration_s": 3.0}]}), seed=4)
    pipeline, events = PosturePipeline(), []
    for chunk in sim.chunks(max_samples=1000):
        events += [e for e in pipeline.update(chunk.t_s, chunk.acc_g, chunk.gyro_dps).events if e.kind == "calibration"]
    [late] = [replace(e, t_s=start + e.t_s) for e in events
              if e.status == "refused" and "did not come back" in e.message]
    assert late.message == f"{late.reason}: {late.ask}"  # the line the log, the console and the report show, as it was
    assert (late.reason, late.ask) == ("the forward bend did not come back within 10 s",
                                       "sit upright and still for 3 s, bend forward once and sit up again")
    assert told(late) == ("The forward bend did not come back within 10 s. Sit upright and still for 3 s, bend forward "
                          "once and sit up again.")
    # Asks without "sit upright": said as asked, nothing added.
    crooked = asking(start, "refused", "the bend was not one straight movement",
                     "bend straight forward once and sit up")
    assert told(crooked) == "The bend was not one straight movement. Bend straight forward once and sit up."
    flat = asking(start, "refused", "sensor z is near vertical while sitting upright: it does not lie on the back",
                  "tape it flat on the upper back and calibrate again", "; ")
    assert told(flat) == ("Sensor z is near vertical while sitting upright: it does not lie on the back. Tape it flat "
                          "on the upper back and calibrate again.")
    # An old gateway's (no reason, no ask): its message cut at "sit upright", or the moves added, as before.
    old = {k: v for k, v in payload("D", crooked).items() if k not in ("reason", "ask")}
    assert told(old) == ("The bend was not one straight movement: bend straight forward once and sit up. Sit upright "
                         "and still for 3 s, bend forward once and sit up.")
    old = {k: v for k, v in payload("D", late).items() if k not in ("reason", "ask")}
    assert told(old) == told(late)


def test_a_recalibrate_alert_says_the_pipelines_reason_whole():
    """The reason was cut at 120 characters wherever that fell, and the phone read "…or the sensor has moved; sit tall
    fo Sit upright and still for 3 s, then bend forward once and sit up." (random day 1796555284, a walk read at −2°).
    The message has room for it: cut, if ever, at a word."""
    import numpy as np

    from contract.messages import payload
    from pipeline.calibration import CalibrationMonitor, CalibrationSettings
    from pipeline.events import asking

    walk = np.full(3000, -3.0), np.zeros(3000), np.ones(3000, bool), np.zeros(3000, bool)
    flagged = CalibrationMonitor(CalibrationSettings(), 100.0).update(*walk, walk[3], walk[3])
    assert flagged is not None and len(flagged[1]) > 120
    start = DAY + 9 * 3600
    event = payload("D", asking(start, "recalibrate", flagged[1], CalibrationSettings().instructions, "; then "))
    old = {k: v for k, v in event.items() if k not in ("reason", "ask")}  # a gateway's from before they were sent
    for doc in (event, old):
        [recal] = engine(calibration=CalibrationRule()).on_event(doc, now_s=start)
        assert recal["message"] == ("Walking reads -3° of flexion (leaning back): the upright hold was probably "
                                    "hunched, or the sensor has moved; sit tall for the hold. Sit upright and still "
                                    "for 3 s, bend forward once and sit up.")
    eng = engine(calibration=CalibrationRule())
    [long] = eng.on_event({"schema": 1, "kind": "calibration", "device": "E", "ts": int(start * 1000), "t_s": start,
                           "status": "refused", "message": "the bend was " + "very " * 60 + "odd"}, now_s=start)
    assert len(long["message"]) <= 240 and long["message"].startswith("The bend was very very")
    assert "very… Sit upright and still for 3 s" in long["message"]


def test_a_long_ask_leaves_the_reason_said_and_is_cut_at_a_word():
    """An ask may be 500 characters, and its message with the reason too (contract/schemas/event.json): an ask near
    that cut the reason to "…" and was itself cut mid-word at the alert's 240."""
    from alerts.compose import MESSAGE_MAX_CHARS, REASON_MIN_CHARS

    def asking_event(t_s: float, reason: str, ask: str) -> dict:
        return {"schema": 1, "kind": "calibration", "device": "D", "ts": int(t_s * 1000), "t_s": t_s,
                "status": "refused", "message": f"{reason}: {ask}", "with_bend": False, "reason": reason, "ask": ask}

    eng = engine(calibration=CalibrationRule())
    reason = "that bend went 172° away from forward (backwards or sideways)"
    ask = "sit upright and still, bend straight forward once and sit up; " + "then hold it there a moment " * 16
    doc = asking_event(DAY + 10 * 3600, reason, ask[:420])
    load_validators()["events"](doc)
    [alert] = eng.on_event(doc, now_s=doc["t_s"])
    message = alert["message"]
    assert len(message) <= MESSAGE_MAX_CHARS and message.startswith("That bend went 172° away from forward (backwards "
                                                                     "or sideways). Sit upright and still, bend")
    assert message.endswith("…") and message[:-1].rsplit(" ", 1)[-1] in ask.split()  # at a word
    longer = asking_event(DAY + 11 * 3600, reason * 3, ask[:300])
    load_validators()["events"](longer)
    [alert] = engine(calibration=CalibrationRule()).on_event(longer, now_s=longer["t_s"])  # (no cooldown)
    why = alert["message"].split("… ", 1)[0]
    assert len(why) + len("…") >= REASON_MIN_CHARS and len(alert["message"]) <= MESSAGE_MAX_CHARS


def test_the_moves_the_alerts_ask_for_say_the_pipelines_hold():
    """RECALIBRATE said "3 s" of its own: the pipeline's hold, and its words, are one definition."""
    from alerts.compose import RECALIBRATE
    from pipeline.calibration import CalibrationSettings

    assert RECALIBRATE == "Sit upright and still for 3 s, bend forward once and sit up."
    assert RECALIBRATE.lower() == CalibrationSettings().instructions + "."


def test_the_programs_days_met_outlast_the_days_kept():
    """Only KEEP_DAYS finished days are kept, and the program's days that met the goal were counted in them alone: a
    wearer who met it every day was told "31-day program done: goal met on 30 of 31 days" on day 64, and "0 of 31"
    from day 94 on (a helper's probe of 100 days)."""
    eng = engine(slouch=SlouchRule(enabled=False), habit=Habit(goal_slouch_pct=20, min_worn_min=30,
                                                               summary_time="18:00"))
    told = {}
    for day in range(100):
        start = DAY + day * 86400 + 9 * 3600
        feed(eng, [minute(start + 60 * k, slouch_s=5) for k in range(31)], now_s=start + 1900)
        [summary] = eng.tick(DAY + day * 86400 + 18 * 3600 + 600)
        told[day + 1] = summary["evidence"]["days_met"]
        if day + 1 == 31:  # the last day's summary says how it went: one who stops wearing it then is told too
            assert "Streak 31 d, day 31 of 31: program done, goal met on 31 of 31 days." in summary["message"]
    assert {told[d] for d in range(32, 101)} == {31}
    assert "goal met on 31 of 31 days" in summary["message"]


@pytest.mark.parametrize("record", [b'{"day": "2026-11-20", "minutes": {"17', b"[]", b'"text"', b"\xff\xfe{",
                                    b'{"minutes": 5}', b'{"sent_today": true}', b'{"day": {}}', b"[" * 100_000],
                         ids=["truncated", "a list", "a string", "not UTF-8", "minutes a number", "a count true",
                              "a day an object", "nested past recursion"])
def test_an_unreadable_device_record_is_left_out_and_said_the_others_loaded(record):
    """A record truncated, not an object, or with a field of another type (which would fail at the device's first
    message) is that device's alone: loading it stopped every device's start."""
    eng = engine()
    feed(eng, [minute(DAY + 3600)])
    why = eng.load({**eng.dump({"D"}), "device/Bad": record, "partitions": b"2"})
    assert list(why) == ["Bad"] and why["Bad"] and set(eng.devices) == {"D"}


@pytest.mark.parametrize("before, after, evening_min, days_on, was", [
    ("Europe/Berlin", "America/New_York", 450, 2, -90),  # (the old code's) the night's 90 min left out of its day
    ("Asia/Tokyo", "America/Los_Angeles", 450, 2, -90),
    ("America/New_York", "Europe/Berlin", 240, 1, +240),  # the evening counted again as the next day's night
])
def test_a_time_zone_changed_between_runs_loses_no_minute_and_counts_none_twice(before, after, evening_min, days_on,
                                                                                 was):
    # A wearer who travels sets alerts.timezone anew and restarts the service (or the machine's zone follows them).
    # The open day's start was taken again from its date in the new zone: flying west, minutes of it fell before its
    # new midnight and were left out of it (or ignored as late); flying east, the evening before, already counted in
    # the day it closed, was the new day's night too. Now a day begins where it began, and no earlier than the
    # minutes the day before counted end: the day of the change is longer or shorter, as the traveller lived it.
    from zoneinfo import ZoneInfo
    eng = AlertEngine(Rules(), Catalog.load(), ZoneInfo(before))
    evening = datetime(2026, 11, 19, 18, 0, tzinfo=ZoneInfo(before)).timestamp()
    first = [evening + 60 * k for k in range(evening_min)]  # worn from 18:00 at home...
    feed(eng, [minute(t) for t in first])
    moved = AlertEngine(Rules(), Catalog.load(), ZoneInfo(after))  # ... then restarted in the new zone
    moved.load(eng.dump({"D"}))
    then = [datetime(2026, 11, 19 + day, 9, 0, tzinfo=ZoneInfo(after)).timestamp() + 60 * k
            for day in (days_on, days_on + 1) for k in range(13 * 60)]  # and worn 09:00-22:00 there, two days
    feed(moved, [minute(t) for t in then])
    state = moved.devices["D"]
    counted = sum(d["worn_min"] for d in state.days.values()) + moved.today_state("D")["worn_min"]
    worn = len(first) + len(then)
    assert (counted, state.late_minutes) == (worn, 0), f"{counted - worn:+.0f} (was {was:+d})"
    assert moved.today_state("D")["worn_min"] == 780.0  # the last day, whole, in the new zone


def test_the_rules_compare_the_values_as_sent_not_the_tenths_they_show():
    """The day's imbalances were judged on the totals rounded for display: an SI of 24.96 read as 25.0 and was told as
    at or over 25 %, and 9.97 min leaning (shown as 10.0) as the 10 min the rule asks for. Just over the lines, they
    are told, and their text shows what the rule read."""
    start = DAY + 9 * 3600

    def rotations(right_deg: float) -> list[dict]:  # 1 + 1 a minute: 20 rotations at the 10th
        return [minute(start + 60 * k, rotations_right=1, rotations_left=1, rotation_right_cumulative_deg=right_deg,
                       rotation_left_cumulative_deg=200.0 - right_deg) for k in range(15)]

    def leaning(right_s: float) -> list[dict]:  # 13 minutes: 9.97 min at 46 s, 10.01 at 46.2 s
        return [minute(start + 60 * k, lean_right_s=right_s) for k in range(13)]

    # SI = (R - L) / (0.5 (R + L)): 112.48 and 87.52 a minute give 24.96, 112.52 and 87.48 25.04.
    assert [a["kind"] for a in feed(engine(), rotations(112.48))] == []
    [told] = feed(engine(), rotations(112.52))
    assert told["evidence"]["rotation_si"] == 25.0 and "(SI +25%)" in told["message"]
    assert [a["kind"] for a in feed(engine(), leaning(46.0))] == []
    [told] = feed(engine(), leaning(46.2))
    assert hhmm(told) == "09:13" and told["evidence"]["lean_right_min"] == 10.0


def test_a_lean_is_told_again_after_the_minutes_as_sent_not_as_shown():
    """The next lean nudge needs min_lean_min more minutes leaning than the last one told of, counted as the data has
    them: counted from the rounded evidence, a few seconds were gained or lost at each."""
    eng = engine(lean=LeanRule(cooldown_min=0.0), limits=Limits(max_delay_s=FAR, pace=False, quiet_hours=""))
    start = DAY + 9 * 3600
    alerts = feed(eng, [minute(start + 60 * k, lean_right_s=59.75) for k in range(30)])
    # 10 min at 59.75 s a minute is reached in the 11th minute (10.95 min); 10 more, 20.95, in the 22nd
    # (21.9 min). Read from the tenths, at 09:10 (9.96 shown as 10.0) and at 09:21 (20.9 over the 10.0 told).
    assert [hhmm(a) for a in alerts] == ["09:11", "09:22"]
    assert eng.devices["D"].told["lean"] == pytest.approx(22 * 59.75 / 60)


def test_the_days_last_nudge_goes_to_a_warning_over_an_info():
    """With one nudge left under the daily cap, a slouch going on (warning) and the day's lean (info) found at the same
    minute: the kind told longest ago went first, and the day's last nudge was the lean. The most severe goes first
    there; before it, the kind told longest ago still does (the pace's turns: test_the_daily_cap_is_spread_…)."""
    start = DAY + 9 * 3600
    # Slouched 40 s a minute from 09:00 (the share nudged at 09:20, again from 09:50), sitting since 09:00 (nudged at
    # 09:45), leaning right from 09:40 (10 min by 09:50).
    docs = [minute(start + 60 * k, slouch_s=40.0, sitting_since_s=start, lean_right_s=60.0 if k >= 40 else 0.0)
            for k in range(60)]
    for cap, told in ((3, ["slouch", "sitting", "slouch"]), (4, ["slouch", "sitting", "lean", "slouch"])):
        eng = engine(limits=Limits(max_delay_s=FAR, pace=False, quiet_hours="", daily_cap=cap))
        alerts = feed(eng, docs)
        assert [a["kind"] for a in alerts] == told, cap
        assert [hhmm(a) for a in alerts[2:]] == ["09:50"] * (cap - 2)


@pytest.mark.parametrize("genuine", [0, 1, 2, 4])
def test_no_single_live_state_sets_the_offset(genuine):
    """A live state's ts may be any time (a forged one, a clock's glitch): one a day ahead, the first after a restart
    of the service (or the only one, with the live stream off since), set the offset alone and held every real-time
    sitting nudge as late for an hour. The median is taken once a majority of the kept states has come."""
    eng = engine(sitting=SittingRule(), limits=Limits(quiet_hours="", max_delay_s=600, pace=False))
    now = DAY + 10 * 3600 + 30.0
    eng.on_live(live(now + 86_400), now)
    for k in range(genuine):
        eng.on_live(live(now + k), now + k + 0.2)
    assert eng.devices["D"].clock_offset_s == (0.2 if genuine == 4 else None)
    real_time = minute(now // 60 * 60 - 60, sitting_since_s=now - 3 * 3600)
    assert [a["kind"] for a in eng.on_metrics(real_time, now + genuine)] == ["sitting"]


def test_the_sitting_nudge_counts_to_where_a_minute_cut_short_ends_and_an_older_gateways_to_its_end():
    """A link lost 4.5 s into a minute sends it unfinished: counted to its end, 44.2 min sat read 45.2 and was nudged
    "Sitting for 45.2 min". Counted to where its data ends (seen_until_s), not yet; the next whole minute does. A
    gateway from before seen_until_s is read to the minute's end, as before."""
    start = DAY + 10 * 3600
    since = start + 60 - 2710.0  # sitting 45.2 min at the minute's end, 44.2 where its data ends
    cut = minute(start, worn_s=4.5, sitting_since_s=since, seen_until_s=start + 4.5)
    eng = engine(sitting=SittingRule())
    assert feed(eng, [cut]) == []
    assert eng.today_state("D")["sitting_now_min"] == 44.2
    [nudge] = feed(eng, [minute(start + 60, sitting_since_s=since, seen_until_s=start + 120)])
    assert (nudge["kind"], nudge["evidence"]["sitting_min"]) == ("sitting", 46.2)
    older = {k: v for k, v in cut.items() if k != "seen_until_s"}
    [nudge] = feed(engine(sitting=SittingRule()), [older])
    assert (nudge["kind"], nudge["evidence"]["sitting_min"]) == ("sitting", 45.2)


def status(t_s: float, online: bool, device: str = "D") -> dict:
    return {"schema": 1, "kind": "status", "device": device, "ts": int(t_s * 1000), "online": online, "will": False}


def test_sitting_now_is_not_known_while_the_sensor_is_offline_nor_once_back_after_the_pipelines_sitting_gap():
    """A sensor that went silent while its wearer sat (a battery that died, out of reach) showed them sitting "now"
    in `today` for the rest of the day. Offline: not known (None); back within SITTING_GAP_S (a flaky link) the
    stretch goes on (the pipeline carries it on), after longer it is over, not known until the next minute says."""
    from pipeline.events import SITTING_GAP_S

    eng = engine(habit=Habit(summary_time=""))
    start = DAY + 10 * 3600
    feed(eng, [minute(start + 60 * k, sitting_since_s=start - 600, seen_until_s=start + 60 * k + 60) for k in range(2)])
    end = start + 120
    assert eng.today_state("D")["sitting_now_min"] == 12.0
    assert eng.on_status(status(end + 30, online=True)) is False  # a heartbeat: nothing changes
    assert eng.on_status(status(end + 40, online=False)) is True
    assert eng.today_state("D")["sitting_now_min"] is None
    assert eng.on_status(status(end + 70, online=True)) is True
    assert eng.today_state("D")["sitting_now_min"] == 12.0
    assert eng.on_status(status(end + SITTING_GAP_S + 1, online=True)) is True  # a heartbeat with no minute since
    assert eng.today_state("D")["sitting_now_min"] is None
    feed(eng, [minute(end + 600, worn_s=30.0, sitting_since_s=end + 610, seen_until_s=end + 640)])  # (published)
    assert eng.today_state("D")["sitting_now_min"] == 0.5
    feed(eng, [minute(end + 660)])  # stood up
    assert eng.today_state("D")["sitting_now_min"] == 0.0
    assert eng.on_status(status(end + 700, online=False)) is True
    assert eng.today_state("D")["sitting_now_min"] is None  # not known: the sensor measures nothing
