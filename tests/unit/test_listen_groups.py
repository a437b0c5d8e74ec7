"""sapd listens by default on every SAP group it may announce on (issue 13 item 6): the
listen set is derived from the scope table the announcer uses, so they cannot drift."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from sapd.config import SapdConfig, ScopeEntry
from sapd.scopes import ScopeTable

v4_multicast = st.integers(0xE0000000, 0xEFFFFFFF).map(ipaddress.IPv4Address)
v6_multicast = st.integers(0xFF << 120, (1 << 128) - 1).map(ipaddress.IPv6Address)
CUSTOM = [{"name": "studio", "range": "239.77.0.0/16", "sap_group": "239.77.255.254"},
          {"name": "campus-v6", "range": "ff15::/16", "sap_group": "ff15::2:7ffe"}]


def test_default_listen_set_missed_admin_and_org_local_v6_groups() -> None:
    heard = {str(g) for g in SapdConfig().listen_groups()}
    assert {"ff04::2:7ffe", "ff08::2:7ffe"} <= heard  # announced on, never heard before
    assert {"224.2.127.254", "239.255.255.255", "239.195.255.255", "224.0.0.255",
            "ff02::2:7ffe", "ff05::2:7ffe", "ff0e::2:7ffe"} <= heard


@given(st.one_of(v4_multicast, v6_multicast))
def test_every_group_the_announcer_picks_is_in_the_default_listen_set(
        address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    table = ScopeTable()
    assert table.for_address(str(address)).sap_group in table.sap_groups()


@given(st.one_of(v4_multicast, v6_multicast))
def test_configured_scopes_are_listened_on_too(
        address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    config = SapdConfig(scope=[ScopeEntry(**entry) for entry in CUSTOM])
    assert config.scope_table().for_address(str(address)).sap_group in config.listen_groups()


def test_reserved_v6_scopes_are_announced_on_the_global_group() -> None:
    # RFC 4291 2.7: scope F is treated as global; scope 0 has no region of its own.
    table = ScopeTable()
    assert str(table.for_address("ff0f::1").sap_group) == "ff0e::2:7ffe"
    assert str(table.for_address("ff00::1").sap_group) == "ff0e::2:7ffe"
    assert not {"ff00::2:7ffe", "ff0f::2:7ffe"} & {str(g) for g in table.sap_groups()}


def test_configured_groups_replace_the_derived_set() -> None:
    config = SapdConfig(groups=["239.255.255.255"])
    assert [str(g) for g in config.listen_groups()] == ["239.255.255.255"]
