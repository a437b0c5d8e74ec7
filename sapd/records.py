"""The directory's vocabulary, shared by the engine, the hub and every store backend.

A session record, a batch of writes, a search query, and the :class:`DirectoryBackend`
protocol that a backend (SQLite today; PostgreSQL later) implements. Pure: no I/O.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import orjson

from sapd import streaminfo

# (how: "sap" or "ravenna", destination group, interface name, IP source) of one way a
# session is heard; a stream heard both ways has one of each. For RAVENNA the group is
# '' (none: it came over RTSP) and the source is the RTSP server's address.
HeardVia = tuple[str, str, str, str]
SAP = "sap"
RAVENNA = "ravenna"


def via_of(heard_via: tuple[HeardVia, ...], how: str) -> tuple[HeardVia, ...]:
    return tuple(v for v in heard_via if v[0] == how)


def without_via(heard_via: tuple[HeardVia, ...], how: str) -> tuple[HeardVia, ...]:
    return tuple(v for v in heard_via if v[0] != how)


@dataclass(slots=True)
class SessionRecord:
    """One announcement as stored: identity, current version, where it came from.

    Treated as immutable (change it with :meth:`with_changes`); not declared frozen
    because a frozen dataclass's __init__ costs 3x, which start-up feels at 100k."""

    id: str
    source: str  # who sent it: the datagram's IP source (for ours, the address we send from)
    identity: str  # o= without the version
    version: int  # o= sess-version, exact at any length (RFC 8866: 1*DIGIT)
    msg_hash: int
    origin_address: str
    name: str
    info: str | None
    sdp: str
    scope: str
    sap_group: str
    first_seen: float
    last_seen: float
    local: bool = False
    owner_uid: int | None = None
    auth_tag: str = ""
    acl: dict[str, Any] = field(default_factory=dict)
    blob: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    period: float | None = None
    expires: float | None = None
    stale: bool = False
    groups: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()
    content_crc: int = 0  # CRC-32 of the SDP text: lets memory hold records without it
    # Signature check (sapd.trust): a signing.Status value or a trust label; signed_by
    # and signer_key (SHA-256 of the key) name a signer only once it was verified.
    verification: str = ""
    signed_by: str = ""
    signer_key: str = ""
    # The SAP header's originating source: data, written freely by any sender, so no
    # right follows it. '' when the same as source (the usual case): one string, not two.
    header_source: str = ""
    heard_via: tuple[HeardVia, ...] = ()  # where the current content was heard
    # The sapd site that heard or announces it ([site], default the host name): in a
    # directory shared by several sites, each site writes, refreshes and expires only
    # its own rows. '' in rows written before sites were recorded.
    site: str = ""
    # What the session list shows of the attributes (streaminfo.summary: codecs, clock,
    # redundancy), as the store computed it when it wrote them: a list page then reads
    # one column, not the SDP and its attribute rows. None where it was not read (build
    # it from ``attributes``). Derived, so not compared.
    listing: dict[str, Any] | None = field(default=None, compare=False)

    def with_changes(self, **changes: Any) -> SessionRecord:
        # dataclasses.replace costs ~15 us here; a positional copy ~2 us, and this runs
        # for every new or changed announcement.
        new = SessionRecord(*record_values(self))
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    @property
    def ravenna(self) -> bool:
        """Heard over RAVENNA (mDNS + RTSP): its lifetime follows the service."""
        return any(v[0] == RAVENNA for v in self.heard_via)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "site": self.site or None, "name": self.name, "info": self.info,
            "identity": self.identity,
            # decimal strings: o= numbers reach 2**64 and beyond (VLC), which neither a
            # JavaScript number nor every JSON encoder holds
            "version": str(self.version), "source": self.source,
            "header_source": self.header_source or self.source,
            "heard_via": via_json(self.heard_via, self.options),
            "msg_hash": self.msg_hash,
            "origin_address": self.origin_address, "scope": self.scope,
            "sap_group": self.sap_group, "groups": list(self.groups),
            "media": list(self.media_types), "local": self.local, "stale": self.stale,
            "owner_uid": self.owner_uid, "acl": self.acl, "blob": self.blob,
            "options": self.options,
            # What the SAP header carried, and whether a trust policy verified it
            # (sapd/trust.py; without one nothing is verified).
            "auth": {"present": bool(self.auth_tag), "type": self.auth_tag or None,
                     "verified": self.verification == "valid"},
            "verified": self.verification == "valid", "signed_by": self.signed_by or None,
            "signer_key": self.signer_key or None,
            "verification": self.verification or ("not_checked" if self.auth_tag
                                                  else "unsigned"),
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "period": self.period, "expires": self.expires,
        }


_VIA_JSON: dict[tuple[HeardVia, ...], list[dict[str, Any]]] = {}
_VIA_JSON_KEPT = 1_024  # ~400 bytes each: what a few list pages show


def via_json(heard_via: tuple[HeardVia, ...],
             options: dict[str, Any]) -> list[dict[str, Any]]:
    """heard_via as the API shows it; a RAVENNA path adds where its SDP was fetched and
    the service that names it (the record's options). SAP's alone depends on heard_via
    only: made once per way of being heard and shared (read-only), as heard_via is; a
    list page made a hundred."""
    if not heard_via:
        return []
    found = _VIA_JSON.get(heard_via)
    if found is not None:
        return found
    out = _via_json(heard_via, options)
    if all(how != RAVENNA for how, *_ in heard_via) and len(_VIA_JSON) < _VIA_JSON_KEPT:
        _VIA_JSON[heard_via] = out
    return out


def _via_json(heard_via: tuple[HeardVia, ...],
              options: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for how, group, interface, source in heard_via:
        entry: dict[str, Any] = {"via": how, "group": group or None,
                                 "interface": interface or None, "source": source}
        if how == RAVENNA:
            entry["url"] = options.get("rtsp_url")
            entry["service"] = options.get("ravenna_service")
        out.append(entry)
    return out


_MEDIA_TYPES: dict[tuple[str, ...], tuple[str, ...]] = {}


def shared_media_types(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """One shared tuple per combination of media kinds ("audio", "video audio", ...)
    rather than a tuple and strings per session: ~10 MB at 100,000 sessions. Bounded,
    since m= kinds are whatever senders write."""
    if len(_MEDIA_TYPES) < 256:
        return _MEDIA_TYPES.setdefault(kinds, kinds)
    return _MEDIA_TYPES.get(kinds, kinds)


_HEARD_VIA: dict[tuple[HeardVia, ...], tuple[HeardVia, ...]] = {}
_HEARD_VIA_TEXT: dict[str, tuple[HeardVia, ...]] = {}
_SHARED_VIA_MAX = 65_536  # senders x groups x interfaces of a large campus


def shared_heard_via(via: tuple[HeardVia, ...]) -> tuple[HeardVia, ...]:
    """One shared heard_via per way of being heard (a sender, a group, an interface),
    not tuples and strings per session: ~110 bytes a session, 11 MB at 100,000."""
    if len(_HEARD_VIA) < _SHARED_VIA_MAX:
        return _HEARD_VIA.setdefault(via, via)
    return _HEARD_VIA.get(via, via)


def object_to_json(value: dict[str, Any]) -> str:
    """A record's acl, blob or options as the stores keep them."""
    return json.dumps(value) if value else "{}"


EMPTY_OBJECT: dict[str, Any] = {}  # shared by records the engine loads: never mutated


def shared_object(text: str) -> dict[str, Any]:
    """object_from_json, with the usual empty object shared (read-only)."""
    return EMPTY_OBJECT if text == "{}" else object_from_json(text)


def object_from_json(text: str) -> dict[str, Any]:
    if text == "{}":
        return {}  # the common case, without the parser
    value: dict[str, Any] = json.loads(text)
    return value


def heard_via_to_json(via: tuple[HeardVia, ...]) -> str:
    """heard_via as the stores keep it: a JSON list of [how, group, interface, source]."""
    return orjson.dumps(via).decode() if via else ""


def heard_via_from_json(text: str) -> tuple[HeardVia, ...]:
    """What :func:`heard_via_to_json` wrote, shared: a start-up load or a listing parses
    each distinct text once (the JSON was a third of the load at 100,000 sessions)."""
    if not text:
        return ()
    found = _HEARD_VIA_TEXT.get(text)
    if found is None:
        found = shared_heard_via(tuple((str(h), str(g), str(i), str(s))
                                       for h, g, i, s in orjson.loads(text)))
        if len(_HEARD_VIA_TEXT) < _SHARED_VIA_MAX:
            _HEARD_VIA_TEXT[text] = found
    return found


_LISTING_OF: dict[tuple[tuple[str, str | None], ...], str] = {}
_LISTING_TEXT: dict[str, dict[str, Any]] = {}
_LISTINGS_KEPT = 4_096  # distinct attribute sets / listings remembered


def listing_to_json(attributes: tuple[tuple[str, str | None], ...]) -> str:
    """The stored listing of a record's attributes (see SessionRecord.listing).
    Remembered per attribute set: streams of one device or template share them."""
    text = _LISTING_OF.get(attributes)
    if text is None:
        text = orjson.dumps(streaminfo.summary(attributes)).decode()
        if len(_LISTING_OF) < _LISTINGS_KEPT:
            _LISTING_OF[attributes] = text
    return text


def listing_from_json(text: str) -> dict[str, Any] | None:
    """What :func:`listing_to_json` wrote, one shared (read-only) dict per distinct
    text; None for '' (not stored: a row of an older schema)."""
    if not text:
        return None
    found = _LISTING_TEXT.get(text)
    if found is None:
        found = orjson.loads(text)
        if len(_LISTING_TEXT) < _LISTINGS_KEPT:
            _LISTING_TEXT[text] = found
    return found


record_values = operator.attrgetter(*(f.name for f in fields(SessionRecord)))


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Filters are ANDed; None means 'any'. ``text`` matches name or info, substring,
    case-insensitive."""

    text: str | None = None
    media: str | None = None
    group: str | None = None
    origin: str | None = None
    source: str | None = None
    scope: str | None = None
    attribute: str | None = None
    attribute_value: str | None = None
    local: bool | None = None
    stale: bool | None = None
    clock: str | None = None  # a=ts-refclk containing this (a PTP grandmaster, say)
    redundant: bool | None = None  # has an a=group:DUP (SMPTE ST 2022-7 legs)
    site: str | None = None  # the sapd site that heard or announces it (shared directory)
    limit: int = 100
    offset: int = 0


# (id, last_seen, expires, period, msg_hash): what a re-announcement changes
Liveness = tuple[str, float, float | None, float | None, int]


@dataclass(slots=True)
class Writes:
    """What the store must do; the adapter applies it in one transaction."""

    upserts: dict[str, SessionRecord] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    refreshes: dict[str, tuple[float, float | None, float | None, int]] = field(
        default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes or self.refreshes)

    def absorb(self, later: Writes) -> None:
        """Fold in a later batch, as if applied after this one."""
        for sid in later.deletes:
            self.upserts.pop(sid, None)
            self.refreshes.pop(sid, None)
        self.deletes -= later.upserts.keys()
        self.deletes |= later.deletes
        self.upserts.update(later.upserts)
        for sid, liveness in later.refreshes.items():
            pending = self.upserts.get(sid)
            if pending is None:
                self.refreshes[sid] = liveness
            else:  # the full record, with the later liveness
                last_seen, expires, period, msg_hash = liveness
                self.upserts[sid] = pending.with_changes(
                    last_seen=last_seen, expires=expires, period=period, msg_hash=msg_hash,
                    stale=False)



@dataclass(frozen=True, slots=True)
class Applied:
    """What a backend did with one batch. ``refused`` names the sessions whose writes it
    did not make (a shared database where another writer holds them, say); the rest of
    the batch is committed. SQLite never refuses part of a batch: all or an exception."""

    refused: frozenset[str] = frozenset()


class StoreFailure(RuntimeError):
    """A batch the store did not commit, and what kind of failure it was.

    ``transient`` failures (disk full, I/O error, a lock held) are about the store, not
    the batch: the same batch lands once they pass. The others are about a value in it
    (a constraint, a number or text the backend cannot hold): only some record fails,
    and the batch without it lands. ``reason`` names it for counters and health."""

    def __init__(self, message: str, reason: str = "unknown", transient: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


class DirectoryBackend(Protocol):
    """What the hub and the API need of a directory store. A new backend is one module
    under sapd/store/ that passes tests/contract/test_directory_backend.py."""

    def apply(self, writes: Writes) -> Applied: ...
    def upsert(self, records: Iterable[SessionRecord]) -> None: ...
    def refresh(self, seen: Iterable[Liveness]) -> None: ...
    def delete(self, ids: Iterable[str]) -> int: ...
    def expire(self, now: float) -> list[SessionRecord]: ...
    def get(self, session_id: str) -> SessionRecord | None: ...
    def search(self, query: SearchQuery, light: bool = False) -> list[SessionRecord]: ...
    def count(self, query: SearchQuery | None = None, cap: int | None = None) -> int: ...
    def iter_all(self, light: bool = False, own: bool = False) -> Iterator[SessionRecord]:
        """Every session; ``own``: only this site's (what its engine loads)."""
        ...
    def mark_remote_stale(self) -> int: ...
    def content_version(self) -> int: ...
    def shared_group_sessions(self, limit: int) -> list[SessionRecord]: ...
    def close(self) -> None: ...


def own_record(reader: DirectoryBackend, session_id: str, site: str) -> SessionRecord | None:
    """This site's session of that id, or None. A shared directory's ``get`` falls back
    to another site's row of the id, whose changes this site's listeners never hear."""
    found = reader.get(session_id)
    if found is None or (site and found.site and found.site != site):
        return None
    return found
