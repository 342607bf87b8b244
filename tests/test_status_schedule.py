"""When a device's status goes out (gateway/publisher.py status_due): each counter's change, after the interval."""

from __future__ import annotations

import dataclasses

import pytest

from contract.messages import Status
from gateway.publisher import StatusSchedule, status_due

SENT = Status(online=True, battery_pct=90, link_quality_pct=99.0, lost_samples=3, malformed_packets=1,
              duplicate_packets=0, discarded_samples=0, reconnects=1)
SCHEDULE = StatusSchedule(min_interval_s=10.0, heartbeat_s=60.0)


@pytest.mark.parametrize("counter", ["lost_samples", "malformed_packets", "duplicate_packets", "discarded_samples"])
def test_a_counter_that_moved_goes_out_after_the_interval_not_before(counter):
    moved = dataclasses.replace(SENT, **{counter: getattr(SENT, counter) + 1})
    assert not status_due(SENT, 100.0, moved, 105.0, SCHEDULE)  # within the interval: waits
    assert status_due(SENT, 100.0, moved, 110.0, SCHEDULE)  # a heartbeat (60 s) away still: the change sends it
    assert not status_due(SENT, 100.0, SENT, 110.0, SCHEDULE)  # unchanged: only the heartbeat


def test_online_goes_out_at_once_and_an_unchanged_status_at_the_heartbeat():
    assert status_due(SENT, 100.0, dataclasses.replace(SENT, online=False), 100.5, SCHEDULE)
    assert status_due(SENT, 100.0, SENT, 160.0, SCHEDULE)
