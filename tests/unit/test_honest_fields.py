"""Session JSON says what is true (issue 13 item 8): authentication data in a SAP header
is shown as present, of a type, and not verified (sapd holds no keys)."""

from __future__ import annotations

from sapd import wire
from sapd.lifecycle import Engine
from tests.packets import announce, sdp_text


def heard(packet: bytes) -> dict[str, object]:
    engine = Engine()
    assert engine.receive_datagram(packet, 0.0) == "new"
    (record,) = engine.take_writes().upserts.values()
    return record.to_json()


def test_unverified_auth_data_is_not_shown_as_authenticated() -> None:
    signed = heard(announce(sdp_text(), auth=wire.AuthData(1, False, 1, b"sig")))
    assert "authenticated" not in signed  # was true, though nobody checked the signature
    assert signed["auth"] == {"present": True, "type": "cms", "verified": False}


def test_plain_announcement_shows_no_auth_data() -> None:
    assert heard(announce(sdp_text()))["auth"] == {"present": False, "type": None,
                                                   "verified": False}
