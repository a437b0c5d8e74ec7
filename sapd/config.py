"""sapd configuration: every key has a type, a default and a rule (sapd.plumbing.config);
a TOML file and flags override the defaults. The bounds and why are in the example
configuration, systemd/sapd.toml."""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sapd import signing
from sapd.lifecycle import DEFAULT_PROFILE, PROFILES, Limits, Profile
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
    http_url,
    interface_name,
    ldap_dn,
    ldap_url,
    load_config,
    multicast_address,
    multicast_network,
    name_text,
    readable_file,
    setting,
    socket_path,
    text,
    unicast_address,
)
from sapd.scopes import IPAddress, ScopeTable
from sapd.trust import ModeRule, SignerRule, TrustPolicy
from sapd.wire import SAP_PORT

EventLoop = Literal["auto", "uvloop", "asyncio"]


def _profile(name: str) -> None:
    if name not in PROFILES:
        raise ValueError(f"{name!r} is not one of {', '.join(sorted(PROFILES))}")


@dataclass(frozen=True)
class LimitsConfig:
    # 10 million sessions is ~10 GB of memory; beyond that a cap is no cap.
    max_sessions: int = setting(100_000, min=1, max=10_000_000)
    # The inflate cap (zlib bombs): the smallest real SDPs are ~100 bytes; 1 MiB is 16
    # times the largest UDP payload, so nothing legitimate is ever cut.
    max_sdp_bytes: int = setting(16 * 1024, min=128, max=1 << 20)
    # Per source address, new or changed sessions per second; 0.001 is one every
    # ~17 minutes, 1,000,000 is no limit in practice yet still a number.
    source_rate: float = setting(100.0, min=0.001, max=1_000_000.0)
    source_burst: float = setting(200.0, min=1.0, max=1_000_000.0)
    accept_zero_hash: bool = False

    def to_limits(self) -> Limits:
        return Limits(max_sessions=self.max_sessions, max_sdp_bytes=self.max_sdp_bytes,
                      source_rate=self.source_rate, source_burst=self.source_burst,
                      accept_zero_hash=self.accept_zero_hash)


@dataclass(frozen=True)
class AnnounceConfig:
    ttl: int = setting(255, min=1, max=255)
    # bit/s per SAP group (RFC 2974 default 4000). Under 100 bit/s one 1 KB announcement
    # waits over a minute; 1 Gbit/s is more than any network gives to SAP.
    bandwidth: float = setting(4000.0, min=100.0, max=1e9)
    source: str | None = setting(None, check=unicast_address)  # default: the interface's
    interfaces: list[str] = setting(factory=list, check=interface_name)  # default: listen set
    compress: bool = False
    directory: str | None = setting(None, check=text(1, 4096))  # announce every *.sdp in it
    withdraw_on_stop: bool = False
    # Deletions sent per withdrawal (lost packets); 0 sends none, over 10 is a flood.
    deletion_repeats: int = setting(3, min=0, max=10)


def _network(value: str) -> None:
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an address or network ({exc})") from None


def _read(key: str, path: str) -> bytes:
    try:
        readable_file(path)
        return Path(path).read_bytes()
    except (ValueError, OSError) as exc:
        raise ConfigError(key, str(exc)) from None


def _certificates(key: str, path: str) -> list[Any]:
    try:
        found = signing.load_certificates(_read(key, path))
    except signing.SigningError as exc:
        raise ConfigError(key, f"{path}: {exc}") from None
    if not found:
        raise ConfigError(key, f"{path} holds no certificate")
    return found


@dataclass(frozen=True)
class SigningConfig:
    """``[signing]``: the key local announcements (and their deletions) are signed with."""

    key: str | None = setting(None, check=text(1, 4096))
    certificate: str | None = setting(None, check=text(1, 4096))
    include_certificate: bool = False

    def validate(self) -> None:
        if (self.key is None) != (self.certificate is None):
            raise ConfigError("key" if self.key is None else "certificate",
                              "key and certificate go together")
        self.signing_key()

    def signing_key(self) -> signing.SigningKey | None:
        if self.key is None or self.certificate is None:
            return None
        key_pem = _read("key", self.key)
        cert_pem = _read("certificate", self.certificate)
        try:
            return signing.SigningKey(key_pem, cert_pem,
                                      include_certificate=self.include_certificate)
        except signing.SigningError as exc:
            raise ConfigError("key", str(exc)) from None


TrustMode = Literal["off", "observe", "prefer", "require"]


@dataclass(frozen=True)
class TrustRule:
    """One ``[[trust.policy]]``: the mode for a scope (by name) or a c= range."""

    mode: TrustMode = setting()
    scope: str | None = setting(None, check=text(1, 64))
    range: str | None = setting(None, check=multicast_network)

    def validate(self) -> None:
        if (self.scope is None) == (self.range is None):
            raise ConfigError("scope", "give either scope or range")


@dataclass(frozen=True)
class TrustSigner:
    """One ``[[trust.signer]]``: a signer (a pinned certificate, or the subject of one a
    CA vouches for) and the o= origins and c= ranges it may announce."""

    certificate: str | None = setting(None, check=text(1, 4096))
    subject: str | None = setting(None, check=text(1, 1024))
    origins: list[str] = setting(factory=list, check=_network)
    ranges: list[str] = setting(factory=list, check=multicast_network)

    def validate(self) -> None:
        if (self.certificate is None) == (self.subject is None):
            raise ConfigError("certificate", "give either certificate or subject")
        if self.certificate is not None:
            _certificates("certificate", self.certificate)


@dataclass(frozen=True)
class TrustConfig:
    """``[trust]``: how received signatures count (sapd.trust)."""

    default: TrustMode = "off"
    # pinned signer certificates (PEM files), trusted as they are
    pinned: list[str] = setting(factory=list, check=text(1, 4096))
    ca_bundle: str | None = setting(None, check=text(1, 4096))
    certificates: list[str] = setting(factory=list, check=text(1, 4096))
    # seconds a signingTime may differ from our clock: 10 s (tight NTP) to a day
    signing_time_window: float = setting(600.0, min=10.0, max=DAY)
    policy: list[TrustRule] = setting(factory=list)
    signer: list[TrustSigner] = setting(factory=list)

    def validate(self) -> None:
        self.trust_policy()

    def trust_policy(self) -> TrustPolicy | None:
        """The policy, or None when every mode is off (nothing is checked then)."""
        pinned = [c for i, p in enumerate(self.pinned)
                  for c in _certificates(f"pinned[{i}]", p)]
        for i, entry in enumerate(self.signer):
            if entry.certificate is not None:
                pinned += _certificates(f"signer[{i}].certificate", entry.certificate)
        authorities = _certificates("ca_bundle", self.ca_bundle) if self.ca_bundle else []
        known = [c for i, p in enumerate(self.certificates)
                 for c in _certificates(f"certificates[{i}]", p)]
        signers = []
        for i, entry in enumerate(self.signer):
            origins = tuple(ipaddress.ip_network(o) for o in entry.origins)
            ranges = tuple(ipaddress.ip_network(r) for r in entry.ranges)
            if entry.certificate is not None:
                signers += [SignerRule(key_id=signing.key_id(cert), origins=origins,
                                       ranges=ranges)
                            for cert in _certificates(f"signer[{i}].certificate",
                                                      entry.certificate)]
            else:
                signers.append(SignerRule(subject=entry.subject, origins=origins,
                                          ranges=ranges))
        rules = [ModeRule(r.mode, scope=r.scope,
                          network=ipaddress.ip_network(r.range) if r.range else None)
                 for r in self.policy]
        policy = TrustPolicy(signing.Anchors(pinned, authorities, known), default=self.default,
                             rules=rules, signers=signers, window=self.signing_time_window)
        if not policy.active:
            return None
        if not pinned and not authorities:
            raise ConfigError("pinned", "a mode other than off needs trust anchors: pinned "
                              "certificates, [[trust.signer]] certificates or a ca_bundle")
        return policy


@dataclass(frozen=True)
class ScopeEntry:
    """One ``[[scope]]``: an administrative scope (RFC 2365) sapd labels and announces in."""

    name: str = setting(check=text(1, 64))
    range: str = setting(check=multicast_network)
    # Where announcements in the scope go; default the range's highest address (RFC 2974).
    sap_group: str | None = setting(None, check=multicast_address)
    ttl: int = setting(255, min=1, max=255)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.range)

    def validate(self) -> None:
        if self.sap_group is not None:
            group = ipaddress.ip_address(self.sap_group)
            if group not in self.network:  # also catches a group of the other family
                raise ConfigError("sap_group", f"{group} is not inside {self.network}")

    def as_table(self) -> dict[str, Any]:
        """The table ScopeTable.from_config reads."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


LdapProfile = Literal["sapd", "mstapi"]


@dataclass(frozen=True)
class LdapTlsConfig:
    """``[ldap.tls]``: StartTLS on an ldap:// URL (ldaps:// is TLS from the start), and
    the CA file that vouches for the server (default: the system's trust store)."""

    starttls: bool = False
    ca_file: str | None = setting(None, check=text(1, 4096))

    def validate(self) -> None:
        if self.ca_file is not None:
            try:
                readable_file(self.ca_file)
            except ValueError as exc:
                raise ConfigError("ca_file", str(exc)) from None


@dataclass(frozen=True)
class LdapConfig:
    """``[ldap]``: publication of the directory into an LDAP server (off without url).
    The password lives in ``password_file``, never here (this file is world-readable)."""

    url: str | None = setting(None, check=ldap_url)
    base: str | None = setting(None, check=ldap_dn)
    bind_dn: str | None = setting(None, check=ldap_dn)
    password_file: str | None = setting(None, check=text(1, 4096))
    profile: LdapProfile = "sapd"
    tls: LdapTlsConfig = setting(factory=LdapTlsConfig)
    # Seconds a dynamic entry (RFC 2589) outlives the last refresh: a dead sapd's entries
    # are gone this long after it stopped. 10 s (tests) to a day (slapo-dds' default
    # maximum); sapd refreshes every third of it.
    ttl: float = setting(300.0, min=10.0, max=DAY)
    # Changes waiting for the LDAP server; beyond it sapd drops them and resynchronises
    # the whole directory instead (so a slow server never holds the receive path).
    queue: int = setting(10_000, min=10, max=1_000_000)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def validate(self) -> None:
        if self.url is None:
            for key in ("base", "bind_dn", "password_file"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, "needs url (LDAP publication is off without it)")
            return
        if importlib.util.find_spec("ldap") is None:
            raise ConfigError("url", "LDAP publication needs python-ldap: pip install "
                              "'sapd[ldap]' (or Debian's python3-ldap)")
        if self.base is None:
            raise ConfigError("base", "required with url (where the entries go)")
        if (self.bind_dn is None) != (self.password_file is None):
            missing = "password_file" if self.password_file is None else "bind_dn"
            raise ConfigError(missing, "bind_dn and password_file go together "
                              "(neither: an anonymous bind)")
        if self.password_file is not None:
            try:
                readable_file(self.password_file)
            except ValueError as exc:
                raise ConfigError("password_file", str(exc)) from None
        if self.tls.starttls and not self.url.startswith("ldap://"):
            raise ConfigError("tls.starttls", "only with an ldap:// URL (ldaps:// is TLS "
                              "already; ldapi:// is a local socket)")


@dataclass(frozen=True)
class RavennaConfig:
    """``[ravenna]``: RAVENNA ingest (mDNS browse of ``_ravenna_session._sub._rtsp._tcp``,
    RTSP DESCRIBE, ANNOUNCE updates). On wherever mDNS can be browsed."""

    enabled: bool = True
    # Seconds between DESCRIBEs of a session whose server sends no ANNOUNCE (GStreamer's
    # does not): 1 s (tests) to an hour.
    period: float = setting(30.0, min=1.0, max=3600.0)
    # RTSP: a server that does not accept, or answer a DESCRIBE, within these is counted
    # (timeout) and tried again later; 0.1 s to a minute.
    connect_timeout: float = setting(5.0, min=0.1, max=60.0)
    read_timeout: float = setting(5.0, min=0.1, max=60.0)
    # Bounds: service instances followed, sessions listed per RTSP server address, RTSP
    # connections held at once (one per followed session, for its ANNOUNCEs).
    max_services: int = setting(4096, min=1, max=100_000)
    max_per_host: int = setting(256, min=1, max=100_000)
    max_connections: int = setting(256, min=1, max=10_000)
    # After a restart, rows the store holds as heard over RAVENNA stay this long for the
    # browse to find their service again, then expire: 1 s to an hour.
    grace: float = setting(60.0, min=1.0, max=3600.0)
    # Re-announce RAVENNA-learned sessions on SAP (so Dante and VLC see them).
    announce_on_sap: bool = False


@dataclass(frozen=True)
class NmosConfig:
    """``[nmos]``: registration of the directory's sessions with an AMWA NMOS IS-04
    registry (off unless ``registry`` or ``discover``). Both need ``[web] listen``: the
    registry and controllers read the Node API and the SDP manifests there."""

    registry: str | None = setting(None, check=http_url)  # http://HOST:PORT
    discover: bool = False  # DNS-SD _nmos-register._tcp (mDNS), lowest pri first
    label: str | None = setting(None, check=text(1, 256))  # the Node's; default host name
    # Session changes waiting to be mapped; beyond it sapd drops them and compares the
    # whole directory with what it registered instead (a slow registry never holds the
    # receive path).
    queue: int = setting(10_000, min=10, max=1_000_000)

    @property
    def enabled(self) -> bool:
        return self.registry is not None or self.discover

    def validate(self) -> None:
        if self.registry is not None and self.discover:
            raise ConfigError("discover", "give registry or discover, not both")


@dataclass(frozen=True)
class SapdConfig:
    interfaces: list[str] = setting(factory=list, check=interface_name)
    # Empty: every SAP group the scope table may announce on (listen_groups()).
    groups: list[str] = setting(factory=list, check=multicast_address)
    port: int = setting(SAP_PORT, min=1, max=65535)
    profile: str = setting(DEFAULT_PROFILE, check=_profile)
    # Profile overrides, seconds. A session lives at least expiry_floor after it was last
    # heard: 1 s (tests) to a day. default_period is the assumed announcement interval:
    # 0.1 s (tests) to an hour, RFC 2974's largest useful interval.
    expiry_floor: float | None = setting(None, min=1.0, max=DAY)
    default_period: float | None = setting(None, min=0.1, max=3600.0)
    state_dir: str | None = setting(None, check=text(1, 4096))
    socket: str | None = setting(None, check=socket_path)
    socket_group: str | None = setting(None, check=host_group)
    admin_group: str | None = setting(None, check=host_group)
    # Control connections one peer uid may hold open (root is exempt): with the default
    # 1,024 open files, one user holding 1,100 once locked every other client out.
    socket_connections_per_uid: int = setting(DEFAULT_CONNECTIONS_PER_UID, min=1,
                                              max=65_536)
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    event_loop: EventLoop = "auto"
    # Seconds between hand-overs of refreshed last-seen times to the store: under 0.1 s
    # it is a busy loop of tiny commits, over 5 minutes a restart forgets too much.
    refresh_flush_interval: float = setting(1.0, min=0.1, max=300.0)
    limits: LimitsConfig = setting(factory=LimitsConfig)
    announce: AnnounceConfig = setting(factory=AnnounceConfig)
    scope: list[ScopeEntry] = setting(factory=list)
    store: StoreConfig = setting(factory=StoreConfig)
    web: WebConfig = setting(factory=WebConfig)
    signing: SigningConfig = setting(factory=SigningConfig)
    trust: TrustConfig = setting(factory=TrustConfig)
    ldap: LdapConfig = setting(factory=LdapConfig)
    ravenna: RavennaConfig = setting(factory=RavennaConfig)
    nmos: NmosConfig = setting(factory=NmosConfig)
    # This sapd's name in a shared directory (LDAP entries' sapdSite): default the host
    # name. Several sapd publishing under one base need different names.
    site: str | None = setting(None, check=name_text(1, 256))

    def validate(self) -> None:
        if self.nmos.enabled and self.web.listen is None:
            key = "nmos.registry" if self.nmos.registry is not None else "nmos.discover"
            raise ConfigError(key, "needs [web] listen (or --web HOST:PORT): the registry "
                              "and controllers read the Node API and the SDP manifests "
                              "from the web listener")
        joined: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
        for i, address in enumerate(self.groups):
            group = ipaddress.ip_address(address)
            if group in joined:
                raise ConfigError(f"groups[{i}]", f"{group} is listed twice "
                                  f"(groups[{joined[group]}])")
            joined[group] = i
        seen: list[tuple[int, ScopeEntry]] = []
        for i, entry in enumerate(self.scope):
            for j, other in seen:
                if entry.name == other.name:
                    raise ConfigError(f"scope[{i}].name",
                                      f"{entry.name!r} is used by scope[{j}]")
                if entry.network.version == other.network.version and \
                        entry.network.overlaps(other.network):
                    raise ConfigError(f"scope[{i}].range", f"{entry.network} overlaps "
                                      f"scope[{j}] ({other.name!r}, {other.network})")
            seen.append((i, entry))
        try:
            self.scope_table()
        except ValueError as exc:  # the table's own rules; its messages name the key
            key, _, reason = str(exc).partition(": ")
            raise ConfigError(key, reason) from None

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
        return ScopeTable.from_config([entry.as_table() for entry in self.scope])

    def listen_groups(self) -> list[IPAddress]:
        """The configured groups; by default every SAP group the scope table may announce
        on, configured scopes included, so that two sapd hosts hear each other."""
        if self.groups:
            return [ipaddress.ip_address(g) for g in self.groups]
        return list(self.scope_table().sap_groups())


def load(path: str | None, overrides: dict[str, Any]) -> SapdConfig:
    return load_config(SapdConfig, path, overrides)
