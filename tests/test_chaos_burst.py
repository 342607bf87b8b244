"""The chaos run's malformed bursts (benchmarks/chaos.py): each payload is one the bridge and the alert service refuse,
each for the reason it was made for, a minute beyond the contract's bounds among them."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from contract.identity import check_device
from contract.messages import payload
from contract.validation import Malformed, load_validators, parse, stream_of
from pipeline.events import MinuteMetrics


@pytest.mark.parametrize("devices", [["Chaos1", "Chaos2"], ["Chaos1"]])
@pytest.mark.parametrize("worn_s", [None, 0.0, 12.5, 60.08])
def test_every_payload_of_a_malformed_burst_is_refused_and_a_minute_by_its_bounds(worn_s, devices):
    from benchmarks.chaos import malformed_burst

    # The stream's last minute as a template (the burst copies it), or none yet.
    minute = MinuteMetrics(time.time() // 60 * 60 - 60, worn_s=worn_s or 0.0, sitting_s=worn_s or 0.0)
    templates = {} if worn_s is None else {("Chaos1", "metrics"): payload("Chaos1", minute)}
    burst = malformed_burst(SimpleNamespace(templates=templates), devices, np.random.default_rng(1))
    validators, reasons = load_validators(), {}
    for kind, topic, body in burst:
        with pytest.raises(Malformed) as refused:  # as the bridge and the alert service read a message
            check_device(topic, parse(stream_of(topic), body, validators, now_s=time.time()))
        reasons[kind] = str(refused.value).split(":", 1)[0]
    # A well-formed minute of the device's own, slouched longer than it was worn: refused by check_minute alone.
    assert reasons.pop("slouch_s beyond worn_s") == "minute"
    assert reasons["another device"] == "device" and "minute" not in reasons.values()
