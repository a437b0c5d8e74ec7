"""Issue 13 item 15: configuration mistakes that were accepted or ended in a traceback.
Each test is named after the defect; each failed on the loaders before the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from madcap.config import load as load_madcapd
from sapd.config import load as load_sapd
from sapd.plumbing.config import ConfigError


def sapd_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sapd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_sapd(str(path), {})
    return str(caught.value)


def madcapd_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "madcapd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_madcapd(str(path), {})
    return str(caught.value)


SAPD_SCOPE = '[[scope]]\nname = "studio"\nrange = "239.69.0.0/16"\n'
MADCAP_SCOPE = '[[scope]]\nname = "lab"\nrange = "239.255.0.0/16"\n'


def test_unknown_scope_key_was_ignored_sapd(tmp_path: Path) -> None:
    assert "scope[0].rnage: unknown key" in sapd_error(tmp_path, SAPD_SCOPE + 'rnage = "x"\n')


def test_unknown_scope_key_was_ignored_madcapd(tmp_path: Path) -> None:
    message = madcapd_error(tmp_path, MADCAP_SCOPE + "lease_maximum = 5\n")
    assert "scope[0].lease_maximum: unknown key" in message


def test_unknown_key_in_scope_name_table_was_ignored(tmp_path: Path) -> None:
    message = madcapd_error(tmp_path, MADCAP_SCOPE + 'names = [{language = "en", name = "x", '
                                                     'lang = "de"}]\n')
    assert "scope[0].names[0].lang: unknown key" in message


@pytest.mark.parametrize(("text", "key"), [
    ('name = 5\nrange = "239.69.0.0/16"\n', "scope[0].name"),
    ('name = "a"\nrange = 5\n', "scope[0].range"),
    ('name = "a"\nrange = "239.69.0.0/16"\nttl = "x"\n', "scope[0].ttl"),
    ('name = "a"\nrange = "239.69.0.0/16"\nsap_group = 7\n', "scope[0].sap_group"),
])
def test_scope_type_error_was_a_traceback_sapd(tmp_path: Path, text: str, key: str) -> None:
    assert sapd_error(tmp_path, "[[scope]]\n" + text).startswith(f"{tmp_path}/sapd.toml: {key}: ")


@pytest.mark.parametrize(("text", "key"), [
    ('ttl = "16"\n', "scope[0].ttl"),
    ("lease_min = 1.5\n", "scope[0].lease_min"),
    ("names = 3\n", "scope[0].names"),
    ("names = [3]\n", "scope[0].names[0]"),
    ('exclusions = "239.255.0.1"\n', "scope[0].exclusions"),
    ('lifetime_end = "soon"\n', "scope[0].lifetime_end"),
])
def test_scope_type_error_was_a_traceback_madcapd(tmp_path: Path, text: str, key: str) -> None:
    assert f"{key}: " in madcapd_error(tmp_path, MADCAP_SCOPE + text)


def test_scope_without_a_table_was_a_traceback(tmp_path: Path) -> None:
    assert "scope[0]: expected a table" in sapd_error(tmp_path, "scope = [1]\n")
    assert "scope[0]: expected a table" in madcapd_error(tmp_path, "scope = ['x']\n")


@pytest.mark.parametrize("load_error", [sapd_error, madcapd_error])
def test_log_level_mistake_was_a_traceback(tmp_path: Path, load_error: object) -> None:
    message = load_error(tmp_path, 'log_level = "verbose"\n')  # type: ignore[operator]
    assert "log_level: 'verbose' is not one of" in message


@pytest.mark.parametrize("load_error", [sapd_error, madcapd_error])
def test_socket_group_mistake_was_a_traceback(tmp_path: Path, load_error: object) -> None:
    message = load_error(tmp_path, 'socket_group = "no-such-group-here"\n')  # type: ignore[operator]
    assert "socket_group: no group 'no-such-group-here' on this host" in message


def test_admin_group_mistake_was_found_only_at_the_first_withdraw(tmp_path: Path) -> None:
    assert "admin_group: no group" in sapd_error(tmp_path, 'admin_group = "no-such-group"\n')


def test_enabled_false_as_a_string_counted_as_enabled(tmp_path: Path) -> None:
    message = madcapd_error(tmp_path, MADCAP_SCOPE + 'enabled = "false"\n')
    assert "scope[0].enabled: expected true or false, got 'false'" in message


def test_overlapping_scopes_were_accepted_sapd(tmp_path: Path) -> None:
    text = SAPD_SCOPE + '[[scope]]\nname = "b"\nrange = "239.69.128.0/17"\n'
    assert ("scope[1].range: 239.69.128.0/17 overlaps scope[0] ('studio', 239.69.0.0/16)"
            in sapd_error(tmp_path, text))


def test_same_scope_name_twice_replaced_the_first_sapd(tmp_path: Path) -> None:
    text = SAPD_SCOPE + '[[scope]]\nname = "studio"\nrange = "239.70.0.0/16"\n'
    assert "scope[1].name: 'studio' is used by scope[0]" in sapd_error(tmp_path, text)


def test_overlapping_scopes_were_accepted_madcapd(tmp_path: Path) -> None:
    text = MADCAP_SCOPE + '[[scope]]\nname = "b"\nrange = "239.255.0.0/17"\n'
    assert "overlaps" in madcapd_error(tmp_path, text)


@pytest.mark.parametrize("group", ["10.1.2.3", "192.0.2.1", "::1"])
def test_unicast_sap_group_was_accepted(tmp_path: Path, group: str) -> None:
    message = sapd_error(tmp_path, SAPD_SCOPE + f'sap_group = "{group}"\n')
    assert f"scope[0].sap_group: {group} is not a multicast address" in message


def test_sap_group_outside_its_scope_was_accepted(tmp_path: Path) -> None:
    message = sapd_error(tmp_path, SAPD_SCOPE + 'sap_group = "239.255.255.255"\n')
    assert "scope[0].sap_group: 239.255.255.255 is not inside 239.69.0.0/16" in message


def test_unicast_listen_group_was_accepted(tmp_path: Path) -> None:
    assert "groups[0]: 10.0.0.1 is not a multicast address" in sapd_error(
        tmp_path, 'groups = ["10.0.0.1"]\n')


@pytest.mark.parametrize("text", ["refresh_flush_interval = 0", "refresh_flush_interval = -1",
                                  "refresh_flush_interval = 0.0001"])
def test_refresh_flush_interval_zero_busy_looped(tmp_path: Path, text: str) -> None:
    assert "refresh_flush_interval: " in sapd_error(tmp_path, text + "\n")


@pytest.mark.parametrize("text", ["max_sdp_bytes = 1e12", "max_sdp_bytes = 1000000000000",
                                  "max_sessions = 1000000000000"])
def test_max_sdp_bytes_huge_disabled_the_zlib_bomb_cap(tmp_path: Path, text: str) -> None:
    key = text.split(maxsplit=1)[0]
    assert f"limits.{key}: " in sapd_error(tmp_path, "[limits]\n" + text + "\n")


@pytest.mark.parametrize("text", [
    "expiry_floor = nan", "default_period = inf", "refresh_flush_interval = nan",
    "[limits]\nsource_rate = nan", "[limits]\nsource_burst = inf",
    "[announce]\nbandwidth = nan", "[announce]\nbandwidth = inf",
])
def test_nan_and_infinity_were_accepted_sapd(tmp_path: Path, text: str) -> None:
    message = sapd_error(tmp_path, text + "\n")
    assert "not a finite number" in message or "must be" in message


@pytest.mark.parametrize("text", [
    "offer_hold = nan", "clock_skew = inf", "guard = -inf", "sapd_poll = nan",
    "response_cache = nan", MADCAP_SCOPE + "lifetime_end = inf",
])
def test_nan_and_infinity_were_accepted_madcapd(tmp_path: Path, text: str) -> None:
    message = madcapd_error(tmp_path, text + "\n")
    assert "not a finite number" in message or "must be" in message


@pytest.mark.parametrize("text", ["offer_hold = 1e9", "guard = 1e12", "clock_skew = 1e12",
                                  "sapd_poll = 0.001"])
def test_madcapd_durations_were_unbounded(tmp_path: Path, text: str) -> None:
    assert text.split(maxsplit=1)[0] + ": must be" in madcapd_error(tmp_path, text + "\n")


def test_a_group_listed_twice_was_joined_twice(tmp_path: Path) -> None:
    message = sapd_error(tmp_path, 'groups = ["239.255.255.255", "ff05::2:7ffe", '
                                   '"239.255.255.255"]\n')
    assert "groups[2]: 239.255.255.255 is listed twice (groups[0])" in message
