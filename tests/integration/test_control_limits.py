"""Control socket limits (issue 13 item 9): with the default 1,024 open files, one uid
holding 1,100 connections used to lock every other client out, silently. Now each uid
but root holds at most socket_connections_per_uid, and refusals are answered, logged
and counted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.daemons import Daemon
from tests.support import free_udp_port, need_root, need_tool, script, wait_for

HOLDER = r"""
import json, resource, socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
held, failed = [], 0
deadline = time.monotonic() + 20
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    while True:
        try:
            s.connect(path)
            held.append(s)
            break
        except BlockingIOError:  # the listen backlog is full: wait for the daemon
            if time.monotonic() > deadline:
                failed += 1
                s.close()
                break
            time.sleep(0.005)
time.sleep(1)  # let refusals arrive
refused = 0
for s in held:
    s.setblocking(False)
    try:
        if s.recv(64).startswith(b"HTTP/1.1 503"):
            refused += 1
    except BlockingIOError:
        pass
print(json.dumps({"connected": len(held), "failed": failed, "refused": refused}), flush=True)
sys.stdin.read()  # hold every connection until the test is done
"""


class SmallNofile(Daemon):
    """sapd started with the default soft and hard limit of 1,024 open files."""

    @property
    def command(self) -> list[str]:
        return ["prlimit", "--nofile=1024:1024", "--", *super().command]


def as_user(user: str, *args: str) -> list[str]:
    return ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *args]


def metric(daemon: Daemon, name: str) -> float:
    for line in daemon.client.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def test_one_uid_holding_1100_connections_does_not_lock_out_other_uids(
        tmp_path: Path) -> None:
    need_root()
    need_tool("prlimit")
    need_tool("setpriv")
    runtime = Path(tempfile.mkdtemp(prefix="sapd-conn-", dir="/tmp"))
    runtime.chmod(0o755)
    config = tmp_path / "sapd.toml"
    config.write_text('socket_group = "nogroup"\n')
    daemon = SmallNofile("sapd", tmp_path / "d", ["--interface", "lo", "--config", str(config)])
    daemon.socket = runtime / "sapd.sock"
    holder: subprocess.Popen[str] | None = None
    try:
        daemon.start()
        holder = subprocess.Popen(as_user("nobody", sys.executable, "-c", HOLDER,
                                          str(daemon.socket), "1100"),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        held = json.loads(holder.stdout.readline())
        assert held["connected"] + held["failed"] == 1100
        started = time.monotonic()
        other = subprocess.run(as_user("daemon", script("sapctl"), "--socket",
                                       str(daemon.socket), "list", "--json"),
                               capture_output=True, text=True, timeout=30, check=False,
                               env={**os.environ, "HOME": "/tmp"})
        assert other.returncode == 0, other.stderr  # another uid is still served
        assert time.monotonic() - started < 5
        assert daemon.get("/v1/health")["status"] == "ok"  # and root
        assert held["connected"] - held["refused"] == 64, held  # the default cap per uid
        refused = 1100 - 64 - held["failed"]
        control = daemon.stats()["control"]
        assert control["refused"] == {"per_uid": refused}
        assert control["max_per_uid"] == 64
        assert metric(daemon, 'sapd_control_refused_total{reason="per_uid"}') == refused
        shown = subprocess.run([script("sapctl"), "--socket", str(daemon.socket), "stats"],
                               capture_output=True, text=True, timeout=30, check=False)
        assert f"refused: per_uid={refused}" in shown.stdout, shown.stdout
        lines = [e for e in daemon.log_events()
                 if e.get("event") == "control connection refused"]
        assert lines and lines[0]["uid"] == 65534  # logged, but not 1,036 times
        assert len(lines) <= 3
        # As nobody sees it: a JSON 503 that says why.
        seen = subprocess.run(as_user("nobody", script("sapctl"), "--socket",
                                      str(daemon.socket), "list"), capture_output=True,
                              text=True, timeout=30, check=False,
                              env={**os.environ, "HOME": "/tmp"})
        assert seen.returncode == 1 and "socket_connections_per_uid" in seen.stderr
        holder.communicate("", timeout=30)
        holder = None
        wait_for(lambda: daemon.stats()["control"]["connections"] <= 1, 5,
                 what="held connections released")
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)


def test_madcapd_caps_connections_per_uid_as_configured(tmp_path: Path) -> None:
    need_root()
    need_tool("setpriv")
    runtime = Path(tempfile.mkdtemp(prefix="madcapd-conn-", dir="/tmp"))
    runtime.chmod(0o755)
    config = tmp_path / "madcapd.toml"
    config.write_text('socket_group = "nogroup"\nsocket_connections_per_uid = 3\n')
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{free_udp_port()}",
                                                "--config", str(config), "--sapd-socket",
                                                str(tmp_path / "none.sock")])
    daemon.socket = runtime / "madcapd.sock"
    holder: subprocess.Popen[str] | None = None
    try:
        daemon.start()
        holder = subprocess.Popen(as_user("nobody", sys.executable, "-c", HOLDER,
                                          str(daemon.socket), "10"),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        held = json.loads(holder.stdout.readline())
        other = subprocess.run(as_user("daemon", script("madcapctl"), "--socket",
                                       str(daemon.socket), "leases", "--json"),
                               capture_output=True, text=True, timeout=30, check=False,
                               env={**os.environ, "HOME": "/tmp"})
        assert other.returncode == 0, other.stderr
        assert held == {"connected": 10, "failed": 0, "refused": 7}
        assert daemon.stats()["control"]["refused"] == {"per_uid": 7}
        assert metric(daemon, 'madcap_control_refused_total{reason="per_uid"}') == 7
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)
