"""A Last-Event-ID whose number str.isdigit() takes and int() does not: found while
following another site's events through /v1/events with odd resume ids.

``Last-Event-ID: <run>-\u00b2`` (or 5,000 digits) raised ValueError inside the event
log's resume, so GET /v1/events ended in a 500 instead of the documented ``resync``.
"""

from __future__ import annotations

import pytest

from sapd.eventlog import RESYNC, EventLog


@pytest.mark.parametrize("seq", ["\u00b2", "\uff11", "1" * 5000, "-1", ""])
def test_unreadable_resume_id_is_a_resync(seq: str) -> None:
    log = EventLog(run="r")
    log.publish("new", dict)
    assert log.since(f"r-{seq}") == [RESYNC]
