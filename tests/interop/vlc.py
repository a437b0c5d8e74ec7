"""Run VLC 3.0 (Debian's vlc-bin) as a peer inside a network namespace.

VLC refuses to run as root, so it runs as ``nobody`` with a HOME of its own; setpriv
(not runuser) drops the privileges because it execs VLC itself: the process a test
holds is VLC's, and SIGTERM reaches it directly.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.netns.harness import sh
from tests.support import missing, need_tool, wait_for

VLC_USER = "nobody"
# "|   4 - NAME (00:00:00) [played 1 time]": indentation shows the tree
_PLAYLIST_ITEM = re.compile(
    r"^\|( *)\d+ - (.*?)(?: \(\d\d:\d\d:\d\d\))?(?: \[played \d+ times?\])?$")

# Asks VLC's rc interface one command inside a namespace and prints what it answers
# until it has been quiet for a moment (rc has no end-of-reply marker).
_RC_QUERY = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
sock.sendall(sys.argv[2].encode() + b"\\n")
sock.settimeout(0.5)
out = b""
try:
    while chunk := sock.recv(65536):
        out += chunk
except TimeoutError:
    pass
sys.stdout.write(out.decode(errors="replace"))
"""


def need_vlc() -> str:
    cvlc = need_tool("cvlc")
    if not list(Path("/usr/lib").glob("*/vlc/plugins/services_discovery/libsap_plugin.so")):
        missing("needs VLC's SAP plugins (apt-get install vlc-plugin-base)")
    return cvlc


@contextmanager
def vlc_home() -> Iterator[Path]:
    """A directory VLC's user owns: its HOME, and where its input files go."""
    need_vlc()
    home = Path(tempfile.mkdtemp(prefix="sapd-vlc-"))
    user = pwd.getpwnam(VLC_USER)
    os.chown(home, user.pw_uid, user.pw_gid)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def vlc_command(netns: str, home: Path, *args: str) -> list[str]:
    user = pwd.getpwnam(VLC_USER)
    return ["ip", "netns", "exec", netns, "setpriv", f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}", "--clear-groups", "env", f"HOME={home}",
            need_tool("cvlc"), "--no-color", "--no-dbus", *args]


def start_vlc(netns: str, home: Path, *args: str) -> subprocess.Popen[bytes]:
    log = (home / "vlc.log").open("ab")
    proc = subprocess.Popen(vlc_command(netns, home, *args), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    log.close()
    return proc


def stop_vlc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def vlc_log(home: Path) -> str:
    path = home / "vlc.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def tone_file(home: Path, seconds: int = 120) -> Path:
    """An MPEG audio (mp2) tone made by FFmpeg, which VLC sends as RTP without
    transcoding: VLC 3.0.24's ``#transcode{acodec=mpga}`` (twolame) stalled after its
    first RTP packet and SAP announcement in 3 of 4 runs on a loaded machine here."""
    ffmpeg = need_tool("ffmpeg")
    path = home / "tone.mp2"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-c:a", "mp2",
                    "-b:a", "128k", str(path)], check=True, timeout=60)
    path.chmod(0o644)
    return path


def rc(netns: str, port: int, command: str) -> str:
    """One command on VLC's rc interface (``--rc-host 127.0.0.1:PORT``) in ``netns``."""
    result = sh(netns, sys.executable, "-c", _RC_QUERY, str(port), command)
    return result.stdout


def sap_playlist(netns: str, port: int) -> list[str]:
    """The names VLC's SAP discovery lists: the items under its "Network streams (SAP)"
    node of the rc ``playlist`` answer, in order, repeats kept."""
    names: list[str] = []
    depth: int | None = None
    for line in rc(netns, port, "playlist").splitlines():
        match = _PLAYLIST_ITEM.match(line)
        if match is None:
            continue
        indent, name = len(match.group(1)), match.group(2)
        if depth is not None and indent > depth:
            names.append(name)
        else:
            depth = indent if name == "Network streams (SAP)" else None
    return names


def wait_rc_ready(netns: str, port: int, proc: subprocess.Popen[bytes], home: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"VLC exited {proc.returncode}:\n{vlc_log(home)}")
        return "+----[" in rc(netns, port, "playlist")
    wait_for(ready, 15, interval=0.3, what="VLC's rc interface")


__all__ = ["rc", "sap_playlist", "start_vlc", "stop_vlc", "tone_file", "vlc_home", "vlc_log",
           "wait_rc_ready"]
