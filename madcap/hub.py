"""The one seam where a lease change becomes durable, then heard (its reply sent).

Datagrams of one socket drain go through the sans-IO server, their staged lease
changes go to the store in one transaction, and only the replies whose change the
store took are released. What a failed commit means is decided here once: the
changes are undone in the server (a retransmission is answered afresh), the replies
that depended on them are dropped (the clients retransmit), the failure is counted
under its reason and the hub reports itself degraded until a commit succeeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from madcap.leases import Lease, LeaseStore, LeaseStoreError
from madcap.server import MadcapServer
from madcap.wire import IPAddress, MsgType

A = TypeVar("A")  # where a reply goes (the daemon's (host, port))
# Reply kinds by the message type octet (the second octet of every MADCAP message).
_SENT_AS: dict[int, str] = {MsgType.OFFER: "offers", MsgType.ACK: "acks", MsgType.NAK: "naks"}


@dataclass
class LeaseHub(Generic[A]):
    server: MadcapServer
    store: LeaseStore
    failures: Counter[str] = field(default_factory=Counter)  # failed commits, by reason
    problem: str | None = None  # the last commit failure, until a commit succeeds
    _replies: list[tuple[bytes, bytes | None, A]] = field(default_factory=list)
    _batch: dict[bytes, Lease] = field(default_factory=dict)

    def receive(self, data: bytes, client: str, server_address: IPAddress, now: float,
                reply_to: A, multicast: bool = False) -> None:
        handled = self.server.handle(data, client, server_address, now, multicast)
        if handled.staged is not None:
            self._batch[handled.staged.lease_id] = handled.staged
        if handled.reply is not None:
            self._replies.append((handled.reply, handled.lease_id, reply_to))

    def stage(self, leases: Sequence[Lease]) -> None:
        """Changes the server made outside a datagram (expiry, an operator's revoke)."""
        for lease in leases:
            self._batch[lease.lease_id] = lease

    def flush(self) -> list[tuple[bytes, A]]:
        """Commit the batch; the replies that may be sent now, in arrival order."""
        replies, self._replies = self._replies, []
        batch, self._batch = self._batch, {}
        refused: frozenset[bytes] = frozenset()
        if batch:
            try:
                result = self.store.commit(list(batch.values()))
            except LeaseStoreError as exc:
                self.failures[exc.reason] += 1
                self.problem = str(exc)
                refused = frozenset(batch)
                self.server.settle(refused)
            else:
                self.problem = None
                refused = result.refused
                self.server.settle(refused, result.taken)
        counters = self.server.counters
        out = []
        for data, lease_id, reply_to in replies:
            if lease_id in refused:
                counters["replies_dropped"] += 1
                continue
            counters[_SENT_AS.get(data[1], "replies_other")] += 1
            out.append((data, reply_to))
        return out

    @property
    def health(self) -> str | None:
        """Why leasing is degraded (the store's integrity or the last commit), or None."""
        return self.store.problem or self.problem
