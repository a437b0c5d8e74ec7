"""Declarative, typed, total configuration loading: TOML tables into frozen dataclasses.

A configuration class is a frozen dataclass whose fields say everything: the type
(bool, int, float, str, Literal[...], X | None, list[X], a nested dataclass), the
default, and a ``setting(...)`` rule (bounds, a check). Loading is total: any TOML
document gives either a configuration or one ConfigError naming the key
(``scope[2].range: ...``) or the file, never another exception, so a daemon ends with
exit 2 before anything starts and a reload keeps what runs.

Our own small loader rather than msgspec or cattrs: the rules here are mostly about
domain values (multicast groups, groups in /etc/group, HOST:PORT), which a library
would take as hooks anyway; the error text is ours; and it costs no dependency.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import json
import math
import os
import re
import tomllib
import types
import typing
import unicodedata
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sapd.plumbing.pgconnect import dsn_has_password

T = TypeVar("T")

MAX_TEXT = 4096  # characters in any string (PATH_MAX); a key is data, not a payload
MAX_ITEMS = 1024  # entries in any list: interfaces, groups, scopes, exclusions
MAX_FILE = 1 << 20  # bytes of a configuration file
DEFAULT_CONNECTIONS_PER_UID = 64  # socket_connections_per_uid (sapd.plumbing.control)


class ConfigError(ValueError):
    """A configuration value that cannot be used: ``key`` is where (``scope[2].range``,
    or the file), ``reason`` what is wrong."""

    def __init__(self, key: str, reason: str, file: str | None = None) -> None:
        self.key, self.reason, self.file = key, reason, file
        text = f"{key}: {reason}" if key else reason
        super().__init__(f"{file}: {text}" if file else text)

    def under(self, prefix: str) -> ConfigError:
        """The same error, one level down: ``limits`` + ``max_sessions``."""
        if not prefix:
            return self
        key = f"{prefix}{'' if self.key.startswith('[') else '.'}{self.key}"
        return ConfigError(key if self.key else prefix, self.reason, self.file)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Bounds and a check for one field; for a list they apply to each item. ``off`` is
    a value allowed outside the bounds that turns the feature off (0 for a poll)."""

    min: float | None = None
    max: float | None = None
    off: float | None = None
    check: Callable[[Any], object] | None = None  # raises ValueError saying what is wrong


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            min: float | None = None, max: float | None = None,
            off: float | None = None, check: Callable[[Any], object] | None = None) -> Any:
    """A dataclass field with its rule. Without default or factory the key is required."""
    rule = Rule(min, max, off, check)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"rule": rule})
    return dataclasses.field(default=default, metadata={"rule": rule})


# -- checks shared by both daemons: each raises ValueError with the reason ------------
def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def multicast_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ip_address(text)
    if not address.is_multicast:
        raise ValueError(f"{address} is not a multicast address")
    return address


def unicast_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ip_address(text)
    if address.is_multicast or address.is_unspecified:
        raise ValueError(f"{address} is not a unicast address")
    return address


def multicast_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network ({exc})") from None
    if not network.is_multicast:
        raise ValueError(f"{network} is not multicast")
    return network


def host_group(name: str) -> None:
    """A group that exists on this host (a socket's group, an admin group)."""
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f"no group {name!r} on this host") from None


_IFNAME = re.compile(r"[^\s/:]{1,15}")  # IFNAMSIZ - 1; no slash, colon or blank


def interface_name(name: str) -> None:
    if not _IFNAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an interface name (1-15 characters, "
                         "no '/', ':' or blanks)")


def socket_path(value: str) -> None:
    """A Unix socket path: sun_path holds 107 bytes and a NUL."""
    size = len(os.fsencode(value))
    if not 0 < size <= 107:
        raise ValueError(f"a Unix socket path is 1..107 bytes, this one {size}")


def text(low: int, high: int) -> Callable[[str], None]:
    """A string of ``low``..``high`` characters."""
    def check(value: str) -> None:
        if not low <= len(value) <= high:
            raise ValueError(f"must be {low}..{high} characters long, not {len(value)}")
    return check


def name_text(low: int, high: int) -> Callable[[str], None]:
    """A name shown in listings, logs and other hosts' views: ``low``..``high``
    characters, none of them a control character (a line break splits every
    line-based view of it)."""
    length = text(low, high)

    def check(value: str) -> None:
        length(value)
        bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise ValueError(f"contains the control character U+{ord(bad):04X}")
    return check


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (host empty) or, with a default port,
    ``HOST`` alone. HOST is returned without brackets and unchecked."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not [ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    elif ":" in value:
        raise ValueError(f"{value!r}: write an IPv6 address as [ADDRESS]:PORT")
    else:
        host, port_text = value, None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{value!r} has no port (HOST:PORT)")
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"{value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{value!r}: port {port} is not within 1..65535")
    return host, port


def host_port(value: str) -> tuple[str, int]:
    """A TCP listen address: an IP address (a name would be resolved at start, and which
    interfaces a listener is reachable on should be plain to read) and a port."""
    host, port = split_host_port(value)
    if not host:
        raise ValueError(f"{value!r} has no host (HOST:PORT; 0.0.0.0 or [::] for all)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (e.g. 127.0.0.1:8375)") from None
    return host, port


def http_url(value: str) -> None:
    """An absolute http(s) URL with a host, as others will reach us."""
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018  # parses it: ValueError when out of range
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    if url.query or url.fragment:
        raise ValueError(f"{value!r}: no query or fragment in a base URL")


LDAP_SCHEMES = ("ldap", "ldaps", "ldapi")


def ldap_url(value: str) -> None:
    """An LDAP server: ldap://HOST[:PORT], ldaps://HOST[:PORT] or ldapi://PATH (a Unix
    socket, its path %2F-escaped as RFC 4516 and OpenLDAP write it); no DN or filter."""
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018  # parses it: ValueError when out of range
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL ({exc})") from None
    if url.scheme not in LDAP_SCHEMES:
        raise ValueError(f"{value!r} is not an ldap://, ldaps:// or ldapi:// URL")
    if url.scheme != "ldapi" and not url.hostname:
        raise ValueError(f"{value!r} has no host")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"{value!r}: no DN, attributes or filter in the server URL "
                         "(the base DN is [ldap] base)")


_DN_PART = re.compile(r"\s*[A-Za-z][A-Za-z0-9-]*\s*=\s*\S.*")


def ldap_dn(value: str) -> None:
    """A distinguished name as RFC 4514 writes it: attribute=value pairs, comma-separated.
    A shape check only; the server has the last word."""
    parts = re.split(r"(?<!\\),", value)
    if not value.strip() or not all(_DN_PART.fullmatch(part) for part in parts):
        raise ValueError(f"{value!r} is not a DN (attribute=value[,attribute=value...], "
                         "e.g. ou=sessions,dc=example,dc=org)")


# -- loading -------------------------------------------------------------------------
def load_toml(path: str | Path | None) -> dict[str, Any]:
    """A TOML file as a table; every way it can fail names the file."""
    if path is None:
        return {}
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise ConfigError("", "no such configuration file", file) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read it ({exc.strerror or exc})", file) from None
    if len(data) > MAX_FILE:
        raise ConfigError("", f"larger than {MAX_FILE} bytes", file)
    return parse_toml(data, file)


def parse_toml(data: bytes, file: str = "<config>") -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 (byte {exc.start})", file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", str(exc), file) from None
    except RecursionError:
        raise ConfigError("", "nested too deeply", file) from None


class Validated(typing.Protocol):
    def validate(self) -> None: ...


V = TypeVar("V", bound=Validated)


def load_config(cls: type[V], path: str | Path | None, overrides: dict[str, Any]) -> V:
    """Defaults, then the TOML file, then command-line overrides (None or empty = not
    given), then the rules; an error names the file as well as the key."""
    data = load_toml(path)
    flags = {key for key, value in overrides.items() if value not in (None, [], ())}
    for key in flags:
        value = overrides[key]
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # a flag sets one key of a table
        else:
            data[key] = value
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        top = re.split(r"[.\[,]", exc.key, maxsplit=1)[0]
        where = "command line" if top in flags else str(path) if path is not None else None
        if where is None or exc.file:
            raise
        raise ConfigError(exc.key, exc.reason, where) from None


def from_dict(cls: type[T], data: object, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a table: unknown keys, types, rules, then the class's
    ``validate()`` for rules across fields. Errors name ``prefix`` + the key."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a table, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    given: dict[str, tuple[str, Any]] = {}
    unknown: list[str] = []
    for raw_key, value in data.items():
        name = raw_key.replace("-", "_")
        if name not in fields:
            unknown.append(raw_key)
        elif name in given:
            raise ConfigError(_join(prefix, raw_key), f"given twice (as {given[name][0]!r})")
        else:
            given[name] = (raw_key, value)
    if unknown:
        keys = ", ".join(_join(prefix, k) for k in unknown)
        raise ConfigError(keys, "unknown key" + ("s" if len(unknown) > 1 else ""))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in given:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(_join(prefix, name), "required")
            continue
        raw_key, value = given[name]
        key = _join(prefix, raw_key)
        kwargs[name] = _value(key, value, hints[name], f.metadata.get("rule"))
    config = cls(**kwargs)
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as exc:
            raise exc.under(prefix) from None
        except (ValueError, TypeError, OverflowError) as exc:  # a rule's own bug: say where
            raise ConfigError(prefix or "config", str(exc)) from None
    return config


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (``"a.b"``)."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{toml_key(key)}" if prefix else toml_key(key)


def _kind(value: object) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _value(key: str, value: Any, hint: Any, rule: Rule | None) -> Any:
    """Coerce to ``hint``; then the rule, on the value or on each item of a list."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        # TOML has no null: X | None means "optional, default None", never a choice of types
        (inner,) = [a for a in args if a is not type(None)]
        return _value(key, value, inner, rule)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_kind(value)}")
        if len(value) > MAX_ITEMS:
            raise ConfigError(key, f"more than {MAX_ITEMS} entries")
        return [_value(f"{key}[{i}]", item, args[0], rule) for i, item in enumerate(value)]
    coerced = _scalar(key, value, hint)
    if rule is not None:
        _apply(key, coerced, rule, value)
    return coerced


def _scalar(key: str, value: Any, hint: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(typing.cast(type[Any], hint), value, key)
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(key, f"{_brief(value)} is not one of {', '.join(choices)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {_brief(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {_brief(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(key, f"{_brief(value)} is not a finite number") from None
        if not math.isfinite(number):
            raise ConfigError(key, f"{value!r} is not a finite number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_brief(value)}")
        if len(value) > MAX_TEXT:
            raise ConfigError(key, f"longer than {MAX_TEXT} characters")
        if "\x00" in value:
            raise ConfigError(key, "contains a NUL character")
        return value
    raise TypeError(f"{key}: the loader has no rule for type {hint!r}")  # our bug, not theirs


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{_kind(value)} ({len(text)} characters)"


def _apply(key: str, value: Any, rule: Rule, written: Any) -> None:
    """``written`` is the value as the file had it, for the message (0, not 0.0)."""
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and (rule.off is None or value != rule.off):
        low, high = rule.min, rule.max
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(key, f"must be {_bounds(rule)}, not {_brief(written)}")
    if rule.check is not None:
        try:
            rule.check(value)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None


def _bounds(rule: Rule) -> str:
    if rule.min is not None and rule.max is not None:
        text = f"within {rule.min:g}..{rule.max:g}"
    elif rule.min is not None:
        text = f"at least {rule.min:g}"
    else:
        text = f"at most {rule.max:g}"
    return text + (f" (or {rule.off:g}: off)" if rule.off is not None else "")



# -- tables both daemons have ----------------------------------------------------------
LogFormat = typing.Literal["auto", "json", "console"]
LogLevel = typing.Literal["debug", "info", "warning", "error"]
DAY = 86_400.0  # seconds
StoreBackend = typing.Literal["sqlite", "postgresql"]
AVAILABLE_BACKENDS = ("sqlite", "postgresql")


def _dsn(value: str) -> None:
    """A PostgreSQL connection string: a postgresql:// URL or libpq key=value pairs."""
    if value.startswith(("postgresql://", "postgres://")):
        try:
            urllib.parse.urlsplit(value).port  # noqa: B018  # ValueError when out of range
        except ValueError as exc:
            raise ValueError(f"not a PostgreSQL URL ({exc})") from None
    elif not re.fullmatch(r"\s*\w+\s*=.*", value, re.S):
        raise ValueError("expected postgresql://... or libpq's key=value pairs")
    if dsn_has_password(value):  # this file is readable by anyone on the host
        raise ValueError("holds a password: put it in password_file (or PGPASSWORD, or "
                         "the pgpass file), not in a file anyone on the host may read")


def readable_file(value: str) -> None:
    path = Path(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {value} ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ValueError(f"{value} is not a file")


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where the directory or the leases are kept. SQLite lives in the
    state directory; a shared PostgreSQL database is named by ``dsn``, its password in
    ``password_file`` (never in this file, which is world-readable)."""

    backend: StoreBackend = "sqlite"
    dsn: str | None = setting(None, check=_dsn)
    password_file: str | None = setting(None, check=text(1, 4096))

    def validate(self) -> None:
        if self.backend != "postgresql":
            for key in ("dsn", "password_file"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, f"only with backend = \"postgresql\" "
                                      f"(backend {self.backend!r} keeps its data in state_dir)")
        else:
            if self.dsn is None:
                raise ConfigError("dsn", "required with backend = \"postgresql\"")
            if self.password_file is not None:
                try:
                    readable_file(self.password_file)
                except ValueError as exc:
                    raise ConfigError("password_file", str(exc)) from None
        if self.backend not in AVAILABLE_BACKENDS:
            raise ConfigError("backend", f"{self.backend!r} is not available in this "
                              f"version (available: {', '.join(AVAILABLE_BACKENDS)})")


@dataclasses.dataclass(frozen=True)
class WebConfig:
    """``[web]``: the read-only TCP listener. ``public_url`` is how others reach it
    (links, NMOS hrefs), e.g. behind a reverse proxy; default: derived from ``listen``."""

    listen: str | None = setting(None, check=host_port)
    public_url: str | None = setting(None, check=http_url)

    def validate(self) -> None:
        if self.public_url is not None and self.listen is None:
            raise ConfigError("public_url", "needs listen (the web listener is off)")
