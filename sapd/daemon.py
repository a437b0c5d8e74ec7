"""sapd: the composition root. Wires engine, store, sockets, API and systemd together.

All protocol decisions live in the sans-IO engine (lifecycle) and the announce
schedule; the hub makes changes durable, then heard. This module builds the parts,
starts and stops them, and reports on them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from typing import Any

from sapd import __version__
from sapd.announce.sender import MulticastSender
from sapd.announce.service import Announcer
from sapd.api import build_app
from sapd.config import SapdConfig, load
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
from sapd.plumbing.clock import SteadyClock
from sapd.plumbing.config import ConfigError
from sapd.plumbing.control import ControlServer
from sapd.plumbing.multicast import (
    Interface,
    InterfaceFollower,
    MulticastReceiver,
    arrival_of,
)
from sapd.store import open_directory, start_writer

log = logs.get("sapd")

ACCEPTED = {ACCEPTED_NEW, ACCEPTED_CHANGED, ACCEPTED_REFRESH, ACCEPTED_DELETE}
INTERFACE_RESYNC = 30.0
CLOCK_STEP_WARNING = 2.0  # seconds the system clock may be stepped before a warning


class SapDaemon(service.Service):
    def __init__(self, config: SapdConfig) -> None:
        super().__init__()
        self.config = config
        self.engine = Engine(profile=config.expiry_profile(),
                             limits=config.limits.to_limits(), scopes=config.scope_table())
        self.clock = SteadyClock()
        self.hub: Hub = None  # type: ignore[assignment]  # set in start()
        self.announcer: Announcer | None = None
        self.receiver: MulticastReceiver | None = None
        self.control: ControlServer | None = None
        self.follower: InterfaceFollower | None = None
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
        store = open_directory(self.config, state)  # opens first: it migrates
        stale = store.mark_remote_stale()
        # The store process starts while the engine loads; it keeps the state lock until
        # it has committed the last batch, even if this process is killed.
        writer = start_writer(self.config, state, loop, keep_fds=(self._state_lock,))
        self.hub = Hub(self.engine, store, writer, loop, self.clock)
        with service.collector_paused():
            loaded = self.engine.load(store.iter_all(light=True))
        service.settle_memory()
        log.info("directory loaded", sessions=loaded, stale=stale, path=str(state))
        groups = self.config.listen_groups()
        self.engine.arrival_reader = self._arrival
        # pktinfo: each datagram comes with its sender, interface and destination group
        self.receiver = MulticastReceiver(loop, groups, self.config.port,
                                          self.hub.datagram_handler(), self.hub.after_batch,
                                          pktinfo=True)
        self.receiver.open()
        self.follower = InterfaceFollower(loop, self.receiver,
                                          lambda: self.config.interfaces,
                                          self._interfaces_changed)
        await self.follower.start()
        self.announcer = Announcer(self.hub, MulticastSender(), self.config)
        self.announcer.set_interfaces(self.follower.chosen)
        await self.announcer.restore()
        self.control = ControlServer(build_app(self, self.announcer), self.config.socket_path,
                                     self.config.socket_group)
        await self.control.start()
        self.hub.after_batch()  # expire anything already due, arm the timer
        self._tasks.append(asyncio.create_task(self._periodic()))
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
        if self.follower:
            self.follower.stop()
        if self.hub is not None:  # None when start() failed before the store opened
            self.hub.close_subscribers()
        if self.control:
            await self.control.stop()
        if self.receiver:
            self.receiver.close()
        if self.hub is not None:
            self.hub.close()
        os.close(self._state_lock)
        self.notifier.close()

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
            settler.note(self._sessions_stored(), idle=not self.hub.writer.backlog)
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
        needs_restart = [k for k in ("port", "socket", "state_dir", "socket_group")
                         if getattr(new, k) != getattr(self.config, k)]
        if new.listen_groups() != self.config.listen_groups():  # a [[scope]] changes it too
            needs_restart.insert(0, "groups")
        self.config = new
        logs.setup(new.log_format, new.log_level)
        await self.resync_interfaces()
        if self.announcer is not None:
            self.announcer.reconfigure(new)
        log.info("reloaded", profile=new.profile, needs_restart=needs_restart)
        self.notifier.ready(self.status_line())

    def _check_clock(self) -> None:
        drift = self.clock.drift()
        if abs(drift) >= CLOCK_STEP_WARNING and not self._clock_warned:
            self._clock_warned = True
            log.warning("system clock stepped; sessions age by elapsed time, and the times "
                        "stored are off by the step until sapd restarts",
                        step=round(drift, 3))

    def _sessions_stored(self) -> int:
        counters = self.engine.counters
        return counters.get(ACCEPTED_NEW, 0) + counters.get(ACCEPTED_CHANGED, 0)

    # -- reporting -----------------------------------------------------------------------
    def status_line(self) -> str:
        counters = self.engine.counters
        received = sum(counters.values()) - counters["expired"]
        return (f"{len(self.engine)} sessions, {received} packets, "
                f"{len(self.interfaces)} interfaces")

    def uptime(self) -> float:
        return round(self.clock.monotonic() - self.started, 3)

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.ready else "starting", "version": __version__,
                "sessions": len(self.engine), "uptime": self.uptime()}

    def _drops(self) -> Counter[str]:
        return Counter({k: v for k, v in self.engine.counters.items()
                        if k not in ACCEPTED and k != "expired"})

    def stats(self) -> dict[str, Any]:
        counters = self.engine.counters
        receiver = self.receiver
        return {
            "sessions": len(self.engine),
            "store_backlog": self.hub.writer.backlog if self.hub else 0,
            "store_restarts": self.hub.writer.restarts if self.hub else 0,
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
            "local_announcements": (self.announcer.count() if self.announcer else 0),
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
                  f"sapd_store_backlog {self.hub.writer.backlog if self.hub else 0}",
                  "# HELP sapd_store_restarts_total Store processes that ended and were "
                  "replaced.",
                  "# TYPE sapd_store_restarts_total counter",
                  f"sapd_store_restarts_total {self.hub.writer.restarts if self.hub else 0}"]
        if self.announcer is not None:
            lines += self.announcer.metrics_lines()
        return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = service.daemon_parser("sapd", "SAP/SDP multicast session directory", __version__,
                              "where the directory database lives")
    p.add_argument("--interface", action="append", default=[], metavar="IFACE",
                   help="listen (and announce) on IFACE; repeat for several "
                        "(default: every multicast-capable interface that is up)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="expiry/announce profile")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"])
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {"state_dir": args.state_dir, "socket": args.socket, "interfaces": args.interface,
            "profile": args.profile, "log_format": args.log_format,
            "log_level": args.log_level, "event_loop": args.event_loop}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return service.main("sapd", args.config, overrides_from(args), load, SapDaemon)


if __name__ == "__main__":
    sys.exit(main())
