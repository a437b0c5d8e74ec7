"""madcapd configuration: every key has a type, a default and a rule (sapd.plumbing.config);
a TOML file and flags override the defaults. Scopes are ``[[scope]]`` tables, checked
here for types and bounds and by madcap.pool for what RFC 2365 and RFC 5771 forbid."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from madcap.pool import (
    DEFAULT_SCOPE,
    PoolConfigError,
    ScopeConfig,
    check_overlaps,
    scope_from_config,
)
from madcap.server import ServerSettings
from madcap.wire import PORT
from sapd.plumbing import paths
from sapd.plumbing.config import (
    DAY,
    DEFAULT_CONNECTIONS_PER_UID,
    ConfigError,
    LogFormat,
    LogLevel,
    StoreConfig,
    WebConfig,
    host_group,
    interface_name,
    ip_address,
    load_config,
    setting,
    socket_path,
    split_host_port,
    text,
)

Durability = Literal["full", "normal"]
LEASE_MAX = 0xFFFF_FFFF  # seconds: the width of MADCAP's Lease Time option (RFC 2730 2.5.4)
YEAR_9999 = 253_402_300_799.0  # the last second a timestamp can be written as a date


def parse_listen(value: str) -> tuple[str, int]:
    """ADDR, ADDR:PORT, [V6ADDR]:PORT, V6ADDR or :PORT (every IPv4 address); the port
    defaults to 2535."""
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"  # a bare IPv6 address
    host, port = split_host_port(value, PORT)
    host = host or "0.0.0.0"
    ip_address(host)
    return host, port


@dataclass(frozen=True)
class ScopeNameEntry:
    """One of a scope's names (RFC 2730 Multicast Scope List: language tag, name)."""

    language: str = setting(check=text(1, 64))
    name: str = setting(check=text(1, 255))  # a one-byte length on the wire
    default: bool | None = None  # default: the first name is the default one


@dataclass(frozen=True)
class ScopeEntry:
    """One ``[[scope]]``: an administrative scope addresses are leased from."""

    name: str = setting(check=text(1, 64))
    range: str = setting(check=text(1, 100))  # NETWORK/LEN or FIRST-LAST
    pool: str | None = setting(None, check=text(1, 100))  # default: the whole scope
    ttl: int = setting(255, min=1, max=255)
    names: list[ScopeNameEntry] = setting(factory=list)
    lease_default: int = setting(86_400, min=1, max=LEASE_MAX)
    lease_min: int = setting(60, min=1, max=LEASE_MAX)
    lease_max: int = setting(30 * 86_400, min=1, max=LEASE_MAX)
    exclusions: list[str] = setting(factory=list, check=text(1, 100))
    lifetime_end: float | None = setting(None, min=0.0, max=YEAR_9999)  # Unix time
    enabled: bool = True
    max_addresses_per_lease: int = setting(256, min=1, max=65_535)
    # Per client (the datagram's source address), in this scope. A lab host runs a few
    # hundred senders; 1,024 leaves it room and caps one host at 1/64 of a /16.
    max_addresses_per_client: int = setting(1024, min=1, max=1 << 24)
    # OFFERs a client may hold at once (each holds addresses for offer_hold seconds).
    max_offers_per_client: int = setting(16, min=1, max=1024)

    def as_table(self) -> dict[str, Any]:
        """The table madcap.pool.scope_from_config reads."""
        table = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        table["names"] = [{k: v for k, v in n.items() if v is not None} for n in table["names"]]
        return table


@dataclass(frozen=True)
class MadcapdConfig:
    listen: list[str] = setting(factory=list, check=parse_listen)  # default 0.0.0.0:2535
    interfaces: list[str] = setting(factory=list, check=interface_name)
    state_dir: str | None = setting(None, check=text(1, 4096))
    socket: str | None = setting(None, check=socket_path)
    socket_group: str | None = setting(None, check=host_group)
    # Control connections one peer uid may hold open (root is exempt): with the default
    # 1,024 open files, one user holding 1,100 once locked every other client out.
    socket_connections_per_uid: int = setting(DEFAULT_CONNECTIONS_PER_UID, min=1,
                                              max=65_536)
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    durability: Durability = "full"  # lease commits: full (fsync) or normal
    server_id: str | None = setting(None, check=ip_address)
    # Seconds. RFC 2730 section 2.4 keeps answers for retransmissions up to 300 s.
    response_cache: float = setting(60.0, min=0.0, max=300.0)
    # An OFFER holds its addresses 1 s to 10 min: a client that has not sent its
    # REQUEST by then has gone (RFC 2730 clients retransmit for ~30 s).
    offer_hold: float = setting(60.0, min=1.0, max=600.0)
    clock_skew: float = setting(1800.0, min=0.0, max=DAY)
    # Rest of a released or expired address before reuse: none to 30 days.
    guard: float = setting(3600.0, min=0.0, max=30 * DAY)
    sapd_socket: str | None = setting(None, check=socket_path)
    # Seconds between reads of sapd's directory; 0 reads it once at start.
    sapd_poll: float = setting(10.0, min=1.0, max=3600.0, off=0.0)
    scope: list[ScopeEntry] = setting(factory=list)
    store: StoreConfig = setting(factory=StoreConfig)
    web: WebConfig = setting(factory=WebConfig)

    def validate(self) -> None:
        self.scopes()

    def scopes(self) -> list[ScopeConfig]:
        scopes = []
        for i, entry in enumerate(self.scope):
            if not entry.lease_min <= entry.lease_default <= entry.lease_max:
                raise ConfigError(f"scope[{i}]", "need lease_min <= lease_default <= lease_max")
            try:
                scopes.append(scope_from_config(entry.as_table(), i))
            except PoolConfigError as exc:  # its messages start with the key
                key, _, reason = str(exc).partition(": ")
                raise ConfigError(key, reason) from None
        try:
            check_overlaps(scopes)
        except PoolConfigError as exc:
            raise ConfigError("scope", str(exc)) from None
        return scopes or [DEFAULT_SCOPE]

    def settings(self) -> ServerSettings:
        return ServerSettings(
            response_cache=self.response_cache, offer_hold=self.offer_hold,
            clock_skew=self.clock_skew, guard=self.guard,
            server_id=ipaddress.ip_address(self.server_id) if self.server_id else None)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else paths.default_state_dir("madcapd")

    @property
    def socket_path(self) -> Path:
        return Path(self.socket) if self.socket else paths.default_socket("madcapd")

    @property
    def sapd_socket_path(self) -> Path:
        return Path(self.sapd_socket) if self.sapd_socket else paths.client_socket("sapd")


def load(path: str | None, overrides: dict[str, Any]) -> MadcapdConfig:
    return load_config(MadcapdConfig, path, overrides)
