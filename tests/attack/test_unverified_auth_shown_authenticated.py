"""Issue 13 item 8: a SAP packet with any authentication data (here four
bytes of junk in a PGP subheader; no keys are configured, nothing is verified) was listed
with "authenticated": true (sapd/records.py to_json: bool(self.auth_tag))."""

from __future__ import annotations

from sapd import wire
from sapd.lifecycle import Engine
from tests.packets import announce, sdp_text


def test_unverified_authentication_is_not_shown_as_authenticated() -> None:
    engine = Engine()
    junk = wire.AuthData(version=1, padded=False, auth_type=wire.AuthType.PGP,
                         signature=b"\xde\xad\xbe")
    assert engine.receive_datagram(announce(sdp_text(name="signed?"), auth=junk), 1000.0) == "new"
    (record,) = engine.records()
    shown = record.to_json()
    assert "authenticated" not in shown
    assert shown["auth"]["present"] is True and shown["auth"]["verified"] is False
    assert shown["verified"] is False
