"""The bridge's read of the minutes InfluxDB holds (docs/influx.md, "Two copies of a minute") meeting answers that are
not the whole of them, against real InfluxDB 1.6.7: an answer that is not InfluxDB's (a real HTTP server in front of
it answers as a proxy or a broken server would), one cut at InfluxDB's [http] max-row-limit, and a user granted WRITE
only. Each test fails on the code before its fix."""

from __future__ import annotations

import logging

from bridge import service
from posture.local_servers import InfluxDB1
from service_io.config import load_config
from support.influx_front import InfluxFront
from support.mqtt import DB, start_or_fail
from support.servers import SecuredInfluxDB1, write_line_protocol

T0_MS = 1_700_000_040_000  # a minute's start (2023-11-14), in the past
EVENT = f"posture_rotation,device_id=dev1 peak_deg=40 {T0_MS + 5_000}"  # not a minute: never waits on the read


def _minute_line(device: str, t_ms: int, worn_s: float) -> str:
    return f"posture_minute,device_id={device} lost_samples=0i,sitting_s={worn_s},worn_s={worn_s} {t_ms}"


def _bridge(tmp_path, url: str, name: str = "bridge", user: tuple[str, str] | None = None) -> service.Bridge:
    """A bridge (not connected to MQTT: its spool is fed and drained by the test) writing to `url`."""
    login = f'username = "{user[0]}"\npassword = "{user[1]}"\n' if user else ""
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = 1\n\n[influx]\nurl = "{url}"\ndatabase = "{DB}"\n{login}\n'
                      f'[bridge]\nspool_path = "{tmp_path / name}.spool"\nflush_interval_s = 0.1\n')
    return service.Bridge.open(load_config(config, env={}))


def _drain(bridge: service.Bridge, *lines: str) -> None:
    bridge.spool.put([(f"posture/{line.split(',device_id=')[1].split(' ')[0]}/"
                       f"{'metrics' if line.startswith('posture_minute') else 'events'}", line.encode())
                      for line in lines])
    bridge._drain_spool()


def _waiting(bridge: service.Bridge) -> int:
    """Points in the bridge's spool waiting to be written (not the minutes kept there to be read again)."""
    return len(bridge.spool.peek(1000, skip_keys=(service.WRITTEN,)))


def _worn(influx: InfluxDB1) -> dict[int, float]:
    return {r["time"]: r["worn_s"] for r in influx.rows("SELECT worn_s FROM posture_minute", DB)}


def _events(influx: InfluxDB1) -> int:
    return len(influx.rows("SELECT peak_deg FROM posture_rotation", DB))


COLUMNS = '"columns":["time","worn_s","lost_samples"]'
HOSTILE = {  # what a proxy, a half-compatible server or a broken one answers to /query
    "a result that is not an object": (200, "application/json", b'{"results":["x"]}'),
    "a proxy's sign-in page": (200, "text/html", b"<html><body>Sign in</body></html>"),
    "a statement's error": (200, "application/json",
                            b'{"results":[{"statement_id":0,"error":"max-select-point limit exceeded"}]}'),
    "results that are not a list": (200, "application/json", b'{"results":null}'),
    "series that are not a list": (200, "application/json", b'{"results":[{"statement_id":0,"series":"x"}]}'),
    "values that are not a list": (200, "application/json", b'{"results":[{"statement_id":0,"series":[{"tags":'
                                   b'{"device_id":"dev1"},' + COLUMNS.encode() + b',"values":5}]}]}'),
    "a time that is not epoch ms": (200, "application/json", b'{"results":[{"statement_id":0,"series":[{"tags":'
                                    b'{"device_id":"dev1"},' + COLUMNS.encode() +
                                    b',"values":[["2023-11-14T22:14:00Z",60,0]]}]}]}'),
    "a coverage that is not a number": (200, "application/json", b'{"results":[{"statement_id":0,"series":[{"tags":'
                                        b'{"device_id":"dev1"},' + COLUMNS.encode() +
                                        b',"values":[[%d,"60",0]]}]}]}' % T0_MS),
    "JSON that is not an object": (200, "application/json", b"[1, 2]"),
    # Python's json raised past its except: a ValueError (more digits than int() reads), a RecursionError (nesting).
    "an integer of 5000 digits": (200, "application/json", b'{"results":[{"statement_id":0,"series":[{"tags":'
                                  b'{"device_id":"dev1"},' + COLUMNS.encode() + b',"values":[[' + b"9" * 5000 +
                                  b',60,0]]}]}]}'),
    "JSON nested past Python's parser": (200, "application/json", b"[" * 100_000 + b"]" * 100_000),
    "another 4xx": (400, "application/json", b'{"error":"error parsing query: found EOF"}'),
}


def test_an_answer_to_the_read_of_minutes_that_is_not_influxdbs_is_one_counted_line(tmp_path, influx, caplog):
    """`{"results":["x"]}`, series or values of another type raised on the bridge's thread, which ended (and a
    restarted bridge met the same batch again); a proxy's HTML page with status 200 was taken for an outage, and every
    batch with a minute waited in the spool, the events behind it too, for as long as it lasted. Now each is one
    warning line and counted (minute_reads_failed); the batch is written, its minutes checked against the copies this
    bridge wrote (minutes_unchecked), the whole one written before the failure included, and read again later. A 502
    is still an outage (the minutes wait), and an answer of InfluxDB's with its columns in another order is read by
    their names."""
    front = InfluxFront(influx)
    try:
        for k, (case, answer) in enumerate(HOSTILE.items()):
            influx.query(f'DROP DATABASE "{DB}"')
            influx.create_database(DB)
            bridge = _bridge(tmp_path, front.url, name=f"bridge{k}")
            try:
                front.query_answer = None  # InfluxDB's own answers: the whole copy written, checked
                _drain(bridge, _minute_line("dev1", T0_MS, 60.0))
                front.query_answer = answer
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger="posture.bridge"):
                    # An unfinished copy of that minute resent, an event, and the next minute.
                    _drain(bridge, _minute_line("dev1", T0_MS, 20.0), EVENT, _minute_line("dev1", T0_MS + 60_000, 60.0))
                said = [r.getMessage() for r in caplog.records]
                assert len(said) == 1 and "\n" not in said[0], (case, said)
                assert (_waiting(bridge), _events(influx)) == (0, 1), case
                # The whole copy this bridge wrote keeps its unfinished copy out while InfluxDB cannot tell.
                assert _worn(influx) == {T0_MS: 60.0, T0_MS + 60_000: 60.0}, case
                assert bridge.stats.minutes_superseded == 1 and bridge.stats.minute_reads_failed == 1, case
                assert bridge.stats.minutes_unchecked == 1, case
            finally:
                bridge.spool.close()

        influx.query(f'DROP DATABASE "{DB}"')
        influx.create_database(DB)
        write_line_protocol(influx, DB, _minute_line("dev1", T0_MS, 60.0))
        bridge = _bridge(tmp_path, front.url, name="outage")
        try:
            front.query_answer = (502, "text/html", b"<html>Bad gateway</html>")
            _drain(bridge, _minute_line("dev1", T0_MS, 20.0))
            assert _waiting(bridge) == 1 and bridge.stats.minute_reads_failed == 0  # waits, as for no answer
            front.query_answer = (200, "application/json", b'{"results":[{"statement_id":0,"series":[{"name":'
                                  b'"posture_minute","tags":{"device_id":"dev1"},"columns":["time","lost_samples",'
                                  b'"worn_s"],"values":[[%d,0,60]]}]}]}' % T0_MS)
            bridge._drain_spool()
            assert _waiting(bridge) == 0 and bridge.stats.minutes_superseded == 1
            assert _worn(influx) == {T0_MS: 60.0}
        finally:
            bridge.spool.close()
    finally:
        front.close()


def test_an_answer_to_the_read_of_minutes_cut_off_mid_way_is_an_outage_not_the_end_of_the_bridge(tmp_path, influx):
    """InfluxDB killed while it sent the answer to the read of minutes (a chaos run: the bridge's /query, chunked,
    ended after its first chunk): http.client's IncompleteRead is no OSError, and the bridge's thread ended with a
    traceback. Now it is InfluxDB not answering: the minute waits in the spool, and goes once InfluxDB answers."""
    front = InfluxFront(influx)
    bridge = _bridge(tmp_path, front.url)
    try:
        front.query_torn = True
        _drain(bridge, _minute_line("dev1", T0_MS, 60.0))
        assert front.queries and _waiting(bridge) == 1 and _worn(influx) == {}
        front.query_torn = False
        bridge._drain_spool()
        assert _waiting(bridge) == 0 and _worn(influx) == {T0_MS: 60.0}
    finally:
        bridge.spool.close()
        front.close()


class RowLimitedInfluxDB(InfluxDB1):
    max_row_limit = 5  # [http] max-row-limit: many installations set one (10000 is common)


def test_a_read_of_minutes_cut_at_max_row_limit_reads_the_rest(tmp_path):
    """InfluxDB 1.6.7 with [http] max-row-limit stops its answer at the limit: the statement it stopped in says
    `partial`, and the statements after it are not answered at all. The bridge took the minutes left out for minutes
    InfluxDB did not hold, and wrote their unfinished copies over the whole ones: here 19 of 24. Now it reads the rest
    in pages, after the last row of each statement cut and every statement not answered."""
    influx = start_or_fail(RowLimitedInfluxDB(tmp_path / "influxdb"))
    try:
        influx.create_database(DB)
        minutes = [(device, T0_MS + 60_000 * k) for device in ("dev1", "dev2") for k in range(12)]
        write_line_protocol(influx, DB, [_minute_line(device, t_ms, 60.0) for device, t_ms in minutes])
        bridge = _bridge(tmp_path, influx.url)
        try:
            _drain(bridge, *(_minute_line(device, t_ms, 20.0) for device, t_ms in minutes))
        finally:
            bridge.spool.close()
        # Counted, not listed: this server cuts the test's own answer too.
        rows = influx.rows("SELECT count(worn_s), min(worn_s) FROM posture_minute GROUP BY device_id", DB)
        assert [(r["device_id"], r["count"], r["min"]) for r in rows] == [("dev1", 12, 60.0), ("dev2", 12, 60.0)]
        assert bridge.stats.minutes_superseded == 24 and bridge.stats.minute_reads_failed == 0
    finally:
        influx.kill()


def test_a_user_without_read_keeps_writing_and_its_minutes_are_checked_once_read_is_granted(tmp_path, monkeypatch,
                                                                                         caplog):
    """A user granted WRITE only (403 "error authorizing query") turned the check off for 10 minutes, then again, for
    as long as it lasted: every copy of a minute was written as it came, the last kept, so an unfinished copy resent
    after the whole one was stored over it. Now it is said once per try, the minutes are written (nothing waits),
    each checked against the copies this bridge wrote, and once READ is granted they are read again: a minute another
    writer stored less of meanwhile is written again whole."""
    monkeypatch.setattr(service, "READ_MINUTES_RETRY_S", 1.0)  # a person granting READ takes longer than this test
    monkeypatch.setattr(service, "VERIFY_AFTER_S", 0.0)
    influx = start_or_fail(SecuredInfluxDB1(tmp_path / "influxdb"))
    try:
        influx.query(f'CREATE DATABASE "{DB}"')
        influx.query("CREATE USER writer WITH PASSWORD 'w-secret'")
        influx.query(f'GRANT WRITE ON "{DB}" TO writer')
        bridge = _bridge(tmp_path, influx.url, user=("writer", "w-secret"))
        first, second = T0_MS, T0_MS + 60_000
        try:
            with caplog.at_level(logging.WARNING, logger="posture.bridge"):
                _drain(bridge, _minute_line("dev1", first, 60.0), _minute_line("dev1", second, 60.0), EVENT)
                _drain(bridge, _minute_line("dev1", first, 20.0))  # an unfinished copy resent after the whole one
            assert _worn(influx) == {first: 60.0, second: 60.0}
            assert _waiting(bridge) == 0 and _events(influx) == 1
            said = [r.getMessage() for r in caplog.records]
            assert len(said) == 1 and "grant the user READ" in said[0] and "\n" not in said[0], said
            assert bridge.stats.minute_reads_failed == 1  # not asked again within READ_MINUTES_RETRY_S
            assert (bridge.stats.minutes_unchecked, bridge.stats.minutes_superseded) == (2, 1)
            # Another writer (a share group's member, a gateway's old copy) stores less of the second minute.
            write_line_protocol(influx, DB, _minute_line("dev1", second, 20.0))
            influx.query(f'GRANT ALL ON "{DB}" TO writer')  # 1.x: GRANT READ would replace WRITE
            bridge._read_minutes_at = 0.0  # READ_MINUTES_RETRY_S passed
            bridge._verify_written()
            bridge._drain_spool()
            assert _worn(influx) == {first: 60.0, second: 60.0}
            assert bridge.stats.minutes_rewritten == 1 and not bridge._written and len(bridge.spool) == 0
        finally:
            bridge.spool.close()
    finally:
        influx.kill()


def test_the_first_read_of_minutes_of_two_devices_on_a_server_without_the_database_finds_none_stored(tmp_path,
                                                                                                       caplog):
    """A fresh InfluxDB 1.6.7 (no database yet) answers a read of several statements with "not executed" alone: its
    HTTP handler puts that in place of the first statement's "database not found" (results merged by statement id).
    The bridge's first batch holding two devices' minutes (or one's an hour apart) said "InfluxDB's answer … is not one
    the bridge can use … is influx.url an InfluxDB?", counted a failed read and wrote the minutes unchecked. Now that
    answer is asked again a statement at a time, which says why: nothing is stored yet."""
    influx = start_or_fail(InfluxDB1(tmp_path / "influxdb"))
    try:
        bridge = _bridge(tmp_path, influx.url)
        try:
            with caplog.at_level(logging.WARNING, logger="posture.bridge"):
                _drain(bridge, _minute_line("dev1", T0_MS, 60.0), _minute_line("dev2", T0_MS, 60.0),
                       _minute_line("dev1", T0_MS + 7_200_000, 60.0))
        finally:
            bridge.spool.close()
        assert bridge.stats.minute_reads_failed == 0 and bridge.stats.minutes_unchecked == 0, caplog.text
        assert "not one the bridge can use" not in caplog.text
        assert len(influx.rows("SELECT worn_s FROM posture_minute", DB)) == 3
    finally:
        influx.kill()
