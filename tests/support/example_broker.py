"""Mosquitto run with the shipped configs (deploy/mosquitto/mosquitto.conf.example, deploy/compose/mosquitto.conf),
changed only where a test must: ports, file paths, running as root in pytest's dirs. So the tests check the
files users copy, not a copy of their settings."""

from __future__ import annotations

from pathlib import Path

from posture.local_servers import PathLike
from support.servers import SecuredMosquitto

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf.example"
EXAMPLE_ACL = ROOT / "deploy" / "mosquitto" / "acl.example"
COMPOSE_CONF = ROOT / "deploy" / "compose" / "mosquitto.conf"

# The durability settings both shipped configs carry (mosquitto.conf.example says why each).
DURABILITY_KEYS = ("persistence", "autosave_on_changes", "autosave_interval", "max_queued_messages",
                   "queue_qos0_messages", "persistent_client_expiration")


def settings(text: str, keys: tuple[str, ...] = DURABILITY_KEYS) -> dict[str, str]:
    """key -> value of the config lines (comments skipped) whose key is in keys."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key in keys:
            found[key] = value.strip()
    return found


def replace_once(text: str, old: str, new: str, source: Path) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"{source.relative_to(ROOT)} no longer has exactly one {old!r}: update {__file__}")
    return text.replace(old, new)


class ShippedMosquitto(SecuredMosquitto):
    """Mosquitto on a free port with a shipped config file; `text` (default: the file) may stand in for it,
    e.g. an older version of the file, to show what the test would have caught."""

    def __init__(self, workdir: PathLike, source: Path, *, text: str | None = None,
                 password_file: PathLike | None = None, tls: dict[str, str] | None = None) -> None:
        super().__init__(workdir, password_file=password_file, acl_file=EXAMPLE_ACL if password_file else None,
                         tls=tls)
        self.source = source
        self.text = source.read_text() if text is None else text

    def config(self) -> str:
        text, src = self.text, self.source
        if src == EXAMPLE_CONF:
            if self.password_file is None or self.tls is None:
                raise ValueError("the example config needs a password file and a TLS CA")
            text = replace_once(text, "listener 1883 127.0.0.1\n", f"listener {self.port} {self.host}\n", src)
            text = replace_once(text, "listener 8883\n", f"listener {self.tls_port} {self.host}\n", src)
            text = replace_once(text, "/etc/mosquitto/posture.passwd", str(self.password_file), src)
            text = replace_once(text, "/etc/mosquitto/posture.acl", str(self.acl_file), src)
            for key, name in (("cafile", "ca.crt"), ("certfile", "server.crt"), ("keyfile", "server.key")):
                text = replace_once(text, f"/etc/mosquitto/certs/{name}", self.tls[key], src)
            # What Debian's /etc/mosquitto/mosquitto.conf adds around conf.d/.
            text += f"persistence_location {self.workdir / 'data'}/\n"
        elif src == COMPOSE_CONF:
            text = replace_once(text, "listener 1883\n", f"listener {self.port} {self.host}\n", src)
            text = replace_once(text, "persistence_location /mosquitto/data/\n",
                                f"persistence_location {self.workdir / 'data'}/\n", src)
        else:
            raise ValueError(f"no adaptation known for {src}")
        # As root, mosquitto would drop to user "mosquitto", who cannot enter pytest's 0700 tmp dirs.
        return text + "user root\nlog_dest stderr\n"
