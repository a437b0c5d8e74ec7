"""Test helpers: what a test needs from the machine, and how to say it is missing.

In CI (CI=true) a missing requirement fails the test; elsewhere it skips with a
one-line reason, so a developer without root or ffmpeg still gets a useful run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI requires it: {reason}", pytrace=False)
    pytest.skip(reason)


def need_root() -> None:
    if os.geteuid() != 0:
        missing("needs root (network namespaces)")
    if not shutil.which("ip"):
        missing("needs iproute2's ip")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"needs {name} (apt-get install {name})")
        raise AssertionError("unreachable")
    return path


def script(name: str) -> str:
    """Path of one of our console scripts, in the running interpreter's environment."""
    path = BIN / name
    return str(path) if path.exists() else name


def run(*args: str, check: bool = False, input: bytes | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=input is None, input=input,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result  # type: ignore[return-value]


def wait_for(predicate: Callable[[], object], timeout: float = 5.0,
             interval: float = 0.02, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    need_root()
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:  # unbuffered: nothing left to flush (and fail) at close
            out.write(b"\0" * 4096)
    return filler


@dataclass
class FakeTime:
    """Both clocks a SteadyClock reads, set by hand (unit tests of clock steps)."""

    wall_now: float = 1_800_000_000.0
    monotonic_now: float = 1000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.monotonic_now
