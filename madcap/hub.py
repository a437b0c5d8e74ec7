"""The one seam where a lease change becomes durable, then heard (its reply sent).

Datagrams of one socket drain go through the sans-IO server, their staged lease
changes go to the store in one transaction, and only the replies whose change the
store took are released. ``flush`` does it in one call; the daemon splits it into
``take`` and ``settle`` and runs the commit between them in a thread of its own, so
that the next batch is handled while this one is written (its fsync no longer stops
the loop); a batch waits until the one before it is settled. What a failed commit
means is decided here once: the changes are undone in the server (a retransmission
is answered afresh), the replies that depended on them are dropped (the clients
retransmit), the failure is counted under its reason and the hub reports itself
degraded until a commit succeeds.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from madcap.leases import COMMITTED, CommitResult, Lease, LeaseStore, LeaseStoreError
from madcap.server import Journal, MadcapServer
from madcap.wire import IPAddress, MsgType, request_key

A = TypeVar("A")  # where a reply goes (the daemon's (host, port))
# Reply kinds by the message type octet (the second octet of every MADCAP message).
_SENT_AS: dict[int, str] = {MsgType.OFFER: "offers", MsgType.ACK: "acks", MsgType.NAK: "naks"}


@dataclass(slots=True)
class Batch(Generic[A]):
    """One batch on its way to the store: its lease changes, the replies waiting for
    them (reply, the lease id it speaks of, where it goes) and the server's journal."""

    leases: list[Lease]
    replies: list[tuple[bytes, bytes | None, A]]
    journal: Journal


@dataclass
class LeaseHub(Generic[A]):
    server: MadcapServer
    store: LeaseStore
    failures: Counter[str] = field(default_factory=Counter)  # failed commits, by reason
    problem: str | None = None  # the last commit failure, until a commit succeeds
    _replies: list[tuple[bytes, bytes | None, A]] = field(default_factory=list)
    _batch: dict[bytes, Lease] = field(default_factory=dict)
    # Replies that speak of no change on its way to the store (an OFFER of free
    # addresses, a NAK, the ACK of a lease durable before): they wait for no commit.
    _ready: list[tuple[bytes, A]] = field(default_factory=list)
    _unsettled: set[bytes] = field(default_factory=set)  # lease ids of taken batches
    # (local address, destination) text -> parsed: parsing two addresses per datagram
    # cost a fifth of the time per exchange
    _arrivals: dict[tuple[str, str], tuple[IPAddress, bool]] = field(default_factory=dict)
    # A shared store's datagrams wait for the batch end, so that its reply cache is
    # looked up once for all of them (a round trip per datagram blocked the loop).
    _queued: list[tuple[bytes, str, IPAddress, bool, tuple[str, int]]] = \
        field(default_factory=list)

    def receive(self, data: bytes, client: str, server_address: IPAddress, now: float,
                reply_to: A, multicast: bool = False) -> None:
        reply, lease_id, staged = self.server.handle(data, client, server_address, now,
                                                     multicast)
        if staged is not None:
            self._batch[staged.lease_id] = staged
        if reply is not None:
            if staged is None and lease_id not in self._batch \
                    and lease_id not in self._unsettled:
                self._ready.append((reply, reply_to))
            else:
                self._replies.append((reply, lease_id, reply_to))

    def on_datagram(self: LeaseHub[tuple[str, int]], data: bytes, source: tuple[str, int],
                    local: str, destination: str) -> None:
        """The receiver's packet handler (madcapd): ``receive`` with the arrival's text
        parsed once per (local address, group) and the store's clock. One frame per
        datagram, not two: receive() is inlined."""
        arrival = self._arrivals.get((local, destination))
        if arrival is None:
            try:
                arrival = (ipaddress.ip_address(local or "0.0.0.0"),
                           bool(destination) and ipaddress.ip_address(destination).is_multicast)
            except ValueError:
                return
            if len(self._arrivals) < 1024:  # a few local addresses and groups
                self._arrivals[(local, destination)] = arrival
        if self.store.shared:
            self._queued.append((data, f"{source[0]}:{source[1]}", arrival[0], arrival[1],
                                 source))
            return
        reply, lease_id, staged = self.server.handle(
            data, f"{source[0]}:{source[1]}", arrival[0], self.store.now(), arrival[1])
        if staged is not None:
            self._batch[staged.lease_id] = staged
        if reply is not None:
            if staged is None and lease_id not in self._batch \
                    and lease_id not in self._unsettled:
                self._ready.append((reply, source))
            else:
                self._replies.append((reply, lease_id, source))

    def stage(self, leases: Sequence[Lease]) -> None:
        """Changes the server made outside a datagram (expiry, an operator's revoke)."""
        for lease in leases:
            self._batch[lease.lease_id] = lease

    def _handle_queued(self: LeaseHub[tuple[str, int]]) -> None:
        queued, self._queued = self._queued, []
        keys = []
        for data, client, _, _, _ in queued:
            key = request_key(data)
            if key is not None:
                keys.append((*key, client))
        self.store.reply_cache().prefetch(keys)
        now = self.store.now()
        handle, batch, out = self.server.handle, self._batch, self._replies
        for data, client, local, multicast, source in queued:
            reply, lease_id, staged = handle(data, client, local, now, multicast)
            if staged is not None:
                batch[staged.lease_id] = staged
            if reply is not None:
                out.append((reply, lease_id, source))

    def ready(self) -> list[tuple[bytes, A]]:
        """The replies that wait for no commit (counted as sent), in arrival order."""
        ready, self._ready = self._ready, []
        counters = self.server.counters
        for data, _ in ready:
            name = _SENT_AS.get(data[1])
            if name is not None:
                counters[name] += 1
        return ready

    def take(self) -> Batch[A]:
        """The batch so far, for the store; what arrives from now on is the next one."""
        if self._queued:
            self._handle_queued()  # type: ignore[misc]
        replies, self._replies = self._replies, []
        batch, self._batch = self._batch, {}
        self._unsettled.update(batch)
        return Batch(list(batch.values()), replies, self.server.seal())

    def commit_needed(self, batch: Batch[A]) -> bool:
        """Whether the batch goes to the store: its leases; on a shared store also its
        replies (so that another server answers a retransmission alike), and while
        failing a probe: recovery needs no lease."""
        return bool(batch.leases) or (self.store.shared and bool(
            batch.replies or self.problem is not None or self.store.problem is not None))

    def settle(self, batch: Batch[A], result: CommitResult | LeaseStoreError
               ) -> list[tuple[bytes, A]]:
        """What the store made of a batch (its answer, or the error that refused it all);
        the batch's replies that may be sent now, in arrival order. A reply of the
        next batch that was built on a refused change is dropped with it."""
        self._unsettled.difference_update([lease.lease_id for lease in batch.leases])
        if isinstance(result, LeaseStoreError):
            self.failures[result.reason] += 1
            self.problem = str(result)
            refused = frozenset(lease.lease_id for lease in batch.leases)
            self.server.settle(refused, (), batch.journal)
            if self.store.shared:
                # nothing of this batch is in the database: no answer at all, and the
                # clients retransmit (RFC 2730 s. 2.3) until it is back
                refused = frozenset(lid for _, lid, _ in batch.replies if lid is not None)
        else:
            if batch.leases or self.store.shared:
                self.problem = None
            refused = result.refused
            self.server.settle(refused, result.taken, batch.journal)
        tally = [0] * 256  # replies sent, by message type (a list: cheap per reply)
        out = []
        for data, lease_id, reply_to in batch.replies:
            if lease_id in refused:
                tally[0] += 1  # type 0 is no MADCAP type: the dropped ones
                continue
            tally[data[1]] += 1
            out.append((data, reply_to))
        if refused and (self._batch or self._replies):
            for lease_id in refused:
                self._batch.pop(lease_id, None)
            kept = [reply for reply in self._replies if reply[1] not in refused]
            tally[0] += len(self._replies) - len(kept)
            self._replies = kept
        counters = self.server.counters
        for msgtype, name in _SENT_AS.items():
            if tally[msgtype]:
                counters[name] += tally[msgtype]
        if tally[0]:
            counters["replies_dropped"] += tally[0]
        return out

    def flush(self) -> list[tuple[bytes, A]]:
        """Commit the batch here and now; the replies that may be sent now (those that
        waited for nothing first)."""
        ready = self.ready()
        batch = self.take()
        result: CommitResult | LeaseStoreError = COMMITTED
        if self.commit_needed(batch):
            try:
                result = self.store.commit(batch.leases)
            except LeaseStoreError as exc:
                result = exc
        return ready + self.settle(batch, result)

    @property
    def health(self) -> str | None:
        """Why leasing is degraded (the store's integrity or the last commit), or None."""
        return self.store.problem or self.problem
