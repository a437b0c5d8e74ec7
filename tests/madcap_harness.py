"""madcap's allocator with the daemon's commit step (madcap/hub.py) and nothing else:
no sockets, no event loop. Unit tests drive it as madcapd does, one batch at a time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from madcap.hub import LeaseHub
from madcap.leases import CommitResult, Lease, LeaseStore, LeaseStoreError
from madcap.pool import ScopeConfig
from madcap.server import MadcapServer, ServerSettings
from madcap.store.sqlite import SqliteLeaseStore
from madcap.wire import IPAddress


class FailingStore(SqliteLeaseStore):
    """A real store whose commits fail, as on a full disk, while ``full`` is set."""

    full = False

    def commit(self, leases: Sequence[Lease]) -> CommitResult:
        if self.full:
            raise LeaseStoreError("disk_full", "database or disk is full")
        return super().commit(leases)


class Harness(MadcapServer):
    """A MadcapServer over a real store; ``exchange`` is one datagram as its own batch,
    ``commit`` makes what expire() and revoke() staged durable."""

    def __init__(self, scopes: Iterable[ScopeConfig], store: LeaseStore, now: float,
                 settings: ServerSettings | None = None) -> None:
        super().__init__(scopes, store.load(now), now, settings, cache=store.reply_cache())
        self.store = store
        self.hub: LeaseHub[str] = LeaseHub(self, store)

    def exchange(self, data: bytes, client: str, server_address: IPAddress, now: float,
                 multicast: bool = False) -> bytes | None:
        self.hub.receive(data, client, server_address, now, client, multicast)
        sent = self.hub.flush()
        return sent[0][0] if sent else None

    def expire(self, now: float) -> list[Lease]:
        expired = super().expire(now)
        self.hub.stage(expired)
        return expired

    def revoke(self, lease_id: bytes, now: float) -> Lease | None:
        done = super().revoke(lease_id, now)
        if done is not None:
            self.hub.stage([done])
        return done

    def commit(self) -> None:
        self.hub.flush()


def crashed(server: Harness, now: float, durability: str = "full") -> Harness:
    """madcapd killed and started again at ``now``: a new server over a new store on the
    same file. What was not committed (staged changes, offers, the reply cache) died
    with the process; what the store took is all the new server knows."""
    store = server.store
    assert isinstance(store, SqliteLeaseStore), "a crash reopens the store's file"
    store.close()
    return Harness(server.scopes, type(store)(store.path, durability), now, server.settings)
