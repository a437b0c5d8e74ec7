"""Publication of the directory into an LDAP server (``[ldap]``).

A subscriber of the hub's committed events, in a thread of its own: the hub's listener
(:meth:`LdapPublisher.on_event`, on the event loop) only puts a session id into a
bounded queue and never waits. When the queue is full the publisher drops what it holds
and resynchronises the whole directory instead, so a slow or absent server never holds
the receive path. The worker reads each session from its own reader of the store (the
store is the truth: events are heard only once durable), builds its entry
(ldap_entries.py) and adds, changes or deletes it, pipelined over one connection.

Resynchronisation (at every connect, after an outage or an LDAP restart, after an
overflow): our site's entries under the base are compared with the store by digest;
missing ones are added, changed ones replaced, leftovers deleted. Counted by reason and
logged. With RFC 2589 dynamic entries (OpenLDAP slapo-dds) every entry carries a TTL that
the worker refreshes every third of it, so a dead sapd's entries age out on their own.

python-ldap rather than ldap3: python-ldap is maintained (ldap3's last release is from
2021), it is OpenLDAP's own libldap underneath (TLS, StartTLS, ldapi://, the same
behaviour as ldapsearch), and it has the RFC 2589 refresh request built in. It is
synchronous; that is why the publisher is a thread, not a coroutine.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import ldap
import ldap.dn
import ldap.filter
from ldap.controls import SimplePagedResultsControl
from ldap.extop.dds import RefreshRequest, RefreshResponse

from sapd.bridges.ldap_entries import (
    INFO_CLASS,
    PUBLISHED,
    REVISION,
    SESSION_ID,
    SITE,
    Entry,
    build_entry,
)
from sapd.config import LdapConfig
from sapd.lifecycle import Event
from sapd.plumbing import logs
from sapd.plumbing.errors import StoreUnavailable
from sapd.records import DirectoryBackend, own_record

log = logs.get("sapd.ldap")

WINDOW = 64  # operations in flight on the connection (pipelining: ~10x a round trip each)
PAGE = 1000  # entries per page when listing ours (a server's size limit is often 500+)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between connection attempts, doubling
NETWORK_TIMEOUT = 5.0
OPERATION_TIMEOUT = 30.0
STORE_RETRY = 1.0  # seconds between reads of a directory database that did not answer
KEEPALIVE = 5.0  # seconds idle before the worker asks the server whether it is there
REFRESH_OID = RefreshRequest.requestName
_STOP = ""  # a session id is never empty

State = str  # "off", "connecting", "up", "down"


@dataclass(slots=True)
class _Op:
    kind: str  # add, modify, delete, refresh
    session_id: str
    dn: str
    entry: Entry | None = None


class LdapPublisher:
    def __init__(self, config: LdapConfig, site: str,
                 open_reader: Callable[[], DirectoryBackend]) -> None:
        assert config.url is not None and config.base is not None
        self.config = config
        self.url = config.url
        self.base = config.base
        self.profile = config.profile
        self.site = site
        self._open_reader = open_reader
        self._queue: queue.Queue[str] = queue.Queue(config.queue)
        self._resync_wanted = threading.Event()
        self._resync_reason = "overflow"  # why the wanted resynchronisation is wanted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.state: State = "connecting"
        self.dynamic = False  # the server has RFC 2589 dynamic entries
        # session id -> (dn, revision), as the server has it
        self.published: dict[str, tuple[str, str]] = {}
        self.operations: Counter[str] = Counter()  # add, modify, delete, refresh
        self.errors: Counter[str] = Counter()  # by reason
        self.resyncs: Counter[str] = Counter()  # by reason
        self.last_resync: dict[str, float] = {}
        self.last_error: str | None = None
        self.overflows = 0
        self.store_waits = 0  # turns that waited for an unreachable directory database
        self._connected_once = False
        self._next_refresh = 0.0
        self.refresh_ttl = config.ttl  # what the server grants, if less than asked
        self._last_contact = 0.0  # monotonic time of the last answer from the server

    # -- the hub's side (event loop thread): never blocks -------------------------------
    def on_event(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event.session_id)
        except queue.Full:
            if not self._resync_wanted.is_set():
                self.overflows += 1
                log.warning("LDAP publication fell behind; resynchronising instead",
                            queue=self.config.queue)
            self._resync_reason = "overflow"
            self._resync_wanted.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sapd-ldap", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, Any]:
        return {"state": self.state, "url": self.url, "base": self.base,
                "profile": self.profile, "dynamic": self.dynamic,
                "entries": len(self.published), "queue": self.backlog,
                "operations": dict(sorted(self.operations.items())),
                "errors": dict(sorted(self.errors.items())),
                "resyncs": dict(sorted(self.resyncs.items())),
                "last_resync": self.last_resync, "overflows": self.overflows,
                "store_waits": self.store_waits, "last_error": self.last_error}

    def metrics_lines(self) -> list[str]:
        lines = ["# HELP sapd_ldap_up 1 when connected to the LDAP server.",
                 "# TYPE sapd_ldap_up gauge", f"sapd_ldap_up {int(self.state == 'up')}",
                 "# HELP sapd_ldap_entries Entries sapd holds in the LDAP server.",
                 "# TYPE sapd_ldap_entries gauge", f"sapd_ldap_entries {len(self.published)}",
                 "# HELP sapd_ldap_queue Changes waiting for the LDAP server.",
                 "# TYPE sapd_ldap_queue gauge", f"sapd_ldap_queue {self.backlog}",
                 "# HELP sapd_ldap_operations_total LDAP writes done, by kind.",
                 "# TYPE sapd_ldap_operations_total counter"]
        for kind in ("add", "modify", "delete", "refresh"):
            lines.append(f'sapd_ldap_operations_total{{op="{kind}"}} {self.operations[kind]}')
        lines += ["# HELP sapd_ldap_errors_total LDAP failures, by reason.",
                  "# TYPE sapd_ldap_errors_total counter"]
        lines += [f'sapd_ldap_errors_total{{reason="{k}"}} {v}'
                  for k, v in sorted(self.errors.items())]
        lines += ["# HELP sapd_ldap_resyncs_total Full resynchronisations, by reason.",
                  "# TYPE sapd_ldap_resyncs_total counter"]
        lines += [f'sapd_ldap_resyncs_total{{reason="{k}"}} {v}'
                  for k, v in sorted(self.resyncs.items())]
        return lines

    # -- the worker thread -------------------------------------------------------------
    def _run(self) -> None:
        reader = self._open_reader()
        retry = RETRY_FIRST
        try:
            while not self._stop.is_set():
                if self._conn is None:
                    try:
                        self._connect()
                        reason = "reconnected" if self._connected_once else "started"
                        self._connected_once = True
                        self._resync(reader, reason)
                        retry = RETRY_FIRST
                    except ldap.LDAPError as exc:
                        self._down(exc)
                        self._stop.wait(retry)
                        retry = min(retry * 2, RETRY_MAX)
                    except StoreUnavailable as exc:
                        self._directory_away(exc)
                    except OSError as exc:  # the password file went away or unreadable
                        self._failed("password_file", f"{self.config.password_file}: "
                                     f"{exc.strerror or exc}")
                        self._stop.wait(retry)
                        retry = min(retry * 2, RETRY_MAX)
                    except Exception as exc:  # our bug: say so, retry, never die
                        self._failed("internal_error", repr(exc), exc_info=True)
                        self._stop.wait(retry)
                        retry = min(retry * 2, RETRY_MAX)
                    continue
                try:
                    self._work(reader)
                except ldap.LDAPError as exc:
                    self._down(exc)
                except StoreUnavailable as exc:
                    self._directory_away(exc)
                except Exception as exc:  # our bug: say so, start afresh, never die
                    self._failed("internal_error", repr(exc), exc_info=True)
                    self._stop.wait(retry)
        finally:
            self._disconnect()
            reader.close()

    def _connect(self) -> None:
        self.state = "connecting"
        conn = ldap.initialize(self.url)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, NETWORK_TIMEOUT)
        conn.set_option(ldap.OPT_TIMEOUT, OPERATION_TIMEOUT)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        tls = self.config.tls
        if tls.ca_file is not None:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, tls.ca_file)
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        self._conn = conn
        if tls.starttls:
            conn.start_tls_s()
        if self.config.bind_dn is not None and self.config.password_file is not None:
            with open(self.config.password_file, encoding="utf-8") as fh:
                password = fh.read().rstrip("\r\n")  # read at every connect: rotation
            conn.simple_bind_s(self.config.bind_dn, password)
        else:
            conn.simple_bind_s()
        self.dynamic = self._probe_dynamic()
        self.state = "up"
        self.last_error = None
        log.info("LDAP connected", url=self.url, base=self.base, dynamic=self.dynamic)

    def _probe_dynamic(self) -> bool:
        """Does the server keep dynamic entries (RFC 2589)? OpenLDAP's dds does not list
        its refresh operation in the root DSE, so ask: a refresh of an entry that does not
        exist is answered "no such object" by a server that has it, and "unavailable
        critical extension" (or "protocol error") by one that has not."""
        root = self._conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)",
                                   ["supportedExtension"])
        if root and REFRESH_OID.encode() in root[0][1].get("supportedExtension", []):
            return True
        probe = f"{SESSION_ID}=sapd-dds-probe,{self.base}"  # never an entry of ours
        try:
            self._conn.extop_s(RefreshRequest(entryName=probe, requestTtl=int(self.config.ttl)),
                               extop_resp_class=RefreshResponse)
        except (ldap.NO_SUCH_OBJECT, ldap.OBJECT_CLASS_VIOLATION, ldap.INSUFFICIENT_ACCESS):
            return True  # the operation exists; refresh errors, if any, are counted later
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR):
            raise
        except ldap.LDAPError:
            return False
        return True

    def _down(self, exc: ldap.LDAPError) -> None:
        reason = _reason(exc)
        self.errors[reason] += 1
        was_up = self.state == "up"
        self.state = "down"
        self.last_error = f"{reason}: {_text(exc)}"
        (log.warning if was_up or self.errors[reason] == 1 else log.debug)(
            "LDAP server unavailable; resynchronising once it is back",
            url=self.url, reason=reason, error=_text(exc))
        self._disconnect()

    def _directory_away(self, exc: StoreUnavailable) -> None:
        """A shared directory's database did not answer a read: the changes taken off the
        queue are in the store, so a resynchronisation once it answers publishes them. The
        LDAP connection stays; a wait, not our bug."""
        if not self._resync_wanted.is_set():
            log.warning("LDAP publication waits for the directory database", error=str(exc))
        self.store_waits += 1
        self._resync_reason = "directory_back"
        self._resync_wanted.set()
        self._stop.wait(STORE_RETRY)

    def _failed(self, reason: str, text: str, exc_info: bool = False) -> None:
        """A failure that is not the server's answer: counted, shown, and a fresh start
        (connect, resynchronise) after the retry wait."""
        self.errors[reason] += 1
        self.state = "down"
        self.last_error = f"{reason}: {text}"
        log.error("LDAP publication failed; reconnecting to resynchronise",
                  reason=reason, error=text, exc_info=exc_info)
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(ldap.LDAPError):
                self._conn.unbind_s()
            self._conn = None

    def _work(self, reader: DirectoryBackend) -> None:
        wait = max(0.0, self._next_refresh - time.monotonic()) if self.dynamic else 1.0
        ids: dict[str, None] = {}
        try:
            first = self._queue.get(timeout=min(wait, 1.0))
            ids[first] = None
            while len(ids) < self.config.queue:
                ids[self._queue.get_nowait()] = None
        except queue.Empty:
            pass
        ids.pop(_STOP, None)
        if self._stop.is_set():
            return
        if self._resync_wanted.is_set():
            self._resync(reader, self._resync_reason)
        elif ids:
            self._publish(reader, ids)
            self._last_contact = time.monotonic()
        if self.dynamic and time.monotonic() >= self._next_refresh:
            self._refresh_all()
        elif not ids and time.monotonic() - self._last_contact >= KEEPALIVE:
            # idle: a server that went away (or restarted) shows now, not at the next
            # change, so health tells the truth and the resync starts
            self._conn.whoami_s()
            self._last_contact = time.monotonic()

    def _publish(self, reader: DirectoryBackend, ids: Iterable[str]) -> None:
        ops: list[_Op] = []
        for sid in ids:
            record = own_record(reader, sid, self.site)
            known = self.published.get(sid)
            if record is None:
                if known is not None:
                    ops.append(_Op("delete", sid, known[0]))
                continue
            entry = build_entry(record, self.base, self.profile, self.site, self.dynamic)
            if known is not None and known[1] == entry.revision:
                continue
            ops.append(_Op("add" if known is None else "modify", sid, entry.dn, entry))
        self._apply(ops)

    def _resync(self, reader: DirectoryBackend, reason: str) -> None:
        """Make the server's entries of our site what the store holds."""
        self._resync_wanted.clear()
        while True:  # what is queued is in the store already, or comes after this
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        started = time.monotonic()
        existing = self._list_ours()
        ops: list[_Op] = []
        wanted: set[str] = set()
        for record in reader.iter_all(own=True):
            wanted.add(record.id)
            entry = build_entry(record, self.base, self.profile, self.site, self.dynamic)
            have = existing.get(record.id)
            if have is None:
                ops.append(_Op("add", record.id, entry.dn, entry))
            elif have[1] != entry.revision or not _same_dn(have[0], entry.dn):
                if not _same_dn(have[0], entry.dn):  # another profile's DN: move it
                    ops.append(_Op("delete", record.id, have[0]))
                    ops.append(_Op("add", record.id, entry.dn, entry))
                else:
                    ops.append(_Op("modify", record.id, entry.dn, entry))
            elif self.dynamic:
                ops.append(_Op("refresh", record.id, entry.dn))
        self.published = {sid: have for sid, have in existing.items() if sid in wanted}
        leftovers = [_Op("delete", sid, dn) for sid, (dn, _) in existing.items()
                     if sid not in wanted]
        before = self.operations.copy()
        self._apply([*leftovers, *ops])
        done = self.operations - before
        self.resyncs[reason] += 1
        self.last_resync = {"added": done["add"], "changed": done["modify"],
                            "removed": len(leftovers), "kept": len(wanted) - done["add"]
                            - done["modify"], "seconds": round(time.monotonic() - started, 3)}
        self._next_refresh = time.monotonic() + self.refresh_ttl / 3
        log.info("LDAP resynchronised", reason=reason, **self.last_resync)

    def _list_ours(self) -> dict[str, tuple[str, str]]:
        """Our site's entries under the base: session id -> (dn, revision)."""
        filterstr = (f"(&(objectClass={INFO_CLASS})"
                     f"({SITE}={ldap.filter.escape_filter_chars(self.site)}))")
        page = SimplePagedResultsControl(True, size=PAGE, cookie="")
        found: dict[str, tuple[str, str]] = {}
        while True:
            msgid = self._conn.search_ext(self.base, ldap.SCOPE_ONELEVEL, filterstr,
                                          [SESSION_ID, REVISION], serverctrls=[page])
            _, results, _, controls = self._conn.result3(msgid)
            for dn, attrs in results:
                if dn is None or not isinstance(attrs, dict):
                    continue  # a referral
                sid = attrs.get(SESSION_ID, [b""])[0].decode()
                revision = attrs.get(REVISION, [b""])[0].decode()
                if sid in found:  # the same session twice (a profile change): keep one
                    self._apply([_Op("delete", sid, dn)])
                    continue
                found[sid] = (dn, revision)
            cookie = next((c.cookie for c in controls
                           if c.controlType == SimplePagedResultsControl.controlType), b"")
            if not cookie:
                return found
            page.cookie = cookie

    def _refresh_all(self) -> None:
        self._next_refresh = time.monotonic() + self.refresh_ttl / 3
        self._apply([_Op("refresh", sid, dn) for sid, (dn, _) in list(self.published.items())])

    # -- operations, pipelined ------------------------------------------------------------
    def _apply(self, ops: list[_Op]) -> None:
        """Run the operations WINDOW at a time; settle failures one by one after. A new
        dynamic entry has the server's default TTL: its refresh to ours is started as
        soon as its add is answered (not before: the server may run a connection's
        operations in any order), and keeps the window full."""
        failed: list[tuple[_Op, ldap.LDAPError]] = []
        added: list[_Op] = []
        pending: deque[tuple[_Op, int]] = deque()
        todo = iter(ops)
        while True:
            if added and self.dynamic:
                done = added.pop()
                op = _Op("refresh", done.session_id, done.dn)
            else:
                added.clear()
                next_op = next(todo, None)
                if next_op is None:
                    break
                op = next_op
            pending.append((op, self._start(op)))
            if len(pending) >= WINDOW:
                self._finish(*pending.popleft(), failed, added)
        while pending:
            self._finish(*pending.popleft(), failed, added)
            if added and self.dynamic:
                done = added.pop()
                refresh = _Op("refresh", done.session_id, done.dn)
                pending.append((refresh, self._start(refresh)))
        added.clear()
        for op, exc in failed:
            self._settle(op, exc, added)
        if self.dynamic and added:  # added while settling (a modify of a vanished entry)
            self._apply([_Op("refresh", op.session_id, op.dn) for op in added])

    def _start(self, op: _Op) -> int:
        conn = self._conn
        if op.kind == "add":
            assert op.entry is not None
            return int(conn.add_ext(op.dn, list(op.entry.attributes.items())))
        if op.kind == "modify":
            assert op.entry is not None
            attrs = op.entry.attributes
            changes = [(ldap.MOD_REPLACE, name, attrs.get(name))
                       for name in PUBLISHED[self.profile]]
            return int(conn.modify_ext(op.dn, changes))
        if op.kind == "delete":
            return int(conn.delete_ext(op.dn))
        request = RefreshRequest(entryName=op.dn, requestTtl=int(self.config.ttl))
        return int(conn.extop(request))

    def _finish(self, op: _Op, msgid: int, failed: list[tuple[_Op, ldap.LDAPError]],
                added: list[_Op]) -> None:
        try:
            if op.kind == "refresh":
                name, value = self._conn.extop_result(msgid)
                if value:
                    self._granted(RefreshResponse(name, value).responseTtl)
            else:
                self._conn.result3(msgid)
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR):
            raise
        except ldap.LDAPError as exc:
            failed.append((op, exc))
            return
        self._done(op, added)

    def _granted(self, ttl: int) -> None:
        """The server may grant less than we asked (slapo-dds' dds-max-ttl): refresh
        every third of what it grants, or the entries would lapse between rounds."""
        if 0 < ttl < self.refresh_ttl:
            self.refresh_ttl = float(ttl)
            log.warning("the LDAP server grants a shorter TTL than [ldap] ttl; "
                        "refreshing to match", granted=ttl, ttl=self.config.ttl)

    def _done(self, op: _Op, added: list[_Op]) -> None:
        self.operations[op.kind] += 1
        if op.kind == "delete":
            self.published.pop(op.session_id, None)
        elif op.entry is not None:
            self.published[op.session_id] = (op.dn, op.entry.revision)
            if op.kind == "add":
                added.append(op)

    def _settle(self, op: _Op, exc: ldap.LDAPError, added: list[_Op]) -> None:
        """An operation the server refused: the ones a lost race explains are turned
        into what the server's state needs; the others are counted and logged."""
        conn = self._conn
        try:
            if isinstance(exc, ldap.NO_SUCH_OBJECT):
                if op.kind == "delete":
                    self.published.pop(op.session_id, None)
                    return
                if op.kind == "refresh":  # aged out (or removed by hand): put it back
                    self.errors["vanished"] += 1
                    self.published.pop(op.session_id, None)
                    self._queue_resync_of(op.session_id)
                    return
                if op.kind == "modify" and op.entry is not None:
                    conn.add_ext_s(op.dn, list(op.entry.attributes.items()))
                    self._done(_Op("add", op.session_id, op.dn, op.entry), added)
                    return
            if isinstance(exc, ldap.ALREADY_EXISTS) and op.kind == "add":
                self._start_sync_modify(op)
                self._done(_Op("modify", op.session_id, op.dn, op.entry), added)
                return
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR):
            raise
        except ldap.LDAPError as again:
            exc = again
        reason = _reason(exc)
        self.errors[reason] += 1
        self.last_error = f"{op.kind} {op.dn}: {reason}: {_text(exc)}"
        self.published.pop(op.session_id, None)
        count = self.errors[reason]
        if count <= 10 or count & (count - 1) == 0:  # a bad base refuses every entry
            log.warning("LDAP refused an operation", op=op.kind, dn=op.dn, reason=reason,
                        error=_text(exc), times=count)

    def _start_sync_modify(self, op: _Op) -> None:
        assert op.entry is not None
        attrs = op.entry.attributes
        self._conn.modify_ext_s(op.dn, [(ldap.MOD_REPLACE, name, attrs.get(name))
                                        for name in PUBLISHED[self.profile]])

    def _queue_resync_of(self, session_id: str) -> None:
        try:
            self._queue.put_nowait(session_id)
        except queue.Full:
            self._resync_wanted.set()


def _same_dn(a: str, b: str) -> bool:
    """DNs compared as the server does (for our attributes: case-insensitively, RDN
    parts in any order), not as strings."""
    def key(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
        return tuple(tuple(sorted((t.lower(), v.lower()) for t, v, _ in rdn))
                     for rdn in ldap.dn.str2dn(dn))
    try:
        return key(a) == key(b)
    except ldap.DECODING_ERROR:
        return a.lower() == b.lower()


def _reason(exc: ldap.LDAPError) -> str:
    """A counter name for an LDAP error: 'server_down', 'no_such_object', ..."""
    return type(exc).__name__.lower()


def _text(exc: ldap.LDAPError) -> str:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    parts = [str(info.get("desc", exc))]
    if info.get("info"):
        parts.append(str(info["info"]))
    return ": ".join(parts)
