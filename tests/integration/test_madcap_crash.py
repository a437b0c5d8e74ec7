"""SIGKILL madcapd in the middle of a stream of requests: after each restart every lease
acknowledged before the kill is still held by its client, and no address is held twice."""

from __future__ import annotations

from pathlib import Path

from tests.daemons import Daemon
from tests.madcap_load import kill_under_load
from tests.support import free_udp_port


def test_sigkill_during_requests_loses_nothing(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "m.toml"
    config.write_text('[[scope]]\nname = "crash"\nrange = "239.255.0.0/16"\n'
                      'pool = "239.255.0.0-239.255.199.255"\n'
                      'max_addresses_per_client = 1000000\n')  # all load from one host
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{port}",
                                                 "--config", str(config)])
    try:
        acked = kill_under_load(daemon, [("127.0.0.1", None)], port, tmp_path, rounds=5,
                                seed=5)
        assert len(acked) > 5
    finally:
        daemon.stop()
