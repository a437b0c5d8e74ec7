"""Real RAVENNA-side peers in a network namespace: avahi-daemon (with a D-Bus of its
own, in a private mount namespace), avahi-publish advertising sessions, GStreamer's RTSP
server (tests/tools/gst_rtsp_peer.py under Debian's python3), and scripted RTSP servers
(tests/tools/rtsp_script_peer.py) for what GStreamer never does (ANNOUNCE, hostility)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import ROOT, missing, need_tool, wait_for

SUBTYPE = "_ravenna_session._sub._rtsp._tcp"
SYSTEM_PYTHON = "/usr/bin/python3"


def need_peers() -> None:
    for tool in ("avahi-daemon", "avahi-publish", "dbus-daemon", "unshare", "nsenter"):
        need_tool(tool)
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version("
                            "'GstRtspServer', '1.0'); from gi.repository import "
                            "GstRtspServer"], capture_output=True, check=False)
    if probe.returncode != 0:
        missing("needs GStreamer's RTSP server for python3 (apt-get install python3-gi "
                "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good)")


class Avahi:
    """avahi-daemon in ``netns`` with a private /run/dbus and /run/avahi-daemon."""

    def __init__(self, netns: str, workdir: Path) -> None:
        self.netns = netns
        self.workdir = workdir
        self.log = open(workdir / f"avahi-{netns}.log", "ab")  # noqa: SIM115
        bus = tempfile.mkdtemp(prefix="dbus-", dir=workdir)
        script = (f"mount --bind {bus} /run/dbus && mkdir -p /run/avahi-daemon && "
                  "mount -t tmpfs tmpfs /run/avahi-daemon && "
                  f"dbus-daemon --system --fork --nopidfile --print-pid > {workdir}/dbus.pid && "
                  "exec avahi-daemon --no-chroot --no-rlimits --no-drop-root")
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "-m", "sh",
                                      "-c", script], stdout=self.log, stderr=self.log)
        self.published: list[subprocess.Popen[bytes]] = []
        wait_for(self._running, 10, what="avahi-daemon up")

    def _running(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"avahi-daemon ended: {self._log_text()}")
        return "Server startup complete" in self._log_text()

    def _log_text(self) -> str:
        return (self.workdir / f"avahi-{self.netns}.log").read_text(errors="replace")

    def _inside(self) -> list[str]:
        """Run in avahi's mount and network namespaces (its D-Bus)."""
        return ["nsenter", "-t", str(self._daemon_pid()), "-m", "-n"]

    def _daemon_pid(self) -> int:
        # sh exec'd avahi-daemon: the process ip netns exec started is it (unshare execs)
        return self.proc.pid

    def publish(self, name: str, port: int, host: str | None = None
                ) -> subprocess.Popen[bytes]:
        """Advertise a session; ``host``: a host name of ours (publish_address) as its
        SRV target instead of this host's."""
        target = ["-H", host] if host is not None else []
        proc = subprocess.Popen([*self._inside(), "avahi-publish", "-s", *target,
                                 f"--subtype={SUBTYPE}", name, "_rtsp._tcp", str(port)],
                                stdout=self.log, stderr=self.log)
        self.published.append(proc)
        wait_for(lambda: f"Established under name '{name}'" in self._log_text()
                 or proc.poll() is not None, 10, what=f"{name} published")
        assert proc.poll() is None, self._log_text()
        return proc

    def publish_address(self, host: str, address: str) -> subprocess.Popen[bytes]:
        """An A record: ``host`` (a .local name) is at ``address``, whatever that is."""
        proc = subprocess.Popen([*self._inside(), "avahi-publish", "-a", "-R", host, address],
                                stdout=self.log, stderr=self.log)
        self.published.append(proc)
        wait_for(lambda: f"Established under name '{host}'" in self._log_text()
                 or proc.poll() is not None, 10, what=f"{host} published")
        assert proc.poll() is None, self._log_text()
        return proc

    def withdraw(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)  # avahi-publish sends the goodbye (TTL 0)
        proc.wait(5)

    def close(self) -> None:
        for proc in (*self.published, self.proc):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        with contextlib.suppress(OSError, ValueError):  # the bus we forked
            os.kill(int((self.workdir / "dbus.pid").read_text().split()[0]), signal.SIGTERM)
        self.log.close()


class GstPeer:
    """GStreamer's RTSP server serving one multicast L24 session."""

    def __init__(self, netns: str, workdir: Path, name: str, port: int) -> None:
        self.log_path = workdir / f"gst-{port}.log"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, SYSTEM_PYTHON,
             str(ROOT / "tests/tools/gst_rtsp_peer.py"), "--port", str(port), "--name", name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log_path, "ab"),  # noqa: SIM115
            text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"gst peer: {line!r} {self.log_path.read_text()}"

    def channels(self, count: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"channels {count}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == f"channels {count}"

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ScriptPeer:
    """A scripted RTSP server (tests/tools/rtsp_script_peer.py) in ``netns``, run by our
    own interpreter; ``mode`` says how it answers."""

    def __init__(self, netns: str, workdir: Path, mode: str, port: int,
                 sdp_path: Path | None = None) -> None:
        args = [sys.executable, str(ROOT / "tests/tools/rtsp_script_peer.py"), "--mode", mode,
                "--port", str(port)]
        if sdp_path is not None:
            args += ["--sdp", str(sdp_path)]
        self.log_path = workdir / f"script-{mode}-{port}.log"
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.log_path, "ab"), text=True,  # noqa: SIM115
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"script peer: {line!r} {self.log_path.read_text()}"

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def have_unshare() -> bool:
    return shutil.which("unshare") is not None
