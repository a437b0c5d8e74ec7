"""The daemons speak systemd's protocol: readiness, status, watchdog, reload and stop
notifications on a real NOTIFY_SOCKET, and a control socket inherited through
LISTEN_FDS from systemd's own socket-activation tool."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, NotifyListener
from tests.support import free_udp_port, need_tool, wait_for

WATCHDOG_USEC = 600_000  # the daemons ping every 0.3 s


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def _joined_on_loopback(group: str) -> bool:
    # /proc/net/igmp lists groups as host-order hex under each interface.
    packed = socket.inet_aton(group)[::-1].hex().upper()
    current = None
    for line in Path("/proc/net/igmp").read_text().splitlines():
        if not line.startswith("\t"):
            current = line.split()[1] if line[0].isdigit() else current
        elif current == "lo" and line.split()[0] == packed:
            return True
    return False


def _start(kind: str, tmp_path: Path, notify: NotifyListener, args: list[str]) -> Daemon:
    need_tool("systemd-socket-activate")
    daemon = Daemon(kind, tmp_path / kind, args, socket_activated=True,
                    env={"NOTIFY_SOCKET": str(notify.path),
                         "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    daemon.start(wait=False)
    # The socket exists before the daemon does (as with sapd.socket); nothing has
    # started yet, so nothing is ready. The first client starts the daemon.
    wait_for(daemon.socket.exists, what="the activation socket")
    time.sleep(0.3)
    assert notify.messages == [] and notify.pending() == 0
    daemon.wait_ready()
    notify.collect(bool)
    return daemon


def _lifecycle(daemon: Daemon, notify: NotifyListener) -> list[dict[str, str]]:
    """Watch the keep-alives, reload, stop; return every notification."""
    try:
        notify.collect(lambda m: sum("WATCHDOG" in x for x in m) >= 3
                       and any(list(x) == ["STATUS"] for x in m))
        daemon.signal(signal.SIGHUP)
        notify.collect(lambda m: any("RELOADING" in x for x in m)
                       and "READY" in m[-1] and m.index(next(x for x in m if "RELOADING" in x))
                       < len(m) - 1)
        daemon.signal(signal.SIGTERM)
        notify.collect(lambda m: "STOPPING" in m[-1])
        assert daemon.proc is not None and daemon.proc.wait(10) == 0, daemon.logs()
    finally:
        daemon.stop()
    return notify.messages


def _check_order(messages: list[dict[str, str]]) -> None:
    kinds = [next((k for k in ("READY", "RELOADING", "STOPPING", "WATCHDOG") if k in m),
                  "STATUS") for m in messages]
    assert kinds[0] == "READY", kinds
    assert messages[0]["STATUS"], "READY carries a one-line status"
    assert "STATUS" in kinds and "WATCHDOG" in kinds, kinds
    reloading = kinds.index("RELOADING")
    assert "READY" in kinds[reloading + 1:], "READY=1 again after a reload"
    assert "MONOTONIC_USEC" in messages[reloading]
    assert kinds[-1] == "STOPPING" and kinds.count("STOPPING") == 1, kinds


def test_sapd_notifies_and_uses_the_inherited_socket(tmp_path: Path,
                                                     notify: NotifyListener) -> None:
    daemon = _start("sapd", tmp_path, notify, ["--interface", "lo"])
    try:
        # READY=1 came only once the groups were joined and the store was open.
        assert _joined_on_loopback("224.2.127.254")
        assert "session" in notify.messages[0]["STATUS"]
        assert not daemon.unused_socket.exists(), "created its own socket"
        messages = _lifecycle(daemon, notify)
    finally:
        daemon.stop()
    _check_order(messages)
    assert (daemon.state / "directory.sqlite3").exists() or any(daemon.state.iterdir())


def test_madcapd_notifies_and_uses_the_inherited_socket(tmp_path: Path,
                                                        notify: NotifyListener) -> None:
    daemon = _start("madcapd", tmp_path, notify,
                    ["--listen", f"127.0.0.1:{free_udp_port()}",
                     "--sapd-socket", str(tmp_path / "no-sapd.sock")])
    assert "leases" in notify.messages[0]["STATUS"]
    assert not daemon.unused_socket.exists(), "created its own socket"
    assert daemon.get("/v1/scopes")["scopes"]
    _check_order(_lifecycle(daemon, notify))
