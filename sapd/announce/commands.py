"""sapctl announce / update / withdraw / announcements."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from sapd.plumbing.client import format_table
from sapd.plumbing.files import MAX_SDP_FILE, read_input


def _payload(args: argparse.Namespace) -> bytes:
    text = read_input(args.file, MAX_SDP_FILE).decode(errors="replace")
    body: dict[str, Any] = {"sdp": text}
    for key in ("scope", "sap_group", "interval", "ttl"):
        value = getattr(args, key, None)
        if value is not None:
            body[key] = value
    if getattr(args, "interface", None):
        body["interfaces"] = args.interface
    if getattr(args, "compress", False):
        body["compress"] = True
    if getattr(args, "blob", None):
        try:
            body["blob"] = json.loads(args.blob)
        except ValueError as exc:
            raise SystemExit(f"sapctl: --blob is not JSON: {exc}") from None
    acl: dict[str, list[int]] = {}
    if getattr(args, "allow_uid", None):
        acl["uids"] = args.allow_uid
    if getattr(args, "allow_gid", None):
        acl["gids"] = args.allow_gid
    if acl:
        body["acl"] = acl
    return json.dumps(body).encode()


def _show(result: dict[str, Any], verb: str) -> None:
    a = result["announcement"]
    groups = ", ".join(f"{t['sap_group']} (ttl {t['ttl']})" for t in a["targets"])
    print(f"{verb} {result['id']}  {result['session']['name']!r}")
    print(f"  on {groups} via {', '.join(a['interfaces']) or 'no interface yet'}")
    print(f"  version {result['session']['version']}, hash 0x{a['msg_hash']:04x}, "
          f"source {a['source']}")


def add_commands(sub: Any, with_errors: Callable[..., Any], client: Callable[..., Any],
                 print_json: Callable[[Any], None]) -> None:
    def announce(args: argparse.Namespace) -> int:
        result = client(args).request("POST", "/v1/announcements", _payload(args),
                                      {"Content-Type": "application/json"}).json()
        print_json(result) if args.json else _show(result, "announcing")
        return 0

    def update(args: argparse.Namespace) -> int:
        result = client(args).request("PUT", f"/v1/announcements/{args.id}", _payload(args),
                                      {"Content-Type": "application/json"}).json()
        print_json(result) if args.json else _show(result, "updated")
        return 0

    def withdraw(args: argparse.Namespace) -> int:
        result = client(args).request("DELETE", f"/v1/announcements/{args.id}").json()
        if args.json:
            print_json(result)
        else:
            print(f"withdrawn {result['withdrawn']}  {result['name']!r} (deletions sent)")
        return 0

    def announcements(args: argparse.Namespace) -> int:
        result = client(args).get_json("/v1/announcements")
        if args.json:
            print_json(result)
            return 0
        rows = [[a["id"], a["name"][:40], ",".join(t["sap_group"] for t in a["targets"]),
                 str(a["owner_uid"]), str(a["packets_sent"]),
                 f"{min(t['interval'] for t in a['targets']):.0f}s"]
                for a in result["announcements"]]
        print(format_table(rows, ["ID", "NAME", "SAP GROUPS", "OWNER", "SENT", "INTERVAL"]))
        return 0

    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scope", help="announce in this configured scope")
        p.add_argument("--sap-group", dest="sap_group", help="override the SAP group")
        p.add_argument("--interval", type=float, help="fixed interval in seconds")
        p.add_argument("--ttl", type=int, help="TTL / hop limit (default 255, capped by scope)")
        p.add_argument("--interface", action="append", help="egress interface (repeatable)")
        p.add_argument("--compress", action="store_true", help="zlib-compress the payload")
        p.add_argument("--blob", help="extension data as a JSON object")
        p.add_argument("--allow-uid", type=int, action="append", help="uid that may change it")
        p.add_argument("--allow-gid", type=int, action="append", help="gid that may change it")
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("announce", help="publish an SDP file through sapd")
    p.add_argument("file", help="SDP file, or - for stdin")
    options(p)
    p.set_defaults(func=with_errors(announce))

    p = sub.add_parser("update", help="replace a local announcement's SDP")
    p.add_argument("id")
    p.add_argument("file", help="SDP file, or - for stdin")
    options(p)
    p.set_defaults(func=with_errors(update))

    p = sub.add_parser("withdraw", help="stop announcing and send deletions")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=with_errors(withdraw))

    p = sub.add_parser("announcements", help="what this sapd announces")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=with_errors(announcements))
