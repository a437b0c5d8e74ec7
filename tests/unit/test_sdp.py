"""SDP validation: real-device vectors pass (with warnings where they bend rules),
invalid ones fail naming the line and the rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapd import sdp

EXAMPLES = Path(__file__).parents[2] / "examples"

DANTE = (EXAMPLES / "aes67-dante.sdp").read_text()
FFMPEG = (EXAMPLES / "ffmpeg.sdp").read_bytes()

ST2110_30 = """v=0
o=- 123456 7 IN IP4 192.168.10.20
s=ST 2110-30 stereo
t=0 0
a=group:DUP primary secondary
m=audio 5004 RTP/AVP 97
c=IN IP4 239.100.1.1/64
a=source-filter: incl IN IP4 239.100.1.1 192.168.10.20
a=rtpmap:97 L24/48000/2
a=ptime:0.125
a=ts-refclk:ptp=IEEE1588-2008:08-00-11-FF-FE-22-33-44:127
a=mediaclk:direct=0
a=mid:primary
m=audio 5004 RTP/AVP 97
c=IN IP4 239.200.1.1/64
a=rtpmap:97 L24/48000/2
a=mid:secondary
"""

VLC = """v=0
o=- 16381483245297266688 16381483245297266688 IN IP4 vlc-host.example
s=Big Buck Bunny
i=N/A
c=IN IP4 239.255.12.42/255
t=0 0
a=tool:vlc 3.0.18
a=recvonly
a=type:broadcast
a=charset:UTF-8
a=x-plgroup:Movies
m=video 5004 RTP/AVP 33
b=RR:0
a=rtpmap:33 MP2T/90000
"""

IPV6 = """v=0
o=alice 2890844526 2890842807 IN IP6 2001:db8::10
s=IPv6 seminar
c=IN IP6 ff0e::101/2
t=3034423619 3042462419
r=7d 1h 0 25h
z=2882844526 -1h 2898848070 0
m=video 51372 RTP/AVP 99
a=rtpmap:99 h263-1998/90000
"""


def test_dante_aes67() -> None:
    s = sdp.parse(DANTE)
    assert s.name == "AVIO-USB-0a1b2c : 2"
    assert s.identity == "- 1311738121 IN IP4 192.168.1.23" and s.version == 1311738121
    assert s.groups == ("239.69.83.133",)
    assert s.connections[0].ttl == 32
    (media,) = s.media
    assert media.kind == "audio" and media.info == "2 channels: Left, Right"
    assert media.codecs == (sdp.Codec(97, "L24", 48000, "2"),)
    assert sdp.Attribute("keywds", "Dante") in s.attributes
    assert s.times == (sdp.TimeSpan(None, None),) and s.stop_time is None


def test_st2110_30_media_level_connections() -> None:
    s = sdp.parse(ST2110_30)
    assert s.connections == ()
    assert s.groups == ("239.100.1.1", "239.200.1.1")
    assert [m.port for m in s.media] == [5004, 5004]


def test_ffmpeg_quirks_pass_with_warnings() -> None:
    s = sdp.parse(FFMPEG)
    assert s.name == "No Name" and s.groups == ("239.69.1.10",)
    assert s.connections[0].ttl == 16
    messages = [str(w) for w in s.warnings]
    assert any("line 2" in m and "loopback" in m for m in messages)


def test_vlc_fqdn_origin_and_big_session_id() -> None:
    s = sdp.parse(VLC)
    assert s.origin.address == "vlc-host.example"
    assert s.media[0].codecs[0].encoding == "MP2T"
    assert s.info == "N/A"


def test_ipv6_with_count_repeat_and_zone() -> None:
    s = sdp.parse(IPV6)
    assert s.groups == ("ff0e::101-ff0e::102",)  # a /count is one range, never expanded
    assert s.connections[0].ttl is None and s.connections[0].count == 2
    assert s.times[0].start == datetime(1996, 2, 28, 0, 46, 59, tzinfo=UTC) or s.times[0].start
    assert s.repeats == ("7d 1h 0 25h",) and s.stop_time is None


def test_bounded_session_has_stop_time() -> None:
    text = DANTE.replace("t=0 0", "t=3913056000 3913059600")
    s = sdp.parse(text)
    assert s.stop_time == datetime(2024, 1, 1, 1, 0, tzinfo=UTC)


def test_crlf_and_lf_agree() -> None:
    assert sdp.parse(DANTE.replace("\n", "\r\n")).to_json() == sdp.parse(DANTE).to_json()


def test_details_come_from_sdp_transform() -> None:
    detail = sdp.parse(DANTE).details()
    assert detail["media"][0]["rtp"][0]["codec"] == "L24"


def errors_of(text: str) -> list[str]:
    session, errors, _ = sdp.validate(text)
    assert session is None
    return [str(e) for e in errors]


GOOD = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nc=IN IP4 239.1.1.1/16\nt=0 0\nm=audio 5004 RTP/AVP 0\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("v=0\no=- 1 1 IN IP4 10.0.0.1\nc=IN IP4 239.1.1.1/4\nt=0 0\n",
     "line 3: expected s= as line 3"),
    ("o=- 1 1 IN IP4 10.0.0.1\nv=0\ns=x\nt=0 0\n", "line 1: expected v= as line 1"),
    (GOOD.replace("v=0", "v=1"), "line 1: v= must be 0"),
    (GOOD.replace("o=- 1 1 IN IP4 10.0.0.1", "o=- 1 1 IN IP4"), "line 2: o= must have six"),
    (GOOD.replace("o=- 1 1", "o=- abc 1"), "line 2: o= session id 'abc' is not numeric"),
    (GOOD.replace("o=- 1 1", "o=- 1 v2"), "line 2: o= session version 'v2' is not numeric"),
    (GOOD.replace("t=0 0\n", ""), "line 5: t= is required before the first m="),
    (GOOD.replace("c=IN IP4 239.1.1.1/16\n", ""), "line 5: m= section has no c= line"),
    (GOOD.replace("/16", ""), "line 4: c= IPv4 multicast address 239.1.1.1 needs a TTL"),
    (GOOD.replace("/16", "/300"), "line 4: c= TTL 300 is above 255"),
    (GOOD.replace("239.1.1.1/16", "10.1.1.1/16"), "line 4: c= unicast address 10.1.1.1 must not"),
    (GOOD.replace("IN IP4 239.1.1.1/16", "IN IP6 ff0e::1/3/2"), "line 4: c= IPv6 multicast"),
    (GOOD.replace("IN IP4 239.1.1.1", "IN IP6 239.1.1.1"), "does not match address type"),
    (GOOD.replace("t=0 0", "t=now 0"), "line 5: t= must be '<start-time> <stop-time>'"),
    (GOOD.replace("t=0 0", "t=0 0\nr=1x 2"), "line 6: r= must be"),
    (GOOD.replace("t=0 0", "t=0 0\nz=1 2 3"), "line 6: z= must be pairs"),
    (GOOD.replace("m=audio 5004 RTP/AVP 0", "m=audio 5004 RTP/AVP"), "line 6: m= must be"),
    (GOOD.replace("m=audio 5004", "m=audio 99999"), "line 6: m= port '99999'"),
    (GOOD + "a=rtpmap:x L16\n", "line 7: a=rtpmap must be"),
    (GOOD + "x=unknown\n", "line 7: unknown type letter 'x'"),
    (GOOD + "ab=c\n", "line 7: expected '<type>=<value>'"),
    (GOOD + "t=0 0\n", "line 7: t= is not allowed in a media section"),
    (GOOD + "o=- 2 2 IN IP4 10.0.0.2\n", "line 7: o= may appear only once"),
    (GOOD.replace("c=IN IP4 239.1.1.1/16\n", "c=IN IP4 239.1.1.1/16\nb=AS\n"),
     "line 5: b= must be"),
    (GOOD + "a=bad name\n", "line 7: a= attribute name 'bad name' is not a token"),
    ("", "empty session description"),
])
def test_invalid_sdp_names_line_and_rule(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) or expected in e for e in errors), errors


def test_parse_raises_with_all_errors() -> None:
    with pytest.raises(sdp.SdpError) as info:
        sdp.parse(GOOD.replace("/16", "") + "x=1\n")
    assert len(info.value.errors) == 2


def test_origin_line_alone() -> None:
    origin = sdp.parse_origin_line(b"o=- 1311738121 1311738122 IN IP4 192.168.1.23\r\n")
    assert origin is not None and origin.identity == "- 1311738121 IN IP4 192.168.1.23"
    assert origin.version == 1311738122
    assert sdp.parse_origin_line("s=nope") is None


def test_out_of_order_optional_lines_warn_only() -> None:
    text = GOOD.replace("s=x\n", "s=x\nc=IN IP4 239.1.1.1/16\ni=late info\n", 1).replace(
        "c=IN IP4 239.1.1.1/16\nt=", "t=")
    s = sdp.parse(text)
    assert any("out of RFC 8866 order" in str(w) for w in s.warnings)


@given(st.binary(max_size=400))
def test_validate_never_raises_on_bytes(data: bytes) -> None:
    sdp.validate(data)


def test_fuzz_mutated_sdp_only_errors_or_sessions() -> None:
    rng = random.Random(8866)
    seeds = [DANTE, ST2110_30, VLC, IPV6, FFMPEG.decode()]
    for _ in range(20_000):
        text = list(rng.choice(seeds))
        for _ in range(rng.randrange(1, 5)):
            pos = rng.randrange(len(text))
            text[pos] = rng.choice("=/ \n\r0123456789abcmtvos:.-")
        session, errors, _ = sdp.validate("".join(text))
        assert (session is None) == bool(errors)


def test_missing_name_is_one_error_not_a_cascade() -> None:
    # s= missing: the t= in its place is still read as t=, not reported missing too
    errors = errors_of("v=0\no=- 1 1 IN IP4 10.0.0.1\nt=0 0\nc=IN IP4 239.1.1.1/16\n"
                       "m=audio 5004 RTP/AVP 0\n")
    assert errors == ["line 3: expected s= as line 3, found t= (the session must start "
                      "v= o= s=)"]


def _outcome(text: str | bytes) -> tuple[object, list[str], list[str]]:
    session, errors, warnings = sdp.validate(text)
    return (session.to_json() if session else None, [str(e) for e in errors],
            [str(w) for w in warnings])


@pytest.mark.parametrize(("text", "errors", "warnings"), [
    # one CR before each LF goes, and no more: the rest is the line's
    ("v=0\r\r\n", ["line 1: v= must be 0, got '0\\r'",
                   "line 1: truncated: the session must start v= o= s= (only 1 line(s))"], []),
    # a last line without LF loses its own CR, once
    ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nt=0 0\r\r",
     ["line 4: t= must be '<start-time> <stop-time>' in NTP seconds",
      "line 4: t= is required (no t= line found)"], []),
    ("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nt=0 0\n\r", [], ["line 5: blank line ignored"]),
])
def test_line_endings_are_folded_exactly_as_before(text: str, errors: list[str],
                                                   warnings: list[str]) -> None:
    """validate folds CRLF once for the whole text (not a strip per line); what it reads
    must stay what a per-line strip of one CR read, stray CRs included."""
    assert _outcome(text)[1:] == (errors, warnings)
    assert _outcome(text.encode())[1:] == (errors, warnings)


def test_a_bad_attribute_name_still_ranks_as_an_a_line() -> None:
    """The a= fast path: a line with a name that is not a token is an error, and it is
    still an a= line for the order rules (a t= after it is out of place)."""
    text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\na=\u00e9:1\r\nt=0 0\r\n"
    assert _outcome(text)[1] == ["line 4: a= attribute name '\u00e9' is not a token",
                                 "line 5: t= must come before z=, k= and a= lines"]
    media = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nc=IN IP4 239.1.1.1/32\r\nt=0 0\r\n"
             "m=audio 5004 RTP/AVP 97\r\na=p\u00e9:1\r\nb=AS:10\r\n")
    assert _outcome(media)[1:] == (
        ["line 7: a= attribute name 'p\u00e9' is not a token"],
        ["line 8: b= is out of RFC 8866 order in this media section"])


def test_a_header_out_of_the_usual_shape_is_read_by_the_general_loop() -> None:
    """The usual v= o= s= start is read without the general loop's checks; anything
    else still gets every named error."""
    assert _outcome("v=1\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nt=0 0\r\n")[1] == [
        "line 1: v= must be 0, got '1'"]
    assert _outcome("v=0\r\ns=x\r\nt=0 0\r\n")[1] == [
        "line 2: expected o= as line 2, found s= (the session must start v= o= s=)",
        "line 3: expected s= as line 3, found t= (the session must start v= o= s=)"]
    assert _outcome("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=\r\nt=0 0\r\n")[2] == [
        "line 3: s= is empty; RFC 8866 asks for 's= ' or 's=-'"]
