"""sapd configuration: every option has a default; a TOML file and flags override."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sapd.lifecycle import DEFAULT_PROFILE, PROFILES, Limits, Profile
from sapd.plumbing import paths
from sapd.plumbing.config import ConfigError, load_config
from sapd.plumbing.web import WebConfig
from sapd.scopes import STANDARD_GROUPS, ScopeTable
from sapd.wire import SAP_PORT


@dataclass(frozen=True)
class LimitsConfig:
    max_sessions: int = 100_000
    max_sdp_bytes: int = 16 * 1024
    source_rate: float = 100.0
    source_burst: float = 200.0
    accept_zero_hash: bool = False

    def to_limits(self) -> Limits:
        for key in ("max_sessions", "max_sdp_bytes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"limits.{key}: must be at least 1")
        if self.source_rate <= 0 or self.source_burst < 1:
            raise ConfigError("limits.source_rate/source_burst: must be positive")
        return Limits(max_sessions=self.max_sessions, max_sdp_bytes=self.max_sdp_bytes,
                      source_rate=self.source_rate, source_burst=self.source_burst,
                      accept_zero_hash=self.accept_zero_hash)


@dataclass(frozen=True)
class AnnounceConfig:
    ttl: int = 255
    bandwidth: float = 4000.0  # bit/s per SAP group (RFC 2974 default)
    source: str | None = None  # source address for our packets (default: the interface's)
    interfaces: list[str] = field(default_factory=list)  # egress; default: listen set
    compress: bool = False
    directory: str | None = None  # announce every *.sdp file in it
    withdraw_on_stop: bool = False
    deletion_repeats: int = 3


@dataclass(frozen=True)
class SapdConfig:
    interfaces: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=lambda: [str(g) for g in STANDARD_GROUPS])
    port: int = SAP_PORT
    profile: str = DEFAULT_PROFILE
    expiry_floor: float | None = None  # overrides the profile's
    default_period: float | None = None  # overrides the profile's
    state_dir: str | None = None
    socket: str | None = None
    socket_group: str | None = None
    admin_group: str | None = None
    log_format: str = "auto"
    log_level: str = "info"
    event_loop: str = "auto"
    refresh_flush_interval: float = 1.0
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    announce: AnnounceConfig = field(default_factory=AnnounceConfig)
    scope: list[dict[str, Any]] = field(default_factory=list)
    web: WebConfig = field(default_factory=WebConfig)

    def validate(self) -> None:
        self.web.validate()
        if self.profile not in PROFILES:
            raise ConfigError(f"profile: {self.profile!r} is not one of {sorted(PROFILES)}")
        for i, group in enumerate(self.groups):
            try:
                if not ipaddress.ip_address(group).is_multicast:
                    raise ConfigError(f"groups[{i}]: {group} is not a multicast address")
            except ValueError:
                raise ConfigError(f"groups[{i}]: {group!r} is not an IP address") from None
        for key in ("expiry_floor", "default_period"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key}: must be positive")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port: {self.port} is not a UDP port")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("log_format: must be auto, json or console")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            raise ConfigError("event_loop: must be auto, uvloop or asyncio")
        if not 0 < self.announce.ttl <= 255:
            raise ConfigError(f"announce.ttl: {self.announce.ttl} is not within 1..255")
        if self.announce.bandwidth <= 0:
            raise ConfigError("announce.bandwidth: must be positive")
        self.limits.to_limits()
        try:
            ScopeTable.from_config(self.scope)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else paths.default_state_dir("sapd")

    @property
    def socket_path(self) -> Path:
        return Path(self.socket) if self.socket else paths.default_socket("sapd")

    def expiry_profile(self) -> Profile:
        profile = PROFILES[self.profile]
        return dataclasses.replace(
            profile,
            expiry_floor=self.expiry_floor if self.expiry_floor is not None
            else profile.expiry_floor,
            default_period=self.default_period if self.default_period is not None
            else profile.default_period)

    def scope_table(self) -> ScopeTable:
        return ScopeTable.from_config(self.scope)


def load(path: str | None, overrides: dict[str, Any]) -> SapdConfig:
    return load_config(SapdConfig, path, overrides)
