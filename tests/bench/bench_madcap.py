"""madcapd versus Kea, same machine, same run (needs root, kea-dhcp4-server, kea-admin).

Each server runs in its own namespace with its load generator in a peer namespace:
- Kea DHCPv4 (memfile, persist=true) under perfdhcp doing DORA 4-way exchanges;
- madcapd (SQLite, durability=full) under our generator doing DISCOVER/OFFER/REQUEST/ACK,
  open loop at a fixed rate like perfdhcp, DISCOVER and REQUEST sent by multicast to the
  scope's server group as RFC 2730 has it, from CLIENTS client hosts (each exchange from
  the next address of CLIENT_NET), so that madcapd runs at its default per-host quotas
  as perfdhcp's load is many clients to Kea.
Each is swept over rising offered rates until it stops keeping up (two rates in a row
not kept up: one noisy dip does not end a sweep), rate by rate in turn (Kea, madcapd
without fsync, madcapd with fsync at one rate, then the next rate), so that all meet
the same machine; the figure is the highest achieved
exchange rate at which the server kept up: at most 1% of exchanges lost and at least 97%
of the offered rate achieved (a server that queues falls behind the offered rate before
it loses). Afterwards madcapd's lease file is checked: one lease per ACK, no address
twice. ``--profile RATE`` records a py-spy profile of madcapd (fsync) at that rate.
Before each madcapd (fsync) rate the disk's own fdatasync p50/p99 is measured, and each
line says the machine's load average: a shared machine's other work shows in the tail.

Run: sudo .venv/bin/python -m tests.bench.bench_madcap [--profile RATE] [--no-kea]
     [--no-normal] [--rates R1,R2,...]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from tests.bench.common import percentile, report
from tests.daemons import Daemon
from tests.netns.harness import Network, ip

# Offered rates, rising until a server stops keeping up (STOP_AFTER rates in a row).
RATES = [1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000,
         13000, 14000, 15000, 16000, 18000, 20000, 22000, 24000, 26000, 28000, 30000]
STOP_AFTER = 2
SECONDS = 8
LOSS_LIMIT = 0.01
KEPT_UP = 0.97  # achieved / offered
# The load generator stands for CLIENTS hosts, each exchange from the next address of
# CLIENT_NET: madcapd's quotas are per client host (the source address), and at their
# defaults one host could not load it (16 offers outstanding, 1,024 addresses). 4,096
# hosts take ~400 leases each in a sweep to 22,000/s.
CLIENT_NET = ipaddress.IPv4Network("10.220.0.0/20")
CLIENTS = CLIENT_NET.num_addresses

GENERATOR = r'''
import json, socket, struct, sys, time, select
from madcap import wire
from madcap.wire import Message, MsgType
from sapd.plumbing.multicast import IP_PKTINFO
import ipaddress
rate, seconds, group, server, iface, first, clients = (
    float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5],
    int(ipaddress.IPv4Address(sys.argv[6])), int(sys.argv[7]))
scope = ipaddress.IPv4Address("239.128.0.0")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifindex = socket.if_nametoindex(iface)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                struct.pack("@4s4si", b"\0" * 4, b"\0" * 4, ifindex))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("0.0.0.0", 0))  # one port; the replies come to every client address
sock.setblocking(False)
# Exchange i comes from client address i % clients (IP_PKTINFO's source address per
# datagram: one socket stands for many hosts, as madcapd's quotas count them)
source = [[(socket.IPPROTO_IP, IP_PKTINFO, struct.pack(
    "@i4s4s", ifindex, (first + k).to_bytes(4, "big"), b"\0" * 4))] for k in range(clients)]
to = (group, 2535)
base = int(time.time()) & 0xFFFF
def lid(i): return b"\0" + (base << 96 | i).to_bytes(16, "big")
disc_t = bytearray(wire.encode(Message(msgtype=MsgType.DISCOVER, xid=0, lease_id=lid(0),
                                       scope=scope)))
req_t = bytearray(wire.encode(Message(msgtype=MsgType.REQUEST, xid=0, lease_id=lid(0),
                                      scope=scope, server_id=ipaddress.IPv4Address(server))))
d_off, r_off = disc_t.find(lid(0)), req_t.find(lid(0))
sent_at, acked, offers, latencies = {}, {}, 0, []
total = int(rate * seconds)
start = time.perf_counter()
i = 0
def patch(t, off, i):
    t[4:8] = i.to_bytes(4, "big"); t[off:off + 17] = lid(i); return bytes(t)
def drain():
    global offers
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        xid = int.from_bytes(data[4:8], "big")
        if data[1] == MsgType.OFFER:
            offers += 1
            sock.sendmsg([patch(req_t, r_off, xid)], source[xid % clients], 0, to)
        elif data[1] == MsgType.ACK and xid in sent_at and xid not in acked:
            acked[xid] = time.perf_counter()
            latencies.append(acked[xid] - sent_at[xid])
while i < total:
    due = start + i / rate
    now = time.perf_counter()
    while i < total and due <= now:
        sent_at[i] = now
        sock.sendmsg([patch(disc_t, d_off, i)], source[i % clients], 0, to)
        i += 1
        due = start + i / rate
    drain()
    wait = due - time.perf_counter()
    if wait > 0:
        select.select([sock], [], [], wait)
end = time.perf_counter() + 2.0
while time.perf_counter() < end and len(acked) < total:
    select.select([sock], [], [], 0.05)
    drain()
sending = max(sent_at.values()) - start
duration = max(acked.values()) - start if acked else seconds
latencies.sort()
print(json.dumps({"sent": total, "offers": offers, "acks": len(acked), "duration": duration,
                  "offered": total / max(sending, 1e-9),
                  "latencies": latencies[::max(1, len(latencies) // 5000)]}))
'''

KEA_CONFIG = {
    "Dhcp4": {
        "interfaces-config": {"interfaces": ["IFACE"]},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": "LEASEFILE"},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.210.0.0/16",
                     "pools": [{"pool": "10.210.1.0 - 10.210.250.255"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": "LOGFILE"}]}],
    }
}


Result = tuple[int, float, float]  # offered rate, achieved rate, share lost


def add_clients(client_ns: str, client_if: str, server_ns: str, server_if: str,
                gateway: str) -> None:
    """CLIENT_NET's addresses on the load generator's side, routed there from the server
    through the link's own address (one neighbour entry for all of them, not 4,096)."""
    batch = "".join(f"address add {address}/32 dev {client_if}\n"
                    for address in CLIENT_NET)
    subprocess.run(["ip", "-n", client_ns, "-batch", "-"], input=batch, text=True,
                   check=True)
    ip("route", "add", str(CLIENT_NET), "via", gateway, "dev", server_if, netns=server_ns)


def run_generator(net_ns: str, rate: int, group: str, server: str, iface: str,
                  first: ipaddress.IPv4Address, clients: int) -> dict[str, float]:
    result = subprocess.run(["ip", "netns", "exec", net_ns, sys.executable, "-c", GENERATOR,
                             str(rate), str(SECONDS), group, server, iface, str(first),
                             str(clients)],
                            capture_output=True, text=True, check=False, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    if result.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{result.stderr}")
    data: dict[str, float] = json.loads(result.stdout)
    return data


def disk_sync_ms(directory: Path, count: int = 200) -> tuple[float, float]:
    """(p50, p99) in ms of a 4 KiB write and fdatasync in ``directory``: what the disk
    under madcapd's lease file takes for one durable commit at that moment (an ACK
    waits for the commit in flight and its own)."""
    path = directory / "sync-probe"
    took = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for n in range(count):
            started = time.perf_counter()
            os.pwrite(fd, b"\0" * 4096, 4096 * (n % 16))
            os.fdatasync(fd)
            took.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return percentile(took, 50), percentile(took, 99)


def run_perfdhcp(net_ns: str, iface: str, rate: int) -> tuple[float, float]:
    out = subprocess.run(["ip", "netns", "exec", net_ns, "perfdhcp", "-4", "-l", iface,
                          "-R", "200000", "-r", str(rate), "-p", str(SECONDS), "-t", "5",
                          "10.210.0.1"], capture_output=True, text=True, timeout=120,
                         check=False).stdout
    found = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", out)
    if found is None:
        raise RuntimeError(f"perfdhcp printed no rate:\n{out}")
    achieved = float(found.group(1))
    drops = [float(x) for x in re.findall(r"drops ratio: ([\d.]+) %", out)]
    return achieved, max(drops) / 100 if drops else 0.0


def sweep_done(results: list[Result]) -> bool:
    """The server stopped keeping up: the last STOP_AFTER rates were not kept up."""
    last = results[-STOP_AFTER:]
    return len(last) == STOP_AFTER and not any(kept_up(*r) for r in last)


class KeaBench:
    """Kea in its namespace, restarted for each rate with a fresh lease file."""

    def __init__(self, net: Network, tmp: Path) -> None:
        self.tmp = tmp
        self.srv, self.cli = net.host("ksrv"), net.host("kcli")
        self.s0, self.c0 = net.link(self.srv, self.cli, 0, multicast_route=False, up=False)
        ip("addr", "add", "10.210.0.1/16", "dev", self.s0, netns=self.srv.name)
        ip("addr", "add", "10.210.0.2/16", "dev", self.c0, netns=self.cli.name)
        for ns, dev in ((self.srv.name, self.s0), (self.cli.name, self.c0)):
            ip("link", "set", dev, "up", netns=ns)

    def run(self, rate: int) -> Result:
        tmp = self.tmp
        config = json.loads(json.dumps(KEA_CONFIG).replace("IFACE", self.s0)
                            .replace("LEASEFILE", str(tmp / f"kea-{rate}.csv"))
                            .replace("LOGFILE", str(tmp / "kea.log")))
        (tmp / "kea4.json").write_text(json.dumps(config))
        Path("/run/kea").mkdir(parents=True, exist_ok=True)
        kea = subprocess.Popen(["ip", "netns", "exec", self.srv.name, "kea-dhcp4", "-c",
                                str(tmp / "kea4.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        try:
            achieved, drops = run_perfdhcp(self.cli.name, self.c0, rate)
        finally:
            kea.terminate()
            kea.wait(10)
        print(f"  kea     offered {rate:5}/s -> {achieved:8.1f}/s, {drops:6.1%} lost", flush=True)
        return rate, achieved, drops


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling madcapd for ``seconds``, without pausing it (a paused madcapd lost
    half the exchanges of the rate it was profiled at)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("  (no py-spy: pip install -e .[profile])", flush=True)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "250", "--nonblocking", "--format", "raw",
                             "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class MadcapBench:
    """One madcapd in its namespace, up for the whole sweep (its leases pile up), and
    its load generator in a peer namespace."""

    def __init__(self, net: Network, tmp: Path, durability: str, subnet: int) -> None:
        self.durability = durability
        self.srv, self.cli = net.host(f"msrv{subnet}"), net.host(f"mcli{subnet}")
        self.s0, self.c0 = net.link(self.srv, self.cli, subnet)
        self.server = self.srv.address()
        add_clients(self.cli.name, self.c0, self.srv.name, self.s0, self.cli.address())
        config = tmp / f"madcapd-{durability}.toml"
        # a /10: room for every lease of the whole sweep; the quotas per client host are
        # the defaults (1,024 addresses, 16 offers outstanding): the load comes from
        # CLIENTS hosts, each well within them
        config.write_text(f'durability = "{durability}"\n[[scope]]\nname = "org"\n'
                          'range = "239.128.0.0/10"\nlease_default = 3600\n')
        self.daemon = Daemon("madcapd", tmp / f"madcapd-{durability}",
                             ["--config", str(config), "--interface", self.s0,
                              "--log-level", "warning"], netns=self.srv.name)
        self.latencies: dict[int, list[float]] = {}  # offered rate -> latencies, ms
        self.disk: dict[int, tuple[float, float]] = {}  # offered rate -> fdatasync ms
        self.profile_dir = tmp.parent
        # Write back what earlier phases left dirty (Kea's lease file), or madcapd's
        # first fsyncs carry it: p99 at 2,000/s was ~90 ms after the earlier phases
        # (28 ms with this sync) against ~2 ms for madcapd alone.
        os.sync()
        self.daemon.start()

    def run(self, rate: int, profile_it: bool = False) -> Result:
        spy = None
        out = self.profile_dir / f"madcapd-{rate}.spy"
        if self.durability == "full":
            self.disk[rate] = disk_sync_ms(self.daemon.state)
        if profile_it and self.daemon.proc is not None:
            spy = profile(self.daemon.proc.pid, SECONDS - 1, out)
        data = run_generator(self.cli.name, rate, "239.191.255.254", self.server, self.c0,
                             CLIENT_NET.network_address, CLIENTS)
        if spy is not None:
            spy.wait(30)
            print(f"  profile: {out}", flush=True)
        achieved = data["acks"] / data["duration"]
        lost = 1 - data["acks"] / data["sent"]
        ms = [x * 1000 for x in cast(list[float], data["latencies"])]
        if kept_up(rate, achieved, lost):
            self.latencies[rate] = ms
        p99 = f"p99 {percentile(ms, 99):6.1f} ms" if ms else ""
        if rate in self.disk:
            p99 += " (disk fdatasync p50 {:.1f}, p99 {:.1f} ms)".format(*self.disk[rate])
        p99 += f" load {os.getloadavg()[0]:.1f}"  # the machine's others, for the record
        print(f"  madcapd ({self.durability}) offered {rate:5}/s (generator "
              f"{data['offered']:8.1f}/s) -> {achieved:8.1f}/s, {lost:6.1%} lost, {p99}",
              flush=True)
        return rate, achieved, lost


def kept_up(rate: int, achieved: float, lost: float) -> bool:
    return lost <= LOSS_LIMIT and achieved >= KEPT_UP * rate


def best(results: list[Result]) -> tuple[int, float]:
    """(offered, achieved) at the highest achieved rate kept up; (0, 0) if none was."""
    ok = [(achieved, rate) for rate, achieved, lost in results if kept_up(rate, achieved, lost)]
    achieved, rate = max(ok) if ok else (0.0, 0)
    return rate, achieved


def stored_leases(state: Path) -> tuple[int, int]:
    """(leases, addresses held twice) in the lease file, read after madcapd stopped."""
    db = sqlite3.connect(f"file:{state / 'leases.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT addresses FROM leases").fetchall()
    finally:
        db.close()
    addresses = [a for (text,) in rows for a in text.split()]
    return len(rows), len(addresses) - len(set(addresses))


def table(results: dict[str, list[Result]], normal: MadcapBench | None,
          full: MadcapBench) -> None:
    rows = {r[0] for name in results for r in results[name] if r[0]}
    by = {name: {r[0]: r for r in results[name]} for name in results}
    print(f"{'offered/s':>9} | {'Kea kept up, lost':>20} | {'madcapd normal':>20} | "
          f"{'madcapd fsync':>20} | p99 ms normal / fsync | disk sync p50/p99 ms")

    def cell(found: Result | None) -> str:
        if found is None:
            return f"{'-':>20}"
        _, achieved, lost = found
        return f"{achieved:8.0f} {'yes' if kept_up(*found) else 'no ':3} {lost:6.1%}"

    def p99(bench: MadcapBench | None, rate: int) -> str:
        if bench is None or rate not in bench.latencies:
            return "-"
        return f"{percentile(bench.latencies[rate], 99):.1f}"
    for rate in sorted(rows):
        disk = "{:.1f} / {:.1f}".format(*full.disk[rate]) if rate in full.disk else "-"
        print(f"{rate:9} | {cell(by['kea'].get(rate))} | {cell(by['normal'].get(rate))} | "
              f"{cell(by['full'].get(rate))} | {p99(normal, rate):>6} / {p99(full, rate):<6} "
              f"| {disk}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=int, metavar="RATE",
                        help="py-spy profile of madcapd (fsync) at this offered rate")
    parser.add_argument("--no-kea", action="store_true", help="madcapd only")
    parser.add_argument("--no-normal", action="store_true",
                        help="without madcapd durability=normal (a shorter sweep)")
    parser.add_argument("--rates", type=lambda text: [int(r) for r in text.split(",")],
                        default=RATES, metavar="R1,R2,...", help="the offered rates")
    args = parser.parse_args()
    for tool in ("kea-dhcp4", "perfdhcp"):
        if not args.no_kea and not shutil.which(tool):
            sys.exit(f"needs {tool}: apt-get install kea-dhcp4-server kea-admin")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        net = Network(tmp)
        try:
            # Rate by rate, each server in turn, so that all three meet the same machine
            # (its speed drifts by tens of % within minutes when others are busy on it)
            kea = None if args.no_kea else KeaBench(net, tmp)
            normal = None if args.no_normal else MadcapBench(net, tmp, "normal", 31)
            full = MadcapBench(net, tmp, "full", 30)
            runs: dict[str, Callable[[int], Result]] = {
                "kea": kea.run if kea else (lambda rate: (rate, 0.0, 1.0)),
                "normal": normal.run if normal else (lambda rate: (rate, 0.0, 1.0)),
                "full": lambda rate: full.run(rate, rate == args.profile)}
            results: dict[str, list[Result]] = {name: [] for name in runs}
            for name, skipped in (("kea", kea), ("normal", normal)):
                if skipped is None:
                    results[name] = [(0, 0.0, 1.0)] * STOP_AFTER  # done before it starts
            for rate in args.rates:
                for name, run in runs.items():
                    if not sweep_done(results[name]):
                        results[name].append(run(rate))
                if all(map(sweep_done, results.values())):
                    break
            if normal is not None:
                normal.daemon.stop()
            stats = full.daemon.get("/v1/stats")
            commits, counters = stats["commits"], stats["counters"]
            acks = counters.get("acks", 0)
            full.daemon.stop()
            leases, twice = stored_leases(full.daemon.state)
        finally:
            net.teardown()
    latencies = full.latencies
    table(results, normal, full)
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    (kea_offered, kea_rate), (_, madcap_rate) = best(results["kea"]), best(results["full"])
    normal_rate = best(results["normal"])[1]
    report("Kea 4-way exchanges/s (kept up: <=1% lost, >=97% of offered)", kea_rate, "per s")
    report("madcapd D/O/R/A exchanges/s, fsync per commit (kept up)", madcap_rate, "per s")
    report("madcapd, durability=normal (no fsync, like Kea memfile)", normal_rate, "per s")
    report("ratio madcapd (fsync) / Kea", madcap_rate / kea_rate if kea_rate else 0, "x",
           ">= 1.5 (stretch 2)")
    report("ratio madcapd (normal) / Kea", normal_rate / kea_rate if kea_rate else 0, "x")
    shown = sorted({min(latencies), kea_offered, max(latencies)} & set(latencies)) \
        if latencies else []
    for rate in shown:
        target = "<= 5 (at Kea's limit)" if rate == kea_offered else ""
        report(f"madcapd exchange latency p50 at {rate}/s offered",
               percentile(latencies[rate], 50), "ms")
        report(f"madcapd exchange latency p99 at {rate}/s offered",
               percentile(latencies[rate], 99), "ms", target)
        if normal is not None and rate in normal.latencies:
            report("  the same, durability=normal (no fsync)",
                   percentile(normal.latencies[rate], 99), "ms")
        if rate in full.disk:
            report("  the disk's fdatasync p99 then", full.disk[rate][1], "ms")
    report("madcapd leases in the file after the sweep", leases, "leases")
    report("  ACKs sent (with fsync)", acks, "count", "= leases")
    report("  addresses leased twice", twice, "count", "0")
    report("  durable commits (group commit: one per socket drain)", commits, "commits")
    # what madcapd itself declined (each of the CLIENTS hosts stays within its quotas)
    for name in ("client_offer_quota", "client_address_quota", "replies_dropped", "invalid"):
        report(f"  counter {name}", counters.get(name, 0), "count")


if __name__ == "__main__":
    main()
