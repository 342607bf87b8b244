"""The alert service's test helpers: its config and process, a phone subscribed to its alerts, a gateway's minutes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from support.day_messages import slouchy_minute
from support.mqtt import client, wait_for

DEVICE = "DeskSensor"


def zone_at(hour: int) -> str:
    """A time zone where it is now `hour`:xx, whatever hour the test runs. Etc/GMT+N is UTC−N (−12 to +14 east)."""
    east = hour - time.gmtime().tm_hour
    east += 24 if east < -12 else -24 if east > 14 else 0
    return f"Etc/GMT{'+' if east <= 0 else '-'}{abs(east)}"


def noon_zone() -> str:
    """A time zone where it is about noon now: the last hour's data and a summary time just past it fall on
    one local day at whatever hour the test runs."""
    return zone_at(12)


class Phone:
    """Subscribes to a wearer's alerts as a phone app does and keeps what arrives, with its MQTT properties."""

    def __init__(self, port: int, device: str = DEVICE, extra: tuple[str, ...] = ()):
        self.alerts: list[dict] = []
        self.texts: list[str] = []
        self.other: dict[str, list[mqtt.MQTTMessage]] = {}
        self.expiry: list[int | None] = []
        self.retained: list[bool] = []
        self.lock = threading.Lock()
        self.c = client(port)
        self.c.on_message = self._on_message
        topics = [f"posture/{device}/alerts", f"posture/{device}/alerts/text", *extra]
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *args: subscribed.set()
        self.c.subscribe([(t, 1) for t in topics])
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, c, u, msg):
        with self.lock:
            if msg.topic.endswith("/alerts"):
                self.alerts.append(json.loads(msg.payload))
                self.expiry.append(getattr(msg.properties, "MessageExpiryInterval", None))
                self.retained.append(bool(msg.retain))
            elif msg.topic.endswith("/alerts/text"):
                self.texts.append(msg.payload.decode())
            else:
                self.other.setdefault(msg.topic, []).append(msg)

    def today(self, device: str = DEVICE) -> dict:
        """The latest retained day-so-far document of a device ({} before the first)."""
        with self.lock:
            got = self.other.get(f"posture/{device}/today", [])
        return json.loads(got[-1].payload) if got else {}

    def kinds(self) -> list[str]:
        with self.lock:
            return [a["kind"] for a in self.alerts]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def write_config(tmp_path: Path, broker, rules: str, **alerts) -> Path:
    """The service's config; its time zone is one where it is about noon, so minutes from a few back to now fall on one
    local day (in UTC, a CI run a few minutes past midnight put a test's saved minutes on yesterday)."""
    (tmp_path / "rules.toml").write_text(rules)
    settings = {"state_path": str(tmp_path / "alerts.db"), "rules_path": str(tmp_path / "rules.toml"),
                "timezone": noon_zone(), **alerts}
    lines = [f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n\n[alerts]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "posture.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_alerts(config: Path, log: Path, *flags: str) -> subprocess.Popen:
    with open(log, "a") as out:  # the service writes to its own copy of the descriptor: ours is not needed open
        return subprocess.Popen([sys.executable, "-m", "posture.cli", "-v", "alerts", "--config", str(config), *flags],
                                stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def running_alerts(config: Path, log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """The service's process for the block: at its end, however the block ends, killed if it still runs and reaped,
    so that a failed test leaves no service behind to hold its broker session and state file."""
    proc = start_alerts(config, log, *flags)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_online(port: int, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """The service's retained availability says online only after it subscribed (its session exists): sent on the same
    connection after the SUBSCRIBE, so what is published from then on reaches it (as from its `connected`, set at the
    SUBACK; it was set as the SUBSCRIBE was queued, and a test that published then lost the lot once on a busy
    machine). proc: the service's process, when it runs as one."""
    seen = threading.Event()
    watcher = client(port)
    watcher.on_message = lambda c, u, m: seen.set() if m.payload == b"online" else seen.clear()
    watcher.subscribe("posture/_alerts/availability", 1)
    wait_for(lambda: seen.is_set() or (proc is not None and proc.poll() is not None), 30,
             "posture alerts to come online")
    watcher.loop_stop()
    if proc is not None:
        assert proc.poll() is None, "" if log is None else log.read_text()[-3000:]


def publish(port: int, messages: list[tuple[str, dict | bytes | str]], retain: bool = False) -> None:
    gateway = client(port, max_inflight=100)
    infos = []
    for topic, body in messages:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        infos.append(gateway.publish(topic, data, qos=1, retain=retain))
    for info in infos:
        info.wait_for_publish(10)
    gateway.loop_stop()
    gateway.disconnect()


def stop(proc: subprocess.Popen, log: Path) -> dict:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # posture's faulthandler: every thread's stack into the log
        time.sleep(1)
        pytest.fail("posture alerts did not stop on SIGTERM:\n" + log.read_text()[-6000:])
    assert proc.returncode == 0, log.read_text()[-3000:]
    return json.loads([ln for ln in log.read_text().splitlines() if ln.startswith("{")][-1])


BURST_RULES = """
[calibration]
enabled = false
[sitting]
cooldown_min = 120.0
[limits]
quiet_hours = ""
max_delay_s = 1000000
[habit]
summary_time = ""
"""


def sitting_minutes(devices: list[str], minutes: int) -> list[tuple[str, dict]]:
    """Minute by minute, each device's metrics as its gateway sends them, up to a few minutes ago: worn, sitting
    since long before (the sitting rule fires at each device's first minute, then its cooldown holds it)."""
    first_s = time.time() // 60 * 60 - (minutes + 5) * 60
    out = []
    for k in range(minutes):
        start_s = first_s + 60 * k
        for device in devices:
            doc = {**slouchy_minute(device, start_s), "slouch_s": 0.0, "sitting_since_s": first_s - 3600}
            out.append((f"posture/{device}/metrics", doc))
    return out


def at_last_minute(phone: Phone, devices: list[str], messages: list[tuple[str, dict]]) -> list[str]:
    """The devices whose retained day so far shows their last minute handled."""
    last = max(doc["ts"] for _, doc in messages) + 60_000
    return [d for d in devices if phone.today(d).get("ts") == last]


def queue_while_stopped(port: int, config: Path, log: Path, messages: list[tuple[str, dict]]) -> None:
    """The service's session and subscriptions exist (it ran once), and the broker keeps the messages for it."""
    service = start_alerts(config, log)
    try:
        wait_online(port, service, log)
    finally:
        stop(service, log)
    publish(port, messages)
