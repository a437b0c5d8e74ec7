from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon


@pytest.fixture
def sapd_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Daemon] = []

    def make(*args: str, config: str | None = None, name: str = "a") -> Daemon:
        extra = list(args)
        if config is not None:
            path = tmp_path / f"{name}.toml"
            path.write_text(config)
            extra += ["--config", str(path)]
        daemon = Daemon("sapd", tmp_path / name, ["--interface", "lo", *extra])
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture
def sapd(sapd_factory: object) -> Daemon:
    return sapd_factory().start()  # type: ignore[operator, no-any-return]
