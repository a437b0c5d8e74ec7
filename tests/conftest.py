from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, stop_daemons
from tests.ldap_server import slapd  # noqa: F401 (fixture)
from tests.netns.harness import Network
from tests.postgres import (  # noqa: F401 (fixtures)
    postgres_database,
    postgres_server,
    two_lease_stores,
)
from tests.support import need_root


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    need_root()
    before = _namespaces()
    network = Network(tmp_path)
    try:
        yield network
    finally:
        network.teardown()
    leaked = {n for n in _namespaces() - before if n.startswith(network.prefix)}
    assert not leaked, f"namespaces left behind: {leaked}"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(kind: str, host: Any, *args: str, name: str | None = None,
             config: str | None = None) -> Daemon:
        label = name or f"{kind}-{host.name}"
        extra = list(args)
        if config is not None:
            path = tmp_path / f"{label}.toml"
            path.write_text(config)
            extra += ["--config", str(path)]
        daemon = Daemon(kind, tmp_path / label, extra, netns=host.name)
        started.append(daemon)
        return daemon

    yield make
    stop_daemons(started)


_suite_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("/")
    suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _suite_seconds[suite] = _suite_seconds.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _suite_seconds:
        times = ", ".join(f"{suite} {seconds:.1f} s"
                          for suite, seconds in sorted(_suite_seconds.items()))
        terminalreporter.write_line(f"run time by suite: {times}")
