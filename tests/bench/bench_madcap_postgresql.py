"""madcapd on PostgreSQL, same machine, same run, one PostgreSQL 15 (fsync on) for all:

- three madcapd on one database, each with its load generator in a peer namespace
  (bench_madcap's open-loop DISCOVER/OFFER/REQUEST/ACK at a third of the offered rate
  each): the aggregate exchanges/s kept up (<= 1 % lost, >= 97 % of offered);
- Kea 2.2 with its PostgreSQL lease backend (``kea-admin db-init pgsql``) on the same
  database server under perfdhcp (DORA), kept up by the same rule;
- one madcapd on PostgreSQL against the same madcapd on SQLite (durability = full).

Each figure is the median over REPEATS sweeps (environment BENCH_REPEATS, default 3);
the ratios are of medians from this one run. Run by hand, one benchmark at a time:

    sudo flock /work/bench.lock .venv/bin/python -m tests.bench.bench_madcap_postgresql
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.bench_madcap import GENERATOR as ONE_SERVER_GENERATOR
from tests.bench.bench_madcap import KEA_CONFIG, SECONDS, kept_up, run_perfdhcp
from tests.bench.common import report
from tests.daemons import Daemon
from tests.netns.harness import Network, ip
from tests.postgres import PASSWORD, PostgresServer, running_postgres

RATES = [int(r) for r in os.environ.get(
    "BENCH_RATES", "100,200,300,500,750,1000,1500,2000,3000,4000,6000").split(",")]
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
# BENCH_ONLY=one: only one madcapd on PostgreSQL against one on SQLite (a finer sweep)
ONLY_ONE = os.environ.get("BENCH_ONLY") == "one"
GROUP = "239.191.255.254"  # the scope's MADCAP server address
# bench_madcap's generator, with lease ids random per generator: its lease ids come from
# the clock's second, and three generators started together would reuse each other's
# (RFC 2730 s. 2.4: unique across all clients), which the database refuses
GENERATOR = ONE_SERVER_GENERATOR.replace(
    "base = int(time.time()) & 0xFFFF", "base = int.from_bytes(__import__('os').urandom(4))")
assert GENERATOR != ONE_SERVER_GENERATOR

def sweep(name: str, one_rate: Callable[[int], tuple[float, float]]) -> float:
    """The highest achieved rate kept up, offered rates rising; stops after two rates
    in a row not kept up."""
    kept, misses = 0.0, 0
    for rate in RATES:
        achieved, lost = one_rate(rate)
        ok = kept_up(rate, achieved, lost)
        print(f"  {name:24} offered {rate:5}/s -> {achieved:8.1f}/s, {lost:6.1%} lost"
              f"{'' if ok else '  (not kept up)'}", flush=True)
        if ok:
            kept, misses = max(kept, achieved), 0
        else:
            misses += 1
            if misses == 2:
                break
    return kept


def madcapd_config(tmp: Path, name: str, store: str) -> Path:
    config = tmp / f"{name}.toml"
    config.write_text(f'durability = "full"\n{store}\n[[scope]]\nname = "org"\n'
                      'range = "239.128.0.0/10"\nlease_default = 3600\n'
                      'max_addresses_per_client = 1000000\n'  # the load is one host
                      'max_offers_per_client = 1024\n')  # and holds many offers at once
    return config


def pair(net: Network, tag: str, subnet: int) -> tuple[str, str, str, str]:
    srv, cli = net.host(f"s{tag}"), net.host(f"c{tag}")
    _, c0 = net.link(srv, cli, subnet)
    return srv.name, cli.name, srv.address(), c0


def bench_madcapds(net: Network, tmp: Path, label: str, count: int, store: str,
                   subnet: int, fresh: Callable[[], None]) -> float:
    pairs = [pair(net, f"{label[:3]}{subnet}{i}", subnet + i) for i in range(count)]

    def one_rate(rate: int) -> tuple[float, float]:
        fresh()
        config = madcapd_config(tmp, f"{label}-{rate}", store)
        daemons = [Daemon("madcapd", tmp / f"{label}-{rate}-{i}",
                          ["--config", str(config), "--log-level", "warning",
                           "--sapd-socket", str(tmp / "none.sock")], netns=srv)
                   for i, (srv, _, _, _) in enumerate(pairs)]
        try:
            for daemon in daemons:
                daemon.start(timeout=30)
            procs = [subprocess.Popen(
                ["ip", "netns", "exec", cli, sys.executable, "-c", GENERATOR,
                 str(rate / count), str(SECONDS), GROUP, server, iface],
                stdout=subprocess.PIPE, text=True, env={**os.environ,
                                                         "PYTHONPATH": str(Path.cwd())})
                for _, cli, server, iface in pairs]
            results = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
        finally:
            for daemon in daemons:
                daemon.stop(30)
        # each generator offers rate/count over its own window: the aggregate is the sum
        achieved = sum(r["acks"] / r["duration"] for r in results)
        return achieved, 1 - sum(r["acks"] for r in results) / sum(r["sent"] for r in results)
    return sweep(label, one_rate)


def kea_on_postgres(net: Network, tmp: Path, pg: PostgresServer) -> float:
    srv, cli = net.host("ksrv"), net.host("kcli")
    s0, c0 = net.link(srv, cli, 0, multicast_route=False, up=False)
    ip("addr", "add", "10.210.0.1/16", "dev", s0, netns=srv.name)
    ip("addr", "add", "10.210.0.2/16", "dev", c0, netns=cli.name)
    for ns, dev in ((srv.name, s0), (cli.name, c0)):
        ip("link", "set", dev, "up", netns=ns)

    def one_rate(rate: int) -> tuple[float, float]:
        db = f"kea{rate}"
        pg.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        pg.sql(f"CREATE DATABASE {db} OWNER kea")
        init = subprocess.run(["kea-admin", "db-init", "pgsql", "-u", "kea", "-p", PASSWORD,
                               "-n", db, "-h", str(pg.socket_dir), "-P", str(pg.port)],
                              capture_output=True, text=True, check=False, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"kea-admin db-init pgsql: {init.stdout}{init.stderr}")
        config = json.loads(json.dumps(KEA_CONFIG).replace("IFACE", s0)
                            .replace("LOGFILE", str(tmp / "kea.log")))
        config["Dhcp4"]["lease-database"] = {
            "type": "postgresql", "name": db, "host": str(pg.socket_dir),
            "port": pg.port, "user": "kea", "password": PASSWORD}
        (tmp / "kea4.json").write_text(json.dumps(config))
        Path("/run/kea").mkdir(parents=True, exist_ok=True)
        kea = subprocess.Popen(["ip", "netns", "exec", srv.name, "kea-dhcp4", "-c",
                                str(tmp / "kea4.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        try:
            if kea.poll() is not None:
                raise RuntimeError(f"kea-dhcp4 exited: {(tmp / 'kea.log').read_text()}")
            return run_perfdhcp(cli.name, c0, rate)
        finally:
            kea.terminate()
            kea.wait(10)
    return sweep("kea (postgresql)", one_rate)


def main() -> None:
    # SIGTERM ends the run through its finally blocks (namespaces, daemons, the cluster)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    for tool in ("kea-dhcp4", "perfdhcp", "kea-admin"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool}: apt-get install kea-dhcp4-server kea-admin")
    figures: dict[str, list[float]] = {k: [] for k in ("three", "kea", "one_pg", "sqlite")}
    with tempfile.TemporaryDirectory() as tmpdir, running_postgres(fsync=True) as pg:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # the daemons' state is theirs; postgres (nobody) reads none
        pg.sql("CREATE DATABASE madcap")
        pg.sql(f"CREATE USER kea PASSWORD '{PASSWORD}'")
        store = f'[store]\nbackend = "postgresql"\ndsn = "{pg.dsn("madcap")}"\n'

        def fresh() -> None:  # each rate starts on an empty lease table
            pg.sql("DROP DATABASE IF EXISTS madcap WITH (FORCE)")
            pg.sql("CREATE DATABASE madcap")
        net = Network(tmp)
        try:
            for repeat in range(REPEATS):
                print(f"== repeat {repeat + 1}/{REPEATS}", flush=True)
                if not ONLY_ONE:
                    figures["three"].append(
                        bench_madcapds(net, tmp, f"3x-pg-r{repeat}", 3, store,
                                       40 + 10 * repeat, fresh))
                figures["one_pg"].append(
                    bench_madcapds(net, tmp, f"1x-pg-r{repeat}", 1, store, 100 + repeat,
                                   fresh))
                figures["sqlite"].append(
                    bench_madcapds(net, tmp, f"1x-sqlite-r{repeat}", 1, "", 110 + repeat,
                                   lambda: None))
                if ONLY_ONE:
                    continue
                kea_net = Network(tmp)
                try:
                    figures["kea"].append(kea_on_postgres(kea_net, tmp, pg))
                finally:
                    kea_net.teardown()
        finally:
            net.teardown()
    median = {k: statistics.median(v) if v else 0.0 for k, v in figures.items()}
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    report(f"3 madcapd on one PostgreSQL, aggregate (median of {REPEATS})", median["three"],
           "per s")
    report(f"Kea 2.2, PostgreSQL lease backend (median of {REPEATS})", median["kea"], "per s")
    report("ratio 3 madcapd / Kea", median["three"] / median["kea"] if median["kea"] else 0,
           "x", ">= 1")
    report(f"1 madcapd on PostgreSQL (median of {REPEATS})", median["one_pg"], "per s")
    report(f"1 madcapd on SQLite, durability=full (median of {REPEATS})", median["sqlite"],
           "per s")
    report("ratio 1 madcapd PostgreSQL / SQLite",
           median["one_pg"] / median["sqlite"] if median["sqlite"] else 0, "x", ">= 0.5")
    print("runs:", json.dumps(figures))


if __name__ == "__main__":
    main()
