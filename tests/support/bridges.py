"""`posture bridge` as a member of a share group, in a subprocess with its own client id, spool and log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path


class BridgeProcess:
    """`posture bridge` as a member of the share group, with its own client id and spool, logging to a file."""

    def __init__(self, config: Path, name: str) -> None:
        self.config, self.name = config, name
        self.log = config.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *flags: str) -> BridgeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "posture.cli", "-v", "bridge", "--config", str(self.config),
             "--client-id", f"posture-bridge-{self.name}", "--spool", str(self.config.parent / f"{self.name}.spool"),
             *flags], stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        return self

    def connections(self) -> int:
        return self.log.read_text().count("bridge: connected to MQTT") if self.log.exists() else 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> dict:
        """Stopped cleanly: its counters (the last JSON line it prints)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        stats = [line for line in self.log.read_text().splitlines() if line.startswith("{")]
        return json.loads(stats[-1]) if stats else {}
