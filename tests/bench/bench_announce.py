"""Announcing: time from a publish request to the first packet on the wire, and the CPU
share of sapd keeping 1,000 local sessions announced on the aes67 profile.

Run: .venv/bin/python -m tests.bench.bench_announce   (no root: it announces on lo)
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from sapd import wire
from tests.bench.common import percentile, report
from tests.daemons import Daemon
from tests.support import ROOT, script

PORT = 19877
GROUP = "239.255.255.255"
EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()
CPU_WINDOW = 60.0


def sdp(n: int) -> str:
    return (EXAMPLE.replace("3917001234", str(100_000 + n))
            .replace("Lab tone 1 kHz", f"bench stream {n}")
            .replace("239.255.10.1", f"239.255.{40 + n // 250}.{n % 250 + 1}"))


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((GROUP, PORT))
    lo = socket.if_nametoindex("lo")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("@4sii", socket.inet_aton(GROUP), 0, lo))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return sock


def wait_packet(sock: socket.socket, name: str, timeout: float = 5.0) -> float:
    """perf_counter() when an announcement naming ``name`` arrives."""
    needle = f"s={name}\r\n".encode(), f"s={name}\n".encode()
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        arrived = time.perf_counter()
        packet = wire.decode(data)
        if not packet.deletion and any(n in packet.payload for n in needle):
            return arrived
        if time.monotonic() > deadline:
            raise TimeoutError(name)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(tmp: Path, label: str, bandwidth: float) -> Daemon:
    label = "".join(c if c.isalnum() else "-" for c in label)
    config = tmp / f"{label}.toml"
    config.write_text(f"port = {PORT}\ngroups = ['{GROUP}']\nprofile = 'aes67'\n"
                      f"[announce]\nbandwidth = {bandwidth}\nttl = 1\n")
    return Daemon("sapd", tmp / label, ["--interface", "lo", "--config", str(config),
                                        "--log-level", "warning"]).start()


def first_packet_latency(tmp: Path) -> None:
    daemon = start(tmp, "latency", 4000.0)
    sock = listener()
    try:
        api = []
        for n in range(100):
            t0 = time.perf_counter()
            daemon.client.send_json("POST", "/v1/announcements", {"sdp": sdp(n)})
            api.append((wait_packet(sock, f"bench stream {n}") - t0) * 1000)
        report("publish request -> first packet, p50 (100 sessions)", percentile(api, 50), "ms")
        report("publish request -> first packet, p99", percentile(api, 99), "ms", "<= 100 ms")
        cli, cli_exit = [], []
        for n in range(100, 120):
            path = tmp / f"s{n}.sdp"
            path.write_text(sdp(n))
            t0 = time.perf_counter()
            proc = subprocess.Popen([script("sapctl"), "--socket", str(daemon.socket),
                                     "announce", str(path)], stdout=subprocess.DEVNULL)
            cli.append((wait_packet(sock, f"bench stream {n}") - t0) * 1000)
            proc.wait()
            cli_exit.append((time.perf_counter() - t0) * 1000)
        report("`sapctl announce` start -> first packet, median (20 runs)",
               statistics.median(cli), "ms", "<= 100 ms")
        report("`sapctl announce` start -> exit, median", statistics.median(cli_exit), "ms")
    finally:
        sock.close()
        daemon.stop()


def cpu_share(tmp: Path, label: str, bandwidth: float) -> None:
    daemon = start(tmp, label, bandwidth)
    sock = listener()
    sock.setblocking(False)
    try:
        for n in range(1000):
            daemon.client.send_json("POST", "/v1/announcements", {"sdp": sdp(n)})
        time.sleep(5)  # past the burst of first announcements
        while True:
            try:
                sock.recv(65536)
            except BlockingIOError:
                break
        assert daemon.proc is not None
        before = cpu_seconds(daemon.proc.pid)
        packets, end = 0, time.monotonic() + CPU_WINDOW
        while time.monotonic() < end:
            try:
                sock.recv(65536)
                packets += 1
            except BlockingIOError:
                time.sleep(0.05)
        used = cpu_seconds(daemon.proc.pid) - before
        interval = daemon.get("/v1/announcements")["announcements"][0]["targets"][0]
        report(f"{label}: announcement interval per session", interval["interval"], "s")
        report(f"{label}: packets on the wire per second", packets / CPU_WINDOW, "per s")
        report(f"{label}: sapd CPU share, 1,000 sessions ({CPU_WINDOW:.0f} s)",
               100 * used / CPU_WINDOW, "% core", "<= 1 %")
    finally:
        sock.close()
        daemon.stop()


def main() -> None:
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        first_packet_latency(tmp)
        # RFC 2974's 4 kbit/s per group spreads 1,000 sessions over minutes; a LAN
        # bandwidth of 10 Mbit/s lets every session go out at the 30 s aes67 floor.
        cpu_share(tmp, "4 kbit/s (RFC default)", 4000.0)
        cpu_share(tmp, "10 Mbit/s (30 s floor)", 10_000_000.0)


if __name__ == "__main__":
    main()
