"""Issue 13 item 3 (fixed by trust-numbers): sapd must not take the SAP header's
originating source as the sender. A host at 127.0.0.3 writes the victim's address
(127.0.0.2) into the header of a deletion and the victim's stream vanishes from every listing."""

from __future__ import annotations

import time

from tests.attack.senders import send_from
from tests.daemons import Daemon, wait_session
from tests.packets import announce, delete, sdp_text

VICTIM = "127.0.0.2"
ATTACKER = "127.0.0.3"


def test_deletion_forged_by_another_host_is_not_obeyed(sapd: Daemon) -> None:
    send_from(VICTIM, announce(sdp_text(name="victim", origin=VICTIM), source=VICTIM))
    wait_session(sapd, lambda s: s["name"] == "victim")
    send_from(ATTACKER, delete(origin=VICTIM, source=VICTIM))
    time.sleep(0.5)
    assert [s["name"] for s in sapd.sessions()] == ["victim"]


def test_version_bump_forged_by_another_host_does_not_replace(sapd: Daemon) -> None:
    send_from(VICTIM, announce(sdp_text(name="victim", origin=VICTIM), source=VICTIM))
    wait_session(sapd, lambda s: s["name"] == "victim")
    send_from(ATTACKER, announce(sdp_text(version=9, name="hijacked", origin=VICTIM),
                                 source=VICTIM))
    time.sleep(0.5)
    assert "victim" in [s["name"] for s in sapd.sessions()]
