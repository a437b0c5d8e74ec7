"""sapd.plumbing.groupranges: a session's groups as exact ranges, merged for /v1/groups."""

from __future__ import annotations

import ipaddress

import pytest

from sapd.plumbing import groupranges
from sapd.plumbing.groupranges import GroupRange


def _r(first: str, last: str) -> GroupRange:
    return GroupRange(ipaddress.ip_address(first), ipaddress.ip_address(last))


def test_an_entry_is_an_address_or_first_dash_last() -> None:
    assert groupranges.entry("239.1.1.1", 1) == "239.1.1.1"
    assert groupranges.entry("239.255.1.1", 1000) == "239.255.1.1-239.255.4.232"
    assert groupranges.parse("239.255.1.1-239.255.4.232").count == 1000
    assert groupranges.parse("ff15::8000:0-ff15::8000:fffe").count == 65535
    assert groupranges.parse("239.1.1.1") == _r("239.1.1.1", "239.1.1.1")
    with pytest.raises(ValueError, match="before the first"):
        groupranges.parse("239.1.1.9-239.1.1.1")


def test_merge_joins_overlapping_and_adjacent_ranges_per_family() -> None:
    merged = groupranges.merge([_r("239.1.1.10", "239.1.1.20"), _r("ff0e::1", "ff0e::2"),
                                _r("239.1.1.0", "239.1.1.9"), _r("239.1.1.15", "239.1.1.16"),
                                _r("239.1.2.0", "239.1.2.0")])
    assert [r.text for r in merged] == ["239.1.1.0-239.1.1.20", "239.1.2.0",
                                        "ff0e::1-ff0e::2"]


def test_addresses_stop_at_the_limit_and_say_so() -> None:
    ranges = [_r("239.1.1.1", "239.1.1.2"), _r("239.2.0.0", "239.2.3.231"),
              _r("239.3.0.1", "239.3.0.1")]
    assert groupranges.addresses(ranges, 3) == (["239.1.1.1", "239.1.1.2", "239.3.0.1"], False)
    listed, complete = groupranges.addresses(ranges, 10_000)
    assert complete and len(listed) == 1003
