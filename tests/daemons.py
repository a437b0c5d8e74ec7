"""Start our daemons as real processes (optionally inside a network namespace) and
talk to them the way users do: over the control socket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from sapd.plumbing.client import ClientError, UnixClient
from tests.support import ROOT, script, wait_for


class Daemon:
    """One sapd or madcapd process. Logs go to a file shown when a test fails."""

    def __init__(self, name: str, workdir: Path, args: list[str], netns: str | None = None,
                 env: dict[str, str] | None = None, socket_activated: bool = False) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / f"{name}.sock"
        self.state = workdir / "state"
        self.log_path = workdir / f"{name}.log"
        self.args = args
        self.netns = netns
        self.env = env
        # Like a .socket unit: systemd-socket-activate binds the control socket and starts
        # the daemon on the first connection, handing it over as fd 3 (LISTEN_FDS). The
        # daemon's own --socket then points somewhere else, so using it would show.
        self.socket_activated = socket_activated
        self.unused_socket = workdir / "not-inherited.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False  # by the test, on purpose: its exit code then says nothing

    @property
    def command(self) -> list[str]:
        own_socket = self.unused_socket if self.socket_activated else self.socket
        cmd = [script(self.name), "--state-dir", str(self.state), "--socket", str(own_socket),
               "--log-format", "json", *self.args]
        if self.socket_activated:
            passed = ["PYTHONUNBUFFERED", *(self.env or {})]
            cmd = ["systemd-socket-activate", "-l", str(self.socket),
                   *(f"-E{name}" for name in passed), *cmd]
        return (["ip", "netns", "exec", self.netns, *cmd]) if self.netns else cmd

    def start(self, wait: bool = True, timeout: float = 10.0) -> Daemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.killed = False
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=log, env=env,
                                     cwd=str(ROOT))
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.logs()}")
            try:
                # degraded is up and answering, with a reason the test may check
                return self.client.get_json("/v1/health")["status"] in ("ok", "degraded")
            except (ClientError, OSError):
                return False
        wait_for(ready, timeout, what=f"{self.name} ready")

    @property
    def client(self) -> UnixClient:
        return UnixClient(self.socket, timeout=10)

    def get(self, path: str) -> Any:
        return self.client.get_json(path)

    def sessions(self, query: str = "") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/v1/sessions" + query)["sessions"]
        return result

    def all_sessions(self, query: str = "") -> list[dict[str, Any]]:
        """Every listed session, a page of 1,000 (the API's largest) at a time."""
        found: list[dict[str, Any]] = []
        joiner = "&" if query else "?"
        while True:
            page = self.sessions(f"{query}{joiner}limit=1000&offset={len(found)}")
            found += page
            if len(page) < 1000:
                return found

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/v1/stats")
        return result

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, like a crash (inside a namespace the child of `ip netns exec` is sapd
        itself: ip execs it)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.killed = True

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.logs()}") from None


class NotifyListener:
    """The receiving end of NOTIFY_SOCKET, as systemd binds it: AF_UNIX datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def collect(self, until: Any, timeout: float = 10.0) -> list[dict[str, str]]:
        """Read messages until ``until(messages)`` holds; return them all."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"notify messages so far: {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)
        return self.messages

    def pending(self) -> int:
        """Datagrams waiting, unread."""
        self.sock.settimeout(0)
        try:
            return len(self.sock.recv(4096, socket.MSG_PEEK))
        except BlockingIOError:
            return 0

    def close(self) -> None:
        self.sock.close()


def send_local_multicast(data: bytes, group: str = "224.2.127.254", port: int = 9875) -> None:
    """Send one datagram to a group on the loopback interface (no root needed)."""
    v6 = ":" in group
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        lo = socket.if_nametoindex("lo")
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, lo)
            sock.sendto(data, (group, port, 0, lo))
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            struct.pack("@4s4si", b"\0" * 4, b"\0" * 4, lo))
            sock.sendto(data, (group, port))
    finally:
        sock.close()


def netns_send(netns: str, group: str, files: list[Path], iface: str, ttl: int = 16,
               repeat: int = 1, interval: float = 0.0, port: int = 9875) -> None:
    subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "tests.tools.udpsend",
                    group, str(port), *map(str, files), "--iface", iface, "--ttl", str(ttl),
                    "--repeat", str(repeat), "--interval", str(interval)],
                   check=True, cwd=str(ROOT), timeout=60)


def wait_session(daemon: Daemon, predicate: Any, timeout: float = 5.0,
                 query: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def check() -> bool:
        nonlocal found
        found = [s for s in daemon.sessions(query) if predicate(s)]
        return bool(found)
    wait_for(check, timeout, what="session")
    return found


def elapsed_until(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    wait_for(predicate, timeout, interval=0.02)
    return time.monotonic() - start


class Stoppable(Protocol):
    name: str
    killed: bool

    def stop(self) -> int: ...
    def logs(self) -> str: ...


def stop_daemons(daemons: list[Stoppable]) -> None:
    """Stop every daemon a test started (all of them, whatever one of them does), then
    fail if one did not stop on SIGTERM or ended with a failed exit code, unless the
    test killed it on purpose."""
    failures: list[str] = []
    for daemon in daemons:
        try:
            code = daemon.stop()
        except AssertionError as exc:
            failures.append(str(exc))
            continue
        if code != 0 and not daemon.killed:
            failures.append(f"{daemon.name} exited {code}:\n{daemon.logs()}")
    assert not failures, "\n\n".join(failures)


def collect_events(daemon: Daemon, count: int) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """Read ``count`` events from the daemon's jsonl event stream on a thread of its own,
    once it is subscribed; join the thread, then look at the list."""
    lines: list[dict[str, Any]] = []

    def consume() -> None:
        for line in daemon.client.stream_lines("/v1/events?format=jsonl"):
            if line.strip():
                lines.append(json.loads(line))
            if len(lines) >= count:
                return
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_for(lambda: daemon.stats()["subscribers"] == 1, 5, what="subscriber")
    return thread, lines
