"""Offline inspection: decode a SAP datagram and validate its SDP into a JSON-ready dict.

Shared by ``sapctl decode`` and ``sapctl validate``; no sockets.
"""

from __future__ import annotations

import time
from typing import Any

from sapd import sdp, signing, wire

AUTH_TYPES: dict[int, str] = {wire.AuthType.PGP: "pgp", wire.AuthType.CMS: "cms"}


def describe_auth(datagram: bytes, packet: wire.SapPacket,
                  anchors: signing.Anchors | None) -> dict[str, Any] | None:
    """The authentication header and, given anchors, the signature check."""
    auth = packet.auth
    if auth is None:
        return None
    out: dict[str, Any] = {
        "version": auth.version, "type": auth.auth_type,
        "type_name": AUTH_TYPES.get(auth.auth_type, "unknown"), "padded": auth.padded,
        "length": len(packet.auth_raw), "signature_bytes": len(auth.signature)}
    # Without anchors the signer is only a claim: checked against none, it shows who
    # the signature names (unknown_signer) and whether the packet matches its digest.
    verdict = signing.verify(datagram, packet, anchors or signing.Anchors(), time.time())
    out["verification"] = verdict.status.value if anchors is not None or \
        verdict.status is not signing.Status.UNKNOWN_SIGNER else "not_checked"
    if verdict.signer is not None:
        out["signed_by"] = verdict.signer.subject
        out["signer_key"] = verdict.signer.key_id
    if verdict.signing_time is not None:
        out["signing_time"] = verdict.signing_time
    if verdict.detail:
        out["detail"] = verdict.detail
    return out


def describe_packet(datagram: bytes, anchors: signing.Anchors | None = None
                    ) -> tuple[dict[str, Any], list[str]]:
    """Decode one datagram. Returns (description, problems); problems empty when usable.
    With ``anchors`` a signature is verified, and one that fails is a problem."""
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
        "auth": describe_auth(datagram, packet, anchors),
    }
    problems: list[str] = []
    auth = out["auth"]
    if anchors is not None and (auth is None or auth["verification"] != "valid"):
        problems.append("signature: " + (auth["verification"] if auth else "unsigned"))
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


def _auth_line(auth: dict[str, Any] | None) -> str:
    if auth is None:
        return "none"
    line = (f"{auth['type_name']} (v{auth['version']} type {auth['type']}, {auth['length']} "
            f"bytes{', padded' if auth['padded'] else ''}): {auth['verification']}")
    if "signed_by" in auth:
        line += f", signer {auth['signed_by']}"
    if "signing_time" in auth:
        line += ", signed " + time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                            time.gmtime(auth["signing_time"]))
    if "detail" in auth:
        line += f" ({auth['detail']})"
    return line


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
        f"  auth: {_auth_line(desc['auth'])}",
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
