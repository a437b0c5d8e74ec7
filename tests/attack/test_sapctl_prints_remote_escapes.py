"""Session names and infos come from any host on the network, and RFC 8866 text may
hold any byte but NUL, CR and LF. `sapctl list`, `show` and `watch` print them raw, so
an announcement named "\\x1b[2J\\x1b[1;1H..." clears the operator's terminal and draws
whatever listing the sender likes (hiding its own forged sessions, for one)."""

from __future__ import annotations

import json

import pytest

from tests.daemons import Daemon, send_local_multicast, wait_session
from tests.packets import announce, sdp_text
from tests.support import run, script

NAME = "\x1b[2J\x1b[1;1HAll quiet\x1b]0;owned\x07"


@pytest.mark.parametrize("command", [["list"], ["show"]], ids=["list", "show"])
def test_sapctl_does_not_print_terminal_escapes_from_the_network(
        sapd: Daemon, command: list[str]) -> None:
    send_local_multicast(announce(sdp_text(name=NAME)))
    (session,) = wait_session(sapd, lambda s: "All quiet" in s["name"])
    args = [*command, session["id"]] if command == ["show"] else command
    result = run(script("sapctl"), "--socket", str(sapd.socket), *args)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout, repr(result.stdout)
    assert "\\x1b[2J" in result.stdout, "the escape is shown, not dropped"
    printed = json.loads(run(script("sapctl"), "--socket", str(sapd.socket), *args,
                             "--json").stdout)
    names = [s["name"] for s in printed["sessions"]] if command == ["list"] else \
        [printed["session"]["name"]]
    assert names == [NAME], "JSON output stays exact"
