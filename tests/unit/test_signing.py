"""Signed announcements: the CMS codec (sapd.signing) and the trust policy in the engine
(sapd.trust through Engine._authorize), with real keys and a clock passed in."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapd import signing, wire
from sapd.lifecycle import Engine, Limits
from sapd.store import frames
from sapd.store.frames import decode_writes, encode_writes
from sapd.trust import ModeRule, SignerRule, TrustPolicy
from tests import certs
from tests.packets import announce, delete, sdp_text

NOW = float(int(time.time()))  # certificates are valid around the real time


@pytest.fixture(scope="module")
def studio() -> certs.Credentials:
    return certs.make("studio-a")


@pytest.fixture(scope="module")
def intruder() -> certs.Credentials:
    return certs.make("studio-a")  # the same name, another key


def key_of(creds: certs.Credentials) -> signing.SigningKey:
    return signing.SigningKey(creds.key_pem, creds.cert_pem)


def engine(mode: str, *trusted: certs.Credentials, window: float = 600.0,
           signers: tuple[SignerRule, ...] = ()) -> Engine:
    anchors = signing.Anchors(pinned=[c.certificate for c in trusted])
    policy = TrustPolicy(anchors, default=mode,  # type: ignore[arg-type]
                         signers=signers, window=window)
    return Engine(trust=policy)


def signed(creds: certs.Credentials, datagram: bytes, when: float = NOW) -> bytes:
    return key_of(creds).sign(datagram, when)


def only(e: Engine) -> dict[str, object]:
    (record,) = e.records()
    return record.to_json()


# -- the codec -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ec", "ed25519"])
def test_signature_made_here_verifies_and_fits_the_auth_field(kind: str) -> None:
    creds = certs.make("signer", kind=kind)
    datagram = signed(creds, announce(sdp_text()))
    packet = wire.decode(datagram)
    assert packet.auth is not None and packet.auth.auth_type == wire.AuthType.CMS
    assert len(packet.auth_raw) <= signing.MAX_AUTH_BYTES
    verdict = signing.verify(datagram, packet, signing.Anchors([creds.certificate]), NOW)
    assert verdict.status is signing.Status.VALID
    assert verdict.signer is not None and verdict.signer.subject == "CN=signer"
    assert verdict.signing_time == NOW


def test_compressed_packet_is_signed_after_compression(studio: certs.Credentials) -> None:
    datagram = signed(studio, announce(sdp_text(), compressed=True))
    packet = wire.decode(datagram)
    assert packet.compressed and packet.payload.startswith(b"v=0")
    assert signing.verify(datagram, packet, signing.Anchors([studio.certificate]),
                          NOW).valid


def test_changed_payload_fails_with_digest_mismatch(studio: certs.Credentials) -> None:
    datagram = signed(studio, announce(sdp_text(name="Real")))
    forged = datagram.replace(b"s=Real", b"s=Fake")
    assert signing.verify(forged, wire.decode(forged), signing.Anchors([studio.certificate]),
                          NOW).status is signing.Status.DIGEST_MISMATCH


def test_changed_header_fails_with_digest_mismatch(studio: certs.Credentials) -> None:
    datagram = bytearray(signed(studio, announce(sdp_text())))
    datagram[2] ^= 0xFF  # the message id hash is signed too
    forged = bytes(datagram)
    assert signing.verify(forged, wire.decode(forged), signing.Anchors([studio.certificate]),
                          NOW).status is signing.Status.DIGEST_MISMATCH


def test_same_subject_other_key_is_an_unknown_signer(studio: certs.Credentials,
                                                     intruder: certs.Credentials) -> None:
    datagram = signed(intruder, announce(sdp_text()))
    verdict = signing.verify(datagram, wire.decode(datagram),
                             signing.Anchors([studio.certificate]), NOW)
    assert verdict.status is signing.Status.UNKNOWN_SIGNER


def test_signer_vouched_for_by_a_ca_bundle() -> None:
    ca = certs.make("Example CA", ca=True)
    leaf = certs.make("studio-b", issuer=ca)
    datagram = signed(leaf, announce(sdp_text()))
    packet = wire.decode(datagram)
    vouched = signing.Anchors(authorities=[ca.certificate], known=[leaf.certificate])
    assert signing.verify(datagram, packet, vouched, NOW).valid
    other_ca = certs.make("Other CA", ca=True)
    stranger = signing.Anchors(authorities=[other_ca.certificate], known=[leaf.certificate])
    assert signing.verify(datagram, packet, stranger, NOW).status is \
        signing.Status.UNTRUSTED_CERTIFICATE


def test_expired_certificate_is_not_trusted() -> None:
    old = certs.make("old", start_days=-30, days=-1)
    datagram = signed(old, announce(sdp_text()))
    assert signing.verify(datagram, wire.decode(datagram), signing.Anchors([old.certificate]),
                          NOW).status is signing.Status.CERTIFICATE_EXPIRED


@pytest.mark.parametrize(("auth", "status"), [
    (wire.AuthData(1, False, wire.AuthType.PGP, b"\x88" * 7), signing.Status.PGP_UNSUPPORTED),
    (wire.AuthData(1, False, 5, b"abc"), signing.Status.UNKNOWN_AUTH_TYPE),
    (wire.AuthData(1, False, wire.AuthType.CMS, b"\x30\x03\x02\x01"),
     signing.Status.MALFORMED_SIGNATURE),
    (wire.AuthData(1, False, wire.AuthType.CMS, b"not der at all"),
     signing.Status.MALFORMED_SIGNATURE),
])
def test_unusable_auth_data_gets_a_named_status(auth: wire.AuthData,
                                                status: signing.Status) -> None:
    datagram = announce(sdp_text(), auth=auth)
    assert signing.verify(datagram, wire.decode(datagram), signing.Anchors(),
                          NOW).status is status


def test_key_that_is_not_the_certificates_is_refused(studio: certs.Credentials,
                                                     intruder: certs.Credentials) -> None:
    with pytest.raises(signing.SigningError, match="public keys differ"):
        signing.SigningKey(intruder.key_pem, studio.cert_pem)


# -- the policy, through the engine ----------------------------------------------------
def test_forged_deletion_of_a_signed_session_is_ignored_under_prefer(
        studio: certs.Credentials, intruder: certs.Credentials) -> None:
    e = engine("prefer", studio)
    assert e.receive_datagram(signed(studio, announce(sdp_text())), NOW) == "new"
    assert e.receive_datagram(delete(), NOW + 1) == "unknown_deletion"  # unsigned
    assert e.receive_datagram(signed(intruder, delete()), NOW + 2) == "unknown_deletion"
    assert len(e) == 1 and only(e)["verified"] is True
    assert e.receive_datagram(signed(studio, delete()), NOW + 3) == "deleted"
    assert len(e) == 0


def test_unsigned_or_other_signed_change_becomes_a_separate_unverified_entry(
        studio: certs.Credentials, intruder: certs.Credentials) -> None:
    e = engine("prefer", studio)
    e.receive_datagram(signed(studio, announce(sdp_text(name="Real"))), NOW)
    assert e.receive_datagram(signed(intruder, announce(sdp_text(version=2, name="Fake"))),
                              NOW + 1) == "new"
    assert e.receive_datagram(announce(sdp_text(version=3, name="Plain")), NOW + 2) == "new"
    shown = {r.name: r.to_json() for r in e.records()}
    assert shown["Real"]["verified"] is True and shown["Real"]["signed_by"] == "CN=studio-a"
    assert shown["Fake"]["verified"] is False
    assert shown["Fake"]["verification"] == "unknown_signer"
    assert shown["Plain"]["verified"] is False and shown["Plain"]["verification"] == "unsigned"
    # the signed one moves on only with its own key
    assert e.receive_datagram(signed(studio, announce(sdp_text(version=4, name="Real 2"))),
                              NOW + 3) == "changed"


def test_unsigned_announcement_is_dropped_and_counted_under_require(
        studio: certs.Credentials, intruder: certs.Credentials) -> None:
    e = engine("require", studio)
    assert e.receive_datagram(announce(sdp_text()), NOW) == "unsigned"
    assert e.receive_datagram(signed(intruder, announce(sdp_text())), NOW) == "unknown_signer"
    assert e.counters["unsigned"] == 1 and e.counters["unknown_signer"] == 1
    assert len(e) == 0
    assert e.receive_datagram(signed(studio, announce(sdp_text())), NOW) == "new"


def test_replayed_old_version_is_ignored(studio: certs.Credentials) -> None:
    e = engine("prefer", studio)
    old = signed(studio, announce(sdp_text(version=1, name="v1")), NOW)
    e.receive_datagram(old, NOW)
    e.receive_datagram(signed(studio, announce(sdp_text(version=2, name="v2")), NOW + 5),
                       NOW + 5)
    assert e.receive_datagram(old, NOW + 6) in ("replayed", "old_version")
    assert only(e)["name"] == "v2"


def test_replayed_announcement_after_its_deletion_is_ignored(
        studio: certs.Credentials) -> None:
    e = engine("prefer", studio)
    captured = signed(studio, announce(sdp_text()), NOW)
    e.receive_datagram(captured, NOW)
    assert e.receive_datagram(signed(studio, delete(), NOW + 5), NOW + 5) == "deleted"
    assert e.receive_datagram(captured, NOW + 6) == "replayed"
    assert len(e) == 0
    # announced again (signed after the deletion): accepted
    assert e.receive_datagram(signed(studio, announce(sdp_text()), NOW + 7), NOW + 7) == "new"


def test_signature_older_than_the_window_is_a_replay(studio: certs.Credentials) -> None:
    captured = signed(studio, announce(sdp_text()), NOW)
    late = engine("prefer", studio, window=600.0)
    assert late.receive_datagram(captured, NOW + 601) == "signing_time_outside_window"
    assert late.counters["signing_time_outside_window"] == 1 and len(late) == 0
    in_time = engine("prefer", studio, window=600.0)
    assert in_time.receive_datagram(captured, NOW + 599) == "new"


def test_identical_signed_datagram_is_checked_again(studio: certs.Credentials) -> None:
    """The refresh-by-bytes shortcut would keep a captured signature alive forever."""
    e = engine("prefer", studio, window=600.0)
    captured = signed(studio, announce(sdp_text()), NOW)
    assert e.receive_datagram(captured, NOW) == "new"
    assert e.receive_datagram(captured, NOW + 30) == "refresh"
    assert e.receive_datagram(captured, NOW + 700) == "signing_time_outside_window"


def test_signer_limited_to_its_origins_and_ranges(studio: certs.Credentials) -> None:
    import ipaddress  # noqa: PLC0415

    rule = SignerRule(key_id=signing.key_id(studio.certificate),
                      origins=(ipaddress.ip_network("10.0.0.0/24"),),
                      ranges=(ipaddress.ip_network("239.255.1.0/24"),))
    e = engine("require", studio, signers=(rule,))
    assert e.receive_datagram(signed(studio, announce(sdp_text())), NOW) == "new"
    assert e.receive_datagram(signed(studio, announce(sdp_text(
        session=2, group="239.255.9.9"))), NOW) == "signer_not_allowed"
    assert e.receive_datagram(signed(studio, announce(sdp_text(
        session=3, origin="192.0.2.1"))), NOW) == "signer_not_allowed"


def test_observe_shows_and_changes_nothing(studio: certs.Credentials,
                                           intruder: certs.Credentials) -> None:
    e = engine("observe", studio)
    assert e.receive_datagram(signed(studio, announce(sdp_text(name="A"))), NOW) == "new"
    assert only(e)["verified"] is True and only(e)["signed_by"] == "CN=studio-a"
    assert e.receive_datagram(signed(intruder, announce(sdp_text(version=2, name="B"))),
                              NOW) == "changed"
    assert only(e)["verified"] is False and only(e)["signed_by"] is None


def test_mode_per_scope_and_range(studio: certs.Credentials) -> None:
    import ipaddress  # noqa: PLC0415

    policy = TrustPolicy(signing.Anchors([studio.certificate]), default="off",
                         rules=[ModeRule("require",
                                         network=ipaddress.ip_network("239.69.0.0/16")),
                                ModeRule("prefer", scope="local")])
    assert policy.mode_for("", ["239.69.1.1"]) == "require"
    assert policy.mode_for("local", ["239.255.1.1"]) == "prefer"
    assert policy.mode_for("global", ["224.2.200.1"]) == "off"
    e = Engine(trust=policy)
    assert e.receive_datagram(announce(sdp_text(group="239.69.1.1")), NOW) == "unsigned"
    assert e.receive_datagram(announce(sdp_text(group="224.2.200.1")), NOW) == "new"
    assert only(e)["verification"] == "unsigned"


def test_verified_record_crosses_to_the_store_process(studio: certs.Credentials) -> None:
    """The writer marshals records: a verdict must be plain text, not a str enum."""
    e = engine("prefer", studio)
    e.receive_datagram(signed(studio, announce(sdp_text())), NOW)
    e.receive_datagram(announce(sdp_text(session=2)), NOW)
    writes = e.take_writes()
    body = encode_writes(writes)[frames.FRAME.size:]
    shown = {r.verification for r in decode_writes(body).upserts.values()}
    assert shown == {"valid", "unsigned"}


_FUZZ_KEY = certs.make("fuzz")
_FUZZ_PACKET = signing.SigningKey(_FUZZ_KEY.key_pem, _FUZZ_KEY.cert_pem).sign(
    announce(sdp_text()), NOW)
_FUZZ_AUTH = wire.decode(_FUZZ_PACKET).auth


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1,
                max_size=6), st.integers(0, 400))
def test_a_damaged_signature_gets_a_status_never_an_exception(
        flips: list[tuple[int, int]], cut: int) -> None:
    assert _FUZZ_AUTH is not None
    signature = bytearray(_FUZZ_AUTH.signature)
    for where, value in flips:
        signature[where % len(signature)] = value
    damaged = announce(sdp_text(), auth=wire.AuthData(1, False, wire.AuthType.CMS,
                                                      bytes(signature[:len(signature) - cut
                                                                      % 40])))
    verdict = signing.verify(damaged, wire.decode(damaged),
                             signing.Anchors([_FUZZ_KEY.certificate]), NOW)
    assert isinstance(verdict.status, signing.Status)


def test_signer_certificate_carried_in_the_packet_reaches_the_ca() -> None:
    ca = certs.make("Example CA", ca=True)
    leaf = certs.make("studio-c", issuer=ca)
    key = signing.SigningKey(leaf.key_pem, leaf.cert_pem, include_certificate=True)
    datagram = key.sign(announce(sdp_text()), NOW)
    packet = wire.decode(datagram)
    assert len(packet.auth_raw) <= signing.MAX_AUTH_BYTES
    verdict = signing.verify(datagram, packet, signing.Anchors(authorities=[ca.certificate]),
                             NOW)
    assert verdict.valid and verdict.signer is not None
    assert verdict.signer.subject == "CN=studio-c"


def test_forged_high_version_first_does_not_lock_out_the_real_signer(
        studio: certs.Credentials, intruder: certs.Credentials) -> None:
    """A badly signed packet heard first must not hold the slot of signed sessions: its
    o= version 999 would make the real signer's version 1 an 'old_version'."""
    e = engine("prefer", studio)
    assert e.receive_datagram(signed(intruder, announce(sdp_text(version=999, name="Fake"))),
                              NOW) == "new"
    assert e.receive_datagram(signed(studio, announce(sdp_text(version=1, name="Real"))),
                              NOW + 1) == "new"
    shown = {r.name: r.to_json() for r in e.records()}
    assert shown["Real"]["verified"] is True and shown["Fake"]["verified"] is False


def test_signed_deletions_are_rate_limited_like_announcements(
        studio: certs.Credentials) -> None:
    """Each checked deletion costs a verification: a flood of them must not."""
    e = Engine(trust=TrustPolicy(signing.Anchors([studio.certificate]), default="prefer"),
               limits=Limits(source_rate=1.0, source_burst=2.0))
    e.receive_datagram(signed(studio, announce(sdp_text())), NOW)
    forged = announce("o=- 1 1 IN IP4 10.0.0.1\r\n", deletion=True,
                      auth=wire.AuthData(1, False, wire.AuthType.CMS, b"\x30\x00"))
    outcomes = [e.receive_datagram(forged, NOW) for _ in range(5)]
    assert outcomes.count("rate_limited") >= 3 and len(e) == 1


def test_fuzzed_datagrams_through_an_engine_that_checks_signatures(
        studio: certs.Credentials) -> None:
    from tests.fuzz.sap_datagrams import datagrams  # noqa: PLC0415

    e = engine("require", studio)
    key = key_of(studio)
    inputs = 0
    for index, fuzzed in enumerate(datagrams(3000, seed=19)):
        data = fuzzed
        if index % 3 == 0 and len(data) >= 8 and not data[1] and data[0] >> 5 == 1:
            data = key.sign(data, NOW)  # some really signed, of every shape
        e.receive_datagram(data, NOW + index * 0.01)
        inputs += 1
    assert e.counters.get("internal_error", 0) == 0, e.last_internal_error
    assert sum(v for k, v in e.counters.items() if k != "expired") == inputs
    assert e.counters["unsigned"] > 0 and e.counters["new"] > 0


def test_signed_deletion_from_another_ip_sender_is_not_obeyed(
        studio: certs.Credentials) -> None:
    """Both checks hold after the trust-numbers merge: the right signer is not enough, the
    datagram must also come from the entry's IP sender (a captured deletion replayed by
    another host names no entry of that host)."""
    e = engine("prefer", studio)
    assert e.receive_datagram(signed(studio, announce(sdp_text())), NOW, "10.0.0.1") == "new"
    deletion = signed(studio, delete())
    assert e.receive_datagram(deletion, NOW + 1, "10.0.0.9") == "unknown_deletion"
    assert len(e) == 1 and only(e)["verified"] is True
    assert e.receive_datagram(deletion, NOW + 2, "10.0.0.1") == "deleted"
