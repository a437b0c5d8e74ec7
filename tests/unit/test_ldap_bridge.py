"""LDAP publication, the pure parts: the shipped schema and its LDIF, entries per
profile, the [ldap] table's rules, and the hub-side listener that never blocks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sapd.bridges.ldap import LdapPublisher
from sapd.bridges.ldap_entries import PUBLISHED, build_entry, escape_rdn_value
from sapd.bridges.ldap_schema import SCHEMAS, definitions, schema_path, to_ldif
from sapd.config import LdapConfig, load
from sapd.lifecycle import Event
from sapd.plumbing.config import ConfigError
from sapd.records import SessionRecord
from tests.packets import sdp_text

ARC = "2.25.92557937745973396511522616029081717907"


def record(**changes: object) -> SessionRecord:
    base = SessionRecord(
        id="abc123", source="10.0.0.1", identity="- 1 IN IP4 10.0.0.1", version=3,
        msg_hash=7, origin_address="10.0.0.1", name="Studio A", info=None,
        sdp=sdp_text(name="Studio A", extra="u=http://example.org/a\r\n"),
        scope="ipv4-local", sap_group="239.255.255.255", first_seen=1_700_000_000.0,
        last_seen=1_700_000_010.0, groups=("239.255.1.1",), media_types=("audio",))
    return base.with_changes(**changes)


@pytest.mark.parametrize("name", SCHEMAS)
def test_shipped_ldif_is_generated_from_the_schema(name: str) -> None:
    assert schema_path(name, ".ldif").read_text() == to_ldif(name, schema_path(name).read_text())


def test_schema_oids_are_ours_and_unique_and_cover_what_entries_carry() -> None:
    found = definitions(schema_path("sapd").read_text())
    oids = [re.match(r"\(\s*([\d.]+)", text).group(1) for _, text in found]  # type: ignore[union-attr]
    assert len(oids) == len(set(oids)) and all(o.startswith(ARC + ".") for o in oids)
    names = set()
    for _, text in found:
        names |= set(re.findall(r"NAME \(?\s*'([^']+)'", text))
    ours = {a for a in PUBLISHED["mstapi"] if a.startswith("sapd")}
    assert ours <= names | {"sapdSessionId"}


def test_entry_carries_the_session_and_nothing_absent() -> None:
    entry = build_entry(record(), "ou=s,dc=x", "sapd", "site-1", dynamic=True)
    assert entry.dn == "sapdSessionId=abc123+sapdSite=site-1,ou=s,dc=x"
    attrs = entry.attributes
    assert attrs["objectClass"] == [b"sapdSession", b"sapdSessionInfo", b"dynamicObject"]
    assert attrs["sapdMedia"] == [b"audio"] and attrs["sapdCodec"] == [b"L24/48000/2"]
    assert attrs["sapdName"] == attrs["cn"] == [b"Studio A"]
    assert attrs["sapdUri"] == [b"http://example.org/a"] and attrs["sapdVersion"] == [b"3"]
    assert attrs["sapdFirstSeen"] == [b"20231114221320Z"] and attrs["sapdSite"] == [b"site-1"]
    assert "sapdInfo" not in attrs and "sapdStopTime" not in attrs  # t=0 0: unbounded
    assert attrs["sapdSdp"] == [record().sdp.encode()]


def test_revision_follows_content_not_object_classes() -> None:
    one = build_entry(record(), "ou=s", "sapd", "h", dynamic=True)
    assert one.revision == build_entry(record(), "ou=s", "sapd", "h", dynamic=False).revision
    assert one.revision != build_entry(record(name="B"), "ou=s", "sapd", "h", True).revision


def test_mstapi_profile_is_an_rtconference_with_the_sdp_blob() -> None:
    entry = build_entry(record(), "ou=s", "mstapi", "h", dynamic=False)
    assert entry.dn == "msTAPI-uid=abc123@h,ou=s"
    assert entry.attributes["msTAPI-uid"] == [b"abc123@h"]
    assert entry.attributes["objectClass"] == [b"msTAPI-RtConference", b"sapdSessionInfo"]
    assert entry.attributes["msTAPI-ProtocolId"] == [b"SDP"]
    assert entry.attributes["msTAPI-ConferenceBlob"] == [record().sdp.encode()]


def test_rdn_values_are_escaped() -> None:
    assert escape_rdn_value("#a,b+c ") == "\\#a\\,b\\+c\\ "


def test_a_full_queue_asks_for_one_resynchronisation_and_never_blocks() -> None:
    config = LdapConfig(url="ldap://127.0.0.1", base="ou=s", queue=10)
    publisher = LdapPublisher(config, "h", open_reader=lambda: None)  # type: ignore[arg-type,return-value]
    for i in range(13):
        publisher.on_event(Event("new", f"s{i}", 0.0, record(id=f"s{i}")))
    assert publisher.overflows == 1 and publisher.backlog == 10
    assert publisher._resync_wanted.is_set()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sapd.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("table", "key", "reason"), [
    ('base = "ou=s,dc=x"\n', "ldap.base", "needs url"),
    ('url = "ldap://h"\n', "ldap.base", "required with url"),
    ('url = "http://h"\n', "ldap.url", "not an ldap://"),
    ('url = "ldap://h/dc=x"\n', "ldap.url", "no DN"),
    ('url = "ldap://h"\nbase = "nodn"\n', "ldap.base", "is not a DN"),
    ('url = "ldap://h"\nbase = "ou=s"\nbind_dn = "cn=a"\n', "ldap.password_file", "go together"),
    ('url = "ldaps://h"\nbase = "ou=s"\ntls = { starttls = true }\n', "ldap.tls.starttls",
     "only with an ldap://"),
    ('url = "ldap://h"\nbase = "ou=s"\nprofile = "ad"\n', "ldap.profile", "not one of"),
    ('url = "ldap://h"\nbase = "ou=s"\nttl = 1\n', "ldap.ttl", "within 10..86400"),
    ('url = "ldap://h"\nbase = "ou=s"\ntls = { ca_file = "/nonexistent" }\n',
     "ldap.tls.ca_file", "cannot read"),
])
def test_ldap_table_errors_name_the_key(tmp_path: Path, table: str, key: str,
                                        reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "[ldap]\n" + table), {})
    assert caught.value.key == key and reason in caught.value.reason


def test_ldap_is_off_by_default_and_an_ldapi_url_is_accepted(tmp_path: Path) -> None:
    assert not load(None, {}).ldap.enabled
    config = load(write(tmp_path, '[ldap]\nurl = "ldapi://%2Frun%2Fslapd%2Fldapi"\n'
                        'base = "ou=sessions,dc=example,dc=org"\n'), {})
    assert config.ldap.enabled and config.ldap.profile == "sapd"


def test_a_server_granting_less_ttl_than_asked_is_refreshed_at_its_pace() -> None:
    # slapo-dds grants at least a day, but RFC 2589 lets a server grant less (AD's
    # settings do): refreshing at a third of what was asked would let entries lapse.
    config = LdapConfig(url="ldap://127.0.0.1", base="ou=s", ttl=300.0)
    publisher = LdapPublisher(config, "h", open_reader=lambda: None)  # type: ignore[arg-type,return-value]
    publisher._granted(600)
    assert publisher.refresh_ttl == 300.0
    publisher._granted(60)
    assert publisher.refresh_ttl == 60.0


def test_values_ldap_syntaxes_refuse_are_left_out_not_sent() -> None:
    # a lone-space s= (RFC 8866 allows it) cannot be a Directory String; a non-ASCII
    # codec name cannot be an IA5 String: either would make the server refuse the entry
    sdp = sdp_text(name=" ").replace("L24/48000/2", "L\u00e924/48000")
    entry = build_entry(record(name=" ", info=" ", sdp=sdp), "ou=s", "sapd", "h", False)
    assert entry.attributes["sapdName"] == [b"-"] and "sapdInfo" not in entry.attributes
    assert "sapdCodec" not in entry.attributes


def test_without_python_ldap_the_ldap_table_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util  # noqa: PLC0415

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ldap" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, '[ldap]\nurl = "ldap://h"\nbase = "ou=s"\n'), {})
    assert caught.value.key == "ldap.url" and "sapd[ldap]" in caught.value.reason


def test_entry_names_every_way_a_session_is_heard() -> None:
    both = record(heard_via=(("sap", "239.255.255.255", "eth0", "10.0.0.1"),
                             ("ravenna", "", "", "10.0.0.1")))
    entry = build_entry(both, "ou=s", "sapd", "h", dynamic=False)
    assert entry.attributes["sapdHeardVia"] == [b"ravenna", b"sap"]
