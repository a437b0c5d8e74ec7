"""The shared receiver over real sockets, overflowing: what the kernel drops for a full
receive buffer is counted (SO_MEMINFO), and how long datagrams wait in the kernel is
known (SIOCGSTAMP), so sapd can shed load before it drops (issue 20)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sapd.plumbing.multicast import MulticastReceiver

SMALL_BUFFER = 8192  # a few datagrams' worth: the kernel drops the rest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def opened(loop: asyncio.AbstractEventLoop, got: list[Any],
           **options: Any) -> MulticastReceiver:
    receiver = MulticastReceiver(loop, [], free_port(), got.append, pktinfo=True,
                                 families=[4], **options)
    receiver.open()
    time.sleep(0.1)  # the kernel stamps datagrams from shortly after it was asked to
    return receiver


def send(port: int, count: int, size: int = 600) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(count):
            sender.sendto(b"x" * size, ("127.0.0.1", port))


def run_a_while(loop: asyncio.AbstractEventLoop, seconds: float = 0.2) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def test_datagrams_the_kernel_dropped_for_a_full_buffer_went_uncounted(
        loop: asyncio.AbstractEventLoop) -> None:
    """234,243 datagrams of a flood were dropped by the kernel and counted nowhere."""
    got: list[Any] = []
    receiver = opened(loop, got, receive_buffer=SMALL_BUFFER)
    try:
        send(receiver.port, 300)  # nobody reads meanwhile: the buffer overflows
        run_a_while(loop)
        assert receiver.kernel_drops > 0
        assert len(got) + receiver.kernel_drops == 300  # also those after the last read
    finally:
        receiver.close()


def test_a_receiver_behind_did_not_know_how_long_datagrams_had_waited(
        loop: asyncio.AbstractEventLoop) -> None:
    got: list[Any] = []
    receiver = opened(loop, got, drain_budget=0.0)  # one look at the clock a wake-up
    try:
        send(receiver.port, 200)
        time.sleep(0.1)
        assert receiver.queue_delay() == 0.0  # nothing read yet: not known to be behind
        run_a_while(loop, 0)  # a wake-up or two, 32 datagrams each
        assert len(got) < 200
        assert 0.1 <= receiver.queue_delay() < 5
        run_a_while(loop)  # drained to the end: caught up
        assert len(got) == 200
        assert receiver.queue_delay() == 0.0
    finally:
        receiver.close()
