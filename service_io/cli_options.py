"""Options every service's subcommand shares (`--config`, `--mqtt-host`, …) and how they become a Config.

Light on purpose: `posture <cmd> --help` imports this, and service_io.config brings in the pipeline
(numpy, scipy) and the InfluxDB client, so it is imported only once a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service_io.config import Config


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (docs/mqtt.md lists the keys)")
    p.add_argument("--mqtt-host", help="broker host (mqtt.host)")
    p.add_argument("--mqtt-port", type=int, help="broker port (mqtt.port)")
    p.add_argument("--prefix", help="topic prefix (mqtt.prefix, default posture)")


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A bad config value (file, environment, rules) as one "config: …" line, not a traceback:
    `posture` prints a ValueError as one line."""
    from service_io.config import ConfigError

    try:
        yield
    except ConfigError as exc:
        raise ValueError(f"config: {exc}") from None


def config_from(args: argparse.Namespace, **sections: dict[str, Any]) -> Config:
    """The config file with what the command line sets on top."""
    from service_io.config import load_config

    mqtt = {"host": args.mqtt_host, "port": args.mqtt_port, "prefix": args.prefix}
    with config_errors():
        return load_config(args.config, overrides={"mqtt": mqtt, **sections})


def stop_on_signals(callback: Callable[[], object]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: callback())
