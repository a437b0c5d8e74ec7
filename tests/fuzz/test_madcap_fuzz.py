"""Whole-path fuzz of madcapd's message handler: datagram -> decode -> handle -> encode.

Inputs are generated MADCAP messages (well framed, so they reach the handler, with
hostile values: huge ranges, wrong families, times at the u32 edges, unknown types and
options, duplicate options, lease ids that name real leases) and byte-level mutations
of them. Sources rotate over a few hosts so the per-client quotas are exercised, the
clock runs (and sometimes jumps back), expiry sweeps and commits run as in the daemon.

Asserted: no untyped exception, every reply decodes with our own decoder, no input
over budget.BUDGET_SECONDS of CPU (one over it at first is timed again on servers rebuilt
from the committed store, budget.retimed), RSS bounded, and a valid request works
afterwards.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import random
import struct
import time
import traceback
from pathlib import Path

from madcap import wire
from madcap.pool import scope_from_config
from madcap.store.sqlite import SqliteLeaseStore
from madcap.wire import MadcapDecodeError, Message, MsgType, Opt
from tests.fuzz import budget
from tests.madcap_harness import Harness

SERVER = ipaddress.IPv4Address("10.0.0.1")
T0 = 1_800_000_000.0
SCOPES = [
    {"name": "local", "range": "239.255.0.0/16", "lease_default": 600, "lease_max": 86_400},
    {"name": "org", "range": "239.192.0.0/14", "pool": "239.192.0.0-239.192.0.15",
     "max_addresses_per_client": 8, "max_offers_per_client": 2},
    {"name": "v6", "range": "ff15::/16", "pool": "ff15::8000:0-ff15::8000:ff"},
]
SCOPE_IDS = [b"\xef\xff\x00\x00", b"\xef\xc0\x00\x00", ipaddress.IPv6Address("ff15::").packed]
U32_EDGES = (0, 1, 59, 60, 61, 3599, 86_400, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF)
U16_EDGES = (0, 1, 2, 255, 256, 257, 0x7FFF, 0xFFFE, 0xFFFF)
REPLY_NAMES: dict[int, str] = {MsgType.OFFER: "offer", MsgType.ACK: "ack", MsgType.NAK: "nak"}


class Inputs:
    """Datagrams for the handler, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lease_ids = [b"\x00" + rng.randbytes(16) for _ in range(24)] + [b"\x00", b"\x01"]

    def u32(self, now: float) -> int:
        rng = self.rng
        pick = rng.random()
        if pick < 0.4:
            return rng.choice(U32_EDGES)
        if pick < 0.8:  # near the server's clock: the Current Time / Start Time cases
            return max(0, min(0xFFFFFFFF, int(now) + rng.randint(-4000, 4000)))
        return rng.getrandbits(32)

    def address(self, family: int) -> bytes:
        rng = self.rng
        if family == wire.FAMILY_IPV6:
            if rng.random() < 0.6:
                return (int(ipaddress.IPv6Address("ff15::8000:0")) +
                        rng.randint(-4, 300)).to_bytes(16, "big")
            return rng.randbytes(16)
        pick = rng.random()
        if pick < 0.5:
            return (0xEFFF0000 + rng.randint(0, 0xFFFF)).to_bytes(4, "big")
        if pick < 0.7:
            return (0xEFC00000 + rng.randint(0, 40)).to_bytes(4, "big")
        if pick < 0.8:
            return (0xFFFFFFFF - rng.randint(0, 10)).to_bytes(4, "big")
        return rng.randbytes(4)

    def value(self, code: int, family: int, now: float) -> bytes:
        rng = self.rng
        alen = 4 if family == wire.FAMILY_IPV4 else 16
        if code in (Opt.LEASE_TIME, Opt.START_TIME, Opt.CURRENT_TIME, Opt.RETRY_TIME,
                    Opt.MIN_LEASE_TIME, Opt.MAX_START_TIME):
            return struct.pack(">I", self.u32(now))
        if code == Opt.SERVER_ID:
            if rng.random() < 0.5:
                return struct.pack(">H", 1) + SERVER.packed
            sid_family = rng.choice((1, 2, 3))
            return struct.pack(">H", sid_family) + rng.randbytes(16 if sid_family == 2 else 4)
        if code == Opt.LEASE_ID:
            return rng.choice(self.lease_ids) if rng.random() < 0.9 else \
                rng.randbytes(rng.randint(1, 40))
        if code == Opt.SCOPE:
            if rng.random() < 0.8:
                return rng.choice(SCOPE_IDS)
            return self.address(family)
        if code == Opt.OPTION_REQUEST:
            return b"".join(struct.pack(">H", rng.choice((*range(18), 0xFFFF)))
                            for _ in range(rng.randint(1, 6)))
        if code == Opt.NUM_ADDRESSES:
            return struct.pack(">HH", rng.choice(U16_EDGES), rng.choice(U16_EDGES))
        if code == Opt.LANGUAGE:
            return rng.choice((b"", b"en", b"de", b"EN-gb", rng.randbytes(rng.randint(0, 8))))
        if code == Opt.ADDRESS_RANGES:
            count = rng.choice((0, 1, 2, 5, 236))
            return b"".join(self.address(family)[:alen] +
                            struct.pack(">H", rng.choice(U16_EDGES)) for _ in range(count))
        if code == Opt.FEATURES:
            return b"".join(struct.pack(">H", n) + b"".join(
                struct.pack(">H", rng.choice((0, 1, 2, 3, 0xFFFF))) for _ in range(n))
                for n in (rng.randint(0, 3), rng.randint(0, 2), rng.randint(0, 2)))
        return rng.randbytes(rng.randint(0, 24))  # scope list, error, nesting, unknown

    def generated(self, now: float) -> bytes:
        rng = self.rng
        msgtype = rng.choices((1, 3, 4, 7, 8, 2, 5, 6, 0, 9, 200),
                              (20, 30, 15, 10, 10, 2, 2, 2, 3, 3, 3))[0]
        family = wire.FAMILY_IPV4 if rng.random() < 0.85 else wire.FAMILY_IPV6
        out = bytearray(struct.pack(">BBHI", 0, msgtype, family, rng.randint(0, 50)))
        codes = [Opt.LEASE_ID] if rng.random() < 0.95 else []
        codes += rng.sample(range(1, 18), rng.randint(0, 7))
        if rng.random() < 0.05:
            codes.append(rng.randint(18, 0xFFFF))  # an unknown option
        if rng.random() < 0.03:
            codes.append(rng.choice(codes or [Opt.SCOPE]))  # a duplicate
        rng.shuffle(codes)
        for code in codes:
            value = self.value(code, family, now)
            if rng.random() < 0.03:  # a wrong length
                value = value[:rng.randint(0, len(value))] if value else rng.randbytes(3)
            out += struct.pack(">HH", code, len(value)) + value
        out += b"\0\0\0\0"
        return bytes(out)

    def mutated(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.5 and buf:
                buf[rng.randrange(len(buf))] = rng.getrandbits(8)
            elif kind < 0.7:
                buf[rng.randint(0, len(buf)):rng.randint(0, len(buf))] = b""
            elif kind < 0.9:
                at = rng.randint(0, len(buf))
                buf[at:at] = rng.randbytes(rng.randint(1, 8))
            else:
                del buf[rng.randint(0, len(buf)):]
        return bytes(buf)

    def next(self, now: float) -> bytes:
        data = self.generated(now)
        return self.mutated(data) if self.rng.random() < 0.2 else data


def test_madcap_message_handler_survives_hostile_datagrams(tmp_path: Path) -> None:
    rng = random.Random(0x13)
    inputs = Inputs(rng)
    store = SqliteLeaseStore(tmp_path / "leases.sqlite3", durability="normal")
    server = Harness([scope_from_config(s, i) for i, s in enumerate(SCOPES)], store, T0)
    hosts = [f"10.0.{h}.{h + 1}" for h in range(6)]
    tally = budget.Tally()
    untyped: list[str] = []
    rejected: list[str] = []
    now, swept = T0, T0
    rss_before = budget.rss_mb()

    def one(data: bytes, client: str, multicast: bool) -> str:
        try:
            reply, _, staged = server.handle(data, client, SERVER, now, multicast)
            if staged is not None:  # committed with the next batch, as in madcapd
                server.hub.stage([staged])
        except Exception as exc:  # counting exactly these is the test
            if len(untyped) < 5:
                untyped.append(f"{data.hex()}: {traceback.format_exc()}")
            return f"raised {type(exc).__name__}"
        if reply is None:
            return "silence"
        try:
            msgtype = wire.decode(reply).msgtype
        except MadcapDecodeError as exc:
            if len(rejected) < 5:
                rejected.append(f"{data.hex()} -> {reply.hex()}: {exc}")
            return "reply rejected"
        return REPLY_NAMES.get(msgtype, f"reply of type {msgtype}")

    def retimed(data: bytes, client: str, now: float, multicast: bool) -> float:
        """An input over budget, timed again on servers rebuilt from what is committed
        (a new one each time: the first run caches its reply)."""
        rebuilt: list[Harness] = []

        def prepare() -> functools.partial[object]:
            again = Harness(server.scopes, SqliteLeaseStore(store.path, "normal"), now,
                            server.settings)
            again.set_avoided(server._avoided)
            rebuilt.append(again)
            return functools.partial(again.handle, data, client, SERVER, now, multicast)
        try:
            return budget.retimed(prepare)
        finally:
            for again in rebuilt:
                again.store.close()

    # The budget is what one input costs; a collection of the whole heap (pytest's too)
    # is no input's cost, so the collector runs between inputs, timed on its own.
    gc.collect()
    gc.disable()
    slowest_gc = 0.0
    try:
        for i in range(budget.INPUTS):
            now += 0.01
            if i % 20_000 == 19_999:
                now -= rng.choice((30.0, 600.0))  # the clock steps back
            if now - swept >= 1.0:
                server.expire(now)
                swept = now
            if i % 64 == 0:
                server.commit()
                started = time.thread_time()
                gc.collect(1 if i % 6400 else 2)
                slowest_gc = max(slowest_gc, time.thread_time() - started)
            data = inputs.next(now)
            client = f"{rng.choice(hosts)}:{rng.randint(1024, 65535)}"
            multicast = rng.random() < 0.3
            tally.run(data, functools.partial(one, data, client, multicast),
                      functools.partial(retimed, data, client, now, multicast))
    finally:
        gc.enable()
    server.commit()
    rss_after = budget.rss_mb()
    print(tally.report("madcap handler"), f"RSS {rss_before:.0f} -> {rss_after:.0f} MB",
          f"leases {len(server.leases)}, held {len(server.held)}, "
          f"slowest collection {slowest_gc * 1000:.1f} ms CPU, {tally.over_budget_report()}")

    assert not untyped, "\n".join(untyped)
    assert not rejected, "\n".join(rejected)
    assert tally.slowest_seconds < budget.BUDGET_SECONDS, \
        f"{tally.slowest_seconds * 1000:.1f} ms for {tally.slowest.hex()}"
    assert rss_after - rss_before < 100, f"RSS grew {rss_before:.0f} -> {rss_after:.0f} MB"
    # after all that, a valid request from a new host is served
    fresh = Message(msgtype=MsgType.REQUEST, xid=1, lease_id=b"\x00" + b"\x42" * 16,
                    scope=ipaddress.IPv4Address("239.255.0.0"))
    reply = server.exchange(wire.encode(fresh), "10.9.9.9:4000", SERVER, now + 0.01)
    assert reply is not None and wire.decode(reply).msgtype == MsgType.ACK
