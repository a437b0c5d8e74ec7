"""Two sapd hosts hear each other's IPv6 sessions in every scope (issue 13 item 6): sapd
announced on ff04::2:7ffe and ff08::2:7ffe but did not listen there."""

from __future__ import annotations

from typing import Any

from tests.daemons import wait_session
from tests.netns.harness import Network
from tests.support import ROOT

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()


def v6_session(group: str, name: str, session: int) -> str:
    return (EXAMPLE.replace("3917001234", str(session))
            .replace("c=IN IP4 239.255.10.1/16", f"c=IN IP6 {group}")
            .replace("IN IP4 10.200.0.1", "IN IP6 fd00:42::1")
            .replace("Lab tone 1 kHz", name))


def test_org_and_admin_local_v6_sessions_were_not_heard_by_another_sapd(
        net: Network, daemons: Any) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 43)
    sapd_a = daemons("sapd", a).start()
    sapd_b = daemons("sapd", b).start()
    for session, (group, name, sap_group, scope) in enumerate((
            ("ff08::4242", "org-local tone", "ff08::2:7ffe", "ipv6-org-local"),
            ("ff04::4242", "admin-local tone", "ff04::2:7ffe", "ipv6-admin-local"))):
        made = sapd_a.client.send_json("POST", "/v1/announcements",
                                       {"sdp": v6_session(group, name, 100 + session)})
        assert made["announcement"]["targets"][0]["sap_group"] == sap_group
        (heard,) = wait_session(sapd_b, lambda s, n=name: s["name"] == n)
        assert heard["groups"] == [group] and heard["scope"] == scope
        assert heard["sap_group"] == sap_group
    memberships = sapd_b.stats()["memberships"]
    assert any(m.startswith("ff08::2:7ffe%") for m in memberships), memberships
