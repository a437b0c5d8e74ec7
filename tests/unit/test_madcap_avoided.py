"""The groups sapd lists (GET /v1/groups) are never handed out. Avoiding them must be
cheap for many groups: 1,000 sessions of 256 groups each cost set_avoided 1.3 s of
madcapd's loop (tests/attack/test_wide_sessions_stall_groups.py). sapd may also answer
``{"ranges": [{"first": ADDR, "count": N}]}`` beside ``groups``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from madcap.avoided import AvoidedGroups
from madcap.pool import scope_from_config
from madcap.store.sqlite import SqliteLeaseStore
from tests.madcap_harness import Harness
from tests.unit.test_madcap_server import SMALL, T0, addresses, request, send


def _value(text: str) -> int:
    from madcap.server import address_value  # noqa: PLC0415
    return address_value(text)


def test_ranges_from_sapd_were_not_avoided(tmp_path: Path) -> None:
    avoided, bad = AvoidedGroups.from_directory(
        {"groups": ["239.255.0.4"], "ranges": [{"first": "239.255.0.1", "count": 2}]})
    assert bad == []
    s = Harness([scope_from_config(SMALL, 0)], SqliteLeaseStore(tmp_path / "l.sqlite3"), T0)
    s.set_avoided(avoided)
    assert addresses(send(s, request(1))) == ["239.255.0.3"]
    assert send(s, request(2)).error is not None  # type: ignore[union-attr]  # all avoided


def test_membership_of_groups_and_ranges() -> None:
    avoided, _ = AvoidedGroups.from_directory(
        {"groups": ["239.1.0.1", "ff15::1:8000"],
         "ranges": [{"first": "239.2.0.0", "count": 256}, {"first": "239.2.0.128", "count": 512},
                    {"first": "239.9.0.0", "count": 1}]})
    inside = ["239.1.0.1", "ff15::1:8000", "239.2.0.0", "239.2.0.255", "239.2.2.127",
              "239.9.0.0"]
    outside = ["239.1.0.2", "239.2.2.128", "239.1.255.255", "239.9.0.1", "ff15::1:8001"]
    assert all(_value(a) in avoided for a in inside)
    assert not any(_value(a) in avoided for a in outside)
    assert len(avoided) == 2 + 256 + 384 + 1  # the overlapping ranges counted once


def test_bad_entries_from_sapd_are_named_and_the_rest_kept() -> None:
    avoided, bad = AvoidedGroups.from_directory(
        {"groups": ["239.1.0.1", "not an address", 7],
         "ranges": [{"first": "239.3.0.0", "count": -1}, {"first": "x", "count": 1},
                    {"count": 3}, "239.4.0.0", {"first": "239.5.0.0", "count": 2}]})
    assert _value("239.1.0.1") in avoided and _value("239.5.0.1") in avoided
    assert len(bad) == 6 and "'not an address'" in bad[0]


def test_an_answer_without_groups_or_ranges_is_an_error() -> None:
    with pytest.raises(ValueError, match="groups"):
        AvoidedGroups.from_directory({"sessions": []})


def test_wide_sessions_groups_were_parsed_one_ipaddress_at_a_time() -> None:
    groups = [f"239.{1 + n // 256}.{n % 256}.{i}" for n in range(1000) for i in range(256)]
    started = time.process_time()
    avoided, bad = AvoidedGroups.from_directory({"groups": groups})
    elapsed = time.process_time() - started
    assert bad == [] and len(avoided) == len(groups)
    assert elapsed < 0.1, f"{len(groups)} groups took {elapsed:.2f} s of CPU"
