"""What an engineer looks for in an SDP, read from its attributes: codecs, the PTP clock
(RFC 7273 ``a=ts-refclk``), the media clock, and SMPTE ST 2022-7 redundancy (RFC 7104
``a=group:DUP`` with ``a=mid``). Pure: attribute pairs in, JSON-ready values out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Attributes = Iterable[tuple[str, str | None]]


def parse_refclk(value: str) -> dict[str, Any]:
    """``ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:0``, ``ptp=IEEE1588-2008:traceable``,
    ``localmac=..``, ``ntp=..``: the source, and for PTP its grandmaster and domain."""
    source, _, rest = value.partition("=")
    clock: dict[str, Any] = {"source": source.strip().lower(), "value": value}
    if clock["source"] == "ptp":
        version, _, rest = rest.partition(":")
        clock["version"] = version
        if rest.lower() == "traceable":
            clock["traceable"] = True
        elif rest:
            grandmaster, _, domain = rest.partition(":")
            clock["grandmaster"] = grandmaster.upper()
            if domain.isdigit():
                clock["domain"] = int(domain)
    elif rest:
        clock["address"] = rest
    return clock


def redundancy(attributes: Attributes) -> dict[str, Any] | None:
    """The first ``a=group:DUP`` and the identification tags of its legs."""
    for name, value in attributes:
        if name == "group" and value and value[:4].upper() == "DUP ":
            return {"semantics": "DUP", "mids": value[4:].split()}
    return None


def codec_name(rtpmap: str) -> str:
    """``96 L24/48000/2`` -> ``L24/48000/2``."""
    return rtpmap.partition(" ")[2].strip() or rtpmap


def summary(attributes: Attributes) -> dict[str, Any]:
    """The list's view of a session: codecs, clock, and whether it is redundant. One
    pass over the pairs: a list page makes a hundred of these."""
    codecs: dict[str, None] = {}
    clock: dict[str, Any] | None = None
    legs: dict[str, Any] | None = None
    for name, value in attributes:
        if not value:
            continue
        if name == "rtpmap":
            codecs[codec_name(value)] = None
        elif name == "ts-refclk" and clock is None:
            clock = parse_refclk(value)
        elif name == "group" and legs is None and value[:4].upper() == "DUP ":
            legs = {"semantics": "DUP", "mids": value[4:].split()}
    return {"codecs": list(codecs), "clock": clock, "redundant": legs is not None,
            "redundancy": legs}
