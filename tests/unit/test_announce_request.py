"""Bounds for what an older sapd stored (sapd.announce.request.clean_stored): a stored
value that today's API would refuse is clamped or dropped at load, and named."""

from __future__ import annotations

from typing import Any

import pytest

from sapd.announce.request import RequestError, clean_stored, parse_body


@pytest.mark.parametrize("stored, kept, fixed", [
    ({"interval": 1e-9}, {"interval": 1.0}, ["interval"]),
    ({"interval": 1e12}, {"interval": 3600.0}, ["interval"]),
    ({"interval": float("nan")}, {}, ["interval"]),
    ({"interval": float("inf")}, {}, ["interval"]),
    ({"interval": "5"}, {}, ["interval"]),
    ({"interval": True}, {}, ["interval"]),
    ({"interval": 5}, {"interval": 5}, []),
    ({"ttl": 0}, {"ttl": 1}, ["ttl"]), ({"ttl": 1000}, {"ttl": 255}, ["ttl"]),
    ({"interfaces": "eth0"}, {}, ["interfaces"]),
    ({"compress": 1}, {"compress": True}, ["compress"]),
    ({"file": "/etc/sapd/a.sdp", "stop_time": 5.0}, {"file": "/etc/sapd/a.sdp",
                                                     "stop_time": 5.0}, []),
])
def test_stored_options_from_an_older_sapd_are_bounded(stored: dict[str, Any],
                                                       kept: dict[str, Any],
                                                       fixed: list[str]) -> None:
    options, acl, changed = clean_stored(stored, {})
    assert options == kept and changed == fixed and acl == {}


@pytest.mark.parametrize("acl, kept", [
    ({"uids": "1000"}, {}), ({"uids": [1000, "x", True, -1, 2**40]}, {"uids": [1000]}),
    ([1000], {}), ({"gids": [5], "users": [1]}, {"gids": [5]}),
])
def test_stored_acl_keeps_only_usable_ids(acl: Any, kept: dict[str, Any]) -> None:
    _options, cleaned, changed = clean_stored({}, acl)
    assert cleaned == kept and changed == ["acl"]


def test_json_null_means_not_given() -> None:
    request = parse_body(b'{"sdp": "v=0", "interval": null, "acl": null, "blob": null}',
                         1024)
    assert request.options.given() == {} and request.options.acl is None
    assert request.blob is None


def test_errors_name_the_field_inside_the_acl() -> None:
    with pytest.raises(RequestError) as info:
        parse_body(b'{"sdp": "v=0", "acl": {"uids": [1, 2, "three"]}}', 1024)
    assert info.value.field == "acl.uids[2]"
