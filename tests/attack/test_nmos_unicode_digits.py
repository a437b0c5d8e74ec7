"""Numbers that str.isdigit() takes and int() does not: found by feeding the NMOS
mapping and DNS-SD discovery '\u00b2', fullwidth digits and 5,000-digit numbers.

- An SDP announced with ``a=rtpmap:96 L24/48000/\u00b2`` (or 5,000 digits of channels,
  or such a video width or frame rate) made the mapping raise ValueError: logged as
  the bridge's own bug with a traceback, counted as ``internal_error``, never as a
  skip, and a session that had been registered kept its old Sender in the registry.
  Fullwidth digits (``width=\uff11\uff19\uff12\uff10``) were read as 1920.
- One ``_nmos-register._tcp`` announcement with ``pri=\u00b2`` made every later
  ordering raise: discovery found no registry at all, the honest ones included.
"""

from __future__ import annotations

import pytest

from sapd.bridges.nmos_discovery import (
    MAX_CANDIDATES,
    Candidate,
    RegistryBrowser,
    order_registries,
)
from sapd.bridges.nmos_resources import ClockBook, Context, Origin, Unmappable, map_session
from tests.unit.test_nmos_bridge import Directory, bridge, event, kinds, record, settle

NODE = "0b8e3c1a-3f2d-5c4e-8a9b-1c2d3e4f5a6b"
HEAD = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=S\r\nc=IN IP4 239.1.1.1/32\r\nt=0 0\r\n")
AUDIO = HEAD + "m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 L24/48000/{channels}\r\n"
VIDEO = HEAD + ("m=video 5004 RTP/AVP 96\r\na=rtpmap:96 raw/90000\r\n"
                "a=fmtp:96 sampling=YCbCr-4:2:2; width={width}; height=1080; depth=10; "
                "exactframerate={rate}; colorimetry=BT709\r\n")


def mapped(text: str) -> object:
    return map_session(text, Origin("sid", "- 1 IN IP4 10.0.0.1", "10.0.0.1"),
                       Context(NODE, "http://sapd.example/v1/sessions/", ("lo",)),
                       ClockBook())


@pytest.mark.parametrize(("text", "reason"), [
    (AUDIO.format(channels="\u00b2"), "channel_count"),
    (AUDIO.format(channels="1" * 5000), "channel_count"),
    (VIDEO.format(width="\u00b2", rate="25"), "video_fmtp"),
    (VIDEO.format(width="\uff11\uff19\uff12\uff10", rate="25"), "video_fmtp"),
    (VIDEO.format(width="9" * 5000, rate="25"), "video_fmtp"),
    (VIDEO.format(width="1920", rate="\u00b25"), "video_fmtp"),
    (VIDEO.format(width="1920", rate="25/" + "1" * 5000), "video_fmtp"),
])
def test_non_ascii_or_huge_numbers_are_a_counted_skip_not_a_crash(text: str,
                                                                  reason: str) -> None:
    with pytest.raises(Unmappable) as refused:
        mapped(text)
    assert refused.value.reason == reason


def test_registered_session_changed_to_a_superscript_count_is_withdrawn() -> None:
    directory = Directory()
    directory.records["sid0"] = record(0)
    made = bridge(directory)
    settle(made)
    assert kinds(made)["sender"] == 1
    directory.records["sid0"] = record(0, AUDIO.format(channels="\u00b2"))
    made.on_event(event("changed", "sid0"))
    settle(made)
    assert kinds(made).get("sender", 0) == 0  # its old Sender leaves the registry
    assert made.stats()["skipped"] == {"channel_count": 1}
    assert made.machine.errors["internal_error"] == 0


def test_one_registry_with_a_superscript_pri_does_not_hide_the_others() -> None:
    found = order_registries([
        Candidate("hostile._nmos-register._tcp.local.", "192.0.2.66", 80,
                  {"pri": "\u00b2"}),
        Candidate("huge._nmos-register._tcp.local.", "192.0.2.67", 80, {"pri": "1" * 5000}),
        Candidate("good._nmos-register._tcp.local.", "192.0.2.10", 8010, {"pri": "100"}),
        Candidate("best._nmos-register._tcp.local.", "192.0.2.11", 8010, {"pri": "0"}),
    ])
    assert found[:2] == ["http://192.0.2.11:8010", "http://192.0.2.10:8010"]
    assert len(found) == 4  # the unreadable pri ones last


def test_older_or_flooding_registries_do_not_crowd_out_the_one_to_use() -> None:
    """Found beside the pri bug: the browser kept the first 32 announcements it resolved,
    usable or not, so 32 v1.2-only registries (or anyone announcing 32 names on the
    link) kept the v1.3 registry that came later out of the list for good."""
    browser = RegistryBrowser()
    for n in range(MAX_CANDIDATES):
        browser.found(Candidate(f"old{n}._nmos-register._tcp.local.", f"192.0.2.{n + 1}",
                                80, {"api_ver": "v1.0,v1.1,v1.2", "pri": "0"}))
    for n in range(MAX_CANDIDATES):
        browser.found(Candidate(f"fake{n}._nmos-register._tcp.local.", f"198.51.100.{n + 1}",
                                80, {"api_ver": "v1.3", "pri": "200"}))
    browser.found(Candidate("real._nmos-register._tcp.local.", "203.0.113.10", 8010,
                            {"api_ver": "v1.2,v1.3", "pri": "10"}))
    browser._first_answer = 0.0  # settled
    assert browser.registries()[0] == "http://203.0.113.10:8010"
    assert len(browser.registries()) == MAX_CANDIDATES
