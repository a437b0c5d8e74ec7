"""LDAP publication and a PostgreSQL directory that does not answer for a moment: the
NMOS bridge lost changes this way (test_nmos_loses_changes_while_database_away), and the
LDAP publisher reads the same directory the same way.

The publisher's worker takes session ids off its queue, then reads each session. When that
read raised StoreUnavailable (a shared directory's server restarting), the ids were gone
from the queue and the change never reached the LDAP server until sapd restarted: a
withdrawn session's entry stayed, a new one never appeared. Each such turn was logged as
the publisher's own bug (``internal_error``)."""

from __future__ import annotations

from sapd.bridges.ldap import LdapPublisher
from sapd.config import LdapConfig
from sapd.lifecycle import Event
from tests.attack.test_nmos_loses_changes_while_database_away import Flaky as NmosFlaky
from tests.ldap_server import BASE, SERVICE_DN, Slapd
from tests.support import wait_for
from tests.unit.test_nmos_bridge import record


class Flaky(NmosFlaky):
    """The NMOS test's directory whose reads fail while ``away``, closable."""

    def close(self) -> None:
        pass


def event(kind: str, sid: str) -> Event:
    return Event(kind, sid, 0.0, record(0))


def names(slapd: Slapd) -> list[str]:
    return sorted(slapd.values("(objectClass=sapdSession)", "sapdName"))


def test_changes_read_while_the_database_is_away_reach_ldap_once_it_is_back(
        slapd: Slapd) -> None:
    directory = Flaky()
    directory.records["sid0"] = record(0)
    config = LdapConfig(url=slapd.url, base=BASE, bind_dn=SERVICE_DN,
                        password_file=str(slapd.password_file), ttl=10.0)
    publisher = LdapPublisher(config, "lab", lambda: directory)  # type: ignore[arg-type, return-value]
    publisher.start()
    try:
        wait_for(lambda: names(slapd) == ["S0"], 10, what="the first session published")
        directory.away = True
        del directory.records["sid0"]
        directory.records["sid1"] = record(1)
        publisher.on_event(event("deleted", "sid0"))
        publisher.on_event(event("new", "sid1"))
        wait_for(lambda: publisher.backlog == 0, 5, what="the worker took the changes")
        directory.away = False
        wait_for(lambda: names(slapd) == ["S1"], 10,
                 what="the changes made while the database was away")
        assert publisher.errors["internal_error"] == 0
        assert publisher.store_waits >= 1
    finally:
        publisher.close()
