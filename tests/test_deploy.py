"""deploy/ and docker-compose.yml as users get them (issue 12, item 8): the ACL run by real Mosquitto, a wrong
mqtt.tls_ca named in one line, and the Docker build context and compose file checked without a Docker daemon.

Docker's .dockerignore rules are not gitignore's (a bare `*` then `!report/` keeps report/ for Docker and
drops it for git), so the build context is computed with docker-py's matcher, a port of moby's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from docker.utils.build import PatternMatcher

from posture.local_servers import http, which
from service_io.config import ConfigError, MqttSettings
from service_io.mqtt import MqttEndpoint
from support.example_broker import (
    COMPOSE_CONF,
    DURABILITY_KEYS,
    EXAMPLE_CONF,
    ShippedMosquitto,
    settings,
)
from support.mqtt import client, start_or_fail, wait_for
from support.servers import make_password_file, make_test_ca

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_YAML = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "vendor" / "compose-spec" / "compose-spec.json"


# --- the ACL (deploy/mosquitto/acl.example) ---------------------------------------------------------------

PASSWORDS = {"posture-gateway": "gw-Secret-1", "posture-bridge": "br-Secret-2", "posture-alerts": "al-Secret-4",
             "homeassistant": "ha-Secret-5", "phone-desk": "ph-Secret-3"}
D = "posture/DeskSensor"
HA_CONFIG = "homeassistant/sensor/posture_DeskSensor/slouch/config"
# (publishing account, topic, account that would read it, delivered?). Each topic that is refused to one
# account is delivered from the account whose job it is, so a refusal is the ACL's and not a lost message.
CASES = [
    ("posture-gateway", f"{D}/metrics", "posture-bridge", True),
    ("posture-gateway", f"{D}/events", "posture-bridge", True),
    ("posture-gateway", f"{D}/status", "posture-bridge", True),
    ("posture-gateway", f"{D}/live", "posture-bridge", True),
    ("posture-gateway", f"{D}/live", "posture-alerts", True),  # the real-time nudge
    ("posture-gateway", f"{D}/live", "homeassistant", True),  # its live entities
    ("posture-gateway", f"{D}/live", "phone-desk", True),
    ("posture-gateway", "posture/OtherDesk/live", "phone-desk", False),  # another wearer, live
    ("posture-alerts", f"{D}/live", "posture-bridge", False),  # a fake live state
    ("posture-gateway", f"{D}/alerts", "phone-desk", False),  # a fake alert on the wearer's phone
    ("posture-gateway", f"{D}/alerts/text", "phone-desk", False),
    ("posture-gateway", f"{D}/today", "phone-desk", False),
    ("posture-gateway", f"{D}/today", "posture-bridge", False),  # a fake day so far stored
    ("posture-gateway", f"{D}/alerts/log", "posture-bridge", False),  # a fake alert stored
    ("posture-gateway", HA_CONFIG, "homeassistant", False),  # a fake Home Assistant entity
    ("posture-gateway", "posture/_alerts/availability", "homeassistant", False),
    ("posture-alerts", f"{D}/alerts", "phone-desk", True),
    ("posture-alerts", f"{D}/alerts/text", "phone-desk", True),
    ("posture-alerts", f"{D}/today", "phone-desk", True),
    ("posture-alerts", f"{D}/alerts/log", "posture-bridge", True),
    ("posture-alerts", f"{D}/today", "posture-bridge", True),  # the Daily dashboard's program day and zone
    ("posture-alerts", HA_CONFIG, "homeassistant", True),
    ("posture-alerts", "posture/_alerts/availability", "homeassistant", True),
    ("posture-alerts", "posture/_alerts/availability", "posture-alerts", True),  # another instance's will
    ("posture-alerts", "posture/_alerts/members/node-1", "posture-alerts", True),  # instances of a split service
    ("posture-gateway", "posture/_alerts/members/node-1", "posture-alerts", False),  # a fake instance
    ("posture-alerts", f"{D}/metrics", "posture-bridge", False),  # fake results
    ("posture-bridge", f"{D}/alerts", "phone-desk", False),
    ("posture-bridge", f"{D}/metrics", "posture-alerts", False),
    ("phone-desk", f"{D}/alerts/snooze", "posture-alerts", True),
    ("phone-desk", "posture/OtherDesk/alerts/snooze", "posture-alerts", False),  # another wearer's alerts
    ("phone-desk", f"{D}/alerts", "phone-desk", False),
]


def test_each_account_writes_only_its_own_topics(tmp_path):
    broker = ShippedMosquitto(tmp_path / "mosquitto", EXAMPLE_CONF,
                              password_file=make_password_file(tmp_path / "passwd", PASSWORDS),
                              tls=make_test_ca(tmp_path / "ca"))
    start_or_fail(broker)
    clients: dict[str, mqtt.Client] = {}
    try:
        got: dict[str, list[bytes]] = {user: [] for user in PASSWORDS}
        subscribed = threading.Barrier(len(PASSWORDS) + 1, timeout=10)
        for user, password in PASSWORDS.items():
            c = client(broker.port, user=(user, password), client_id=f"acl-{user}")
            c.on_message = lambda _c, _u, msg, user=user: got[user].append(msg.payload)
            c.on_subscribe = lambda *_: subscribed.wait()
            c.subscribe("#", qos=1)  # the ACL filters each delivery by the reader's `topic read` lines
            clients[user] = c
        subscribed.wait()
        for k, (publisher, topic, _, _) in enumerate(CASES):
            clients[publisher].publish(topic, f"case {k}", qos=1).wait_for_publish(10)
        expected = {(reader, f"case {k}".encode()) for k, (_, _, reader, ok) in enumerate(CASES) if ok}
        wait_for(lambda: expected <= {(u, p) for u, ps in got.items() for p in ps}, 10, "every allowed delivery")
        time.sleep(0.5)  # a refused one would have arrived by now too
        leaked = [CASES[k] for k, (_, _, reader, ok) in enumerate(CASES)
                  if not ok and f"case {k}".encode() in got[reader]]
        assert not leaked, f"delivered though the ACL should refuse them: {leaked}"
    finally:
        for c in clients.values():
            c.loop_stop()
        broker.kill()


# --- mqtt.tls_ca: a wrong file is named in one line -----------------------------------------------------


def test_a_missing_tls_ca_names_the_key_and_the_file(tmp_path):
    missing = tmp_path / "no-such-ca.crt"
    config = tmp_path / "posture.toml"
    config.write_text(f'[mqtt]\ntls_ca = "{missing}"\n\n[alerts]\nstate_path = "{tmp_path / "alerts.db"}"\n')
    run = subprocess.run([sys.executable, "-m", "posture.cli", "alerts", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.tls_ca" in lines[0] and str(missing) in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_a_tls_ca_that_is_no_certificate_names_the_key_and_the_file(tmp_path):
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^mqtt\.tls_ca: .*" + re.escape(str(not_pem))):
        MqttEndpoint(MqttSettings(tls_ca=str(not_pem)), "probe")


# --- the Docker build context (deploy/compose/Dockerfile + Dockerfile.dockerignore) ------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE_YAML.read_text())


def dockerfile_and_ignore() -> tuple[Path, Path]:
    """The Dockerfile compose builds from, and the ignore file BuildKit reads for it (<Dockerfile>.dockerignore
    beside it takes the place of the context's .dockerignore)."""
    builds = {s["build"]["dockerfile"] for s in compose()["services"].values() if "build" in s}
    assert len(builds) == 1, builds
    dockerfile = ROOT / builds.pop()
    return dockerfile, dockerfile.with_name(dockerfile.name + ".dockerignore")


def ignore_patterns(path: Path) -> list[str]:
    # As docker-py's build() reads .dockerignore: blank lines and comments are not patterns.
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.split()[:1] in (["COPY"], ["ADD"]):  # one line each in this Dockerfile
            args = [w for w in shlex.split(line)[1:] if not w.startswith("--")]
            sources += args[:-1]
    return sources


def left_out(sources: list[str], patterns: list[str]) -> list[str]:
    """Files under the COPY sources that the ignore patterns keep out of the build context. __pycache__ and
    *.pyc are build by-products, not sources, and the ignore file drops them on purpose."""
    matcher = PatternMatcher(patterns)
    missing = []
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"]
        assert files, f"COPY {source}: nothing there"
        missing += [str(f.relative_to(ROOT)) for f in files if matcher.matches(str(f.relative_to(ROOT)))]
    return missing


def test_every_copy_source_is_in_the_build_context():
    dockerfile, ignore = dockerfile_and_ignore()
    assert ignore.is_file(), f"{ignore} is missing: the whole repository would be the build context"
    sources = copy_sources(dockerfile)
    assert "report/" in sources and "pyproject.toml" in sources
    assert left_out(sources, ignore_patterns(ignore)) == []


def test_the_context_check_catches_a_left_out_folder():
    """Issue 12: the ignore file once left out report/, which the Dockerfile copies."""
    dockerfile, ignore = dockerfile_and_ignore()
    without_report = [p for p in ignore_patterns(ignore) if p != "!report/"]
    missing = left_out(copy_sources(dockerfile), without_report)
    assert missing and all(path.startswith("report/") for path in missing)


# --- docker-compose.yml ------------------------------------------------------------------------------------


def compose_errors(doc: dict) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_compose_file_follows_the_compose_spec():
    assert compose_errors(compose()) == []
    broken = compose()
    broken["services"]["mosquitto"]["healthchek"] = broken["services"]["mosquitto"].pop("healthcheck")
    assert compose_errors(broken), "the schema check accepts a misspelt key: it checks nothing"


def test_compose_publishes_ports_on_localhost_only_and_checks_every_service():
    services = compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for needed, how in (service.get("depends_on") or {}).items():
            assert how == {"condition": "service_healthy"}, f"{name} starts before {needed} answers"


def test_compose_broker_keeps_the_example_durability():
    """One set of durability settings: the compose broker's are the example's (which says why)."""
    example = settings(EXAMPLE_CONF.read_text())
    assert set(example) == set(DURABILITY_KEYS)
    assert settings(COMPOSE_CONF.read_text()) == example


def compose_healthcheck(service: str) -> list[str]:
    test = compose()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [word.replace("$$", "$") for word in test[1:]]  # compose's escape for a literal $


def test_the_broker_healthcheck_passes_on_the_compose_broker(tmp_path):
    broker = start_or_fail(ShippedMosquitto(tmp_path / "mosquitto", COMPOSE_CONF))
    try:
        command = compose_healthcheck("mosquitto")
        command[0] = which(command[0], "mosquitto-clients")
        command[command.index("-p") + 1] = str(broker.port)
        run = subprocess.run(command, capture_output=True, text=True, timeout=10)
        assert run.returncode == 0, run.stderr
    finally:
        broker.kill()


def test_the_influxdb_healthcheck_url_answers(influx):
    command = compose_healthcheck("influxdb")
    url = command[-1].replace("127.0.0.1:8086", f"{influx.host}:{influx.port}")
    status, _, _ = http("GET", url)
    assert 200 <= status < 300


@pytest.mark.parametrize("service", ["bridge", "alerts"])
def test_the_service_healthcheck_sees_an_mqtt_connection(broker, service):
    """Healthy while the process holds an established connection to the broker's port, not otherwise."""
    python, flag, code = compose_healthcheck(service)
    assert (python, flag) == ("python", "-c") and ":075B'" in code  # 1883
    code = code.replace(":075B'", f":{broker.port:04X}'")

    def healthy() -> bool:
        return subprocess.run([sys.executable, "-c", code], timeout=10, env=os.environ).returncode == 0

    assert not healthy()
    c = client(broker.port)
    try:
        assert healthy()
    finally:
        c.disconnect()
        c.loop_stop()
    wait_for(lambda: not healthy(), 10, "the healthcheck to see the connection gone")
