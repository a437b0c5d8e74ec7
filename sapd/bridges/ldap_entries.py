"""What a session looks like in LDAP: its DN and attributes, per profile. Pure.

Two profiles (``[ldap] profile``): "sapd", entries of our classes sapdSession +
sapdSessionInfo (schema/sapd.schema), and "mstapi", entries of Active Directory's
msTAPI-RtConference (schema/mstapi.schema) that carry sapdSessionInfo as well, so the
same searches work on both. Every entry names the sapd that publishes it (sapdSite) and
a digest of what was published (sapdRevision): resynchronisation compares digests
rather than rewriting every entry, and touches only its own site's entries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sapd import sdp
from sapd.records import SessionRecord

Attributes = dict[str, list[bytes]]

SESSION_CLASS = {"sapd": "sapdSession", "mstapi": "msTAPI-RtConference"}
INFO_CLASS = "sapdSessionInfo"  # on every entry we publish, whichever the profile
DYNAMIC_CLASS = "dynamicObject"  # RFC 2589, when the server has it
SITE = "sapdSite"
REVISION = "sapdRevision"
SESSION_ID = "sapdSessionId"
MSTAPI_PROTOCOL = b"SDP"
NO_NAME = "-"  # RFC 8866's suggestion for a session without a name

# Every attribute an entry of ours may carry, per profile: a change replaces each of
# them, so one that a new version lacks (an i= removed) is deleted, not left behind.
_COMMON = (
    "cn", "sapdName", "sapdInfo", "sapdUri", "sapdGroup", "sapdMedia", "sapdCodec",
    "sapdOrigin", "sapdVersion", "sapdSource", "sapdHeardVia", "sapdScope", "sapdSapGroup",
    "sapdStartTime", "sapdStopTime", "sapdFirstSeen", "sapdSdp", "sapdBlob", "sapdOwnerUid",
    "sapdSite", "sapdRevision", "labeledURI")
PUBLISHED = {"sapd": _COMMON,
             "mstapi": (*_COMMON, "sapdSessionId", "msTAPI-ProtocolId",
                        "msTAPI-ConferenceBlob")}


@dataclass(frozen=True, slots=True)
class Entry:
    dn: str
    attributes: Attributes  # objectClass included
    revision: str


def escape_rdn_value(value: str) -> str:
    """RFC 4514 section 2.4: the characters a DN value must escape."""
    out = []
    for i, char in enumerate(value):
        if char in ',+"\\<>;=' or (char == "#" and i == 0) or \
                (char == " " and i in (0, len(value) - 1)):
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append(f"\\{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def entry_dn(session_id: str, base: str, profile: str, site: str) -> str:
    """One entry per session and publishing sapd, so that several sapd can share a base:
    the site is part of the RDN (multi-valued in our schema; AD has no multi-valued
    RDNs, so msTAPI-uid is ``id@site``)."""
    if profile == "mstapi":
        return f"msTAPI-uid={escape_rdn_value(mstapi_uid(session_id, site))},{base}"
    return (f"sapdSessionId={escape_rdn_value(session_id)}"
            f"+sapdSite={escape_rdn_value(site)},{base}")


def mstapi_uid(session_id: str, site: str) -> str:
    return f"{session_id}@{site}"


def generalized_time(seconds: float) -> bytes:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%SZ").encode()


def _ia5(values: Iterable[str]) -> list[str]:
    """Values an IA5 String attribute can hold (ASCII); whatever else a sender wrote
    in m= or rtpmap stays in the SDP, not in a value that would make the add fail."""
    return [v for v in values if v.isascii() and v.strip()]


def _codecs(session: sdp.SessionDescription) -> list[str]:
    seen: dict[str, None] = {}
    for media in session.media:
        for codec in media.codecs:
            name = f"{codec.encoding}/{codec.clock_rate}"
            seen[name + (f"/{codec.parameters}" if codec.parameters else "")] = None
    return list(seen)


def _times(session: sdp.SessionDescription) -> tuple[datetime | None, datetime | None]:
    starts = [t.start for t in session.times if t.start is not None]
    bounded = all(t.start is not None for t in session.times)
    return (min(starts) if starts and bounded else None), session.stop_time


def build_entry(record: SessionRecord, base: str, profile: str, site: str,
                dynamic: bool) -> Entry:
    """The entry for one session as stored (its SDP included)."""
    # s= may be a lone space (RFC 8866 allows it), which a Directory String cannot hold
    name = record.name if record.name.strip() else NO_NAME
    values: dict[str, list[str] | list[bytes]] = {
        "sapdSessionId": [record.id], "sapdName": [name], "cn": [name],
        "sapdOrigin": [record.identity], "sapdVersion": [str(record.version)],
        "sapdSource": _ia5([record.source]),
        # each way it is heard (sap, ravenna); rows from before paths were named: sap
        "sapdHeardVia": ["local"] if record.local else sorted(
            {via[0] for via in record.heard_via} or {"sap"}),
        "sapdGroup": _ia5(record.groups), "sapdMedia": _ia5(record.media_types),
        "sapdFirstSeen": [generalized_time(record.first_seen)],
        "sapdSdp": [record.sdp.encode()], "sapdSite": [site],
    }
    if record.info and record.info.strip():
        values["sapdInfo"] = [record.info]
    if record.sap_group:
        values["sapdSapGroup"] = _ia5([record.sap_group])
    if record.scope:
        values["sapdScope"] = [record.scope]
    if record.blob:
        values["sapdBlob"] = [json.dumps(record.blob, sort_keys=True).encode()]
    if record.owner_uid is not None:
        values["sapdOwnerUid"] = [str(record.owner_uid)]
    session, _, _ = sdp.validate(record.sdp) if record.sdp else (None, [], [])
    if session is not None:
        if session.uri:
            values["sapdUri"] = [session.uri]
            values["labeledURI"] = [session.uri]
        codecs = _ia5(_codecs(session))
        if codecs:
            values["sapdCodec"] = codecs
        start, stop = _times(session)
        if start is not None:
            values["sapdStartTime"] = [generalized_time(start.timestamp())]
        if stop is not None:
            values["sapdStopTime"] = [generalized_time(stop.timestamp())]
    if profile == "mstapi":
        values["msTAPI-uid"] = [mstapi_uid(record.id, site)]
        values["msTAPI-ProtocolId"] = [MSTAPI_PROTOCOL]
        values["msTAPI-ConferenceBlob"] = [record.sdp.encode()]
    attributes: Attributes = {
        name: [v if isinstance(v, bytes) else v.encode() for v in vs]
        for name, vs in values.items() if vs}
    revision = digest(attributes)
    attributes[REVISION] = [revision.encode()]
    classes = [SESSION_CLASS[profile], INFO_CLASS] + ([DYNAMIC_CLASS] if dynamic else [])
    attributes["objectClass"] = [c.encode() for c in classes]
    return Entry(entry_dn(record.id, base, profile, site), attributes, revision)


def digest(attributes: Attributes) -> str:
    """A stable digest of the attribute values (not of the object classes, which the
    server's dds support decides)."""
    h = hashlib.sha256()
    for name in sorted(attributes):
        for value in attributes[name]:
            h.update(name.encode() + b"\0" + value + b"\0")
    return h.hexdigest()[:32]
