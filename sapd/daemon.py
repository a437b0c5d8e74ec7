"""sapd: the composition root. Wires engine, store, sockets, API and systemd together.

All protocol decisions live in the sans-IO engine (lifecycle) and the announce
schedule; the hub makes changes durable, then heard. This module builds the parts,
starts and stops them, and reports on them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sapd import __version__
from sapd.announce.sender import MulticastSender
from sapd.announce.service import Announcer
from sapd.api import build_app
from sapd.config import SapdConfig, load
from sapd.conflicts import Conflict
from sapd.conflictscan import ConflictScanner
from sapd.history import SessionHistory
from sapd.hub import Hub
from sapd.lifecycle import (
    ACCEPTED_CHANGED,
    ACCEPTED_DELETE,
    ACCEPTED_NEW,
    ACCEPTED_REFRESH,
    PROFILES,
    Engine,
)
from sapd.plumbing import logs, service, systemd
from sapd.plumbing.clock import CLOCK_STEP_WARNING, SteadyClock
from sapd.plumbing.config import ConfigError
from sapd.plumbing.control import ControlServer
from sapd.plumbing.errors import NEEDS_MIGRATING, StoreUnusable
from sapd.plumbing.multicast import (
    KERNEL_DROPS,
    Interface,
    InterfaceFollower,
    MulticastReceiver,
    arrival_of,
)
from sapd.plumbing.web import WebListener
from sapd.store import (
    backend_name,
    open_directory,
    schema_status,
    site_name,
    start_writer,
)

if TYPE_CHECKING:
    from sapd.bridges.ldap import LdapPublisher
    from sapd.bridges.nmos import NmosBridge
    from sapd.bridges.ravenna import RavennaBridge
    from sapd.store.campus import CampusFollower

log = logs.get("sapd")

ACCEPTED = {ACCEPTED_NEW, ACCEPTED_CHANGED, ACCEPTED_REFRESH, ACCEPTED_DELETE}
INTERFACE_RESYNC = 30.0


class SapDaemon(service.Service):
    def __init__(self, config: SapdConfig) -> None:
        super().__init__()
        self.config = config
        self.engine = Engine(profile=config.expiry_profile(),
                             limits=config.limits.to_limits(), scopes=config.scope_table(),
                             trust=config.trust.trust_policy())
        self.engine.site = self.site = site_name(config)
        self.clock = SteadyClock()
        self.hub: Hub = None  # type: ignore[assignment]  # set in start()
        self.announcer: Announcer | None = None
        self.receiver: MulticastReceiver | None = None
        self.control: ControlServer | None = None
        self.web: WebListener | None = None
        self.history = SessionHistory()
        self.conflict_scanner: ConflictScanner | None = None
        self.follower: InterfaceFollower | None = None
        self.ldap: LdapPublisher | None = None
        self.ravenna: RavennaBridge | None = None
        self.nmos: NmosBridge | None = None
        self.campus: CampusFollower | None = None
        self.notifier = systemd.Notifier()
        self.started = self.clock.monotonic()
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._state_lock = -1  # descriptor holding the state directory's lock
        self._clock_warned = False
        self._interface_names: dict[int, str] = {}  # index -> name, for heard_via

    # -- start and stop ---------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        state = self.config.state_path
        state.mkdir(parents=True, exist_ok=True)
        self._state_lock = service.lock_state(state)
        service.private_state(state)
        store = open_directory(self.config, state, own=True)  # opens first: it migrates
        stale = store.mark_remote_stale()
        # The store process starts while the engine loads; it keeps the state lock until
        # it has committed the last batch, even if this process is killed.
        writer = start_writer(self.config, state, loop, keep_fds=(self._state_lock,))
        self.hub = Hub(self.engine, store, writer, loop, self.clock)
        self.hub.listeners.append(self.history)
        with service.collector_paused():
            loaded = self.engine.load(store.iter_all(light=True, own=True))
        service.settle_memory()
        log.info("directory loaded", sessions=loaded, stale=stale, site=self.site,
                 backend=backend_name(self.config), path=str(state))
        self._start_ldap(state)
        # rows a previous run heard over RAVENNA: kept while the browse finds them again
        self.engine.ravenna_grace(self.clock.now(), self.config.ravenna.grace)
        self._follow_campus()
        groups = self.config.listen_groups()
        self.engine.arrival_reader = self._arrival
        # pktinfo: each datagram comes with its sender, interface and destination group
        self.receiver = MulticastReceiver(loop, groups, self.config.port,
                                          self.hub.datagram_handler(), self.hub.after_batch,
                                          pktinfo=True)
        self.receiver.open()
        self.hub.receiver = self.receiver
        self.follower = InterfaceFollower(loop, self.receiver,
                                          lambda: self.config.interfaces,
                                          self._interfaces_changed)
        await self.follower.start()
        self.announcer = Announcer(self.hub, MulticastSender(), self.config)
        self.announcer.set_interfaces(self.follower.chosen)
        await self.announcer.restore()
        self.control = ControlServer(build_app(self, self.announcer), self.config.socket_path,
                                     self.config.socket_group,
                                     self.config.socket_connections_per_uid)
        await self.control.start()
        self._build_nmos()
        if self.config.web.listen:
            # imported only when on: the pages cost start-up time nobody else should pay
            from sapd.web.app import build_web_app  # noqa: PLC0415

            self.web = WebListener(build_web_app(self, self.announcer, self.nmos),
                                   self.config.web.listen)
            await self.web.start()
        await self._start_ravenna()
        if self.nmos is not None:  # after the listener: its href is the listener's
            await self.nmos.start()
        self.hub.after_batch()  # expire anything already due, arm the timer
        self._tasks.append(asyncio.create_task(self._periodic()))
        self.conflict_scanner = ConflictScanner(lambda: open_directory(self.config, state))
        self._tasks.append(asyncio.create_task(self.conflict_scanner.run()))
        interval = systemd.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(service.watchdog(self.notifier, interval)))
        self.ready = True
        self.notifier.ready(self.status_line())
        log.info("ready", socket=str(self.config.socket_path), interfaces=self.interfaces,
                 groups=len(groups), profile=self.config.profile,
                 socket_activated=self.control.inherited)

    async def stop(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        if self.announcer is not None:
            await self.announcer.shutdown()
        await service.cancel_all(self._tasks)
        if self.ravenna is not None:
            await self.ravenna.stop()
        if self.nmos is not None:
            await self.nmos.stop()
        if self.conflict_scanner is not None:
            self.conflict_scanner.close()
        if self.campus is not None:
            self.campus.close()
        if self.follower:
            self.follower.stop()
        if self.hub is not None:  # None when start() failed before the store opened
            self.hub.close_subscribers()
        if self.web:
            await self.web.stop()
        if self.control:
            await self.control.stop()
        if self.receiver:
            self.receiver.close()
        if self.hub is not None:
            self.hub.close()
        if self.ldap is not None:  # its entries stay (and age out by TTL, if dynamic)
            self.ldap.close()
        os.close(self._state_lock)
        self.notifier.close()

    async def _start_ravenna(self) -> None:
        """RAVENNA ingest: on unless [ravenna] enabled = false; quietly unavailable where
        mDNS cannot be browsed."""
        if not self.config.ravenna.enabled:
            return
        # imported here: zeroconf's start-up cost is paid only with the bridge on
        from sapd.bridges.ravenna import RavennaBridge  # noqa: PLC0415

        self.ravenna = RavennaBridge(self.hub, self.config.ravenna,
                                     self.config.limits.max_sdp_bytes)
        await self.ravenna.start()
        if self.config.ravenna.announce_on_sap and self.announcer is not None:
            from sapd.bridges.ravenna import RavennaRelay  # noqa: PLC0415

            self.hub.listeners.append(RavennaRelay(self.announcer, self.engine).on_event)

    def _start_ldap(self, state: Path) -> None:
        """LDAP publication: a listener of committed events with its own store reader."""
        if not self.config.ldap.enabled:
            return
        # imported here: python-ldap is optional (sapd[ldap]); the config checked it is there
        from sapd.bridges.ldap import LdapPublisher  # noqa: PLC0415

        config = self.config
        self.ldap = LdapPublisher(config.ldap, self.site,
                                  lambda: open_directory(config, state))
        self.hub.listeners.append(self.ldap.on_event)
        self.ldap.start()

    def _build_nmos(self) -> None:
        """NMOS registration: a listener of committed events, reading the hub's store."""
        config = self.config
        if not config.nmos.enabled:
            return
        # imported here: aiohttp's client and the mapping cost nothing when it is off
        from sapd.bridges.nmos import NmosBridge, machine_id  # noqa: PLC0415
        from sapd.plumbing.web import parse_host_port  # noqa: PLC0415

        assert config.web.listen is not None  # the configuration checked it
        registries = None
        if config.nmos.discover:
            from sapd.bridges.nmos_discovery import RegistryBrowser  # noqa: PLC0415

            browser = RegistryBrowser()
            registries = browser.registries
            self._tasks.append(asyncio.create_task(browser.run()))
        hostname = socket.gethostname()
        self.nmos = NmosBridge(config.nmos, f"{machine_id()}:{config.state_path}",
                               self.hub.reader, self.clock,
                               parse_host_port(config.web.listen), config.web.public_url,
                               lambda: self.interfaces, config.nmos.label or hostname,
                               registries, site=self.site)
        self.hub.listeners.append(self.nmos.on_event)

    def _follow_campus(self) -> None:
        """A shared directory: other sites' sessions are events here too."""
        if backend_name(self.config) != "postgresql":
            return
        from sapd.store import postgres_feed  # noqa: PLC0415
        from sapd.store.campus import CampusFollower  # noqa: PLC0415  # psycopg

        config = self.config
        self.campus = CampusFollower(lambda: postgres_feed(config), self.hub.publish_remote,
                                     asyncio.get_running_loop(), self.hub.resync_remote)
        self.campus.start()

    # -- interfaces ----------------------------------------------------------------------
    @property
    def interfaces(self) -> list[str]:
        return self.follower.names if self.follower else []

    def _interfaces_changed(self, chosen: list[Interface]) -> None:
        found = self.follower.found if self.follower else chosen
        self._interface_names = {i.index: i.name for i in found}
        own = [a for i in found for a in (*i.ipv4, *i.ipv6)]
        if self.config.announce.source:
            own.append(self.config.announce.source)
        self.engine.set_own_addresses(own)
        if self.announcer is not None:
            self.announcer.set_interfaces(chosen)

    def _arrival(self, ancillary: list[tuple[int, int, bytes]]) -> tuple[str, str]:
        """heard_via's (group, interface) of a datagram, from its pktinfo."""
        index, group = arrival_of(ancillary)
        return group, self._interface_names.get(index, str(index))

    async def resync_interfaces(self) -> None:
        if self.follower is not None:
            await self.follower.resync()

    async def _periodic(self) -> None:
        last_resync = time.monotonic()
        settler = service.MemorySettler(self._sessions_stored())
        while True:
            await asyncio.sleep(self.config.refresh_flush_interval)
            self.hub.flush_refreshes()
            settler.note(self._sessions_stored(), idle=not self._store_backlog())
            self._check_clock()
            if time.monotonic() - last_resync >= INTERFACE_RESYNC:
                last_resync = time.monotonic()
                await self.resync_interfaces()
            self.notifier.status(self.status_line())

    async def reload(self, path: str | None, overrides: dict[str, Any]) -> None:
        """SIGHUP: re-read the configuration. Profile, limits, interfaces and log level
        change in place; groups, port, socket and state directory need a restart."""
        self.notifier.reloading()
        try:
            new = load(path, overrides)
        except ConfigError as exc:
            log.error("reload failed; keeping the running configuration", error=str(exc))
            self.notifier.ready(self.status_line())
            return
        self.engine.profile = new.expiry_profile()
        self.engine.limits = new.limits.to_limits()
        self.engine.scopes = new.scope_table()
        if new.trust != self.config.trust:  # keeps the replay memory when unchanged
            self.engine.trust = new.trust.trust_policy()
        needs_restart = [k for k in ("port", "socket", "state_dir", "socket_group", "web",
                                     "store")
                         if getattr(new, k) != getattr(self.config, k)]
        if new.listen_groups() != self.config.listen_groups():  # a [[scope]] changes it too
            needs_restart.insert(0, "groups")
        if new.ldap != self.config.ldap:
            needs_restart.append("ldap")
        if new.ravenna != self.config.ravenna:
            needs_restart.append("ravenna")
        if new.nmos != self.config.nmos:
            needs_restart.append("nmos")
        self.config = new
        logs.setup(new.log_format, new.log_level)
        await self.resync_interfaces()
        if self.announcer is not None:
            self.announcer.reconfigure(new)
        if self.control is not None:
            self.control.gate.per_uid = new.socket_connections_per_uid
        log.info("reloaded", profile=new.profile, needs_restart=needs_restart)
        self.notifier.ready(self.status_line())

    def _check_clock(self) -> None:
        drift = self.clock.drift()
        if abs(drift) >= CLOCK_STEP_WARNING and not self._clock_warned:
            self._clock_warned = True
            log.warning("system clock stepped; sessions age by elapsed time, and the times "
                        "stored and shown follow the wall clock", step=round(drift, 3))

    def _sessions_stored(self) -> int:
        counters = self.engine.counters
        return counters.get(ACCEPTED_NEW, 0) + counters.get(ACCEPTED_CHANGED, 0)

    # -- reporting -----------------------------------------------------------------------
    def conflicts(self) -> list[Conflict]:
        """Live sessions of different senders on one group and port, as last scanned
        (at most about a second behind the directory)."""
        return self.conflict_scanner.conflicts if self.conflict_scanner else []

    def conflicted(self) -> set[str]:
        """Ids of the sessions in those conflicts."""
        return self.conflict_scanner.ids if self.conflict_scanner else set()

    def web_urls(self) -> tuple[str | None, str | None]:
        """How others reach the web listener ([web] public_url), and its own address."""
        return self.config.web.public_url, self.web.url if self.web is not None else None

    def sites(self) -> list[dict[str, Any]]:
        """The sites of a shared directory (the database's view: heartbeat age, whether
        other sites take it for gone); this one alone with SQLite."""
        reader = self.hub.reader if self.hub is not None else None
        listed = getattr(reader, "sites", None)
        if callable(listed):
            found: list[dict[str, Any]] = listed()
            return found
        return [{"site": self.site, "heartbeat_age": 0.0, "silent": False,
                 "sessions": len(self.engine)}]

    def _store_backlog(self) -> int:
        """Batches not yet committed: the hub holds all but the one with the writer."""
        return max(self.hub.pending, self.hub.writer.backlog) if self.hub else 0

    def status_line(self) -> str:
        counters = self.engine.counters
        received = sum(counters.values()) - counters["expired"]
        line = (f"{len(self.engine)} sessions, {received} packets, "
                f"{len(self.interfaces)} interfaces")
        if self.hub is not None and self.hub.degraded is not None:
            line += f"; store refusing writes ({self.hub.degraded}), holding them"
        return line

    def uptime(self) -> float:
        return round(self.clock.monotonic() - self.started, 3)

    def health(self) -> dict[str, Any]:
        """ok; starting; or degraded while the store refuses writes (they are held in
        memory and land once it takes them again; "store" says why), while a shared
        directory's database is unreachable even with nothing to write, while LDAP
        publication is on and its server is unreachable ("ldap" says which), or while
        the NMOS registry fails ("nmos": "backoff")."""
        problem = self.hub.degraded if self.hub is not None else None
        if problem is None and self.campus is not None and self.campus.state == "down":
            problem = "database_unreachable"  # nothing to write now, but reads fail
        ldap_state = self.ldap.state if self.ldap is not None else "off"
        # backoff: the registry fails or is unreachable; no registry found yet: "none"
        nmos_state = "off" if self.nmos is None else \
            self.nmos.machine.state if self.nmos.registry else "none"
        degraded = problem or ldap_state == "down" or nmos_state == "backoff"
        out: dict[str, Any] = {
            "status": "starting" if not self.ready else "degraded" if degraded else "ok",
            "version": __version__, "sessions": len(self.engine), "uptime": self.uptime(),
            "ldap": ldap_state, "nmos": nmos_state}
        if problem:
            out["store"] = problem
            out["store_pending"] = self.hub.pending
        failed = self.receiver.failed_joins if self.receiver else {}
        if failed:  # a group not joined on an interface: its announcements go unheard
            (group, ifindex), why = min(failed.items())
            out["memberships"] = (f"{len(failed)} group joins failed, e.g. {group} on "
                                  f"interface {ifindex}: {why}")
            if self.ready:
                out["status"] = "degraded"
        return out

    def _drops(self) -> Counter[str]:
        drops = Counter({k: v for k, v in self.engine.counters.items()
                         if k not in ACCEPTED and k != "expired"})
        kernel = self.receiver.kernel_drops if self.receiver is not None else 0
        if kernel:  # never read: the receive buffer was full
            drops[KERNEL_DROPS] = kernel
        return drops

    def stats(self) -> dict[str, Any]:
        counters = self.engine.counters
        receiver = self.receiver
        return {
            "sessions": len(self.engine),
            "store_backlog": self._store_backlog(),
            "store_restarts": self.hub.writer.restarts if self.hub else 0,
            "site": self.site,
            "campus": {"backend": backend_name(self.config),
                       "following": self.campus.state if self.campus else "off",
                       "heard": self.campus.heard if self.campus else 0,
                       "outages": self.campus.outages if self.campus else 0,
                       "resyncs": self.campus.resyncs if self.campus else 0},
            "store": {"problem": self.hub.degraded if self.hub else None,
                      "pending": self.hub.pending if self.hub else 0,
                      "failures": self.hub.failure_counts() if self.hub else {}},
            "sessions_by_scope": dict(self.engine.sessions_by_scope()),
            "packets": {k: counters[k] for k in sorted(ACCEPTED)},
            "drops": dict(sorted(self._drops().items())),
            "expired": counters["expired"],
            "profile": self.config.profile,
            "interfaces": self.interfaces,
            "memberships": sorted(f"{g}%{i}" for g, i in receiver.joined) if receiver else [],
            "failed_joins": {f"{g}%{i}": why for (g, i), why in receiver.failed_joins.items()}
            if receiver else {},
            "subscribers": self.hub.subscribers if self.hub else 0,
            "event_run": self.hub.events.run if self.hub else "",
            "event_seq": self.hub.events.seq if self.hub else 0,
            "local_announcements": (self.announcer.count() if self.announcer else 0),
            "control": self.control.gate.stats() if self.control else {},
            "ldap": self.ldap.stats() if self.ldap is not None else {"state": "off"},
            "ravenna": (self.ravenna.stats() if self.ravenna is not None
                        else {"state": "off"}),
            "nmos": self.nmos.stats() if self.nmos is not None else {"state": "off"},
            "uptime": self.uptime(),
            "version": __version__,
        }

    def metrics_text(self) -> str:
        counters = self.engine.counters
        lines = ["# HELP sapd_packets_total SAP packets received, by outcome.",
                 "# TYPE sapd_packets_total counter"]
        for outcome in sorted(set(counters) - {"expired"}):
            lines.append(f'sapd_packets_total{{outcome="{outcome}"}} {counters[outcome]}')
        lines += ["# HELP sapd_drops_total Packets dropped, by reason.",
                  "# TYPE sapd_drops_total counter"]
        for reason, value in sorted(self._drops().items()):
            lines.append(f'sapd_drops_total{{reason="{reason}"}} {value}')
        lines += ["# HELP sapd_sessions Sessions in the directory, by scope.",
                  "# TYPE sapd_sessions gauge"]
        for scope, value in sorted(self.engine.sessions_by_scope().items()):
            lines.append(f'sapd_sessions{{scope="{scope or "unscoped"}"}} {value}')
        lines += ["# HELP sapd_expired_total Sessions expired by silence or t= end.",
                  "# TYPE sapd_expired_total counter",
                  f"sapd_expired_total {counters['expired']}",
                  "# HELP sapd_group_memberships Joined (group, interface) pairs.",
                  "# TYPE sapd_group_memberships gauge",
                  f"sapd_group_memberships {len(self.receiver.joined) if self.receiver else 0}",
                  "# HELP sapd_event_subscribers Connected event stream clients.",
                  "# TYPE sapd_event_subscribers gauge",
                  f"sapd_event_subscribers {self.hub.subscribers if self.hub else 0}",
                  "# HELP sapd_store_backlog Batches handed to the store process, not yet "
                  "committed.",
                  "# TYPE sapd_store_backlog gauge",
                  f"sapd_store_backlog {self._store_backlog()}",
                  "# HELP sapd_store_restarts_total Store processes that ended and were "
                  "replaced.",
                  "# TYPE sapd_store_restarts_total counter",
                  f"sapd_store_restarts_total {self.hub.writer.restarts if self.hub else 0}",
                  "# HELP sapd_event_resyncs_total Event subscribers that fell behind their "
                  "queue and were sent a resync.",
                  "# TYPE sapd_event_resyncs_total counter",
                  f"sapd_event_resyncs_total {self.hub.events.resyncs if self.hub else 0}",
                  "# HELP sapd_conflicts Groups and ports that live sessions of different "
                  "senders share.",
                  "# TYPE sapd_conflicts gauge",
                  f"sapd_conflicts {len(self.conflicts())}",
                  "# HELP sapd_store_failures_total Directory writes refused, by reason "
                  "(undone: records the store could not take, forgotten).",
                  "# TYPE sapd_store_failures_total counter"]
        for reason, count in (self.hub.failure_counts() if self.hub else {}).items():
            lines.append(f'sapd_store_failures_total{{reason="{reason}"}} {count}')
        degraded = self.hub is not None and self.hub.degraded is not None
        lines += ["# HELP sapd_store_degraded 1 while the store refuses writes (held, not "
                  "lost).",
                  "# TYPE sapd_store_degraded gauge",
                  f"sapd_store_degraded {int(degraded)}",
                  "# HELP sapd_store_pending Batches taken from the engine, not yet "
                  "committed.",
                  "# TYPE sapd_store_pending gauge",
                  f"sapd_store_pending {self.hub.pending if self.hub else 0}"]
        if self.announcer is not None:
            lines += self.announcer.metrics_lines()
        if self.control is not None:
            lines += self.control.gate.metrics_lines("sapd")
        if self.ldap is not None:
            lines += self.ldap.metrics_lines()
        if self.ravenna is not None:
            lines += self.ravenna.metrics_lines()
        if self.nmos is not None:
            lines += self.nmos.metrics_lines()
        return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = service.daemon_parser("sapd", "SAP/SDP multicast session directory", __version__,
                              "where the directory database lives")
    p.add_argument("--interface", action="append", default=[], metavar="IFACE",
                   help="listen (and announce) on IFACE; repeat for several "
                        "(default: every multicast-capable interface that is up)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="expiry/announce profile")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"])
    p.add_argument("--migrate", nargs="?", const="apply", choices=["apply", "check"],
                   help="bring the directory's schema up to date and exit (0); with "
                        f"'check', only say whether it is current (0) or not "
                        f"({NEEDS_MIGRATING}); 1: the directory cannot be used")
    return p


def migrate(config_path: str | None, overrides: dict[str, Any], mode: str) -> int:
    """``sapd --migrate [check]``: the directory's schema, for an operator or a package
    upgrade; several sapd on one database take turns (an advisory lock)."""
    try:
        config = load(config_path, overrides)
        found, now, wanted = schema_status(config, config.state_path, mode == "apply")
    except ConfigError as exc:
        print(f"sapd: configuration: {exc}", file=sys.stderr)
        return 2
    except StoreUnusable as exc:
        print(f"sapd: {exc}", file=sys.stderr)
        return 1
    where = backend_name(config)
    if mode == "check":
        state = "current" if found == wanted else \
            "newer than this sapd" if found > wanted else f"needs migrating to {wanted}"
        print(f"sapd: {where} directory schema version {found}: {state}")
        return 0 if found == wanted else NEEDS_MIGRATING
    print(f"sapd: {where} directory schema version {now}"
          + (f" (migrated from {found})" if found != now else " (current)"))
    return 0


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {"state_dir": args.state_dir, "socket": args.socket, "interfaces": args.interface,
            "profile": args.profile, "log_format": args.log_format,
            "log_level": args.log_level, "event_loop": args.event_loop,
            "web": {"listen": args.web} if args.web else None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.migrate:
        return migrate(args.config, overrides_from(args), args.migrate)
    return service.main("sapd", args.config, overrides_from(args), load, SapDaemon)


if __name__ == "__main__":
    sys.exit(main())
