"""NMOS registration and a PostgreSQL directory that does not answer for a moment:
found by restarting PostgreSQL (pg_ctl restart) under a sapd with NMOS on.

The bridge takes a session id off its queue, then reads the session. When that read
raised StoreUnavailable (the reader's connection broken by the restart, or inside its
reconnect pause), the id was gone from the queue and the change never reached the
registry: a deleted session's Sender stayed registered, a new one was never
registered, until sapd restarted. The whole-directory comparison was lost the same way.
Each such turn was also logged with a traceback as the bridge's own bug
(``internal_error``), and the loop went round again at once.
"""

from __future__ import annotations

from sapd.bridges.nmos import NmosBridge
from sapd.plumbing.errors import StoreUnavailable
from sapd.records import SessionRecord
from tests.unit.test_nmos_bridge import Directory, bridge, event, kinds, record


def quiet_bridge(directory: Directory) -> NmosBridge:
    """The bridge with its address known but no registry to send to (no event loop)."""
    made = bridge(directory)
    made._registries = list
    made.registry = None
    return made


class Flaky(Directory):
    """A directory whose reads fail while ``away``."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False

    def get(self, sid: str) -> SessionRecord | None:
        if self.away:
            raise StoreUnavailable("the directory database is unreachable")
        return super().get(sid)

    def iter_all(self, light: bool = False, own: bool = False):  # type: ignore[no-untyped-def]
        if self.away:
            raise StoreUnavailable("the directory database is unreachable")
        return super().iter_all(light, own)


def test_change_read_while_the_database_is_away_is_mapped_once_it_is_back() -> None:
    directory = Flaky()
    directory.records["sid0"] = record(0)
    made = quiet_bridge(directory)
    made._safe_turn()
    assert kinds(made).get("sender") == 1
    del directory.records["sid0"]
    directory.records["sid1"] = record(1)
    made.on_event(event("deleted", "sid0"))
    made.on_event(event("new", "sid1"))
    directory.away = True
    made._safe_turn()
    directory.away = False
    made._safe_turn()
    senders = {data.data["tags"]["urn:x-sapd:session"][0]
               for (kind, _), data in made.machine.desired.items() if kind == "sender"}
    assert senders == {"sid1"}
    assert made.machine.errors["internal_error"] == 0


def test_whole_directory_comparison_waits_for_the_database() -> None:
    directory = Flaky()
    directory.records["sid0"] = record(0)
    made = quiet_bridge(directory)
    directory.away = True
    made._safe_turn()
    directory.away = False
    made._safe_turn()
    assert kinds(made).get("sender") == 1
    assert made.machine.errors["internal_error"] == 0
