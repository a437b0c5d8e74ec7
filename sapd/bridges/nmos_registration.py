"""IS-04 v1.3 registration as a sans-IO state machine (AMWA "Behaviour - Registration").

Fed what sapd wants registered (:meth:`Registration.put`, :meth:`Registration.remove`),
the registry's answers (:meth:`response`, :meth:`failed`) and timestamps; it says which
HTTP requests to make now (:meth:`poll`) and when to ask again (:meth:`next_timer`).
The edge (nmos.py) sends them and reports back; nothing here touches a socket or reads
a clock.

Rules it keeps:
- order: node, then devices, sources, flows, senders; a resource goes only once its
  parents are registered; deletion in reverse, a parent only once no child of it is;
- heartbeat ``POST /health/nodes/{id}`` every 5 s once the node is registered; a 404
  there (the registry lost us: restarted, or garbage-collected) re-registers everything
  (at once the first time; after a back-off when it comes again with no 200 between);
- the first node POST after start or a registry change answered 200 means a stale
  record: DELETE the node, then register everything again (expecting 201);
- 5xx, timeouts, connection errors: drop what is in flight, back off exponentially
  (1 s doubling to 30 s), then heartbeat first (or POST the node if it never landed);
- 400 (the registry refuses the body): counted, not resent until the content changes;
  409 (a version clash): DELETE, then register again (a second 409 for the same body:
  refused like a 400); 408/429: back off, send again;
- the node refused (any 3xx or 4xx), or a child answered 404 (a parent missing): back
  off before the next try, so a misconfigured registry is not asked in a tight loop;
- every POST carries a fresh TAI version, strictly increasing across the node.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from sapd.bridges.nmos_resources import KINDS, PLURAL, Key, Resource

HEARTBEAT = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
WINDOW = 16  # requests in flight at once (heartbeats aside)
TAI_OFFSET = 37  # TAI - UTC, seconds, since 2017 (no leap second announced since)
_RANK = {kind: n for n, kind in enumerate(KINDS)}
SLOW_DOWN = (408, 429)  # a child's POST answered so is sent again after the back-off
REFUSALS = {400: "rejected", 409: "conflict"}  # error counter names


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str  # POST or DELETE
    path: str  # below the registry's .../x-nmos/registration/v1.3
    body: dict[str, Any] | None
    purpose: str  # register, delete, heartbeat, stale_node
    key: Key | None = None
    digest: str = ""


@dataclass
class VersionClock:
    """TAI ``<seconds>:<nanoseconds>`` versions, each greater than the last."""

    last: int = 0  # nanoseconds

    def next(self, now: float) -> str:
        stamp = max(int((now + TAI_OFFSET) * 1e9), self.last + 1)
        self.last = stamp
        return f"{stamp // 1_000_000_000}:{stamp % 1_000_000_000}"


def digest(data: dict[str, Any]) -> str:
    """What a resource holds, in 32 hex digits (the JSON itself is ~700 bytes a
    resource, kept twice, for every session)."""
    return hashlib.blake2b(orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).hexdigest()


@dataclass
class Registration:
    node: Key
    heartbeat_interval: float = HEARTBEAT
    window: int = WINDOW
    desired: dict[Key, Resource] = field(default_factory=dict)
    versions: dict[Key, str] = field(default_factory=dict)  # as last sent
    registered: dict[Key, str] = field(default_factory=dict)  # digest the registry holds
    refused: dict[Key, str] = field(default_factory=dict)  # digest it answered 400 to
    counts: Counter[str] = field(default_factory=Counter)  # posts, deletes, heartbeats, ...
    errors: Counter[str] = field(default_factory=Counter)  # by reason
    state: str = "registering"  # registering, registered, backoff, probing
    last_error: str | None = None

    def __post_init__(self) -> None:
        self._digests: dict[Key, str] = {}
        self._todo: dict[str, dict[Key, None]] = {kind: {} for kind in KINDS}  # to POST
        self._gone: dict[str, dict[Key, None]] = {kind: {} for kind in KINDS}  # to DELETE
        self._children: dict[Key, set[Key]] = {}  # registered children, per parent
        # to POST once a parent has landed (so a poll never rescans blocked children)
        self._waiting: dict[Key, dict[Key, None]] = {}
        self._waiting_on: dict[Key, Key] = {}
        self._parents: dict[Key, tuple[Key, ...]] = {}  # as registered
        self._conflicted: set[Key] = set()
        self._reconflicts: dict[Key, str] = {}  # the body last answered 409, per key
        self._busy: set[Key] = set()
        self._in_flight: dict[int, Request] = {}
        self._ids = 0
        self._clock = VersionClock()
        self._fresh = True  # the next node POST is the first to this registry
        self._stale_delete = False
        self._heartbeat_at: float | None = None
        self._heartbeat_busy = False
        self._retry_at: float | None = None
        self._backoff = BACKOFF_FIRST
        self._lost_in_row = 0  # heartbeats answered 404 with no 200 between them

    # -- what sapd wants ---------------------------------------------------------------
    def put(self, resource: Resource) -> None:
        key = resource.key
        text = digest(resource.data)
        if self._digests.get(key) == text and key in self.desired:
            return
        self.desired[key] = resource
        self._digests[key] = text
        if key not in self._conflicted:
            self._gone[key[0]].pop(key, None)
        if self.registered.get(key) != text:
            self._todo[key[0]][key] = None

    def remove(self, key: Key) -> None:
        if self.desired.pop(key, None) is None:
            return
        self._digests.pop(key, None)
        self.refused.pop(key, None)
        self._reconflicts.pop(key, None)
        self.versions.pop(key, None)  # the clock is node-wide: a return still goes up
        self._todo[key[0]].pop(key, None)
        self._unwait(key)
        if key in self.registered or key in self._busy:
            self._gone[key[0]][key] = None

    def version_of(self, key: Key) -> str | None:
        return self.versions.get(key)

    @property
    def pending(self) -> int:
        return sum(len(t) for t in (*self._todo.values(), *self._gone.values())) + \
            len(self._waiting_on)

    def registered_by_kind(self) -> dict[str, int]:
        found = Counter(kind for kind, _ in self.registered)
        return {kind: found[kind] for kind in KINDS}

    # -- the registry changed or was lost ---------------------------------------------
    def reset(self, fresh: bool, keep_backoff: bool = False) -> None:
        """Forget what the registry holds and register everything again. ``fresh``: a
        new registry (or a restart of ours), where a 200 on the node means stale.
        ``keep_backoff``: moving on to the next registry after a failure, so that the
        wait keeps doubling while they all fail."""
        self.registered.clear()
        self._children.clear()
        self._parents.clear()
        self._conflicted.clear()
        self._reconflicts.clear()
        self.refused.clear()
        self._waiting.clear()
        self._waiting_on.clear()
        self._drop_in_flight()
        for todo in (*self._todo.values(), *self._gone.values()):
            todo.clear()
        for key in self.desired:
            self._todo[key[0]][key] = None
        self._fresh = fresh
        self._stale_delete = False
        self._heartbeat_at = None
        self._retry_at = None
        if not keep_backoff:
            self._backoff = BACKOFF_FIRST
        self.state = "registering"

    def _drop_in_flight(self) -> None:
        self._in_flight.clear()
        self._busy.clear()
        self._heartbeat_busy = False

    # -- what to send ------------------------------------------------------------------
    def poll(self, now: float) -> list[Request]:
        out: list[Request] = []
        if self.state == "backoff":
            if self._retry_at is not None and now < self._retry_at:
                return out
            self._retry_at = None
            if self.node in self.registered:
                self.state = "probing"  # heartbeat first: are we still known?
                self._heartbeat_at = now
            else:
                self.state = "registering"
        if self._heartbeat_at is not None and now >= self._heartbeat_at \
                and not self._heartbeat_busy and self.node in self.registered:
            out.append(self._request("POST", f"/health/nodes/{self.node[1]}", None,
                                     "heartbeat"))
            self._heartbeat_busy = True
            self._heartbeat_at = None
        if self.state == "probing":
            return out
        if self._stale_delete:
            if not self._in_flight or all(r.purpose == "heartbeat"
                                          for r in self._in_flight.values()):
                self._stale_delete = False
                out.append(self._request("DELETE", f"/resource/nodes/{self.node[1]}", None,
                                         "stale_node", self.node))
            return out
        if any(r.purpose == "stale_node" for r in self._in_flight.values()):
            return out
        if self.node in self._todo["node"] or self.node not in self.registered:
            # the node alone first: nothing else goes before it has landed
            if self.node not in self._busy and self.node in self._todo["node"]:
                out.append(self._post(self.desired[self.node], now))
            return out
        room = self.window - len(self._in_flight) + (1 if self._heartbeat_busy else 0)
        if room <= 0:
            return out
        for kind in reversed(KINDS):  # deletions first, children before parents
            room = self._deletions(kind, room, out)
            if room <= 0:
                return out
        for kind in KINDS[1:]:
            room = self._posts(kind, room, now, out)
            if room <= 0:
                return out
        return out

    def _deletions(self, kind: str, room: int, out: list[Request]) -> int:
        todo = self._gone[kind]
        done: list[Key] = []
        for key in todo:
            if room <= 0:
                break
            if key in self._busy:
                continue
            if key not in self.registered:
                done.append(key)
                continue
            if self._delete_if_clear(key, out):
                room -= 1
        for key in done:
            del todo[key]
        return room

    def _delete_if_clear(self, key: Key, out: list[Request]) -> bool:
        if self._children.get(key) or key in self._busy:
            return False
        out.append(self._request("DELETE", f"/resource/{PLURAL[key[0]]}/{key[1]}", None,
                                 "delete", key))
        return True

    def _posts(self, kind: str, room: int, now: float, out: list[Request]) -> int:
        todo = self._todo[kind]
        done: list[Key] = []
        for key in todo:
            if room <= 0:
                break
            resource = self.desired.get(key)
            if resource is None or key in self._busy or key in self._conflicted:
                continue
            if self.refused.get(key) == self._digests[key]:
                done.append(key)  # refused as it is: wait for a change
                continue
            missing = next((p for p in resource.parents if p not in self.registered), None)
            if missing is None:
                out.append(self._post(resource, now))
                room -= 1
            else:
                done.append(key)
                self._waiting.setdefault(missing, {})[key] = None
                self._waiting_on[key] = missing
        for key in done:
            del todo[key]
        return room

    def _post(self, resource: Resource, now: float) -> Request:
        version = self._clock.next(now)
        self.versions[resource.key] = version
        body = {"type": resource.kind, "data": {**resource.data, "version": version}}
        return self._request("POST", "/resource", body, "register", resource.key,
                             self._digests[resource.key])

    def _request(self, method: str, path: str, body: dict[str, Any] | None, purpose: str,
                 key: Key | None = None, text: str = "") -> Request:
        self._ids += 1
        request = Request(self._ids, method, path, body, purpose, key, text)
        self._in_flight[request.id] = request
        if key is not None:
            self._busy.add(key)
        self.counts[purpose] += 1
        return request

    def next_timer(self) -> float | None:
        """When :meth:`poll` has something new to say without any input."""
        if self.state == "backoff":
            return self._retry_at
        return self._heartbeat_at if not self._heartbeat_busy else None

    # -- what the registry said --------------------------------------------------------
    def response(self, request_id: int, status: int, now: float) -> None:
        request = self._in_flight.pop(request_id, None)
        if request is None:
            return  # from before a reset or a failure: it says nothing now
        if request.key is not None:
            self._busy.discard(request.key)
        if status >= 500:
            self._failure(now, f"http_{status}", f"{request.method} {request.path}: "
                          f"{status}")
            return
        if request.purpose == "heartbeat":
            self._heartbeat(status, now)
        elif request.purpose == "register":
            self._registered(request, status, now)
        elif request.purpose == "stale_node":
            if status in (200, 204, 404):
                # expect 201 now; a 200 again is believed. The wait is kept: only a
                # registration that lands shortens it
                self.reset(fresh=False, keep_backoff=True)
            else:
                self._failure(now, f"http_{status}", f"stale node DELETE: {status}")
        else:
            self._deleted(request, status, now)

    def failed(self, request_id: int, reason: str, now: float, detail: str = "") -> None:
        """No answer: a timeout, a refused connection, or an answer that is not HTTP."""
        request = self._in_flight.pop(request_id, None)
        if request is None:
            return
        self._failure(now, reason, detail or f"{request.method} {request.path}: {reason}")

    def _heartbeat(self, status: int, now: float) -> None:
        self._heartbeat_busy = False
        if status == 200:
            self._lost_in_row = 0
            self._succeeded()
            self._heartbeat_at = now + self.heartbeat_interval
            if self.state == "probing":
                self.state = "registering"
            self._settle_state()
        elif status == 404:
            self.errors["heartbeat_404"] += 1
            self.counts["re_registrations"] += 1
            self._lost_in_row += 1
            self.reset(fresh=False)
            if self._lost_in_row > 1:
                # lost again right after registering everything: a registry whose
                # heartbeats are broken would be sent every resource every 5 s; the
                # next full registration waits, doubling, as after a failure
                self.state = "backoff"
                self._retry_at = now + min(BACKOFF_FIRST * 2 ** (self._lost_in_row - 1),
                                           BACKOFF_MAX)
                self.last_error = f"heartbeat 404 {self._lost_in_row} times in a row"
        else:
            self._failure(now, f"http_{status}", f"heartbeat: {status}")

    def _registered(self, request: Request, status: int, now: float) -> None:
        key = request.key
        assert key is not None
        if status in (200, 201):
            self._succeeded()
            if key == self.node and self._fresh:
                self._fresh = False
                if status == 200:  # a stale node of ours: delete it, register anew
                    self.counts["stale_nodes"] += 1
                    self._stale_delete = True
                    self._drop_in_flight()
                    self.registered.clear()
                    return
            if key == self.node and self._heartbeat_at is None:
                self._heartbeat_at = now + self.heartbeat_interval
            self._note_registered(key, request.digest)
            self._reconflicts.pop(key, None)
            if key in self.desired and self._digests.get(key) == request.digest:
                self._todo[key[0]].pop(key, None)  # else: changed meanwhile, or removed
            self._settle_state()
        elif key == self.node or status in SLOW_DOWN:
            # nothing goes on without the node, and the registry would refuse it again
            # at once; 408/429 ask for a pause, not a change: back off, then send again
            if key == self.node and status == 409:  # held by another API: delete first
                self._stale_delete = True
            self._failure(now, REFUSALS.get(status, f"http_{status}"),
                          f"POST {key[0]} {key[1]}: {status}")
        elif status == 400:
            self.errors["rejected"] += 1
            self.last_error = f"400 for {key[0]} {key[1]}"
            self.refused[key] = request.digest
        elif status == 409 and request.digest in self._reconflicts.get(key, ()):
            # a conflict again, after the DELETE, for the same body: a registry that
            # keeps saying so would be asked in a loop; refused until it changes
            self.errors["conflict"] += 1
            self.last_error = f"409 again for {key[0]} {key[1]}"
            self.refused[key] = request.digest
        elif status == 409:
            self.errors["conflict"] += 1
            self._reconflicts[key] = request.digest
            self._conflicted.add(key)
            self.registered.setdefault(key, "")  # it is there, in some version: delete it
            self._gone[key[0]][key] = None
        elif status == 404:  # the registry lacks a parent we thought it held
            self.counts["re_registrations"] += 1
            self.reset(fresh=False, keep_backoff=True)
            # again after a pause: a registry that keeps saying so is not hammered
            self._failure(now, "parent_missing", f"POST {key[0]} {key[1]}: 404")
        else:
            self.errors[f"http_{status}"] += 1
            self.refused[key] = request.digest

    def _deleted(self, request: Request, status: int, now: float) -> None:
        key = request.key
        assert key is not None
        if status in (200, 204, 404):
            self._succeeded()
            self._forget(key)
            self._conflicted.discard(key)
            self._gone[key[0]].pop(key, None)
            if key in self.desired:
                self._todo[key[0]][key] = None  # conflicted: register it again
        else:
            self._failure(now, f"http_{status}", f"DELETE {request.path}: {status}")

    def _unwait(self, key: Key) -> None:
        parent = self._waiting_on.pop(key, None)
        if parent is not None:
            waiting = self._waiting.get(parent)
            if waiting is not None:
                waiting.pop(key, None)
                if not waiting:
                    del self._waiting[parent]

    def _note_registered(self, key: Key, text: str) -> None:
        self.registered[key] = text
        for child in self._waiting.pop(key, ()):
            self._waiting_on.pop(child, None)
            if child in self.desired:
                self._todo[child[0]][child] = None
        parents = self.desired[key].parents if key in self.desired else ()
        for old in self._parents.get(key, ()):
            self._children.get(old, set()).discard(key)
        self._parents[key] = parents
        for parent in parents:
            self._children.setdefault(parent, set()).add(key)

    def _forget(self, key: Key) -> None:
        self.registered.pop(key, None)
        for parent in self._parents.pop(key, ()):
            children = self._children.get(parent)
            if children is not None:
                children.discard(key)
                if not children:
                    del self._children[parent]

    def _succeeded(self) -> None:
        self._backoff = BACKOFF_FIRST

    def _settle_state(self) -> None:
        if self.state in ("registering", "registered"):
            busy = self._waiting_on or any(self._todo.values()) or any(self._gone.values())
            self.state = "registering" if busy else "registered"

    def _failure(self, now: float, reason: str, detail: str) -> None:
        self.errors[reason] += 1
        self.last_error = detail
        self._drop_in_flight()
        self._stale_delete = self._stale_delete and self.node not in self.registered
        self.state = "backoff"
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
