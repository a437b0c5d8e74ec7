"""Every datagram the engine is given is counted exactly once (issue 13 item 5)."""

from __future__ import annotations

import pytest

from sapd import lifecycle
from sapd.lifecycle import DROP_INTERNAL_ERROR, Engine
from tests.fuzz.sap_datagrams import datagrams
from tests.packets import announce, sdp_text


def test_datagram_that_raises_in_the_engine_was_uncounted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_data: bytes | str) -> object:
        raise OverflowError("a validator bug")

    monkeypatch.setattr(lifecycle.sdp, "validate", broken)
    engine = Engine()
    assert engine.receive_datagram(announce(sdp_text()), 0.0) == DROP_INTERNAL_ERROR
    assert engine.counters[DROP_INTERNAL_ERROR] == 1
    assert "OverflowError: a validator bug" in engine.last_internal_error
    monkeypatch.undo()
    assert engine.receive_datagram(announce(sdp_text()), 1.0) == "new"  # nothing stuck


def test_fuzzed_datagrams_are_each_counted_once_under_a_named_outcome() -> None:
    engine = Engine()
    count = 0
    for index, data in enumerate(datagrams(5000, seed=5)):
        engine.receive_datagram(data, 1000.0 + index * 0.01)
        count += 1
    received = sum(v for k, v in engine.counters.items() if k != "expired")
    assert received == count
    assert engine.counters[DROP_INTERNAL_ERROR] == 0, engine.last_internal_error
