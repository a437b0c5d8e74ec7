"""madcapd configuration: defaults, a TOML file, flags. Scopes are ``[[scope]]`` tables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from sapd.plumbing.config import ConfigError, load_config
from sapd.plumbing.web import WebConfig


@dataclass(frozen=True)
class MadcapdConfig:
    listen: list[str] = field(default_factory=list)  # ADDR[:PORT]; default 0.0.0.0:2535
    interfaces: list[str] = field(default_factory=list)
    state_dir: str | None = None
    socket: str | None = None
    socket_group: str | None = None
    log_format: str = "auto"
    log_level: str = "info"
    durability: str = "full"  # lease commits: full (fsync) or normal
    server_id: str | None = None
    response_cache: float = 60.0
    offer_hold: float = 60.0
    clock_skew: float = 1800.0
    guard: float = 3600.0
    sapd_socket: str | None = None  # default: sapd's default control socket
    sapd_poll: float = 10.0
    scope: list[dict[str, Any]] = field(default_factory=list)
    web: WebConfig = field(default_factory=WebConfig)

    def validate(self) -> None:
        self.web.validate()
        if self.durability not in ("full", "normal"):
            raise ConfigError("durability: must be full or normal")
        if not 0 <= self.response_cache <= 300:
            raise ConfigError("response_cache: RFC 2730 allows 0..300 seconds")
        for key in ("offer_hold", "clock_skew", "guard", "sapd_poll"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must not be negative")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("log_format: must be auto, json or console")
        if self.server_id is not None:
            try:
                ipaddress.ip_address(self.server_id)
            except ValueError:
                raise ConfigError(f"server_id: {self.server_id!r} is not an address") from None
        for i, text in enumerate(self.listen):
            try:
                parse_listen(text)
            except ValueError as exc:
                raise ConfigError(f"listen[{i}]: {exc}") from None
        self.scopes()

    def scopes(self) -> list[ScopeConfig]:
        try:
            scopes = [scope_from_config(entry, i) for i, entry in enumerate(self.scope)]
            check_overlaps(scopes)
        except PoolConfigError as exc:
            raise ConfigError(str(exc)) from None
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


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR, ADDR:PORT, [V6ADDR]:PORT or :PORT."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else PORT
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, PORT
    host = host or "0.0.0.0"
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


def load(path: str | None, overrides: dict[str, Any]) -> MadcapdConfig:
    return load_config(MadcapdConfig, path, overrides)
