"""The gateway with a disk that takes no writes for a while, through a real Mosquitto: nothing it measured is lost."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from contract.messages import payload, topic
from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import load_scenario
from gateway.publisher import DevicePublisher, device_file
from gateway.service import Device, _process
from pipeline.calibration import Calibration
from pipeline.events import CalibrationEvent, MinuteMetrics
from pipeline.live import LiveClock
from pipeline.stream import PosturePipeline
from sensor.batching import BatchCollector
from sensor.stream import ImuBatch
from service_io.config import Config, MqttSettings
from service_io.spool import Spool
from support.mqtt import client, start_or_fail, wait_for
from support.servers import SecuredMosquitto, make_password_file

FULL_S = (0.0, 150.0)  # sensor time the disk takes no writes: the calibration (at ~10 s) and two minutes


def _listen(broker, subscription: str, got: list[dict], **login):
    """A client that puts each result (not status, not live) it gets into `got`, once subscribed; login: client()'s
    user and client_id, for a broker with passwords."""
    listener = client(broker.port, **login)
    listener.on_message = lambda c, u, m: got.append(json.loads(m.payload)) if m.topic.split("/")[-1] not in (
        "status", "live") else None
    subscribed = threading.Event()
    listener.on_subscribe = lambda *args: subscribed.set()
    listener.subscribe(subscription, 1)
    assert subscribed.wait(10), "no SUBACK"
    return listener


def test_a_disk_that_takes_no_writes_holds_the_results_in_memory_and_loses_none(tmp_path, broker, caplog):
    """A full disk made the spool's write raise out of the gateway's batch handling: that batch's events and
    minutes were gone for good (a tmpfs filled for 140 s of a 5-minute office day: 11 of 16 results lost) and the
    error went up into the BLE callback or the main loop. Now they wait in memory, in order, go to the broker from
    there meanwhile, and the rest into the spool once it takes writes again; the calibration is saved once it can
    be. The spool is made read-only with SQLite's own switch (PRAGMA query_only): every write fails as on a full
    disk (puts, and deletes after the PUBACKs)."""
    caplog.set_level(logging.WARNING, logger="posture.gateway")
    spool_dir = tmp_path / "spool"
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port))
    publisher = DevicePublisher.open(config, "Full", spool_dir, "Full")
    got: list[dict] = []
    listener = _listen(broker, "posture/Full/#", got)
    publisher.start()
    wait_for(publisher.connected.is_set, 10, "the publisher connected")

    sim = SensorSimulation(load_scenario("office-short"), seed=1)
    reference, expected = PosturePipeline(), []
    device = Device(PosturePipeline(), publisher, BatchCollector(1.0, 100.0), LiveClock(1.0, 1.0))
    calibration_tmp = spool_dir / "Full.calibration.tmp"
    held_most = 0
    got_in_spell = measured_in_spell = 0

    def all_sent() -> bool:
        publisher.pump()  # as the gateway's loop does every 50 ms
        return len(got) >= len(expected)

    try:
        for ch in sim.chunks(max_samples=100):
            full = FULL_S[0] <= ch.t_s[0] < FULL_S[1]
            with publisher.results.spool._lock:
                publisher.results.spool._db.execute(f"PRAGMA query_only = {int(full)}")
            if full:
                calibration_tmp.mkdir(exist_ok=True)  # where the calibration is written first: no file goes there
            elif calibration_tmp.is_dir():
                calibration_tmp.rmdir()
            out = reference.update(ch.t_s, ch.acc_g, ch.gyro_dps)
            expected += [json.loads(json.dumps(payload("Full", item))) for item in [*out.events, *out.metrics]]
            _process(device, spool_dir, ImuBatch("Full", ch.t_s, ch.t_s, ch.acc_g, ch.gyro_dps))
            publisher.pump()
            held_most = max(held_most, publisher.results.held)
            if full:
                assert not (spool_dir / "Full.calibration.json").exists()
                measured_in_spell = len(expected)
                got_in_spell = len(got)
        wait_for(all_sent, 20, lambda: f"{len(expected)} results; got {len(got)}")
    finally:
        publisher.stop(offline=False)
        listener.loop_stop()
    assert held_most > 0
    # The spell's results went to the broker from memory while it lasted, not only once the disk took them again
    assert publisher.results.sent_from_memory > 5 and got_in_spell > measured_in_spell / 2 > 5
    assert got == expected  # each once, in the order measured (QoS 1 on one connection)
    assert publisher.results.held == 0 and publisher.results.held_dropped == 0
    saved = Calibration.from_dict(json.loads((spool_dir / "Full.calibration.json").read_text()))
    assert device.pipeline.calibration is not None
    assert (saved.r_sensor_trunk == device.pipeline.calibration.r_sensor_trunk).all()
    said = [r.getMessage() for r in caplog.records]
    assert sum("held in memory until it takes them" in m for m in said) == 1  # at most one line a minute
    assert any("the spool takes results again" in m for m in said)
    assert sum("calibration not saved" in m for m in said) == 1 and any(m.endswith("calibration saved") for m in said)


def test_results_still_held_when_the_gateway_stops_are_counted_as_lost(tmp_path, broker, caplog):
    """The disk still full at a clean stop: what waits in memory cannot outlive the process. Said, with the count."""
    caplog.set_level(logging.WARNING, logger="posture.gateway")
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port))
    publisher = DevicePublisher.open(config, "Full", tmp_path / "spool", "Full")
    publisher.start()
    with publisher.results.spool._lock:
        publisher.results.spool._db.execute("PRAGMA query_only = 1")
    sim = SensorSimulation(load_scenario("office-short"), seed=1)
    pipeline, results = PosturePipeline(), []
    for ch in sim.chunks(max_samples=6000):
        out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        results += [*out.events, *out.metrics]
    publisher.submit(results[:5])
    assert publisher.results.held == 5
    publisher.stop(offline=False)
    assert any("5 results lost: the spool could not take them" in r.getMessage() for r in caplog.records)


def _unopenable(tmp_path, broker) -> tuple[Path, DevicePublisher]:
    """A publisher whose spool SQLite cannot open: its path is a directory (until the test removes it)."""
    spool_dir = tmp_path / "spool"
    (spool_dir / "Full.spool").mkdir(parents=True)
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port))
    return spool_dir, DevicePublisher.open(config, "Full", spool_dir, "Full")


def test_a_spool_that_cannot_be_opened_at_start_is_opened_later_and_loses_nothing(tmp_path, broker, caplog):
    """A gateway restarted while the disk is full cannot open its spool (SQLite cannot create the write-ahead log):
    it stopped with a traceback, measuring nothing, again at every restart. Now it measures, holds the results,
    and opens the spool once it can. Here the spool's path is a directory until the results are in."""
    caplog.set_level(logging.WARNING, logger="posture.gateway")
    spool_dir, publisher = _unopenable(tmp_path, broker)
    got: list[dict] = []
    listener = _listen(broker, "posture/Full/metrics", got)
    publisher.start()
    sim = SensorSimulation(load_scenario("office-short"), seed=1)
    pipeline, minutes = PosturePipeline(), []
    for ch in sim.chunks(max_samples=6000):
        minutes += pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps).metrics
    try:
        publisher.submit(minutes)
        publisher.pump()
        assert publisher.results.spool is None and publisher.results.held == len(minutes) > 2
        (spool_dir / "Full.spool").rmdir()

        def all_sent() -> bool:
            publisher.pump()
            return len(got) >= len(minutes)

        wait_for(all_sent, 20, lambda: f"{len(minutes)} minutes; got {len(got)}")
    finally:
        publisher.stop(offline=False)
        listener.loop_stop()
    assert got == [json.loads(json.dumps(payload("Full", m))) for m in minutes]
    assert any("cannot open" in r.getMessage() for r in caplog.records)


def test_a_spool_the_disk_never_lets_open_still_delivers_every_result(tmp_path, broker, caplog):
    """An SD card remounted read-only stays so until someone notices: the results waited in memory for a disk that
    never came back, and not one minute or event reached the broker, while the live state and the status went out
    (the Live dashboard looked fine). Now they go to the broker straight from memory, in order, each once, and a stop
    after the broker took them loses none. Here the spool's path is a directory for the whole run."""
    caplog.set_level(logging.WARNING, logger="posture.gateway")
    spool_dir, publisher = _unopenable(tmp_path, broker)
    got: list[dict] = []
    listener = _listen(broker, "posture/Full/#", got)
    publisher.start()
    wait_for(publisher.connected.is_set, 10, "the publisher connected")
    sim = SensorSimulation(load_scenario("office-short"), seed=1)
    pipeline, expected = PosturePipeline(), []
    try:
        for ch in sim.chunks(max_samples=1000):
            out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
            results = [*out.events, *out.metrics]
            expected += [json.loads(json.dumps(payload("Full", item))) for item in results]
            publisher.submit(results)
            publisher.pump()

        def all_sent() -> bool:
            publisher.pump()
            return publisher.backlog == 0

        wait_for(all_sent, 20, lambda: f"{len(expected)} results; {publisher.backlog} not acknowledged")
    finally:
        publisher.stop(offline=False)
        listener.loop_stop()
    assert publisher.results.spool is None and len(expected) > 10
    assert publisher.results.sent_from_memory == len(expected)
    wait_for(lambda: len(got) >= len(expected), 10, lambda: f"{len(expected)} results; got {len(got)}")
    assert got == expected
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot open" in m for m in said) and not any("results lost" in m for m in said)
    assert not any(" 0 results held" in m for m in said)  # nothing waits: not said as if something did


def test_what_a_spool_left_unsent_goes_before_what_waits_in_memory_when_the_disk_will_not_open_it(tmp_path, broker):
    """A gateway stopped while the broker was away leaves its unsent results in the spool (here a minute sent
    unfinished at the stop); the next start finds the disk read-only (an SD card mounted so at boot), SQLite cannot
    open the file to write, and the results of this run went to the broker straight from memory: the minute made whole
    by this run first, and the stop's unfinished copy only when the disk was put right, after it; the bridge and the
    alert service keep the last copy of a minute, so the unfinished one was stored over the whole one. Now the file
    is read as it is, read-only, and what it holds goes first; once it opens to write, what the broker took of it is
    deleted, not sent again. Here a directory where SQLite puts its write-ahead log keeps it from opening to write,
    as a disk that takes no writes does."""
    spool_dir = tmp_path / "spool"
    path = device_file(spool_dir, "Full", ".spool")
    start_s = 1_796_500_000.0 - 1_796_500_000.0 % 60
    unfinished, whole = MinuteMetrics(start_s, worn_s=20.0), MinuteMetrics(start_s, worn_s=60.0)
    later = [MinuteMetrics(start_s + 60 * i, worn_s=60.0) for i in (1, 2)]
    left = Spool(path)  # the last run's, stopped with the broker away
    left.put([(topic("posture", "Full", "metrics"), json.dumps(payload("Full", unfinished)).encode())])
    left.close()
    (spool_dir / "Full.spool-wal").mkdir()
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port))
    publisher = DevicePublisher.open(config, "Full", spool_dir, "Full")
    got: list[dict] = []
    listener = _listen(broker, "posture/Full/metrics", got)
    publisher.start()
    wait_for(publisher.connected.is_set, 10, "the publisher connected")
    try:
        publisher.submit([whole, *later])

        def memory_sent() -> bool:
            publisher.pump()  # as the gateway's loop does every 50 ms
            return publisher.results.sent_from_memory == 3

        wait_for(memory_sent, 20, lambda: f"got {[(m['ts'], m['worn_s']) for m in got]}")
        (spool_dir / "Full.spool-wal").rmdir()  # the disk put right: the file opens to write

        def spool_drained() -> bool:
            publisher.pump()
            spool = publisher.results.spool
            return spool is not None and len(spool) == 0 and len(got) >= 4  # read-only, it keeps what was taken

        wait_for(spool_drained, 20, lambda: f"got {[(m['ts'], m['worn_s']) for m in got]}")
        publisher.pump()
    finally:
        publisher.stop(offline=False)
        listener.loop_stop()
    expected = [json.loads(json.dumps(payload("Full", m))) for m in (unfinished, whole, *later)]
    assert got == expected  # in order, each once: the whole minute last
    assert not publisher.results.read_only


def test_results_the_broker_took_but_the_disk_will_not_let_go_of_are_no_backlog(tmp_path, broker):
    """A disk that turned read-only after the results went into the spool: the broker took them all, the spool could
    not delete them, and the backlog still counted them, so a stop waited its whole final flush (10 s) for results
    already sent."""
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port))
    publisher = DevicePublisher.open(config, "Full", tmp_path / "spool", "Full")
    got: list[dict] = []
    listener = _listen(broker, "posture/Full/#", got)
    publisher.start()
    sim = SensorSimulation(load_scenario("office-short"), seed=1)
    pipeline, results = PosturePipeline(), []
    for ch in sim.chunks(max_samples=6000):
        out = pipeline.update(ch.t_s, ch.acc_g, ch.gyro_dps)
        results += [*out.events, *out.metrics]
    try:
        wait_for(publisher.connected.is_set, 10, "the publisher connected")
        publisher.submit(results)
        with publisher.results.spool._lock:
            publisher.results.spool._db.execute("PRAGMA query_only = 1")
        wait_for(lambda: (publisher.pump(), len(got) >= len(results))[1], 20, lambda: f"got {len(got)}")
        wait_for(lambda: (publisher.pump(), publisher.sender.inflight == 0)[1], 10, "every PUBACK")
        assert publisher.sender.undeleted == len(results) == len(publisher.results) > 5
        assert publisher.backlog == 0
    finally:
        publisher.stop(offline=False)
        listener.loop_stop()


GATEWAY_ACL = ("user gw\ntopic write posture/Full/status\ntopic write posture/Full/live\n"
               "topic write posture/Full/metrics\n{more}\nuser reader\ntopic read #\n")


def refused_publisher(tmp_path: Path, disk: str):
    """A broker whose ACL refuses the events topic, a reader of every result, and a publisher of device Full."""
    acl = tmp_path / "acl"
    acl.write_text(GATEWAY_ACL.format(more=""))
    passwords = {"gw": "gw-Secret-1", "reader": "rd-Secret-2"}
    broker = start_or_fail(SecuredMosquitto(tmp_path / "mosquitto", acl_file=acl,
                                            password_file=make_password_file(tmp_path / "pw", passwords)))
    spool_dir = tmp_path / "spool"
    if disk == "unopenable":  # no spool at all: a directory where its file should be
        (spool_dir / "Full.spool").mkdir(parents=True)
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port, username="gw", password=passwords["gw"]))
    publisher = DevicePublisher.open(config, "Full", spool_dir, "Full")
    if disk == "read-only":
        writable(publisher, False)
    publisher.results.retry_refused_s = 0.3
    got: list[dict] = []
    reader = _listen(broker, "posture/Full/#", got, user=("reader", passwords["reader"]), client_id="reader")
    return broker, acl, publisher, reader, got


def writable(publisher: DevicePublisher, yes: bool) -> None:
    """The spool's disk takes writes (yes) or refuses them, as a read-only one does."""
    with publisher.results.spool._lock:
        publisher.results.spool._db.execute(f"PRAGMA query_only = {0 if yes else 1}")


def pumped(publisher: DevicePublisher, done):
    return lambda: (publisher.pump(), done())[1]


@pytest.mark.parametrize("disk", ["read-only", "unopenable"])
def test_a_result_sent_from_memory_that_the_broker_refuses_is_kept_said_and_sent_again(tmp_path, caplog, disk):
    """MQTT 5: a broker may refuse a PUBLISH (Mosquitto: 0x87 Not authorized, for a topic the account's ACL does not
    allow). Results sent from memory while the disk refused the spool were forgotten at such a PUBACK as at any other:
    lost without a word (with no spool open at all, nothing even listened for the refusal). Now it is counted, said in
    one line, kept in memory and its topic held — the others go on — and sent again, oldest alone first, after
    the wait the spool's sender keeps; once the ACL is put right it arrives, in order."""
    caplog.set_level(logging.WARNING, logger="posture.gateway")
    broker, acl, publisher, reader, got = refused_publisher(tmp_path, disk)
    t0_s = 1_796_500_000.0 - 1_796_500_000.0 % 60
    results = [CalibrationEvent(t0_s + 1, "recalibrate", "first"), MinuteMetrics(t0_s, worn_s=60.0),
               CalibrationEvent(t0_s + 2, "recalibrate", "second")]
    expected = [json.loads(json.dumps(payload("Full", item))) for item in results]
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 10, "the publisher connected")
        publisher.submit(results)
        assert publisher.results.refusing
        wait_for(pumped(publisher, lambda: publisher.results.refused >= 1 and len(got) >= 1), 10, lambda: f"got {got}")
        assert got == [expected[1]]  # the allowed topic goes on
        assert publisher.results.held == 2  # the refused event kept, the one behind it held with it
        assert publisher.backlog == 0  # a stop does not wait for them: they go again only after the wait
        said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(said) == 1 and "posture/Full/events" in said[0] and "Not authorized" in said[0], said
        acl.write_text(GATEWAY_ACL.format(more="topic write posture/Full/events\n"))
        os.kill(broker.proc.pid, signal.SIGHUP)  # the ACL put right: Mosquitto reads it again
        wait_for(pumped(publisher, lambda: len(got) >= 3), 20, lambda: f"got {got}")
        publisher.pump()
    finally:
        publisher.stop(offline=False)
        reader.loop_stop()
        broker.kill()
    assert got == [expected[1], expected[0], expected[2]]  # each once, the events in their order
    assert publisher.results.held == 0 and publisher.results.sent_from_memory == 3


def test_a_refusal_of_a_result_the_disk_then_took_is_not_held_against_its_topic_later(tmp_path):
    """A result refused from memory, then put in the spool when the disk came back, is the spool's sender's to send;
    the refusal was kept here too, and when the disk refused writes again later, the topic's next result waited as
    refused (not awaited by a stop) and went alone as a probe. Now it goes as any other."""
    broker, acl, publisher, reader, got = refused_publisher(tmp_path, "read-only")
    t0_s = 1_796_500_000.0 - 1_796_500_000.0 % 60
    first, second = CalibrationEvent(t0_s + 1, "recalibrate", "first"), CalibrationEvent(t0_s + 2, "recalibrate", "2")
    publisher.start()
    try:
        wait_for(publisher.connected.is_set, 10, "the publisher connected")
        publisher.submit([first])
        wait_for(pumped(publisher, lambda: publisher.results.refused >= 1), 10, "the refusal")
        writable(publisher, True)
        publisher.results.flush(force=True)  # the disk back: the refused result goes into the spool
        assert publisher.results.held == 0 and len(publisher.results.spool) == 1
        acl.write_text(GATEWAY_ACL.format(more="topic write posture/Full/events\n"))
        os.kill(broker.proc.pid, signal.SIGHUP)
        time.sleep(1.0)  # Mosquitto has read it again before the spool's sender sends (a refusal there waits 60 s)
        wait_for(pumped(publisher, lambda: len(got) >= 1), 30, lambda: f"got {got}")
        writable(publisher, False)
        publisher.submit([second])
        assert publisher.results.refusing and publisher.results.waiting == 0
        wait_for(pumped(publisher, lambda: len(got) >= 2), 10, lambda: f"got {got}")
    finally:
        publisher.stop(offline=False)
        reader.loop_stop()
        broker.kill()
    assert got == [json.loads(json.dumps(payload("Full", item))) for item in (first, second)]
