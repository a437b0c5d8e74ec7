from __future__ import annotations

import ipaddress

import pytest

from sapd.scopes import ScopeTable


@pytest.mark.parametrize(("address", "group", "name"), [
    ("239.255.1.2", "239.255.255.255", "ipv4-local"),
    ("239.193.4.5", "239.195.255.255", "ipv4-org-local"),
    ("239.69.1.10", "239.255.255.255", "ipv4-admin"),  # AES67's usual range
    ("233.252.0.1", "224.2.127.254", "ipv4-global"),
    ("224.0.0.200", "224.0.0.255", "ipv4-link-local"),
    ("ff0e::1234", "ff0e::2:7ffe", "ipv6-global"),
    ("ff05::1:3", "ff05::2:7ffe", "ipv6-site-local"),
    ("ff02::abc", "ff02::2:7ffe", "ipv6-link-local"),
    ("ff38::1", "ff08::2:7ffe", "ipv6-org-local"),
])
def test_default_scope_mapping(address: str, group: str, name: str) -> None:
    scope = ScopeTable().for_address(address)
    assert str(scope.sap_group) == group and scope.name == name


def test_configured_scope_uses_highest_address_and_wins_when_narrower() -> None:
    table = ScopeTable.from_config([{"name": "studio", "range": "239.69.0.0/16", "ttl": 16}])
    scope = table.for_address("239.69.1.10")
    assert scope.name == "studio" and str(scope.sap_group) == "239.69.255.255"
    assert scope.ttl == 16
    assert table.for_address("239.255.0.1").name == "ipv4-local"


def test_group_lookup_labels_arrivals() -> None:
    table = ScopeTable()
    assert table.for_group(ipaddress.ip_address("239.255.255.255")).name == "ipv4-local"
    assert table.for_group(ipaddress.ip_address("224.2.127.254")).name == "ipv4-global"
    assert table.for_group(ipaddress.ip_address("ff05::2:7ffe")).name == "ipv6-site-local"
    assert table.for_group(ipaddress.ip_address("239.1.1.1")) is None


@pytest.mark.parametrize(("entry", "message"), [
    ({"range": "239.1.0.0/16"}, "scope[0].name: required"),
    ({"name": "x", "range": "10.0.0.0/8"}, "scope[0].range: 10.0.0.0/8 is not multicast"),
    ({"name": "x", "range": "239.1.0.0/16", "ttl": 0}, "scope[0].ttl"),
    ({"name": "x", "range": "nonsense"}, "scope[0].range"),
])
def test_bad_scope_config_names_the_key(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ScopeTable.from_config([entry])


def test_unicast_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multicast"):
        ScopeTable().for_address("10.0.0.1")
