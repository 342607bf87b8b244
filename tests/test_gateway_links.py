"""The gateway's hold on its sensors' links: a rate a sensor cannot stream, a link that stopped on an error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

import gateway.service as gateway
from gateway.service import _restart_stopped_links, check_rate


def test_a_rate_the_sensor_cannot_stream_is_said_at_the_start():
    for profile in ("native", "witmotion", "thingy52", None):
        check_rate("back", profile, 100.0)
    check_rate("back", "native", 60.0)
    for profile in ("witmotion", "thingy52"):
        with pytest.raises(ValueError, match=r"^back: .* not 60\.0 \(pipeline\.rate_hz\)$"):
            check_rate("back", profile, 60.0)


class FailingOnceLink:
    """A link whose first run ends on an error nobody expected (as a ValueError from a profile did)."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            raise ValueError("a fault in the link")
        await stop.wait()


def test_a_link_that_stopped_on_an_error_is_said_and_started_again(monkeypatch, caplog):
    monkeypatch.setattr(gateway, "LINK_RESTART_S", 0.2)
    link = FailingOnceLink()

    async def supervise() -> None:
        stop = asyncio.Event()
        links = cast(dict[str, Any], {"back": link})
        tasks = {"back": asyncio.create_task(link.run(stop))}
        stopped_at: dict[str, float] = {}
        for _ in range(100):
            _restart_stopped_links(tasks, links, stopped_at, stop)
            if link.runs == 2:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="posture.gateway"):
        asyncio.run(supervise())
    assert link.runs == 2, "the link was not started again"
    said = [r for r in caplog.records if "link stopped" in r.getMessage()]
    assert len(said) == 1 and "back" in said[0].getMessage() and "a fault in the link" in said[0].getMessage()
