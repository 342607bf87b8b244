"""A gateway stopped cleanly and started again within one minute, through a real Mosquitto: the minute is sent whole.

InfluxDB (same measurement, tags and time) and the alert service (a minute keyed by its ts) keep the last record of a
minute. The stop sends the minute's first part; the next run sent its second part alone, replacing the first: a helper
restarting a gateway every few minutes lost 196.8 worn seconds over 8 minutes.
"""

from __future__ import annotations

import asyncio

import pytest

from firmware_sim.imu import SensorSimulation
from firmware_sim.scenario import load_scenario
from gateway.publisher import DevicePublisher
from gateway.service import Device, _flush, _process, load_calibration, load_stopped_minute
from pipeline.live import LiveClock
from pipeline.stream import PosturePipeline
from sensor.batching import BatchCollector
from sensor.stream import ImuBatch
from service_io.config import Config, MqttSettings
from support.mqtt import listen, wait_for

STOP_S, BACK_S = 150.5, 154.0  # the stop and the start again, inside the minute 120-180 s


def _run(config: Config, spool_dir, chunks, got) -> Device:
    publisher = DevicePublisher.open(config, "Desk", spool_dir, "Desk")
    publisher.start()
    wait_for(publisher.connected.is_set, 10, "the publisher connected")
    device = Device(PosturePipeline(calibration=load_calibration(spool_dir, "Desk")), publisher,
                    BatchCollector(1.0, 100.0), LiveClock(1.0, 1.0))
    device.stopped_minute = load_stopped_minute(spool_dir, "Desk")  # as run_gateway does
    for ch in chunks:
        _process(device, spool_dir, ImuBatch("Desk", ch.t_s, ch.t_s, ch.acc_g, ch.gyro_dps))
        publisher.pump()
    asyncio.run(_flush({"Desk": device}, spool_dir))  # the clean stop: the unfinished minute goes out
    return device


def test_a_restart_within_a_minute_sends_that_minute_whole(tmp_path, broker):
    listener, got = listen(broker.port, "posture/Desk/metrics")
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port))
    spool_dir = tmp_path / "spool"
    sim = SensorSimulation(load_scenario("office-short"), seed=3)
    chunks = [ch for ch in sim.chunks(max_samples=50) if not STOP_S <= ch.t_s[0] < BACK_S]
    try:
        _run(config, spool_dir, [ch for ch in chunks if ch.t_s[0] < STOP_S], got)
        first_part = next(m for m in got if m["ts"] == 120_000)
        second = _run(config, spool_dir, [ch for ch in chunks if ch.t_s[0] >= BACK_S], got)
        wait_for(lambda: max(m["ts"] for m in got) >= 180_000, 20, "the run after the restart's minutes")
    finally:
        listener.loop_stop()
    last = {m["ts"]: m for m in got}  # what InfluxDB and the alert service keep
    reference = PosturePipeline()
    minutes = []
    for ch in chunks:  # one run over the same samples, the restart's gap included
        minutes += reference.update(ch.t_s, ch.acc_g, ch.gyro_dps).metrics
    minutes += reference.finish().metrics
    whole = next(m for m in minutes if m.minute_start_s == 120.0)
    kept = last[120_000]
    assert first_part["worn_s"] == pytest.approx(30.5, abs=0.02)
    assert kept["worn_s"] == pytest.approx(whole.worn_s, abs=0.02) == pytest.approx(56.5, abs=0.02)
    assert kept["sitting_s"] + kept["standing_s"] + kept["walking_s"] + kept["lying_s"] == pytest.approx(
        kept["worn_s"], abs=0.02)
    assert kept["flexion_mean_deg"] == pytest.approx(whole.flexion_mean_deg, abs=0.5)
    assert kept["slouch_s"] == pytest.approx(whole.slouch_s, abs=1.0)
    assert second.stopped_minute is None  # merged into its minute, and done with
