"""The RAVENNA bridge's asyncio edge against hostile RTSP servers on real TCP sockets
(127.0.0.1): the bridge is fed mDNS outcomes directly (its core's added/resolved and the
browser's Removed callback), with a real engine and hub. Each test is named after a
defect found by attacking it, and failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from zeroconf import ServiceStateChange

from sapd.bridges import ravenna_core as core
from sapd.bridges.ravenna import SERVICE_TYPE, RavennaBridge
from sapd.config import RavennaConfig
from sapd.hub import Hub
from sapd.lifecycle import Engine
from sapd.plumbing.clock import SteadyClock
from sapd.store.sqlite import SqliteDirectory
from tests.packets import sdp_text
from tests.unit.test_hub import MemoryWriter

LOOPBACK = "127.0.0.1"
SDP = sdp_text(session=7, name="Stage", origin=LOOPBACK).encode()

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(cseq: str, body: bytes = SDP) -> bytes:
    return (f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def cseq_of(reader: asyncio.StreamReader) -> str:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                if line.lower().startswith("cseq:"))


@dataclass
class Server:
    handler: Handler
    accepted: int = 0
    open: int = 0
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.writers.append(writer)
        try:
            await self.handler(self, reader, writer)
            await reader.read()  # until the client closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def describe_answered(server: Server, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    writer.write(answer(await cseq_of(reader)))


@contextlib.asynccontextmanager
async def rig(handler: Handler) -> AsyncIterator[tuple[RavennaBridge, Server]]:
    """A bridge (real engine and hub, store writes held in memory) and one scripted
    RTSP server on a loopback port."""
    loop = asyncio.get_running_loop()
    hub = Hub(Engine(), SqliteDirectory(":memory:"), MemoryWriter(), loop, SteadyClock(),
              flush_delay=0.0)
    bridge = RavennaBridge(hub, RavennaConfig(period=600.0, read_timeout=2.0,
                                              connect_timeout=2.0), 16 * 1024)
    server = Server(handler)
    listening = await asyncio.start_server(server._serve, LOOPBACK, 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield bridge, server
    finally:
        await bridge.stop()
        for writer in server.writers:
            writer.close()
        listening.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def follow(bridge: RavennaBridge, name: str, port: int) -> None:
    now = bridge.hub.clock.now()
    bridge._run(bridge.core.added(name, now))
    bridge._run(bridge.core.resolved(name, LOOPBACK, port, now))


def withdraw(bridge: RavennaBridge, name: str) -> None:
    bridge._on_service(None, SERVICE_TYPE, name, ServiceStateChange.Removed)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds * 50)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time")


def test_a_service_withdrawn_while_connecting_left_its_connection_open() -> None:
    """Services flapping (added, resolved, withdrawn before the TCP connect completed):
    each left an RTSP connection open that nothing counted or closed (and listed its
    row for a moment), so random names flapping exhausted sapd's file descriptors."""
    async def scenario() -> None:
        async with rig(describe_answered) as (bridge, server):
            for n in range(20):
                follow(bridge, f"Flap {n}", server.port)
                withdraw(bridge, f"Flap {n}")
            await until(lambda: server.accepted == 20)
            await asyncio.sleep(0.3)
            assert len(bridge.core) == 0
            assert bridge.outcomes["new"] == 0  # no row listed for a moment either
            await until(lambda: server.open == 0 and not bridge._connections, 3.0)
    run(scenario)


def test_a_withdrawn_service_left_its_host_behind_for_ever() -> None:
    """Every service ever described kept an entry (its name) in the bridge: random names
    advertised and withdrawn grew memory without bound."""
    async def scenario() -> None:
        async with rig(describe_answered) as (bridge, server):
            follow(bridge, "Stage", server.port)
            await until(lambda: len(bridge.engine) == 1)
            withdraw(bridge, "Stage")
            await until(lambda: len(bridge.engine) == 0)
            assert bridge._hosts == {}
    run(scenario)


async def forging(server: Server, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    writer.write(answer(await cseq_of(reader)))
    await asyncio.sleep(0.2)
    body = sdp_text(session=7, version=2, name="Stage v2", origin=LOOPBACK).encode()
    writer.write(b"ANNOUNCE rtsp://10.66.66.66:554/by-name/Other RTSP/1.0\r\nCSeq: 1\r\n"
                 b"Content-Type: application/sdp\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_an_announce_listed_the_url_the_server_wrote_not_where_it_came_from() -> None:
    """An ANNOUNCE's request URL is the server's to write: the row showed
    rtsp://10.66.66.66/... as where a session from 127.0.0.1 came from."""
    async def scenario() -> None:
        async with rig(forging) as (bridge, server):
            follow(bridge, "Stage", server.port)
            await until(lambda: [r.name for r in bridge.engine.records()] == ["Stage v2"])
            (row,) = bridge.engine.records()
            assert row.options["rtsp_url"] == f"rtsp://{LOOPBACK}:{server.port}/by-name/Stage"
    run(scenario)


OPTIONS = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"


async def flooding(server: Server, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    writer.write(answer(await cseq_of(reader)))
    for _ in range(400):  # 12 MB of requests, never reading an answer
        writer.write(OPTIONS * 1000)
        await writer.drain()


def test_a_server_that_never_reads_grew_our_unsent_replies_without_bound() -> None:
    """A server sending requests (each answered 501) and never reading the answers: the
    answers piled up in sapd's memory, ~1.8 bytes for each byte it sent."""
    async def scenario() -> None:
        async with rig(flooding) as (bridge, server):
            follow(bridge, "Stage", server.port)
            await until(lambda: len(bridge.engine) == 1)
            peak = 0
            for _ in range(300):
                connection = bridge._connections.get("Stage")
                if connection is None:
                    break
                peak = max(peak, connection.writer.transport.get_write_buffer_size())
                await asyncio.sleep(0.02)
            assert peak <= 256 * 1024, f"{peak} bytes of replies held"
            assert bridge.core.refusals[core.REPLIES_UNREAD] >= 1
    run(scenario)


def announce_request(version: int) -> bytes:
    body = sdp_text(session=7, version=version, name=f"Stage v{version}",
                    origin=LOOPBACK).encode()
    return (b"ANNOUNCE rtsp://peer/by-name/Stage RTSP/1.0\r\nCSeq: 1\r\n"
            b"Content-Type: application/sdp\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_an_announce_flood_wrote_thousands_of_changes_a_second() -> None:
    """15,806 changed SDPs in 3 s from one server (a store write, an event and a log line
    each); SAP takes 100 a second from one source. After the flood the latest is listed
    (the row was put off, never dropped)."""
    latest = [1]

    async def flood(server: Server, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        cseq = await cseq_of(reader)
        if server.accepted > 1:  # a later DESCRIBE: the latest
            writer.write(answer(cseq, announce_request(latest[0]).split(b"\r\n\r\n", 1)[1]))
            return
        writer.write(answer(cseq))
        drained = asyncio.ensure_future(reader.read())  # our 200s to its ANNOUNCEs
        for _ in range(60):
            writer.write(b"".join(announce_request(latest[0] + n) for n in range(1, 51)))
            latest[0] += 50
            await writer.drain()
            await asyncio.sleep(0.01)
        await drained

    async def scenario() -> None:
        async with rig(flood) as (bridge, server):
            follow(bridge, "Stage", server.port)
            await until(lambda: latest[0] == 3001, 10)
            changed = bridge.outcomes["changed"]
            assert changed <= 500, f"{changed} changes taken from one flood"
            assert bridge.core.refusals["rate_limited"] >= 1
            await until(lambda: [r.name for r in bridge.engine.records()]
                        == [f"Stage v{latest[0]}"], 5)
    run(scenario)


async def closing(server: Server, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    writer.write(answer(await cseq_of(reader)))
    await writer.drain()
    writer.close()


def test_a_server_closing_after_each_answer_was_reconnected_in_a_busy_loop() -> None:
    """3,014 connections and DESCRIBEs in 2 s to one server that closes after answering."""
    async def scenario() -> None:
        async with rig(closing) as (bridge, server):
            follow(bridge, "Stage", server.port)
            await asyncio.sleep(2.0)
            assert server.accepted <= 4, f"{server.accepted} connections in 2 s"
            assert len(bridge.engine) == 1
    run(scenario)
