"""`make run`: sapd and madcapd in the foreground, on their embedded defaults or on
the configuration files named by SAPD_CONFIG / MADCAPD_CONFIG (or --sapd-config /
--madcapd-config). Their logs go to stderr, each line marked with its daemon. Both
serve their pages on 127.0.0.1 (SAPD_WEB / MADCAPD_WEB choose other HOST:PORTs).

Says "running" and the control sockets only once both answer their health check;
if either exits or stays unhealthy for RUN_TIMEOUT seconds (default 20), it says
which one and why (its last log lines), stops the other and exits 1. Ctrl-C (or
SIGTERM) stops both and exits 0; a daemon that ends by itself meanwhile makes it 1.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madcap.config import load as load_madcapd
from sapd.config import load as load_sapd
from sapd.plumbing import paths
from sapd.plumbing.client import ClientError, UnixClient

BIN = Path(sys.executable).parent
TAIL = 15  # log lines shown for a daemon that failed


@dataclass
class Daemon:
    name: str
    config: str | None
    web: str
    proc: subprocess.Popen[bytes] | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL))

    def start(self) -> None:
        args = [str(BIN / self.name), "--log-format", "console", "--web", self.web]
        if self.config:
            args += ["--config", self.config]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        """Its log to our stderr, marked; the last lines kept to explain a failure."""
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            print(f"{self.name:8} | {line}", file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def socket(self) -> Path:
        """Where its control socket is, by the daemon's own loader; a configuration it
        refuses gives the default path (the daemon then exits, which is what we report)."""
        try:
            if self.name == "sapd":
                config: Any = load_sapd(self.config, {})
            else:
                config = load_madcapd(self.config, {})
            path: Path = config.socket_path
            return path
        except ValueError:  # ConfigError
            return paths.default_socket(self.name)

    def healthy(self, socket: Path) -> bool:
        try:
            status = UnixClient(socket, timeout=2.0).get_json("/v1/health").get("status")
        except (ClientError, ValueError, AttributeError):
            return False
        return status in ("ok", "degraded")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def why(self) -> str:
        lines = "\n".join(f"    {line}" for line in self.tail) or "    (it logged nothing)"
        return f"last log lines of {self.name}:\n{lines}"


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sapd-config", default=os.environ.get("SAPD_CONFIG") or None)
    p.add_argument("--madcapd-config", default=os.environ.get("MADCAPD_CONFIG") or None)
    p.add_argument("--timeout", type=float, default=os.environ.get("RUN_TIMEOUT", "20"))
    args = p.parse_args()
    daemons = [Daemon("sapd", args.sapd_config, os.environ.get("SAPD_WEB", "127.0.0.1:8375")),
               Daemon("madcapd", args.madcapd_config,
                      os.environ.get("MADCAPD_WEB", "127.0.0.1:8376"))]
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for daemon in daemons:
        daemon.start()
    sockets = {d.name: d.socket() for d in daemons}
    try:
        failed = wait_healthy(daemons, sockets, args.timeout, stop)
        if stop.is_set() and not failed:
            return 0
        if failed:
            for daemon, reason in failed:
                print(f"--- {daemon.name} failed to start ({reason})\n{daemon.why()}",
                      file=sys.stderr)
            names = " and ".join(d.name for d, _ in failed)
            print(f"--- not running: {names} failed; see above", file=sys.stderr)
            return 1
        print("--- running. Control sockets:", flush=True)
        for name, socket in sockets.items():
            print(f"    {name:8} {socket}", flush=True)
        print("--- pages: " + "   ".join(f"{d.name} http://{d.web}/" for d in daemons),
              flush=True)
        print(f"    Try: {BIN}/sapctl --socket {sockets['sapd']} list   "
              f"{BIN}/madcapctl --socket {sockets['madcapd']} leases\n"
              "    Ctrl-C stops both.", flush=True)
        while not stop.wait(0.2):
            ended = [d for d in daemons if d.exit_code is not None]
            if ended:
                for daemon in ended:
                    print(f"--- {daemon.name} ended by itself (exit {daemon.exit_code})\n"
                          f"{daemon.why()}", file=sys.stderr)
                return 1
        return 0
    finally:
        for daemon in daemons:
            daemon.stop()


def wait_healthy(daemons: list[Daemon], sockets: dict[str, Path], timeout: float,
                 stop: threading.Event) -> list[tuple[Daemon, str]]:
    """Until every daemon is healthy, one fails, the time is up or we are stopped:
    the daemons that failed, with why."""
    deadline = time.monotonic() + timeout
    waiting = list(daemons)
    failed: list[tuple[Daemon, str]] = []
    while waiting and not stop.is_set():
        for daemon in list(waiting):
            code = daemon.exit_code
            if code is not None:
                time.sleep(0.2)  # let the relay thread read its last words
                failed.append((daemon, f"exit {code}"))
                waiting.remove(daemon)
            elif daemon.healthy(sockets[daemon.name]):
                waiting.remove(daemon)
        if failed and not waiting:
            break
        if time.monotonic() > deadline:
            failed += [(d, f"not healthy after {timeout:g} s on {sockets[d.name]}")
                       for d in waiting]
            break
        time.sleep(0.1)
    return failed


if __name__ == "__main__":
    sys.exit(main())
