"""SpooledSender against a real Mosquitto: everything spooled reaches the broker once, and a pump with nothing
new to send does not query the spool (the gateway pumps every device every 50 ms)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from service_io.spool import Row, Spool, SpoolError
from service_io.spooled_sender import SpooledSender
from support.mqtt import client, start_or_fail, wait_for
from support.servers import SecuredMosquitto, make_password_file
from support.spools import DeleteRefusingSpool

PASSWORDS = {"gw": "gw-Secret-1", "reader": "rd-Secret-2"}


class CountingSpool(Spool):
    """The real spool, counting its looks."""

    peeks = 0

    def peek(self, n: int, after_id: int = 0, skip_keys: tuple[str, ...] = ()) -> list[Row]:
        self.peeks += 1
        return super().peek(n, after_id, skip_keys)


def _client(port: int, client_id: str, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _pump_until(sender: SpooledSender, done, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "not delivered in time"
        sender.pump()
        time.sleep(0.01)


def test_everything_spooled_arrives_once_and_a_quiet_pump_does_not_look(broker, tmp_path):
    got: list[bytes] = []
    lock = threading.Lock()
    phone = _client(broker.port, "phone")
    subscribed = threading.Event()
    phone.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(msg.payload)

    phone.on_message = on_message
    phone.subscribe("t/#", 1)
    assert subscribed.wait(10)
    sender_client = _client(broker.port, "sender")
    spool = CountingSpool(tmp_path / "sender.spool")
    sender = SpooledSender(sender_client, spool, max_inflight=10)
    try:
        # More than max_inflight at once: a full look must be followed by another.
        spool.put([("t/a", str(i).encode()) for i in range(35)])
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        looks = spool.peeks
        for _ in range(50):  # nothing new: no query
            sender.pump()
        assert spool.peeks == looks
        # Something new after the drain is sent at the next pump, not stranded.
        spool.put([("t/b", b"late")])
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        deadline = time.monotonic() + 10
        while len(got) < 36 and time.monotonic() < deadline:
            time.sleep(0.05)
        with lock:
            assert sorted(got) == sorted([str(i).encode() for i in range(35)] + [b"late"])
    finally:
        for c in (phone, sender_client):
            c.loop_stop()
            c.disconnect()
        spool.close()


def test_what_was_handed_to_paho_while_the_broker_was_down_is_forgotten_once_acknowledged(broker, tmp_path):
    """paho keeps a message published with no connection (rc NO_CONN) and sends it on the reconnect, but that
    message's is_published() raises for ever: each pump after the broker came back raised, and so did a clean stop."""
    sender_client = _client(broker.port, "sender")
    sender_client.reconnect_delay_set(0.1, 0.5)
    spool = Spool(tmp_path / "sender.spool")
    sender = SpooledSender(sender_client, spool, max_inflight=10)
    try:
        spool.put([("t/a", b"first")])  # taken: the topic's items go together (before, one at a time)
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        broker.stop()
        wait_for(lambda: not sender_client.is_connected(), 10, "paho to notice the broker going")
        spool.put([("t/a", str(i).encode()) for i in range(5)])
        sender.pump()
        assert sender.inflight == 5 and len(spool) == 5  # with paho, to go at the reconnect
        broker.start()
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        spool.put([("t/a", b"last")])
        sender.pump()
        connected = threading.Event()
        connected.set()
        sender.settle(connected, 10.0)
        assert len(spool) == 0 and sender.inflight == 0
    finally:
        sender_client.loop_stop()
        sender_client.disconnect()
        spool.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_a_message_in_flight_when_the_link_drops_goes_again_only_with_the_life_it_has_left(broker, tmp_path,
                                                                                          protocol):
    """paho sends what the broker had not acknowledged again on the reconnect, as the packet was first made: an
    alert with 5 s of life reached a phone 15.2 s after it was decided (a helper's probe, broker down 12 s). At the
    reconnect one past its expiry now leaves paho's queue, counted as expired, and another goes with what is left
    of its life (MQTT 5; 3.1.1 carries no expiry)."""
    sender_client = _client(broker.port, "sender", protocol)
    spool = Spool(tmp_path / "sender.spool")
    sender = SpooledSender(sender_client, spool, max_inflight=10, mqtt5=protocol == mqtt.MQTTv5)
    sender_client.on_connect = lambda *_: sender.reconnected()  # as the alert service's on_connected does
    now_s = time.time()
    spool.put([("t/short", b"short", now_s + 1.0), ("t/long", b"long", now_s + 60.0)])
    os.kill(broker.proc.pid, signal.SIGSTOP)  # takes the packets, answers none
    try:
        sender.pump()
        assert sender.inflight == 2
        time.sleep(1.5)  # the short one's life ends with the broker away
    finally:
        broker.kill()
    sender_client.loop_stop()  # the reader is on the restarted broker first: the sender reconnects after it
    broker.start()
    got: list[mqtt.MQTTMessage] = []
    reader = client(broker.port, client_id="reader")
    subscribed = threading.Event()
    reader.on_subscribe = lambda *_: subscribed.set()
    reader.on_message = lambda _c, _u, msg: got.append(msg)
    reader.subscribe("t/#", 1)
    try:
        assert subscribed.wait(10)
        sender_client.reconnect()
        sender_client.loop_start()
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        wait_for(lambda: got, 10, "the long one")
        assert [m.payload for m in got] == [b"long"]  # the short one, sent first, would have come first
        if protocol == mqtt.MQTTv5:  # what was left, not the 60 s it was first sent with
            assert got[0].properties.MessageExpiryInterval <= 59
        assert sender.expired == 1
    finally:
        for c in (reader, sender_client):
            c.loop_stop()
            c.disconnect()
        spool.close()


ACL = "user gw\ntopic write posture/+/metrics\n{more}\nuser reader\ntopic read #\n"


@contextlib.contextmanager
def _refusing_broker(tmp_path, inflight: int = 10, retry_refused_s: float = 0.5, across_topics: bool = True):
    """Mosquitto whose ACL lets `gw` write posture/+/metrics only, a reader of everything, and a SpooledSender as
    `gw`: yields (acl file, broker, what the reader got as (topic, payload), spool, sender)."""
    acl = tmp_path / "acl"
    acl.write_text(ACL.format(more=""))
    broker = start_or_fail(SecuredMosquitto(tmp_path / "mosquitto", acl_file=acl,
                                            password_file=make_password_file(tmp_path / "pw", PASSWORDS)))
    got: list[tuple[str, bytes]] = []
    reader = client(broker.port, user=("reader", PASSWORDS["reader"]), client_id="reader")
    subscribed = threading.Event()
    reader.on_subscribe = lambda *_: subscribed.set()
    reader.on_message = lambda _c, _u, msg: got.append((msg.topic, msg.payload))
    reader.subscribe("#", 1)
    assert subscribed.wait(10)
    sender_client = client(broker.port, user=("gw", PASSWORDS["gw"]), client_id="gw", max_inflight=100)
    spool = Spool(tmp_path / "sender.spool")
    try:
        yield acl, broker, got, spool, SpooledSender(sender_client, spool, max_inflight=inflight,
                                                     retry_refused_s=retry_refused_s, across_topics=across_topics)
    finally:
        for c in (reader, sender_client):
            c.loop_stop()
            c.disconnect()
        spool.close()
        broker.kill()


def _allow_office(acl, broker) -> None:
    """The ACL put right: Mosquitto reads it again on SIGHUP."""
    acl.write_text(ACL.format(more="topic write office/+/metrics\n"))
    os.kill(broker.proc.pid, signal.SIGHUP)


def test_a_message_the_broker_refuses_is_kept_said_and_sent_again_in_order(tmp_path, caplog):
    """MQTT 5: a PUBACK with a failure reason (Mosquitto: 0x87 Not authorized, for a topic the account's ACL does not
    allow) acknowledges nothing. The item was deleted as delivered, silently: a gateway with mqtt.prefix "office"
    under an ACL for "posture/..." lost every result. Now it stays in the spool, is counted and said, and its topic
    waits: newer items of that topic are held behind it (a minute's later record must not be overtaken by its
    earlier one), other topics go on, and the ACL put right (Mosquitto reloads it on SIGHUP) delivers them in order
    without a restart."""
    with _refusing_broker(tmp_path, retry_refused_s=0.5) as (acl, broker, got, spool, sender):
        spool.put([("posture/Desk/metrics", b"allowed"), ("office/Desk/metrics", b"refused"),
                   ("posture/Desk/metrics", b"allowed too")])
        with caplog.at_level(logging.WARNING, logger="posture.spool"):
            _pump_until(sender, lambda: sender.refused >= 1 and sender.inflight == 0)
        assert [body for _, _, body, _ in spool.peek(10)] == [b"refused"]  # kept; the two allowed ones forgotten
        assert sender.waiting == 1
        assert any("refused messages 1 time" in r.getMessage() and "office/Desk/metrics" in r.getMessage()
                   and "Not authorized" in r.getMessage() for r in caplog.records), caplog.text
        spool.put([("office/Desk/metrics", b"newer"), ("posture/Desk/metrics", b"meanwhile")])
        _pump_until(sender, lambda: sender.refused >= 2 and len(spool) == 2)  # sent again, refused again
        assert [body for _, _, body, _ in spool.peek(10)] == [b"refused", b"newer"]  # the newer one held behind
        _allow_office(acl, broker)
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        wait_for(lambda: len(got) == 5, 10, lambda: f"five messages, got {got}")
        office = [body for topic, body in got if topic.startswith("office/")]
        assert office == [b"refused", b"newer"]  # in the order measured
        assert sorted(body for topic, body in got if topic.startswith("posture/")) == [b"allowed", b"allowed too",
                                                                                        b"meanwhile"]


@pytest.mark.parametrize("across_topics", [True, False])
def test_a_topic_goes_one_message_at_a_time_until_the_broker_takes_one(tmp_path, across_topics):
    """Ten items of a topic not yet taken went together; the broker refused the first ones and took the later ones
    once the ACL was put right meanwhile (or paho sent them again to a restarted broker with the new ACL), and the
    refused ones waited for the probe, after them (a helper's probe: items 65-100 arrived before 1-64). Until the
    broker takes one of a topic's items, only one is with it; a refusal makes the topic untaken again."""
    with _refusing_broker(tmp_path, retry_refused_s=0.3, across_topics=across_topics) as (acl, broker, got, spool,
                                                                                          sender):
        spool.put([(f"posture/{d}/metrics", f"{d}{i}".encode()) for d in ("A", "B", "C") for i in range(2)])
        spool.put([("office/Desk/metrics", f"o{i}".encode()) for i in range(30)]
                  + [("posture/Desk/metrics", f"p{i}".encode()) for i in range(30)])
        sender.pump()
        # The first item of each topic, alone. A second waits, and with it what comes after (a gateway's events and
        # minutes keep their order), or (the alert service's) the look goes on past it: it stopped there, and a
        # backlog of two alerts a device drained a device a pump, 0.8 s became 10 s (a helper's probe).
        assert sender.inflight == (1 if across_topics else 4)  # A0; or A0, B0, C0, o0 of those looked at
        _pump_until(sender, lambda: sender.refused >= 1 and sender.inflight == 0)
        assert sender.refused == 1 and sender.waiting == 30
        _pump_until(sender, lambda: len(spool) == 30)  # the other topics: one alone, then together
        _allow_office(acl, broker)
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
        wait_for(lambda: len(got) == 66, 10, lambda: f"66 messages, got {len(got)}")
        if across_topics:  # the refused topic's aside, all in the order spooled
            assert [b for _, b in got if not b.startswith(b"o")] == \
                   [f"{d}{i}".encode() for d in "ABC" for i in range(2)] + [f"p{i}".encode() for i in range(30)]
        for prefix in "opABC":
            assert [b for _, b in got if b.startswith(prefix.encode())] == \
                   [f"{prefix}{i}".encode() for i in range(30 if prefix in "op" else 2)]


def test_a_probe_that_expires_while_the_link_is_down_does_not_leave_its_topic_held_for_good(tmp_path):
    """The probe of a held topic, with the broker when the link dropped, expired before the reconnect: taken out of
    paho's queue as expired, it stayed the topic's probe, and no other went (a helper's probe: 4 later alerts kept
    until a restart, with the ACL put right)."""
    with _refusing_broker(tmp_path, retry_refused_s=0.3) as (acl, broker, got, spool, sender):
        sender.client.on_connect = lambda *_: sender.reconnected()  # as the alert service's on_connected does
        spool.put([("office/Desk/metrics", b"short-lived", time.time() + 3.0)])
        _pump_until(sender, lambda: sender.refused >= 1 and sender.inflight == 0)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        _pump_until(sender, lambda: sender.inflight == 1)  # the probe, with the broker
        acl.write_text(ACL.format(more="topic write office/+/metrics\n"))
        broker.kill()
        time.sleep(max(0.0, spool.peek(1)[0][3] - time.time()) + 0.2)  # its life ends while the broker is away
        broker.start()
        got_now: list[bytes] = []
        reader = client(broker.port, user=("reader", PASSWORDS["reader"]), client_id="reader-2")
        subscribed = threading.Event()
        reader.on_subscribe = lambda *_: subscribed.set()
        reader.on_message = lambda _c, _u, msg: got_now.append(msg.payload)
        reader.subscribe("#", 1)
        try:
            assert subscribed.wait(10)
            spool.put([("office/Desk/metrics", f"later{i}".encode(), time.time() + 600) for i in range(4)])
            _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0)
            wait_for(lambda: len(got_now) == 4, 10, lambda: f"4 messages, got {got_now}")
        finally:
            reader.loop_stop()
            reader.disconnect()
        assert got_now == [f"later{i}".encode() for i in range(4)] and sender.expired == 1


def test_a_held_topic_is_tried_with_one_message_a_round_and_holds_up_no_other(tmp_path):
    """A topic refused with thousands of messages spooled (a day of results under a wrong prefix): a retry round
    sends its oldest message alone, not a burst (an ACL fixed mid-burst took newer ones before the older, refused
    one); the other topics' messages go at once, not after pumps stepping over the held ones; and once the broker
    takes the topic, all of it follows in order."""
    held = [("office/Desk/metrics", str(i).encode()) for i in range(2000)]
    with _refusing_broker(tmp_path, retry_refused_s=0.3) as (acl, broker, got, spool, sender):
        spool.put(held)
        _pump_until(sender, lambda: sender.refused >= 1 and sender.inflight == 0)
        first_round = sender.refused
        assert 1 <= first_round <= 10 and sender.waiting == 2000
        spool.put([("posture/Desk/metrics", b"other")])
        pumps = 0
        while len(spool) > 2000:
            sender.pump()
            pumps += 1
            time.sleep(0.01)
            assert pumps < 50, "the other topic's message waits behind the held ones"
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # a few retry rounds
            sender.pump()
            time.sleep(0.01)
        rounds = sender.refused - first_round
        assert 1 <= rounds <= 3, rounds  # 0.3 s, 0.6 s, 1.2 s: one message each
        _allow_office(acl, broker)
        _pump_until(sender, lambda: len(spool) == 0 and sender.inflight == 0, timeout_s=60)
        wait_for(lambda: len(got) == 2001, 20, lambda: f"2001 messages, got {len(got)}")
        assert [body for topic, body in got if topic.startswith("office/")] == [body for _, body in held]
        assert sender.waiting == 0


def test_a_disk_that_refuses_deletes_loses_no_refusal_and_sends_nothing_twice(tmp_path):
    """The gateway pumps on through a full disk (its SpoolError is caught and said), and so does the sending. A
    delete that failed there lost the bookkeeping of its acknowledgements: a probe the broker took left its topic
    held for good, a refusal in the same batch was forgotten (a newer message overtook it), and an acknowledged
    message whose delete failed went out again when another topic was freed. The spool is made read-only with
    SQLite's own switch, as a full disk."""

    def disk_full(full: bool) -> None:
        with spool._lock:
            spool._db.execute(f"PRAGMA query_only = {int(full)}")

    def pump_through(done, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "not done in time"
            try:
                sender.pump()
            except SpoolError:
                pass  # as the gateway: said, and pumped again
            time.sleep(0.01)

    with _refusing_broker(tmp_path, retry_refused_s=0.3) as (acl, broker, got, spool, sender):
        spool.put([("office/Desk/metrics", b"a1"), ("office/Desk/metrics", b"a2")])
        pump_through(lambda: sender.refused >= 1 and sender.inflight == 0)
        disk_full(True)
        _allow_office(acl, broker)
        spool_rows = len(spool)
        pump_through(lambda: any(body == b"a1" for _, body in got))  # the probe taken …
        until = time.monotonic() + 0.5
        pump_through(lambda: time.monotonic() > until)  # … its PUBACK read, its delete refused
        pump_through(lambda: len(got) >= 2)  # the sending goes on while deletes fail
        assert len(spool) == 2  # both delivered, neither deleted yet
        disk_full(False)
        pump_through(lambda: len(spool) == 0 and sender.inflight == 0)
        time.sleep(0.5)
        assert spool_rows == 2 and [body for _, body in got] == [b"a1", b"a2"]  # in order, each once


def test_sending_goes_on_after_a_topic_is_freed_while_deletes_fail(tmp_path):
    """A freed topic moves the look back to its oldest message; the messages delivered since, kept while the disk
    refuses their deletes, were skipped without moving the look on, so it read them again at every pump and sent
    nothing new until the disk had room."""
    with _refusing_broker(tmp_path, retry_refused_s=0.3) as (acl, broker, got, _, sender):
        spool = sender.spool = DeleteRefusingSpool(tmp_path / "refusing.spool")

        def pump_through(done) -> None:
            deadline = time.monotonic() + 20
            while not done():
                assert time.monotonic() < deadline, f"not done in time; got {got}"
                with contextlib.suppress(SpoolError):
                    sender.pump()
                time.sleep(0.01)

        spool.put([("office/Desk/metrics", b"A1")])
        pump_through(lambda: sender.refused >= 1 and sender.inflight == 0)
        spool.full = True
        spool.put([("posture/Desk/metrics", f"B{i}".encode()) for i in range(30)])
        pump_through(lambda: len(got) == 30)
        _allow_office(acl, broker)
        pump_through(lambda: (b"A1" in [body for _, body in got]) and sender.inflight == 0)
        spool.put([("posture/Desk/metrics", b"C1")])
        pump_through(lambda: b"C1" in [body for _, body in got])  # while deletes still fail
        spool.full = False
        pump_through(lambda: len(spool) == 0 and sender.inflight == 0)
        time.sleep(0.5)
        bodies = [body for _, body in got]
        assert len(bodies) == len(set(bodies)) == 32  # each once
        spool.close()


def test_opening_a_spool_that_exists_writes_nothing(tmp_path):
    """Its first statement set auto_vacuum, a write, at every open: on a full disk the alert service could not even
    start to send what its file held (a helper's tmpfs). Only a new file takes the setting (before any table)."""
    path = tmp_path / "state.db"
    spool = Spool(path)
    spool.put([("posture/D/alerts", b"a")], meta={"device/D": b"{}"})
    spool.close()
    spool = Spool(path)
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert spool._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, as made
    assert [body for _, _, body, _ in spool.peek(10)] == [b"a"]
    spool.close()


@pytest.mark.parametrize("deleted", [("",), ("", "-wal", "-shm"), ("dir",)])
def test_a_spool_deleted_while_in_use_is_written_back_at_the_next_write(tmp_path, deleted, caplog):
    """A state file deleted under the running alert service: SQLite went on writing to the unlinked file, and the
    next start found none of it (a helper: 71 devices' state gone, silently). The next write puts it back whole."""
    path = tmp_path / "state" / "alerts.db"
    spool = Spool(path)
    spool.put([("posture/D/alerts", b"a1")], meta={"device/D": b"day 1"})
    spool.put([("posture/D/alerts", b"a2")])
    if deleted == ("dir",):
        shutil.rmtree(path.parent)
    for suffix in deleted if deleted != ("dir",) else ():
        path.with_name(path.name + suffix).unlink()
    assert not path.exists()
    spool.put([("posture/D/alerts", b"a3")], meta={"device/D": b"day 2"})
    spool.put([("posture/E/alerts", b"e1")])
    assert path.exists() and "deleted while in use: written back" in caplog.text
    spool.close()
    again = Spool(path)
    assert [body for _, _, body, _ in again.peek(10)] == [b"a1", b"a2", b"a3", b"e1"]
    assert again.meta() == {"device/D": b"day 2"}
    again.close()


def test_a_spool_replaced_by_another_file_while_in_use_is_written_back_and_the_other_kept(tmp_path, caplog):
    """A copy of the spool put in its place (a backup restored, a deploy's copy) while it was in use: writes went on to
    the replaced file, and the next start read the copy with our write-ahead log: "database disk image is malformed",
    neither file's items sent. The next write moves the copy aside, as it came, and writes ours back."""
    path = tmp_path / "bridge.spool"
    spool = Spool(path)
    spool.put([("k", b"old%d" % i) for i in range(3)])
    spool._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(path, tmp_path / "backup.spool")
    for j in range(12):  # past SQLite's automatic checkpoint (1000 pages): pages go into the file being replaced
        spool.put([("k", b"new%d-%d-" % (j, i) + b"x" * 500) for i in range(800)])
    shutil.copy(tmp_path / "backup.spool", tmp_path / "copy.spool")
    (tmp_path / "copy.spool").replace(path)
    spool.put([("k", b"after")])
    spool.put([("k", b"after again")])
    spool.close()
    again = Spool(path)
    bodies = [body for _, _, body, _ in again.peek(20_000)]
    assert len(bodies) == 3 + 12 * 800 + 2 and bodies[:3] == [b"old0", b"old1", b"old2"]
    assert bodies[-2:] == [b"after", b"after again"]
    assert again._db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    again.close()
    (kept,) = tmp_path.glob("bridge.spool.replaced-*")
    other = Spool(kept)
    assert [body for _, _, body, _ in other.peek(10)] == [b"old0", b"old1", b"old2"]
    other.close()
    assert "replaced by another file while in use: written back; the file found there is kept as" in caplog.text


def test_a_spool_that_cannot_be_written_back_yet_goes_on_and_is_written_back_later(tmp_path, caplog, monkeypatch):
    """The write-back closed its connection before the copy took the name: the folder deleted again in between (a
    helper's race, 2 of 6 runs) left a closed spool, every put failing and all of it lost. A write-back that fails
    (here a file where the folder was) keeps the old file, says so, and is tried again later."""
    import service_io.spool as spool_module

    path = tmp_path / "state" / "alerts.db"
    spool = Spool(path)
    spool.put([("t", b"1")])
    shutil.rmtree(path.parent)
    path.parent.write_bytes(b"")  # a file in the folder's place: the folder cannot be made
    spool.put([("t", b"2")])
    assert "cannot be written back yet" in caplog.text and len(spool) == 2
    path.parent.unlink()
    spool.put([("t", b"3")])  # within the retry time: still the deleted file
    assert not path.exists()
    monkeypatch.setattr(spool_module, "WRITE_BACK_RETRY_S", 0.0)
    spool._write_back_after = 0.0
    spool.put([("t", b"4")])
    assert path.exists() and "written back" in caplog.text
    spool.close()
    again = Spool(path)
    assert [body for _, _, body, _ in again.peek(10)] == [b"1", b"2", b"3", b"4"]
    again.close()


def test_a_relative_spool_path_is_the_file_it_opened_after_a_chdir(tmp_path, monkeypatch):
    """The default paths are relative: after a chdir the spool looked deleted and was written back elsewhere."""
    monkeypatch.chdir(tmp_path)
    spool = Spool(Path("alerts.db"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spool.put([("t", b"1")])
    assert not (tmp_path / "elsewhere" / "alerts.db").exists() and len(spool) == 1
    spool.close()


def test_a_symlinked_spool_whose_file_is_replaced_keeps_its_link_and_the_other_file_beside_it(tmp_path, caplog):
    """spool_path a symlink (the state on another volume): SQLite keeps the -wal beside the file the link names. The
    file there replaced: the link itself was moved aside (a link to the replacing file, its -wal left with it) and a
    plain file written in its place, on the link's volume; the next start of anything opening the real file read it
    with our old write-ahead log."""
    real = tmp_path / "volume"
    real.mkdir()
    link = tmp_path / "alerts.state"
    link.symlink_to(real / "alerts.state")
    spool = Spool(link)
    spool.put([("k", b"ours0")])
    other = Spool(real / "other.state")
    other.put([("k", b"theirs")])
    other.close()
    (real / "other.state").replace(real / "alerts.state")
    spool.put([("k", b"ours1")])
    spool.close()
    assert link.is_symlink() and link.resolve() == real / "alerts.state"
    (kept,) = real.glob("alerts.state.replaced-*")
    assert not kept.is_symlink()
    assert not list(tmp_path.glob("alerts.state.replaced-*"))
    theirs = Spool(kept)
    assert [body for _, _, body, _ in theirs.peek(10)] == [b"theirs"]
    theirs.close()
    again = Spool(link)
    assert [body for _, _, body, _ in again.peek(10)] == [b"ours0", b"ours1"]
    again.close()


def test_a_spool_replaced_a_second_time_is_said_not_silently_written_to_the_replaced_file(tmp_path, caplog):
    """Moved aside once per process; replaced again, every later write went to a file no longer at the path, lost at
    the next start (read with our write-ahead log, by name), and not a line said."""
    path = tmp_path / "bridge.spool"
    spool = Spool(path)
    spool.put([("k", b"ours0")])
    for n in (1, 2):
        other = Spool(tmp_path / f"other{n}.spool")
        other.put([("k", b"theirs%d" % n)])
        other.close()
        (tmp_path / f"other{n}.spool").replace(path)
        spool.put([("k", b"ours%d" % n)])
    spool.close()
    assert caplog.text.count("replaced by another file while in use: written back") == 1
    assert "was replaced again while in use" in caplog.text


@pytest.mark.parametrize("damage", ["garbage", "torn header"])
def test_a_spool_file_that_is_no_database_is_moved_aside_and_a_new_one_opened(tmp_path, caplog, damage):
    """A damaged spool file (an SD card's bad sector, a bad restore) raised SpoolError at every open: the alert service
    stopped at each start until someone moved the file by hand. Now it is moved aside (its bytes kept for a look),
    said in one line, and a new spool opened in its place; a disk that refuses the file is still a SpoolError."""
    path = tmp_path / "alerts.db"
    good = Spool(path)
    good.put([("k", b"v")])
    good.close()
    data = path.read_bytes()
    bad = os.urandom(8192) if damage == "garbage" else b"SQLite format 3\0" + os.urandom(84) + data[100:]
    path.write_bytes(bad)
    with caplog.at_level(logging.ERROR, "posture.spool"):
        spool = Spool(path)
    assert spool.set_aside is not None and spool.set_aside.read_bytes() == bad
    assert spool.set_aside.parent == tmp_path and spool.set_aside.name.startswith("alerts.db.unreadable-")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(path) in said[0] and str(spool.set_aside) in said[0], said
    assert len(spool) == 0
    spool.put([("k", b"new")])
    spool.close()
    again = Spool(path)
    assert again.set_aside is None and [row[2] for row in again.peek(10)] == [b"new"]
    again.close()
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "s.db").mkdir()  # a folder where the file should be: no damage of a file's bytes
    with pytest.raises(SpoolError, match="s.db: cannot open"):
        Spool(tmp_path / "missing" / "s.db")
    assert (tmp_path / "missing" / "s.db").is_dir()
