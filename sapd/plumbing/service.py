"""What every daemon's main() does: event loop choice, signals, run until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import gc
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from sapd.plumbing import logs, systemd
from sapd.plumbing.config import ConfigError
from sapd.plumbing.control import SocketInUse
from sapd.plumbing.errors import StoreUnusable

log = logs.get("service")


class StateInUse(RuntimeError):
    """Another daemon holds the state directory."""


PRIVATE_UMASK = 0o077  # as the units' UMask=: databases, -wal/-shm, lock: owner only


def private_state(directory: Path) -> None:
    """Make the state directory's files the daemon's own, as systemd's UMask=0077 does:
    files created from now on (SQLite's -wal and -shm take their database's mode) and
    the ones an older daemon left readable by all. The control socket sets its own."""
    os.umask(PRIVATE_UMASK)
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) & PRIVATE_UMASK:
                path.chmod(stat.S_IMODE(mode) & ~PRIVATE_UMASK)


def lock_state(directory: Path, wait: float = 10.0) -> int:
    """Hold an exclusive lock on a state directory for as long as the returned
    descriptor, in this process or a child that inherits it, stays open. A new daemon
    thus waits for the store process of a killed one to commit what it received, and
    a second daemon on the same state gives up after ``wait`` seconds."""
    path = directory / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not waited:
                log.info("state directory locked; waiting", lock=str(path), seconds=wait)
                waited = True
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StateInUse(f"{directory} is in use by another daemon (it holds "
                                 f"{path}); stop it or give this one another state "
                                 "directory") from None
            time.sleep(0.05)


class Service:
    """What both daemons share: start, run until asked to stop, stop."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self.start()
        await self._stop.wait()
        await self.stop()

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def reload(self, path: str | None, overrides: dict[str, Any]) -> None:
        raise NotImplementedError


def daemon_parser(prog: str, description: str, version: str,
                  state_help: str) -> argparse.ArgumentParser:
    """The flags every daemon has; each adds its own."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--state-dir", help=state_help)
    p.add_argument("--socket", help="control socket path")
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--web", metavar="HOST:PORT",
                   help="serve the read-only web view and GET API over TCP here "
                        "(like [web] listen; off by default)")
    p.add_argument("--version", action="version", version=f"{prog} {version}")
    return p


def main(prog: str, config_path: str | None, overrides: dict[str, Any],
         load: Callable[[str | None, dict[str, Any]], Any],
         make: Callable[[Any], Service]) -> int:
    """Load the configuration (exit 2 naming the bad key), set up logging, run."""
    try:
        config = load(config_path, overrides)
    except ConfigError as exc:
        print(f"{prog}: configuration: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_format, config.log_level)
    daemon = make(config)
    code = run(daemon, getattr(config, "event_loop", "auto"),
               lambda: daemon.reload(config_path, overrides))
    if not code:
        log.info("stopped", pid=os.getpid())
    return code


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when available (or asked for), else asyncio's default loop."""
    if choice in ("auto", "uvloop"):
        try:
            # Imported here for start-up time: only the loop that is chosen is loaded.
            import uvloop  # noqa: PLC0415

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        except ImportError:
            if choice == "uvloop":
                raise
    return asyncio.new_event_loop()


def run(service: Service, loop_choice: str,
        reload: Callable[[], Coroutine[object, object, None]]) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP calls ``reload``. Exit 1 if it cannot start."""
    loop = new_event_loop(loop_choice)
    asyncio.set_event_loop(loop)
    tune_collector()
    loop.add_signal_handler(signal.SIGTERM, service.request_stop)
    loop.add_signal_handler(signal.SIGINT, service.request_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    try:
        loop.run_until_complete(service.run())
    except (SocketInUse, StateInUse, StoreUnusable) as exc:
        log.error("cannot start", error=str(exc))
        return 1
    except OSError as exc:
        log.error("cannot start", error=str(exc), errno=exc.errno)
        return 1
    finally:
        loop.close()
    return 0


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has finished."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tune_collector() -> None:
    """Fewer young collections: each new session allocates dozens of objects that live on."""
    gc.set_threshold(10_000, 10, 10)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """For loading state: everything made is long-lived, so the collections its growth
    triggers (~10 % of loading 100,000 sessions) find nothing; settle_memory() after it
    collects once."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def settle_memory() -> None:
    """After loading state or a burst of ingest: move what survived out of the cyclic
    collector's way (the directory is long-lived; scanning it on every full collection
    costs ~10% of ingest time) and hand freed heap pages back to the kernel, which
    glibc otherwise keeps, so RSS reflects what is live.

    Only what is not yet frozen is collected: a full collection over 100,000 sessions
    stalls the loop ~190 ms, long enough to overflow a receive buffer. What is alive
    at a settle is the directory and the daemon's own long-lived state."""
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


class MemorySettler:
    """settle_memory() again after every ``every`` new long-lived records (sessions,
    leases), so full collections never rescan them. After the first settle one costs
    ~3 ms per 10,000 leases; a full collection over 300,000 took ~270 ms.

    And once when a burst of at least ``every // 10`` ends (the count stops moving and
    the caller is idle): what a burst queued on its way to the store is freed by then,
    and RSS comes back down (267 -> ~185 MB after 100,000 sessions at 10,000/s)."""

    def __init__(self, count: int, every: int = 10_000,
                 settle: Callable[[], None] | None = None) -> None:
        self.every = every
        self._settle = settle or settle_memory
        self._settled_at = count
        self._last = count

    def note(self, count: int, idle: bool = True) -> None:
        """``count``: records made so far (a counter that only grows)."""
        grown = count - self._settled_at
        burst_over = idle and count == self._last and grown >= self.every // 10
        if grown >= self.every or burst_over:
            self._settled_at = count
            self._settle()
        self._last = count


async def watchdog(notifier: systemd.Notifier, interval: float) -> None:
    """WATCHDOG=1 from the event loop itself, so a wedged loop stops the keep-alives."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
