"""Announcement options and query parameters the control socket takes without a word.
Each is a 201 (or 200) today for a value that cannot mean what the caller thinks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon
from tests.packets import sdp_text

ODD_OPTIONS = {
    # peer.uid in "x" raises TypeError at withdraw time: a 500 for the next non-owner
    "acl_uids_string": {"acl": {"uids": "x"}},
    "acl_unknown_key": {"acl": {"users": [1000]}},  # silently grants nobody
    "acl_float_uid": {"acl": {"uids": [1e300]}},
    "interval_infinity": {"interval": float("inf")},  # json.dumps writes Infinity
    "sap_group_unicast": {"sap_group": "10.0.0.1"},
    "interfaces_not_a_list": {"interfaces": "l"},  # substring match: "l" in "lo"
    "interfaces_numbers": {"interfaces": [1]},
    "compress_string": {"compress": "no"},  # truthy: compresses
    "ttl_boolean": {"ttl": True},
}


@pytest.mark.parametrize("extra", list(ODD_OPTIONS.values()), ids=list(ODD_OPTIONS))
def test_malformed_announcement_option_is_a_400_naming_it(sapd: Daemon,
                                                          extra: dict[str, Any]) -> None:
    body = json.dumps({"sdp": sdp_text(name="odd"), **extra}).encode()
    with pytest.raises(ClientError) as refused:
        sapd.client.request("POST", "/v1/announcements", body=body,
                            headers={"Content-Type": "application/json"})
    assert refused.value.status == 400
    assert next(iter(extra)) in str(refused.value)


def test_limit_above_the_documented_maximum_is_refused_or_capped(sapd: Daemon) -> None:
    try:
        page = sapd.get("/v1/sessions?limit=5000")
    except ClientError as exc:
        assert exc.status == 400 and "limit" in str(exc)
        return
    assert page["limit"] <= 1000, page
