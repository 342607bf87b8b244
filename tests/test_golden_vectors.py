"""Golden byte vectors (tests/golden/*.json) pin the simulator's encoders and the client's decoders.

The vectors were built from the vendor layouts with struct.pack on raw integers, not by either
codec, so an encoder and a decoder that agree with each other but not with the layout both fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_sim.profiles import native as native_enc
from firmware_sim.profiles import thingy52 as thingy_enc
from firmware_sim.profiles import witmotion as witmotion_enc
from sensor.codecs import PacketError, native, thingy52, witmotion

GOLDEN = Path(__file__).parent / "golden"
DECODERS = {"native": native.decode, "witmotion": witmotion.decode, "thingy52": thingy52.decode}
PROFILES = list(DECODERS)


def load(profile: str) -> dict:
    return json.loads((GOLDEN / f"{profile}.json").read_text())


def encode(profile: str, case: dict) -> bytes:
    acc, gyro = np.array(case["acc_g"]), np.array(case["gyro_dps"])
    if profile == "native":
        return native_enc.encode_packet(case["seq"], case["t0_us"], case["period_us"], acc, gyro)
    if profile == "witmotion":
        return witmotion_enc.encode_packet(acc[0], gyro[0], np.array(case["euler_deg"][0]))
    return thingy_enc.encode_packet(acc[0], gyro[0], np.array(case.get("mag_ut", [thingy_enc.COMPASS_UT])[0]))


@pytest.mark.parametrize("profile", PROFILES)
def test_decoder_reads_golden_bytes_exactly(profile):
    for case in load(profile)["cases"]:
        packet = DECODERS[profile](bytes.fromhex(case["bytes"]))
        np.testing.assert_array_equal(packet.acc_g, case["acc_g"])
        np.testing.assert_array_equal(packet.gyro_dps, case["gyro_dps"])
        for field in ("seq", "t0_us", "period_us"):
            if field in case:
                assert getattr(packet, field) == case[field]
        for field in ("euler_deg", "mag_ut"):
            if field in case:
                np.testing.assert_array_equal(getattr(packet, field), case[field])


@pytest.mark.parametrize("profile", PROFILES)
def test_encoder_writes_golden_bytes_exactly(profile):
    doc = load(profile)
    for case in doc["cases"] + doc["encoder_rounding"]:
        assert encode(profile, case).hex() == case["bytes"], case.get("description")


@pytest.mark.parametrize("profile", PROFILES)
def test_malformed_bytes_raise_a_counted_kind(profile):
    for case in load(profile)["malformed"]:
        with pytest.raises(PacketError) as err:
            DECODERS[profile](bytes.fromhex(case["bytes"]))
        assert err.value.kind == case["kind"], case["bytes"]


@pytest.mark.parametrize("profile", PROFILES)
def test_round_trip_is_within_half_an_lsb(profile):
    lsb = load(profile)["lsb"]
    rng = np.random.default_rng(3)
    for _ in range(200):
        case = {"acc_g": rng.uniform(-7.9, 7.9, (1, 3)), "gyro_dps": rng.uniform(-999, 999, (1, 3)),
                "euler_deg": rng.uniform(-179, 179, (1, 3)), "seq": 1, "t0_us": 0, "period_us": 10000}
        packet = DECODERS[profile](encode(profile, case))
        assert np.abs(packet.acc_g - case["acc_g"]).max() <= lsb["acc_g"] / 2 + 1e-12
        assert np.abs(packet.gyro_dps - case["gyro_dps"]).max() <= lsb["gyro_dps"] / 2 + 1e-12


def test_the_client_asks_for_at_most_50_ms_per_notification():
    from firmware_sim.profiles import StreamSettings, get_profile
    from sensor.profiles import PROFILES, samples_per_notification

    assert [samples_per_notification(r) for r in (25.0, 50.0, 100.0, 200.0)] == [1, 2, 5, 5]
    # The virtual sensor takes the command the client writes, as PROTOCOL.md says.
    settings = StreamSettings(rate_hz=50.0)
    get_profile("native").write_control(PROFILES["native"].packing_command(50.0), settings)
    assert settings.samples_per_packet == 2
    assert PROFILES["witmotion"].packing_command is None  # one sample per notification already


def test_the_client_unlocks_a_witmotion_before_setting_its_rate():
    """A WT901BLE ignores register writes until unlocked (WitMotion's SDKs and users' code: FF AA 69 88 B5, then the
    write), silently: it went on at its own rate (10 Hz from the factory) while the client counted 9 samples of 10
    lost. The virtual sensor now does the same, and takes the client's writes in the client's order."""
    from firmware_sim.profiles import StreamSettings, get_profile
    from sensor.profiles import PROFILES

    device, client = get_profile("witmotion"), PROFILES["witmotion"]
    ignored = StreamSettings(rate_hz=10.0)
    device.write_control(client.rate_command(None, 50.0), ignored)
    assert ignored.rate_hz == 10.0
    taken = StreamSettings(rate_hz=10.0)
    assert client.unlock_command is not None
    for command in (client.unlock_command, client.rate_command(None, 50.0)):
        device.write_control(command, taken)
    assert taken.rate_hz == 50.0


def test_witmotion_notification_with_several_packets_gives_every_sample():
    # Real WT901BLE5.0 sensors pack several 20-byte packets into one notification at high rates (a larger MTU);
    # WitMotion's SDKs read the notifications as a stream of 20-byte packets, 55 71 being register replies.
    for case in load("witmotion")["notifications"]:
        packet = witmotion.decode(bytes.fromhex(case["bytes"]))
        assert packet.n == len(case["acc_g"]), case["description"]
        np.testing.assert_array_equal(packet.acc_g, case["acc_g"])
        np.testing.assert_array_equal(packet.gyro_dps, case["gyro_dps"])
        np.testing.assert_array_equal(packet.euler_deg, case["euler_deg"])


def test_thingy_accelerometer_at_rest_face_up_reads_plus_one_g_up():
    # The firmware sends gravity (z = -1 g face up, drv_motion.c mounts the accelerometer with -I); the client
    # gives specific force, as the other profiles and the pipeline do.
    wire = bytes.fromhex("0000000000fc000000000000000000000000")
    np.testing.assert_array_equal(thingy52.decode(wire).acc_g, [[0.0, 0.0, 1.0]])
    assert thingy_enc.encode_packet(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.zeros(3)) == wire


def test_thingy_rate_is_one_the_dmp_delivers():
    from sensor.profiles import PROFILES

    thingy = PROFILES["thingy52"]
    current = bytes.fromhex("e803f401e803640001")  # 1000 ms, 500 ms, 1000 ms, 100 Hz, wake on motion
    assert thingy.rate_command(current, 50.0) == bytes.fromhex("e803f401e803320001")
    for rate_hz in (5.0, 25.0, 40.0, 200.0):
        thingy.rate_command(current, rate_hz)
    for rate_hz in (150.0, 60.0, 30.0, 4.0, 250.0):  # 150 and 60 would stream at 200 and 66.7 Hz
        with pytest.raises(ValueError):
            thingy.rate_command(current, rate_hz)
