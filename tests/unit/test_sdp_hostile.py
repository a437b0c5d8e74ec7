"""Hostile SDP (issue 13 item 5): every malformed value is a line-numbered error naming
the rule, counted as invalid_sdp by the engine, never an untyped exception."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sapd import sdp
from sapd.lifecycle import DROP_BAD_DELETION, DROP_INVALID_SDP, Engine
from tests.packets import announce
from tests.support import run, script

SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() is True, int() refuses it
ARABIC_THREE = "\u0663"  # str.isdigit() is True and int() reads 3: still not 1*DIGIT
TOO_MANY_DIGITS = "9" * 5000  # above Python's 4,300-digit int-string limit


def sdp_with(line: str, *, at: str) -> str:
    """A valid SDP with the line starting ``at`` replaced by ``line``."""
    lines = ["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=Hostile", "c=IN IP4 239.255.1.1/32",
             "t=0 0", "m=audio 5004 RTP/AVP 96", "a=rtpmap:96 L24/48000/2"]
    index = next(i for i, text in enumerate(lines) if text.startswith(at))
    lines[index] = line
    return "\r\n".join(lines) + "\r\n"


# (test id, replacement line, line it replaces, line number, words the error must carry)
HOSTILE = [
    ("origin_version_unicode_digit_raised_valueerror",
     f"o=- 1 {SUPERSCRIPT_TWO} IN IP4 10.0.0.1", "o=", 2, "session version"),
    ("origin_version_arabic_digit_was_accepted",
     f"o=- 1 {ARABIC_THREE} IN IP4 10.0.0.1", "o=", 2, "session version"),
    ("origin_session_id_unicode_digit_was_accepted",
     f"o=- {SUPERSCRIPT_TWO} 1 IN IP4 10.0.0.1", "o=", 2, "session id"),
    ("origin_version_over_4300_digits_raised_valueerror",
     f"o=- 1 {TOO_MANY_DIGITS} IN IP4 10.0.0.1", "o=", 2, "4300 digits"),
    ("origin_session_id_over_4300_digits_was_kept",
     f"o=- {TOO_MANY_DIGITS} 1 IN IP4 10.0.0.1", "o=", 2, "4300 digits"),
    ("connection_nul_raised_valueerror", "c=IN IP4 239.255.1.1\0/32", "c=", 4,
     "control character"),
    ("connection_nul_alone_was_taken_for_a_host_name", "c=IN IP4 \0", "c=", 4,
     "control character"),
    ("connection_unpaired_surrogate_raised_unicodeerror", "c=IN IP6 \ud800ff0e::1", "c=", 4,
     "surrogate"),
    ("connection_ttl_unicode_digit_raised_valueerror",
     f"c=IN IP4 239.255.1.1/3{SUPERSCRIPT_TWO}", "c=", 4, "TTL"),
    ("connection_ttl_over_4300_digits_raised_valueerror",
     f"c=IN IP4 239.255.1.1/{TOO_MANY_DIGITS}", "c=", 4, "4300 digits"),
    ("connection_v4_count_over_4300_digits_raised_valueerror",
     f"c=IN IP4 239.255.1.1/32/{TOO_MANY_DIGITS}", "c=", 4, "4300 digits"),
    ("connection_v6_count_over_4300_digits_raised_valueerror",
     f"c=IN IP6 ff0e::1/{TOO_MANY_DIGITS}", "c=", 4, "4300 digits"),
    ("connection_v6_count_past_ffff_raised_addressvalueerror",
     "c=IN IP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/3", "c=", 4, "past the end"),
    ("connection_v4_count_past_multicast_was_accepted",
     "c=IN IP4 239.255.255.255/32/3", "c=", 4, "past the end"),
    ("time_start_beyond_year_9999_raised_overflowerror", "t=999999999999990 0", "t=", 5,
     "year 9999"),
    ("time_stop_beyond_year_9999_raised_overflowerror", "t=0 999999999999990", "t=", 5,
     "year 9999"),
    ("time_over_4300_digits_raised_valueerror", f"t=0 {TOO_MANY_DIGITS}", "t=", 5,
     "4300 digits"),
    ("time_unicode_digit_raised_valueerror", f"t=0 1{SUPERSCRIPT_TWO}", "t=", 5, "t="),
    ("media_port_unicode_digit_raised_valueerror",
     f"m=audio 5004{SUPERSCRIPT_TWO} RTP/AVP 96", "m=", 6, "m= port"),
    ("media_port_count_unicode_digit_raised_valueerror",
     f"m=audio 5004/{SUPERSCRIPT_TWO} RTP/AVP 96", "m=", 6, "m= port"),
    ("media_port_count_over_4300_digits_raised_valueerror",
     f"m=audio 5004/{TOO_MANY_DIGITS} RTP/AVP 96", "m=", 6, "m= port"),
    ("media_port_over_4300_digits_raised_valueerror",
     f"m=audio {TOO_MANY_DIGITS} RTP/AVP 96", "m=", 6, "m= port"),
    ("rtpmap_payload_type_unicode_digit_raised_valueerror",
     f"a=rtpmap:96{SUPERSCRIPT_TWO} L24/48000/2", "a=rtpmap", 7, "rtpmap"),
    ("rtpmap_clock_rate_over_4300_digits_raised_valueerror",
     f"a=rtpmap:96 L24/{TOO_MANY_DIGITS}/2", "a=rtpmap", 7, "rtpmap"),
    ("rtpmap_clock_rate_unicode_digit_raised_valueerror",
     f"a=rtpmap:96 L24/4800{SUPERSCRIPT_TWO}/2", "a=rtpmap", 7, "rtpmap"),
    ("media_bandwidth_unicode_digit_was_accepted", f"b=AS:6{SUPERSCRIPT_TWO}", "a=rtpmap", 7,
     "b="),
    ("media_bandwidth_was_not_checked_at_all", "b=AS", "a=rtpmap", 7, "b="),
]


@pytest.mark.parametrize(("line", "at", "number", "words"),
                         [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_value_is_a_line_numbered_error(line: str, at: str, number: int,
                                                words: str) -> None:
    text = sdp_with(line, at=at)
    session, errors, _warnings = sdp.validate(text)
    assert session is None
    assert any(e.line == number and words in e.message for e in errors), errors
    assert all(len(e.message) < 300 for e in errors), "a hostile value is quoted in full"


# A datagram's bytes decode to text without unpaired surrogates; those come only as str.
IN_DATAGRAMS = [case for case in HOSTILE if "\ud800" not in case[1]]


@pytest.mark.parametrize(("line", "at"), [case[1:3] for case in IN_DATAGRAMS],
                         ids=[case[0] for case in IN_DATAGRAMS])
def test_hostile_value_in_a_datagram_is_counted_invalid_sdp(line: str, at: str) -> None:
    engine = Engine()
    outcome = engine.receive_datagram(announce(sdp_with(line, at=at)), 0.0)
    assert outcome == DROP_INVALID_SDP
    assert engine.counters[DROP_INVALID_SDP] == 1 and len(engine) == 0


def test_deletion_version_unicode_digit_raised_valueerror() -> None:
    engine = Engine()
    deletion = announce(f"o=- 1 {SUPERSCRIPT_TWO} IN IP4 10.0.0.1\r\n", deletion=True)
    assert engine.receive_datagram(deletion, 0.0) == DROP_BAD_DELETION


def test_deletion_version_over_4300_digits_raised_valueerror() -> None:
    engine = Engine()
    deletion = announce(f"o=- 1 {TOO_MANY_DIGITS} IN IP4 10.0.0.1\r\n", deletion=True)
    assert engine.receive_datagram(deletion, 0.0) == DROP_BAD_DELETION


def test_twenty_digit_vlc_numbers_are_kept_exact_and_compared_as_numbers() -> None:
    big = "17201912864673439254"  # VLC 3.0: a 64-bit NTP value, above 2**63
    session = sdp.parse(sdp_with(f"o=- {big} {big} IN IP4 10.0.0.1", at="o="))
    assert session.origin.session_id == big and session.version == int(big)
    engine = Engine()
    first = sdp_with(f"o=- {big} {big}9 IN IP4 10.0.0.1", at="o=")
    older = sdp_with(f"o=- {big} {big} IN IP4 10.0.0.1", at="o=").replace("Hostile", "Old")
    assert engine.receive_datagram(announce(first), 0.0) == "new"
    assert engine.receive_datagram(announce(older), 1.0) == "old_version"


def test_4300_digit_version_is_kept_exact() -> None:
    version = "7" * 4300
    session = sdp.parse(sdp_with(f"o=- 1 {version} IN IP4 10.0.0.1", at="o="))
    assert session.version == int(version)
    assert str(session.to_json()["version"]) == version


def test_leading_zeros_do_not_count_towards_the_digit_limit() -> None:
    session = sdp.parse(sdp_with(f"o=- 1 {'0' * 5000}5 IN IP4 10.0.0.1", at="o="))
    assert session.version == 5


def test_year_9999_is_the_last_time_accepted() -> None:
    last = sdp.NTP_UNIX_OFFSET + 253402300799  # 9999-12-31T23:59:59Z
    session = sdp.parse(sdp_with(f"t=0 {last}", at="t="))
    assert session.times[0].stop is not None and session.times[0].stop.year == 9999
    assert sdp.validate(sdp_with(f"t=0 {last + 1}", at="t="))[0] is None


def test_v6_count_up_to_the_last_address_is_accepted() -> None:
    session = sdp.parse(sdp_with("c=IN IP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/2",
                                 at="c="))
    assert session.groups == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe-"
                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",)


# -- through the real CLI: exit 1, the reason on stderr, never a traceback ----------------

CLI_CASES = [case for case in IN_DATAGRAMS
             if case[0] in ("origin_version_unicode_digit_raised_valueerror",
                            "origin_version_over_4300_digits_raised_valueerror",
                            "connection_nul_raised_valueerror",
                            "connection_v6_count_past_ffff_raised_addressvalueerror",
                            "time_start_beyond_year_9999_raised_overflowerror",
                            "rtpmap_payload_type_unicode_digit_raised_valueerror")]


def _assert_rejected_cleanly(result: subprocess.CompletedProcess[str], number: int,
                             words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert f"line {number}:" in result.stderr and words in result.stderr, result.stderr


@pytest.mark.parametrize(("line", "at", "number", "words"),
                         [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_sapctl_validate_hostile_sdp_printed_a_traceback(tmp_path: Path, line: str, at: str,
                                                         number: int, words: str) -> None:
    path = tmp_path / "hostile.sdp"
    path.write_bytes(sdp_with(line, at=at).encode())
    _assert_rejected_cleanly(run(script("sapctl"), "validate", str(path)), number, words)
    _assert_rejected_cleanly(run(script("sapctl"), "validate", "--json", str(path)),
                             number, words)


@pytest.mark.parametrize(("line", "at", "number", "words"),
                         [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_sapctl_decode_hostile_sdp_printed_a_traceback(tmp_path: Path, line: str, at: str,
                                                       number: int, words: str) -> None:
    path = tmp_path / "hostile.sap"
    path.write_bytes(announce(sdp_with(line, at=at)))
    _assert_rejected_cleanly(run(script("sapctl"), "decode", str(path)), number, words)
    _assert_rejected_cleanly(run(script("sapctl"), "decode", "--json", str(path)),
                             number, words)


def test_sapctl_decode_hostile_deletion_printed_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deletion.sap"
    path.write_bytes(announce(f"o=- 1 {SUPERSCRIPT_TWO} IN IP4 10.0.0.1\r\n", deletion=True))
    result = run(script("sapctl"), "decode", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not a valid o= line" in result.stderr


@pytest.mark.parametrize("line", ["v=" + "1" * 10000, "a=" + "x y" * 5000,
                                  "c=IN IP4 " + "z" * 10000 + "/1"],
                         ids=["version", "attribute_name", "connection_address"])
def test_error_quoted_a_ten_kilobyte_value_in_full(line: str) -> None:
    at = line[:2] if not line.startswith("a=") else "a=rtpmap"
    _session, errors, _warnings = sdp.validate(sdp_with(line, at=at))
    assert errors and all(len(e.message) < 300 for e in errors), [len(e.message) for e in errors]
