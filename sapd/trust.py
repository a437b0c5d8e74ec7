"""The trust policy for signed announcements: a verdict and the stored session in, a
decision out. Pure (no clock, no files): the engine asks, the daemon builds it.

Modes, per scope or c= range (RFC 2974 sections 5 and 10):

- ``off``: signatures are not checked; the auth kind alone keeps signed and unsigned
  announcements apart (as sapd always did).
- ``observe``: checked and shown (``verified``, ``signed_by``); nothing else changes.
- ``prefer``: a session signed by a trusted key can be replaced or deleted only by that
  key; any other packet for it (unsigned, badly or differently signed) becomes a
  separate entry marked unverified. Replays are dropped: a ``signingTime`` outside the
  window, or an o= version lower than one already heard from that key.
- ``require``: as ``prefer``, and anything not validly signed is dropped and counted.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sapd import signing, wire
from sapd.records import SessionRecord

Mode = Literal["off", "observe", "prefer", "require"]
MODES: tuple[Mode, ...] = ("off", "observe", "prefer", "require")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNVERIFIED_SLOT = "~unverified"  # appended to the auth kind: the separate entry

# Decision labels beyond signing.Status (counter labels when a packet is dropped)
SIGNER_NOT_ALLOWED = "signer_not_allowed"
SIGNING_TIME_OUTSIDE_WINDOW = "signing_time_outside_window"
NO_SIGNING_TIME = "no_signing_time"
REPLAYED = "replayed"
OTHER_SIGNER = "other_signer"
NOT_CHECKED = "not_checked"


@dataclass(frozen=True, slots=True)
class SignerRule:
    """What one signer may announce. ``key_id`` (a pinned certificate's key) or
    ``subject`` (a CA-issued certificate's subject, RFC 4514 text) names it; empty
    ``origins`` or ``ranges`` means any o= address or any c= group."""

    key_id: str | None = None
    subject: str | None = None
    origins: tuple[Network, ...] = ()
    ranges: tuple[Network, ...] = ()

    def names(self, signer: signing.SignerIdentity) -> bool:
        return signer.key_id == self.key_id or (
            self.subject is not None and signer.subject == self.subject)

    def allows(self, origin: str, groups: Sequence[str]) -> bool:
        if self.origins and not _inside(origin, self.origins):
            return False
        return not self.ranges or all(_inside(g, self.ranges) for g in groups)


@dataclass(frozen=True, slots=True)
class ModeRule:
    mode: Mode
    scope: str | None = None  # a scope name (built-in or [[scope]])
    network: Network | None = None  # or the c= groups inside this range


@dataclass(frozen=True, slots=True)
class Decision:
    drop: str | None  # a counter label, or None to go on
    auth_tag: str  # which entry (with the source and o= identity) the packet is for
    verification: str  # what the record shows: a signing.Status value or a label above
    signed_by: str = ""
    signer_key: str = ""


@dataclass(slots=True)
class _Heard:
    version: int
    signing_time: float
    deletion: bool


def _inside(address: str, networks: tuple[Network, ...]) -> bool:
    """Is the address (or a session's FIRST-LAST range of groups) inside one network?"""
    first_text, _, last_text = address.partition("-")
    try:
        first = ipaddress.ip_address(first_text)
        last = ipaddress.ip_address(last_text) if last_text else first
    except ValueError:
        return False  # a name (o= FQDN) is never inside an address range
    return any(first in n and last in n for n in networks if n.version == first.version)


_KINDS = {kind.value: kind.name.lower() for kind in wire.AuthType}


def auth_kind(packet: wire.SapPacket) -> str:
    """The auth kind a packet carries ('' none, 'cms', 'pgp'): announcements with and
    without authentication are never merged (RFC 2974 section 5)."""
    if packet.auth is None:
        return ""
    return _KINDS.get(packet.auth.auth_type, f"auth{packet.auth.auth_type}")


class TrustPolicy:
    def __init__(self, anchors: signing.Anchors, *, default: Mode = "off",
                 rules: Sequence[ModeRule] = (), signers: Sequence[SignerRule] = (),
                 window: float = 600.0, memory: int = 100_000) -> None:
        self.anchors = anchors
        self.default = default
        self.rules = tuple(rules)
        self.signers = tuple(signers)
        self.window = window
        self.memory = memory
        # (signer key, source, o= identity) -> the latest packet heard: bounded, and only
        # needed for one window (older packets fail the signingTime check anyway)
        self._heard: OrderedDict[tuple[str, str, str], _Heard] = OrderedDict()

    @property
    def active(self) -> bool:
        return self.default != "off" or any(r.mode != "off" for r in self.rules)

    def mode_for(self, scope: str, groups: Sequence[str]) -> Mode:
        """The first rule naming the session's scope or holding its c= groups."""
        for rule in self.rules:
            if rule.scope is not None and rule.scope == scope:
                return rule.mode
            if rule.network is not None and groups and _inside(groups[0], (rule.network,)):
                return rule.mode
        return self.default

    def _limits(self, signer: signing.SignerIdentity, origin: str,
                groups: Sequence[str]) -> bool:
        rules = [r for r in self.signers if r.names(signer)]
        return not rules or any(r.allows(origin, groups) for r in rules)

    def decide(self, datagram: bytes, packet: wire.SapPacket, *, mode: Mode, source: str,
               identity: str, version: int, origin: str, groups: Sequence[str],
               stored: SessionRecord | None, now: float) -> Decision:
        """``stored`` is the entry this packet would replace or delete (same source,
        identity and auth kind), if any; ``groups`` its c= groups (the stored ones for
        a deletion)."""
        kind = auth_kind(packet)
        if mode == "off":
            return Decision(None, kind, NOT_CHECKED if kind else signing.Status.UNSIGNED.value)
        verdict = signing.verify(datagram, packet, self.anchors, now)
        status = verdict.status.value  # plain text: records are marshalled to the store
        signer = verdict.signer
        if verdict.valid and signer is not None:
            when = verdict.signing_time
            if not self._limits(signer, origin, groups):
                status = SIGNER_NOT_ALLOWED
            elif when is None:
                status = NO_SIGNING_TIME
            elif abs(now - when) > self.window:
                status = SIGNING_TIME_OUTSIDE_WINDOW
        valid = status == signing.Status.VALID.value and signer is not None
        if mode == "observe":
            return Decision(None, kind, status, signer.subject if valid and signer else "",
                            signer.key_id if valid and signer else "")
        if not valid:
            if mode == "require" or status == SIGNING_TIME_OUTSIDE_WINDOW:
                return Decision(status, kind, status)  # a stale signature is a replay
            return self._apart(kind, status)
        assert signer is not None and verdict.signing_time is not None
        if stored is not None and stored.signer_key and stored.signer_key != signer.key_id:
            return self._apart(kind, OTHER_SIGNER, signer.subject)
        if self._replayed(signer.key_id, source, identity, version, verdict.signing_time,
                          packet.deletion, now):
            return Decision(REPLAYED, kind, REPLAYED)
        return Decision(None, kind, signing.Status.VALID.value, signer.subject, signer.key_id)

    @staticmethod
    def _apart(kind: str, status: str, signed_by: str = "") -> Decision:
        """Not verified as the session's signer: a signed packet goes to an entry of its
        own, so that the signed entry only ever holds verified packets (a forgery heard
        first, at o= version 999, must not make the real signer's version 1 old); an
        unsigned one to the unsigned entry it always had (RFC 2974 section 5)."""
        return Decision(None, kind + UNVERIFIED_SLOT if kind else kind, status, signed_by)

    def _replayed(self, key: str, source: str, identity: str, version: int,
                  signing_time: float, deletion: bool, now: float) -> bool:
        heard = self._heard
        slot = (key, source, identity)
        last = heard.get(slot)
        if last is not None:
            if version < last.version:
                return True
            # the same version, announced after a deletion or deleted after an
            # announcement: the later signature wins (one-second resolution)
            if version == last.version and deletion != last.deletion \
                    and signing_time < last.signing_time:
                return True
            if version == last.version and deletion == last.deletion:
                signing_time = max(signing_time, last.signing_time)
        heard[slot] = _Heard(version, signing_time, deletion)
        heard.move_to_end(slot)
        while heard:
            oldest = next(iter(heard.values()))
            if len(heard) <= self.memory and oldest.signing_time >= now - 2 * self.window:
                break
            heard.popitem(last=False)
        return False
