"""madcap's client against the real allocator, in memory and aioquic style: client
message -> bytes -> server -> bytes -> client, with no socket and no real waiting
beyond the retransmission timers (shortened)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from madcap import wire
from madcap.client import (
    LeaseInfo,
    MadcapClient,
    MadcapNak,
    MadcapTimeout,
    Retransmit,
)
from madcap.pool import scope_from_config
from madcap.server import ServerSettings
from madcap.store.sqlite import SqliteLeaseStore
from madcap.wire import ErrorCode, ErrorInfo, MsgType, Opt
from tests.madcap_harness import Harness

SERVER = ("10.0.0.1", 2535)
SCOPE = {"name": "studio", "range": "239.255.0.0/16", "pool": "239.255.0.1-239.255.0.8",
         "lease_default": 600, "names": [{"language": "en", "name": "Studio"}]}
SCOPE_ID = ipaddress.IPv4Address("239.255.0.0")
FAST = Retransmit(initial=0.02, cap=0.05, retries=3, give_up=1.0)


class MemoryTransport(asyncio.DatagramTransport):
    """The wire between one client and the server: every datagram the client sends
    goes, as bytes, through the server's hub; the reply comes back on the loop. ``drop``
    decides which sends are lost (by their count, from 0)."""

    def __init__(self, server: Harness, client: MadcapClient, now: Callable[[], float],
                 drop: Callable[[int], bool] = lambda n: False) -> None:
        super().__init__()
        self.server, self.client, self.now, self.drop = server, client, now, drop
        self.sent: list[bytes] = []
        self.replies: list[bytes] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        count = len(self.sent)
        self.sent.append(bytes(data))
        if self.drop(count):
            return
        multicast = ipaddress.ip_address(addr[0]).is_multicast
        reply = self.server.exchange(bytes(data), "10.0.0.9:40000",
                                     ipaddress.IPv4Address(SERVER[0]), self.now(), multicast)
        if reply is not None:
            self.replies.append(reply)
            asyncio.get_running_loop().call_soon(self.client.datagram_received, reply,
                                                 SERVER)

    def close(self) -> None:
        pass


def pair(tmp_path: Path, server: tuple[str, int] | None = SERVER,
         drop: Callable[[int], bool] = lambda n: False,
         clock: list[float] | None = None) -> tuple[MadcapClient, MemoryTransport]:
    store = SqliteLeaseStore(tmp_path / "leases.sqlite3")
    now = (lambda: clock[0]) if clock is not None else time.time
    harness = Harness([scope_from_config(SCOPE, 0)], store, now(), ServerSettings(guard=5.0))
    client = MadcapClient(server, retransmit=FAST, collect=0.05)
    transport = MemoryTransport(harness, client, now, drop)
    client.attach(transport)
    return client, transport


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def types(data: list[bytes]) -> list[int]:
    return [wire.decode(d).msgtype for d in data]


def test_enumerate_request_renew_release(tmp_path: Path) -> None:
    client, wire_ = pair(tmp_path)

    async def scenario() -> tuple[Any, LeaseInfo, LeaseInfo]:
        scopes = await client.enumerate_scopes()
        lease = await client.request(scopes[0].scope_id, count=2, lease_time=300)
        renewed = await client.renew(lease, lease_time=900)
        await client.release(renewed)
        return scopes, lease, renewed
    scopes, lease, renewed = run(scenario())
    assert [s.name for s in scopes] == ["Studio"] and scopes[0].server == SERVER
    assert lease.addresses == ["239.255.0.1", "239.255.0.2"] and lease.server == SERVER
    assert renewed.lease_id == lease.lease_id and renewed.addresses == lease.addresses
    assert renewed.end - renewed.start == pytest.approx(900, abs=2)
    assert types(wire_.sent) == [MsgType.GETINFO, MsgType.REQUEST, MsgType.RENEW,
                                 MsgType.RELEASE]
    assert not wire_.server.leases and lease.lease_id in wire_.server.held
    assert wire_.server.counters["acks"] == 4


def test_discover_then_request_names_the_offering_server(tmp_path: Path) -> None:
    client, wire_ = pair(tmp_path, server=None)
    lease = run(client.request(SCOPE_ID))
    assert types(wire_.sent) == [MsgType.DISCOVER, MsgType.REQUEST]
    request = wire.decode(wire_.sent[1])
    assert request.server_id == ipaddress.IPv4Address(SERVER[0])
    assert lease.server == SERVER and len(lease.addresses) == 1
    assert set(wire_.server.leases) == {lease.lease_id}


def test_lost_request_is_retransmitted_byte_identical(tmp_path: Path) -> None:
    client, wire_ = pair(tmp_path, drop=lambda n: n == 0)
    lease = run(client.request(SCOPE_ID))
    assert len(wire_.sent) == 2 and wire_.sent[0] == wire_.sent[1]
    assert lease.addresses == ["239.255.0.1"]


def test_lost_ack_gets_the_cached_reply_and_one_lease(tmp_path: Path) -> None:
    client, wire_ = pair(tmp_path)
    lost_once = []

    def deliver_but_lose_first(data: bytes, addr: tuple[str, int]) -> None:
        if not lost_once:
            lost_once.append(data)  # the ACK is lost on its way back
            return
        MadcapClient.datagram_received(client, data, addr)
    client.datagram_received = deliver_but_lose_first  # type: ignore[method-assign]
    lease = run(client.request(SCOPE_ID))
    assert len(wire_.sent) == 2 and wire_.replies[0] == wire_.replies[1]
    assert wire_.server.counters["retransmissions"] == 1
    assert list(wire_.server.leases) == [lease.lease_id]


def test_nak_stops_retransmission_and_names_the_error(tmp_path: Path) -> None:
    client, wire_ = pair(tmp_path)
    stranger = LeaseInfo(b"\0" * 17, SERVER, SCOPE_ID, ["239.255.0.1"], 0.0, 1.0)
    with pytest.raises(MadcapNak, match="lease id not recognized"):
        run(client.renew(stranger))
    assert len(wire_.sent) == 1 and types(wire_.replies) == [MsgType.NAK]


def test_exhausted_pool_is_a_nak_naming_could_not_complete(tmp_path: Path) -> None:
    client, _ = pair(tmp_path)

    async def scenario() -> None:
        await client.request(SCOPE_ID, count=8)
        await client.request(SCOPE_ID)
    with pytest.raises(MadcapNak, match="could not complete"):
        run(scenario())


def test_no_answer_times_out_after_the_retries(tmp_path: Path) -> None:
    client, wire_ = pair(tmp_path, drop=lambda n: True)
    with pytest.raises(MadcapTimeout, match=r"no answer from 10\.0\.0\.1:2535"):
        run(client.request(SCOPE_ID))
    assert len(wire_.sent) == FAST.retries + 1 and len(set(wire_.sent)) == 1


def test_answers_for_other_transactions_are_ignored(tmp_path: Path) -> None:
    client, _ = pair(tmp_path)
    other = wire.encode(wire.Message(msgtype=MsgType.ACK, xid=1, lease_id=b"\1" * 17))

    async def scenario() -> LeaseInfo:
        asyncio.get_running_loop().call_soon(client.datagram_received, other, SERVER)
        client.datagram_received(b"\0\5garbage", SERVER)
        return await client.request(SCOPE_ID)
    assert run(scenario()).addresses == ["239.255.0.1"]


def test_retransmit_schedule_is_rfc_2730s() -> None:
    assert Retransmit().delays() == [4.0, 8.0, 16.0, 16.0]  # RFC 2730 section 4.1


def test_nak_text_names_error_and_option() -> None:
    error = ErrorInfo(ErrorCode.INVALID_REQUEST, option=Opt.NUM_ADDRESSES)
    assert str(MadcapNak(error)) == "server refused: invalid request (option num_addresses)"
    assert str(MadcapNak(ErrorInfo(99))) == "server refused: error 99"
    assert str(MadcapNak(None)) == "server refused: error -1"


def test_lease_info_json_round_trip() -> None:
    lease = LeaseInfo(b"\0" + bytes(range(16)), ("fe80::1", 2535), SCOPE_ID,
                      ["239.255.0.1"], 10.0, 20.0)
    assert LeaseInfo.from_json(lease.to_json()) == lease
