"""Configuration for `posture run`, `replay`, `bridge` and `alerts`: one TOML file, then environment, then flags.

Every key has a default; `POSTURE_<SECTION>_<KEY>` in the environment overrides the file (handy
for secrets); command-line flags override both. A bad value is one error line naming its key.

Frozen dataclasses and one coercion function rather than pydantic-settings or msgspec: the whole
job is six flat sections of str/int/float/bool/list values with the file < environment < flags
order, which is ~40 lines here; either library would add a compiled dependency (a wheel a Raspberry
Pi may have to build) and its own wording of errors, for no check we lack.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.detectors import LeanSettings, RotationSettings, SlouchSettings
from pipeline.events import CALIBRATION_MAX_AGE_S, RATE_HZ_DEFAULT, RATE_HZ_RANGE
from service_io.influx import InfluxSettings, duration_s, redact

if TYPE_CHECKING:
    from pipeline.stream import PipelineSettings


class ConfigError(ValueError):
    pass


MQTT_PROTOCOLS = ("5", "3.1.1")
SECRET_KEYS = ("password", "token", "username")  # never printed, also not in an error
MAX_SESSION_EXPIRY_S = 2**32 - 1  # MQTT 5's session expiry is a 32-bit number of seconds (this one: never)
INFLUX_APIS = ("auto", "v1", "v2")


def check_topic(key: str, topic: str) -> None:
    """Topic levels of our own: a wildcard made the bridge's paho thread die on SUBSCRIBE (the process looking up),
    the alert service's will invalid (retried for ever without a word). A level with spaces around it is a topic of
    its own to MQTT: " posture" in one service's file put it on other topics than the rest, each side waiting for the
    other and nothing said."""
    if not topic or any(not level or set(level) & set("+#\0") or level != level.strip() for level in topic.split("/")):
        raise ConfigError(f"{key}: one or more topic levels joined by '/', with no '+', '#', empty level or spaces "
                          f"around one, got {topic!r}")


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    tls_ca: str = ""  # CA file: set it to connect with TLS
    protocol: str = "5"  # "5" or "3.1.1"
    prefix: str = "posture"
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        # paho takes any other text as 3.1.1 without a word: "v5" would lose MQTT 5's refusals and expiry silently.
        if self.protocol not in MQTT_PROTOCOLS:
            raise ConfigError(f"mqtt.protocol: \"5\" or \"3.1.1\", got {self.protocol!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"mqtt.port: a TCP port from 1 to 65535, got {self.port!r}")
        if self.keepalive_s > 65535:  # MQTT's keep-alive is a 16-bit number of seconds
            raise ConfigError(f"mqtt.keepalive_s: at most 65535, got {self.keepalive_s!r}")
        if not self.host.strip():
            raise ConfigError("mqtt.host: the broker's host name or address, got nothing")
        # A port or a scheme in the host ("127.0.0.1:1883", "mqtt://…", "[::1]") was looked up as a name for ever,
        # said as "Name or service not known", which reads as a DNS outage. A bare IPv6 address ("::1") is a host.
        if "/" in self.host or self.host.startswith("[") or (self.host.count(":") == 1):
            raise ConfigError(f"mqtt.host: a host name or address alone (the port is mqtt.port), got {self.host!r}")
        # paho sends no credentials without a user name: the password was dropped without a word, and the broker
        # said only "Not authorized".
        if self.password and not self.username:
            raise ConfigError("mqtt.username: needed with mqtt.password (a password alone is never sent)")
        check_topic("mqtt.prefix", self.prefix)

    def __repr__(self) -> str:  # never print the password
        return f"MqttSettings(host={self.host!r}, port={self.port}, prefix={self.prefix!r})"


@dataclass(frozen=True)
class PipelineConfig:
    """[pipeline]: what a wearer may tune. The defaults are the pipeline's own (docs/pipeline.md)."""

    rate_hz: float = RATE_HZ_DEFAULT  # asked of the sensor by `posture run`; a replay uses the file's own
    slouch_threshold_deg: float = SlouchSettings.threshold_deg  # flexion beyond calibrated upright
    slouch_dwell_s: float = SlouchSettings.dwell_s  # held this long before it counts
    lean_threshold_deg: float = LeanSettings.threshold_deg
    lean_dwell_s: float = LeanSettings.dwell_s
    rotation_min_peak_deg: float = RotationSettings.min_peak_deg  # smaller twists are not counted
    # The moves are asked for again this long after the wearer made the calibration (0: never)
    calibration_max_age_h: float = CALIBRATION_MAX_AGE_S / 3600

    def __post_init__(self) -> None:
        # Values the pipeline could not work with, named with what would work.
        limits = {"rate_hz": RATE_HZ_RANGE, "slouch_dwell_s": (0.0, 3600.0), "lean_dwell_s": (0.0, 3600.0),
                  # Below its hysteresis a run would never end; beyond the largest twist none would count.
                  "slouch_threshold_deg": (SlouchSettings.hysteresis_deg, 90.0),
                  "lean_threshold_deg": (LeanSettings.hysteresis_deg, 90.0),
                  "rotation_min_peak_deg": (0.0, RotationSettings.max_peak_deg)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low < value < high:
                raise ConfigError(f"pipeline.{name}: must be above {low:g} and below {high:g}, got {value!r}")
        # Below an hour a calibration just made would be asked for again while the wearer still sits from making it
        # (and a negative age at once, a request after every calibration); NaN passes no comparison and never asks.
        if not (self.calibration_max_age_h == 0 or 1.0 <= self.calibration_max_age_h <= 24 * 365):
            raise ConfigError(f"pipeline.calibration_max_age_h: must be 0 (never) or from 1 to {24 * 365}, "
                              f"got {self.calibration_max_age_h!r}")

    def settings(self, rate_hz: float | None = None) -> PipelineSettings:
        """The pipeline's settings at rate_hz (default: rate_hz here) with this section's values."""
        from pipeline.stream import PipelineSettings  # the signal stack (scipy, vqf): only the processes that run it

        base = PipelineSettings.for_rate(self.rate_hz if rate_hz is None else rate_hz)
        return dataclasses.replace(
            base,
            slouch=dataclasses.replace(base.slouch, threshold_deg=self.slouch_threshold_deg,
                                       dwell_s=self.slouch_dwell_s),
            lean=dataclasses.replace(base.lean, threshold_deg=self.lean_threshold_deg, dwell_s=self.lean_dwell_s),
            rotation=dataclasses.replace(base.rotation, min_peak_deg=self.rotation_min_peak_deg),
            calibration=dataclasses.replace(base.calibration, max_age_s=self.calibration_max_age_h * 3600))


@dataclass(frozen=True)
class BridgeSettings:
    client_id: str = "posture-bridge"
    session_expiry_s: int = 7 * 24 * 3600  # the broker keeps our subscription and queue this long offline
    spool_path: str = "posture-bridge.spool"
    spool_max_points: int = 5_000_000
    batch_points: int = 5000
    flush_interval_s: float = 0.2
    dead_letter_topic: str = ""  # default: <prefix>/_deadletter
    # Several bridges splitting the messages: each subscribes through the MQTT 5 shared subscription
    # $share/<share_group>/<prefix>/+/…, and the broker hands each message to one member. Empty: no sharing.
    share_group: str = ""

    def __post_init__(self) -> None:
        for name in ("spool_max_points", "batch_points"):  # 0 would hold nothing, or write in batches of nothing
            if getattr(self, name) < 1:
                raise ConfigError(f"bridge.{name}: at least 1, got {getattr(self, name)!r}")
        if not self.flush_interval_s > 0:
            raise ConfigError(f"bridge.flush_interval_s: above 0, got {self.flush_interval_s!r}")
        if self.dead_letter_topic:
            check_topic("bridge.dead_letter_topic", self.dead_letter_topic)
        check_session_expiry("bridge", self.session_expiry_s)
        # An empty client id: the broker would make one up at each connect, no session to come back to.
        check_given("bridge", self, {"client_id": "it names the persistent session",
                                     "spool_path": "the file that holds what InfluxDB has not taken"})
        # The group is one level of a topic filter: a wildcard or separator in it would make another filter (or an
        # invalid one the broker refuses only at SUBSCRIBE, after the bridge has started and looks healthy).
        if self.share_group and (bad := next((c for c in "/+#\0" if c in self.share_group), None)) is not None:
            raise ConfigError(f"bridge.share_group: a name without '/', '+', '#' or NUL, got {self.share_group!r} "
                              f"(contains {bad!r})")
        if self.share_group != self.share_group.strip():
            raise ConfigError(f"bridge.share_group: no spaces around the name, got {self.share_group!r}")


def check_given(section: str, settings: object, names: dict[str, str]) -> None:
    """Each of `names` (a setting: what it is for) holds more than spaces. Left empty they were taken as given: SQLite
    opens a temporary database for "" (a spool or the alert state gone at every restart, unsaid), a spool dir of ""
    is the working directory, and a gateway's client id of "" made `-<device>`, the same at every gateway."""
    for name, why in names.items():
        if not str(getattr(settings, name)).strip():
            raise ConfigError(f"{section}.{name}: must not be empty ({why})")


def check_session_expiry(section: str, value_s: int) -> None:
    if value_s > MAX_SESSION_EXPIRY_S:  # beyond, paho's thread died with a struct.error, the service looking up
        raise ConfigError(f"{section}.session_expiry_s: at most {MAX_SESSION_EXPIRY_S} (never expires), got "
                          f"{value_s!r}")


# The alert service counts a slouch over only on live states at most 3 s apart (alerts/engine.py's LIVE_MAX_GAP_S;
# the Live dashboard bridges no longer gap either): below 0.5 a second it never saw a slouch nudged live over, so no
# "recovered" came and no slouch was nudged live again. A live state goes out with the first batch in its grid step,
# up to a batch (and a notification) after the step begins, hence a second's margin, as for pipeline_batch_s; 0
# (no live stream) leaves the slouch to the minute-based rules. More than 10 a second is more than a dashboard or a
# phone can use, and each one is a point in InfluxDB.
LIVE_HZ_MIN, LIVE_HZ_MAX = 0.5, 10.0
# The gateway sends one live message per pipeline batch: longer batches than this broke the alert service's slouch
# follow-up as a low live_hz does (above). A batch runs over batch_s by up to a notification (under 0.6 s) and a lost
# one, hence a second's margin; everything else (a nudge, a minute, an event) waits for its batch too.
MAX_PIPELINE_BATCH_S = 2.0


@dataclass(frozen=True)
class GatewaySettings:
    client_id: str = "posture-gateway"
    spool_dir: str = "posture-gateway.spool"  # a directory: one spool file per device
    spool_max_messages: int = 1_000_000
    adapter: str = ""
    sensors: tuple[str, ...] = ()  # names or addresses; empty: the first posture sensor found
    # Each device's retained status goes out when something a reader sees changed, at once for online, battery and
    # reconnects (three in a row, then one per status_interval_s: a link that flaps, gateway/status_flaps.py); a
    # change of only counters, link quality or signal no sooner than status_interval_s after the last status (a lossy
    # link changes them all the time); and unchanged every status_heartbeat_s ("last heard").
    status_interval_s: float = 10.0
    status_heartbeat_s: float = 60.0
    publish_imu: bool = False
    pipeline_batch_s: float = 1.0  # samples handed to the pipeline at a time (0: every notification)
    # Live states a second per device on <prefix>/<device>/live (0: none; else 0.5 to 10: LIVE_HZ_MIN), in one message
    # per pipeline batch: the batch's latest sample in its fields, the states due before it in the batch in `earlier`.
    live_hz: float = 1.0

    def __post_init__(self) -> None:
        check_given("gateway", self, {"client_id": "each device connects as <client_id>-<device>",
                                      "spool_dir": "the directory that holds what the broker has not taken"})
        if self.spool_max_messages < 1:  # 0 would drop every result as it is spooled
            raise ConfigError(f"gateway.spool_max_messages: at least 1, got {self.spool_max_messages!r}")
        if not self.status_interval_s > 0:
            raise ConfigError(f"gateway.status_interval_s: must be above 0, got {self.status_interval_s!r}")
        if not self.status_heartbeat_s >= self.status_interval_s:
            raise ConfigError(f"gateway.status_heartbeat_s: must be at least gateway.status_interval_s "
                              f"({self.status_interval_s:g}), got {self.status_heartbeat_s!r}")
        if not (self.live_hz == 0 or LIVE_HZ_MIN <= self.live_hz <= LIVE_HZ_MAX):
            raise ConfigError(f"gateway.live_hz: must be 0 (no live stream) or from {LIVE_HZ_MIN:g} (the alert service "
                              f"follows a slouch on live states at most 3 s apart) to {LIVE_HZ_MAX:g}, "
                              f"got {self.live_hz!r}")
        if not 0 <= self.pipeline_batch_s <= MAX_PIPELINE_BATCH_S:
            raise ConfigError(f"gateway.pipeline_batch_s: from 0 (each notification alone) to "
                              f"{MAX_PIPELINE_BATCH_S:g} s, got {self.pipeline_batch_s!r}")
        # So a batch's live states (at most LIVE_HZ_MAX × MAX_PIPELINE_BATCH_S = 20) always fit in one message (at most
        # 101: pipeline/live.py's MAX_EARLIER + 1; tests/test_messages.py holds the two to it).


# Each partition is an MQTT session that receives every message and keeps its devices' (docs/scaling.md): more
# partitions than instances a deployment will ever run only multiply that.
MAX_ALERT_PARTITIONS = 64
INSTANCE_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")  # one topic level, and part of a client id


@dataclass(frozen=True)
class AlertsSettings:
    client_id: str = "posture-alerts"
    state_path: str = "posture-alerts.db"  # SQLite: per-device state and the alerts not yet acknowledged
    rules_path: str = ""  # TOML overriding some thresholds of alerts/rules.toml; empty: its defaults
    stretches_path: str = ""  # a stretch catalog of your own; empty: alerts/stretches.toml
    timezone: str = ""  # IANA name (Europe/Berlin) for days, quiet hours, summary time; empty: the machine's
    session_expiry_s: int = 7 * 24 * 3600
    ha_discovery: bool = True  # Home Assistant MQTT discovery configs (retained)
    ha_prefix: str = "homeassistant"
    # Several instances splitting the devices (docs/scaling.md): each device belongs to one of `partitions`, and
    # each partition to one running instance at a time. Every instance of a deployment has the same value; 1: one
    # instance, no splitting. `instance` names this one among them (empty: host name and process id).
    partitions: int = 1
    instance: str = ""

    def __post_init__(self) -> None:
        check_session_expiry("alerts", self.session_expiry_s)
        check_topic("alerts.ha_prefix", self.ha_prefix)
        check_given("alerts", self, {"client_id": "it names the persistent session",
                                     "state_path": "the file that keeps every device's day and streak"})
        if not 1 <= self.partitions <= MAX_ALERT_PARTITIONS:
            raise ConfigError(f"alerts.partitions: a whole number from 1 to {MAX_ALERT_PARTITIONS}, "
                              f"got {self.partitions!r}")
        if self.instance and not INSTANCE_PATTERN.fullmatch(self.instance):
            raise ConfigError(f"alerts.instance: letters, digits, '.', '_' or '-' (at most 64), "
                              f"got {self.instance!r}")


@dataclass(frozen=True)
class Config:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)


_CLASSES = {"mqtt": MqttSettings, "pipeline": PipelineConfig, "influx": InfluxSettings, "bridge": BridgeSettings,
            "gateway": GatewaySettings, "alerts": AlertsSettings}


# Keys that were renamed: said so, rather than "unknown key" from a file, or silence from the environment.
RENAMED = {("gateway", "spool_path"): "spool_dir"}


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    raw = read_toml(path, "config file") if path is not None else {}
    env = os.environ if env is None else env
    sections = {}
    for name, cls in _CLASSES.items():
        given = raw.pop(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{name}] must be a table")
        for (section, old), new in RENAMED.items():
            if section == name and (old in given or f"POSTURE_{name.upper()}_{old.upper()}" in env):
                raise ConfigError(f"{name}.{old} is now {name}.{new} (POSTURE_{name.upper()}_{new.upper()})")
        for f in dataclasses.fields(cls):
            if (value := env.get(f"POSTURE_{name.upper()}_{f.name.upper()}")) is not None:
                given[f.name] = value
        given.update({k: v for k, v in (overrides or {}).get(name, {}).items() if v is not None})
        sections[name] = build_section(name, cls, given)
    check_environment(env)
    check_influx(sections["influx"])
    check_sharing(sections["mqtt"], sections["bridge"])
    if raw:
        raise ConfigError(f"unknown section [{next(iter(raw))}]; known: {', '.join(_CLASSES)}")
    return Config(**sections)


# Kubernetes gives every container <SERVICE>_SERVICE_HOST, _SERVICE_PORT[_<name>] and _PORT[_<n>_<proto>[_…]] for each
# Service in its namespace: a Service named posture-bridge is POSTURE_BRIDGE_SERVICE_HOST, no typo of ours.
_SERVICE_VARIABLE = re.compile(r"_SERVICE_(HOST|PORT(_\w+)?)$|_PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?$")


def check_environment(env: Mapping[str, str]) -> None:
    """A POSTURE_ variable that looks like a setting and names none is refused, as an unknown key in the file is: a
    typo (POSTURE_MQTT_HOTS, POSTURE_MQQT_HOST) was ignored, and the service ran against the default with no word of
    why. Others (a wrapper's POSTURE_HOME, Kubernetes' service variables) are none of ours and left alone."""
    renamed = {f"POSTURE_{section.upper()}_{old.upper()}" for section, old in RENAMED}
    known = {f"POSTURE_{name.upper()}_{f.name.upper()}" for name, cls in _CLASSES.items()
             for f in dataclasses.fields(cls)}
    for var in sorted(v for v in env if v.startswith("POSTURE_") and v not in renamed and v not in known):
        if _SERVICE_VARIABLE.search(var):
            continue
        section, _, key = var.removeprefix("POSTURE_").lower().partition("_")
        if section not in _CLASSES:
            if not (near := difflib.get_close_matches(section, _CLASSES, n=1, cutoff=0.7)):
                continue  # no section of ours misspelt: someone else's variable
            section = near[0]
        keys = [f.name for f in dataclasses.fields(_CLASSES[section])]
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"did you mean POSTURE_{section.upper()}_{close[0].upper()}?" if close else \
            f"[{section}] has {', '.join(keys)}"
        raise ConfigError(f"environment variable {var} names no setting; {hint}")


# InfluxDB 1.x refuses a retention policy shorter than an hour.
MIN_RETENTION_S = 3600.0


def check_influx(settings: InfluxSettings) -> None:
    """[influx] values that would fail only later: at the bridge's first write, or as an outage that never ends."""
    if settings.api not in INFLUX_APIS:
        raise ConfigError(f"influx.api: one of {', '.join(INFLUX_APIS)}, got {settings.api!r}")
    try:
        parts = urllib.parse.urlsplit(settings.url)
    except ValueError:  # "http://[::1": else one line naming neither key nor value ("Invalid IPv6 URL")
        parts = urllib.parse.urlsplit("")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:  # else every write fails as an outage
        raise ConfigError(f"influx.url: an http:// or https:// address with a host, got {redact(settings.url)!r}")
    try:
        port = parts.port  # ValueError: not a number, or beyond 65535
    except ValueError:
        port = 0
    if port == 0:  # a word, not a number: the bridge's first write and the report died with a traceback (InvalidURL);
        # beyond 65535 or 0: an outage that never ends
        raise ConfigError(f"influx.url: the port must be a number from 1 to 65535, got {redact(settings.url)!r}")
    # Else said only at the first write; the v1 API (and the report's queries) need the database itself.
    if not settings.database.strip() and (settings.api == "v1" or not settings.bucket.strip()):
        raise ConfigError("influx.database: the database to write to (or influx.bucket on the v2 API), got nothing")
    retention_s = duration_s(settings.live_retention)
    if retention_s is None or retention_s < MIN_RETENTION_S:
        raise ConfigError(f"influx.live_retention: must be an InfluxQL duration of at least 1h (e.g. 7d, 72h) or "
                          f"INF, got {settings.live_retention!r}")


SHARE = "$share/"  # MQTT 5's shared-subscription form of a topic filter


def check_sharing(mqtt: MqttSettings, bridge: BridgeSettings) -> None:
    """Settings that cannot split the bridge's messages, refused before anything connects."""
    if mqtt.prefix.startswith(SHARE):
        # The old way to run two bridges: a shared filter as the prefix, which is no topic anyone may publish to (the
        # gateway's messages, the bridge's dead letters).
        raise ConfigError(f"mqtt.prefix: {mqtt.prefix!r} is a shared subscription, not a topic prefix; keep the "
                          f"gateway's prefix and set bridge.share_group instead (docs/mqtt.md)")
    if bridge.share_group and mqtt.protocol != "5":
        # Shared subscriptions are MQTT 5; a 3.1.1 broker takes $share/… as an ordinary filter that matches nothing,
        # and the bridge would receive nothing while looking connected.
        raise ConfigError(f"bridge.share_group needs mqtt.protocol = \"5\" (shared subscriptions are MQTT 5), got "
                          f"{mqtt.protocol!r}")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; a missing or broken file is one error line naming it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8: a file in another encoding
        raise ConfigError(f"{what} {path}: {exc}") from None
    except OSError as exc:  # a directory, a file it may not read: said with the file, as the rest
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


def build_section(section: str, cls: type, given: dict[str, Any]) -> Any:
    """cls(**given) with each value checked against the type of the field's default."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in given.items():
        if key not in fields:
            raise ConfigError(f"unknown key {section}.{key}; known: {', '.join(fields)}")
        default = fields[key].default if fields[key].default is not dataclasses.MISSING else ()
        values[key] = _coerce(f"{section}.{key}", value, type(default))
    built = cls(**values)  # its own checks first: they say what would work
    for key, value in values.items():
        # Every count, port, size, rate and time here is 0 or more ("nan" from the environment compares false).
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value < math.inf:
            raise ConfigError(f"{section}.{key}: a number of 0 or more, got {value!r}")
    return built


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Values from TOML arrive typed, from the environment as text: accept both, refuse the rest."""
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is tuple:
            if isinstance(value, str) and value.strip().startswith("["):
                # A list written as TOML's (the file's way) in a variable became the names '["a"' and '"b"]'. Read as
                # TOML, as the file is: its literal strings ('a') and a comma after the last item are the file's too.
                items = tomllib.loads(f"v = {value}")["v"]
            else:
                items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return tuple(i.strip() for i in items if i.strip())
        if kind is str and isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # an unquoted number of digits (a password, a client id): what was meant
        if kind is str and not isinstance(value, str):  # 1883.9, true, a list: not text anyone meant
            raise ValueError
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError
        if kind is int and isinstance(value, float) and not value.is_integer():  # int(1883.9) would say 1883
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        shown = "a value of another type" if key.endswith(SECRET_KEYS) else repr(value)
        raise ConfigError(f"{key}: expected {kind.__name__ if kind is not tuple else 'a list of strings'}, "
                          f"got {shown}") from None
