"""Several `posture alerts` instances splitting the devices (alerts.partitions, docs/scaling.md), with a real
Mosquitto 2.0.11: each partition runs on one instance at a time, every device's minutes are counted once and its
alert decided once while an instance is killed -9 and started again, and state kept under another number of
partitions is refused rather than silently started afresh."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from alerts.partition import assignment, device_of, owned, partition_of
from service_io.config import ConfigError, load_config
from support.alerts import BURST_RULES, Phone, at_last_minute, noon_zone, publish, running_alerts, sitting_minutes, stop
from support.bridges import BridgeProcess
from support.mqtt import DB, wait_for

PARTITIONS = 4
RUNNING = re.compile(r"instance (\S+): running partitions (\S+) of \d+")


def running(log: Path) -> set[int]:
    """The partitions an instance said it runs, last."""
    said = RUNNING.findall(log.read_text()) if log.exists() else []
    return set() if not said or said[-1][1] == "none" else {int(k) for k in said[-1][1].split(",")}


def split_between(logs: dict[str, Path]) -> bool:
    """Every instance (name: log) runs its share of the partitions as they all know one another. Not merely each
    partition on one instance: on the way there, b (not yet seeing a) ran 0,2,3 and a ran 1, the test took {1} for
    a's share, and a restarted a settled on 0,1."""
    names = list(logs)
    return all(running(log) == owned(name, names, PARTITIONS) for name, log in logs.items())


def test_a_device_belongs_to_one_partition_for_good():
    assert partition_of("DeskSensor", 4) == 2  # pinned: CRC-32,: the same in every process, on every machine
    assert Counter(partition_of(f"dev{i}", 4) for i in range(4000)).most_common()[-1][1] > 900


@pytest.mark.parametrize("partitions", [2, 3, 4, 8, 16])
def test_partitions_are_shared_out_evenly_and_an_instance_stopping_moves_few(partitions):
    for n in range(1, 6):
        names = [f"node-{i}" for i in range(n)]
        load = Counter(assignment(names, partitions).values())
        assert sum(load.values()) == partitions
        assert max(load.values()) - min(load[name] for name in names) <= 1, (partitions, n, load)
        if n > 1:
            before, after = assignment(names, partitions), assignment(names[1:], partitions)
            moved = [k for k in range(partitions) if before[k] != after[k]]
            assert set(moved) >= {k for k in range(partitions) if before[k] == "node-0"}
            assert len(moved) <= 2 * -(-partitions // n) + 1, (partitions, n, moved)  # not a reshuffle of all
    assert owned("a", ["b"], 2) | owned("b", ["a"], 2) == {0, 1} and not owned("a", ["b"], 2) & owned("b", ["a"], 2)


def test_the_device_of_a_topic():
    assert device_of("posture/dev1/alerts/snooze", "posture") == "dev1"
    assert device_of("home/posture/dev1/metrics", "home/posture") == "dev1"
    assert device_of("homeassistant/status", "posture") is None and device_of("posture/x", "posture") is None


@pytest.mark.parametrize(("env", "says"), [
    ({"POSTURE_ALERTS_PARTITIONS": "0"}, "alerts.partitions: a whole number from 1 to 64"),
    ({"POSTURE_ALERTS_PARTITIONS": "65"}, "alerts.partitions: a whole number from 1 to 64"),
    ({"POSTURE_ALERTS_PARTITIONS": "two"}, "alerts.partitions"),
    ({"POSTURE_ALERTS_INSTANCE": "a/b"}, "alerts.instance: letters, digits"),
])
def test_settings_that_cannot_split_are_refused(env, says):
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert says in str(caught.value)


@pytest.mark.parametrize(("kept", "now", "says"), [
    ("alerts.db", 2, "holds the state of a single service"),
    ("alerts.db.p1", 1, "holds the state of a partition"),
])
def test_state_kept_under_another_split_is_refused(tmp_path, kept, now, says):
    (tmp_path / kept).write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "posture.cli", "alerts", "--state", str(tmp_path / "alerts.db"),
                           "--partitions", str(now), "--mqtt-port", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and says in done.stderr, done.stderr
    assert not (tmp_path / "alerts.db.lock").exists()  # a refused start leaves no lock file


@pytest.mark.parametrize("now", [1, 3, 4])
def test_state_of_another_number_of_partitions_is_refused_before_any_runs(tmp_path, now):
    """Kept for 2: under 3 or 4 partitions p0 and p1 would hold other devices (and p2, p3 start afresh), under 1
    one file would."""
    from alerts.partition import Partition
    from alerts.service import AlertService
    from alerts.state_files import check_state_layout

    def config(partitions: int):
        return load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                                "POSTURE_ALERTS_PARTITIONS": str(partitions)})

    for k in (0, 1):
        AlertService.open(config(2), partition=Partition(k, 2)).spool.close()
    check_state_layout(tmp_path / "alerts.db", 2)  # as kept
    with pytest.raises(ConfigError) as caught:
        check_state_layout(tmp_path / "alerts.db", now)
    assert f"alerts.partitions is {now}, but" in str(caught.value), caught.value
    if now > 1:  # and by a partition's own service (a file can appear between the group's check and its start)
        with pytest.raises(ConfigError) as caught:
            AlertService.open(config(now), partition=Partition(1, now))
        assert "alerts.db.p1 holds the state of 2 partition(s)" in str(caught.value)


def write_config(tmp_path: Path, port: int, influx_url: str) -> Path:
    """One file for every process: what differs (a bridge's client id and spool, an instance's name) is in flags."""
    (tmp_path / "rules.toml").write_text(BURST_RULES)
    path = tmp_path / "posture.toml"
    path.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n\n[influx]\nurl = "{influx_url}"\n'
                    f'database = "{DB}"\n\n[bridge]\nshare_group = "bridges"\nflush_interval_s = 0.1\n\n'
                    f'[alerts]\nstate_path = "{tmp_path / "alerts.db"}"\nrules_path = "{tmp_path / "rules.toml"}"\n'
                    f'timezone = "{noon_zone()}"\nha_discovery = false\npartitions = {PARTITIONS}\n')
    return path


def minutes_stored(influx) -> Counter[str]:
    rows = influx.rows("SELECT count(worn_s) FROM posture_minute GROUP BY device_id", DB)
    return Counter({row["device_id"]: row["count"] for row in rows})


@pytest.mark.timeout(400)
def test_two_bridges_and_two_alert_instances_lose_and_repeat_nothing_while_one_of_each_is_killed(
        tmp_path, broker, influx):
    """Issue 14's scale-out promise, through real Mosquitto and InfluxDB: two bridges on a share group and two alert
    instances splitting the devices; one of each killed with -9 mid-stream and started again. Every minute is stored
    once and counted once in its device's day, and each device's alert is decided once."""
    devices = [f"Fleet{i:03d}" for i in range(60)]
    messages = sitting_minutes(devices, 30)
    config = write_config(tmp_path, broker.port, influx.url)
    logs = [tmp_path / "alerts-a.log", tmp_path / "alerts-b.log"]
    phone = Phone(broker.port, "+", extra=("posture/+/today",))
    bridges = [BridgeProcess(config, f"bridge-{name}").start() for name in "ab"]
    with (running_alerts(config, logs[0], "--instance", "a") as a,
          running_alerts(config, logs[1], "--instance", "b") as b):
        try:
            # Each partition's session exists once an instance ran it, each bridge's once it connected: from then on
            # the broker keeps their messages.
            wait_for(lambda: split_between(dict(zip("ab", logs))) and all(x.connections() for x in bridges), 60,
                     lambda: f"the partitions split and the bridges connected: {[running(x) for x in logs]}")
            time.sleep(1.0)
            a_ran = running(logs[0])
            sender = threading.Thread(target=lambda: [publish(broker.port, messages[k:k + 60])
                                                      for k in range(0, len(messages), 60)] and None)
            sender.start()
            wait_for(lambda: phone.other and sum(minutes_stored(influx).values()), 60, "the first minutes handled")
            a.kill()  # kill -9 mid-stream: its partitions' sessions keep what comes, and what it had not acknowledged
            bridges[0].kill()  # and a bridge: its share waits in its session
            a.wait(10)
            wait_for(lambda: running(logs[1]) == set(range(PARTITIONS)), 30,
                     lambda: f"b to take a's partitions; b runs {running(logs[1])}")
            time.sleep(2.0)
            first_run_log = len(logs[0].read_text())
            # the same name: the same partitions come back to it
            with running_alerts(config, logs[0], "--instance", "a") as a:
                bridges[0].start()
                wait_for(lambda: split_between(dict(zip("ab", logs))) and running(logs[0]) == a_ran, 60,
                         lambda: f"the partitions split again: {[running(x) for x in logs]}")
                sender.join(120)
                assert not sender.is_alive(), "the publisher did not finish"
                wait_for(lambda: len(at_last_minute(phone, devices, messages)) == len(devices), 120,
                         lambda: f"every device's last minute: {len(at_last_minute(phone, devices, messages))} of "
                                 f"{len(devices)}\n{logs[1].read_text()[-2000:]}")
                wait_for(lambda: sum(minutes_stored(influx).values()) >= len(messages), 60,
                         lambda: f"every minute stored: {sum(minutes_stored(influx).values())} of {len(messages)}")
                stats_a, stats_b = stop(a, logs[0]), stop(b, logs[1])
        finally:
            bridge_stats = [x.stop() for x in bridges]
    phone.close()
    assert minutes_stored(influx) == dict.fromkeys(devices, 30)  # each minute stored, once
    # Every minute in its device's day, over three runs and two hand-overs: one lost would be 29.0 (one delivered
    # twice overwrites itself: minutes are kept by their start).
    for device in devices:
        today = phone.today(device)
        assert today["worn_min"] == 30.0 and today["sitting_min"] == 30.0, (device, today)
        assert today["alerts_sent"] == 1, (device, today)  # its sitting alert decided once, wherever it ran
    # At least once (as for one service): each device's one alert arrived, perhaps twice, never two different ones.
    assert sorted({alert["id"]: alert["device"] for alert in phone.alerts}.values()) == devices
    assert stats_a["errors"] == {} == stats_b["errors"]
    assert stats_a["received"] > 0 and stats_b["received"] > 0
    assert stats_a["elsewhere"] > 0 and stats_b["elsewhere"] > 0  # each partition's session sees every message
    assert "session present: True" in logs[0].read_text()[first_run_log:], "a's partitions came back without sessions"
    assert all(s.get("points_written", 0) > 0 for s in bridge_stats), bridge_stats


class _Recorder:
    """Stands in for paho's client where the group answers a record: what it would publish."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload if isinstance(payload, bytes) else payload.encode(), retain))


def _record(name: str, partitions: int, sent_s: float, retain: bool = True):
    import paho.mqtt.client as mqtt

    msg = mqtt.MQTTMessage(topic=f"posture/_alerts/members/{name}".encode())
    msg.payload, msg.retain = json.dumps({"partitions": partitions, "sent_s": sent_s}).encode(), retain
    return msg


def test_an_instance_counts_the_others_by_their_records_age_and_clears_those_long_gone(tmp_path):
    """Records carry the time they were sent: one no will cleared (its instance died while the broker was down) is
    no instance, and once old enough it is cleared at the broker; one of another number of partitions is ignored."""
    from alerts.group import MEMBER_TIMEOUT_S, STALE_RECORD_S, AlertGroup

    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                              "POSTURE_ALERTS_PARTITIONS": "4"})
    group, broker = AlertGroup(config, "me"), _Recorder()
    group.mqtt.connected.set()
    assert group._others() is None  # our own record has not come back: who else runs is not known
    now_s = time.time()
    for msg in (_record("me", 4, now_s), _record("fresh", 4, now_s - 1),
                _record("late", 4, now_s - MEMBER_TIMEOUT_S - 1), _record("ghost", 4, now_s - STALE_RECORD_S - 1),
                _record("other", 8, now_s)):
        group._on_message(broker, msg)
    assert group._others() == ({"fresh"}, ["other"])
    assert broker.published == [("posture/_alerts/members/ghost", b"", True)]
    group._on_message(broker, _cleared("fresh"))  # stopped, or its will
    assert group._others() == (set(), ["other"])
    # Not records: raised in paho's network thread, each ended this instance's view of the others.
    for payload in (b"[" * 100_000, b'{"partitions": 4, "sent_s": 1' + b"0" * 400 + b"}", b'{"partitions": "x"}',
                    b"\xff", b"null", b'{"partitions": 4, "sent_s": NaN}'):  # NaN: a member for ever, retained
        junk = _cleared("junk")
        junk.payload = payload
        group._on_message(broker, junk)
    assert group._others() == (set(), ["other"])


def _cleared(name: str):
    import paho.mqtt.client as mqtt

    msg = mqtt.MQTTMessage(topic=f"posture/_alerts/members/{name}".encode())
    msg.payload = b""
    return msg


def test_a_split_instance_refuses_bad_settings_before_it_joins(tmp_path):
    """Like one service: an instance that joined and then could run no partition would hold its share back."""
    from alerts.group import AlertGroup

    env = {"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"), "POSTURE_ALERTS_PARTITIONS": "2"}
    with pytest.raises(ConfigError) as caught:
        AlertGroup.open(load_config(env=env | {"POSTURE_ALERTS_TIMEZONE": "Mars/Base"}))
    assert "alerts.timezone: unknown time zone" in str(caught.value)
    with pytest.raises(ConfigError):
        AlertGroup.open(load_config(env=env | {"POSTURE_ALERTS_RULES_PATH": str(tmp_path / "missing.toml")}))


def test_state_files_with_uri_characters_in_their_name_are_read(tmp_path):
    from alerts.partition import Partition
    from alerts.service import AlertService
    from alerts.state_files import check_state_layout

    path = tmp_path / "odd?name#%.db"
    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(path), "POSTURE_ALERTS_PARTITIONS": "2"})
    AlertService.open(config, partition=Partition(0, 2)).spool.close()
    with pytest.raises(ConfigError) as caught:
        check_state_layout(path, 3)
    assert "of 2" in str(caught.value)
    assert sorted(f.name for f in tmp_path.iterdir() if not f.name.endswith(("-wal", "-shm"))) == [path.name + ".p0"]


def test_a_partition_with_a_corrupt_device_record_runs_its_other_devices(tmp_path, caplog):
    """A partition's service reads its state file as one service does: a truncated record of one device kept the
    partition from starting at all ("partition 0 cannot start: Unterminated string …", every 10 s)."""
    from alerts.partition import Partition
    from alerts.service import AlertService
    from service_io.spool import Spool

    path = tmp_path / "alerts.db"
    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(path), "POSTURE_ALERTS_PARTITIONS": "2"})
    spool = Spool(Path(f"{path}.p0"))
    spool.put([], meta={"partitions": b"2", "device/Good": b'{"day": "2026-11-20"}', "device/Bad": b'{"day": "20'})
    spool.close()
    service = AlertService.open(config, partition=Partition(0, 2))
    service.spool.close()
    assert set(service.engine.devices) == {"Good"} and service.stats.unreadable_records == 1
    said = [r.getMessage() for r in caplog.records if "'Bad'" in r.getMessage()]
    assert len(said) == 1 and f"{path}.p0" in said[0], said


def test_a_refused_snooze_names_the_look_alike_of_another_partition(tmp_path, caplog):
    """`desksensor` and `DeskSensor` are in partitions 0 and 2 of 4: the partition that refuses the snooze knows the
    device it resembles from the other partition's messages, which every partition receives (acknowledged unread)."""
    from alerts.partition import Partition
    from alerts.service import AlertService

    config = load_config(env={"POSTURE_ALERTS_STATE_PATH": str(tmp_path / "alerts.db"),
                              "POSTURE_ALERTS_PARTITIONS": "4"})
    assert (partition_of("desksensor", 4), partition_of("DeskSensor", 4)) == (0, 2)
    service = AlertService.open(config, partition=Partition(0, 4))
    service.spool.close()
    for topic in ("posture/DeskSensor/status", "posture/_alerts/availability", "posture/desksens/alerts/snooze"):
        service._note_elsewhere(topic)
    assert service._elsewhere_seen == {"DeskSensor"}  # a device's own topics only
    service._refuse_snooze("posture/desksensor/alerts/snooze", "desksensor")
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "did you mean 'DeskSensor'?" in said[0], said
    assert service.stats.malformed == {"snooze": 1}
