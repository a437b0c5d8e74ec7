"""Offline inspection: decode a SAP datagram and validate its SDP into a JSON-ready dict.

Shared by ``sapctl decode`` and ``sapctl validate``; no sockets.
"""

from __future__ import annotations

from typing import Any

from sapd import sdp, wire


def describe_packet(datagram: bytes) -> tuple[dict[str, Any], list[str]]:
    """Decode one datagram. Returns (description, problems); problems empty when usable."""
    try:
        packet = wire.decode(datagram)
    except wire.SapDecodeError as exc:
        return {"error": exc.reason.value, "detail": exc.detail}, [str(exc)]
    out: dict[str, Any] = {
        "version": packet.version,
        "source": str(packet.source),
        "msg_id_hash": packet.msg_id_hash,
        "kind": "deletion" if packet.deletion else "announcement",
        "payload_type": packet.payload_type,
        "compressed": packet.compressed,
        "encrypted": packet.encrypted,
        "auth": None if packet.auth is None else {
            "version": packet.auth.version, "type": packet.auth.auth_type,
            "padded": packet.auth.padded, "length": len(packet.auth_raw)},
    }
    problems: list[str] = []
    if packet.encrypted:
        problems.append("payload is encrypted; nothing more can be read")
        return out, problems
    if not packet.is_sdp:
        problems.append(f"payload type {packet.payload_type} is not application/sdp")
        return out, problems
    if packet.deletion and packet.payload.lstrip().startswith(b"o="):
        origin = sdp.parse_origin_line(packet.payload.split(b"\n", 1)[0])
        out["deletes"] = origin.identity if origin else None
        if origin is None:
            problems.append("deletion payload is not a valid o= line")
        return out, problems
    session, errors, warnings = sdp.validate(packet.payload)
    out["warnings"] = [str(w) for w in warnings]
    if session is None:
        out["sdp_errors"] = [str(e) for e in errors]
        problems.extend(str(e) for e in errors)
    else:
        out["session"] = session.to_json()
    return out, problems


def format_packet(desc: dict[str, Any]) -> str:
    """Human-readable lines for one described packet."""
    if "error" in desc:
        return f"malformed: {desc['error']}: {desc['detail']}"
    lines = [
        f"SAP v{desc['version']} {desc['kind']} from {desc['source']} "
        f"hash 0x{desc['msg_id_hash']:04x}",
        f"  payload type: {desc['payload_type'] or '(implicit application/sdp)'}"
        f"  compressed: {'yes' if desc['compressed'] else 'no'}"
        f"  encrypted: {'yes' if desc['encrypted'] else 'no'}"
        f"  auth: {'none' if desc['auth'] is None else desc['auth']['length']}",
    ]
    if "deletes" in desc:
        lines.append(f"  deletes: {desc['deletes']}")
    session = desc.get("session")
    if session:
        lines.append(f"  session: {session['name']}")
        lines.append(f"  identity: {session['identity']}  version {session['version']}")
        for media in session["media"]:
            codecs = ", ".join(f"{c['encoding']}/{c['clock_rate']}" for c in media["codecs"])
            lines.append(f"  media: {media['type']} {media['port']} {media['protocol']}"
                         + (f" ({codecs})" if codecs else ""))
        conns = [c for c in session["connections"]]
        for media in session["media"]:
            conns.extend(media["connections"])
        for conn in conns:
            ttl = f" ttl {conn['ttl']}" if conn["ttl"] is not None else ""
            lines.append(f"  group: {conn['address']}{ttl}")
    for err in desc.get("sdp_errors", []):
        lines.append(f"  sdp error: {err}")
    for warning in desc.get("warnings", []):
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
