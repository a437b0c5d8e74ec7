"""sapctl watch --exec: a command per event, one at a time, in order, none lost, even
when the command is slower than the events; rate-limited; failures logged."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path

from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce, delete, sdp_text
from tests.support import script, wait_for

HOOK = """#!/bin/sh
# what the hook saw: its environment and the event on stdin, one line per run
event_json=$(cat)
sleep {sleep}
printf '%s\\t%s\\t%s\\t%s\\t%s\\n' "$(date +%s.%N)" "$SAPD_EVENT" "$SAPD_SESSION_NAME" \\
    "$SAPD_EVENT_ID" "$event_json" >> {out}
[ "$SAPD_SESSION_NAME" != "fails" ] || exit 3
"""


def start_watch(sapd: Daemon, tmp_path: Path, sleep: float,
                rate: float) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, hook, errors = tmp_path / "seen.tsv", tmp_path / "hook.sh", tmp_path / "watch.err"
    hook.write_text(HOOK.format(sleep=sleep, out=out))
    hook.chmod(0o755)
    with errors.open("wb") as err:
        proc = subprocess.Popen([script("sapctl"), "--socket", str(sapd.socket), "watch",
                                 "--exec", str(hook), "--rate", str(rate)], stderr=err)
    wait_for(lambda: sapd.stats()["subscribers"] == 1, 5, what="sapctl subscribed")
    return proc, out, errors


def seen(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [line.split("\t") for line in out.read_text().splitlines()]


def test_slow_hook_loses_and_reorders_nothing(sapd: Daemon, tmp_path: Path) -> None:
    proc, out, errors = start_watch(sapd, tmp_path, sleep=0.1, rate=1000)
    try:
        names = [f"n{i:02d}" for i in range(30)]
        for i, name in enumerate(names):  # far faster than the hook runs
            send_local_multicast(announce(sdp_text(session=100 + i, name=name)),
                                 "239.255.255.255")
        send_local_multicast(announce(sdp_text(session=200, name="fails")), "239.255.255.255")
        send_local_multicast(delete(session=100), "239.255.255.255")
        wait_for(lambda: len(seen(out)) == 32, 20, what="32 hook runs")
        time.sleep(0.3)
        rows = seen(out)
        assert len(rows) == 32
        assert [(r[1], r[2]) for r in rows] == [
            *(("new", n) for n in names), ("new", "fails"), ("deleted", "n00")]
        sequence = [int(r[3].rsplit("-", 1)[1]) for r in rows]
        assert sequence == sorted(sequence) and len(set(sequence)) == 32  # in order, once
        stdin = json.loads(rows[0][4])
        assert stdin["event"] == "new" and stdin["session"]["name"] == "n00"
        assert stdin["event_id"] == rows[0][3]
        starts = [float(r[0]) for r in rows]
        assert starts[-1] - starts[0] >= 31 * 0.1  # one at a time: never two at once
    finally:
        proc.terminate()
        proc.wait(5)
    assert "hook exited 3 (new " in errors.read_text()


def test_hook_rate_limit_spaces_the_commands(sapd: Daemon, tmp_path: Path) -> None:
    proc, out, _errors = start_watch(sapd, tmp_path, sleep=0, rate=10)
    try:
        for i in range(6):
            send_local_multicast(announce(sdp_text(session=300 + i, name=f"r{i}")),
                                 "239.255.255.255")
        wait_for(lambda: len(seen(out)) == 6, 10, what="6 hook runs")
        starts = [float(r[0]) for r in seen(out)]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.09, gaps  # at most 10 a second
    finally:
        proc.terminate()
        proc.wait(5)


def test_hook_hears_resync_after_sapd_restarts(sapd: Daemon, tmp_path: Path) -> None:
    """The stream broke: sapctl reconnects with its last event id, which the new run
    cannot resume, so the hook is told to resync, then hears what follows."""
    proc, out, errors = start_watch(sapd, tmp_path, sleep=0, rate=100)
    try:
        send_local_multicast(announce(sdp_text(session=400, name="before")),
                             "239.255.255.255")
        wait_for(lambda: len(seen(out)) == 1, 5, what="first hook run")
        sapd.stop()
        sapd.start()
        wait_for(lambda: [r[1] for r in seen(out)] == ["new", "resync"], 10,
                 what="resync after the restart")
        send_local_multicast(announce(sdp_text(session=401, name="after")), "239.255.255.255")
        wait_for(lambda: len(seen(out)) == 3, 5, what="the next event")
        assert seen(out)[2][1:3] == ["new", "after"]
    finally:
        proc.terminate()
        proc.wait(5)
    assert "reconnecting" in errors.read_text()
