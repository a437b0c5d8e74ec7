"""VLC's 20-digit o= numbers (issue 13 item 1): RFC 8866 makes them 1*DIGIT, so sapd keeps
them exact at any length, compares them as numbers, and gives them in JSON as decimal
strings (a JavaScript number cannot hold them)."""

from __future__ import annotations

from tests.daemons import Daemon, collect_events, send_local_multicast, wait_session
from tests.packets import announce, sdp_text
from tests.support import wait_for

VLC_SESSION = 17201912864673439254  # VLC 3.0: 64-bit NTP values, above 2**63
VLC_VERSION = 17201912864673439255
HUGE_VERSION = 2**64 + 12345  # beyond what orjson can write as a number


def vlc_sdp(name: str, version: int = VLC_VERSION) -> str:
    return sdp_text(name=name, group="239.255.7.7").replace(
        "o=- 1 1 ", f"o=- {VLC_SESSION} {version} ")


def test_vlc_20_digit_version_does_not_lose_the_batch(sapd: Daemon) -> None:
    send_local_multicast(announce(sdp_text(session=1, name="ordinary 1")))
    send_local_multicast(announce(vlc_sdp("VLC tone")))
    for n in range(2, 6):
        send_local_multicast(announce(sdp_text(session=n, name=f"ordinary {n}")))
    wait_for(lambda: len(sapd.sessions()) == 6, 5,
             what=f"all six sessions listed; stats {sapd.stats()}")
    (vlc,) = [s for s in sapd.sessions() if s["name"] == "VLC tone"]
    assert vlc["version"] == str(VLC_VERSION)  # exact, as a decimal string
    detail = sapd.get(f"/v1/sessions/{vlc['id']}")
    assert detail["description"]["origin"]["version"] == str(VLC_VERSION)
    # compared as numbers: a version one higher (longer still) replaces it
    send_local_multicast(announce(vlc_sdp("VLC tone 2", version=VLC_VERSION * 10)))
    wait_session(sapd, lambda s: s["name"] == "VLC tone 2")
    send_local_multicast(announce(vlc_sdp("VLC tone older", version=VLC_VERSION - 1)))
    wait_for(lambda: sapd.stats()["drops"].get("old_version") == 1, 5, what="old version drop")
    assert [s["name"] for s in sapd.sessions() if "VLC" in s["name"]] == ["VLC tone 2"]


def test_events_survive_a_version_of_2_64_and_more(sapd: Daemon) -> None:
    thread, lines = collect_events(sapd, 2)
    send_local_multicast(announce(vlc_sdp("huge", version=HUGE_VERSION)))
    wait_session(sapd, lambda s: s["name"] == "huge")
    send_local_multicast(announce(sdp_text(session=2, name="after")))
    thread.join(5)
    assert [e["session"]["name"] for e in lines] == ["huge", "after"], lines
    assert lines[0]["session"]["version"] == str(HUGE_VERSION)
    assert sapd.stats()["subscribers"] == 1  # still connected


def test_announce_of_vlc_numbers_works_and_can_be_withdrawn(sapd: Daemon) -> None:
    text = vlc_sdp("published VLC", version=HUGE_VERSION)
    made = sapd.client.send_json("POST", "/v1/announcements", {"sdp": text, "interval": 1})
    assert made["session"]["version"] == str(HUGE_VERSION), made
    shown = sapd.get(f"/v1/sessions/{made['id']}?detail=full")["session"]
    assert shown["version"] == str(HUGE_VERSION) and shown["local"]
    sapd.client.request("DELETE", f"/v1/announcements/{made['id']}")
    wait_for(lambda: sapd.sessions() == [], 3, what="withdrawn")
