"""madcapd: the composition root. UDP in, the sans-IO allocator, durable commit, UDP out.

Each socket drain is one batch: every datagram goes through the hub (madcap/hub.py:
``MadcapServer.handle`` stages lease changes), one commit makes the batch's leases
durable, and only then are the replies the store took sent (group commit: an ACK
never leaves before its lease is on disk). The commit runs in a thread of its own
while the loop handles the next drains, which wait for it and go as one batch.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from madcap import __version__
from madcap.api import build_app
from madcap.avoided import AvoidedGroups
from madcap.config import MadcapdConfig, load, parse_listen
from madcap.hub import Batch, LeaseHub
from madcap.leases import (
    COMMITTED,
    CommitResult,
    Lease,
    LeasePage,
    LeaseQuery,
    LeaseStore,
    LeaseStoreError,
)
from madcap.memory import CollectorPolicy
from madcap.server import MadcapServer
from madcap.store import open_lease_store
from madcap.wire import PORT
from sapd.plumbing import logs, service, systemd
from sapd.plumbing.client import ClientError, UnixClient
from sapd.plumbing.clock import CLOCK_STEP_WARNING
from sapd.plumbing.config import ConfigError
from sapd.plumbing.control import ControlServer
from sapd.plumbing.errors import NEEDS_MIGRATING, StoreUnusable
from sapd.plumbing.multicast import InterfaceFollower, MulticastReceiver, with_packet_info
from sapd.plumbing.web import WebListener

log = logs.get("madcapd")
PURGE_EVERY = 60.0  # seconds between deletions of leases whose guard time is over


class MadcapDaemon(service.Service):
    def __init__(self, config: MadcapdConfig) -> None:
        super().__init__()
        self.config = config
        self.scopes = config.scopes()
        self.server: MadcapServer = None  # type: ignore[assignment]  # set in start()
        self.hub: LeaseHub[tuple[str, int]] = None  # type: ignore[assignment]  # start()
        self.store: LeaseStore | None = None
        self._state_lock: int | None = None
        self._now: Callable[[], float] = time.time  # the store's clock once it is open
        self.receiver: MulticastReceiver | None = None
        self.follower: InterfaceFollower | None = None
        self.control: ControlServer | None = None
        self.web: WebListener | None = None
        self.notifier = systemd.Notifier()
        self.started = time.monotonic()  # for the uptime: not moved by a clock step
        self._step_warned = 0.0  # the wall-minus-lease-clock difference last logged
        self.ready = False
        self.sapd_groups = AvoidedGroups()
        self._groups_answer: object = None  # sapd's last answer, to skip an unchanged one
        self.sapd_status = "not checked yet"
        self.sapd_unparsed = 0  # entries of sapd's last /v1/groups that were not addresses
        self._tasks: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        # The store's commits (and purges) run here, one at a time, so that the loop
        # handles the next batch while one is written; the commit in flight and its batch.
        self._commits = ThreadPoolExecutor(1, thread_name_prefix="lease-commit")
        self._in_flight: tuple[Future[CommitResult | LeaseStoreError],
                               Batch[tuple[str, int]]] | None = None
        self._threaded = False

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        state = self.config.state_path
        state.mkdir(parents=True, exist_ok=True)
        # one madcapd per state directory: a second one would lease what we hold
        self._state_lock = service.lock_state(state)
        service.private_state(state)
        try:
            store = open_lease_store(self.config.store.backend, state,
                                     self.config.durability, self.config.store.dsn,
                                     self.config.store.password_file)
        except LeaseStoreError as exc:  # exit 1, the file or the database named
            if self.config.store.backend == "postgresql":
                # the service manager restarts us; the database is not ours to move away
                raise StoreUnusable(f"lease store: {exc}") from None
            raise StoreUnusable(f"lease store: {exc}: not a usable database; move it away "
                                "to start with no leases (clients then re-request)") from None
        self.store = store
        # A backend says its commit may run beside the loop (SQLite: the connection is
        # locked, the holders are the commit's own); another commits on the loop.
        self._threaded = bool(getattr(store, "threaded_commit", False))
        if store.problem:
            log.error("lease store damaged; health degraded", problem=store.problem)
        now = store.now()
        with service.collector_paused():  # loads every lease
            self.server = MadcapServer(self.scopes, store.load(now), now,
                                       self.config.settings(), cache=store.reply_cache())
        self.hub = LeaseHub(self.server, store)
        self._now = store.now
        if store.shared:
            self.server.scatter()  # each server starts its searches somewhere else
        self.hub.stage(self.server.expire(now))
        self.hub.flush()  # nothing listens yet: no reply to send
        service.settle_memory()
        log.info("leases loaded", active=len(self.server.leases), held=len(self.server.held),
                 path=str(state))
        listens = [parse_listen(x) for x in self.config.listen] or [("0.0.0.0", PORT)]
        bind: dict[int, str] = {ipaddress.ip_address(h).version: h for h, _ in listens}
        port = listens[0][1]
        groups = [s.server_address for s in self.scopes]
        families = {s.start.version for s in self.scopes} | set(bind)
        self.receiver = MulticastReceiver(self.loop, groups, port,
                                          with_packet_info(self.hub.on_datagram),
                                          on_batch_end=self._after_batch, pktinfo=True,
                                          bind=bind, families=families)
        self.receiver.open()
        self.follower = InterfaceFollower(self.loop, self.receiver,
                                          lambda: self.config.interfaces)
        await self.follower.start()
        self.control = ControlServer(build_app(self), self.config.socket_path,
                                     self.config.socket_group,
                                     self.config.socket_connections_per_uid)
        await self.control.start()
        if self.config.web.listen:
            from madcap.web import build_web_app  # noqa: PLC0415  # only when it is on

            self.web = WebListener(build_web_app(self), self.config.web.listen)
            await self.web.start()
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self._tasks.append(asyncio.create_task(self._poll_sapd()))
        interval = systemd.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(service.watchdog(self.notifier, interval)))
        self.ready = True
        self.notifier.ready(self.status_line())
        log.info("ready", socket=str(self.config.socket_path), port=port,
                 scopes=[s.name for s in self.scopes], interfaces=self.follower.names,
                 server_groups=[str(g) for g in groups])

    async def stop(self) -> None:
        self.notifier.stopping()
        await service.cancel_all(self._tasks)
        if self.follower:
            self.follower.stop()
        if self.web:
            await self.web.stop()
        if self.control:
            await self.control.stop()
        if self.receiver:
            self.receiver.close()
        if self.store:
            if self.receiver is not None:
                self._commit_now()
            self._commits.shutdown()
            self.store.close()
        if self._state_lock is not None:
            os.close(self._state_lock)
        self.notifier.close()

    # -- packets ---------------------------------------------------------------------------
    def _after_batch(self) -> None:
        """End of a socket drain: the batch goes to the store in the commit thread, unless
        a commit is in flight; then it waits and grows (group commit: the busier, the
        more leases per fsync) while the loop goes on receiving."""
        self._send(self.hub.ready())  # what waits for no commit goes at once
        if self._in_flight is not None:
            return
        if not self._threaded:
            self._settle(*self._take_and_commit())
            return
        batch = self.hub.take()
        if not self.hub.commit_needed(batch):  # nothing to make durable, nothing before it
            self._send(self.hub.settle(batch, COMMITTED))
            return
        future = self._commits.submit(self._commit, batch.leases)
        self._in_flight = (future, batch)
        future.add_done_callback(
            lambda done: self.loop.call_soon_threadsafe(self._committed, done))

    def _commit(self, leases: list[Lease]) -> CommitResult | LeaseStoreError:
        assert self.store is not None
        try:
            return self.store.commit(leases)
        except LeaseStoreError as exc:
            return exc

    def _committed(self, future: Future[CommitResult | LeaseStoreError]) -> None:
        """On the loop: the commit in flight is done; its replies go, the next batch goes."""
        if self._in_flight is None or self._in_flight[0] is not future:
            return  # settled already by _commit_now
        batch = self._in_flight[1]
        self._in_flight = None
        self._settle(batch, future.result())
        self._after_batch()

    def _commit_now(self) -> None:
        """Everything staged durable (and its replies sent) before this returns: the
        commit in flight is waited for, then the rest is committed here."""
        self._send(self.hub.ready())
        if self._in_flight is not None:
            future, batch = self._in_flight
            self._in_flight = None
            self._settle(batch, future.result())
        self._settle(*self._take_and_commit())

    def _take_and_commit(self) -> tuple[Batch[tuple[str, int]], CommitResult | LeaseStoreError]:
        batch = self.hub.take()
        return batch, self._commit(batch.leases) if self.hub.commit_needed(batch) else COMMITTED

    def _settle(self, batch: Batch[tuple[str, int]],
                result: CommitResult | LeaseStoreError) -> None:
        if isinstance(result, LeaseStoreError):
            # nothing acknowledged for the refused changes: the clients will retransmit
            log.error("lease commit failed; replies dropped", error=str(result))
        self._send(self.hub.settle(batch, result))

    def _send(self, replies: list[tuple[bytes, tuple[str, int]]]) -> None:
        assert self.receiver is not None
        for data, address in replies:
            self.receiver.send(data, address)

    async def _housekeeping(self) -> None:
        collector = CollectorPolicy(self.server.counters["acks"])
        collector.install()
        purged_at = 0.0
        while True:
            await asyncio.sleep(1.0)
            collector.note(self.server.counters["acks"])
            now = self._now()
            self._check_clock(now)
            if self.store is not None and self.store.shared:
                self._catch_up()
            expired = self.server.expire(now)
            self.hub.stage(expired)
            self._after_batch()
            if now - purged_at >= PURGE_EVERY and self.store is not None:
                # rows whose guard time is over are never loaded again: forget them
                purged_at = now
                try:  # in the commit thread: the store's holders are its to change
                    if self._threaded:
                        await self.loop.run_in_executor(self._commits, self.store.purge,
                                                        now)
                    else:
                        self.store.purge(now)
                except LeaseStoreError as exc:
                    log.error("lease purge failed", error=str(exc))
            for lease in expired:
                log.info("lease expired", lease_id=lease.lease_id.hex(),
                         addresses=list(lease.addresses))
            self.notifier.status(self.status_line())

    def _catch_up(self) -> None:
        """Adopt what the other servers on the shared database committed (leases they
        granted, renewed or ended), so that this one stops offering those addresses."""
        assert self.store is not None
        try:
            changes = self.store.changes()
        except LeaseStoreError as exc:
            self.hub.failures[exc.reason] += 1
            self.hub.problem = str(exc)
            return
        if changes:
            self.server.counters["leases_from_other_servers"] += self.server.absorb(changes)

    def _fetch_groups(self, client: UnixClient) -> AvoidedGroups | None:
        """sapd's groups in use, parsed (None: the same answer as last time)."""
        answer = client.get_json("/v1/groups")
        if answer == self._groups_answer:
            return None
        avoided, bad = AvoidedGroups.from_directory(answer)
        self._groups_answer = answer
        self.sapd_unparsed = len(bad)
        if bad:
            log.warning("sapd listed groups that are not addresses; avoiding the rest",
                        count=len(bad), first=bad[0])
        return avoided

    def _check_clock(self, now: float) -> None:
        """Log each step of the system clock once: leases keep to the store's clock
        (elapsed time for SQLite), so what is stored and told is off by the step."""
        drift = time.time() - now
        if abs(drift - self._step_warned) >= CLOCK_STEP_WARNING:
            self._step_warned = drift
            if self.store is not None and self.store.shared:
                log.warning("system clock and the lease database's clock differ; leases "
                            "keep to the database's", difference=round(drift, 3))
                return
            log.warning("system clock and lease clock differ; leases run on elapsed time "
                        "and the times stored and sent are off by the difference until "
                        "madcapd restarts", difference=round(drift, 3))

    async def _poll_sapd(self) -> None:
        """Groups the session directory sees in use are never handed out."""
        client = UnixClient(self.config.sapd_socket_path, timeout=2.0)
        while True:
            try:
                # fetched and parsed in a thread: 256,000 groups are ~40 ms of parsing
                avoided = await self.loop.run_in_executor(None, self._fetch_groups, client)
                if avoided is not None:
                    self.sapd_groups = avoided
                    self.server.set_avoided(avoided)
                self.sapd_status = f"connected ({len(self.sapd_groups)} groups in use)"
            except (ClientError, OSError, ValueError, KeyError) as exc:
                self.sapd_status = f"unavailable ({exc}); allocating without it"
            if self.config.sapd_poll <= 0:
                return
            await asyncio.sleep(self.config.sapd_poll)

    async def reload(self, path: str | None, overrides: dict[str, Any]) -> None:
        """SIGHUP: re-read the file. Timers and the sapd link change in place; scopes,
        listen addresses, socket and state directory need a restart."""
        self.notifier.reloading()
        try:
            new = load(path, overrides)
        except ConfigError as exc:
            log.error("reload failed; keeping the running configuration", error=str(exc))
            self.notifier.ready(self.status_line())
            return
        needs_restart = [k for k in ("scope", "listen", "socket", "state_dir", "durability",
                                          "store")
                         if getattr(new, k) != getattr(self.config, k)]
        self.server.settings = new.settings()
        self.config = new
        if self.control is not None:
            self.control.gate.per_uid = new.socket_connections_per_uid
        logs.setup(new.log_format, new.log_level)
        if self.follower:
            await self.follower.resync()
        log.info("reloaded", needs_restart=needs_restart)
        self.notifier.ready(self.status_line())

    # -- the operator API (madcap/api.py's LeaseService) -----------------------------------
    def health(self) -> dict[str, Any]:
        problem = self.hub.health if self.hub else None
        out: dict[str, Any] = {
            "status": "starting" if not self.ready else "degraded" if problem else "ok",
            "leases": len(self.server.leases) if self.server else 0,
            "sapd": self.sapd_status}
        if problem:
            out["store"] = problem
        return out

    def scope_status(self) -> list[dict[str, Any]]:
        return self._scope_status(self._now())

    def _scope_status(self, now: float) -> list[dict[str, Any]]:
        """Scope usage: counted in a shared database when there is one (every server
        then reports the same), else this server's own; offers are each server's."""
        scopes = self.server.scope_status(now)
        if self.store is None or not self.store.shared:
            return scopes
        try:
            usage = self.store.usage(now)
        except LeaseStoreError:
            usage = None  # the database is down: this server's view, health degraded
        if usage is None:
            return scopes
        for scope in scopes:
            counted = usage.get(scope["name"], {"leased": 0, "held": 0})
            scope["leased"] = counted["leased"]
            scope["held"] = counted["leased"] + counted["held"] + scope["offered"]
            scope["free"] = max(0, scope["addresses"] - scope["held"])
        return scopes

    def leases(self, query: LeaseQuery) -> tuple[LeasePage, float]:
        """The listing: from a shared database when there is one (raises
        LeaseStoreError when it is down), else from this server's memory."""
        now = self._now()
        page = self.store.page(query, now) if self.store is not None else None
        return (page if page is not None else self.server.page(query)), now

    def revoke(self, lease_id: bytes) -> Lease | None:
        """End a lease now; durable before this returns (raises LeaseStoreError if not)."""
        done = self.server.revoke(lease_id, self._now())
        if done is None:
            return None
        self.hub.stage([done])
        self._commit_now()
        if self.server.leases.get(lease_id) is not None:
            raise LeaseStoreError("refused", self.hub.problem or "the store refused it")
        return done

    # -- reporting ---------------------------------------------------------------------------
    def status_line(self) -> str:
        return (f"{len(self.server.leases)} leases, {len(self.server.held)} held, "
                f"{len(self.scopes)} scopes; sapd {self.sapd_status.split(' (')[0]}")

    def stats(self) -> dict[str, Any]:
        now = self._now()
        return {"counters": dict(sorted(self.server.counters.items())),
                "scopes": self._scope_status(now),
                "leases": len(self.server.leases), "held": len(self.server.held),
                "sapd": self.sapd_status, "sapd_groups_unparsed": self.sapd_unparsed,
                "interfaces": self.follower.names if self.follower else [],
                "memberships": sorted(f"{g}%{i}" for g, i in self.receiver.joined)
                if self.receiver else [],
                # datagrams the kernel dropped for a full receive buffer (SO_RXQ_OVFL)
                "kernel_drops": self.receiver.kernel_drops if self.receiver else 0,
                "commits": self.store.commits if self.store else 0,
                "store": {"backend": self.store.backend if self.store else None,
                          "problem": self.hub.health if self.hub else None,
                          "failures": dict(self.hub.failures) if self.hub else {},
                          "reconnects": getattr(self.store, "reconnects", 0)},
                "control": self.control.gate.stats() if self.control else {},
                "uptime": round(time.monotonic() - self.started, 3), "version": __version__}

    def metrics_text(self) -> str:
        counters = self.server.counters
        lines = ["# HELP madcap_messages_total MADCAP messages, by kind (RFC 3559 names).",
                 "# TYPE madcap_messages_total counter"]
        for kind in ("discovers", "offers", "requests", "renews", "acks", "naks", "releases",
                     "informs", "retransmissions", "invalid"):
            lines.append(f'madcap_messages_total{{kind="{kind}"}} {counters[kind]}')
        lines += ["# HELP madcap_errors_total NAKs sent, by error.",
                  "# TYPE madcap_errors_total counter"]
        for kind in ("requests_denied", "invalid_requests", "clock_skews", "bad_lease_ids",
                     "unsupported_features"):
            lines.append(f'madcap_errors_total{{error="{kind}"}} {counters[kind]}')
        lines += ["# HELP madcap_refusals_total Requests refused or dropped by policy, by reason.",
                  "# TYPE madcap_refusals_total counter"]
        for kind in ("client_address_quota", "client_offer_quota", "lease_below_minimum",
                     "lease_id_in_guard", "unknown_type"):
            lines.append(f'madcap_refusals_total{{reason="{kind}"}} {counters[kind]}')
        lines += ["# HELP madcap_kernel_drops_total Datagrams the kernel dropped for a full "
                  "receive buffer.", "# TYPE madcap_kernel_drops_total counter",
                  f"madcap_kernel_drops_total {self.receiver.kernel_drops if self.receiver else 0}"]
        lines += ["# HELP madcap_addresses Addresses per scope, by state.",
                  "# TYPE madcap_addresses gauge"]
        for scope in self._scope_status(self._now()):
            for state in ("leased", "offered", "held", "free"):
                lines.append(f'madcap_addresses{{scope="{scope["name"]}",state="{state}"}} '
                             f'{scope[state]}')
        lines += ["# HELP madcap_store_failures_total Lease commits that failed, by reason.",
                  "# TYPE madcap_store_failures_total counter"]
        for reason, count in sorted(self.hub.failures.items()):
            lines.append(f'madcap_store_failures_total{{reason="{reason}"}} {count}')
        lines += ["# HELP madcap_store_degraded 1 while the lease store is damaged or failing.",
                  "# TYPE madcap_store_degraded gauge",
                  f"madcap_store_degraded {int(self.hub.health is not None)}"]
        lines += ["# HELP madcap_store_reconnects_total Connections to the lease database "
                  "made again after it was lost.",
                  "# TYPE madcap_store_reconnects_total counter",
                  f"madcap_store_reconnects_total {getattr(self.store, 'reconnects', 0)}"]
        lines += ["# HELP madcap_sapd_connected 1 when the session directory answers.",
                  "# TYPE madcap_sapd_connected gauge",
                  f"madcap_sapd_connected {int(self.sapd_status.startswith('connected'))}"]
        if self.control is not None:
            lines += self.control.gate.metrics_lines("madcap")
        return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = service.daemon_parser("madcapd", "MADCAP multicast address allocator", __version__,
                              "where the lease database lives")
    p.add_argument("--listen", action="append", default=[], metavar="ADDR[:PORT]",
                   help="unicast address and port to serve (default 0.0.0.0:2535)")
    p.add_argument("--interface", action="append", default=[], metavar="IFACE",
                   help="join the MADCAP server groups on IFACE (default: all)")
    p.add_argument("--sapd-socket", help="sapd's control socket (groups in use)")
    p.add_argument("--migrate", nargs="?", const="apply", choices=["apply", "check"],
                   help="bring the PostgreSQL lease schema up to date (or, with check, "
                        "only say whether it is) and exit: 0 it is current (or now "
                        f"migrated), check: {NEEDS_MIGRATING} it needs migrating; 1 it "
                        "cannot be used")
    return p


def migrate(config: MadcapdConfig, check_only: bool) -> int:
    """madcapd --migrate: the schema of ``[store]``'s database, brought to this
    version's. Exit 0: it is current (or migrated now); check: NEEDS_MIGRATING if not."""
    if config.store.backend != "postgresql" or config.store.dsn is None:
        print("madcapd: --migrate: the SQLite lease file migrates itself when madcapd "
              "opens it; nothing to do", file=sys.stderr)
        return 0
    from madcap.store.postgresql import (  # noqa: PLC0415  # only here
        SCHEMA_VERSION,
        PostgresLeaseStore,
        read_password,
    )

    try:
        store = PostgresLeaseStore(config.store.dsn, read_password(config.store.password_file),
                                   migrate=False, check=False)
        try:
            report = store.migrate(check_only=check_only)
        finally:
            store.close()
    except LeaseStoreError as exc:
        print(f"madcapd: --migrate: {exc}", file=sys.stderr)
        return 1
    if report.before == SCHEMA_VERSION:
        print(f"lease schema current (version {SCHEMA_VERSION})")
        return 0
    print(f"lease schema at version {report.before}, this madcapd's is {SCHEMA_VERSION}: "
          + ("run madcapd --migrate" if check_only else "migrated"))
    return NEEDS_MIGRATING if check_only else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {
        "state_dir": args.state_dir, "socket": args.socket, "listen": args.listen,
        "interfaces": args.interface, "sapd_socket": args.sapd_socket,
        "log_format": args.log_format, "log_level": args.log_level,
        "web": {"listen": args.web} if args.web else None}
    if args.migrate:
        try:
            config = load(args.config, overrides)
        except ConfigError as exc:
            print(f"madcapd: configuration: {exc}", file=sys.stderr)
            return 2
        return migrate(config, args.migrate == "check")
    return service.main("madcapd", args.config, overrides, load, MadcapDaemon)


if __name__ == "__main__":
    sys.exit(main())
