"""The body of POST/PUT /v1/announcements: every field typed and bounded, and the same
bounds applied to what an older sapd stored.

The typed loader of the configuration (sapd.plumbing.config.from_dict) checks the
fields, so a request error reads like a configuration error and names the field
(``interval``, ``acl.uids[2]``). JSON null means "not given", as sapctl sends it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from sapd.announce.schedule import MAX_INTERVAL, MIN_INTERVAL
from sapd.plumbing.config import (
    ConfigError,
    from_dict,
    interface_name,
    multicast_address,
    setting,
    text,
)

MAX_ACL_ENTRIES = 256  # uids or gids in one ACL
MAX_ID = 2**32 - 2  # uid_t/gid_t; 2^32-1 is (uid_t)-1, "no one"
MAX_BLOB_BYTES = 8 * 1024  # the blob as JSON: application metadata, not a payload
MAX_BLOB_DEPTH = 16
MAX_INTERFACES = 64


def max_body_bytes(max_sdp_bytes: int) -> int:
    """The cap on a whole request body: room for the largest SDP receivers accept, JSON
    escaped (CRLF doubles, \\uXXXX is six bytes a character), and the blob; anything
    larger is a 413 before it is read."""
    return max(64 * 1024, 6 * max_sdp_bytes + 4 * MAX_BLOB_BYTES)


class RequestError(ValueError):
    """A request field that cannot be used: ``field`` names it, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field


@dataclass(frozen=True)
class Acl:
    """Who besides the owner, root and admin_group may change the SDP and withdraw."""

    uids: list[int] = setting(factory=list, min=0, max=MAX_ID)
    gids: list[int] = setting(factory=list, min=0, max=MAX_ID)

    def validate(self) -> None:
        for name in ("uids", "gids"):
            if len(getattr(self, name)) > MAX_ACL_ENTRIES:
                raise ConfigError(name, f"more than {MAX_ACL_ENTRIES} entries")


@dataclass(frozen=True)
class AnnounceOptions:
    scope: str | None = setting(None, check=text(1, 64))
    sap_group: str | None = setting(None, check=multicast_address)
    interval: float | None = setting(None, min=MIN_INTERVAL, max=MAX_INTERVAL)
    ttl: int | None = setting(None, min=1, max=255)
    interfaces: list[str] | None = setting(None, check=interface_name)
    compress: bool | None = None
    acl: Acl | None = None

    def validate(self) -> None:
        if self.interfaces is not None and len(self.interfaces) > MAX_INTERFACES:
            raise ConfigError("interfaces", f"more than {MAX_INTERFACES} interfaces")

    def given(self) -> dict[str, Any]:
        """The announce options as stored in the record (only those given)."""
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}

    def acl_dict(self) -> dict[str, Any] | None:
        return None if self.acl is None else asdict(self.acl)


@dataclass(frozen=True)
class AnnounceRequest:
    sdp: str
    options: AnnounceOptions
    blob: dict[str, Any] | None  # None: not given


OPTION_KEYS = ("scope", "sap_group", "interval", "ttl", "interfaces", "compress")
FIELDS = ("sdp", *OPTION_KEYS, "acl", "blob")


class _NonFinite:
    """What the JSON parser makes of NaN, Infinity and -Infinity (Python's json module
    accepts them; JSON does not), so the field holding one can be named."""

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def parse_body(raw: bytes, max_sdp_bytes: int) -> AnnounceRequest:
    """The request, or a RequestError naming the field."""
    try:
        data = json.loads(raw, parse_constant=_NonFinite)
    except RecursionError:
        raise RequestError("", "request body is nested too deeply") from None
    except ValueError as exc:
        raise RequestError("", f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("", 'JSON body must be an object with "sdp": the session '
                               "description text")
    given = {k: v for k, v in data.items() if v is not None}
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field; known: {', '.join(FIELDS)}")
    for key, value in given.items():
        if isinstance(value, float) and not math.isfinite(value):  # 1e400 reads as inf
            raise RequestError(key, f"{value!r} is not a finite number")
        if isinstance(value, _NonFinite):
            raise RequestError(key, f"{value.literal} is not a number JSON allows")
    blob = given.pop("blob", None)
    sdp = given.pop("sdp", None)  # longer than any configuration string: checked here
    if not isinstance(sdp, str) or not sdp:
        raise RequestError("sdp", "required: the session description text")
    check_sdp_size(sdp, max_sdp_bytes)
    try:
        options = from_dict(AnnounceOptions, given)
    except ConfigError as exc:
        raise RequestError(exc.key, exc.reason) from None
    if blob is not None:
        check_blob(blob)
    return AnnounceRequest(sdp, options, blob)


def check_sdp_size(sdp: str, max_sdp_bytes: int) -> None:
    size = len(sdp.encode("utf-8", "surrogatepass"))
    if size > max_sdp_bytes:
        raise RequestError("sdp", f"{size} bytes; receivers drop SDPs over "
                                  f"{max_sdp_bytes} (limits.max_sdp_bytes)")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    if isinstance(value, list):
        return all(map(_finite, value))
    return not isinstance(value, _NonFinite) and not (
        isinstance(value, float) and not math.isfinite(value))


def _encodable_ints(value: Any) -> bool:
    """Integers our JSON encoder (orjson) can write back: within -2**63 .. 2**64 - 1."""
    if isinstance(value, dict):
        return all(map(_encodable_ints, value.values()))
    if isinstance(value, list):
        return all(map(_encodable_ints, value))
    return not isinstance(value, int) or isinstance(value, bool) or \
        -(1 << 63) <= value < (1 << 64)


def check_blob(blob: Any) -> None:
    if not isinstance(blob, dict):
        raise RequestError("blob", "must be a JSON object")
    if _depth(blob) > MAX_BLOB_DEPTH:
        raise RequestError("blob", f"nested more than {MAX_BLOB_DEPTH} levels deep")
    if not _finite(blob):
        raise RequestError("blob", "holds NaN or Infinity, which JSON does not allow")
    if not _encodable_ints(blob):
        raise RequestError("blob", "holds an integer outside -2**63 .. 2**64-1 (write it "
                                   "as a string)")
    size = len(json.dumps(blob, ensure_ascii=False).encode())
    if size > MAX_BLOB_BYTES:
        raise RequestError("blob", f"{size} bytes as JSON; at most {MAX_BLOB_BYTES}")


# -- what an older sapd stored -------------------------------------------------------------
def _clamped_number(value: Any, low: float, high: float, whole: bool) -> Any:
    """``value`` brought within bounds, or None when it is no usable number at all."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    number = min(max(value, low), high)
    return round(number) if whole else float(number)


def clean_acl(acl: Any) -> dict[str, Any]:
    """The usable part of a stored ACL: lists of in-range integers, nothing else."""
    if not isinstance(acl, dict):
        return {}
    cleaned: dict[str, Any] = {}
    for key in ("uids", "gids"):
        entries = acl.get(key)
        if isinstance(entries, list):
            good = [e for e in entries if isinstance(e, int) and not isinstance(e, bool)
                    and 0 <= e <= MAX_ID][:MAX_ACL_ENTRIES]
            if good:
                cleaned[key] = good
    return cleaned


def clean_stored(options: dict[str, Any],
                 acl: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Stored options and ACL within today's bounds, and the names of what was changed.
    An older sapd took any number (``interval`` 1e-9 hung the new one at start-up)."""
    fixed: list[str] = []
    cleaned = dict(options)
    for key, low, high, whole in (("interval", MIN_INTERVAL, MAX_INTERVAL, False),
                                  ("ttl", 1, 255, True)):
        if key not in cleaned:
            continue
        value = _clamped_number(cleaned[key], low, high, whole)
        if value is None:
            del cleaned[key]
            fixed.append(key)
        elif value != cleaned[key]:
            cleaned[key] = value
            fixed.append(key)
    if "interfaces" in cleaned and not (
            isinstance(cleaned["interfaces"], list)
            and all(isinstance(i, str) for i in cleaned["interfaces"])):
        del cleaned["interfaces"]
        fixed.append("interfaces")
    if "compress" in cleaned and not isinstance(cleaned["compress"], bool):
        cleaned["compress"] = bool(cleaned["compress"])
        fixed.append("compress")
    good_acl = clean_acl(acl)
    if good_acl != (acl or {}):
        fixed.append("acl")
    return cleaned, good_acl, fixed
