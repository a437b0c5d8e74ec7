"""Each session's recent history: when it appeared, changed, and why it left.

Fed by the hub's listeners (so only what was committed), kept in memory, bounded two
ways: a few entries per session, and a number of sessions (those with the oldest last
event are forgotten first). It starts empty at each daemon start; the record's own
first_seen says how old a session is beyond that. Pure: times come with the events.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sapd.lifecycle import Event

PER_SESSION = 16
SESSIONS = 20_000
REASONS = {"new": "appeared", "changed": "new version", "deleted": "deletion",
           "expired": "expiry (silence or its t= end)"}


@dataclass(frozen=True, slots=True)
class Step:
    time: float
    event: str  # new, changed, deleted, expired
    version: int

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "event": self.event, "version": self.version,
                "reason": REASONS.get(self.event, self.event)}


class SessionHistory:
    def __init__(self, per_session: int = PER_SESSION, sessions: int = SESSIONS) -> None:
        self.per_session = per_session
        self.sessions = sessions
        # lists, not deques: a deque's first block is ~600 bytes, 12 MB at 20,000
        self._steps: OrderedDict[str, list[Step]] = OrderedDict()

    def __call__(self, event: Event) -> None:
        """A hub listener."""
        steps = self._steps.get(event.session_id)
        if steps is None:
            steps = self._steps[event.session_id] = []
            if len(self._steps) > self.sessions:
                self._steps.popitem(last=False)
        else:
            self._steps.move_to_end(event.session_id)
            if len(steps) >= self.per_session:
                del steps[0]
        steps.append(Step(event.time, event.kind, event.record.version))

    def of(self, session_id: str) -> list[Step]:
        return list(self._steps.get(session_id, ()))

    def __len__(self) -> int:
        return len(self._steps)
