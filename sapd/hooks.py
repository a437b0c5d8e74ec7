"""``sapctl watch --exec CMD``: one command per directory event, one at a time.

The event stream is read on its own thread into a queue, so a slow command never makes
sapd's side of the stream fall behind (which would cost a resync); the commands run in
arrival order, at most ``rate`` starts a second, each with a timeout. Nothing is lost
or reordered while sapctl runs; if the stream breaks (sapd restarts), it reconnects
with the last event id it saw and sapd replays what followed, or sends a ``resync``,
which reaches the command like any other event.

A command gets the event as JSON on stdin and the session in its environment
(SAPD_EVENT, SAPD_EVENT_ID, SAPD_SESSION_ID, _NAME, _SOURCE, _GROUPS, _SCOPE, _MEDIA).
It runs through ``sh -c``: the operator writes the command; what came from the network
reaches it only as data (environment and stdin), never as command text.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sapd.plumbing.client import ClientError

RECONNECT_DELAY = 1.0


def environment(event: dict[str, Any]) -> dict[str, str]:
    """The event as SAPD_* variables (NUL, which an environment cannot hold, removed)."""
    session = event.get("session") or {}

    def text(value: Any) -> str:
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        return "" if value is None else str(value).replace("\0", "")
    return {"SAPD_EVENT": text(event.get("event")), "SAPD_EVENT_ID": text(event.get("event_id")),
            "SAPD_SESSION_ID": text(event.get("id")),
            "SAPD_SESSION_NAME": text(session.get("name")),
            "SAPD_SESSION_SOURCE": text(session.get("source")),
            "SAPD_SESSION_GROUPS": text(session.get("groups")),
            "SAPD_SESSION_SCOPE": text(session.get("scope")),
            "SAPD_SESSION_MEDIA": text(session.get("media"))}


@dataclass
class HookRunner:
    command: str
    rate: float = 10.0  # command starts per second, at most
    timeout: float = 60.0  # seconds a command may run before it is killed
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))
    ran: int = 0
    failed: int = 0
    _last_start: float = float("-inf")

    def run(self, event: dict[str, Any]) -> int:
        """Run the command for one event; its exit status (-1: could not run or timed
        out). Waits first if the previous one started less than 1/rate ago."""
        wait = self._last_start + 1.0 / self.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_start = time.monotonic()
        self.ran += 1
        what = f"{event.get('event')} {event.get('id', '')}".strip()
        try:
            done = subprocess.run(["/bin/sh", "-c", self.command],
                                  input=json.dumps(event).encode() + b"\n",
                                  env={**os.environ, **environment(event)},
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            self.failed += 1
            self.log(f"sapctl: hook timed out after {self.timeout:g} s ({what}); killed")
            return -1
        except OSError as exc:
            self.failed += 1
            self.log(f"sapctl: hook could not run ({what}): {exc}")
            return -1
        if done.returncode != 0:
            self.failed += 1
            self.log(f"sapctl: hook exited {done.returncode} ({what})")
        return done.returncode


def follow(open_stream: Callable[[str | None], Iterator[bytes]],
           events: queue.Queue[dict[str, Any] | None],
           stop: threading.Event, log: Callable[[str], None]) -> None:
    """Read events into ``events`` until ``stop``; reconnect after a broken stream,
    resuming after the last event id seen."""
    last: str | None = None
    while not stop.is_set():
        try:
            for line in open_stream(last):
                if not line.strip():
                    continue
                event = json.loads(line)
                last = event.get("event_id", last)
                events.put(event)
            log("sapctl: event stream ended (sapd stopped?); reconnecting")
        except (ClientError, OSError, ValueError) as exc:  # sapd away, or a broken line
            log(f"sapctl: event stream: {exc}; reconnecting")
        stop.wait(RECONNECT_DELAY)
    events.put(None)


def watch_exec(open_stream: Callable[[str | None], Iterator[bytes]], runner: HookRunner,
               stop: threading.Event | None = None) -> None:
    """Run ``runner`` for every event until ``stop`` is set (or forever)."""
    stop = stop or threading.Event()
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    reader = threading.Thread(target=follow, args=(open_stream, events, stop, runner.log),
                              daemon=True, name="sapctl-events")
    reader.start()
    while True:
        event = events.get()
        if event is None:
            return
        runner.run(event)
