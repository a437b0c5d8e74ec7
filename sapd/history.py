"""Each session's recent history: when it appeared, changed, and why it left.

Fed by the hub's listeners (so only what was committed), kept in memory, bounded two
ways: a few entries per session, and a number of sessions (those with the oldest last
event are forgotten first). It starts empty at each daemon start; the record's own
first_seen says how old a session is beyond that. Pure: times come with the events.
"""

from __future__ import annotations

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
        # A plain dict in last-event order (an OrderedDict costs twice the bytes an
        # entry), holding a session's one Step itself (the usual case: it appeared) or a
        # list once it has more: 5.5 -> ~3 MB at 20,000 sessions.
        self._steps: dict[str, Step | list[Step]] = {}

    def __call__(self, event: Event) -> None:
        """A hub listener."""
        step = Step(event.time, event.kind, event.record.version)
        sid = event.session_id
        found = self._steps.pop(sid, None)
        if found is None:
            self._steps[sid] = step
            if len(self._steps) > self.sessions:  # the one whose last event is oldest
                del self._steps[next(iter(self._steps))]
            return
        steps = found if isinstance(found, list) else [found]
        if len(steps) >= self.per_session:
            del steps[0]
        steps.append(step)
        self._steps[sid] = steps  # re-inserted: now the newest

    def of(self, session_id: str) -> list[Step]:
        found = self._steps.get(session_id)
        if found is None:
            return []
        return list(found) if isinstance(found, list) else [found]

    def __len__(self) -> int:
        return len(self._steps)
