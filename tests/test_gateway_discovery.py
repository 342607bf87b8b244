"""`posture run` started while a sensor is off (charging, in a drawer, out of range), through BlueZoo and a real
Mosquitto: the gateway exited ("sensor … not found") when a named sensor was not there within its first scan, and with
no sensor named it ran on with none, saying nothing, for good. It now looks again until the sensor is there."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

import gateway.service as service
import sensor.link as link
from firmware_sim.testbed import adapter_address
from sensor.discovery import SensorFilter, discover
from service_io.config import Config, GatewaySettings, MqttSettings
from support.mqtt import listen


async def _wait(predicate, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def _run_until(config: Config, caplog, absent: str, switch_on, streaming) -> dict:
    """run_gateway with `absent` said not found, then switched on (a blocking call), until `streaming()` holds."""
    async def main() -> dict:
        stop = asyncio.Event()
        gateway = asyncio.create_task(service.run_gateway(config, stop, scan_timeout_s=2.0))
        try:
            await _wait(lambda: f"{absent} not found" in caplog.text or gateway.done(), 30, f"{absent} said missing")
            assert not gateway.done(), caplog.text[-2000:]
            await asyncio.to_thread(switch_on)
            await _wait(lambda: streaming() or gateway.done(), 60, "the late sensor's live states")
            assert not gateway.done(), caplog.text[-2000:]
        finally:
            stop.set()
        return await gateway
    with caplog.at_level(logging.INFO, logger="posture.gateway"):
        return asyncio.run(main())


def test_a_named_sensor_switched_on_after_the_start_joins_the_one_that_was_there(tmp_path, testbed, start_sim,
                                                                                  broker, monkeypatch, caplog):
    monkeypatch.setattr(service, "LOOK_AGAIN_S", 1.0)
    start_sim(name="Early", seed=5)
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                    gateway=GatewaySettings(sensors=("Early", "Late"), adapter="hci0",
                                            spool_dir=str(tmp_path / "spool")))
    listeners = {name: listen(broker.port, f"posture/{name}/live") for name in ("Early", "Late")}
    try:
        devices = _run_until(config, caplog, "'Late'", lambda: start_sim(name="Late", seed=6, adapter="hci2"),
                             lambda: len(listeners["Late"][1]) >= 3)
    finally:
        for listener, _ in listeners.values():
            listener.loop_stop()
    assert set(devices) == {"Early", "Late"}
    assert len(listeners["Early"][1]) >= 3  # the sensor there at the start streamed while the other was looked for
    assert "Late: found" in caplog.text


def test_with_no_sensor_named_the_first_one_switched_on_is_taken(tmp_path, testbed, start_sim, broker, monkeypatch,
                                                                 caplog):
    monkeypatch.setattr(service, "LOOK_AGAIN_S", 1.0)
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                    gateway=GatewaySettings(adapter="hci0", spool_dir=str(tmp_path / "spool")))
    listener, live = listen(broker.port, "posture/Later/live")
    try:
        devices = _run_until(config, caplog, "a posture sensor", lambda: start_sim(name="Later", seed=8),
                             lambda: len(live) >= 3)
    finally:
        listener.loop_stop()
    assert set(devices) == {"Later"}


def test_a_stop_while_the_first_scan_looks_for_sensors_not_there_ends_the_run_at_once(tmp_path, testbed, broker,
                                                                                     caplog):
    """SIGTERM (systemd's stop) came while the first scan looked for two sensors that were off: the run went on
    scanning for each in turn (scan_timeout_s each, 15 s in `posture run`), then said both were not found and
    "looked for again", started what it had, and only then stopped."""
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                    gateway=GatewaySettings(sensors=("Off1", "Off2"), adapter="hci0",
                                            spool_dir=str(tmp_path / "spool")))

    async def main() -> tuple[dict, float]:
        stop = asyncio.Event()
        gateway = asyncio.create_task(service.run_gateway(config, stop, scan_timeout_s=10.0))
        await asyncio.sleep(1.0)
        stop.set()
        stopped_s = time.monotonic()
        devices = await asyncio.wait_for(gateway, 60)
        return devices, time.monotonic() - stopped_s

    with caplog.at_level(logging.INFO, logger="posture.gateway"):
        devices, took_s = asyncio.run(main())
    assert devices == {}
    assert took_s < 3.0, f"stopped {took_s:.1f} s after the stop"
    assert "not found" not in caplog.text


def test_a_second_run_refused_the_late_sensor_ends_instead_of_running_on_with_none(tmp_path, testbed, start_sim,
                                                                                   broker, monkeypatch, caplog):
    """Two `posture run` on one spool_dir, both started while the sensor was off: the one that found it second was
    refused it (the first's lock), said so, and ran on for good with no sensor and nothing looked for. Started
    while the sensor is on, the same second run is refused at once (exit 2): so it is now, when found late."""
    monkeypatch.setattr(service, "LOOK_AGAIN_S", 1.0)
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                    gateway=GatewaySettings(sensors=("Late",), adapter="hci0", spool_dir=str(tmp_path / "spool")))

    async def main() -> None:
        stops = [asyncio.Event(), asyncio.Event()]
        runs = [asyncio.create_task(service.run_gateway(config, stop, scan_timeout_s=2.0)) for stop in stops]
        try:
            await _wait(lambda: caplog.text.count("'Late' not found") == 2 or any(r.done() for r in runs), 30,
                        "both runs to say 'Late' missing")
            await asyncio.to_thread(start_sim, name="Late", seed=6)
            done, _ = await asyncio.wait(runs, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1, f"no run ended:\n{caplog.text[-2000:]}"
            refused = done.pop()
            with pytest.raises(RuntimeError, match="in use by another posture run"):
                refused.result()
            streaming = runs[1 - runs.index(refused)]
            assert not streaming.done()
        finally:
            for stop in stops:
                stop.set()
        assert set(await streaming) == {"Late"}

    with caplog.at_level(logging.INFO, logger="posture.gateway"):
        asyncio.run(main())


def test_a_late_sensor_already_read_under_another_id_is_not_connected_twice(tmp_path, testbed, start_sim, broker,
                                                                           monkeypatch, caplog):
    """gateway.sensors names one sensor by address and by its new name; BlueZ still knew it by its old name, so the
    address was started at once as device 'Old'. Found late by its new name, it was started again as 'New': two
    links to one sensor, each sample published under both ids."""
    monkeypatch.setattr(service, "LOOK_AGAIN_S", 1.0)
    old = start_sim(name="Old", adapter="hci2", seed=5)
    assert asyncio.run(discover("hci0", 5.0, SensorFilter(name="Old"), first_only=True))  # BlueZ knows it as Old
    old.stop()
    address = adapter_address(2)
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                    gateway=GatewaySettings(sensors=("New", address), adapter="hci0",
                                            spool_dir=str(tmp_path / "spool")))
    listener, live = listen(broker.port, "posture/Old/live")
    try:
        devices = _run_until(config, caplog, "'New'", lambda: start_sim(name="New", adapter="hci2", seed=6),
                             lambda: "New: found" in caplog.text and len(live) >= 3)
    finally:
        listener.loop_stop()
    assert set(devices) == {"Old"}, caplog.text[-2000:]
    assert f"sensor {address} ('New') is already read as 'Old'" in caplog.text


def test_a_calibration_is_not_restored_onto_another_sensor_of_the_same_name(tmp_path, testbed, start_sim, broker,
                                                                            caplog):
    """Two sensors advertising one name (two WT901BLE68 in one home; `posture sim`'s default name): `posture run
    --sensor Twin`, restarted after a kill -9, connected to the other one (an attack's probe: 3 restarts of 3), and
    restored the first one's calibration onto it, "calibration restored from the last run", so the other sensor's
    mounting read as the wearer's posture: 3 phantom leans, none of the wearer's 2 slouches. The calibration now
    says which sensor it was taken on; another one under its id starts uncalibrated and the wearer is asked for the
    moves (a `recalibrate` event, which the alert service sends to the phone). Which of the two a scan finds first
    is BlueZ's order: here each run is pointed at one by its address, and both are read as device "Twin" (its id is
    its name), as each was by name."""
    calibration_file = tmp_path / "spool" / "Twin.calibration.json"
    listener, events = listen(broker.port, "posture/Twin/events")

    def calibrations() -> list[dict]:
        return [e for e in events if e["kind"] == "calibration"]

    def run_until(address: str, done) -> None:
        config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                        gateway=GatewaySettings(sensors=(address,), adapter="hci0", spool_dir=str(tmp_path / "spool")))

        async def main() -> None:
            stop = asyncio.Event()
            gateway = asyncio.create_task(service.run_gateway(config, stop, scan_timeout_s=5.0))
            try:
                await _wait(lambda: done() or gateway.done(), 60, "the gateway's calibration event")
                assert not gateway.done(), caplog.text[-2000:]
            finally:
                stop.set()
            await gateway
        with caplog.at_level(logging.INFO, logger="posture.gateway"):
            asyncio.run(main())

    try:
        start_sim(name="Twin", adapter="hci1", scenario="office-short", seed=3)
        start_sim(name="Twin", adapter="hci2", scenario="sit-upright", seed=4)  # another sensor, the same name
        run_until(adapter_address(1), lambda: len(calibrations()) >= 1 and calibration_file.exists())  # the moves
        assert calibrations()[0]["status"] == "calibrated", calibrations()
        assert json.loads(calibration_file.read_text())["sensor_address"] == adapter_address(1)
        run_until(adapter_address(1), lambda: len(calibrations()) >= 2)  # the same sensor again: restored
        assert calibrations()[1]["message"] == "calibration restored from the last run"
        run_until(adapter_address(2), lambda: len(calibrations()) >= 3)
    finally:
        listener.loop_stop()
    other = calibrations()[2]
    assert other["status"] == "recalibrate", other
    assert f"taken on {adapter_address(1)}" in other["message"] and adapter_address(2) in other["message"]
    assert f"the calibration kept was taken on sensor {adapter_address(1)}, and this is {adapter_address(2)}: " \
           f"not restored" in caplog.text
    assert "calibration restored" not in other["message"]


def test_a_sensor_replaced_by_another_of_its_name_is_read_without_a_restart(tmp_path, testbed, start_sim, broker,
                                                                           monkeypatch, caplog):
    """`posture run --sensor Desk` (gateway.sensors by name) and the sensor replaced mid-day by another advertising
    "Desk" (a new unit, one swapped for a charged one): the link looked for the old address only, for good ("not
    connected … trying again" once a minute), and the new sensor was not read until the gateway was restarted (an
    attack's probe: 70 s of nothing for that wearer, the other sensors streaming on, until a kill -9 restarted it). Now,
    once the old one has not connected for REPLACED_AFTER_S, the one advertising the name is read, uncalibrated (the
    old one's calibration is another mounting): the wearer is asked for the moves, and they calibrate it."""
    monkeypatch.setattr(link, "REPLACED_AFTER_S", 3.0, raising=False)  # not there before
    config = Config(mqtt=MqttSettings(host=broker.host, port=broker.port),
                    gateway=GatewaySettings(sensors=("Desk",), adapter="hci0", spool_dir=str(tmp_path / "spool")))
    listener, events = listen(broker.port, "posture/Desk/events")
    calibration_file = tmp_path / "spool" / "Desk.calibration.json"

    def calibrations() -> list[dict]:
        return [e for e in events if e["kind"] == "calibration"]

    async def main() -> None:
        stop = asyncio.Event()
        gateway = asyncio.create_task(service.run_gateway(config, stop, scan_timeout_s=5.0))
        try:
            await _wait(lambda: calibration_file.exists() or gateway.done(), 60, "the first sensor's calibration")
            assert not gateway.done(), caplog.text[-2000:]
            await asyncio.to_thread(old.stop)
            await asyncio.to_thread(start_sim, name="Desk", adapter="hci2", scenario="office-short", seed=4)
            await _wait(lambda: any(e["status"] == "recalibrate" for e in calibrations()) and
                        calibrations()[-1]["status"] == "calibrated" or gateway.done(), 90,
                        "the new sensor asked for the moves and calibrated")
            assert not gateway.done(), caplog.text[-2000:]
        finally:
            stop.set()
        await gateway

    old = start_sim(name="Desk", adapter="hci1", scenario="office-short", seed=3)
    try:
        with caplog.at_level(logging.INFO, logger="posture"):
            asyncio.run(main())
    finally:
        listener.loop_stop()
    asked = next(e for e in calibrations() if e["status"] == "recalibrate")
    assert f"sensor {adapter_address(2)} is read as 'Desk' now, in place of {adapter_address(1)}" in asked["message"]
    assert f"and {adapter_address(2)} advertises 'Desk': reading that sensor from now on" in caplog.text
    assert json.loads(calibration_file.read_text())["sensor_address"] == adapter_address(2)
