"""sapd receive figures, from one run on loopback multicast (no root needed).

- re-announcement ingest rate of a running sapd, as a ratio to a bare recvmsg loop with
  the same ancillary data (IP_PKTINFO, as sapd reads it) measured in the same run with
  the same flood; the ratio to a bare recvfrom loop too, and with ``--compare-with TREE``
  the same figures for the sapd of another source tree (the old code), same run;
- loss at 50,000 re-announcements/s;
- new or changed announcements stored per second: engine + SQLite in process (median of
  three runs), and a fresh sapd sent 100,000 new announcements at 10,000/s (with its
  RSS after that burst);
- packet-to-event latency p99 (event stream, JSON lines);
- list p99 and RSS with 100,000 sessions; restart-to-ready with 100,000 sessions;
- new and changed sessions stored per second (in process, and datagrams into a real sapd
  until the rows are committed) over sdp-transform's parse rate of the same SDP, same
  run, for a 7-line SDP and for the 13-line AES67 SDP Dante and RAVENNA devices send
  (the >= 3x target is for the AES67 one);
- a fresh sapd with default caps under a flood of 300,000 unique sessions from 200 IP
  sources: GET /v1/sessions p99 and packet-to-event latency p99 during it, and whether
  every datagram is counted (by sapd, accepted or dropped by reason, or by the kernel's
  receive-buffer overflow counter).

Run: .venv/bin/python -m tests.bench.bench_receive [--ingest-only | --stored-only]
     [--compare-with TREE] [--tree TREE]

``--tree /path/to/old/checkout`` runs every daemon figure against that tree's sapd with
this bench's code, so two releases are compared by one harness, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import multiprocessing
import signal
import socket
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sdp_transform

from sapd.lifecycle import Engine, Limits
from sapd.plumbing import service
from sapd.records import SearchQuery
from sapd.store.sqlite import SqliteDirectory
from sapd.store.writer import StoreWriter
from tests.bench.common import percentile, rate, report
from tests.daemons import Daemon
from tests.packets import aes67_sdp_text, announce, sdp_text
from tests.support import children

SO_RCVBUFFORCE = 33  # not exported by Python's socket module
PORT = 19875
FILL_RATE = 5_000  # new announcements/s filling the directory for lists, RSS, restart
BURST_RATE = 10_000  # new announcements/s sent to a fresh daemon
STORED_RUNS = 3  # the in-process stored rate is the median of this many runs
GROUP = "239.255.255.255"
FLOOD_SESSIONS = 300_000
FLOOD_SOURCES = 200  # IP senders: 127.0.1.1 and up, all on lo
FLOOD_RATE = 50_000  # datagrams/s
# The optional features, off: the figures are sapd's own. The web view and LDAP are off
# without [web] listen and [ldap] url; RAVENNA is on by default, NMOS off unless asked.
FEATURES_OFF = "[ravenna]\nenabled = false\n[nmos]\ndiscover = false\n"


def _sender_socket(bind: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind is not None:  # any 127/8 address is this host's on lo: one IP sender each
        sock.bind((bind, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                    struct.pack("@4s4si", b"\0" * 4, b"\0" * 4, socket.if_nametoindex("lo")))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    return sock


def flood(count: int, rate: float | None, packets: list[bytes]) -> float:
    """Send ``count`` datagrams (cycling ``packets``), paced at ``rate``/s if given."""
    sock = _sender_socket()
    start = time.perf_counter()
    burst = 250
    for i in range(0, count, burst):
        for j in range(i, min(i + burst, count)):
            while True:
                try:
                    sock.sendto(packets[j % len(packets)], (GROUP, PORT))
                    break
                except BlockingIOError:
                    time.sleep(0.0005)
        if rate:
            due = start + (i + burst) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    return time.perf_counter() - start


IP_PKTINFO = 8


def bare_receiver(ready: multiprocessing.Event, done: multiprocessing.Event,  # type: ignore[valid-type]
                  out: multiprocessing.Queue, pktinfo: bool) -> None:  # type: ignore[type-arg]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if pktinfo:  # what sapd asks for: sender, interface and group with each datagram
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    receive = ((lambda: sock.recvmsg(65535, 256)) if pktinfo
               else (lambda: sock.recvfrom(65535)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 * 1024 * 1024)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("0.0.0.0", PORT))
    mreqn = socket.inet_aton(GROUP) + b"\0\0\0\0" + struct.pack("@i",
                                                              socket.if_nametoindex("lo"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    sock.settimeout(0.5)
    ready.set()  # type: ignore[attr-defined]
    count, first, last = 0, 0.0, 0.0
    while True:
        try:
            receive()
        except TimeoutError:
            if done.is_set():  # type: ignore[attr-defined]
                break
            continue
        last = time.perf_counter()
        if not count:
            first = last
        count += 1
    out.put((count, last - first))


def measure_bare(count: int, packets: list[bytes], pktinfo: bool = False) -> tuple[int, float]:
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    queue: multiprocessing.Queue[tuple[int, float]] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=bare_receiver, args=(ready, done, queue, pktinfo))
    proc.start()
    ready.wait(5)
    flood(count, None, packets)
    done.set()
    result = queue.get(timeout=30)
    proc.join(10)
    return result


def refreshes(daemon: Daemon) -> int:
    return int(daemon.stats()["packets"]["refresh"])


def measure_daemon_flood(daemon: Daemon, count: int, rate: float | None,
                         packets: list[bytes]) -> tuple[int, float]:
    before = refreshes(daemon)
    sent_for = flood(count, rate, packets)
    time.sleep(1.0)
    return refreshes(daemon) - before, sent_for


# The SDPs whose new and changed announcements are stored, by name: a 7-line one, and the
# 13-line AES67 one that Dante and RAVENNA devices send (what the >= 3x target is for).
SDP_SHAPES = ("7-line", "AES67 13-line")


def stored_sdp(i: int, shape: str = SDP_SHAPES[0], version: int = 1) -> str:
    """The SDP of the i-th stored announcement of a shape (version 2: its change)."""
    group = f"239.{69 if version else 255}.{i >> 8 & 255}.{i & 255}"
    if shape == SDP_SHAPES[0]:
        return sdp_text(session=i, version=version, name=f"S{i}", group=group)
    return aes67_sdp_text(session=i, version=version, name=f"AVIO-USB {i} : 2", group=group)


def stored_per_second(shape: str, total: int = 50_000) -> tuple[float, float]:
    """The daemon's pipeline without the socket: engine on this thread, SQLite in the
    store process, one batch per 1,000 datagrams, and the daemon's garbage collector
    settings. (new sessions stored/s, changed sessions stored/s): ``total`` new ones,
    then a new version of each, each phase timed until its last batch is committed."""
    service.tune_collector()
    settler = service.MemorySettler(0)
    with tempfile.TemporaryDirectory() as tmp:
        loop = asyncio.new_event_loop()
        SqliteDirectory(Path(tmp) / "d.sqlite3").close()  # created, as the daemon does
        writer = StoreWriter(Path(tmp) / "d.sqlite3", loop)
        engine = Engine(limits=Limits(source_rate=1e9, source_burst=1e9, max_sessions=10**6))
        rates = []
        for version, outcome in ((1, "new"), (2, "changed")):
            packets = [announce(stored_sdp(i, shape, version)) for i in range(total)]
            start = time.perf_counter()
            now = float(version)
            for base in range(0, total, 1000):
                for pkt in packets[base:base + 1000]:
                    engine.receive_datagram(pkt, now)
                writer.submit(engine.take_writes())
                while engine.next_event():
                    pass
                settler.note(len(engine))
            while writer.backlog:  # until everything is committed
                time.sleep(0.0005)
            rates.append(total / (time.perf_counter() - start))
            assert engine.counters[outcome] == total, engine.counters
        writer.close()
        check = SqliteDirectory(Path(tmp) / "d.sqlite3")
        assert check.count() == total, check.count()
        assert all(r.version == 2 for r in check.search(SearchQuery(limit=50)))
        check.close()
        loop.close()
        return rates[0], rates[1]


def transform_rate(shape: str) -> float:
    """sdp-transform's bare parse rate of the same SDP as the stored announcements."""
    text = stored_sdp(1234, shape)
    return rate(lambda: sdp_transform.parse(text), rounds=3)


def _socket_queue(port: int) -> int:
    """Bytes waiting in this namespace's UDP sockets bound to ``port`` (/proc/net/udp)."""
    queued = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            queued += int(fields[4].split(":")[1], 16)
    return queued


def send_unlost(packets: list[bytes], queue_limit: int = 256 * 1024) -> None:
    """Send as fast as the receiver takes them: the next burst only while its socket
    holds less than ``queue_limit`` bytes, so a datagram is never dropped for a full
    buffer and the rate is the receiver's, not the sender's."""
    sock = _sender_socket()
    burst = 100
    for i in range(0, len(packets), burst):
        while _socket_queue(PORT) > queue_limit:
            time.sleep(0.0002)
        for pkt in packets[i:i + burst]:
            while True:
                try:
                    sock.sendto(pkt, (GROUP, PORT))
                    break
                except BlockingIOError:
                    time.sleep(0.0005)
    sock.close()


def end_to_end_stored(daemon: Daemon, shape: str, first: int,
                      total: int = 30_000) -> tuple[float, float]:
    """Datagrams into a real sapd, rows in its store: ``total`` new announcements of a
    shape sent as fast as it takes them, then a new version of each; each phase from its
    first datagram until every one is counted and committed. (new/s, changed/s)"""
    rates = []
    for version, outcome in ((1, "new"), (2, "changed")):
        packets = [announce(stored_sdp(first + i, shape, version)) for i in range(total)]
        before = int(daemon.stats()["packets"][outcome])
        start = time.perf_counter()
        send_unlost(packets)
        while True:
            stats = daemon.stats()
            done = int(stats["packets"][outcome]) - before
            if done >= total and not int(stats["store_backlog"]):
                break
            if time.perf_counter() - start > 120:
                raise AssertionError(f"{shape}: {done} of {total} {outcome} after 120 s")
            time.sleep(0.01)
        rates.append(total / (time.perf_counter() - start))
    return rates[0], rates[1]


def stored_figures(workdir: Path, config: Path) -> None:
    """New and changed sessions stored per second, in process and through a real sapd
    (a fresh one of its own), over sdp-transform's bare parse rate of the same SDP, all
    in this run."""
    daemon = _daemon(workdir, config)
    daemon.start()
    try:
        _stored_figures(daemon)
    finally:
        daemon.stop()


def _stored_figures(daemon: Daemon) -> None:
    for index, shape in enumerate(SDP_SHAPES):
        # in process it is this tree's code: with --tree, only the daemon's figures count
        runs = [(0.0, 0.0) if UNDER_TEST else stored_per_second(shape)
                for _ in range(STORED_RUNS)]
        new = statistics.median(r[0] for r in runs)
        changed = statistics.median(r[1] for r in runs)
        ends = [end_to_end_stored(daemon, shape, first=100_000 * (STORED_RUNS * index + n))
                for n in range(STORED_RUNS)]
        e2e_new = statistics.median(r[0] for r in ends)
        e2e_changed = statistics.median(r[1] for r in ends)
        parse_rate = transform_rate(shape)
        target = ">= 3x" if shape != SDP_SHAPES[0] else "(reference)"
        report(f"{shape} SDP: sdp_transform.parse (reference)", parse_rate, "per s")
        report(f"  new stored/s, engine+SQLite, median of {STORED_RUNS}", new, "per s",
               ">= 10,000/s")
        report(f"  changed stored/s, engine+SQLite, median of {STORED_RUNS}", changed,
               "per s")
        report(f"  new stored/s, datagrams into sapd, median of {STORED_RUNS}", e2e_new,
               "per s")
        report(f"  changed stored/s, datagrams into sapd, median of {STORED_RUNS}",
               e2e_changed, "per s")
        report("  new over sdp-transform (engine+SQLite)", new / parse_rate, "x", target)
        report("  changed over sdp-transform (engine+SQLite)", changed / parse_rate, "x",
               target)
        report("  new over sdp-transform (datagrams into sapd)", e2e_new / parse_rate, "x",
               target)
        report("  changed over sdp-transform (datagrams into sapd)", e2e_changed / parse_rate,
               "x", target)


def fill(daemon: Daemon, packets: list[bytes], rate: float) -> tuple[int, float]:
    """Send ``packets`` at ``rate`` and wait until the daemon has committed what it took
    in. Returns (sessions added, seconds from the first datagram to the last commit)."""
    before = int(daemon.stats()["sessions"])
    start = time.perf_counter()
    flood(len(packets), rate, packets)
    changed_at, seen = time.perf_counter(), (-1, -1)
    while time.perf_counter() - changed_at < 2:  # until 2 s without change
        stats = daemon.stats()
        state = (int(stats["sessions"]) - before, int(stats["store_backlog"]))
        if state != seen:
            seen, changed_at = state, time.perf_counter()
        if state[0] >= len(packets) and not state[1]:
            break
        time.sleep(0.05)
    return seen[0], changed_at - start


def latency(daemon: Daemon, samples: int = 400) -> list[float]:
    seen: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        for line in daemon.client.stream_lines("/v1/events?format=jsonl"):
            if line.strip():
                event = json.loads(line)
                name = event["session"]["name"]
                if event["event"] == "new" and name.startswith("lat "):
                    seen.append(time.time() - float(name.split()[1]))
            if stop.is_set() or len(seen) >= samples:
                return
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.5)
    sock = _sender_socket()
    for i in range(samples):
        pkt = announce(sdp_text(session=900_000 + i, name=f"lat {time.time():.6f}"),
                       source="10.9.0.1")
        sock.sendto(pkt, (GROUP, PORT))
        time.sleep(0.01)
    thread.join(10)
    stop.set()
    return [s * 1000 for s in seen]


def flood_source(n: int) -> str:
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


def kernel_drops() -> int:
    """UDP datagrams the kernel dropped for a full receive buffer (this namespace)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


KERNEL_DROPS = "kernel_receive_buffer"  # sapd's name for what the kernel dropped


def counted(daemon: Daemon) -> int:
    """Datagrams sapd read: accepted, or dropped by a reason of its own."""
    stats = daemon.stats()
    drops = {k: v for k, v in stats["drops"].items() if k != KERNEL_DROPS}
    return sum(stats["packets"].values()) + sum(drops.values())


def kernel_drops_counted(daemon: Daemon) -> int:
    """What sapd says the kernel dropped on its sockets (SO_RXQ_OVFL)."""
    return int(daemon.stats()["drops"].get(KERNEL_DROPS, 0))


def flood_sender(ready: Any, go: Any, took: Any) -> None:
    """The flood, from a process of its own: sent from the measuring process, its
    sending thread held the interpreter lock for up to a switch interval (5 ms) each
    time a client thread woke, and the clients' own waits were counted as sapd's."""
    packets = [announce(sdp_text(session=i, name=f"Flood {i}",
                                 group=f"239.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                                 origin=flood_source(i % FLOOD_SOURCES)),
                        source=flood_source(i % FLOOD_SOURCES))
               for i in range(FLOOD_SESSIONS)]
    socks = [_sender_socket(flood_source(n)) for n in range(FLOOD_SOURCES)]
    ready.set()
    go.wait()
    start, burst = time.perf_counter(), 250
    for i in range(0, FLOOD_SESSIONS, burst):
        for j in range(i, min(i + burst, FLOOD_SESSIONS)):
            while True:
                try:
                    socks[j % FLOOD_SOURCES].sendto(packets[j], (GROUP, PORT))
                    break
                except BlockingIOError:
                    time.sleep(0.0005)
        delay = start + (i + burst) / FLOOD_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    took.value = time.perf_counter() - start
    for sock in socks:
        sock.close()


def flood_with_api(daemon: Daemon) -> None:
    """FLOOD_SESSIONS unique sessions from FLOOD_SOURCES IP senders at FLOOD_RATE (from
    another process), while one client lists sessions back to back and another times
    marker events."""
    context = multiprocessing.get_context("fork")
    ready, go, took = context.Event(), context.Event(), context.Value("d", 0.0)
    sender = context.Process(target=flood_sender, args=(ready, go, took))
    sender.start()
    ready.wait(120)
    done, flooding = threading.Event(), threading.Event()
    lists: list[float] = []
    events: list[float] = []

    def lister() -> None:
        client = daemon.client
        while not done.is_set():
            t0 = time.perf_counter()
            client.request("GET", "/v1/sessions")
            if flooding.is_set():
                lists.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)

    def consume() -> None:
        for line in daemon.client.stream_lines("/v1/events?format=jsonl"):
            if line.strip():
                event = json.loads(line)
                name = event.get("session", {}).get("name", "")
                if event.get("event") == "new" and name.startswith("lat "):
                    events.append((time.time() - float(name.split()[1])) * 1000)
            if done.is_set():
                return

    sent_markers = [0]

    def markers() -> None:
        sock, n = _sender_socket("127.0.9.9"), 0
        while not done.is_set():
            if not flooding.wait(0.1):
                continue
            sent_markers[0] = n + 1
            pkt = announce(sdp_text(session=800_000 + n, name=f"lat {time.time():.6f}",
                                    origin="127.0.9.9"), source="127.0.9.9")
            sock.sendto(pkt, (GROUP, PORT))
            n += 1
            time.sleep(0.02)
    before, dropped_before = counted(daemon), kernel_drops()
    sapd_dropped_before = kernel_drops_counted(daemon)
    threads = [threading.Thread(target=f, daemon=True) for f in (consume, lister, markers)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    flooding.set()  # what is measured is during the flood
    go.set()
    sender.join()
    flooding.clear()
    sent_for = took.value
    time.sleep(1.0)  # the last markers' events
    done.set()
    for thread in threads:
        thread.join(10)
    seen, changed_at = counted(daemon), time.perf_counter()
    while time.perf_counter() - changed_at < 2:  # until the counters stand still
        time.sleep(0.2)
        now = counted(daemon)
        if now != seen:
            seen, changed_at = now, time.perf_counter()
    sent = FLOOD_SESSIONS + sent_markers[0]
    stats = daemon.stats()
    report(f"flood: {FLOOD_SESSIONS:,} unique sessions, {FLOOD_SOURCES} sources, rate",
           FLOOD_SESSIONS / sent_for, "per s")
    report(f"  GET /v1/sessions p99 during it ({len(lists)} requests)",
           percentile(lists, 99), "ms", "<= 5 ms")
    report("  GET /v1/sessions p50 during it", percentile(lists, 50), "ms")
    report(f"  packet-to-event latency p99 during it ({len(events)} markers)",
           percentile(events, 99) if events else float("nan"), "ms", "<= 50 ms")
    report("  datagrams counted by sapd (accepted or dropped by reason)", seen - before,
           "pkts")
    report("  dropped by the kernel (receive buffer full)", kernel_drops() - dropped_before,
           "pkts")
    said = kernel_drops_counted(daemon) - sapd_dropped_before
    report("  of them counted by sapd (drops: kernel_receive_buffer)", said, "pkts")
    report("  sent and neither (unaccounted; other traffic may offset it)",
           sent - (seen - before) - (kernel_drops() - dropped_before), "pkts", "0")
    report("  sent and not counted by sapd (read, or dropped by the kernel)",
           sent - (seen - before) - said, "pkts", "0")
    report("  sessions listed after it", stats["sessions"], "sessions")
    for reason, value in sorted(stats["drops"].items()):
        report(f"  dropped: {reason}", value, "pkts")


def flood_figures(tmp: Path) -> None:
    """The flood, on a fresh sapd with default caps (a config saying where to listen)."""
    defaults = tmp / "defaults.toml"
    features = "" if UNDER_TEST else FEATURES_OFF
    defaults.write_text(f"port = {PORT}\ngroups = ['{GROUP}']\n{features}")
    flooded = _daemon(tmp / "flood", defaults)
    flooded.start()
    try:
        flood_with_api(flooded)
        assert flooded.proc is not None
        report_rss("  RSS after the flood", flooded.proc.pid)
    finally:
        flooded.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def report_rss(label: str, pid: int, target: str = "") -> None:
    """sapd's RSS with its store process's added (counting shared pages twice)."""
    (store_pid,) = children(pid)
    store = rss_mb(store_pid)
    report(f"{label} (sapd + store process)", rss_mb(pid) + store, "MB", target)
    report("  of which the store process", store, "MB")


UNDER_TEST: Path | None = None  # --tree: every daemon of the run is that tree's sapd


def _daemon(workdir: Path, config: Path, tree: Path | None = None) -> Daemon:
    """A sapd on lo; from another source tree's code if ``tree`` (or --tree) is given."""
    tree = tree or UNDER_TEST
    return Daemon("sapd", workdir, ["--interface", "lo", "--config", str(config),
                                    "--log-level", "warning"],
                  env={"PYTHONPATH": str(tree)} if tree else None)


def compile_tree(tree: Path) -> None:
    """Byte code for a tree's sapd, as an installed sapd has it: start-up figures then
    measure sapd, not the compiler (PYTHONDONTWRITEBYTECODE would recompile each start)."""
    compileall.compile_dir(str(tree / "sapd"), quiet=1)


@contextlib.contextmanager
def paused(*daemons: Daemon | None) -> Iterator[None]:
    """SIGSTOP these daemons meanwhile: each receiver is measured with the cores to
    itself (a stopped daemon's socket buffer just fills and drops)."""
    stopped = [d for d in daemons if d is not None]
    for d in stopped:
        d.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for d in stopped:
            d.signal(signal.SIGCONT)


def ingest(daemon: Daemon, known: list[bytes], other: Daemon | None = None) -> None:
    """Re-announcement ingest against bare loops, one flood each, all in this run."""
    for pkt in known:  # make them known: later copies take the refresh path
        _sender_socket().sendto(pkt, (GROUP, PORT))
    time.sleep(0.5)
    flood_count = 300_000
    with paused(daemon, other):
        bare_count, _ = measure_bare(flood_count, known)
        bare_msg, _ = measure_bare(flood_count, known, pktinfo=True)
    time.sleep(1.0)  # the daemons drain what queued while they were stopped
    report("bare recvfrom: datagrams received of 300,000 flood", bare_count, "pkts")
    report("bare recvmsg + IP_PKTINFO: datagrams received of same flood", bare_msg, "pkts")
    with paused(other):
        got, _ = measure_daemon_flood(daemon, flood_count, None, known)
    report("sapd: re-announcements ingested of same flood", got, "pkts")
    report("ingest ratio sapd / bare recvmsg + IP_PKTINFO (same flood)", got / bare_msg, "x",
           ">= 0.7")
    report("ingest ratio sapd / bare recvfrom (same flood)", got / bare_count, "x")
    if other is not None:
        with paused(daemon):
            time.sleep(1.0)  # it drains what queued while it was stopped, uncounted
            old, _ = measure_daemon_flood(other, flood_count, None, known)
        other.stop()
        report("other tree's sapd: re-announcements ingested", old, "pkts")
        report("  its ratio to bare recvfrom (same run)", old / bare_count, "x")
        report("  sapd's ingest over the other tree's", got / max(old, 1), "x", ">= 0.95")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingest-only", action="store_true",
                        help="only the re-announcement ingest figures")
    parser.add_argument("--flood-only", action="store_true",
                        help="only the flood with API figures")
    parser.add_argument("--stored-only", action="store_true",
                        help="only the new and changed sessions stored figures")
    parser.add_argument("--compare-with", type=Path, metavar="TREE",
                        help="also measure the ingest of the sapd in this source tree")
    parser.add_argument("--tree", type=Path, metavar="TREE",
                        help="every daemon figure for the sapd in this source tree (an older "
                        "release: its config has no feature sections; in-process figures "
                        "stay this tree's)")
    args = parser.parse_args()
    global UNDER_TEST
    UNDER_TEST = args.tree
    for tree in (Path(__file__).resolve().parents[2], args.tree, args.compare_with):
        if tree is not None:
            compile_tree(tree)
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    known = [announce(sdp_text(session=i, name=f"known {i}")) for i in range(50)]
    batch = [announce(sdp_text(session=i, name=f"Stream {i} room {i % 97}",
                               group=f"239.255.{i >> 8 & 255}.{i & 255}"),
                      source=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
             for i in range(100_000)]
    with tempfile.TemporaryDirectory() as tmp:
        config, other_config = Path(tmp) / "bench.toml", Path(tmp) / "other.toml"
        other_config.write_text(f"port = {PORT}\ngroups = ['{GROUP}']\n"
                                "[limits]\nsource_rate = 1000000.0\n"
                                "source_burst = 1000000.0\nmax_sessions = 200000\n")
        # the other tree may predate the feature sections (and refuse them)
        config.write_text(other_config.read_text() + ("" if args.tree else FEATURES_OFF))
        if args.flood_only:
            flood_figures(Path(tmp))
            return
        if args.stored_only:
            stored_figures(Path(tmp) / "stored", config)
            return
        daemon = _daemon(Path(tmp) / "d", config)
        daemon.start()
        other = None
        if args.compare_with:
            other = _daemon(Path(tmp) / "other", other_config, args.compare_with).start()
        try:
            ingest(daemon, known, other)
            if args.ingest_only:
                return
            got, sent_for = measure_daemon_flood(daemon, 250_000, 50_000, known)
            report(f"paced flood rate achieved ({sent_for:.1f} s)", 250_000 / sent_for, "per s")
            report("loss at 50,000 re-announcements/s", 1 - got / 250_000, "fraction", "0")
            lat = latency(daemon)
            report(f"packet-to-event latency p50 ({len(lat)} samples)", percentile(lat, 50), "ms")
            report("packet-to-event latency p99", percentile(lat, 99), "ms", "<= 50 ms")
            # Lists, RSS and restart on 100,000 sessions sent at a pace the store keeps up
            # with; the burst below has its own daemon.
            fill(daemon, batch, FILL_RATE)
            sessions = daemon.stats()["sessions"]
            time.sleep(2)  # lists are measured at rest, as an operator would see them
            # Each request a page not asked for before (its offset or value moves), so
            # the figure is what a lookup costs, not what any cache remembers.
            queries = ["?offset={k}", "?text=room%20{t}", "?media=audio&limit=50&offset={k}",
                       "?scope=ipv4-local&offset={k}", "?group=239.255.{b}.{c}",
                       "?source=10.0.{b}.{c}", "?offset={m}&limit=100"]
            by_query: dict[str, list[float]] = {q: [] for q in queries}
            for i in range(1400):
                query = queries[i % len(queries)]
                k = i // len(queries)
                page = query.format(k=k, t=k % 97, b=k >> 8 & 255, c=k & 255, m=5000 + 100 * k)
                t0 = time.perf_counter()
                daemon.client.request("GET", "/v1/sessions" + page)
                by_query[query].append((time.perf_counter() - t0) * 1000)
            timings = [t for values in by_query.values() for t in values]
            report(f"list p50 with {sessions:,} sessions (HTTP over the socket)",
                   percentile(timings, 50), "ms")
            report(f"list p99 with {sessions:,} sessions, all query shapes",
                   percentile(timings, 99), "ms", "<= 5 ms")
            for query, values in by_query.items():
                report(f"  p99 of GET /v1/sessions{query}", percentile(values, 99), "ms")
            assert daemon.proc is not None
            report_rss(f"RSS with {sessions:,} sessions", daemon.proc.pid, "<= 250 MB")
            daemon.stop()
            start = time.perf_counter()
            daemon.start(timeout=60)
            report(f"restart-to-ready with {sessions:,} sessions",
                   time.perf_counter() - start, "s", "<= 2 s")
        finally:
            daemon.stop()
            if other is not None and other.proc is not None and other.proc.poll() is None:
                other.stop()
        # after the daemon above stopped: its datagrams go to the same group and port
        stored_figures(Path(tmp) / "stored", config)
        burst = _daemon(Path(tmp) / "burst", config)
        burst.start()
        try:
            stored, took = fill(burst, batch, BURST_RATE)
            report(f"fresh sapd, {len(batch):,} new announcements at {BURST_RATE:,}/s: stored",
                   stored / len(batch), "fraction")
            report("  stored per second, first datagram to last commit", stored / took,
                   "per s")
            assert burst.proc is not None
            report_rss("  RSS after the burst", burst.proc.pid)
        finally:
            burst.stop()
        flood_figures(Path(tmp))


if __name__ == "__main__":
    main()
