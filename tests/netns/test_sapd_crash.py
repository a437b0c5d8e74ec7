"""SIGKILL sapd on one host while another keeps announcing: restarted, it lists what it
knew at once (from its store, same first_seen) and catches up on what changed."""

from __future__ import annotations

from typing import Any

from tests.daemons import wait_session
from tests.netns.harness import Network
from tests.support import ROOT, wait_for

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()


def sdp(n: int, name: str | None = None) -> str:
    return (EXAMPLE.replace("3917001234", str(7000 + n))
            .replace("Lab tone 1 kHz", name or f"stream {n}")
            .replace("239.255.10.1", f"239.255.30.{n}"))


def test_sigkill_then_restart_catches_up(net: Network, daemons: Any) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 62)
    sapd_a = daemons("sapd", a).start()
    sapd_b = daemons("sapd", b).start()
    ids = {}
    for n in range(1, 6):
        made = sapd_a.client.send_json("POST", "/v1/announcements",
                                       {"sdp": sdp(n), "interval": 1})
        ids[n] = made["id"]
    wait_for(lambda: len(sapd_b.sessions()) == 5, 5, what="five sessions on b")
    before = {s["name"]: s for s in sapd_b.sessions()}

    sapd_b.kill()
    for n in range(6, 11):
        sapd_a.client.send_json("POST", "/v1/announcements", {"sdp": sdp(n), "interval": 1})
    changed = sdp(1, "stream 1 renamed").replace(" 1 IN IP4", " 2 IN IP4", 1)
    sapd_a.client.send_json("PUT", f"/v1/announcements/{ids[1]}", {"sdp": changed})

    sapd_b.start()
    back = {s["name"]: s for s in sapd_b.sessions()}
    for name, old in before.items():
        if name in back:  # stream 1 may already have been replaced by its update
            assert back[name]["first_seen"] == old["first_seen"], "re-learned, not restored"
    assert len(back) >= 4, f"directory not restored: {sorted(back)}"

    wait_for(lambda: len(sapd_b.sessions()) == 10, 5, what="caught up to ten sessions")
    (renamed,) = wait_session(sapd_b, lambda s: s["name"] == "stream 1 renamed")
    names = {s["name"] for s in sapd_b.sessions()}
    assert "stream 1" not in names and names >= {f"stream {n}" for n in range(2, 11)}
    assert renamed["version"] == "2"  # o= numbers are decimal strings in JSON
