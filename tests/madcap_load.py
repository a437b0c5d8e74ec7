"""Kill madcapd under a load of lease requests and check that nothing acknowledged is
lost and nothing is leased twice. Shared by the local and the namespace crash tests."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from madcap.cli import all_leases
from madcap.leases import PAGE_LIMIT
from tests.daemons import Daemon
from tests.support import ROOT

Acked = dict[str, tuple[str, ...]]  # lease id (hex) -> addresses


class LoadClient:
    """tests.tools.lease_load as a process, optionally inside a namespace."""

    def __init__(self, host: str, port: int, out: Path, netns: str | None = None) -> None:
        self.out = out
        cmd = [sys.executable, "-m", "tests.tools.lease_load", host, str(port), str(out)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT))

    def wait_first_ack(self, timeout: float) -> bool:
        """Has the client (a process that takes a moment to start on a busy machine)
        been acknowledged at least once?"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.out.exists() and self.out.stat().st_size:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def stop(self) -> Acked:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return read_acked(self.out)


def read_acked(path: Path) -> Acked:
    if not path.exists():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["lease_id"]: tuple(row["addresses"]) for row in rows}


def check(daemon: Daemon, acked: Acked) -> int:
    """Every acknowledged lease is held with its addresses; no address is held twice."""
    leases = all_leases(daemon.client, False, PAGE_LIMIT)["leases"]
    held = {le["lease_id"]: tuple(le["addresses"]) for le in leases}
    for lid, addresses in acked.items():
        assert held.get(lid) == addresses, f"acknowledged lease {lid} lost or changed"
    every = [a for addresses in held.values() for a in addresses]
    assert len(every) == len(set(every)), "an address is leased twice"
    return len(held)


def kill_under_load(daemon: Daemon, clients: list[tuple[str, str | None]], port: int,
                    workdir: Path, rounds: int, seed: int) -> Acked:
    """``rounds`` times: start, check, load from every (host, netns) client, SIGKILL at a
    random moment. Ends with the daemon running and checked; returns all ACKs seen."""
    rng = random.Random(seed)
    acked: Acked = {}
    for round_number in range(rounds):
        daemon.start()
        check(daemon, acked)
        loads = [LoadClient(host, port, workdir / f"acks-{round_number}-{i}.jsonl", netns)
                 for i, (host, netns) in enumerate(clients)]
        # Each client is served before the kill (its interpreter may take a while to
        # start on a loaded machine), then the kill comes at a random moment of the load.
        served = [load.wait_first_ack(15.0) for load in loads]
        time.sleep(rng.uniform(0.0, 0.7))
        daemon.kill()  # requests in flight, commits possibly half-done
        got = [load.stop() for load in loads]
        assert all(served) and all(got), (f"a client got no ACK in round {round_number}:\n"
                                          f"{daemon.logs()[-2000:]}")
        for acks in got:
            acked.update(acks)
    daemon.start()
    assert check(daemon, acked) >= len(acked)
    return acked
