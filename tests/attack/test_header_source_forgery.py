"""Issue 13 item 3: the rate limit and the local announcements must not trust the SAP
header's originating source, which any sender writes."""

from __future__ import annotations

import time

from tests.attack.senders import send_from
from tests.daemons import Daemon
from tests.packets import announce, delete, sdp_text
from tests.support import wait_for

ATTACKER = "127.0.0.3"


def test_rotating_the_header_source_does_not_escape_the_rate_limit(sapd: Daemon) -> None:
    sent = 600  # default limit: burst 200, then 100/s per source
    for n in range(sent):
        header = f"10.66.{n // 250}.{n % 250 + 1}"
        send_from(ATTACKER, announce(sdp_text(session=n, name=f"flood{n}", origin=header),
                                     source=header))
    wait_for(lambda: sum(sapd.stats()["packets"].values()) + sum(
        sapd.stats()["drops"].values()) >= sent, 10, what="every datagram counted")
    stats = sapd.stats()
    accepted = stats["packets"].get("new", 0)
    assert accepted <= 300, f"{accepted} of {sent} from one host accepted " \
                            f"(rate_limited: {stats['drops'].get('rate_limited', 0)})"


def _publish(sapd: Daemon) -> dict[str, object]:
    made: dict[str, object] = sapd.client.send_json(
        "POST", "/v1/announcements", {"sdp": sdp_text(name="ours", origin="10.0.0.1")})
    return made


def test_forged_deletion_cannot_remove_a_local_announcement(sapd: Daemon) -> None:
    made = _publish(sapd)
    own_source = made["session"]["source"]  # type: ignore[index]
    send_from(ATTACKER, delete(origin="10.0.0.1", source=own_source))
    time.sleep(0.5)
    assert [s["name"] for s in sapd.sessions()] == ["ours"]


def test_forged_version_cannot_rewrite_a_local_announcement(sapd: Daemon) -> None:
    made = _publish(sapd)
    own_source = made["session"]["source"]  # type: ignore[index]
    send_from(ATTACKER, announce(sdp_text(version=7, name="hijacked", origin="10.0.0.1"),
                                 source=own_source))
    time.sleep(0.5)
    # another host's packet is its own announcement, listed beside ours (design: the same
    # identity from another sender), never a change of ours
    listed = {s["name"]: s for s in sapd.sessions()}
    ours = listed.pop("ours")
    assert (ours["id"], ours["local"]) == (made["session"]["id"], True)  # type: ignore[index]
    assert all(s["source"] == ATTACKER and not s["local"] for s in listed.values()), listed
