"""Local announcements: publish, update and withdraw sessions, and send them on time.

The timing lives in the sans-IO :class:`~sapd.announce.schedule.Scheduler`; this module turns
API calls into directory records (committed before the API answers), SAP packets
into datagrams on the egress interfaces, and keeps the own-packet filter in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import ipaddress
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sapd import sdp, signing, wire
from sapd.announce.request import clean_acl, clean_stored
from sapd.announce.schedule import Scheduler
from sapd.announce.sender import Sender
from sapd.config import SapdConfig
from sapd.lifecycle import Engine, record_from_session, session_id
from sapd.plumbing import groupranges, logs
from sapd.plumbing.clock import SteadyClock
from sapd.plumbing.control import Peer
from sapd.plumbing.files import MAX_SDP_FILE, InputFileError, read_regular_file
from sapd.plumbing.multicast import Interface
from sapd.records import DirectoryBackend, SearchQuery, SessionRecord, StoreFailure
from sapd.scopes import Scope

log = logs.get("sapd.announce")
DIRECTORY_SCAN = 2.0


class PublishError(Exception):
    """A publish/update/withdraw that cannot be done; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None,
                 field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []
        self.field = field  # the request field at fault, if one is


@dataclass
class _Target:
    group: ipaddress.IPv4Address | ipaddress.IPv6Address
    ttl: int


@dataclass
class _Local:
    record: SessionRecord
    source: str
    packet: bytes
    deletion: bytes
    targets: list[_Target] = field(default_factory=list)
    interfaces: list[str] | None = None  # None: the daemon's egress set
    sent: int = 0


def normalize(text: str) -> str:
    """CRLF line endings, final newline: the form every receiver reads."""
    return "\r\n".join(text.replace("\r\n", "\n").split("\n")).rstrip("\r\n") + "\r\n"


def _with_version(text: str, version: int) -> str:
    lines = text.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("o="):
            fields = line[2:].split(" ")
            fields[2] = str(version)
            lines[i] = "o=" + " ".join(fields)
            break
    return "\r\n".join(lines)


def owns(peer: Peer, record: SessionRecord, admin_gid: int | None) -> bool:
    """Owner rights: the owner, root, or the admin group. Only they may change the ACL."""
    if peer.uid == 0 or (record.owner_uid is not None and peer.uid == record.owner_uid):
        return True
    return admin_gid is not None and admin_gid in peer.groups


def allowed(peer: Peer, record: SessionRecord, admin_gid: int | None) -> bool:
    """May change the SDP and withdraw: owner rights, or a uid/gid in the ACL."""
    if owns(peer, record, admin_gid):
        return True
    acl = clean_acl(record.acl)  # whatever an older sapd stored, never a TypeError here
    return peer.uid in acl.get("uids", []) or any(g in acl.get("gids", [])
                                                  for g in peer.groups)


class AnnounceHub(Protocol):
    """What the announce service needs of sapd.hub.Hub."""

    engine: Engine
    reader: DirectoryBackend
    loop: asyncio.AbstractEventLoop
    clock: SteadyClock

    async def commit(self) -> None: ...


class Announcer:
    def __init__(self, hub: AnnounceHub, sender: Sender, config: SapdConfig) -> None:
        self.hub = hub
        self.engine = hub.engine
        self.config = config
        self.scheduler = Scheduler(floor=self.engine.profile.announce_floor,
                                   bandwidth=config.announce.bandwidth,
                                   group_load=self.engine.group_load,
                                   deletion_repeats=config.announce.deletion_repeats)
        self.sender = sender
        self.locals: dict[str, _Local] = {}
        self._jobs: dict[str, tuple[str, _Target]] = {}  # scheduler key -> (sid, target)
        self._retired: dict[str, _Local] = {}  # old versions sending their deletion burst
        self._egress: list[Interface] = []
        self._timer: asyncio.TimerHandle | None = None
        self._files: dict[str, tuple[float, str]] = {}  # path -> (mtime, session id)
        self._tasks: list[asyncio.Task[None]] = []
        self.packets_sent = 0
        self.deletions_sent = 0
        self.signing_key = config.signing.signing_key()
        self.signing_failures = 0
        self.files_refused: Counter[str] = Counter()  # announce directory, by reason
        # Sessions learned elsewhere (RAVENNA) that we re-announce on SAP ([ravenna]
        # announce_on_sap): sent like local ones, but no local row of the directory
        # (the row stays the RAVENNA one) and no owner; keyed by that row's id.
        self.relays: dict[str, _Local] = {}

    # -- configuration and interfaces ------------------------------------------------------
    def admin_gid(self) -> int | None:
        if not self.config.admin_group:
            return None
        try:
            return grp.getgrnam(self.config.admin_group).gr_gid
        except KeyError:
            return None

    def set_interfaces(self, chosen: list[Interface]) -> None:
        wanted = self.config.announce.interfaces
        self._egress = [i for i in chosen if not wanted or i.name in wanted]

    def reconfigure(self, config: SapdConfig) -> None:
        self.config = config
        self.signing_key = config.signing.signing_key()
        self.scheduler.floor = self.engine.profile.announce_floor
        self.scheduler.bandwidth = config.announce.bandwidth

    def count(self) -> int:
        return len(self.locals)

    # -- building packets --------------------------------------------------------------------
    def _source_for(self, session: sdp.SessionDescription, v6: bool) -> str:
        if self.config.announce.source:
            return self.config.announce.source
        for iface in self._egress:
            addresses = iface.ipv6 if v6 else iface.ipv4
            usable = [a for a in addresses if not a.startswith("fe80")] or list(addresses)
            if usable:
                return usable[0]
        try:
            ipaddress.ip_address(session.origin.address)
            return session.origin.address
        except ValueError:
            return "::1" if v6 else "127.0.0.1"

    def _targets(self, session: sdp.SessionDescription, options: dict[str, Any]) -> list[_Target]:
        table = self.engine.scopes
        scopes: list[Scope] = []
        if options.get("scope"):
            found = [s for s in table.scopes if s.name == options["scope"]]
            if not found:
                raise PublishError(400, f"scope {options['scope']!r} is not configured; known: "
                                        + ", ".join(s.name for s in table.scopes),
                                   field="scope")
            scopes = found
        else:
            for entry in session.groups:
                scope = table.for_address(entry.partition(groupranges.SEPARATOR)[0])
                if scope not in scopes:
                    scopes.append(scope)
        if not scopes:
            raise PublishError(400, "the SDP has no multicast c= address to derive a SAP group "
                                    "from; give \"scope\" or \"sap_group\"",
                               ["c= must carry a multicast address"])
        wanted = options.get("interfaces")
        if wanted:
            known = [i.name for i in self._egress]
            unknown = [name for name in wanted if name not in known]
            if unknown:
                raise PublishError(400, f"interfaces: {', '.join(unknown)} not among the "
                                        f"announcing interfaces ({', '.join(known) or 'none'})",
                                   field="interfaces")
        ttl_wanted = int(options.get("ttl") or self.config.announce.ttl)
        targets = []
        for scope in scopes:
            group: ipaddress.IPv4Address | ipaddress.IPv6Address = scope.sap_group
            if options.get("sap_group"):
                try:
                    group = ipaddress.ip_address(str(options["sap_group"]))
                except ValueError:
                    raise PublishError(400, f"sap_group {options['sap_group']!r} is not an "
                                            "address", field="sap_group") from None
            targets.append(_Target(group, max(1, min(ttl_wanted, scope.ttl))))
        return targets

    def _build(self, record: SessionRecord, session: sdp.SessionDescription) -> _Local:
        options = record.options
        targets = self._targets(session, options)
        payload = record.sdp.encode()
        source = record.source
        origin = session.origin.line.encode() + b"\r\n"
        src_ip = ipaddress.ip_address(source)
        packet = wire.encode(wire.SapPacket(record.msg_hash, src_ip, payload),
                             compress=bool(options.get("compress", self.config.announce.compress)))
        deletion = wire.encode(wire.SapPacket(record.msg_hash, src_ip, origin, deletion=True))
        if self.signing_key is not None:  # fails here, before anything is stored
            try:
                self.signing_key.sign(packet, self.hub.clock.now())
            except signing.SigningError as exc:
                raise PublishError(400, f"cannot sign the announcement: {exc}") from None
        return _Local(record, source, packet, deletion, targets, options.get("interfaces"))

    def _unique_hash(self, source: str, payload: bytes, sid: str) -> int:
        """The content hash, stepped past any other local session's hash from this source
        (receivers key re-announcements on source and hash)."""
        value = wire.content_hash(payload)
        taken = {lo.record.msg_hash for k, lo in (*self.locals.items(), *self.relays.items())
                 if lo.source == source and k != sid}
        while value in taken or value == 0:
            value = (value + 1) & 0xFFFF
        return value

    # -- scheduling and sending --------------------------------------------------------------
    def _schedule(self, local: _Local, now: float) -> None:
        sid = local.record.id
        for target in local.targets:
            key = f"{sid}|{target.group}"
            self._jobs[key] = (sid, target)
            interval = local.record.options.get("interval")
            self.scheduler.add(key, str(target.group), len(local.packet), now,
                               float(interval) if interval else None)
        self.engine.mark_own(local.source, local.record.msg_hash)
        self._arm()

    def _arm(self) -> None:
        when = self.scheduler.next_wakeup()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.hub.loop.call_later(max(0.0, when - self.hub.clock.now()),
                                                 self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.hub.clock.now()
        for key, is_deletion in self.scheduler.due(now):
            job = self._jobs.get(key)
            if job is None:
                continue
            sid, target = job
            local = (self.locals.get(sid) or self.relays.get(sid)) if not is_deletion \
                else self._retired.get(key)
            if local is None:
                continue
            self._send(local, target, local.deletion if is_deletion else local.packet)
            if is_deletion:
                self.deletions_sent += 1
                if self.scheduler.due_of(key) is None:  # the burst is over
                    self._jobs.pop(key, None)
                    self._retired.pop(key, None)
                    self._release_hash(local)
            else:
                self.packets_sent += 1
                local.sent += 1
        self._arm()

    def _signed_here(self) -> dict[str, Any]:
        """What a local record shows: signed here (by us, so nobody verified it)."""
        if self.signing_key is None:
            return {}
        identity = self.signing_key.identity
        return {"verification": "signed_here", "signed_by": identity.subject,
                "signer_key": identity.key_id}

    def _signed(self, data: bytes) -> bytes | None:
        """Signed afresh at every send, so its signingTime stays inside receivers'
        window however long the session runs (RFC 2974 8.2: after compression)."""
        if self.signing_key is None:
            return data
        try:
            return self.signing_key.sign(data, self.hub.clock.now())
        except signing.SigningError as exc:
            self.signing_failures += 1
            log.warning("announcement not signed, not sent", error=str(exc))
            return None

    def _send(self, local: _Local, target: _Target, unsigned: bytes) -> None:
        data = self._signed(unsigned)
        if data is None:
            return
        wanted = local.interfaces
        interfaces = [i for i in self._egress if not wanted or i.name in wanted]
        bind = self.config.announce.source
        for iface in interfaces:
            if target.group.version == 6 and not iface.ipv6:
                continue
            try:
                self.sender.send(data, target.group, self.config.port, iface.index, target.ttl,
                                 bind if bind and ipaddress.ip_address(bind).version
                                 == target.group.version else None)
            except OSError as exc:
                log.warning("announcement not sent", interface=iface.name,
                            group=str(target.group), error=str(exc))

    # -- the operations ------------------------------------------------------------------------
    def _parse(self, text: str) -> sdp.SessionDescription:
        session, errors, _warnings = sdp.validate(normalize(text))
        if session is None:
            raise PublishError(400, "the SDP is not valid", [str(e) for e in errors])
        return session

    async def publish(self, text: str, options: dict[str, Any], owner: int | None,
                      acl: dict[str, Any] | None = None,
                      blob: dict[str, Any] | None = None) -> SessionRecord:
        session = self._parse(text)
        v6 = any(":" in g for g in session.groups)
        source = self._source_for(session, v6)
        sid = session_id(source, session.identity, "")
        if sid in self.locals:
            raise PublishError(409, f"session {session.identity!r} is already announced here as "
                                    f"{sid}; use PUT /v1/announcements/{sid} to change it")
        if self.engine.get(sid) is not None:
            raise PublishError(409, f"a session with identity {session.identity!r} from "
                                    f"{source} is already listed ({sid})")
        return await self._commit(session, source, sid, options, owner, acl or {}, blob or {},
                                  kind="new")

    async def _commit(self, session: sdp.SessionDescription, source: str, sid: str,
                      options: dict[str, Any], owner: int | None, acl: dict[str, Any],
                      blob: dict[str, Any], kind: str) -> SessionRecord:
        now = self.hub.clock.now()
        payload = session.raw.encode()
        msg_hash = self._unique_hash(source, payload, sid)
        previous = self.engine.get(sid)
        record = record_from_session(
            session, self.engine.scopes, sid=sid, source=source, msg_hash=msg_hash,
            now=now, first_seen=previous.first_seen if previous else now, local=True,
            owner_uid=owner, acl=acl, blob=blob,
            options={k: v for k, v in options.items() if v is not None},
            site=self.engine.site, **self._signed_here())
        local = self._build(record, session)  # raises before anything is stored
        # The record names the SAP group it is really sent to ("sap_group" overrides
        # the scope's), not the one its scope would have chosen.
        record = local.record = record.with_changes(sap_group=str(local.targets[0].group))
        self.engine.put_local(record, now, len(local.packet))
        await self._durable()  # before we answer or send
        self.locals[sid] = local
        self._schedule(local, now)
        log.info("announcing", id=sid, name=record.name, kind=kind,
                 groups=[str(t.group) for t in local.targets], owner=owner)
        return record

    async def _durable(self) -> None:
        """Commit through the hub. A record the store cannot hold has been undone there
        (memory holds what the store holds): the caller hears why, as a 422."""
        try:
            await self.hub.commit()
        except StoreFailure as exc:
            if exc.transient:
                raise
            raise PublishError(422, f"{exc} ({exc.reason}); nothing was stored or "
                                    "announced") from None

    def _require(self, sid: str, peer: Peer) -> _Local:
        local = self.locals.get(sid)
        if local is None:
            if self.engine.get(sid) is not None:
                raise PublishError(403, f"{sid} was heard from the network, not announced here; "
                                        "remote sessions cannot be changed or withdrawn")
            raise PublishError(404, f"no local announcement {sid}; see GET /v1/announcements")
        if not allowed(peer, local.record, self.admin_gid()):
            raise PublishError(403, f"uid {peer.uid} may not change {sid}: it belongs to uid "
                                    f"{local.record.owner_uid} and its ACL does not list you")
        return local

    async def update(self, sid: str, text: str, options: dict[str, Any], peer: Peer,
                     acl: dict[str, Any] | None = None,
                     blob: dict[str, Any] | None = None) -> SessionRecord:
        """Replace the SDP (and options). ``acl`` None keeps the ACL; only owner rights
        may change it, so a uid the ACL lists cannot add others or lock the owner out."""
        local = self._require(sid, peer)
        if acl is not None and acl != local.record.acl and not owns(
                peer, local.record, self.admin_gid()):
            raise PublishError(403, f"uid {peer.uid} may change {sid} but not its ACL: only "
                                    f"its owner (uid {local.record.owner_uid}), root and "
                                    "admin_group may", field="acl")
        session = self._parse(text)
        old = local.record
        if session.identity != old.identity:
            raise PublishError(400, f"the o= identity changed ({session.identity!r} instead of "
                                    f"{old.identity!r}); publish it as a new session instead")
        if session.version <= old.version:  # the version must rise: raise it for the caller
            session = self._parse(_with_version(session.raw, old.version + 1))
        merged = {**old.options, **{k: v for k, v in options.items() if v is not None}}
        merged.pop("stop_time", None)
        # No deletion for a change (RFC 2974 section 5: the new version supersedes the
        # old). A deletion before it makes other hosts list "deleted" then "new"; one
        # after it can make receivers that match deletions by identity drop the new
        # version. The old version keeps going until the new one is committed; the new
        # one takes over its scheduler jobs.
        record = await self._commit(session, local.source, sid, merged, old.owner_uid,
                                    old.acl if acl is None else acl,
                                    old.blob if blob is None else blob, kind="changed")
        self._superseded(local, self.locals[sid], self.hub.clock.now())
        return record

    def _superseded(self, old: _Local, new: _Local, now: float) -> None:
        """The old version of a changed announcement: a deletion only on the SAP groups
        the new version no longer reaches (queued after the new version's first packets,
        so a receiver hearing both groups already has the new one); elsewhere it simply
        stops, and receivers replace it by version."""
        kept = {t.group for t in new.targets}
        left = [t for t in old.targets if t.group not in kept]
        if left:
            self._retire(old, now, targets=left)
        else:
            self._release_hash(old)

    def _release_hash(self, local: _Local) -> None:
        """Let the own-packet filter forget a version we no longer send, unless a live
        announcement sends the same (source, hash)."""
        if not any((lo.source, lo.record.msg_hash) == (local.source, local.record.msg_hash)
                   for lo in (*self.locals.values(), *self.relays.values())):
            self.engine.mark_own(local.source, local.record.msg_hash, False)

    def _retire(self, local: _Local, now: float, repeats: int | None = None,
                targets: list[_Target] | None = None) -> None:
        """Stop announcing this version (on ``targets``, default all) and send its
        deletion(s) there."""
        sid = local.record.id
        for target in local.targets if targets is None else targets:
            key = f"{sid}|{target.group}"
            self._retired[key + "|old"] = local
            self._jobs[key + "|old"] = (sid, target)
            self.scheduler.remove(key)
            self.scheduler.add(key + "|old", str(target.group), len(local.deletion), now)
            self.scheduler.delete(key + "|old", now, repeats)
        if targets is None:
            self.locals.pop(sid, None)
        self._arm()

    def relay(self, record: SessionRecord) -> str | None:
        """Re-announce a directory row learned over RAVENNA on SAP, from our address with
        its SDP unchanged; the same content again changes nothing. Returns our source
        address (None: its SDP gives no SAP group)."""
        try:
            session = self._parse(record.sdp)
            v6 = any(":" in g for g in session.groups)
            source = self._source_for(session, v6)
            payload = session.raw.encode()
            relayed = record.with_changes(source=source, local=False, options={},
                                          msg_hash=self._unique_hash(source, payload,
                                                                     record.id))
            local = self._build(relayed, session)
        except PublishError as exc:
            log.info("RAVENNA session not re-announced on SAP", id=record.id, error=str(exc))
            self.unrelay(record.id)
            return None
        old = self.relays.get(record.id)
        if old is not None and old.packet == local.packet:
            return old.source
        now = self.hub.clock.now()
        if old is not None:
            self._retire(old, now, targets=old.targets)
        self.relays[record.id] = local
        self._schedule(local, now)
        log.info("re-announcing a RAVENNA session on SAP", id=record.id, name=record.name)
        return source

    def relay_source(self, record: SessionRecord) -> str:
        """The address a re-announcement of this row would be sent from ('' if none)."""
        try:
            session = self._parse(record.sdp)
        except PublishError:
            return ""
        return self._source_for(session, any(":" in g for g in session.groups))

    def unrelay(self, sid: str) -> None:
        """Stop re-announcing it (its deletion burst goes out)."""
        local = self.relays.pop(sid, None)
        if local is not None:
            self._retire(local, self.hub.clock.now(), targets=local.targets)

    async def withdraw(self, sid: str, peer: Peer) -> SessionRecord:
        local = self._require(sid, peer)
        now = self.hub.clock.now()
        self._retire(local, now)
        self.engine.remove_local(sid, now)
        await self._durable()
        log.info("withdrawn", id=sid, name=local.record.name, by=peer.uid)
        return local.record

    def describe(self, sid: str) -> dict[str, Any]:
        local = self.locals[sid]
        keys = [f"{sid}|{t.group}" for t in local.targets]
        dues = [d for k in keys if (d := self.scheduler.due_of(k)) is not None]
        return {"id": sid, "name": local.record.name, "owner_uid": local.record.owner_uid,
                "source": local.source, "msg_hash": local.record.msg_hash,
                "targets": [{"sap_group": str(t.group), "ttl": t.ttl,
                             "interval": self._interval_in_force(f"{sid}|{t.group}", t)}
                            for t in local.targets],
                "interfaces": local.interfaces or [i.name for i in self._egress],
                "next_send": min(dues, default=None),
                "packets_sent": local.sent, "options": local.record.options,
                "acl": local.record.acl}

    def _interval_in_force(self, key: str, target: _Target) -> float:
        """What the scheduler sends at: the fixed interval asked for, else the group's."""
        interval = self.scheduler.interval_in_force(key)
        if interval is None:
            interval = self.scheduler.interval(str(target.group))
        return round(interval, 3)

    # -- start, stop, files ------------------------------------------------------------------------
    async def restore(self) -> None:
        """Resume every local announcement stored by an earlier run."""
        offset = 0
        now = self.hub.clock.now()
        rewritten = 0
        while True:
            batch = self.hub.reader.search(SearchQuery(local=True, limit=500, offset=offset))
            for stored in batch:
                if stored.site and stored.site != self.engine.site:
                    continue  # another site's (a shared directory): announced there
                record = self._within_bounds(stored)
                session, errors, _ = sdp.validate(record.sdp)
                if session is None:
                    log.warning("stored local session no longer valid", id=record.id,
                                errors=[str(e) for e in errors])
                    continue
                try:
                    local = self._build(record, session)
                except PublishError as exc:
                    log.warning("cannot resume", id=record.id, error=str(exc))
                    continue
                real_group = str(local.targets[0].group)
                if record.sap_group != real_group:  # stored by a sapd that named the scope's
                    record = local.record = record.with_changes(sap_group=real_group)
                self.locals[record.id] = local
                self._schedule(local, now)
                if record is not stored:  # bounded or corrected now: store what is in force
                    self.engine.put_local(record, now, len(local.packet))
                    rewritten += 1
                if record.options.get("file"):
                    self._files[str(record.options["file"])] = (0.0, record.id)
            if len(batch) < 500:
                break
            offset += 500
        if rewritten:
            try:
                await self.hub.commit()
            except Exception as exc:  # announced with the bounded values all the same
                log.warning("bounded stored options not written back", error=str(exc))
        if self.locals:
            log.info("resumed local announcements", count=len(self.locals))
        if self.config.announce.directory:
            self._tasks.append(asyncio.create_task(self._watch_directory()))

    def _within_bounds(self, record: SessionRecord) -> SessionRecord:
        """A stored announcement with today's bounds: an older sapd stored any number
        (an interval of 1e-9 hung it at every start). Each fix is logged and the
        bounded record is written back."""
        options, acl, fixed = clean_stored(record.options, record.acl)
        for option in fixed:
            log.warning("stored option out of bounds", id=record.id, option=option,
                        stored=repr(record.acl if option == "acl" else
                                    record.options.get(option)),
                        now=repr(acl if option == "acl" else options.get(option)))
        return record.with_changes(options=options, acl=acl) if fixed else record

    async def _watch_directory(self) -> None:
        directory = Path(str(self.config.announce.directory))
        root = Peer(os.getpid(), 0, 0, (0,))
        while True:
            try:
                await self._scan(directory, root)
            except Exception as exc:  # a bad file must not stop the watcher
                log.warning("announce directory scan failed", error=str(exc))
            await asyncio.sleep(DIRECTORY_SCAN)

    async def _scan(self, directory: Path, root: Peer) -> None:
        present = {str(p): p for p in directory.glob("*.sdp")} if directory.is_dir() else {}
        for path, sid_info in list(self._files.items()):
            if path not in present:
                del self._files[path]
                with contextlib.suppress(PublishError):
                    await self.withdraw(sid_info[1], root)
                log.info("announce file removed; withdrawn", file=path)
        for path, file in present.items():
            try:
                stat = file.stat()
            except OSError:  # gone since the glob, or a dangling symlink
                continue
            known = self._files.get(path)
            if known is not None and known[0] == stat.st_mtime:
                continue
            try:
                # Off the loop, and only a bounded regular file: a FIFO named *.sdp would
                # block open() until a writer came, /dev/zero would never end.
                data = await asyncio.to_thread(read_regular_file, file, MAX_SDP_FILE)
            except InputFileError as exc:
                self._files[path] = (stat.st_mtime, known[1] if known else "")
                self.files_refused[exc.kind] += 1
                log.warning("announce file refused", file=path, reason=exc.reason)
                continue
            text = data.decode(errors="replace")
            try:
                if known is not None and known[1] in self.locals:
                    local = self.locals[known[1]]
                    if normalize(text) == local.record.sdp or _same_but_version(
                            text, local.record.sdp):
                        self._files[path] = (stat.st_mtime, known[1])
                        continue
                    record = await self.update(known[1], text, {}, root)
                else:
                    record = await self.publish(text, {"file": path}, stat.st_uid)
                self._files[path] = (stat.st_mtime, record.id)
            except PublishError as exc:
                self._files[path] = (stat.st_mtime, known[1] if known else "")
                log.warning("announce file rejected", file=path, error=str(exc),
                            errors=exc.errors)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.config.announce.withdraw_on_stop and self.locals:
            # Receivers drop them now; they stay stored and resume at the next start.
            for local in self.locals.values():
                for target in local.targets:
                    self._send(local, target, local.deletion)
            log.info("sent deletions on stop", count=len(self.locals))
        if self._timer is not None:
            self._timer.cancel()
        self.sender.close()

    def metrics_lines(self) -> list[str]:
        return ["# HELP sapd_local_announcements Sessions announced by this sapd.",
                "# TYPE sapd_local_announcements gauge",
                f"sapd_local_announcements {len(self.locals)}",
                "# HELP sapd_relayed_announcements RAVENNA sessions re-announced on SAP.",
                "# TYPE sapd_relayed_announcements gauge",
                f"sapd_relayed_announcements {len(self.relays)}",
                "# HELP sapd_announcements_sent_total SAP announcement packets sent.",
                "# TYPE sapd_announcements_sent_total counter",
                f"sapd_announcements_sent_total {self.packets_sent}",
                "# HELP sapd_deletions_sent_total SAP deletion packets sent.",
                "# TYPE sapd_deletions_sent_total counter",
                f"sapd_deletions_sent_total {self.deletions_sent}",
                "# HELP sapd_signing_failures_total Packets not sent: signing failed.",
                "# TYPE sapd_signing_failures_total counter",
                f"sapd_signing_failures_total {self.signing_failures}",
                "# HELP sapd_announce_files_refused_total Files in the announce directory "
                "not read, by reason.",
                "# TYPE sapd_announce_files_refused_total counter",
                *(f'sapd_announce_files_refused_total{{reason="{reason}"}} {count}'
                  for reason, count in sorted(self.files_refused.items()))]


def _same_but_version(text: str, stored: str) -> bool:
    """A file whose only difference from what we announce is the o= version we raised."""
    session = sdp.parse_origin_line(next((ln for ln in normalize(text).split("\r\n")
                                          if ln.startswith("o=")), ""))
    return session is not None and _with_version(normalize(text), 0) == _with_version(stored, 0)

