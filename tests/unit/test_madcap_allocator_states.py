"""Stateful property test of the allocator (issue 13, "Stateful property tests"): whatever
the sequence of DISCOVER/REQUEST/RENEW/RELEASE from several clients, clock steps forward
and back, expiry sweeps, commits the store fails (a full disk) and crashes (a fresh
server and store over the same SQLite file: only what the hub committed survives), no
address is ever acknowledged to two leases for overlapping times, and every address the
server holds is charged to exactly one host's quota.

Every datagram goes through the hub as its own batch: a reply counts as sent only once
the store took its lease change, as in madcapd. The model keeps each
acknowledged grant as (lease id, addresses, start, end as told to the client); a RELEASE's
ACK ends the grant. Clock steps back stay below the guard time (EXTRA-ALLOCATION-TIME):
that is the skew the RFC's guard band exists for.
"""

from __future__ import annotations

import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from madcap import wire
from madcap.leases import ACTIVE
from madcap.pool import scope_from_config
from madcap.server import ServerSettings
from madcap.wire import Message, MsgType
from tests.madcap_harness import FailingStore, Harness, crashed

SERVER = ipaddress.IPv4Address("10.0.0.1")
SCOPE_ID = ipaddress.IPv4Address("239.255.0.0")
T0 = 1_800_000_000.0
GUARD = 120.0
SCOPE = scope_from_config({"name": "tiny", "range": "239.255.0.0/16",
                           "pool": "239.255.0.1-239.255.0.6", "lease_min": 10,
                           "lease_default": 60, "lease_max": 600,
                           "max_addresses_per_client": 4, "max_offers_per_client": 2}, 0)
SETTINGS = ServerSettings(guard=GUARD, offer_hold=60.0, response_cache=60.0)

clients = st.sampled_from(["10.0.0.11:4000", "10.0.0.12:4000", "10.0.0.13:5000"])
lease_ids = st.integers(0, 7).map(lambda n: b"\x00" + n.to_bytes(16, "big"))
lease_times = st.sampled_from([None, 5, 10, 30, 60, 600, 0xFFFFFFFF])
counts = st.sampled_from([None, (1, 1), (1, 3), (2, 2)])


@dataclass
class Grant:
    lease_id: bytes
    addresses: frozenset[str]
    start: float
    end: float


def addresses_of(reply: Message) -> frozenset[str]:
    return frozenset(str(a) for r in reply.address_ranges or () for a in r.addresses())


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        store = FailingStore(Path(self.tmp.name) / "leases.sqlite3", "normal")
        self.now = T0
        self.server = Harness([SCOPE], store, self.now, SETTINGS)
        self.grants: list[Grant] = []
        self.xid = 0

    def teardown(self) -> None:
        self.server.store.close()
        self.tmp.cleanup()

    def send(self, msg: Message, client: str) -> Message | None:
        raw = self.server.exchange(wire.encode(msg), client, SERVER, self.now)
        if raw is None:
            return None
        reply = wire.decode(raw)
        if reply.msgtype == MsgType.ACK and msg.msgtype in (MsgType.REQUEST, MsgType.RENEW):
            self.acknowledged(msg.lease_id or b"", reply)
        elif reply.msgtype == MsgType.ACK and msg.msgtype == MsgType.RELEASE:
            for grant in self.grants:
                if grant.lease_id == msg.lease_id and grant.end > self.now:
                    grant.end = self.now
        return reply

    def acknowledged(self, lease_id: bytes, ack: Message) -> None:
        assert ack.lease_time is not None
        start = float(ack.start_time) if ack.start_time is not None else self.now
        end = max(start, self.now) + ack.lease_time
        given = addresses_of(ack)
        for grant in reversed(self.grants):
            if grant.lease_id == lease_id and grant.addresses == given and \
                    grant.end >= self.now - 1:
                grant.end = end  # the same lease, renewed or repeated
                return
        self.grants.append(Grant(lease_id, given, start, end))

    def next_xid(self) -> int:
        self.xid += 1
        return self.xid

    @rule(client=clients, lease_id=lease_ids, count=counts, lease_time=lease_times)
    def discover(self, client: str, lease_id: bytes, count: tuple[int, int] | None,
                 lease_time: int | None) -> None:
        self.send(Message(msgtype=MsgType.DISCOVER, xid=self.next_xid(), lease_id=lease_id,
                          scope=SCOPE_ID, num_addresses=count, lease_time=lease_time), client)

    @rule(client=clients, lease_id=lease_ids, count=counts, lease_time=lease_times,
          start_in=st.sampled_from([None, 0, 90, 400]), name_server=st.booleans())
    def request(self, client: str, lease_id: bytes, count: tuple[int, int] | None,
                lease_time: int | None, start_in: int | None, name_server: bool) -> None:
        times = {} if start_in is None else {"start_time": int(self.now) + start_in,
                                             "current_time": int(self.now)}
        self.send(Message(msgtype=MsgType.REQUEST, xid=self.next_xid(), lease_id=lease_id,
                          scope=SCOPE_ID, num_addresses=count, lease_time=lease_time,
                          server_id=SERVER if name_server else None, **times), client)

    @rule(client=clients, lease_id=lease_ids, lease_time=lease_times)
    def renew(self, client: str, lease_id: bytes, lease_time: int | None) -> None:
        self.send(Message(msgtype=MsgType.RENEW, xid=self.next_xid(), lease_id=lease_id,
                          lease_time=lease_time), client)

    @rule(client=clients, lease_id=lease_ids)
    def release(self, client: str, lease_id: bytes) -> None:
        self.send(Message(msgtype=MsgType.RELEASE, xid=self.next_xid(), lease_id=lease_id),
                  client)

    @rule(seconds=st.sampled_from([0.5, 1.0, 9.0, 30.0, 61.0, 130.0, 700.0]),
          sweep=st.booleans())
    def clock_forward(self, seconds: float, sweep: bool) -> None:
        self.now += seconds
        if sweep:  # madcapd sweeps every second; a skipped sweep leaves ended leases
            self.server.expire(self.now)
            self.server.commit()

    @rule(seconds=st.sampled_from([1.0, 30.0, GUARD / 2]))
    def clock_back(self, seconds: float) -> None:
        self.now -= seconds

    @rule(full=st.booleans())
    def disk(self, full: bool) -> None:
        # while full, every commit fails: the server undoes the batch, no reply is sent
        store = self.server.store
        assert isinstance(store, FailingStore)
        store.full = full

    @rule(sweep_first=st.booleans())
    def crash(self, sweep_first: bool) -> None:
        if sweep_first:
            self.server.expire(self.now)  # staged in the hub, never committed: lost
        self.server = crashed(self.server, self.now, "normal")

    @invariant()
    def no_address_acknowledged_twice_for_overlapping_times(self) -> None:
        for i, a in enumerate(self.grants):
            for b in self.grants[i + 1:]:
                overlap = min(a.end, b.end) - max(a.start, b.start)
                if overlap > 1.0:  # lease times are told in whole seconds
                    shared = a.addresses & b.addresses
                    assert not shared, f"{sorted(shared)} in {a} and {b}"

    @invariant()
    def every_address_held_is_charged_once(self) -> None:
        # what quotas count (leases until their guard time ends, and offers) is what the
        # server holds, also after undone commits and crashes. The sum, not per host: a
        # lease made from another host's offer stays charged to the offer's host.
        server = self.server
        held = [*server.leases.values(), *server.held.values()]
        expected = sum(len(le.addresses) for le in held) + \
            sum(len(offer.addresses) for offer in server._offers.values())
        assert sum(server._usage.values()) == expected

    @invariant()
    def no_two_unexpired_leases_on_one_address(self) -> None:
        # the server's own view: active leases sharing an address never overlap in time
        # (a lease may start in the future, after another one on its address has ended)
        live = [le for le in self.server.leases.values()
                if le.state == ACTIVE and le.end > self.now]
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                if set(a.addresses) & set(b.addresses):
                    assert min(a.end, b.end) <= max(a.start, b.start), (a, b)


AllocatorMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_allocator_never_has_two_unexpired_leases_on_one_address = AllocatorMachine.TestCase
