"""Which device a message is about: the id every topic, spool file, calibration file and InfluxDB series
is keyed by, derived from the sensor's human name, and the rule that a payload's device is its topic's.

The id must be safe in an MQTT topic level and an InfluxDB tag (ID_PATTERN, as in contract/schemas/*.json),
stable across runs, and different for different names. A name already safe is its own id, so the data of
everyone whose sensor has a plain name (or only an address) keeps its id. Any other name becomes a
readable slug plus `-` and the first HASH_HEX hex digits of its SHA-256. A hashed id always ends in that
suffix, so a safe name ending in it is hashed too: otherwise the name `x-0123456789` could be another
name's id. Two names then share an id only if their slugs and 40 bits of their hashes agree (odds of
about one in 10^12 for a pair; the slug differs for most pairs anyway).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from contract.validation import Malformed

MAX_ID_LEN = 64
ID_CHARS = "A-Za-z0-9_.:-"
ID_PATTERN = re.compile(f"[{ID_CHARS}]{{1,{MAX_ID_LEN}}}")
HASH_HEX = 10
_HASHED_SUFFIX = re.compile(f"-[0-9a-f]{{{HASH_HEX}}}$")
_UNSAFE_RUN = re.compile(f"[^{ID_CHARS}]+")


def device_id(name: str) -> str:
    """The topic- and tag-safe id of a sensor's advertised name (or address); see the module's doc."""
    if ID_PATTERN.fullmatch(name) and not _HASHED_SUFFIX.search(name):
        return name
    # Accents dropped (é → e) so a Latin name stays readable; other scripts leave only the hash to tell apart.
    ascii_name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    slug = _UNSAFE_RUN.sub("_", ascii_name).strip("_")[:MAX_ID_LEN - HASH_HEX - 1] or "sensor"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:HASH_HEX]}"


_CONTROL = re.compile("[\x00-\x1f\x7f]")  # what contract/schemas/status.json refuses in sensor_name


def shown_name(name: str | None) -> str | None:
    """A sensor's advertised name as status messages carry it: control characters (a NUL, a newline) become
    spaces, and it is cut to BLE's 248 bytes' worth of characters. The id is derived from the name as advertised."""
    return None if name is None else _CONTROL.sub(" ", name)[:248]


def topic_device(topic: str) -> str:
    """`posture/DeskSensor/metrics` and `posture/DeskSensor/alerts/log` → `DeskSensor` (the prefix may have levels)."""
    parts = topic.split("/")
    return parts[-3] if parts[-2:] == ["alerts", "log"] else parts[-2] if len(parts) >= 2 else ""


def check_device(topic: str, doc: dict[str, Any]) -> None:
    """A validated payload must be about the device of the topic it came on: a publisher allowed one device's
    topics (the ACL) must not write another device's data, and a mixed-up gateway must not merge two series."""
    if doc.get("device") != (device := topic_device(topic)):
        raise Malformed(f"device: payload device {str(doc.get('device'))[:70]!r} is not the topic's {device[:70]!r}")
