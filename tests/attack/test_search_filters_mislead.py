"""Search filters that answer "nothing" or "everything" without a word: groups are
stored canonical but the group= filter compares the text as typed (FF0E::ABCD or
ff0e:0::abcd find nothing, though /v1/groups lists ff0e::abcd), and value= without
attribute= is silently ignored, so it returns every session."""

from __future__ import annotations

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon, send_local_multicast, wait_session
from tests.packets import announce, sdp_text


@pytest.mark.parametrize("typed", ["FF0E::ABCD", "ff0e:0::abcd", "ff0e:0:0:0:0:0:0:abcd"])
def test_group_filter_finds_the_group_however_it_is_written(sapd: Daemon, typed: str) -> None:
    v6 = sdp_text(session=2, name="six").replace("c=IN IP4 239.255.1.1/32", "c=IN IP6 ff0e::abcd")
    send_local_multicast(announce(v6))
    wait_session(sapd, lambda s: s["name"] == "six")
    assert [s["name"] for s in sapd.sessions(f"?group={typed}")] == ["six"]


def test_value_without_attribute_is_refused_not_ignored(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(name="one")))
    wait_session(sapd, lambda s: s["name"] == "one")
    # sapd's choice: refuse with a 400 naming value= (rather than search every attribute)
    with pytest.raises(ClientError) as refused:
        sapd.sessions("?value=no-such-value")
    assert refused.value.status == 400 and "value=" in str(refused.value)
    assert [s["name"] for s in sapd.sessions("?attribute=tool&value=no-such-value")] == []


def test_a_range_is_found_by_any_address_in_it_and_as_shown(sapd: Daemon) -> None:
    wide = sdp_text(session=3, name="wide").replace("c=IN IP4 239.255.1.1/32",
                                                    "c=IN IP4 239.255.1.1/32/1000")
    send_local_multicast(announce(wide))
    (session,) = wait_session(sapd, lambda s: s["name"] == "wide")
    assert session["groups"] == ["239.255.1.1-239.255.4.232"]
    for typed in ("239.255.4.232", "239.255.2.0", "239.255.1.1-239.255.4.232"):
        assert [s["name"] for s in sapd.sessions(f"?group={typed}")] == ["wide"], typed
    assert sapd.sessions("?group=239.255.4.233") == []


def test_a_group_that_is_not_an_address_is_refused(sapd: Daemon) -> None:
    with pytest.raises(ClientError) as refused:
        sapd.sessions("?group=not-a-group")
    assert refused.value.status == 400 and "group=" in str(refused.value)
