"""The namespace tests' teardown (tests.daemons.stop_daemons) reports what went wrong."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.daemons import stop_daemons


@dataclass
class StandIn:
    """A daemon as the teardown sees it: stop() returns the exit code or raises."""

    name: str
    code: int = 0
    hangs: bool = False
    killed: bool = False
    stopped: bool = False

    def stop(self) -> int:
        self.stopped = True
        if self.hangs:
            raise AssertionError(f"{self.name} did not stop on SIGTERM")
        return self.code

    def logs(self) -> str:
        return f"{self.name}'s log"


def test_teardown_swallowed_a_daemon_that_did_not_stop() -> None:
    hung, fine = StandIn("sapd-a", hangs=True), StandIn("sapd-b")
    with pytest.raises(AssertionError, match="sapd-a did not stop on SIGTERM"):
        stop_daemons([hung, fine])
    assert fine.stopped  # the others are still stopped


def test_teardown_ignored_a_failed_exit_code() -> None:
    with pytest.raises(AssertionError, match=r"sapd-a exited 3(.|\n)*sapd-a's log"):
        stop_daemons([StandIn("sapd-a", code=3), StandIn("sapd-b")])


def test_teardown_accepts_clean_exits_and_daemons_the_test_killed() -> None:
    stop_daemons([StandIn("sapd-a"), StandIn("sapd-b", code=-9, killed=True)])
